//! Source distributions built into wheels inside the sandbox (PEP 517).
//!
//! An sdist is hostile input twice over: as an archive, and as code (its
//! backend, its `setup.py`). The archive is unpacked on the host through
//! the same checks as wheels (bounded sizes and counts, relative paths
//! only, no device files, no links leaving the tree; links are not made
//! at all) into a scratch directory. Its `[build-system]` requirements are
//! resolved and installed from *wheels* only into a throwaway build
//! environment, never into DEST. Then the backend runs in the sandbox's own
//! CPython with DEST's root read-only at `/`, the build environment
//! read-only at `/build/env`, and only scratch directories writable: the
//! unpacked copy of the source at `/build/src`, the output at `/build/out`
//! and `/build/tmp`. There is no network (WASI has no sockets), no
//! subprocess, and the usual limits (memory, output, `--build-timeout`),
//! in a child `pynbox run` so that the second wall (Landlock, seccomp)
//! stands around it too.
//!
//! What comes out is not trusted either: it must be a pure-Python wheel
//! (`*-none-any`, or tagged for the sandbox itself with no native file in
//! it) of the distribution and version asked for, and it is
//! then checked whole against its RECORD like any downloaded wheel. Built
//! wheels are cached under the sdist's sha256, so a second install (or an
//! offline `sync`) does not build again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use cap_std::fs::Dir;
use pep508_rs::pep440_rs::Version;
use pep508_rs::Requirement;

use super::index::{cache_dir, FileInfo, Sources, MAX_WHEEL};
use super::resolve::{Policy, Resolver};
use super::target::{normalize, Target, WheelName};
use super::wheel::{self, parse_metadata, Metadata, SITE_PACKAGES};
use crate::install::{random_hex, Dest};
use crate::packages::{check_path, PackageError, Result};
use crate::runtime::Status;

/// The default wall-clock limit of one build (`--build-timeout`).
pub const DEFAULT_TIMEOUT: u64 = 600;
/// Memory of the building interpreter.
const MEMORY: u64 = 1 << 30;
/// What the backend may print (the tail is shown when it fails).
const MAX_BUILD_OUTPUT: u64 = 16 << 20;
/// Lines of the backend's output shown with a failure.
const TAIL_LINES: usize = 25;
/// The most entries an sdist may hold, and the most it may unpack to.
const MAX_ENTRIES: usize = 100_000;
const MAX_UNPACKED: u64 = 2 << 30;
/// Extension headers (GNU long names, PAX records) read into memory.
const MAX_EXTENSION: u64 = 64 << 10;
/// The largest PKG-INFO, pyproject.toml or hook answer read.
const MAX_TEXT: u64 = 1 << 20;

const DRIVER: &str = include_str!("build_driver.py");

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(PackageError(msg.into()))
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> PackageError {
    move |e| PackageError(format!("{what}: {e}"))
}

/// Whether a file name is an sdist pynbox can build: `.tar.gz` (PEP 625)
/// or a legacy `.zip`.
pub fn buildable(filename: &str) -> bool {
    filename.ends_with(".tar.gz") || filename.ends_with(".zip")
}

/// The `[build-system]` table of `pyproject.toml`, with PEP 517/518's
/// defaults for a project that has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildSystem {
    pub requires: Vec<String>,
    pub backend: String,
    pub backend_path: Vec<String>,
}

