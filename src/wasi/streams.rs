//! Descriptors and streams: reading, writing, seeking and the state of an
//! open descriptor, and the output limit that every byte written to the
//! host's streams (stdout, stderr, `-h`, `-w`) is counted against.
//!
//! Host descriptors are streams to the guest: no seek, no positional read
//! or write (ESPIPE), no truncation (EINVAL), so a guest can neither grow a
//! host file past the output limit nor overwrite what the host wrote to it.
//! A stream that can make a call wait (a pipe, a terminal, a socket) is
//! polled first, so that the call ends at the deadline even in-process
//! with no watchdog.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use wasmtime::{Caller, Linker};

use super::abi::*;
use super::fdtable::{Desc, Sink};
use super::memory::*;
use super::stat::*;
use super::{finish, memory_of, Fail, Stop, Sys, WasiCtx};
use cap_fs_ext::DirExt;

use crate::mounts::Target;
use crate::runtime::Guest;

impl WasiCtx {
    /// Counts `n` bytes about to reach the host through stdout, stderr or a
    /// forwarded descriptor; the write that would pass `--max-output` stops
    /// the guest before any of it is written.
    pub(super) fn count_output(&mut self, n: u64) -> Sys<()> {
        if let Some(max) = self.max_output {
            if n > max.saturating_sub(self.output_written) {
                return Err(Fail::Stop(Stop::OutputLimit));
            }
        }
        self.output_written = self.output_written.saturating_add(n);
        Ok(())
    }

    pub(super) fn check_deadline(&self) -> Sys<()> {
        match self.deadline {
            Some(d) if Instant::now() >= d => Err(Fail::Stop(Stop::Timeout)),
            _ => Ok(()),
        }
    }
}

/// Waits until `file` is ready for `events` (POLLIN or POLLOUT), the
/// deadline passes (the guest is stopped), or, with `now_only`, at once.
/// Returns whether it is ready. Without a deadline nothing is polled: the
/// call that follows may block, as the embedder asked for no limit.
#[cfg(unix)]
fn wait_ready(deadline: Option<Instant>, file: &File, events: i16, now_only: bool) -> Sys<bool> {
    use std::os::fd::AsRawFd;
    if deadline.is_none() && !now_only {
        return Ok(true);
    }
    loop {
        let ms = if now_only {
            0
        } else {
            let left = deadline.map_or(Duration::from_secs(1), |d| {
                d.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return Err(Fail::Stop(Stop::Timeout));
            }
            // Wake at least once a second to look at the clock again.
            left.as_millis().clamp(1, 1000) as i32
        };
        let mut p = libc::pollfd {
            fd: file.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd, exclusively borrowed.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r > 0 {
            return Ok(true);
        }
        if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return Err(io::Error::last_os_error().into());
        }
        if now_only {
            return Ok(false);
        }
    }
}

/// Reads into the guest's buffers `iovs` at their (ptr, len): sequentially
/// (`at` None) or at an offset. Each buffer is filled straight from the
/// host, with no copy; a short read ends the call, and a stream that
/// could wait is only waited on for the first buffer, and never past the
/// deadline.
pub(super) fn fd_read_iovs(
    cx: &mut WasiCtx,
    mem: &mut [u8],
    fd: u32,
    iovs: &[(u32, u32)],
    at: Option<u64>,
) -> Sys<usize> {
    let mut total = 0usize;
    for &(ptr, len) in iovs {
        if len == 0 {
            continue;
        }
        let buf = slice_mut(mem, ptr, len)?;
        let pos = match at {
            Some(off) => Some(off.checked_add(total as u64).ok_or(Errno::INVAL)?),
            None => None,
        };
        let got = fd_read_into(cx, fd, buf, pos, total > 0)?;
        match got {
            Some(n) => {
                total += n;
                if n < len as usize {
                    break;
                }
            }
            None => break,
        }
    }
    Ok(total)
}

/// One read into `buf`. With `more`, a stream that has nothing ready now
/// gives None instead of waiting (the call already has data).
pub(super) fn fd_read_into(
    cx: &mut WasiCtx,
    fd: u32,
    buf: &mut [u8],
    at: Option<u64>,
    more: bool,
) -> Sys<Option<usize>> {
    let (waits, nonblock) = match cx.fds.get(fd)? {
        Desc::Host {
            read,
            stream,
            nonblock,
            ..
        } => {
            if !*read {
                return Err(Errno::BADF.into());
            }
            // A host descriptor is a stream: no offsets.
            if at.is_some() {
                return Err(Errno::SPIPE.into());
            }
            (*stream, *nonblock)
        }
        _ => (false, false),
    };
    if waits {
        let Desc::Host { file, .. } = cx.fds.get(fd)? else {
            unreachable!("checked above")
        };
        #[cfg(unix)]
        if !wait_ready(cx.deadline, file, libc::POLLIN, more || nonblock)? {
            if more {
                return Ok(None);
            }
            return Err(Errno::AGAIN.into());
        }
    }
    Ok(Some(match cx.fds.get_mut(fd)? {
        Desc::Host { file, .. } => file.read(buf)?,
        Desc::File { file, read, .. } => {
            if !*read {
                return Err(Errno::BADF.into());
            }
            match at {
                Some(off) => read_at(file, buf, off)?,
                None => file.read(buf)?,
            }
        }
        Desc::Memory { input, .. } => match (input, at) {
            (Some(c), None) => c.read(buf)?,
            (Some(_), Some(_)) => return Err(Errno::SPIPE.into()),
            (None, _) => return Err(Errno::BADF.into()),
        },
        Desc::Dir { .. } => return Err(Errno::ISDIR.into()),
    }))
}

#[cfg(unix)]
fn read_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(f, buf, off)
}
#[cfg(unix)]
fn write_at(f: &File, buf: &[u8], off: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::write_at(f, buf, off)
}

