//! Downloads that resume: a file cut short is kept and continued with a
//! Range request, hashed as it is written, bounded in size. Used for
//! pynbox's own package archives (src/install.rs) and for distributions
//! from Python package indexes (src/pypi/index.rs).

use std::io::{Read, Write};

use crate::install::Progress;
use crate::packages::{PackageError, Result};

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(PackageError(msg.into()))
}

/// A sha256 being computed, with the number of bytes it has seen.
pub(crate) struct Hashing {
    sha: sha2::Sha256,
    n: u64,
}

impl Hashing {
    pub(crate) fn new() -> Hashing {
        use sha2::Digest;
        Hashing {
            sha: sha2::Sha256::new(),
            n: 0,
        }
    }
}

/// Appends what `src` yields to `out`, hashing it, until the whole is
/// `size` (when the index gives it) or at most `limit` bytes; returns the
/// sha256 of everything written, earlier bytes included.
pub(crate) fn copy_hashed(
    src: &mut dyn Read,
    out: &mut std::fs::File,
    h: &mut Hashing,
    limit: u64,
    label: &str,
    size: Option<u64>,
) -> Result<String> {
    use sha2::Digest;
    let mut buf = vec![0u8; 1 << 16];
    // Small files (most wheels, all metadata) are not worth a progress line.
    let quiet = size.is_some_and(|s| s < 1 << 20);
    let mut progress = Progress::new(&format!("downloading {label}"), size.unwrap_or(0));
    let mut limited = src.take(limit.saturating_sub(h.n) + 1);
    loop {
        let k = match limited.read(&mut buf) {
            Ok(k) => k,
            Err(e) => {
                progress.finish();
                return err(format!("reading {label}: {e}"));
            }
        };
        if k == 0 {
            break;
        }
        if h.n + k as u64 > limit || size.is_some_and(|s| h.n + k as u64 > s) {
            progress.finish();
            return err(format!(
                "{label} is larger than the index says or than {} MiB: refused",
                limit >> 20
            ));
        }
        out.write_all(&buf[..k])
            .map_err(|e| PackageError(format!("writing {label}: {e}")))?;
        h.sha.update(&buf[..k]);
        h.n += k as u64;
        if !quiet {
            progress.update(h.n);
        }
    }
    progress.finish();
    if size.is_some_and(|s| s != h.n) {
        return err(format!("{label}: the download stopped at {} bytes", h.n));
    }
    Ok(hex::encode(h.sha.clone().finalize()))
}

/// Downloads `url` into `out`, which may hold the beginning of it from a
/// download cut short: that is hashed again and the rest asked for with a
/// Range request. Transient failures are retried, each from where the last
/// stopped. Returns the sha256 of the whole file.
pub(crate) fn resumable(
    agent: &ureq::Agent,
    url: &str,
    out: &mut std::fs::File,
    label: &str,
    limit: u64,
    size: Option<u64>,
) -> Result<String> {
    use std::io::{Seek, SeekFrom};
    let io = |e: std::io::Error| PackageError(format!("{label}: {e}"));
    let mut last = String::new();
    for attempt in 0..4 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(300 << attempt));
        }
        // What is there already, hashed again: it is only ever bytes this
        // code wrote, but the hash must cover the whole file.
        let mut h = Hashing::new();
        out.seek(SeekFrom::Start(0)).map_err(io)?;
        let have =
            std::io::copy(&mut (&mut *out).take(limit), &mut HashWriter(&mut h)).map_err(io)?;
        let mut req = agent.get(url);
        if have > 0 {
            req = req.header("Range", &format!("bytes={have}-"));
        }
        let mut resp = match req.call() {
            Ok(r) => r,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let resumed = resp.status() == 206
            && resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(&format!("bytes {have}-")));
        match resp.status().as_u16() {
            206 if resumed => {}
            200 | 206 => {
                // Not a continuation: start again from nothing.
                out.set_len(0).map_err(io)?;
                out.seek(SeekFrom::Start(0)).map_err(io)?;
                h = Hashing::new();
            }
            404 => return err(format!("cannot download {url}: not found (404)")),
            s => {
                last = format!("HTTP status {s}");
                continue;
            }
        }
        let mut reader = resp.body_mut().as_reader();
        match copy_hashed(&mut reader, out, &mut h, limit, label, size) {
            Ok(h) => return Ok(h),
            Err(e) if e.0.contains("refused") => return Err(e),
            Err(e) => last = e.0,
        }
    }
    err(format!(
        "cannot download {url}: {last} (run the install again to resume)"
    ))
}

/// Feeds what is written to a [`Hashing`].
pub(crate) struct HashWriter<'a>(&'a mut Hashing);

impl Write for HashWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        self.0.sha.update(b);
        self.0.n += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
