//! pynbox's implementation of the `wasi_snapshot_preview1` system calls.
//!
//! Every call a guest can make to the outside world arrives here. Paths are
//! resolved through [`crate::mounts::Namespace`]; descriptors come from
//! [`fdtable::FdTable`]. Anything not granted by a mount or a forwarded
//! descriptor does not exist for the guest.

pub mod abi;
pub(crate) mod fdtable;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cap_fs_ext::{DirExt, MetadataExt, OpenOptionsFollowExt, OpenOptionsMaybeDirExt};
use wasmtime::{Caller, Extern, Linker, Memory};

use crate::mounts::{rel_path, Namespace, Target};
use crate::runtime::Guest;
use abi::*;
use fdtable::{Desc, DirEntry, FdTable, Sink};

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
enum Fail {
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

type Sys<T> = Result<T, Fail>;

fn finish(r: Sys<()>) -> wasmtime::Result<i32> {
    match r {
        Ok(()) => Ok(0),
        Err(Fail::Errno(e)) => Ok(i32::from(e.0)),
        Err(Fail::Stop(s)) => Err(wasmtime::Error::new(s)),
    }
}

fn memory_of(caller: &mut Caller<'_, Guest>) -> wasmtime::Result<Memory> {
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

// Guest memory access. Every pointer from the guest is checked here; an
// out-of-bounds one is EFAULT, never a host fault.

fn slice(mem: &[u8], ptr: u32, len: u32) -> WasiResult<&[u8]> {
    let start = ptr as usize;
    let end = start.checked_add(len as usize).ok_or(Errno::FAULT)?;
    mem.get(start..end).ok_or(Errno::FAULT)
}

fn slice_mut(mem: &mut [u8], ptr: u32, len: u32) -> WasiResult<&mut [u8]> {
    let start = ptr as usize;
    let end = start.checked_add(len as usize).ok_or(Errno::FAULT)?;
    mem.get_mut(start..end).ok_or(Errno::FAULT)
}

fn put(mem: &mut [u8], ptr: u32, bytes: &[u8]) -> WasiResult<()> {
    slice_mut(mem, ptr, bytes.len() as u32)?.copy_from_slice(bytes);
    Ok(())
}

fn put_u32(mem: &mut [u8], ptr: u32, v: u32) -> WasiResult<()> {
    put(mem, ptr, &v.to_le_bytes())
}

fn put_u64(mem: &mut [u8], ptr: u32, v: u64) -> WasiResult<()> {
    put(mem, ptr, &v.to_le_bytes())
}

fn get_u32(mem: &[u8], ptr: u32) -> WasiResult<u32> {
    Ok(u32::from_le_bytes(slice(mem, ptr, 4)?.try_into().unwrap()))
}

fn get_u64(mem: &[u8], ptr: u32) -> WasiResult<u64> {
    Ok(u64::from_le_bytes(slice(mem, ptr, 8)?.try_into().unwrap()))
}

fn get_str(mem: &[u8], ptr: u32, len: u32) -> WasiResult<String> {
    let bytes = slice(mem, ptr, len)?;
    std::str::from_utf8(bytes)
        .map(str::to_string)
        .map_err(|_| Errno::ILSEQ)
}

/// The (ptr, len) pairs of an iovec array.
fn iovecs(mem: &[u8], ptr: u32, count: u32) -> WasiResult<Vec<(u32, u32)>> {
    if count > 1024 {
        return Err(Errno::INVAL);
    }
    (0..count)
        .map(|i| {
            let at = ptr.checked_add(i * 8).ok_or(Errno::FAULT)?;
            Ok((get_u32(mem, at)?, get_u32(mem, at + 4)?))
        })
        .collect()
}

fn nanos(t: io::Result<SystemTime>) -> u64 {
    t.ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn monotonic_base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn filestat_of_cap(m: &cap_std::fs::Metadata) -> Filestat {
    let ft = m.file_type();
    Filestat {
        dev: m.dev(),
        ino: m.ino(),
        filetype: filetype_of_cap(&ft),
        nlink: m.nlink(),
        size: m.len(),
        atim: nanos(m.accessed().map(|t| t.into_std())),
        mtim: nanos(m.modified().map(|t| t.into_std())),
        ctim: ctime_cap(m),
    }
}

#[cfg(unix)]
fn ctime_cap(m: &cap_std::fs::Metadata) -> u64 {
    use cap_fs_ext::OsMetadataExt as _;
    (m.ctime() as u64) * 1_000_000_000 + m.ctime_nsec() as u64
}

#[cfg(not(unix))]
fn ctime_cap(m: &cap_std::fs::Metadata) -> u64 {
    nanos(m.created().map(|t| t.into_std()))
}

fn filetype_of_cap(ft: &cap_std::fs::FileType) -> u8 {
    use cap_fs_ext::FileTypeExt;
    if ft.is_dir() {
        FILETYPE_DIRECTORY
    } else if ft.is_file() {
        FILETYPE_REGULAR_FILE
    } else if ft.is_symlink() {
        FILETYPE_SYMBOLIC_LINK
    } else if ft.is_char_device() {
        FILETYPE_CHARACTER_DEVICE
    } else if ft.is_socket() {
        FILETYPE_SOCKET_STREAM
    } else {
        FILETYPE_UNKNOWN
    }
}

fn filestat_of_std(m: &std::fs::Metadata) -> Filestat {
    let ft = m.file_type();
    #[cfg(unix)]
    let (dev, ino, nlink, ctim, filetype) = {
        use std::os::unix::fs::{FileTypeExt, MetadataExt as M};
        let filetype = if ft.is_char_device() {
            FILETYPE_CHARACTER_DEVICE
        } else if ft.is_socket() {
            FILETYPE_SOCKET_STREAM
        } else if ft.is_dir() {
            FILETYPE_DIRECTORY
        } else if ft.is_file() {
            FILETYPE_REGULAR_FILE
        } else {
            FILETYPE_UNKNOWN
        };
        (
            M::dev(m),
            M::ino(m),
            M::nlink(m),
            (M::ctime(m) as u64) * 1_000_000_000 + M::ctime_nsec(m) as u64,
            filetype,
        )
    };
    #[cfg(not(unix))]
    let (dev, ino, nlink, ctim, filetype) = (
        0,
        0,
        1,
        nanos(m.created()),
        if ft.is_file() {
            FILETYPE_REGULAR_FILE
        } else if ft.is_dir() {
            FILETYPE_DIRECTORY
        } else {
            FILETYPE_UNKNOWN
        },
    );
    Filestat {
        dev,
        ino,
        filetype,
        nlink,
        size: m.len(),
        atim: nanos(m.accessed()),
        mtim: nanos(m.modified()),
        ctim,
    }
}

fn virtual_dir_stat() -> Filestat {
    Filestat {
        filetype: FILETYPE_DIRECTORY,
        nlink: 1,
        ..Filestat::default()
    }
}

fn time_spec(
    ts: u64,
    flags: u16,
    set: u16,
    now: u16,
) -> WasiResult<Option<cap_fs_ext::SystemTimeSpec>> {
    if flags & set != 0 && flags & now != 0 {
        return Err(Errno::INVAL);
    }
    Ok(if flags & now != 0 {
        Some(cap_fs_ext::SystemTimeSpec::SymbolicNow)
    } else if flags & set != 0 {
        Some(cap_fs_ext::SystemTimeSpec::Absolute(
            cap_std::time::SystemTime::from_std(UNIX_EPOCH + Duration::from_nanos(ts)),
        ))
    } else {
        None
    })
}

fn std_time_spec(
    ts: u64,
    flags: u16,
    set: u16,
    now: u16,
) -> WasiResult<Option<fs_set_times::SystemTimeSpec>> {
    Ok(time_spec(ts, flags, set, now)?.map(|s| match s {
        cap_fs_ext::SystemTimeSpec::SymbolicNow => fs_set_times::SystemTimeSpec::SymbolicNow,
        cap_fs_ext::SystemTimeSpec::Absolute(t) => {
            fs_set_times::SystemTimeSpec::Absolute(t.into_std())
        }
    }))
}

impl WasiCtx {
    fn mount_dir(&self, mount: usize) -> &cap_std::fs::Dir {
        &self.ns.mounts[mount].dir
    }

    /// Resolves `path`; a name that would be new in a virtual directory is
    /// read-only rather than missing, as nothing can be created there.
    fn resolve_creating(&self, fd: u32, path: &str) -> Sys<Target> {
        let base = self.fds.dir(fd)?;
        match self.ns.resolve(base, path) {
            Err(Errno::NOENT) => {
                let parent = path
                    .trim_end_matches('/')
                    .rsplit_once('/')
                    .map_or("", |(p, _)| p);
                match self.ns.resolve(base, parent) {
                    Ok(Target::Virtual { .. }) => Err(Errno::ROFS.into()),
                    _ => Err(Errno::NOENT.into()),
                }
            }
            r => Ok(r?),
        }
    }

    /// Resolves a path for an operation that changes the file system: the
    /// target must be below a writable mount, and not a mount root.
    fn resolve_for_change(&self, fd: u32, path: &str) -> Sys<(usize, PathBuf)> {
        let target = self.resolve_creating(fd, path)?;
        match target {
            Target::Virtual { .. } => Err(Errno::ROFS.into()),
            Target::Host { mount, ref rel, .. } => {
                if !self.ns.mounts[mount].writable {
                    return Err(Errno::ROFS.into());
                }
                if self.ns.is_mount_root(&target) {
                    return Err(Errno::BUSY.into());
                }
                Ok((mount, rel_path(rel)))
            }
        }
    }

    fn mkdir(&self, fd: u32, path: &str) -> Sys<()> {
        let (mount, rel) = self.resolve_for_change(fd, path)?;
        Ok(self.mount_dir(mount).create_dir(rel)?)
    }

    fn rmdir(&self, fd: u32, path: &str) -> Sys<()> {
        let (mount, rel) = self.resolve_for_change(fd, path)?;
        Ok(self.mount_dir(mount).remove_dir(rel)?)
    }

    fn unlink(&self, fd: u32, path: &str) -> Sys<()> {
        let (mount, rel) = self.resolve_for_change(fd, path)?;
        Ok(self.mount_dir(mount).remove_file_or_symlink(rel)?)
    }

    fn link(&self, old_fd: u32, old: &str, new_fd: u32, new: &str) -> Sys<()> {
        let (m1, r1) = self.resolve_for_change(old_fd, old)?;
        let (m2, r2) = self.resolve_for_change(new_fd, new)?;
        // A link across mounts could give write access to a file of a
        // read-only mount, or tie two host trees together.
        if m1 != m2 {
            return Err(Errno::XDEV.into());
        }
        let dir = self.mount_dir(m1);
        Ok(dir.hard_link(r1, dir, r2)?)
    }

    fn rename(&self, old_fd: u32, old: &str, new_fd: u32, new: &str) -> Sys<()> {
        let (m1, r1) = self.resolve_for_change(old_fd, old)?;
        let (m2, r2) = self.resolve_for_change(new_fd, new)?;
        if m1 != m2 {
            return Err(Errno::XDEV.into());
        }
        let dir = self.mount_dir(m1);
        Ok(dir.rename(r1, dir, r2)?)
    }

    fn symlink(&self, target: &str, fd: u32, path: &str) -> Sys<()> {
        let (mount, rel) = self.resolve_for_change(fd, path)?;
        // A link made by the guest stays in the host tree after the run and
        // could mislead a host program that follows it.
        if !self.allow_symlinks {
            return Err(Errno::PERM.into());
        }
        Ok(self.mount_dir(mount).symlink(target, rel)?)
    }

    fn stat_target(&self, target: &Target, follow: bool) -> Sys<Filestat> {
        match target {
            Target::Virtual { .. } => Ok(virtual_dir_stat()),
            Target::Host { mount, rel, .. } => {
                let dir = self.mount_dir(*mount);
                let p = rel_path(rel);
                let r = if follow || rel.is_empty() {
                    dir.metadata(&p)
                } else {
                    dir.symlink_metadata(&p)
                };
                match r {
                    Ok(m) => Ok(filestat_of_cap(&m)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        match self.ns.virtual_fallback(target) {
                            Some(_) => Ok(virtual_dir_stat()),
                            None => Err(e.into()),
                        }
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    fn list_dir(&self, target: &Target) -> Sys<Vec<DirEntry>> {
        let mut out = vec![
            DirEntry {
                name: ".".into(),
                ino: 0,
                filetype: FILETYPE_DIRECTORY,
            },
            DirEntry {
                name: "..".into(),
                ino: 0,
                filetype: FILETYPE_DIRECTORY,
            },
        ];
        if let Target::Host { mount, rel, .. } = target {
            let dir = self.mount_dir(*mount);
            let entries = match dir.read_dir(rel_path(rel)) {
                Ok(e) => Some(e),
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        && self.ns.virtual_fallback(target).is_some() =>
                {
                    None
                }
                Err(e) => return Err(e.into()),
            };
            for entry in entries.into_iter().flatten() {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue; // not representable for the guest
                };
                let filetype = entry
                    .file_type()
                    .map(|t| filetype_of_cap(&t))
                    .unwrap_or(FILETYPE_UNKNOWN);
                #[cfg(unix)]
                let ino = {
                    use std::os::unix::fs::DirEntryExt as _;
                    entry.ino()
                };
                #[cfg(not(unix))]
                let ino = 0;
                out.push(DirEntry {
                    name,
                    ino,
                    filetype,
                });
            }
        }
        if let Some(g) = target.guest_path() {
            for name in self.ns.mount_children(g) {
                if !out.iter().any(|e| e.name == name) {
                    out.push(DirEntry {
                        name,
                        ino: 0,
                        filetype: FILETYPE_DIRECTORY,
                    });
                }
            }
        }
        // Virtual entries have no inode; give a stable made-up one so that
        // wasi-libc does not stat them.
        for (i, e) in out.iter_mut().enumerate() {
            if e.ino == 0 {
                e.ino = 0x7fff_0000_0000_0000 + i as u64;
            }
        }
        Ok(out)
    }

    fn write_output(&mut self, counted: bool, data: &[u8]) -> Sys<usize> {
        if !counted {
            return Ok(data.len());
        }
        if let Some(max) = self.max_output {
            let left = max.saturating_sub(self.output_written);
            if data.len() as u64 > left {
                return Err(Fail::Stop(Stop::OutputLimit));
            }
        }
        self.output_written += data.len() as u64;
        Ok(data.len())
    }

    fn check_deadline(&self) -> Sys<()> {
        match self.deadline {
            Some(d) if Instant::now() >= d => Err(Fail::Stop(Stop::Timeout)),
            _ => Ok(()),
        }
    }
}

fn path_open(
    cx: &mut WasiCtx,
    fd: u32,
    dirflags: u32,
    path: &str,
    oflags: u16,
    rights: u64,
    fdflags: u16,
) -> Sys<u32> {
    let create = oflags & OFLAG_CREAT != 0;
    let target = if create {
        cx.resolve_creating(fd, path)?
    } else {
        cx.ns.resolve(cx.fds.dir(fd)?, path)?
    };
    let want_dir = oflags & OFLAG_DIRECTORY != 0;
    let trunc = oflags & OFLAG_TRUNC != 0;
    let excl = oflags & OFLAG_EXCL != 0;
    let write = rights & WRITE_RIGHTS != 0 || trunc;
    let read = rights & RIGHT_FD_READ != 0 || !write;
    let append = fdflags & FDFLAG_APPEND != 0;
    let follow = dirflags & LOOKUP_SYMLINK_FOLLOW != 0;

    let (mount, rel) = match &target {
        Target::Virtual { .. } => {
            if write || create {
                return Err(Errno::ROFS.into());
            }
            return Ok(cx.fds.push(Desc::Dir {
                target,
                preopen: None,
                listing: None,
            })?);
        }
        Target::Host { mount, rel, .. } => (*mount, rel.clone()),
    };
    let writable = cx.ns.mounts[mount].writable;
    if (write || create || append) && !writable {
        return Err(Errno::ROFS.into());
    }
    let dir = cx.mount_dir(mount);
    let p = rel_path(&rel);

    let mut opts = cap_std::fs::OpenOptions::new();
    opts.read(read || want_dir)
        .write(write && !append)
        .append(write && append)
        .truncate(trunc)
        .follow(if follow {
            cap_fs_ext::FollowSymlinks::Yes
        } else {
            cap_fs_ext::FollowSymlinks::No
        })
        .maybe_dir(true);
    if create && excl {
        opts.create_new(true);
    } else if create {
        opts.create(true);
    }
    if create && !write {
        // The host needs write access to create; the guest's descriptor
        // stays read-only.
        opts.write(true);
    }
    let file = match dir.open_with(&p, &opts) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !create => {
            if let Some(v) = cx.ns.virtual_fallback(&target) {
                return Ok(cx.fds.push(Desc::Dir {
                    target: v,
                    preopen: None,
                    listing: None,
                })?);
            }
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    if meta.is_dir() {
        if write {
            return Err(Errno::ISDIR.into());
        }
        return Ok(cx.fds.push(Desc::Dir {
            target,
            preopen: None,
            listing: None,
        })?);
    }
    if want_dir {
        return Err(Errno::NOTDIR.into());
    }
    Ok(cx.fds.push(Desc::File {
        file: file.into_std(),
        target,
        read,
        write,
        append,
    })?)
}

fn fd_read_into(cx: &mut WasiCtx, fd: u32, buf: &mut [u8], at: Option<u64>) -> Sys<usize> {
    match cx.fds.get_mut(fd)? {
        Desc::Host { file, read, .. } => {
            if !*read {
                return Err(Errno::BADF.into());
            }
            Ok(match at {
                Some(off) => read_at(file, buf, off)?,
                None => file.read(buf)?,
            })
        }
        Desc::File { file, read, .. } => {
            if !*read {
                return Err(Errno::BADF.into());
            }
            Ok(match at {
                Some(off) => read_at(file, buf, off)?,
                None => file.read(buf)?,
            })
        }
        Desc::Memory { input, .. } => match (input, at) {
            (Some(c), None) => Ok(c.read(buf)?),
            (Some(_), Some(_)) => Err(Errno::SPIPE.into()),
            (None, _) => Err(Errno::BADF.into()),
        },
        Desc::Dir { .. } => Err(Errno::ISDIR.into()),
    }
}

#[cfg(unix)]
fn read_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(f, buf, off)
}
#[cfg(windows)]
fn read_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(f, buf, off)
}
#[cfg(unix)]
fn write_at(f: &File, buf: &[u8], off: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::write_at(f, buf, off)
}
#[cfg(windows)]
fn write_at(f: &File, buf: &[u8], off: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_write(f, buf, off)
}

fn fd_write_from(cx: &mut WasiCtx, fd: u32, data: &[u8], at: Option<u64>) -> Sys<usize> {
    let counted = match cx.fds.get(fd)? {
        Desc::Host { counted, .. } | Desc::Memory { counted, .. } => *counted,
        _ => false,
    };
    cx.write_output(counted, data)?;
    match cx.fds.get_mut(fd)? {
        Desc::Host { file, write, .. } => {
            if !*write {
                return Err(Errno::BADF.into());
            }
            match at {
                Some(off) => Ok(write_at(file, data, off)?),
                None => {
                    file.write_all(data)?;
                    Ok(data.len())
                }
            }
        }
        Desc::File { file, write, .. } => {
            if !*write {
                return Err(Errno::BADF.into());
            }
            match at {
                Some(off) => Ok(write_at(file, data, off)?),
                None => Ok(file.write(data)?),
            }
        }
        Desc::Memory { output, .. } => match (output, at) {
            (Some(Sink::Buffer(o)), None) => {
                o.lock().unwrap().extend_from_slice(data);
                Ok(data.len())
            }
            (Some(Sink::Discard), None) => Ok(data.len()),
            (Some(_), Some(_)) => Err(Errno::SPIPE.into()),
            (None, _) => Err(Errno::BADF.into()),
        },
        Desc::Dir { .. } => Err(Errno::ISDIR.into()),
    }
}

fn fdstat(d: &Desc) -> (u8, u16, u64) {
    let no_seek = !(RIGHT_FD_SEEK | RIGHT_FD_TELL);
    let io_rights = |read: bool, write: bool| {
        let mut r = ALL_RIGHTS;
        if !read {
            r &= !RIGHT_FD_READ;
        }
        if !write {
            r &= !WRITE_RIGHTS;
        }
        r
    };
    match d {
        Desc::Host {
            file,
            read,
            write,
            tty,
            ..
        } => {
            let ft = file
                .metadata()
                .map(|m| filestat_of_std(&m).filetype)
                .unwrap_or(FILETYPE_UNKNOWN);
            let mut rights = io_rights(*read, *write);
            if *tty {
                // wasi-libc's isatty() wants a character device that cannot seek.
                return (FILETYPE_CHARACTER_DEVICE, 0, rights & no_seek);
            }
            if ft != FILETYPE_REGULAR_FILE {
                rights &= no_seek;
            }
            (ft, 0, rights)
        }
        Desc::Memory { input, output, .. } => (
            FILETYPE_UNKNOWN,
            0,
            io_rights(input.is_some(), output.is_some()) & no_seek,
        ),
        Desc::File {
            read,
            write,
            append,
            ..
        } => (
            FILETYPE_REGULAR_FILE,
            if *append { FDFLAG_APPEND } else { 0 },
            io_rights(*read, *write),
        ),
        Desc::Dir { .. } => (FILETYPE_DIRECTORY, 0, ALL_RIGHTS),
    }
}

fn poll_oneoff(cx: &mut WasiCtx, mem: &mut [u8], inp: u32, out: u32, n: u32) -> Sys<u32> {
    if n == 0 {
        return Err(Errno::INVAL.into());
    }
    if n > 4096 {
        return Err(Errno::TOOBIG.into());
    }
    struct Sub {
        userdata: u64,
        kind: u8,
        fd: u32,
        wake: Option<Instant>,
    }
    let now = Instant::now();
    let real_now = nanos(Ok(SystemTime::now()));
    let mono_now = monotonic_base().elapsed().as_nanos() as u64;
    let mut subs = Vec::new();
    for i in 0..n {
        let at = inp + i * 48;
        let userdata = get_u64(mem, at)?;
        let kind = slice(mem, at + 8, 1)?[0];
        match kind {
            EVENTTYPE_CLOCK => {
                let id = get_u32(mem, at + 16)?;
                let timeout = get_u64(mem, at + 24)?;
                let flags = u16::from_le_bytes(slice(mem, at + 40, 2)?.try_into().unwrap());
                let delay = if flags & SUBCLOCK_ABSTIME != 0 {
                    let base = match id {
                        CLOCK_REALTIME => real_now,
                        _ => mono_now,
                    };
                    timeout.saturating_sub(base)
                } else {
                    timeout
                };
                subs.push(Sub {
                    userdata,
                    kind,
                    fd: 0,
                    wake: Some(now + Duration::from_nanos(delay)),
                });
            }
            EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE => {
                let fd = get_u32(mem, at + 16)?;
                subs.push(Sub {
                    userdata,
                    kind,
                    fd,
                    wake: None,
                });
            }
            _ => return Err(Errno::INVAL.into()),
        }
    }

    // Descriptor events: files, memory streams and output are always ready.
    // Host pipes and terminals are asked with poll(2) on Unix.
    let mut ready: Vec<(usize, u16)> = Vec::new();
    #[cfg(unix)]
    let mut wait_on: Vec<(usize, libc::pollfd)> = Vec::new();
    for (i, s) in subs.iter().enumerate() {
        if s.kind == EVENTTYPE_CLOCK {
            continue;
        }
        match cx.fds.get(s.fd) {
            Err(e) => ready.push((i, e.0)),
            #[cfg(unix)]
            Ok(Desc::Host { file, tty, .. })
                if {
                    let is_file = file.metadata().map(|m| m.is_file()).unwrap_or(false);
                    *tty || !is_file
                } =>
            {
                use std::os::fd::AsRawFd;
                wait_on.push((
                    i,
                    libc::pollfd {
                        fd: file.as_raw_fd(),
                        events: if s.kind == EVENTTYPE_FD_READ {
                            libc::POLLIN
                        } else {
                            libc::POLLOUT
                        },
                        revents: 0,
                    },
                ));
            }
            Ok(_) => ready.push((i, 0)),
        }
    }
    let earliest = subs.iter().filter_map(|s| s.wake).min();
    #[cfg(unix)]
    if ready.is_empty() && !wait_on.is_empty() {
        loop {
            cx.check_deadline()?;
            // Wake at least every 100 ms to honour the time limit.
            let until = [earliest, cx.deadline].into_iter().flatten().min();
            let ms = until
                .map(|u| {
                    u.saturating_duration_since(Instant::now())
                        .as_millis()
                        .min(100) as i32
                })
                .unwrap_or(100);
            let mut pfds: Vec<libc::pollfd> = wait_on.iter().map(|(_, p)| *p).collect();
            // SAFETY: pfds is a valid, exclusively borrowed array of pollfd.
            let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
            if r > 0 {
                for (k, p) in pfds.iter().enumerate() {
                    if p.revents != 0 {
                        ready.push((wait_on[k].0, 0));
                    }
                }
                break;
            }
            if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return Err(io::Error::last_os_error().into());
            }
            if earliest.is_some_and(|e| Instant::now() >= e) {
                break;
            }
        }
    }
    if ready.is_empty() {
        if let Some(wake) = earliest {
            loop {
                cx.check_deadline()?;
                let now = Instant::now();
                if now >= wake {
                    break;
                }
                let mut step = wake - now;
                if let Some(d) = cx.deadline {
                    step = step.min(d.saturating_duration_since(now) + Duration::from_millis(1));
                }
                std::thread::sleep(step.min(Duration::from_millis(100)));
            }
        }
    }
    let now = Instant::now();
    let mut count = 0u32;
    for (i, s) in subs.iter().enumerate() {
        let (fire, err) = if s.kind == EVENTTYPE_CLOCK {
            (s.wake.is_some_and(|w| now >= w), 0)
        } else {
            match ready.iter().find(|(k, _)| *k == i) {
                Some((_, e)) => (true, *e),
                None => (false, 0),
            }
        };
        if !fire {
            continue;
        }
        let at = out + count * 32;
        let mut ev = [0u8; 32];
        ev[0..8].copy_from_slice(&s.userdata.to_le_bytes());
        ev[8..10].copy_from_slice(&err.to_le_bytes());
        ev[10] = s.kind;
        if s.kind != EVENTTYPE_CLOCK {
            // nbytes is advisory; 1 says "something can be transferred".
            ev[16..24].copy_from_slice(&1u64.to_le_bytes());
        }
        put(mem, at, &ev)?;
        count += 1;
    }
    Ok(count)
}

/// Registers every `wasi_snapshot_preview1` function with `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<Guest>) -> wasmtime::Result<()> {
    const M: &str = "wasi_snapshot_preview1";

    // Each call gets the guest's memory and our context side by side.
    macro_rules! sys {
        ($name:literal, |$cx:ident, $mem:ident $(, $arg:ident : $ty:ty)*| $body:block) => {
            linker.func_wrap(M, $name, |mut caller: Caller<'_, Guest>, $($arg: $ty),*| -> wasmtime::Result<i32> {
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

    sys!("args_sizes_get", |cx, mem, argc: u32, size: u32| {
        put_u32(mem, argc, cx.args.len() as u32)?;
        let total: usize = cx.args.iter().map(|a| a.len() + 1).sum();
        put_u32(mem, size, total as u32)?;
        Ok(())
    });
    sys!("args_get", |cx, mem, argv: u32, buf: u32| {
        write_strings(mem, &cx.args, argv, buf)
    });
    sys!("environ_sizes_get", |cx, mem, count: u32, size: u32| {
        put_u32(mem, count, cx.env.len() as u32)?;
        let total: usize = cx.env.iter().map(|a| a.len() + 1).sum();
        put_u32(mem, size, total as u32)?;
        Ok(())
    });
    sys!("environ_get", |cx, mem, env: u32, buf: u32| {
        write_strings(mem, &cx.env, env, buf)
    });
    sys!("clock_res_get", |cx, mem, id: u32, out: u32| {
        match id {
            CLOCK_REALTIME | CLOCK_MONOTONIC | CLOCK_PROCESS_CPUTIME | CLOCK_THREAD_CPUTIME => {
                put_u64(mem, out, 1_000)?;
                Ok(())
            }
            _ => Err(Errno::INVAL.into()),
        }
    });
    sys!("clock_time_get", |cx,
                            mem,
                            id: u32,
                            _precision: i64,
                            out: u32| {
        let t = match id {
            CLOCK_REALTIME => nanos(Ok(SystemTime::now())),
            // There is no CPU-time clock: the process clocks count wall time
            // from the first start in this process, like the monotonic one.
            CLOCK_MONOTONIC | CLOCK_PROCESS_CPUTIME | CLOCK_THREAD_CPUTIME => {
                monotonic_base().elapsed().as_nanos() as u64
            }
            _ => return Err(Errno::INVAL.into()),
        };
        put_u64(mem, out, t)?;
        Ok(())
    });
    sys!("fd_advise", |cx,
                       mem,
                       fd: u32,
                       _off: i64,
                       _len: i64,
                       _advice: i32| {
        cx.fds.get(fd)?;
        Ok(())
    });
    sys!("fd_allocate", |cx, mem, fd: u32, off: i64, len: i64| {
        match cx.fds.get(fd)? {
            Desc::File {
                file, write: true, ..
            } => {
                let end = (off as u64).checked_add(len as u64).ok_or(Errno::FBIG)?;
                if file.metadata()?.len() < end {
                    file.set_len(end)?;
                }
                Ok(())
            }
            Desc::File { .. } => Err(Errno::BADF.into()),
            _ => Err(Errno::NOTSUP.into()),
        }
    });
    sys!("fd_close", |cx, mem, fd: u32| {
        cx.fds.remove(fd)?;
        Ok(())
    });
    sys!("fd_datasync", |cx, mem, fd: u32| {
        match cx.fds.get(fd)? {
            Desc::File { file, .. } => Ok(file.sync_data()?),
            _ => Ok(()),
        }
    });
    sys!("fd_sync", |cx, mem, fd: u32| {
        match cx.fds.get(fd)? {
            Desc::File { file, .. } => Ok(file.sync_all()?),
            _ => Ok(()),
        }
    });
    sys!("fd_fdstat_get", |cx, mem, fd: u32, out: u32| {
        let (ft, flags, rights) = fdstat(cx.fds.get(fd)?);
        let mut b = [0u8; 24];
        b[0] = ft;
        b[2..4].copy_from_slice(&flags.to_le_bytes());
        b[8..16].copy_from_slice(&rights.to_le_bytes());
        b[16..24].copy_from_slice(&rights.to_le_bytes());
        put(mem, out, &b)?;
        Ok(())
    });
    sys!("fd_fdstat_set_flags", |cx, mem, fd: u32, flags: u32| {
        if let Desc::File { append, write, .. } = cx.fds.get_mut(fd)? {
            let want = flags as u16 & FDFLAG_APPEND != 0;
            if want && !*write {
                return Err(Errno::BADF.into());
            }
            *append = want;
        }
        Ok(())
    });
    sys!(
        "fd_fdstat_set_rights",
        |cx, mem, fd: u32, _base: i64, _inh: i64| {
            cx.fds.get(fd)?;
            Ok(())
        }
    );
    sys!("fd_filestat_get", |cx, mem, fd: u32, out: u32| {
        let st = match cx.fds.get(fd)? {
            Desc::Host { file, .. } | Desc::File { file, .. } => filestat_of_std(&file.metadata()?),
            Desc::Memory { .. } => Filestat {
                filetype: FILETYPE_UNKNOWN,
                nlink: 1,
                ..Filestat::default()
            },
            Desc::Dir { target, .. } => {
                let t = target.clone();
                cx.stat_target(&t, true)?
            }
        };
        put(mem, out, &st.to_bytes())?;
        Ok(())
    });
    sys!("fd_filestat_set_size", |cx, mem, fd: u32, size: i64| {
        match cx.fds.get(fd)? {
            Desc::File {
                file, write: true, ..
            } => Ok(file.set_len(size as u64)?),
            Desc::Host {
                file, write: true, ..
            } => Ok(file.set_len(size as u64)?),
            Desc::Dir { .. } => Err(Errno::ISDIR.into()),
            _ => Err(Errno::BADF.into()),
        }
    });
    sys!(
        "fd_filestat_set_times",
        |cx, mem, fd: u32, atim: i64, mtim: i64, flags: u32| {
            let flags = flags as u16;
            match cx.fds.get(fd)? {
                Desc::File { file, target, .. } => {
                    if let Target::Host { mount, .. } = target {
                        if !cx.ns.mounts[*mount].writable {
                            return Err(Errno::ROFS.into());
                        }
                    }
                    let a = std_time_spec(atim as u64, flags, FST_ATIM, FST_ATIM_NOW)?;
                    let m = std_time_spec(mtim as u64, flags, FST_MTIM, FST_MTIM_NOW)?;
                    Ok(fs_set_times::SetTimes::set_times(file, a, m)?)
                }
                Desc::Dir { target, .. } => match target {
                    Target::Host { mount, rel, .. } if cx.ns.mounts[*mount].writable => {
                        let a = time_spec(atim as u64, flags, FST_ATIM, FST_ATIM_NOW)?;
                        let m = time_spec(mtim as u64, flags, FST_MTIM, FST_MTIM_NOW)?;
                        Ok(cx.mount_dir(*mount).set_times(rel_path(rel), a, m)?)
                    }
                    _ => Err(Errno::ROFS.into()),
                },
                _ => Err(Errno::BADF.into()),
            }
        }
    );
    sys!("fd_pread", |cx,
                      mem,
                      fd: u32,
                      iovs: u32,
                      n: u32,
                      off: i64,
                      nread: u32| {
        let mut total = 0usize;
        let mut off = off as u64;
        for (ptr, len) in iovecs(mem, iovs, n)? {
            let buf = slice_mut(mem, ptr, len)?;
            let got = fd_read_into(cx, fd, buf, Some(off))?;
            total += got;
            off += got as u64;
            if got < len as usize {
                break;
            }
        }
        put_u32(mem, nread, total as u32)?;
        Ok(())
    });
    sys!("fd_pwrite", |cx,
                       mem,
                       fd: u32,
                       iovs: u32,
                       n: u32,
                       off: i64,
                       nwritten: u32| {
        let mut total = 0usize;
        let mut off = off as u64;
        for (ptr, len) in iovecs(mem, iovs, n)? {
            let data = slice(mem, ptr, len)?;
            let put_n = fd_write_from(cx, fd, data, Some(off))?;
            total += put_n;
            off += put_n as u64;
            if put_n < len as usize {
                break;
            }
        }
        put_u32(mem, nwritten, total as u32)?;
        Ok(())
    });
    sys!("fd_read", |cx,
                     mem,
                     fd: u32,
                     iovs: u32,
                     n: u32,
                     nread: u32| {
        let mut total = 0usize;
        for (ptr, len) in iovecs(mem, iovs, n)? {
            if len == 0 {
                continue;
            }
            let buf = slice_mut(mem, ptr, len)?;
            let got = fd_read_into(cx, fd, buf, None)?;
            total += got;
            // A short read may mean "no more now" on a pipe: do not block again.
            if got < len as usize {
                break;
            }
        }
        put_u32(mem, nread, total as u32)?;
        Ok(())
    });
    sys!("fd_write", |cx,
                      mem,
                      fd: u32,
                      iovs: u32,
                      n: u32,
                      nwritten: u32| {
        // Gather first so that one guest write is one host write: a line
        // printed by the guest is not split among other output.
        let mut data = Vec::new();
        for (ptr, len) in iovecs(mem, iovs, n)? {
            data.extend_from_slice(slice(mem, ptr, len)?);
        }
        let put_n = fd_write_from(cx, fd, &data, None)?;
        put_u32(mem, nwritten, put_n as u32)?;
        Ok(())
    });
    sys!("fd_prestat_get", |cx, mem, fd: u32, out: u32| {
        let mut b = [0u8; 8];
        match cx.fds.get(fd)? {
            Desc::Dir {
                preopen: Some(name),
                ..
            } => {
                b[4..8].copy_from_slice(&(name.len() as u32).to_le_bytes());
            }
            // Not a preopen: an unknown tag makes wasi-libc skip it and go
            // on scanning (EBADF would end the scan, any other errno would
            // abort the program).
            _ => b[0] = 1,
        }
        put(mem, out, &b)?;
        Ok(())
    });
    sys!(
        "fd_prestat_dir_name",
        |cx, mem, fd: u32, ptr: u32, len: u32| {
            match cx.fds.get(fd)? {
                Desc::Dir {
                    preopen: Some(name),
                    ..
                } => {
                    let b = name.as_bytes();
                    if (len as usize) < b.len() {
                        return Err(Errno::NAMETOOLONG.into());
                    }
                    put(mem, ptr, b)?;
                    Ok(())
                }
                _ => Err(Errno::BADF.into()),
            }
        }
    );
    sys!("fd_readdir", |cx,
                        mem,
                        fd: u32,
                        buf: u32,
                        buf_len: u32,
                        cookie: i64,
                        used: u32| {
        let target = match cx.fds.get(fd)? {
            Desc::Dir { target, .. } => target.clone(),
            _ => return Err(Errno::NOTDIR.into()),
        };
        let need_list = cookie == 0
            || !matches!(
                cx.fds.get(fd)?,
                Desc::Dir {
                    listing: Some(_),
                    ..
                }
            );
        if need_list {
            let l = cx.list_dir(&target)?;
            if let Desc::Dir { listing, .. } = cx.fds.get_mut(fd)? {
                *listing = Some(l);
            }
        }
        let Desc::Dir {
            listing: Some(entries),
            ..
        } = cx.fds.get(fd)?
        else {
            unreachable!("listing was just filled")
        };
        let out = slice_mut(mem, buf, buf_len)?;
        let mut pos = 0usize;
        for (i, e) in entries.iter().enumerate().skip(cookie as usize) {
            let mut rec = Vec::with_capacity(24 + e.name.len());
            rec.extend_from_slice(&((i + 1) as u64).to_le_bytes());
            rec.extend_from_slice(&e.ino.to_le_bytes());
            rec.extend_from_slice(&(e.name.len() as u32).to_le_bytes());
            rec.extend_from_slice(&[e.filetype, 0, 0, 0]);
            rec.extend_from_slice(e.name.as_bytes());
            // A record that does not fit is cut off: a full buffer tells
            // wasi-libc to ask again with a larger one.
            let n = rec.len().min(out.len() - pos);
            out[pos..pos + n].copy_from_slice(&rec[..n]);
            pos += n;
            if pos == out.len() {
                break;
            }
        }
        put_u32(mem, used, pos as u32)?;
        Ok(())
    });
    sys!("fd_renumber", |cx, mem, from: u32, to: u32| {
        if !cx.fds.contains(to) {
            return Err(Errno::BADF.into());
        }
        let d = cx.fds.remove(from)?;
        cx.fds.insert_at(to, d);
        Ok(())
    });
    sys!("fd_seek", |cx,
                     mem,
                     fd: u32,
                     off: i64,
                     whence: u32,
                     out: u32| {
        let pos = match whence as u8 {
            WHENCE_SET => SeekFrom::Start(u64::try_from(off).map_err(|_| Errno::INVAL)?),
            WHENCE_CUR => SeekFrom::Current(off),
            WHENCE_END => SeekFrom::End(off),
            _ => return Err(Errno::INVAL.into()),
        };
        let new = match cx.fds.get_mut(fd)? {
            Desc::File { file, .. } => file.seek(pos)?,
            Desc::Host {
                file, tty: false, ..
            } => file.seek(pos)?,
            Desc::Dir { .. } => return Err(Errno::BADF.into()),
            _ => return Err(Errno::SPIPE.into()),
        };
        put_u64(mem, out, new)?;
        Ok(())
    });
    sys!("fd_tell", |cx, mem, fd: u32, out: u32| {
        let new = match cx.fds.get_mut(fd)? {
            Desc::File { file, .. } => file.stream_position()?,
            Desc::Host {
                file, tty: false, ..
            } => file.stream_position()?,
            Desc::Dir { .. } => return Err(Errno::BADF.into()),
            _ => return Err(Errno::SPIPE.into()),
        };
        put_u64(mem, out, new)?;
        Ok(())
    });
    sys!(
        "path_create_directory",
        |cx, mem, fd: u32, p: u32, len: u32| { cx.mkdir(fd, &get_str(mem, p, len)?) }
    );
    sys!(
        "path_filestat_get",
        |cx, mem, fd: u32, flags: u32, p: u32, len: u32, out: u32| {
            let path = get_str(mem, p, len)?;
            let target = cx.ns.resolve(cx.fds.dir(fd)?, &path)?;
            let st = cx.stat_target(&target, flags & LOOKUP_SYMLINK_FOLLOW != 0)?;
            put(mem, out, &st.to_bytes())?;
            Ok(())
        }
    );
    sys!(
        "path_filestat_set_times",
        |cx, mem, fd: u32, flags: u32, p: u32, len: u32, atim: i64, mtim: i64, fst: u32| {
            let path = get_str(mem, p, len)?;
            let target = cx.ns.resolve(cx.fds.dir(fd)?, &path)?;
            let Target::Host { mount, rel, .. } = target else {
                return Err(Errno::ROFS.into());
            };
            if !cx.ns.mounts[mount].writable {
                return Err(Errno::ROFS.into());
            }
            let fst = fst as u16;
            let a = time_spec(atim as u64, fst, FST_ATIM, FST_ATIM_NOW)?;
            let m = time_spec(mtim as u64, fst, FST_MTIM, FST_MTIM_NOW)?;
            let dir = cx.mount_dir(mount);
            if flags & LOOKUP_SYMLINK_FOLLOW != 0 {
                dir.set_times(rel_path(&rel), a, m)?;
            } else {
                dir.set_symlink_times(rel_path(&rel), a, m)?;
            }
            Ok(())
        }
    );
    sys!("path_link", |cx,
                       mem,
                       old_fd: u32,
                       _old_flags: u32,
                       op: u32,
                       olen: u32,
                       new_fd: u32,
                       np: u32,
                       nlen: u32| {
        cx.link(
            old_fd,
            &get_str(mem, op, olen)?,
            new_fd,
            &get_str(mem, np, nlen)?,
        )
    });
    sys!("path_open", |cx,
                       mem,
                       fd: u32,
                       dirflags: u32,
                       p: u32,
                       len: u32,
                       oflags: u32,
                       rights: i64,
                       _inh: i64,
                       fdflags: u32,
                       out: u32| {
        let path = get_str(mem, p, len)?;
        let new = path_open(
            cx,
            fd,
            dirflags,
            &path,
            oflags as u16,
            rights as u64,
            fdflags as u16,
        )?;
        put_u32(mem, out, new)?;
        Ok(())
    });
    sys!("path_readlink", |cx,
                           mem,
                           fd: u32,
                           p: u32,
                           len: u32,
                           buf: u32,
                           buf_len: u32,
                           used: u32| {
        let path = get_str(mem, p, len)?;
        let Target::Host { mount, rel, .. } = cx.ns.resolve(cx.fds.dir(fd)?, &path)? else {
            return Err(Errno::INVAL.into());
        };
        let link = cx.mount_dir(mount).read_link_contents(rel_path(&rel))?;
        let s = link.to_string_lossy();
        let b = s.as_bytes();
        let n = b.len().min(buf_len as usize);
        put(mem, buf, &b[..n])?;
        put_u32(mem, used, n as u32)?;
        Ok(())
    });
    sys!(
        "path_remove_directory",
        |cx, mem, fd: u32, p: u32, len: u32| { cx.rmdir(fd, &get_str(mem, p, len)?) }
    );
    sys!("path_rename", |cx,
                         mem,
                         fd: u32,
                         op: u32,
                         olen: u32,
                         new_fd: u32,
                         np: u32,
                         nlen: u32| {
        cx.rename(
            fd,
            &get_str(mem, op, olen)?,
            new_fd,
            &get_str(mem, np, nlen)?,
        )
    });
    sys!("path_symlink", |cx,
                          mem,
                          op: u32,
                          olen: u32,
                          fd: u32,
                          np: u32,
                          nlen: u32| {
        cx.symlink(&get_str(mem, op, olen)?, fd, &get_str(mem, np, nlen)?)
    });
    sys!("path_unlink_file", |cx, mem, fd: u32, p: u32, len: u32| {
        cx.unlink(fd, &get_str(mem, p, len)?)
    });
    sys!("poll_oneoff", |cx,
                         mem,
                         inp: u32,
                         out: u32,
                         n: u32,
                         nevents: u32| {
        let count = poll_oneoff(cx, mem, inp, out, n)?;
        put_u32(mem, nevents, count)?;
        Ok(())
    });
    linker.func_wrap(
        M,
        "proc_exit",
        |_: Caller<'_, Guest>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(Stop::Exit(code)))
        },
    )?;
    sys!("proc_raise", |cx, mem, _sig: u32| {
        Err(Errno::NOSYS.into())
    });
    sys!("sched_yield", |cx, mem| {
        std::thread::yield_now();
        Ok(())
    });
    sys!("random_get", |cx, mem, buf: u32, len: u32| {
        let out = slice_mut(mem, buf, len)?;
        getrandom::fill(out).map_err(|_| Errno::IO)?;
        Ok(())
    });
    // No sockets are ever granted.
    sys!("sock_accept", |cx,
                         mem,
                         _fd: u32,
                         _flags: u32,
                         _out: u32| {
        Err(Errno::NOTSUP.into())
    });
    sys!("sock_recv", |cx,
                       mem,
                       _fd: u32,
                       _a: u32,
                       _b: u32,
                       _c: u32,
                       _d: u32,
                       _e: u32| {
        Err(Errno::NOTSUP.into())
    });
    sys!("sock_send", |cx,
                       mem,
                       _fd: u32,
                       _a: u32,
                       _b: u32,
                       _c: u32,
                       _d: u32| {
        Err(Errno::NOTSUP.into())
    });
    sys!("sock_shutdown", |cx, mem, _fd: u32, _how: u32| {
        Err(Errno::NOTSUP.into())
    });
    Ok(())
}

fn write_strings(mem: &mut [u8], items: &[String], ptrs: u32, buf: u32) -> Sys<()> {
    let mut at = buf;
    for (i, s) in items.iter().enumerate() {
        put_u32(mem, ptrs + 4 * i as u32, at)?;
        put(mem, at, s.as_bytes())?;
        put(mem, at + s.len() as u32, &[0])?;
        at += s.len() as u32 + 1;
    }
    Ok(())
}

/// Drives the system-call layer directly, without a wasm guest, for the
/// fuzzers and property tests: the same code paths a guest reaches
/// through `path_open`, `fd_read`, `fd_write` and the `path_*` calls.
#[doc(hidden)]
pub mod harness {
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
                    listing: None,
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
                        match fd_read_into(cx, fd, &mut buf, None) {
                            Ok(0) => break Ok(()),
                            Ok(n) if out.len() < 1 << 20 => out.extend_from_slice(&buf[..n]),
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
                    let r = fd_write_from(cx, fd, data, None);
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