/// The most bytes written to a stream that could wait after one poll: a
/// pipe with room for any takes up to PIPE_BUF without blocking.
const STREAM_CHUNK: usize = 4096;

/// Writes the guest's buffers `bufs` (slices of guest memory, never copied
/// as a whole) to `fd`, sequentially (`at` None) or at an offset. The
/// descriptor and its rights are checked, and the bytes counted against
/// the output limit, before anything is written.
pub(super) fn fd_write_bufs(
    cx: &mut WasiCtx,
    fd: u32,
    bufs: &[&[u8]],
    at: Option<u64>,
) -> Sys<usize> {
    let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
    let (counted, waits, nonblock) = match cx.fds.get(fd)? {
        Desc::Host {
            write,
            stream,
            nonblock,
            ..
        } => {
            if !*write {
                return Err(Errno::BADF.into());
            }
            // A host descriptor is a stream: no offsets, so a guest can
            // neither skip past the limit nor overwrite what the host
            // wrote before.
            if at.is_some() {
                return Err(Errno::SPIPE.into());
            }
            (true, *stream, *nonblock)
        }
        Desc::Memory { output, .. } => {
            if output.is_none() {
                return Err(Errno::BADF.into());
            }
            if at.is_some() {
                return Err(Errno::SPIPE.into());
            }
            (true, false, false)
        }
        Desc::File { write, .. } => {
            if !*write {
                return Err(Errno::BADF.into());
            }
            (false, false, false)
        }
        Desc::Dir { .. } => return Err(Errno::ISDIR.into()),
    };
    if counted {
        cx.count_output(total)?;
    }
    let deadline = cx.deadline;
    match cx.fds.get_mut(fd)? {
        // Non-blocking: what fits now, or EAGAIN.
        #[cfg(unix)]
        Desc::Host { file, .. } if waits && nonblock => {
            if !wait_ready(deadline, file, libc::POLLOUT, true)? {
                return Err(Errno::AGAIN.into());
            }
            Ok(file.write_vectored(&Gather::new(bufs).slices(STREAM_CHUNK))?)
        }
        Desc::Host { file, .. } if waits => {
            let mut left = Gather::new(bufs);
            while !left.is_empty() {
                #[cfg(unix)]
                wait_ready(deadline, file, libc::POLLOUT, false)?;
                let n = file.write_vectored(&left.slices(STREAM_CHUNK))?;
                if n == 0 {
                    return Err(Errno::IO.into());
                }
                left.advance(n);
            }
            Ok(total as usize)
        }
        Desc::Host { file, .. } => {
            let mut left = Gather::new(bufs);
            while !left.is_empty() {
                let n = file.write_vectored(&left.slices(usize::MAX))?;
                if n == 0 {
                    return Err(Errno::IO.into());
                }
                left.advance(n);
            }
            Ok(total as usize)
        }
        Desc::File { file, .. } => match at {
            Some(off) => {
                let mut done = 0usize;
                for b in bufs {
                    let pos = off.checked_add(done as u64).ok_or(Errno::FBIG)?;
                    let n = write_at(file, b, pos)?;
                    done += n;
                    if n < b.len() {
                        break;
                    }
                }
                Ok(done)
            }
            None => Ok(file.write_vectored(&Gather::new(bufs).slices(usize::MAX))?),
        },
        Desc::Memory { output, .. } => {
            if let Some(Sink::Buffer(o)) = output {
                let mut o = o.lock().unwrap_or_else(|p| p.into_inner());
                for b in bufs {
                    o.extend_from_slice(b);
                }
            }
            Ok(total as usize)
        }
        Desc::Dir { .. } => Err(Errno::ISDIR.into()),
    }
}

