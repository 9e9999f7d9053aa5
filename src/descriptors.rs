//! Forwarded descriptors: `-h HOST_FD:GUEST_FD`, `-r GUEST_FD:FILE` and
//! `-w GUEST_FD:FILE`, with the meanings NaCl's `sel_ldr` gave them.

use std::fs::File;
use std::path::PathBuf;

use crate::mounts::SpecError;

/// Where a forwarded descriptor comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FdSource {
    /// The host process's open descriptor (`-h`). Unix only.
    Host(i32),
    /// A host file opened for reading (`-r`).
    Read(PathBuf),
    /// A host file created or truncated for writing (`-w`).
    Write(PathBuf),
}

/// One forwarded descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdSpec {
    pub guest_fd: u32,
    pub source: FdSource,
}

fn fd_number(s: &str, what: &str, spec: &str, usage: &str) -> Result<u32, SpecError> {
    s.parse::<u32>().ok().filter(|n| *n < 1024).ok_or_else(|| {
        SpecError(format!(
            "'{spec}': {what} '{s}' is not a descriptor number (0 to 1023); {usage}"
        ))
    })
}

impl FdSpec {
    /// Parses the argument of `-h`: `HOST_FD:GUEST_FD`.
    pub fn parse_host(spec: &str) -> Result<FdSpec, SpecError> {
        let usage = "expected -h HOST_FD:GUEST_FD, e.g. -h 3:3";
        let (h, g) = spec
            .split_once(':')
            .ok_or_else(|| SpecError(format!("'{spec}': {usage}")))?;
        let host = fd_number(h, "host descriptor", spec, usage)?;
        let guest_fd = fd_number(g, "guest descriptor", spec, usage)?;
        Ok(FdSpec {
            guest_fd,
            source: FdSource::Host(host as i32),
        })
    }

    /// Parses the argument of `-r` (`write` false) or `-w` (`write` true):
    /// `GUEST_FD:FILE`.
    pub fn parse_file(spec: &str, write: bool) -> Result<FdSpec, SpecError> {
        let flag = if write { "-w" } else { "-r" };
        let usage = format!("expected {flag} GUEST_FD:FILE, e.g. {flag} 3:data.txt");
        let (g, path) = spec
            .split_once(':')
            .ok_or_else(|| SpecError(format!("'{spec}': {usage}")))?;
        let guest_fd = fd_number(g, "guest descriptor", spec, &usage)?;
        if path.is_empty() {
            return Err(SpecError(format!(
                "'{spec}': the file name is empty; {usage}"
            )));
        }
        let path = PathBuf::from(path);
        Ok(FdSpec {
            guest_fd,
            source: if write {
                FdSource::Write(path)
            } else {
                FdSource::Read(path)
            },
        })
    }

    /// Opens the host side. Returns the file and whether the guest may read
    /// and write it.
    pub fn open(&self) -> Result<(File, bool, bool), SpecError> {
        match &self.source {
            FdSource::Read(p) => File::open(p).map(|f| (f, true, false)).map_err(|e| {
                SpecError(format!(
                    "-r {}:{}: cannot open for reading: {e}",
                    self.guest_fd,
                    p.display()
                ))
            }),
            FdSource::Write(p) => File::create(p).map(|f| (f, false, true)).map_err(|e| {
                SpecError(format!(
                    "-w {}:{}: cannot open for writing: {e}",
                    self.guest_fd,
                    p.display()
                ))
            }),
            FdSource::Host(_) => {
                let (_, file, read, write) = take_host_fds(std::slice::from_ref(self))?
                    .pop()
                    .expect("one host descriptor was named");
                Ok((file, read, write))
            }
        }
    }
}

/// A forwarded host descriptor: the guest's number, pynbox's duplicate, and
/// whether the guest may read and write it.
pub type HostFd = (u32, File, bool, bool);

