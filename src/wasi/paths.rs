//! Paths and directories: every call that names a file, through the mount
//! tree (`crate::mounts`) and, below a mount, cap-std; directory listings
//! and the preopened root.

use std::io;
use std::path::PathBuf;

use cap_fs_ext::{DirExt, MetadataExt, OpenOptionsFollowExt, OpenOptionsMaybeDirExt};
use cap_std::fs::Dir;
use wasmtime::{Caller, Linker};

use super::abi::*;
use super::fdtable::{Desc, DirEntry};
use super::memory::*;
use super::stat::*;
use super::{finish, memory_of, Sys, WasiCtx};
use crate::mounts::{rel_path, Target};
use crate::runtime::Guest;

impl WasiCtx {
    /// The mount's directory and the path below it, once the place has been
    /// confined (see [`crate::mounts::Namespace::confine`]); `last` also
    /// checks the named entry itself, for calls that change or remove it.
    pub(super) fn host(&self, mount: usize, rel: &[String], last: bool) -> Sys<(&Dir, PathBuf)> {
        self.ns.confine(mount, rel, last)?;
        Ok((&self.ns.mounts[mount].dir, rel_path(rel)))
    }

    /// Resolves `path`; a name that would be new in a virtual directory is
    /// read-only rather than missing, as nothing can be created there.
    pub(super) fn resolve_creating(&self, fd: u32, path: &str) -> Sys<Target> {
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
    /// target must be below a writable mount, and not a mount root. On a
    /// read-only place the answer is the kernel's, in the kernel's order: a
    /// lookup error first (`ENOENT`, `ENOTDIR`, `EEXIST` for a name that
    /// must be new), `EROFS` only for a change that could otherwise be made,
    /// so that "remove if present" code sees `ENOENT` as it would natively.
    fn resolve_for_change(&self, fd: u32, path: &str, kind: Change) -> Sys<(usize, &Dir, PathBuf)> {
        let target = self.resolve_creating(fd, path)?;
        match target {
            Target::Virtual { .. } => Err(self.refusal(&target, kind).into()),
            Target::Host { mount, ref rel, .. } => {
                if !self.ns.mounts[mount].writable {
                    return Err(self.refusal(&target, kind).into());
                }
                if self.ns.is_mount_root(&target) {
                    return Err(Errno::BUSY.into());
                }
                let (dir, p) = self.host(mount, rel, true)?;
                if path.ends_with('/') {
                    // A name with a trailing slash is a directory's.
                    match dir.symlink_metadata(&p) {
                        Ok(m) if !m.is_dir() => return Err(Errno::NOTDIR.into()),
                        Err(_) if kind == Change::New(NewKind::File) => {
                            return Err(Errno::ISDIR.into())
                        }
                        _ => {}
                    }
                }
                Ok((mount, dir, p))
            }
        }
    }

    /// Why a change to read-only `target` fails, as the kernel would say.
    fn refusal(&self, target: &Target, kind: Change) -> Errno {
        let Target::Host { mount, rel, .. } = target else {
            // A virtual directory exists; a name new in one was refused
            // by resolve_creating already.
            return match kind {
                Change::New(NewKind::Dir | NewKind::Link) => Errno::EXIST,
                _ => Errno::ROFS,
            };
        };
        let dir = &self.ns.mounts[*mount].dir;
        if self.ns.confine(*mount, rel, true).is_err() {
            return Errno::ROFS;
        }
        match dir.symlink_metadata(rel_path(rel)) {
            Ok(_) => match kind {
                Change::New(NewKind::Dir | NewKind::Link) => Errno::EXIST,
                _ => Errno::ROFS,
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => match kind {
                Change::Existing => Errno::NOENT,
                // A new name: only its directory must exist.
                Change::New(_) => {
                    let parent = &rel[..rel.len().saturating_sub(1)];
                    match dir.metadata(rel_path(parent)) {
                        Ok(m) if m.is_dir() => Errno::ROFS,
                        Ok(_) => Errno::NOTDIR,
                        Err(e) => e.into(),
                    }
                }
            },
            Err(e) => e.into(),
        }
    }

    pub(super) fn mkdir(&self, fd: u32, path: &str) -> Sys<()> {
        let (_, dir, rel) = self.resolve_for_change(fd, path, Change::New(NewKind::Dir))?;
        Ok(dir.create_dir(rel)?)
    }

    pub(super) fn rmdir(&self, fd: u32, path: &str) -> Sys<()> {
        let (_, dir, rel) = self.resolve_for_change(fd, path, Change::Existing)?;
        Ok(dir.remove_dir(rel)?)
    }

    pub(super) fn unlink(&self, fd: u32, path: &str) -> Sys<()> {
        let (_, dir, rel) = self.resolve_for_change(fd, path, Change::Existing)?;
        Ok(dir.remove_file_or_symlink(rel)?)
    }

    pub(super) fn link(&self, old_fd: u32, old: &str, new_fd: u32, new: &str) -> Sys<()> {
        let (m1, dir, r1) = self.resolve_for_change(old_fd, old, Change::Existing)?;
        let (m2, _, r2) = self.resolve_for_change(new_fd, new, Change::New(NewKind::Link))?;
        // A link across mounts could give write access to a file of a
        // read-only mount, or tie two host trees together.
        if m1 != m2 {
            return Err(Errno::XDEV.into());
        }
        Ok(dir.hard_link(r1, dir, r2)?)
    }

    pub(super) fn rename(&self, old_fd: u32, old: &str, new_fd: u32, new: &str) -> Sys<()> {
        let (m1, dir, r1) = self.resolve_for_change(old_fd, old, Change::Existing)?;
        let (m2, _, r2) = self.resolve_for_change(new_fd, new, Change::New(NewKind::File))?;
        if m1 != m2 {
            return Err(Errno::XDEV.into());
        }
        Ok(dir.rename(r1, dir, r2)?)
    }

    pub(super) fn symlink(&self, target: &str, fd: u32, path: &str) -> Sys<()> {
        let (_, dir, rel) = self.resolve_for_change(fd, path, Change::New(NewKind::Link))?;
        // A link made by the guest stays in the host tree after the run and
        // could mislead a host program that follows it.
        if !self.allow_symlinks {
            return Err(Errno::PERM.into());
        }
        Ok(dir.symlink(target, rel)?)
    }

    pub(super) fn stat_target(&self, target: &Target, follow: bool) -> Sys<Filestat> {
        let mut st = self.stat_host(target, follow)?;
        if st.filetype == FILETYPE_DIRECTORY {
            st.mtim = self.ns.listing_mtime(target, st.mtim);
        }
        Ok(st)
    }

    fn stat_host(&self, target: &Target, follow: bool) -> Sys<Filestat> {
        match target {
            Target::Virtual { .. } => Ok(virtual_dir_stat()),
            Target::Host { mount, rel, .. } => {
                let (dir, p) = self.host(*mount, rel, false)?;
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

    /// Calls `each` with the entries of directory `target` from position
    /// `skip` on, in a stable order (`.`, `..`, the host's entries, then
    /// mount points the host directory lacks), until it returns false.
    /// Nothing is kept between calls: a guest that opens many descriptors
    /// on a large directory costs the host no memory for listings, at the
    /// price of reading the directory again for each page.
    pub(super) fn each_entry(
        &self,
        target: &Target,
        skip: u64,
        each: impl FnMut(u64, DirEntry) -> bool,
    ) -> Sys<()> {
        let mut pg = Pager { i: 0, skip, each };
        let dot = |name: &str, ino: u64| DirEntry {
            name: name.into(),
            ino,
            filetype: FILETYPE_DIRECTORY,
        };
        // Virtual entries have no inode; give stable made-up ones so that
        // wasi-libc does not stat them.
        const VIRTUAL_INO: u64 = 0x7fff_0000_0000_0000;
        if !pg.offer(dot(".", VIRTUAL_INO)) || !pg.offer(dot("..", VIRTUAL_INO + 1)) {
            return Ok(());
        }
        let mut host_dir = None;
        if let Target::Host { mount, rel, .. } = target {
            let (mdir, p) = self.host(*mount, rel, false)?;
            match mdir.open_dir(&p) {
                Ok(d) => {
                    self.ns.confine_dir(*mount, &d)?;
                    host_dir = Some(d);
                }
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        && self.ns.virtual_fallback(target).is_some() => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(d) = &host_dir {
            let dev = d.dir_metadata()?.dev();
            for entry in d.entries()? {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue; // not representable for the guest
                };
                if pg.skipping() {
                    continue;
                }
                let filetype = entry
                    .file_type()
                    .map(|t| filetype_of_cap(&t))
                    .unwrap_or(FILETYPE_UNKNOWN);
                #[cfg(unix)]
                let ino = {
                    use std::os::unix::fs::DirEntryExt as _;
                    guest_ino(dev, entry.ino())
                };
                #[cfg(not(unix))]
                let ino = guest_ino(dev, pg.i);
                if !pg.emit(DirEntry {
                    name,
                    ino,
                    filetype,
                }) {
                    return Ok(());
                }
            }
        }
        if let Some(g) = target.guest_path() {
            for (k, name) in self.ns.mount_children(g).into_iter().enumerate() {
                let listed = host_dir
                    .as_ref()
                    .is_some_and(|d| d.symlink_metadata(&name).is_ok());
                if !listed && !pg.offer(dot(&name, VIRTUAL_INO + 2 + k as u64)) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Every entry of `target` (for the test harness).
    pub(super) fn list_dir(&self, target: &Target) -> Sys<Vec<DirEntry>> {
        let mut out = Vec::new();
        self.each_entry(target, 0, |_, e| {
            out.push(e);
            true
        })?;
        Ok(out)
    }
}

/// What a change does to the name it is given, for the errno a read-only
/// place answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Changes or removes what is there (unlink, rmdir, the source of a
    /// rename or link, utime).
    Existing,
    /// Makes the name (mkdir, symlink, the target of a link or rename).
    New(NewKind),
}

/// What a new name will be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NewKind {
    File,
    Dir,
    /// A link, which, like a directory, cannot replace an existing name.
    Link,
}

/// Numbers directory entries and hands those from `skip` on to `each`.
struct Pager<F> {
    i: u64,
    skip: u64,
    each: F,
}

impl<F: FnMut(u64, DirEntry) -> bool> Pager<F> {
    /// Counts the next entry as skipped, if it is before `skip`.
    fn skipping(&mut self) -> bool {
        let skip = self.i < self.skip;
        if skip {
            self.i += 1;
        }
        skip
    }

    /// Hands on the next entry; false once `each` wants no more.
    fn emit(&mut self, e: DirEntry) -> bool {
        let go = (self.each)(self.i, e);
        self.i += 1;
        go
    }

    fn offer(&mut self, e: DirEntry) -> bool {
        self.skipping() || self.emit(e)
    }
}

pub(super) fn path_open(
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
            })?);
        }
        Target::Host { mount, rel, .. } => (*mount, rel.clone()),
    };
    // A name with a trailing slash is a directory's: creating a file by it
    // is EISDIR (as is O_CREAT on a directory), opening a file by it
    // ENOTDIR.
    if create && path.ends_with('/') {
        return Err(Errno::ISDIR.into());
    }
    let want_dir = want_dir || path.ends_with('/');
    let mut create = create;
    if !cx.ns.mounts[mount].writable {
        // The kernel's order: a lookup error before EROFS, and opening an
        // existing file with O_CREAT but no write is no change at all.
        if write || append {
            let kind = if create {
                Change::New(NewKind::File)
            } else {
                Change::Existing
            };
            return Err(cx.refusal(&target, kind).into());
        }
        if create {
            match cx.refusal(&target, Change::New(NewKind::Dir)) {
                Errno::EXIST if !excl => create = false,
                e => return Err(e.into()),
            }
        }
    }
    // Every descriptor of a file holds a host descriptor: refuse before
    // opening, so that the host's table is never the one that runs out.
    cx.fds.check_host_room()?;
    let (dir, p) = cx.host(mount, &rel, false)?;
    // Where another mount's directory lies in this mount's host tree, a
    // final symlink could lead into it, and a file has no parent to check
    // once open: such a link is followed for reading only.
    if follow
        && (write || create || append)
        && cx.ns.is_guarded(mount)
        && dir
            .symlink_metadata(&p)
            .is_ok_and(|m| m.file_type().is_symlink())
    {
        return Err(Errno::PERM.into());
    }

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
    // A FIFO opened for reading would wait for a writer with no deadline:
    // open without waiting, and refuse whatever is neither a file nor a
    // directory below.
    #[cfg(unix)]
    {
        use cap_std::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
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
                })?);
            }
            return Err(e.into());
        }
        // Linux answers ENXIO for a FIFO without a reader opened for
        // writing without waiting, and for a socket.
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    if meta.is_dir() {
        if write {
            return Err(Errno::ISDIR.into());
        }
        cx.ns.confine_dir(mount, &file)?;
        return Ok(cx.fds.push(Desc::Dir {
            target,
            preopen: None,
        })?);
    }
    if want_dir {
        return Err(Errno::NOTDIR.into());
    }
    if !meta.is_file() {
        return Err(Errno::NXIO.into());
    }
    let file = file.into_std();
    // Back to blocking I/O: a regular file never waits, and the flag would
    // show in what the guest asks of its descriptor.
    #[cfg(unix)]
    set_nonblocking(&file, false)?;
    Ok(cx.fds.push(Desc::File {
        file,
        target,
        read,
        write,
        append,
        nonblock: fdflags & FDFLAG_NONBLOCK != 0,
    })?)
}