/// The part of a list of buffers not yet written.
struct Gather<'a> {
    bufs: &'a [&'a [u8]],
    /// Bytes of `bufs[0]` already written.
    first: usize,
}

impl<'a> Gather<'a> {
    fn new(bufs: &'a [&'a [u8]]) -> Gather<'a> {
        let mut g = Gather { bufs, first: 0 };
        g.advance(0);
        g
    }

    fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// What is left, as slices of at most `limit` bytes in all.
    fn slices(&self, limit: usize) -> Vec<io::IoSlice<'a>> {
        let mut out = Vec::new();
        let mut room = limit;
        for (i, b) in self.bufs.iter().enumerate() {
            let b = if i == 0 { &b[self.first..] } else { b };
            if room == 0 {
                break;
            }
            let take = b.len().min(room);
            out.push(io::IoSlice::new(&b[..take]));
            room -= take;
        }
        out
    }

    fn advance(&mut self, mut n: usize) {
        while let Some(b) = self.bufs.first() {
            let left = b.len() - self.first;
            if n < left {
                self.first += n;
                return;
            }
            n -= left;
            self.bufs = &self.bufs[1..];
            self.first = 0;
        }
    }
}

fn flag(on: bool, bit: u16) -> u16 {
    if on {
        bit
    } else {
        0
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
            nonblock,
            ..
        } => {
            let ft = file
                .metadata()
                .map(|m| filestat_of_std(&m).filetype)
                .unwrap_or(FILETYPE_UNKNOWN);
            // Streams: no seeking, no size to set.
            let rights = io_rights(*read, *write) & no_seek & !RIGHT_FD_FILESTAT_SET_SIZE;
            let flags = flag(*nonblock, FDFLAG_NONBLOCK);
            if *tty {
                // wasi-libc's isatty() wants a character device that cannot seek.
                return (FILETYPE_CHARACTER_DEVICE, flags, rights);
            }
            (ft, flags, rights)
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
            nonblock,
            ..
        } => (
            FILETYPE_REGULAR_FILE,
            flag(*append, FDFLAG_APPEND) | flag(*nonblock, FDFLAG_NONBLOCK),
            io_rights(*read, *write),
        ),
        Desc::Dir { .. } => (FILETYPE_DIRECTORY, 0, ALL_RIGHTS),
    }
}

