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
    clocks::add_to_linker(linker)?;
    streams::add_to_linker(linker)?;
    paths::add_to_linker(linker)
}

/// Drives the system-call layer directly, without a wasm guest, for the
/// fuzzers and property tests: the same code paths a guest reaches
/// through `path_open`, `fd_read`, `fd_write` and the `path_*` calls.
#[doc(hidden)]
pub mod harness {
    use super::fdtable::Desc;
    use super::paths::path_open;
    use super::streams::{fd_read_into, fd_write_bufs};
    use super::*;
    use crate::mounts::{MountSpec, SpecError};

    /// One guest operation, on absolute guest paths.
    #[derive(Debug, Clone)]
    pub enum Op {
        Read(String),
        Write(String, Vec<u8>),
        Mkdir(String),
        Rmdir(String),
        Unlink(String),
        Rename(String, String),
        Link(String, String),
        Symlink(String, String),
        List(String),
        Stat(String),
    }

    pub struct Harness {
        cx: WasiCtx,
        root: u32,
    }

    fn rel(p: &str) -> &str {
        // wasi-libc strips the preopen's `/` before calling the host.
        let r = p.trim_start_matches('/');
        if r.is_empty() {
            "."
        } else {
            r
        }
    }

    impl Harness {
        pub fn new(mounts: &[MountSpec], allow_symlinks: bool) -> Result<Harness, SpecError> {
            let ns = Namespace::open(mounts)?;
            let mut fds = FdTable::default();
            let root = fds
                .push(Desc::Dir {
                    target: ns.root(),
                    preopen: Some("/".into()),
                })
                .expect("an empty table has room");
            Ok(Harness {
                cx: WasiCtx {
                    fds,
                    ns,
                    args: vec![],
                    env: vec![],
                    allow_symlinks,
                    max_output: None,
                    output_written: 0,
                    deadline: None,
                    memory: None,
                },
                root,
            })
        }

        /// Applies `op`; the bytes read or listed, or the WASI errno.
        pub fn apply(&mut self, op: &Op) -> Result<Vec<u8>, u16> {
            let cx = &mut self.cx;
            let root = self.root;
            let r: Sys<Vec<u8>> = (|| match op {
                Op::Read(p) => {
                    let fd =
                        path_open(cx, root, LOOKUP_SYMLINK_FOLLOW, rel(p), 0, RIGHT_FD_READ, 0)?;
                    let mut out = Vec::new();
                    let mut buf = [0u8; 4096];
                    let r = loop {
                        match fd_read_into(cx, fd, &mut buf, None, false) {
                            Ok(None | Some(0)) => break Ok(()),
                            Ok(Some(n)) if out.len() < 1 << 20 => out.extend_from_slice(&buf[..n]),
                            Ok(_) => break Ok(()),
                            Err(e) => break Err(e),
                        }
                    };
                    cx.fds.remove(fd)?;
                    r.map(|_| out)
                }
                Op::Write(p, data) => {
                    let fd = path_open(
                        cx,
                        root,
                        LOOKUP_SYMLINK_FOLLOW,
                        rel(p),
                        OFLAG_CREAT | OFLAG_TRUNC,
                        RIGHT_FD_WRITE,
                        0,
                    )?;
                    let r = fd_write_bufs(cx, fd, &[data], None);
                    cx.fds.remove(fd)?;
                    r.map(|_| Vec::new())
                }
                Op::Mkdir(p) => cx.mkdir(root, rel(p)).map(|_| Vec::new()),
                Op::Rmdir(p) => cx.rmdir(root, rel(p)).map(|_| Vec::new()),
                Op::Unlink(p) => cx.unlink(root, rel(p)).map(|_| Vec::new()),
                Op::Rename(a, b) => cx.rename(root, rel(a), root, rel(b)).map(|_| Vec::new()),
                Op::Link(a, b) => cx.link(root, rel(a), root, rel(b)).map(|_| Vec::new()),
                Op::Symlink(t, p) => cx.symlink(t, root, rel(p)).map(|_| Vec::new()),
                Op::List(p) => {
                    let fd = path_open(
                        cx,
                        root,
                        LOOKUP_SYMLINK_FOLLOW,
                        rel(p),
                        OFLAG_DIRECTORY,
                        RIGHT_FD_READ,
                        0,
                    )?;
                    let target = cx.fds.dir(fd)?.clone();
                    let r = cx.list_dir(&target);
                    cx.fds.remove(fd)?;
                    let names: Vec<String> = r?.into_iter().map(|e| e.name).collect();
                    Ok(names.join("/").into_bytes())
                }
                Op::Stat(p) => {
                    let target = cx.ns.resolve(cx.fds.dir(root)?, rel(p))?;
                    cx.stat_target(&target, true)
                        .map(|s| s.size.to_le_bytes().to_vec())
                }
            })();
            r.map_err(|e| match e {
                Fail::Errno(e) => e.0,
                Fail::Stop(_) => u16::MAX,
            })
        }
    }
}