/// Sets or clears O_NONBLOCK on a descriptor of pynbox's own (never on one
/// shared with the host's other processes).
#[cfg(unix)]
pub(super) fn set_nonblocking(f: &std::fs::File, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let want = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if want != flags && unsafe { libc::fcntl(fd, libc::F_SETFL, want) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn add_to_linker(linker: &mut Linker<Guest>) -> wasmtime::Result<()> {
    sys!(linker, "fd_prestat_get", |cx, mem, fd: u32, out: u32| {
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
        linker,
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
    sys!(
        linker,
        "fd_readdir",
        |cx, mem, fd: u32, buf: u32, buf_len: u32, cookie: i64, used: u32| {
            let target = match cx.fds.get(fd)? {
                Desc::Dir { target, .. } => target.clone(),
                _ => return Err(Errno::NOTDIR.into()),
            };
            let cookie = u64::try_from(cookie).map_err(|_| Errno::INVAL)?;
            let out = slice_mut(mem, buf, buf_len)?;
            let mut pos = 0usize;
            cx.each_entry(&target, cookie, |i, e| {
                // The 24-byte dirent, then the name; a record that does not fit
                // is cut off: a full buffer tells wasi-libc to ask again with a
                // larger one.
                let mut head = [0u8; 24];
                head[0..8].copy_from_slice(&(i + 1).to_le_bytes());
                head[8..16].copy_from_slice(&e.ino.to_le_bytes());
                head[16..20].copy_from_slice(&(e.name.len() as u32).to_le_bytes());
                head[20] = e.filetype;
                for part in [&head[..], e.name.as_bytes()] {
                    let n = part.len().min(out.len() - pos);
                    out[pos..pos + n].copy_from_slice(&part[..n]);
                    pos += n;
                }
                pos < out.len()
            })?;
            put_u32(mem, used, pos as u32)?;
            Ok(())
        }
    );
    sys!(
        linker,
        "path_create_directory",
        |cx, mem, fd: u32, p: u32, len: u32| { cx.mkdir(fd, &get_path(mem, p, len)?) }
    );
    sys!(
        linker,
        "path_filestat_get",
        |cx, mem, fd: u32, flags: u32, p: u32, len: u32, out: u32| {
            let path = get_path(mem, p, len)?;
            let target = cx.ns.resolve(cx.fds.dir(fd)?, &path)?;
            // A trailing slash follows the last link and wants a directory.
            let slash = path.ends_with('/');
            let st = cx.stat_target(&target, slash || flags & LOOKUP_SYMLINK_FOLLOW != 0)?;
            if slash && st.filetype != FILETYPE_DIRECTORY {
                return Err(Errno::NOTDIR.into());
            }
            put(mem, out, &st.to_bytes())?;
            Ok(())
        }
    );
    sys!(
        linker,
        "path_filestat_set_times",
        |cx, mem, fd: u32, flags: u32, p: u32, len: u32, atim: i64, mtim: i64, fst: u32| {
            let path = get_path(mem, p, len)?;
            let target = cx.ns.resolve(cx.fds.dir(fd)?, &path)?;
            let Target::Host { mount, rel, .. } = &target else {
                return Err(cx.refusal(&target, Change::Existing).into());
            };
            let (mount, rel) = (*mount, rel.clone());
            if !cx.ns.mounts[mount].writable {
                return Err(cx.refusal(&target, Change::Existing).into());
            }
            let fst = fst as u16;
            let a = time_spec(atim as u64, fst, FST_ATIM, FST_ATIM_NOW)?;
            let m = time_spec(mtim as u64, fst, FST_MTIM, FST_MTIM_NOW)?;
            let (dir, p) = cx.host(mount, &rel, true)?;
            if flags & LOOKUP_SYMLINK_FOLLOW != 0 {
                // As for opening: a final symlink in a guarded mount could
                // lead into another mount's directory.
                if cx.ns.is_guarded(mount)
                    && dir
                        .symlink_metadata(&p)
                        .is_ok_and(|m| m.file_type().is_symlink())
                {
                    return Err(Errno::PERM.into());
                }
                dir.set_times(p, a, m)?;
            } else {
                dir.set_symlink_times(p, a, m)?;
            }
            Ok(())
        }
    );
    sys!(
        linker,
        "path_link",
        |cx,
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
                &get_path(mem, op, olen)?,
                new_fd,
                &get_path(mem, np, nlen)?,
            )
        }
    );
    sys!(
        linker,
        "path_open",
        |cx,
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
            let path = get_path(mem, p, len)?;
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
        }
    );
    sys!(
        linker,
        "path_readlink",
        |cx, mem, fd: u32, p: u32, len: u32, buf: u32, buf_len: u32, used: u32| {
            let path = get_path(mem, p, len)?;
            let Target::Host { mount, rel, .. } = cx.ns.resolve(cx.fds.dir(fd)?, &path)? else {
                return Err(Errno::INVAL.into());
            };
            let (dir, p) = cx.host(mount, &rel, false)?;
            let link = dir.read_link_contents(p)?;
            let s = link.to_string_lossy();
            let b = s.as_bytes();
            let n = b.len().min(buf_len as usize);
            put(mem, buf, &b[..n])?;
            put_u32(mem, used, n as u32)?;
            Ok(())
        }
    );
    sys!(
        linker,
        "path_remove_directory",
        |cx, mem, fd: u32, p: u32, len: u32| { cx.rmdir(fd, &get_path(mem, p, len)?) }
    );
    sys!(
        linker,
        "path_rename",
        |cx, mem, fd: u32, op: u32, olen: u32, new_fd: u32, np: u32, nlen: u32| {
            cx.rename(
                fd,
                &get_path(mem, op, olen)?,
                new_fd,
                &get_path(mem, np, nlen)?,
            )
        }
    );
    sys!(
        linker,
        "path_symlink",
        |cx, mem, op: u32, olen: u32, fd: u32, np: u32, nlen: u32| {
            cx.symlink(&get_path(mem, op, olen)?, fd, &get_path(mem, np, nlen)?)
        }
    );
    sys!(
        linker,
        "path_unlink_file",
        |cx, mem, fd: u32, p: u32, len: u32| { cx.unlink(fd, &get_path(mem, p, len)?) }
    );
    Ok(())
}
