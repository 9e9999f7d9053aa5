//! The interpreter a wheel carries, installed on first use.
//!
//! The wheel holds the python package's archive; the first run of a
//! process that finds no install made from it installs it (unpacked,
//! compiled to machine code, pre-initialised) into `HOME/python/HASH`,
//! HASH naming the archive's content. Two processes doing it at once are
//! serialised by a lock file, and the install is made in a temporary
//! directory renamed into place when complete, so that an interrupted one
//! is never taken for a finished one.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use pyo3::prelude::*;

use pynbox::install::{InstallOptions, Repo, Runner};

use crate::{detached, Error};

/// `prepare(archive, home, runner)`: the install made from `archive`
/// (a `python.VERSION.tar.zst`), made now if there is none; `runner` is
/// the `pynbox` executable for its `bin/`, if the wheel carries one.
#[pyfunction]
pub fn prepare(
    py: Python<'_>,
    archive: PathBuf,
    home: PathBuf,
    runner: Option<PathBuf>,
) -> PyResult<PathBuf> {
    detached(py, move || {
        prepare_install(&archive, &home, runner).map_err(Error::new_err)
    })
}

fn prepare_install(
    archive: &Path,
    home: &Path,
    runner: Option<PathBuf>,
) -> Result<PathBuf, String> {
    let key = archive_key(archive)?;
    let base = home.join("python");
    let done = base.join(&key);
    if done.join("packages").is_dir() {
        return Ok(done);
    }
    std::fs::create_dir_all(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    let lock_path = base.join(format!("{key}.lock"));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    // Another process may have made it while this one waited.
    if done.join("packages").is_dir() {
        return Ok(done);
    }
    // What an interrupted attempt left.
    let tmp = base.join(format!(".{key}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .map_err(|e| format!("cannot remove {}: {e}", tmp.display()))?;
    }
    if done.exists() {
        // Not an install (no packages/): not ours to trust.
        std::fs::remove_dir_all(&done)
            .map_err(|e| format!("cannot remove {}: {e}", done.display()))?;
    }
    eprintln!("pynbox: preparing the Python interpreter (once, about a minute)...");
    let repo = Repo::Dir(
        archive
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    );
    let name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar.zst"))
        .and_then(|n| n.split_once('.'))
        .map(|(name, version)| format!("{name}={version}"))
        .ok_or_else(|| format!("{} is not a package archive", archive.display()))?;
    let options = InstallOptions {
        runner: runner.map_or(Runner::Skip, Runner::File),
        quiet: true,
    };
    let mut warnings = Vec::new();
    pynbox::install::install_with(&tmp, &[name], &repo, &options, &mut |l| {
        if l.starts_with("warning") {
            warnings.push(l.to_string());
        }
    })
    .map_err(|e| {
        let _ = std::fs::remove_dir_all(&tmp);
        format!("cannot prepare the Python interpreter: {e}")
    })?;
    for w in warnings {
        eprintln!("pynbox: {w}");
    }
    std::fs::rename(&tmp, &done)
        .map_err(|e| format!("cannot move {} into place: {e}", tmp.display()))?;
    drop(lock);
    Ok(done)
}

/// The first 16 hex digits of the archive's blake3 hash.
fn archive_key(archive: &Path) -> Result<String, String> {
    let mut f =
        File::open(archive).map_err(|e| format!("cannot open {}: {e}", archive.display()))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("cannot read {}: {e}", archive.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex()[..16].to_string())
}
