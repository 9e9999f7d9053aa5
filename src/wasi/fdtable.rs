//! The guest's descriptor table: what each WASI descriptor number stands for.
//!
//! Wasmtime's own preview-1 implementation keeps a table of stdio and
//! preopened directories only, with no way to place a host pipe at a chosen
//! number. pynbox keeps its own table so that `-h 3:3` can give the guest
//! exactly the host's descriptor 3, and so that every path operation goes
//! through one place that enforces the mounts.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

use super::abi::{Errno, WasiResult};
use crate::mounts::Target;

/// Descriptors the guest may hold at once (stdio and preopens included).
pub const MAX_FDS: usize = 1024;
/// Files below mounts a guest may hold open at once by default: each holds
/// a host descriptor, and the sandboxes of one process share its table.
pub const DEFAULT_MAX_OPEN_FILES: usize = 256;

pub(crate) enum Desc {
    /// A host descriptor handed to the guest: stdio, `-h`, `-r`, `-w`. A
    /// stream to the guest (no offsets, no truncation), and every byte
    /// written to it counts toward `--max-output`.
    Host {
        file: File,
        read: bool,
        write: bool,
        tty: bool,
        /// Not a regular file (a pipe, a terminal, a socket): a read or
        /// write can wait, so it is polled against the deadline. Found once,
        /// when the descriptor is given: every write to stdout asks.
        stream: bool,
        /// The guest asked not to wait (`O_NONBLOCK`): a stream with
        /// nothing ready answers EAGAIN. (The host's own descriptor, shared
        /// with other processes, is never made non-blocking.)
        nonblock: bool,
    },
    /// In-memory input or captured output, for the embedding API. What is
    /// written to it counts toward `--max-output`, as for host streams.
    Memory {
        input: Option<Cursor<Vec<u8>>>,
        output: Option<Sink>,
    },
    /// A file the guest opened below a mount.
    File {
        file: File,
        target: Target,
        read: bool,
        write: bool,
        append: bool,
        /// `O_NONBLOCK`, kept and reported (a regular file never waits).
        nonblock: bool,
    },
    /// A directory in the guest namespace. `preopen` is the guest path
    /// wasi-libc learns from `fd_prestat_dir_name`.
    Dir {
        target: Target,
        preopen: Option<String>,
    },
}

/// Where in-memory output goes.
pub(crate) enum Sink {
    Discard,
    Buffer(Arc<Mutex<Vec<u8>>>),
}

#[derive(Clone, Debug)]
pub(crate) struct DirEntry {
    pub name: String,
    pub ino: u64,
    pub filetype: u8,
}

pub(crate) struct FdTable {
    fds: BTreeMap<u32, Desc>,
    /// The most [`Desc::File`] entries at once: the host descriptors a
    /// guest can make pynbox hold.
    max_files: usize,
}

impl Default for FdTable {
    fn default() -> FdTable {
        FdTable::new(DEFAULT_MAX_OPEN_FILES)
    }
}

impl Desc {
    /// A host descriptor given to the guest, read and/or written.
    pub fn host(file: File, read: bool, write: bool) -> Desc {
        use std::io::IsTerminal;
        let tty = file.is_terminal();
        let stream = !file.metadata().is_ok_and(|m| m.is_file());
        Desc::Host {
            file,
            read,
            write,
            tty,
            stream,
            nonblock: false,
        }
    }
}

impl FdTable {
    pub fn new(max_files: usize) -> FdTable {
        FdTable {
            fds: BTreeMap::new(),
            max_files,
        }
    }

    /// EMFILE if the guest already holds as many open files as it may.
    pub fn check_host_room(&self) -> WasiResult<()> {
        let open = self
            .fds
            .values()
            .filter(|d| matches!(d, Desc::File { .. }))
            .count();
        if open >= self.max_files {
            return Err(Errno::MFILE);
        }
        Ok(())
    }

    pub fn insert_at(&mut self, fd: u32, d: Desc) {
        self.fds.insert(fd, d);
    }

    /// Places `d` at the lowest free number from 3 up. Preopens are placed
    /// this way too: wasi-libc scans upwards from 3 until the first free
    /// number, so they must not sit behind a gap.
    pub fn push(&mut self, d: Desc) -> WasiResult<u32> {
        if self.fds.len() >= MAX_FDS {
            return Err(Errno::MFILE);
        }
        if matches!(d, Desc::File { .. }) {
            self.check_host_room()?;
        }
        let mut n = 3;
        while self.fds.contains_key(&n) {
            n += 1;
        }
        self.fds.insert(n, d);
        Ok(n)
    }

    pub fn get(&self, fd: u32) -> WasiResult<&Desc> {
        self.fds.get(&fd).ok_or(Errno::BADF)
    }

    pub fn get_mut(&mut self, fd: u32) -> WasiResult<&mut Desc> {
        self.fds.get_mut(&fd).ok_or(Errno::BADF)
    }

    pub fn remove(&mut self, fd: u32) -> WasiResult<Desc> {
        self.fds.remove(&fd).ok_or(Errno::BADF)
    }

    pub fn contains(&self, fd: u32) -> bool {
        self.fds.contains_key(&fd)
    }

    /// The descriptors beyond a fresh guest's (0, 1, 2 and the preopens
    /// from 3 up), and those of a fresh guest's it closed: what a saved
    /// session could not get back.
    pub fn changed_since_start(&self, preopens: u32) -> Vec<u32> {
        let fresh = |n: u32| {
            n < 3
                || (n < 3 + preopens
                    && matches!(
                        self.fds.get(&n),
                        Some(Desc::Dir {
                            preopen: Some(_),
                            ..
                        })
                    ))
        };
        let mut changed: Vec<u32> = self.fds.keys().copied().filter(|&n| !fresh(n)).collect();
        changed.extend((0..3 + preopens).filter(|n| !self.fds.contains_key(n)));
        changed.sort_unstable();
        changed
    }

    /// The directory target of `fd`, for path operations.
    pub fn dir(&self, fd: u32) -> WasiResult<&Target> {
        match self.get(fd)? {
            Desc::Dir { target, .. } => Ok(target),
            _ => Err(Errno::NOTDIR),
        }
    }
}
