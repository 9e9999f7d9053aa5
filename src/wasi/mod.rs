//! pynbox's implementation of the `wasi_snapshot_preview1` system calls.
//!
//! Every call a guest can make to the outside world arrives here. Paths are
//! resolved through [`crate::mounts::Namespace`]; descriptors come from
//! [`fdtable::FdTable`]. Anything not granted by a mount or a forwarded
//! descriptor does not exist for the guest.
//!
//! The calls are grouped by concern, one module each, the way Wasmtime's own
//! preview-1 layer reads: [`paths`] (every call that names a file),
//! [`streams`] (descriptors, reads, writes, the output limit), [`clocks`]
//! (clocks, `poll_oneoff`, randomness) and [`process`] (arguments,
//! environment, exit, refused services). [`memory`] checks every guest
//! pointer; [`stat`] says what the guest learns of a file.

/// Registers one system call: each body gets the guest's memory and our
/// context side by side, and `?` for errnos and stops.
macro_rules! sys {
    ($linker:ident, $name:literal, |$cx:ident, $mem:ident $(, $arg:ident : $ty:ty)*| $body:block) => {
        $linker.func_wrap(super::MODULE, $name, |mut caller: Caller<'_, Guest>, $($arg: $ty),*| -> wasmtime::Result<i32> {
            let memory = memory_of(&mut caller)?;
            let ($mem, guest) = memory.data_and_store_mut(&mut caller);
            let $cx = &mut guest.wasi;
            // Not every call needs both.
            let _ = (&$mem, &$cx);
            // A closure gives each body `?` and early returns.
            #[allow(clippy::redundant_closure_call)]
            let r = (|| -> Sys<()> { $body })();
            finish(r)
        })?;
    };
}

pub mod abi;
mod clocks;
pub(crate) mod fdtable;
mod memory;
mod paths;
mod process;
mod stat;
mod streams;

use std::io;
use std::time::Instant;

use wasmtime::{Caller, Extern, Linker, Memory};

use crate::mounts::Namespace;
use crate::runtime::Guest;
use abi::*;
use fdtable::FdTable;

/// Why a guest stopped before returning from `_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `proc_exit` with this status.
    Exit(i32),
    /// stdout and stderr together passed `--max-output`.
    OutputLimit,
    /// The wall-clock limit passed while the guest was in a host call.
    Timeout,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Exit(n) => write!(f, "exit status {n}"),
            Stop::OutputLimit => f.write_str("output limit reached"),
            Stop::Timeout => f.write_str("time limit reached"),
        }
    }
}

impl std::error::Error for Stop {}

/// The guest-visible operating system of one sandbox.
pub(crate) struct WasiCtx {
    pub fds: FdTable,
    pub ns: Namespace,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub allow_symlinks: bool,
    pub max_output: Option<u64>,
    pub output_written: u64,
    pub deadline: Option<Instant>,
    pub memory: Option<Memory>,
}

/// A failed call: an errno for the guest, or a reason to stop it.
pub(crate) enum Fail {
    Errno(Errno),
    Stop(Stop),
}

impl From<Errno> for Fail {
    fn from(e: Errno) -> Fail {
        Fail::Errno(e)
    }
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Fail {
        Fail::Errno(e.into())
    }
}

pub(crate) type Sys<T> = Result<T, Fail>;

pub(crate) fn finish(r: Sys<()>) -> wasmtime::Result<i32> {
    match r {
        Ok(()) => Ok(0),
        Err(Fail::Errno(e)) => Ok(i32::from(e.0)),
        Err(Fail::Stop(s)) => Err(wasmtime::Error::new(s)),
    }
}

pub(crate) fn memory_of(caller: &mut Caller<'_, Guest>) -> wasmtime::Result<Memory> {
    if let Some(m) = caller.data().wasi.memory {
        return Ok(m);
    }
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => {
            caller.data_mut().wasi.memory = Some(m);
            Ok(m)
        }
        _ => Err(wasmtime::Error::msg(
            "the module exports no memory named 'memory'",
        )),
    }
}

/// The module name every preview-1 import comes from.
const MODULE: &str = "wasi_snapshot_preview1";

/// Registers every `wasi_snapshot_preview1` function with `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<Guest>) -> wasmtime::Result<()> {
    process::add_to_linker(linker)?;
    #[cfg(feature = "test-compromise")]
    process::compromise::add_to_linker(linker)?;
    clocks::add_to_linker(linker)?;
    streams::add_to_linker(linker)?;
    paths::add_to_linker(linker)
}

/// Drives the system-call layer directly, without a wasm guest, for the
/// fuzzers and property tests.
#[doc(hidden)]
pub mod harness;