impl BuildSystem {
    pub fn parse(pyproject: Option<&str>, label: &str) -> Result<BuildSystem> {
        let legacy = BuildSystem {
            requires: vec!["setuptools>=40.8.0".into()],
            backend: "setuptools.build_meta:__legacy__".into(),
            backend_path: Vec::new(),
        };
        let Some(text) = pyproject else {
            return Ok(legacy);
        };
        let doc: toml::Table = toml::from_str(text).map_err(|e| {
            PackageError(format!(
                "{label}: pyproject.toml is not valid TOML: {}",
                e.message()
            ))
        })?;
        let Some(bs) = doc.get("build-system") else {
            return Ok(legacy);
        };
        let strings = |key: &str| -> Result<Option<Vec<String>>> {
            match bs.get(key) {
                None => Ok(None),
                Some(toml::Value::Array(a)) => a
                    .iter()
                    .map(|v| {
                        v.as_str().map(str::to_string).ok_or_else(|| {
                            PackageError(format!(
                                "{label}: build-system.{key} in pyproject.toml is not a list of strings"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(Some),
                Some(_) => err(format!(
                    "{label}: build-system.{key} in pyproject.toml is not a list of strings"
                )),
            }
        };
        let requires = strings("requires")?;
        let backend_path = strings("backend-path")?.unwrap_or_default();
        let backend = match bs.get("build-backend") {
            None => None,
            Some(toml::Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return err(format!(
                    "{label}: build-system.build-backend in pyproject.toml is not a string"
                ))
            }
        };
        // PEP 517: backend-path entries are relative and inside the tree.
        for p in &backend_path {
            let p = p.trim_start_matches("./").trim_end_matches('/');
            if !p.is_empty() && p != "." && check_path(p).is_err() {
                return err(format!(
                    "{label}: backend-path entry '{p}' leaves the source tree: refused"
                ));
            }
        }
        let backend = match backend {
            Some(b) => b,
            // PEP 518 requires without a backend: setuptools' legacy path.
            None => {
                return Ok(BuildSystem {
                    requires: requires.unwrap_or(legacy.requires),
                    ..legacy
                })
            }
        };
        let ident = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|p| {
                    p.chars()
                        .next()
                        .is_some_and(|c| c.is_alphabetic() || c == '_')
                        && p.chars().all(|c| c.is_alphanumeric() || c == '_')
                })
        };
        let (module, attr) = backend.split_once(':').unwrap_or((&backend, ""));
        if !ident(module.trim()) || !(attr.trim().is_empty() || ident(attr.trim())) {
            return err(format!(
                "{label}: build-backend '{backend}' is not a module path: refused"
            ));
        }
        Ok(BuildSystem {
            requires: requires.unwrap_or_default(),
            backend,
            backend_path,
        })
    }
}

/// What one entry of an sdist is.
enum Entry<'a> {
    File(&'a mut dyn Read, u64),
    Dir,
}

/// Walks an sdist's entries, each path checked, sizes and counts bounded;
/// links are checked not to leave the tree and are then skipped, devices
/// and FIFOs refused.
fn walk(
    archive: &Path,
    label: &str,
    visit: &mut dyn FnMut(&str, Entry) -> Result<()>,
) -> Result<()> {
    if label.ends_with(".zip") {
        return walk_zip(archive, label, visit);
    }
    let file = std::fs::File::open(archive).map_err(io(format!("opening {label}")))?;
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
    // The budget covers headers too: a little more than the files' sum.
    let mut tar = tar::Archive::new(gz.take(MAX_UNPACKED + (MAX_ENTRIES as u64) * 1024));
    let entries = tar
        .entries()
        .map_err(io(format!("{label} is not a tar.gz archive")))?;
    // Extension headers are read here, bounded, rather than by the tar
    // reader, which would hold any size in memory.
    let mut entries = entries.raw(true);
    let damaged = |e: std::io::Error| PackageError(format!("{label} is damaged: {e}"));
    let (mut count, mut total) = (0usize, 0u64);
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    for entry in &mut entries {
        let mut entry = entry.map_err(damaged)?;
        count += 1;
        if count > MAX_ENTRIES {
            return err(format!(
                "{label} holds more than {MAX_ENTRIES} entries: refused"
            ));
        }
        let kind = entry.header().entry_type();
        let is_ext = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        if is_ext {
            if entry.size() > MAX_EXTENSION {
                return err(format!(
                    "{label} has an extension header of {} bytes: refused",
                    entry.size()
                ));
            }
            let mut data = Vec::new();
            (&mut entry)
                .take(MAX_EXTENSION)
                .read_to_end(&mut data)
                .map_err(damaged)?;
            if kind.is_gnu_longname() || kind.is_gnu_longlink() {
                while data.last() == Some(&0) {
                    data.pop();
                }
                if kind.is_gnu_longname() {
                    long_name = Some(data);
                } else {
                    long_link = Some(data);
                }
            } else if kind.is_pax_local_extensions() {
                for (k, v) in pax_records(&data) {
                    match k.as_slice() {
                        b"path" => long_name = Some(v),
                        b"linkpath" => long_link = Some(v),
                        _ => {}
                    }
                }
            }
            continue;
        }
        let raw = long_name
            .take()
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        let link = long_link
            .take()
            .or_else(|| entry.link_name_bytes().map(|l| l.into_owned()));
        let Ok(path) = String::from_utf8(raw) else {
            return err(format!("{label}: a file name is not UTF-8: refused"));
        };
        let mut path = path.as_str();
        while let Some(p) = path.strip_prefix("./") {
            path = p;
        }
        let path = path.trim_end_matches('/');
        if path.is_empty() || path == "." {
            continue;
        }
        check_path(path).map_err(|_| {
            PackageError(format!(
                "{label}: unsafe path '{path}' in the source distribution: refused, nothing was built"
            ))
        })?;
        use tar::EntryType as T;
        match kind {
            T::Regular | T::Continuous => {
                let size = entry.size();
                total += size;
                if total > MAX_UNPACKED {
                    return err(format!(
                        "{label} unpacks to more than {} GiB: refused",
                        MAX_UNPACKED >> 30
                    ));
                }
                visit(path, Entry::File(&mut entry, size))?;
            }
            T::Directory => visit(path, Entry::Dir)?,
            T::Symlink | T::Link => {
                let target = link
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default();
                // A hard link's target is relative to the archive's root,
                // a symbolic link's to its own directory.
                let base = if kind == T::Link {
                    ""
                } else {
                    path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
                };
                if !stays_inside(base, &target) {
                    return err(format!(
                        "{label}: '{path}' is a link to '{target}', outside the source tree: refused, nothing was built"
                    ));
                }
            }
            other => {
                return err(format!(
                    "{label}: '{path}' is a {other:?} entry (devices and pipes have no place in a source distribution): refused"
                ))
            }
        }
    }
    Ok(())
}

/// The `key=value` records of a PAX extension header (`LEN key=value\n`).
fn pax_records(data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let Some(sp) = rest.iter().position(|&b| b == b' ') else {
            break;
        };
        let Some(len) = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
        else {
            break;
        };
        if len <= sp + 1 || len > rest.len() {
            break;
        }
        let rec = &rest[sp + 1..len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(eq) = rec.iter().position(|&b| b == b'=') {
            out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        }
        rest = &rest[len..];
    }
    out
}

/// Whether `target`, taken relative to directory `base` of the tree,
/// stays inside the tree.
fn stays_inside(base: &str, target: &str) -> bool {
    if target.starts_with('/') || target.contains('\\') || target.contains('\0') {
        return false;
    }
    let mut depth: i64 = base.split('/').filter(|c| !c.is_empty()).count() as i64;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

fn walk_zip(
    archive: &Path,
    label: &str,
    visit: &mut dyn FnMut(&str, Entry) -> Result<()>,
) -> Result<()> {
    let mut z = wheel::open_zip(archive, label)?;
    let mut total = 0u64;
    for i in 0..z.len() {
        let (name, is_dir) = wheel::entry_name(&mut z, i, label)?;
        if is_dir {
            visit(&name, Entry::Dir)?;
            continue;
        }
        let mut e = z
            .by_index(i)
            .map_err(|e| PackageError(format!("{label}: bad zip entry: {e}")))?;
        let size = e.size();
        total += size;
        if total > MAX_UNPACKED {
            return err(format!(
                "{label} unpacks to more than {} GiB: refused",
                MAX_UNPACKED >> 30
            ));
        }
        visit(&name, Entry::File(&mut e, size))?;
    }
    Ok(())
}

/// Unpacks an sdist below `to` (through a capability handle, so nothing
/// lands outside it) and returns its single top-level directory.
fn unpack(archive: &Path, label: &str, to: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(to).map_err(io(format!("creating {}", to.display())))?;
    let dir = Dir::open_ambient_dir(to, cap_std::ambient_authority())
        .map_err(io(format!("opening {}", to.display())))?;
    let mut tops = std::collections::BTreeSet::new();
    walk(archive, label, &mut |path, entry| {
        let top = path.split('/').next().unwrap_or(path);
        tops.insert(top.to_string());
        let write = |e: std::io::Error| PackageError(format!("{label}: unpacking {path}: {e}"));
        match entry {
            Entry::Dir => dir.create_dir_all(path).map_err(write),
            Entry::File(r, size) => {
                if let Some((parent, _)) = path.rsplit_once('/') {
                    dir.create_dir_all(parent).map_err(write)?;
                }
                let mut f = dir.create(path).map_err(write)?;
                let n = std::io::copy(&mut r.take(size), &mut f).map_err(write)?;
                if n != size {
                    return err(format!("{label}: {path} is shorter than it says: refused"));
                }
                Ok(())
            }
        }
    })?;
    let mut tops = tops.into_iter();
    match (tops.next(), tops.next()) {
        (Some(top), None) if to.join(&top).is_dir() => Ok(to.join(top)),
        _ => err(format!(
            "{label}: a source distribution holds one top-level directory (NAME-VERSION): refused"
        )),
    }
}

/// The headers of core metadata (lowercased names), for the fields that
/// `wheel::parse_metadata` does not keep.
fn headers(data: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(data);
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if !line.starts_with([' ', '\t']) {
                out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
    }
    out
}

/// An sdist's `PKG-INFO`, when it can be trusted for resolution without
/// a build: Metadata-Version 2.2 or later, and neither `Requires-Dist` nor
/// `Requires-Python` marked `Dynamic` (PEP 643).
fn static_metadata(archive: &Path, label: &str) -> Result<Option<Metadata>> {
    let mut found: Option<Vec<u8>> = None;
    walk(archive, label, &mut |path, entry| {
        if let Entry::File(r, size) = entry {
            let is_pkg_info = path.split_once('/').is_some_and(|(_, p)| p == "PKG-INFO");
            if is_pkg_info && found.is_none() && size <= MAX_TEXT {
                let mut data = Vec::new();
                r.take(MAX_TEXT).read_to_end(&mut data).map_err(io(label))?;
                found = Some(data);
            }
        }
        Ok(())
    })?;
    let Some(data) = found else { return Ok(None) };
    let h = headers(&data);
    let mv = h
        .iter()
        .find(|(k, _)| k == "metadata-version")
        .and_then(|(_, v)| v.parse::<Version>().ok());
    let reliable = mv.is_some_and(|v| v >= Version::new([2, 2]))
        && !h.iter().any(|(k, v)| {
            k == "dynamic"
                && ["requires-dist", "requires-python"].contains(&v.to_ascii_lowercase().as_str())
        });
    if !reliable {
        return Ok(None);
    }
    parse_metadata(&data)
        .map(Some)
        .map_err(|e| PackageError(format!("{label}: PKG-INFO: {e}")))
}

/// Whether a wheel built in the sandbox can be installed there: a pure
/// one, or one tagged for the sandbox itself (`cp313-cp313-wasi_0_0_0_wasm32`).
/// The second is what setuptools makes for a project that declares C
/// extensions with a pure fallback (PyYAML): the compiler failed, the
/// fallback was taken, yet the wheel is tagged as a platform wheel. Its
/// content is checked for native code separately ([`native_files`]).
fn fits_sandbox(w: &WheelName) -> bool {
    if w.usable() {
        return true;
    }
    let cp = format!("cp3{}", super::target::PYTHON_MINOR);
    let py_ok = w.python.split('.').any(|t| t == cp || t == "py3");
    let abi_ok = w
        .abi
        .split('.')
        .any(|t| t == cp || t == "abi3" || t == "none");
    let plat_ok = w
        .platform
        .split('.')
        .any(|t| t == "any" || (t.starts_with("wasi") && t.ends_with("wasm32")));
    py_ok && abi_ok && plat_ok
}

/// The files of a wheel that are native code (extension modules, shared
/// or static libraries, WebAssembly modules). A build inside the sandbox
/// has no compiler, so such files are the host's or a failed build's,
/// never side modules made for this interpreter (those come from recipes
/// with the wasm toolchain: docs/PACKAGES.md, "Native modules").
fn native_files(path: &Path, label: &str) -> Result<Vec<String>> {
    let mut z = wheel::open_zip(path, label)?;
    let mut out = Vec::new();
    for i in 0..z.len() {
        let (name, is_dir) = wheel::entry_name(&mut z, i, label)?;
        let lower = name.to_ascii_lowercase();
        let native = [".so", ".pyd", ".dylib", ".dll", ".a", ".wasm"]
            .iter()
            .any(|ext| lower.ends_with(ext))
            || lower.contains(".so.");
        if native && !is_dir {
            out.push(name);
        }
    }
    Ok(out)
}

/// Reads a small regular file that a build may have written (not a link:
/// the guest cannot make one, but the file is treated as hostile anyway).
fn read_small(path: &Path) -> Option<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_file() || meta.len() > MAX_TEXT {
        return None;
    }
    std::fs::read(path).ok()
}

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds sdists for one `pynbox pip` command.
pub struct Builder<'a> {
    dest: &'a Dest,
    sources: &'a Sources,
    target: &'a Target,
    offline: bool,
    timeout: Duration,
    /// Built wheels of this command, by sdist sha256.
    built: RefCell<HashMap<String, (PathBuf, String)>>,
}

impl<'a> Builder<'a> {
    pub fn new(
        dest: &'a Dest,
        sources: &'a Sources,
        target: &'a Target,
        offline: bool,
        timeout_secs: Option<u64>,
    ) -> Builder<'a> {
        Builder {
            dest,
            sources,
            target,
            offline,
            timeout: Duration::from_secs(timeout_secs.unwrap_or(DEFAULT_TIMEOUT)),
            built: RefCell::default(),
        }
    }

    /// Core metadata of an sdist's release, for resolution: its PKG-INFO
    /// when static (PEP 643), else that of the wheel built from it.
    pub fn metadata(&self, sdist: &FileInfo, name: &str, version: &Version) -> Result<Metadata> {
        let path = self.sources.fetch(sdist, self.offline)?;
        if self.cached(sdist).is_none() {
            if let Some(m) = static_metadata(&path, &sdist.filename)? {
                return Ok(m);
            }
        }
        let (wheel, label) = self.wheel(sdist, name, version)?;
        wheel::wheel_metadata(&wheel, name, &label)
    }

    fn cache_entry(sdist: &FileInfo) -> Option<PathBuf> {
        let sha = sdist.sha256.as_deref()?;
        (sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| cache_dir().join("built").join(sha))
    }

    /// A wheel built earlier from this very sdist (same sha256).
    fn cached(&self, sdist: &FileInfo) -> Option<(PathBuf, String)> {
        let sha = sdist.sha256.clone()?;
        if let Some(b) = self.built.borrow().get(&sha) {
            return Some(b.clone());
        }
        let dir = Self::cache_entry(sdist)?;
        for e in std::fs::read_dir(&dir).ok()?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_file = e.file_type().is_ok_and(|t| t.is_file());
            if is_file && WheelName::parse(&name).is_some_and(|w| fits_sandbox(&w)) {
                let found = (e.path(), name);
                self.built.borrow_mut().insert(sha, found.clone());
                return Some(found);
            }
        }
        None
    }

    /// The wheel built from `sdist` (from the cache when it was built
    /// before): its path and file name.
    pub fn wheel(
        &self,
        sdist: &FileInfo,
        name: &str,
        version: &Version,
    ) -> Result<(PathBuf, String)> {
        if let Some(found) = self.cached(sdist) {
            return Ok(found);
        }
        let Some(entry) = Self::cache_entry(sdist) else {
            return err(format!(
                "{}: the index gives no sha256: refused",
                sdist.filename
            ));
        };
        let archive = self.sources.fetch(sdist, self.offline)?;
        let started = Instant::now();
        eprintln!(
            "building {name} {version} from {} inside the sandbox",
            sdist.filename
        );
        let scratch = Scratch(std::env::temp_dir().join(format!("pynbox-build-{}", random_hex())));
        let (wheel_path, env) = self.build(&archive, &sdist.filename, name, version, &scratch.0)?;
        let file = wheel_path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Into the cache: a directory made beside it, then renamed.
        let built = cache_dir().join("built");
        let tmp = built.join(format!(".{}.tmp", random_hex()));
        std::fs::create_dir_all(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        let moved = std::fs::copy(&wheel_path, tmp.join(&file))
            .and_then(|_| std::fs::write(tmp.join("build-env.txt"), env))
            .and_then(|_| std::fs::rename(&tmp, &entry));
        if let Err(e) = moved {
            let _ = std::fs::remove_dir_all(&tmp);
            // Another pynbox may have cached the same build meanwhile.
            if self.cached(sdist).is_none() {
                return err(format!(
                    "caching the wheel built from {}: {e}",
                    sdist.filename
                ));
            }
        }
        eprintln!("built {file} in {:.1} s", started.elapsed().as_secs_f64());
        self.cached(sdist).ok_or_else(|| {
            PackageError(format!(
                "the wheel built from {} is not in the cache",
                sdist.filename
            ))
        })
    }

    /// Installs build requirements (wheels only) into `env`, returning one
    /// line per wheel (name and sha256) for the cache's record.
    fn install_env(&self, requires: &[String], env: &Path, label: &str) -> Result<String> {
        let mut reqs = Vec::new();
        for r in requires {
            reqs.push(Requirement::from_str(r).map_err(|e| {
                PackageError(format!(
                    "{label}: the build requirement '{r}' is not valid PEP 508: {}",
                    e.to_string().lines().next().unwrap_or_default()
                ))
            })?);
        }
        std::fs::create_dir_all(env.join(SITE_PACKAGES))
            .map_err(io(format!("creating {}", env.display())))?;
        if reqs.is_empty() {
            return Ok(String::new());
        }
        let policy = Policy {
            offline: self.offline,
            ..Policy::default()
        };
        // No builder: build requirements come from wheels, never from
        // sdists that would need building themselves.
        let chosen = Resolver::new(self.sources, self.target, &policy, reqs, None)
            .resolve()
            .map_err(|e| PackageError(format!("{label}: build requirements: {e}")))?;
        let dir = Dir::open_ambient_dir(env, cap_std::ambient_authority())
            .map_err(io(format!("opening {}", env.display())))?;
        let mut record = String::new();
        for c in chosen {
            let path = self.sources.fetch(&c.wheel, self.offline)?;
            let sub = format!("stage-{}", c.name);
            dir.create_dir(&sub)
                .map_err(io("creating the build environment"))?;
            let stage = dir
                .open_dir(&sub)
                .map_err(io("opening the build environment"))?;
            let staged =
                wheel::stage(&path, &c.name, &c.version, &c.wheel.filename, &stage, false)?;
            // Merged into one site-packages: a later wheel's file replaces
            // an earlier one's, as installing them one by one would.
            for (_, rel) in &staged.files {
                if let Some(p) = rel.strip_prefix(&format!("{SITE_PACKAGES}/")) {
                    let to = format!("{SITE_PACKAGES}/{p}");
                    if let Some((parent, _)) = to.rsplit_once('/') {
                        dir.create_dir_all(parent)
                            .map_err(io("building the environment"))?;
                    }
                    let _ = stage.rename(rel, &dir, &to);
                }
            }
            record.push_str(&format!(
                "{} {}\n",
                c.wheel.filename,
                c.wheel.sha256.as_deref().unwrap_or("")
            ));
        }
        Ok(record)
    }

    /// Runs one PEP 517 hook in the sandbox; its answer (JSON), or how the
    /// run ended and what it printed.
    ///
    /// The hook runs in a child `pynbox run` (this very executable), not
    /// in this process: the backend is arbitrary code, so it gets the
    /// second wall that `pynbox run` raises (Landlock and seccomp around
    /// the whole process, `docs/SECURITY.md`) besides Wasmtime and the
    /// mounts, and its limits are those of the CLI, watchdog included.
    fn hook(
        &self,
        hook: &str,
        scratch: &Path,
        src: &str,
        bs: &BuildSystem,
        deadline: Instant,
    ) -> std::result::Result<Option<Vec<u8>>, (Status, String)> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err((Status::TimeLimit, String::new()));
        }
        let fail = |e: String| (Status::Crashed(e.clone()), e);
        let out = scratch.join("out");
        let _ = std::fs::remove_file(out.join(".pynbox-hook.json"));
        let exe = std::env::current_exe()
            .map_err(|e| fail(format!("finding the pynbox executable: {e}")))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("run");
        let mounts = [
            (self.dest.path().join("root"), "/", "ro"),
            (scratch.join("env").join(SITE_PACKAGES), "/build/env", "ro"),
            (scratch.join("src"), "/build/src", "rw"),
            (out, "/build/out", "rw"),
            (scratch.join("tmp"), "/build/tmp", "rw"),
        ];
        for (host, guest, mode) in mounts {
            std::fs::create_dir_all(&host)
                .map_err(|e| fail(format!("creating {}: {e}", host.display())))?;
            // HOST:GUEST:MODE is split at its last two colons, so a host
            // path with colons is fine.
            let mut spec = host.into_os_string();
            spec.push(format!(":{guest}:{mode}"));
            cmd.arg("-m").arg(spec);
        }
        cmd.arg("--cache-dir")
            .arg(self.dest.path().join("cache"))
            .args(["--memory", &format!("{}M", MEMORY >> 20)])
            .args(["--timeout", &format!("{:.3}", left.as_secs_f64())])
            .args(["--max-output", &format!("{}M", MAX_BUILD_OUTPUT >> 20)])
            .args(["-E", "TMPDIR=/build/tmp", "-E", "HOME=/build/tmp"])
            .args(["-E", "PYTHONDONTWRITEBYTECODE=1"])
            .args(["--", "python", "-c", DRIVER, hook])
            .arg(format!("/build/src/{src}"))
            .arg(&bs.backend)
            .arg(serde_json::to_string(&bs.backend_path).unwrap_or_default())
            .stdin(std::process::Stdio::null());
        let r = cmd
            .output()
            .map_err(|e| fail(format!("starting pynbox run: {e}")))?;
        let mut text = String::from_utf8_lossy(&r.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&r.stderr));
        // `pynbox run`'s exit statuses (`Status::exit_code`).
        let status = match r.status.code() {
            Some(0) => return Ok(read_small(&scratch.join("out").join(".pynbox-hook.json"))),
            Some(124) => Status::TimeLimit,
            Some(137) => Status::MemoryLimit,
            Some(153) => Status::OutputLimit,
            Some(n) => Status::Exited(n),
            None => Status::Crashed("pynbox run was killed".into()),
        };
        Err((status, text))
    }

    /// Unpacks and builds; the wheel (in the scratch directory) and the
    /// build environment's record.
    fn build(
        &self,
        archive: &Path,
        label: &str,
        name: &str,
        version: &Version,
        scratch: &Path,
    ) -> Result<(PathBuf, String)> {
        let top = unpack(archive, label, &scratch.join("src"))?;
        let src = top
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pyproject = match read_small(&top.join("pyproject.toml")) {
            Some(d) => Some(
                String::from_utf8(d)
                    .map_err(|_| PackageError(format!("{label}: pyproject.toml is not UTF-8")))?,
            ),
            None if top.join("pyproject.toml").exists() => {
                return err(format!(
                    "{label}: pyproject.toml is not a small regular file: refused"
                ))
            }
            None => None,
        };
        let bs = BuildSystem::parse(pyproject.as_deref(), label)?;
        let deadline = Instant::now() + self.timeout;
        let cannot = format!(
            "cannot build {name} {version} from its source distribution inside the sandbox"
        );
        let explain = |status: Status, output: String| -> PackageError {
            let lines: Vec<&str> = output.lines().collect();
            for l in &lines[lines.len().saturating_sub(TAIL_LINES)..] {
                eprintln!("  | {l}");
            }
            let low = output.to_ascii_lowercase();
            let why = match status {
                Status::TimeLimit => format!(
                    "the build ran past its time limit of {} s (--build-timeout)",
                    self.timeout.as_secs()
                ),
                Status::MemoryLimit => format!("the build ran past its memory limit of {} MiB", MEMORY >> 20),
                Status::OutputLimit => format!("the build printed more than {} MiB", MAX_BUILD_OUTPUT >> 20),
                _ if ["compileerror", "ccompilererror", "command 'gcc'", "command 'cc'", "c compiler", "unable to execute", "build_ext"]
                    .iter()
                    .any(|w| low.contains(w)) =>
                {
                    "the build needs a C compiler (the sandbox has none); a release with a pure-Python wheel, or a pure-Python alternative, is needed".to_string()
                }
                Status::Crashed(e) if output.is_empty() || output == e => format!("the build sandbox failed: {e}"),
                _ => format!("its build backend {} failed (its last lines are above)", bs.backend),
            };
            PackageError(format!("{cannot}: {why}"))
        };
        let mut env_record = self.install_env(&bs.requires, &scratch.join("env"), label)?;
        let more = self
            .hook("get_requires_for_build_wheel", scratch, &src, &bs, deadline)
            .map_err(|(s, o)| explain(s, o))?;
        let more: Vec<String> = more
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or_default();
        let more: Vec<String> = more
            .into_iter()
            .filter(|r| !bs.requires.contains(r))
            .take(256)
            .collect();
        if !more.is_empty() {
            // One round, as pip does: everything again, in a fresh env.
            let _ = std::fs::remove_dir_all(scratch.join("env"));
            let mut all = bs.requires.clone();
            all.extend(more);
            env_record = self.install_env(&all, &scratch.join("env"), label)?;
        }
        let answer = self
            .hook("build_wheel", scratch, &src, &bs, deadline)
            .map_err(|(s, o)| explain(s, o))?;
        let out = scratch.join("out");
        let said: Option<String> = answer.and_then(|d| serde_json::from_slice(&d).ok());
        let mut wheels: Vec<String> = std::fs::read_dir(&out)
            .map_err(io("reading the build's output"))?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".whl"))
            .collect();
        if let Some(s) = said.filter(|s| wheels.contains(s)) {
            wheels = vec![s];
        }
        let [file] = &wheels[..] else {
            return err(format!(
                "{cannot}: its backend made {} wheels, not one",
                wheels.len()
            ));
        };
        let Some(w) = WheelName::parse(file) else {
            return err(format!(
                "{cannot}: its backend made '{file}', not a wheel name"
            ));
        };
        if w.name != normalize(name) || &w.version != version {
            return err(format!(
                "{cannot}: its backend made {file}, not a wheel of {name} {version}: refused"
            ));
        }
        if !fits_sandbox(&w) {
            return err(format!(
                "{cannot}: its backend made {file}, a wheel for another platform; only pure-Python wheels can be installed"
            ));
        }
        let path = out.join(file);
        if let Some(native) = native_files(&path, file)?.first() {
            return err(format!(
                "{cannot}: its backend made {file}, which holds compiled code ({native}) that the sandbox cannot load"
            ));
        }
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size > MAX_WHEEL {
            return err(format!(
                "{cannot}: the wheel it made is larger than {} MiB",
                MAX_WHEEL >> 20
            ));
        }
        Ok((path, env_record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_system_defaults_and_checks() {
        let legacy = BuildSystem::parse(None, "x").unwrap();
        assert_eq!(legacy.backend, "setuptools.build_meta:__legacy__");
        assert_eq!(legacy.requires, vec!["setuptools>=40.8.0"]);
        let only_requires = BuildSystem::parse(
            Some("[build-system]\nrequires = [\"setuptools\", \"wheel\"]\n"),
            "x",
        )
        .unwrap();
        assert_eq!(only_requires.backend, "setuptools.build_meta:__legacy__");
        assert_eq!(only_requires.requires, vec!["setuptools", "wheel"]);
        let flit = BuildSystem::parse(
            Some("[build-system]\nrequires = [\"flit_core>=3.2\"]\nbuild-backend = \"flit_core.buildapi\"\nbackend-path = [\".\"]\n"),
            "x",
        )
        .unwrap();
        assert_eq!(flit.backend, "flit_core.buildapi");
        assert_eq!(flit.backend_path, vec!["."]);
        for bad in [
            "[build-system]\nbuild-backend = \"os; import x\"\n",
            "[build-system]\nbuild-backend = \"b\"\nbackend-path = [\"../up\"]\n",
            "[build-system]\nbuild-backend = \"b\"\nbackend-path = [\"/abs\"]\n",
            "[build-system]\nrequires = \"setuptools\"\n",
            "not toml [",
        ] {
            assert!(BuildSystem::parse(Some(bad), "x").is_err(), "{bad}");
        }
    }

    /// A .tar.gz of raw entries: (path written into the header as is,
    /// entry type, data); a PAX record `path` when given.
    fn targz(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (path, kind, data, pax) in entries {
            if let Some(p) = pax {
                b.append_pax_extensions([("path", p.as_bytes())]).unwrap();
            }
            let mut h = tar::Header::new_ustar();
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_size(data.len() as u64);
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn unpack_bytes(file: &str, data: &[u8]) -> (tempfile::TempDir, Result<PathBuf>) {
        let d = tempfile::tempdir().unwrap();
        let archive = d.path().join(file);
        std::fs::write(&archive, data).unwrap();
        let r = unpack(&archive, file, &d.path().join("out"));
        (d, r)
    }

    #[test]
    fn sdists_unpack_only_inside_their_scratch_directory() {
        use tar::EntryType as T;
        let (d, top) = unpack_bytes(
            "p-1.0.tar.gz",
            &targz(&[
                (
                    "p-1.0/PKG-INFO",
                    T::Regular,
                    b"Metadata-Version: 2.2
",
                    None,
                ),
                (
                    "x",
                    T::Regular,
                    b"print()
",
                    Some("p-1.0/a/long/path.py"),
                ),
                ("p-1.0/docs", T::Directory, b"", None),
            ]),
        );
        let top = top.unwrap();
        assert_eq!(top, d.path().join("out/p-1.0"));
        assert_eq!(
            std::fs::read(top.join("a/long/path.py")).unwrap(),
            b"print()
"
        );
        // A PAX path is checked like a header's.
        let (d, r) = unpack_bytes(
            "p-1.0.tar.gz",
            &targz(&[("p-1.0/ok", T::Regular, b"x", Some("p-1.0/../../evil"))]),
        );
        assert!(r.unwrap_err().0.contains("unsafe path"));
        assert!(!d.path().join("evil").exists());
        for (entries, what) in [
            (
                vec![("/etc/evil", T::Regular, &b"x"[..], None)],
                "unsafe path",
            ),
            (
                vec![("p-1.0/null", T::Char, &b""[..], None)],
                "devices and pipes",
            ),
            (
                vec![("p-1.0/fifo", T::Fifo, &b""[..], None)],
                "devices and pipes",
            ),
            (
                vec![
                    ("a-1.0/x", T::Regular, &b"x"[..], None),
                    ("b-1.0/y", T::Regular, &b"y"[..], None),
                ],
                "one top-level directory",
            ),
        ] {
            let (_d, r) = unpack_bytes("p-1.0.tar.gz", &targz(&entries));
            let e = r.unwrap_err().0;
            assert!(e.contains(what), "{what}: {e}");
        }
        let (_d, r) = unpack_bytes("p-1.0.tar.gz", b"not gzip");
        assert!(r.is_err());
        // A legacy .zip sdist.
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default();
        w.start_file("z-1.0/setup.py", opts).unwrap();
        std::io::Write::write_all(&mut w, b"pass\n").unwrap();
        let data = w.finish().unwrap().into_inner();
        let (_d, top) = unpack_bytes("z-1.0.zip", &data);
        assert!(top.unwrap().join("setup.py").is_file());
    }

    #[test]
    fn pkg_info_is_used_only_when_static() {
        use tar::EntryType as T;
        let check = |pkg_info: &[u8]| {
            let (d, _) = unpack_bytes("p-1.0.tar.gz", b"");
            let archive = d.path().join("p-1.0.tar.gz");
            std::fs::write(
                &archive,
                targz(&[("p-1.0/PKG-INFO", T::Regular, pkg_info, None)]),
            )
            .unwrap();
            static_metadata(&archive, "p-1.0.tar.gz").unwrap()
        };
        let m =
            check(b"Metadata-Version: 2.2\nName: p\nVersion: 1.0\nRequires-Dist: q>=1\n").unwrap();
        assert_eq!(m.requires_dist, vec!["q>=1"]);
        assert!(check(b"Metadata-Version: 2.1\nName: p\nVersion: 1.0\n").is_none());
        assert!(
            check(b"Metadata-Version: 2.4\nName: p\nVersion: 1.0\nDynamic: Requires-Dist\n")
                .is_none()
        );
        assert!(
            check(b"Metadata-Version: 2.4\nName: p\nVersion: 1.0\nDynamic: license\n").is_some()
        );
    }

    #[test]
    fn wheels_fit_the_sandbox_when_pure_or_tagged_for_it() {
        let fits = |f: &str| fits_sandbox(&WheelName::parse(f).unwrap());
        assert!(fits("a-1.0-py3-none-any.whl"));
        assert!(fits("pyyaml-6.0.4-cp313-cp313-wasi_0_0_0_wasm32.whl"));
        assert!(!fits("a-1.0-cp313-cp313-linux_x86_64.whl"));
        assert!(!fits("a-1.0-cp312-cp312-wasi_0_0_0_wasm32.whl"));
    }

    #[test]
    fn links_must_stay_inside_the_tree() {
        assert!(stays_inside("pkg-1.0/docs", "../README"));
        assert!(stays_inside("pkg-1.0", "src/a.py"));
        assert!(!stays_inside("pkg-1.0", "../../etc/passwd"));
        assert!(!stays_inside("", "/etc/passwd"));
        assert!(!stays_inside("a", "../.."));
        assert_eq!(
            pax_records(b"20 path=a/long/name\n13 mtime=1.5\n"),
            vec![
                (b"path".to_vec(), b"a/long/name".to_vec()),
                (b"mtime".to_vec(), b"1.5".to_vec())
            ]
        );
    }
}