/// Takes the host descriptors that `-h` specs name: first checks that
/// every one is open (so that a descriptor the caller forgot to open is an
/// error, whatever pynbox opens later), then duplicates each to a number
/// above every named one (so that no duplicate can take the place of a
/// descriptor a later spec names). Call it before opening anything else.
pub fn take_host_fds(specs: &[FdSpec]) -> Result<Vec<HostFd>, SpecError> {
    let named: Vec<(i32, u32)> = specs
        .iter()
        .filter_map(|s| match s.source {
            FdSource::Host(n) => Some((n, s.guest_fd)),
            _ => None,
        })
        .collect();
    let mut modes = Vec::new();
    for &(n, guest) in &named {
        modes.push(host_fd_mode(n, guest)?);
    }
    let above = named.iter().map(|(n, _)| n + 1).max().unwrap_or(0);
    named
        .iter()
        .zip(modes)
        .map(|(&(n, guest), (read, write))| Ok((guest, dup_host_fd(n, guest, above)?, read, write)))
        .collect()
}

/// Whether host descriptor `n` is open, and if so whether it may be read
/// and written (its access mode). Descriptor inheritance is a Unix notion:
/// this is one of the few places that is Unix-only.
#[cfg(unix)]
fn host_fd_mode(n: i32, guest: u32) -> Result<(bool, bool), SpecError> {
    // SAFETY: fcntl on any integer is safe; it fails with EBADF when the
    // descriptor is not open.
    let flags = unsafe { libc::fcntl(n, libc::F_GETFL) };
    if flags < 0 {
        return Err(SpecError(format!(
            "-h {n}:{guest}: host descriptor {n} is not open in pynbox's process: \
             open it in the parent (e.g. `3<file` or `3<&0` in the shell)"
        )));
    }
    let mode = flags & libc::O_ACCMODE;
    Ok((mode != libc::O_WRONLY, mode != libc::O_RDONLY))
}

/// Duplicates the host's descriptor `n` to a number at least `above`, so
/// that the guest's copy can be closed independently.
#[cfg(unix)]
fn dup_host_fd(n: i32, guest: u32, above: i32) -> Result<File, SpecError> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we own.
    let dup = unsafe { libc::fcntl(n, libc::F_DUPFD_CLOEXEC, above) };
    if dup < 0 {
        return Err(SpecError(format!(
            "-h {n}:{guest}: cannot duplicate host descriptor {n}: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `dup` is a fresh descriptor owned by nobody else.
    Ok(unsafe { File::from_raw_fd(dup) })
}

#[cfg(not(unix))]
fn host_fd_mode(n: i32, guest: u32) -> Result<(bool, bool), SpecError> {
    Err(SpecError(format!(
        "-h {n}:{guest}: forwarding host descriptors is supported on Unix only; \
         use -r or -w with a file instead"
    )))
}

#[cfg(not(unix))]
fn dup_host_fd(_n: i32, _guest: u32, _above: i32) -> Result<File, SpecError> {
    unreachable!("host_fd_mode refuses first")
}

/// Parses a size such as `256M`, `1G`, `4096`, `512KiB` (binary units), or
/// `none` for no limit.
pub fn parse_size(s: &str) -> Result<Option<u64>, SpecError> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let lower = t.to_ascii_lowercase();
    let body = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (digits, mult) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 1u64 << 10),
        Some('m') => (&body[..body.len() - 1], 1 << 20),
        Some('g') => (&body[..body.len() - 1], 1 << 30),
        Some('t') => (&body[..body.len() - 1], 1 << 40),
        _ => (body, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .map(Some)
        .ok_or_else(|| {
            SpecError(format!(
                "'{s}' is not a size: use a number with an optional K, M or G suffix (e.g. 256M), or none"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_descriptor_specs() {
        assert_eq!(
            FdSpec::parse_host("3:4").unwrap(),
            FdSpec {
                guest_fd: 4,
                source: FdSource::Host(3)
            }
        );
        assert_eq!(
            FdSpec::parse_file("5:/tmp/a:b", true).unwrap().source,
            FdSource::Write(PathBuf::from("/tmp/a:b"))
        );
        for bad in ["3", "x:3", "3:-1", "3:99999", ":"] {
            assert!(FdSpec::parse_host(bad).is_err(), "{bad}");
        }
        assert!(FdSpec::parse_file("3:", false).is_err());
        assert!(FdSpec::parse_file("a:/x", false).is_err());
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("256M").unwrap(), Some(256 << 20));
        assert_eq!(parse_size("1GiB").unwrap(), Some(1 << 30));
        assert_eq!(parse_size("4096").unwrap(), Some(4096));
        assert_eq!(parse_size("none").unwrap(), None);
        for bad in ["", "M", "1.5G", "-1", "12X", "99999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
