//! Drives the system-call layer directly, without a wasm guest, for the
//! fuzzers and property tests: the same code paths a guest reaches through
//! `path_open`, `fd_read`, `fd_write` and the `path_*` calls, from the root
//! or from a directory the sequence opened.

use super::abi::*;
use super::fdtable::{Desc, FdTable};
use super::paths::path_open;
use super::streams::{fd_read_into, fd_write_bufs};
use super::{Fail, Sys, WasiCtx};
use crate::mounts::{MountSpec, Namespace, SpecError};

/// One guest operation. A path that starts with `/` is resolved from the
/// root; any other, from the directory the last [`Op::OpenDir`] opened (the
/// root if none), as `openat(dirfd, ...)` would.
#[derive(Debug, Clone)]
pub enum Op {
    /// Opens a directory and makes it the base of relative paths.
    OpenDir(String),
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
    /// The directory relative paths start from.
    base: u32,
}

/// The descriptor and path a guest would pass for `p`.
fn at(root: u32, base: u32, p: &str) -> (u32, &str) {
    // wasi-libc strips the preopen's `/` before calling the host.
    let (fd, r) = match p.strip_prefix('/') {
        Some(r) => (root, r.trim_start_matches('/')),
        None => (base, p),
    };
    (fd, if r.is_empty() { "." } else { r })
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
            base: root,
        })
    }

    /// Applies `op`; the bytes read or listed, or the WASI errno.
    pub fn apply(&mut self, op: &Op) -> Result<Vec<u8>, u16> {
        let cx = &mut self.cx;
        let (root, base) = (self.root, self.base);
        let at = |p| at(root, base, p);
        let mut new_base = None;
        let r: Sys<Vec<u8>> = (|| match op {
            Op::OpenDir(p) => {
                let (fd, p) = at(p);
                let d = path_open(cx, fd, LOOKUP_SYMLINK_FOLLOW, p, OFLAG_DIRECTORY, 0, 0)?;
                new_base = Some(d);
                Ok(Vec::new())
            }
            Op::Read(p) => {
                let (dfd, p) = at(p);
                let fd = path_open(cx, dfd, LOOKUP_SYMLINK_FOLLOW, p, 0, RIGHT_FD_READ, 0)?;
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
                let (dfd, p) = at(p);
                let fd = path_open(
                    cx,
                    dfd,
                    LOOKUP_SYMLINK_FOLLOW,
                    p,
                    OFLAG_CREAT | OFLAG_TRUNC,
                    RIGHT_FD_WRITE,
                    0,
                )?;
                let r = fd_write_bufs(cx, fd, &[data], None);
                cx.fds.remove(fd)?;
                r.map(|_| Vec::new())
            }
            Op::Mkdir(p) => {
                let (fd, p) = at(p);
                cx.mkdir(fd, p).map(|_| Vec::new())
            }
            Op::Rmdir(p) => {
                let (fd, p) = at(p);
                cx.rmdir(fd, p).map(|_| Vec::new())
            }
            Op::Unlink(p) => {
                let (fd, p) = at(p);
                cx.unlink(fd, p).map(|_| Vec::new())
            }
            Op::Rename(a, b) => {
                let ((fa, a), (fb, b)) = (at(a), at(b));
                cx.rename(fa, a, fb, b).map(|_| Vec::new())
            }
            Op::Link(a, b) => {
                let ((fa, a), (fb, b)) = (at(a), at(b));
                cx.link(fa, a, fb, b).map(|_| Vec::new())
            }
            Op::Symlink(t, p) => {
                let (fd, p) = at(p);
                cx.symlink(t, fd, p).map(|_| Vec::new())
            }
            Op::List(p) => {
                let (dfd, p) = at(p);
                let fd = path_open(
                    cx,
                    dfd,
                    LOOKUP_SYMLINK_FOLLOW,
                    p,
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
                let (fd, p) = at(p);
                let target = cx.ns.resolve(cx.fds.dir(fd)?, p)?;
                cx.stat_target(&target, true)
                    .map(|s| s.size.to_le_bytes().to_vec())
            }
        })();
        if let Some(d) = new_base {
            if self.base != self.root {
                let _ = self.cx.fds.remove(self.base);
            }
            self.base = d;
        }
        r.map_err(|e| match e {
            Fail::Errno(e) => e.0,
            Fail::Stop(_) => u16::MAX,
        })
    }
}