pub(super) fn add_to_linker(linker: &mut Linker<Guest>) -> wasmtime::Result<()> {
    sys!(
        linker,
        "fd_advise",
        |cx, mem, fd: u32, _off: i64, _len: i64, _advice: i32| {
            cx.fds.get(fd)?;
            Ok(())
        }
    );
    sys!(
        linker,
        "fd_allocate",
        |cx, mem, fd: u32, off: i64, len: i64| {
            match cx.fds.get(fd)? {
                Desc::File {
                    file, write: true, ..
                } => {
                    let off = u64::try_from(off).map_err(|_| Errno::INVAL)?;
                    let len = u64::try_from(len).map_err(|_| Errno::INVAL)?;
                    let end = off.checked_add(len).ok_or(Errno::FBIG)?;
                    if file.metadata()?.len() < end {
                        file.set_len(end)?;
                    }
                    Ok(())
                }
                Desc::File { .. } => Err(Errno::BADF.into()),
                _ => Err(Errno::NOTSUP.into()),
            }
        }
    );
    sys!(linker, "fd_close", |cx, mem, fd: u32| {
        cx.fds.remove(fd)?;
        Ok(())
    });
    sys!(linker, "fd_datasync", |cx, mem, fd: u32| {
        match cx.fds.get(fd)? {
            Desc::File { file, .. } => Ok(file.sync_data()?),
            _ => Ok(()),
        }
    });
    sys!(linker, "fd_sync", |cx, mem, fd: u32| {
        match cx.fds.get(fd)? {
            Desc::File { file, .. } => Ok(file.sync_all()?),
            _ => Ok(()),
        }
    });
    sys!(linker, "fd_fdstat_get", |cx, mem, fd: u32, out: u32| {
        let (ft, flags, rights) = fdstat(cx.fds.get(fd)?);
        let mut b = [0u8; 24];
        b[0] = ft;
        b[2..4].copy_from_slice(&flags.to_le_bytes());
        b[8..16].copy_from_slice(&rights.to_le_bytes());
        b[16..24].copy_from_slice(&rights.to_le_bytes());
        put(mem, out, &b)?;
        Ok(())
    });
    sys!(
        linker,
        "fd_fdstat_set_flags",
        |cx, mem, fd: u32, flags: u32| {
            let flags = flags as u16;
            let want_nonblock = flags & FDFLAG_NONBLOCK != 0;
            match cx.fds.get_mut(fd)? {
                Desc::File {
                    append,
                    write,
                    nonblock,
                    ..
                } => {
                    let want = flags & FDFLAG_APPEND != 0;
                    if want && !*write {
                        return Err(Errno::BADF.into());
                    }
                    *append = want;
                    *nonblock = want_nonblock;
                }
                Desc::Host { nonblock, .. } => *nonblock = want_nonblock,
                _ => {}
            }
            Ok(())
        }
    );
    sys!(
        linker,
        "fd_fdstat_set_rights",
        |cx, mem, fd: u32, _base: i64, _inh: i64| {
            cx.fds.get(fd)?;
            Ok(())
        }
    );
    sys!(linker, "fd_filestat_get", |cx, mem, fd: u32, out: u32| {
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
    sys!(
        linker,
        "fd_filestat_set_size",
        |cx, mem, fd: u32, size: i64| {
            match cx.fds.get(fd)? {
                Desc::File {
                    file, write: true, ..
                } => Ok(file.set_len(u64::try_from(size).map_err(|_| Errno::INVAL)?)?),
                // A stream has no size to set (Linux answers EINVAL for a pipe).
                Desc::Host { .. } | Desc::Memory { .. } => Err(Errno::INVAL.into()),
                Desc::Dir { .. } => Err(Errno::ISDIR.into()),
                _ => Err(Errno::BADF.into()),
            }
        }
    );
    sys!(
        linker,
        "fd_filestat_set_times",
        |cx, mem, fd: u32, atim: i64, mtim: i64, flags: u32| {
            let flags = flags as u16;
            match cx.fds.get(fd)? {
                Desc::File {
                    file,
                    target,
                    write,
                    ..
                } => {
                    if let Target::Host { mount, .. } = target {
                        if !cx.ns.mounts[*mount].writable {
                            return Err(Errno::ROFS.into());
                        }
                        // A file opened for reading in a guarded mount may
                        // have been reached through a link into another
                        // mount: its times change only if it was opened
                        // for writing, which no such link allows.
                        if !*write && cx.ns.is_guarded(*mount) {
                            return Err(Errno::PERM.into());
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
                        let (dir, p) = cx.host(*mount, rel, true)?;
                        Ok(dir.set_times(p, a, m)?)
                    }
                    _ => Err(Errno::ROFS.into()),
                },
                _ => Err(Errno::BADF.into()),
            }
        }
    );
    sys!(
        linker,
        "fd_pread",
        |cx, mem, fd: u32, iovs: u32, n: u32, off: i64, nread: u32| {
            let off = u64::try_from(off).map_err(|_| Errno::INVAL)?;
            let iovs = iovecs(mem, iovs, n)?;
            let total = fd_read_iovs(cx, mem, fd, &iovs, Some(off))?;
            put_u32(mem, nread, total as u32)?;
            Ok(())
        }
    );
    sys!(
        linker,
        "fd_pwrite",
        |cx, mem, fd: u32, iovs: u32, n: u32, off: i64, nwritten: u32| {
            let off = u64::try_from(off).map_err(|_| Errno::INVAL)?;
            let iovs = iovecs(mem, iovs, n)?;
            let bufs = iovs
                .iter()
                .map(|&(p, l)| slice(mem, p, l))
                .collect::<WasiResult<Vec<&[u8]>>>()?;
            let put_n = fd_write_bufs(cx, fd, &bufs, Some(off))?;
            put_u32(mem, nwritten, put_n as u32)?;
            Ok(())
        }
    );
    sys!(linker, "fd_read", |cx,
                             mem,
                             fd: u32,
                             iovs: u32,
                             n: u32,
                             nread: u32| {
        let iovs = iovecs(mem, iovs, n)?;
        let total = fd_read_iovs(cx, mem, fd, &iovs, None)?;
        put_u32(mem, nread, total as u32)?;
        Ok(())
    });
    sys!(
        linker,
        "fd_write",
        |cx, mem, fd: u32, iovs: u32, n: u32, nwritten: u32| {
            // The buffers go to the host as they lie in guest memory, in one
            // vectored write where the descriptor allows: a line printed by
            // the guest is not split among other output, and the host never
            // holds a copy of what the guest asks to write.
            let iovs = iovecs(mem, iovs, n)?;
            let put_n = {
                let bufs = iovs
                    .iter()
                    .map(|&(p, l)| slice(mem, p, l))
                    .collect::<WasiResult<Vec<&[u8]>>>()?;
                fd_write_bufs(cx, fd, &bufs, None)?
            };
            put_u32(mem, nwritten, put_n as u32)?;
            Ok(())
        }
    );
    sys!(linker, "fd_renumber", |cx, mem, from: u32, to: u32| {
        if !cx.fds.contains(to) {
            return Err(Errno::BADF.into());
        }
        let d = cx.fds.remove(from)?;
        cx.fds.insert_at(to, d);
        Ok(())
    });
    sys!(linker, "fd_seek", |cx,
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
            Desc::Dir { .. } => return Err(Errno::BADF.into()),
            // stdio and forwarded descriptors are streams.
            _ => return Err(Errno::SPIPE.into()),
        };
        put_u64(mem, out, new)?;
        Ok(())
    });
    sys!(linker, "fd_tell", |cx, mem, fd: u32, out: u32| {
        let new = match cx.fds.get_mut(fd)? {
            Desc::File { file, .. } => file.stream_position()?,
            Desc::Dir { .. } => return Err(Errno::BADF.into()),
            _ => return Err(Errno::SPIPE.into()),
        };
        put_u64(mem, out, new)?;
        Ok(())
    });
    Ok(())
}
