//! Packages: the archive format, repositories, and installs into a
//! sandbox directory (DEST) with receipts.
//!
//! An archive is `NAME.VERSION.tar.zst` holding `manifest.json` first and
//! then only regular files and directories under `root/`. Everything in it
//! is untrusted: names and paths are checked before use, every file must be
//! listed in the manifest with its size and sha256, and all writes into DEST
//! go through a cap-std directory handle, so nothing lands outside DEST
//! whatever the archive says. See docs/PACKAGES.md.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The archive format this code reads and writes.
pub const FORMAT: u32 = 1;
/// The package that is always installed: the runner itself.
pub const RUNNER: &str = "runner";
const MAX_FILES: usize = 200_000;
const MAX_TOTAL: u64 = 8 << 30;
/// The largest `manifest.json`: about 80,000 files' worth. Parsing it
/// holds it and what it parses to in memory.
const MAX_MANIFEST: u64 = 16 << 20;
/// Bounds on what a manifest lists, enforced while it is parsed (so that a
/// manifest of many tiny items cannot expand into a large structure).
const MAX_DEPENDS: usize = 256;
const MAX_COMMANDS: usize = 64;
const MAX_STEPS: usize = 32;
const MAX_WORDS: usize = 256;
/// The largest GNU long name: a checked path (4096 bytes) below `root/`,
/// with a NUL.
const MAX_LONG_NAME: u64 = 4096 + 6;
/// Decompressed bytes allowed per archive entry besides its data: its
/// header, a long-name header and the long name, each padded to 512.
const ENTRY_OVERHEAD: u64 = 512 + 512 + 4608;
/// Decompressed bytes allowed besides the files' data and headers:
/// directory entries and the end of the archive.
const ARCHIVE_SLACK: u64 = 4 << 20;
/// The largest zstd window a package may use (2^25 = 32 MiB; `pynbox
/// build` uses level 12, whose window is at most 8 MiB). The decoder holds
/// one window in memory.
const MAX_WINDOW_LOG: u32 = 25;
/// The most archives an index may list.
const MAX_INDEX: usize = 100_000;
/// The largest index.json.
pub const MAX_INDEX_FILE: u64 = 16 << 20;
/// The largest archive a repository may offer.
pub const MAX_ARCHIVE: u64 = MAX_TOTAL + (2 << 30);

/// A package error, with a message that says what to do.
#[derive(Debug)]
pub struct PackageError(pub String);

impl fmt::Display for PackageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PackageError {}

pub type Result<T> = std::result::Result<T, PackageError>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(PackageError(msg.into()))
}

fn io_err(what: impl fmt::Display) -> impl FnOnce(io::Error) -> PackageError {
    move |e| PackageError(format!("{what}: {e}"))
}

/// A program an installed package offers on the host, as
/// `DEST/bin/NAME`. It can only run guest programs through `DEST/bin/run`:
/// an archive never puts host code on the machine.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Command {
    /// Guest command lines run in turn (`["python", "/test/t.py"]`): a
    /// program (`python` or an absolute guest path) and its arguments.
    #[serde(deserialize_with = "bounded_steps")]
    pub steps: Vec<Vec<String>>,
    /// A guest path at which each run gets a fresh, empty, writable
    /// directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// Path below the sandbox root, `/`-separated, relative.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub version: String,
    #[serde(default, deserialize_with = "bounded::<_, _, MAX_DEPENDS>")]
    pub depends: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "bounded_map::<_, _, MAX_COMMANDS>"
    )]
    pub commands: BTreeMap<String, Command>,
    #[serde(deserialize_with = "bounded::<_, _, MAX_FILES>")]
    pub files: Vec<FileEntry>,
}

/// A list of at most `N` items, refused as soon as it grows past that
/// while it is parsed.
struct Bounded<T, const N: usize>(Vec<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Bounded<T, N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T, const N: usize>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> serde::de::Visitor<'de> for V<T, N> {
            type Value = Bounded<T, N>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a list of at most {N} items")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element()? {
                    if v.len() == N {
                        return Err(serde::de::Error::custom(format!(
                            "a list of more than {N} items"
                        )));
                    }
                    v.push(x);
                }
                Ok(Bounded(v))
            }
        }
        d.deserialize_seq(V::<T, N>(std::marker::PhantomData))
    }
}

fn bounded<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>, const N: usize>(
    d: D,
) -> std::result::Result<Vec<T>, D::Error> {
    Bounded::<T, N>::deserialize(d).map(|b| b.0)
}

fn bounded_steps<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<Vec<String>>, D::Error> {
    let steps = Bounded::<Bounded<String, MAX_WORDS>, MAX_STEPS>::deserialize(d)?;
    Ok(steps.0.into_iter().map(|s| s.0).collect())
}

fn bounded_map<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>, const N: usize>(
    d: D,
) -> std::result::Result<BTreeMap<String, T>, D::Error> {
    struct V<T, const N: usize>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>, const N: usize> serde::de::Visitor<'de> for V<T, N> {
        type Value = BTreeMap<String, T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a map of at most {N} entries")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut m = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<String, T>()? {
                if m.len() == N {
                    return Err(serde::de::Error::custom(format!(
                        "a map of more than {N} entries"
                    )));
                }
                m.insert(k, v);
            }
            Ok(m)
        }
    }
    d.deserialize_map(V::<T, N>(std::marker::PhantomData))
}

/// What describes a package besides its files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackageInfo {
    pub name: String,
    pub version: String,
    pub depends: Vec<String>,
    pub commands: BTreeMap<String, Command>,
}

/// What `DEST/packages/NAME.installed` records.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Receipt {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub depends: Vec<String>,
    /// Files relative to DEST (`root/...`, `bin/...`).
    pub files: Vec<FileEntry>,
    /// For a distribution installed from a Python package index
    /// (`pynbox pip`): the wheel it came from, which `DEST/pylock.toml`
    /// records. Receipts of pynbox's own packages have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pypi: Option<PypiOrigin>,
}

/// The wheel a distribution from a Python package index was installed from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PypiOrigin {
    /// The distribution's name as its metadata spells it (the receipt's
    /// name is `pypi-` and the normalized name).
    pub name: String,
    /// The wheel's file name.
    pub file: String,
    /// Where it was downloaded from (absent for a local --find-links file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The local file it came from (--find-links).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The index that offered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    pub size: u64,
    pub sha256: String,
    /// Named by the user (not only pulled in as a dependency).
    #[serde(default)]
    pub requested: bool,
}

pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        err(format!(
            "'{name}' is not a package name: use lowercase letters, digits, - and _"
        ))
    }
}

pub fn check_version(v: &str) -> Result<()> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~-_".contains(c));
    if ok {
        Ok(())
    } else {
        err(format!(
            "'{v}' is not a package version: use letters, digits and . + ~ - _"
        ))
    }
}

/// Checks a path from an archive or manifest: relative, `/`-separated,
/// no empty, `.` or `..` component, no backslash or NUL.
pub fn check_path(p: &str) -> Result<()> {
    let bad = p.is_empty()
        || p.starts_with('/')
        || p.contains('\\')
        || p.contains('\0')
        || p.len() > 4096
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        err(format!("unsafe path '{p}' in the archive"))
    } else {
        Ok(())
    }
}

/// The program of a package command's step: `python`, or an absolute
/// guest path without `.`, `..` or NUL. Never an option of `pynbox run`.
fn check_program(p: &str) -> std::result::Result<(), &'static str> {
    if p == "python" {
        return Ok(());
    }
    if p.starts_with('-') {
        return Err("is an option, not a program");
    }
    match crate::mounts::guest_components(p) {
        Ok(c) if c.is_empty() => Err("is not a file"),
        Ok(_) => Ok(()),
        Err(why) => Err(why),
    }
}

fn check_command_name(n: &str) -> Result<()> {
    check_name(n)?;
    if n == "run" || n == "pynbox" || n == "pip" {
        return err(format!("a package may not define the command '{n}'"));
    }
    Ok(())
}

impl Manifest {
    /// Checks everything a manifest says before any of it is used.
    pub fn check(&self) -> Result<()> {
        if self.format != FORMAT {
            return err(format!(
                "package format {} is not supported (this pynbox reads format {FORMAT}): use a matching pynbox",
                self.format
            ));
        }
        check_name(&self.name)?;
        check_version(&self.version)?;
        for d in &self.depends {
            check_name(d)?;
        }
        if self.files.len() > MAX_FILES {
            return err(format!(
                "the package lists {} files, more than {MAX_FILES}",
                self.files.len()
            ));
        }
        let mut seen = BTreeSet::new();
        let mut total = 0u64;
        for f in &self.files {
            check_path(&f.path)?;
            if !seen.insert(f.path.as_str()) {
                return err(format!("the manifest lists '{}' twice", f.path));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return err(format!(
                    "the manifest's hash of '{}' is not a sha256",
                    f.path
                ));
            }
            total = total.saturating_add(f.size);
        }
        // A file and a directory of the same name cannot both exist.
        for f in &self.files {
            let mut prefix = String::new();
            for comp in f.path.split('/') {
                if !prefix.is_empty() && seen.contains(prefix.as_str()) {
                    return err(format!(
                        "'{prefix}' is both a file and a directory in the manifest"
                    ));
                }
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(comp);
            }
        }
        if total > MAX_TOTAL {
            return err("the package is larger than 8 GiB");
        }
        for (name, c) in &self.commands {
            check_command_name(name)?;
            let refuse = |why: String| {
                err(format!(
                    "package {} {}, command '{name}': {why}",
                    self.name, self.version
                ))
            };
            if c.steps.is_empty() || c.steps.iter().any(|s| s.is_empty()) {
                return refuse("a step is empty".into());
            }
            for step in &c.steps {
                if let Err(why) = check_program(&step[0]) {
                    return refuse(format!(
                        "the program {:?} {why}: a package command may only name a guest program (python, or an absolute path inside the sandbox) and its arguments",
                        step[0]
                    ));
                }
                if step.iter().any(|w| w.contains('\0')) {
                    return refuse("an argument contains a NUL byte".into());
                }
            }
            if let Some(s) = &c.scratch {
                match crate::mounts::guest_components(s) {
                    Ok(c) if c.is_empty() => {
                        return refuse(format!("scratch path '{s}' is the root"))
                    }
                    Ok(_) if s.contains(':') => {
                        return refuse(format!("scratch path '{s}' contains ':'"))
                    }
                    Ok(_) => {}
                    Err(why) => return refuse(format!("scratch path '{s}' {why}")),
                }
            }
        }
        Ok(())
    }

    pub fn archive_name(&self) -> String {
        format!("{}.{}.tar.zst", self.name, self.version)
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub(crate) fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    hash_reader(&mut f)
}

/// The sha256 (hex) and length of everything `r` yields.
pub(crate) fn hash_reader(r: &mut impl Read) -> io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Packs the files below `root` into `out_dir/NAME.VERSION.tar.zst`.
/// Entries are sorted and carry no owner or time, so that the same files
/// give the same archive.
pub fn create_archive(info: &PackageInfo, root: &Path, out_dir: &Path) -> Result<PathBuf> {
    let mut files = Vec::new();
    let mut paths = Vec::new();
    collect_files(root, root, &mut paths).map_err(io_err(format!("reading {}", root.display())))?;
    paths.sort();
    for rel in &paths {
        let (sha256, size) =
            sha256_file(&root.join(rel)).map_err(io_err(format!("hashing {rel}")))?;
        files.push(FileEntry {
            path: rel.clone(),
            size,
            sha256,
        });
    }
    let manifest = Manifest {
        format: FORMAT,
        name: info.name.clone(),
        version: info.version.clone(),
        depends: info.depends.clone(),
        commands: info.commands.clone(),
        files,
    };
    manifest.check()?;
    std::fs::create_dir_all(out_dir).map_err(io_err(format!("creating {}", out_dir.display())))?;
    let final_path = out_dir.join(manifest.archive_name());
    let tmp = out_dir.join(format!(".{}.tmp", manifest.archive_name()));
    let file =
        std::fs::File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
    let mut enc = zstd::Encoder::new(file, 12).map_err(io_err("starting zstd"))?;
    enc.multithread(2).ok();
    {
        let mut tar = tar::Builder::new(&mut enc);
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        append(
            &mut tar,
            "manifest.json",
            &mut json.as_slice(),
            json.len() as u64,
            0o644,
        )?;
        for f in &manifest.files {
            let p = root.join(&f.path);
            let mut src =
                std::fs::File::open(&p).map_err(io_err(format!("reading {}", p.display())))?;
            append(
                &mut tar,
                &format!("root/{}", f.path),
                &mut src,
                f.size,
                file_mode(&p),
            )?;
        }
        tar.finish().map_err(io_err("writing the archive"))?;
    }
    enc.finish()
        .and_then(|f| f.sync_all())
        .map_err(io_err("finishing the archive"))?;
    std::fs::rename(&tmp, &final_path)
        .map_err(io_err(format!("writing {}", final_path.display())))?;
    Ok(final_path)
}

#[cfg(unix)]
fn file_mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(p) {
        Ok(m) if m.permissions().mode() & 0o111 != 0 => 0o755,
        _ => 0o644,
    }
}

#[cfg(not(unix))]
fn file_mode(_: &Path) -> u32 {
    0o644
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    data: &mut impl Read,
    size: u64,
    mode: u32,
) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    tar.append_data(&mut h, path, data)
        .map_err(io_err(format!("adding {path} to the archive")))
}

fn collect_files(base: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        let p = e.path();
        if t.is_dir() {
            collect_files(base, &p, out)?;
        } else if t.is_file() {
            let rel = p.strip_prefix(base).expect("below base");
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(rel.join("/"));
        } else {
            return Err(io::Error::other(format!(
                "{} is neither a file nor a directory: packages hold only those",
                p.display()
            )));
        }
    }
    Ok(())
}

/// How many decompressed bytes an archive may still yield. The tar reader
/// reads through [`Capped`], so that no header, however large it claims to
/// be, makes it read (or hold) more than this.
struct Budget {
    used: Cell<u64>,
    cap: Cell<u64>,
    hit: Cell<bool>,
}

impl Budget {
    fn new(cap: u64) -> Rc<Budget> {
        Rc::new(Budget {
            used: Cell::new(0),
            cap: Cell::new(cap),
            hit: Cell::new(false),
        })
    }

    /// An error of the tar reader, or the budget's own when it was spent.
    fn error<'s>(
        &'s self,
        what: impl fmt::Display + 's,
    ) -> impl FnOnce(io::Error) -> PackageError + 's {
        move |e| {
            if self.hit.get() {
                PackageError(format!(
                    "the archive holds more than its manifest declares (over {} bytes uncompressed)",
                    self.cap.get()
                ))
            } else {
                PackageError(format!("{what}: {e}"))
            }
        }
    }
}

/// A reader that fails once its [`Budget`] is spent.
struct Capped<R> {
    inner: R,
    budget: Rc<Budget>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let b = &self.budget;
        let left = b.cap.get().saturating_sub(b.used.get());
        if left == 0 && !buf.is_empty() {
            b.hit.set(true);
            return Err(io::Error::other(
                "the archive holds more than its manifest declares",
            ));
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let k = self.inner.read(&mut buf[..n])?;
        b.used.set(b.used.get() + k as u64);
        Ok(k)
    }
}

type ArchiveOf<R> = tar::Archive<Capped<zstd::Decoder<'static, io::BufReader<R>>>>;

/// The tar stream inside a zstd archive, decompressed through `budget`,
/// with a bounded zstd window.
fn open_archive<R: Read>(archive: R, budget: &Rc<Budget>) -> Result<ArchiveOf<R>> {
    let mut dec =
        zstd::Decoder::new(archive).map_err(io_err("the archive is not zstd-compressed"))?;
    dec.window_log_max(MAX_WINDOW_LOG)
        .map_err(io_err("setting up zstd"))?;
    Ok(tar::Archive::new(Capped {
        inner: dec,
        budget: budget.clone(),
    }))
}

/// The next entry of a raw tar stream, with its path. A GNU long name is
/// applied to the entry after it, after its size was checked (before any of
/// it is read); other extension headers (PAX, GNU long link, sparse) are
/// refused: `pynbox build` writes none, and each is data the reader would
/// otherwise hold in memory or interpret.
fn next_entry<'a, R: Read>(
    entries: &mut tar::Entries<'a, R>,
    budget: &Budget,
) -> Result<Option<(Vec<u8>, tar::Entry<'a, R>)>> {
    let mut long_name: Option<Vec<u8>> = None;
    loop {
        let Some(entry) = entries.next() else {
            if long_name.is_some() {
                return err("the archive ends after a GNU long-name header");
            }
            return Ok(None);
        };
        let mut entry = entry.map_err(budget.error("the archive is damaged"))?;
        let kind = entry.header().entry_type();
        if kind.is_gnu_longname() {
            if long_name.is_some() {
                return err("the archive has two GNU long-name headers for one entry");
            }
            if entry.size() > MAX_LONG_NAME {
                return err(format!(
                    "a GNU long-name header in the archive claims {} bytes: paths in packages are at most {MAX_LONG_NAME} bytes",
                    entry.size()
                ));
            }
            let mut name = Vec::with_capacity(entry.size() as usize);
            (&mut entry)
                .take(MAX_LONG_NAME)
                .read_to_end(&mut name)
                .map_err(budget.error("the archive is damaged"))?;
            while name.last() == Some(&0) {
                name.pop();
            }
            long_name = Some(name);
            continue;
        }
        let extension = if kind.is_gnu_longlink() {
            Some("GNU long-link")
        } else if kind.is_pax_local_extensions() || kind.is_pax_global_extensions() {
            Some("PAX extension")
        } else if kind.is_gnu_sparse() {
            Some("GNU sparse")
        } else {
            None
        };
        if let Some(what) = extension {
            return err(format!(
                "the archive has a {what} header (claiming {} bytes): packages hold only plain entries and GNU long names",
                entry.size()
            ));
        }
        let path = match long_name {
            Some(n) => n,
            None => entry.path_bytes().into_owned(),
        };
        return Ok(Some((path, entry)));
    }
}

/// Reads `manifest.json`, the first entry, and checks it.
fn read_manifest_entry<R: Read>(
    entries: &mut tar::Entries<'_, R>,
    budget: &Budget,
) -> Result<Manifest> {
    let (path, first) =
        next_entry(entries, budget)?.ok_or_else(|| PackageError("the archive is empty".into()))?;
    if path != b"manifest.json" {
        return err("the archive does not start with manifest.json");
    }
    if first.header().entry_type() != tar::EntryType::Regular || first.size() > MAX_MANIFEST {
        return err(format!(
            "the archive's manifest.json is not a regular file of at most {MAX_MANIFEST} bytes"
        ));
    }
    let mut json = Vec::with_capacity(first.size() as usize);
    first
        .take(MAX_MANIFEST)
        .read_to_end(&mut json)
        .map_err(budget.error("reading manifest.json"))?;
    let manifest: Manifest = serde_json::from_slice(&json)
        .map_err(|e| PackageError(format!("the archive's manifest.json is not valid: {e}")))?;
    drop(json);
    manifest.check()?;
    Ok(manifest)
}

/// Decompressed bytes allowed before the manifest is read: the manifest
/// and its headers.
const MANIFEST_BUDGET: u64 = MAX_MANIFEST + 2 * ENTRY_OVERHEAD;

/// Reads only the manifest at the head of an archive, and checks it.
pub fn read_manifest(archive: impl Read) -> Result<Manifest> {
    let budget = Budget::new(MANIFEST_BUDGET);
    let mut tar = open_archive(archive, &budget)?;
    let mut entries = tar
        .entries()
        .map_err(io_err("the archive is not a valid tar.zst"))?
        .raw(true);
    read_manifest_entry(&mut entries, &budget)
}

/// Reads an archive and checks it whole: its manifest, every entry's type,
/// path, size and hash. Files are written below `staging` (a directory
/// handle, so no entry can land outside it). Returns the manifest.
///
/// Memory and work stay bounded whatever the archive claims: the
/// decompressed stream may not exceed the manifest's declared sizes plus
/// [`ENTRY_OVERHEAD`] per file and [`ARCHIVE_SLACK`], the zstd window is
/// at most 2^[`MAX_WINDOW_LOG`] bytes, and no tar header's data is read
/// into memory but a long name, after its size was checked.
pub fn unpack_checked(
    archive: &mut impl Read,
    staging: &Dir,
    progress: &mut dyn FnMut(u64),
) -> Result<Manifest> {
    let budget = Budget::new(MANIFEST_BUDGET);
    let mut tar = open_archive(archive, &budget)?;
    let mut entries = tar
        .entries()
        .map_err(io_err("the archive is not a valid tar.zst"))?
        .raw(true);
    let manifest = read_manifest_entry(&mut entries, &budget)?;
    let declared = manifest.files.iter().fold(0u64, |sum, f| {
        sum.saturating_add(f.size.saturating_add(511) & !511)
    });
    budget.cap.set(
        budget
            .used
            .get()
            .saturating_add(declared)
            .saturating_add((manifest.files.len() as u64 + 1) * ENTRY_OVERHEAD)
            .saturating_add(ARCHIVE_SLACK),
    );
    let expected: BTreeMap<&str, &FileEntry> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), f))
        .collect();
    let mut got = BTreeSet::new();
    let mut done = 0u64;
    while let Some((raw, mut entry)) = next_entry(&mut entries, &budget)? {
        let path = std::str::from_utf8(&raw)
            .map_err(|_| PackageError("a path in the archive is not UTF-8".into()))?
            .trim_end_matches('/')
            .to_string();
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::Directory && entry.size() != 0 {
            return err(format!(
                "the directory entry '{path}' in the archive claims {} bytes of data",
                entry.size()
            ));
        }
        let Some(rel) = path.strip_prefix("root/") else {
            if path == "root" && kind == tar::EntryType::Directory {
                continue;
            }
            return err(format!(
                "unexpected entry '{path}' in the archive: only root/ is allowed"
            ));
        };
        check_path(rel)?;
        match kind {
            tar::EntryType::Directory => {
                staging
                    .create_dir_all(rel)
                    .map_err(io_err(format!("creating {rel}")))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let Some(want) = expected.get(rel) else {
                    return err(format!("'{rel}' is in the archive but not in its manifest"));
                };
                if !got.insert(rel.to_string()) {
                    return err(format!("'{rel}' appears twice in the archive"));
                }
                if entry.size() != want.size {
                    return err(format!("'{rel}' has size {} but the manifest says {}", entry.size(), want.size));
                }
                if let Some(parent) = Path::new(rel).parent().filter(|p| !p.as_os_str().is_empty()) {
                    staging
                        .create_dir_all(parent)
                        .map_err(io_err(format!("creating {}", parent.display())))?;
                }
                let mut out = staging
                    .create(rel)
                    .map_err(io_err(format!("writing {rel}")))?;
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 1 << 16];
                let mut n = 0u64;
                let mut limited = (&mut entry).take(want.size);
                loop {
                    let k = limited
                        .read(&mut buf)
                        .map_err(budget.error(format!("reading {rel}")))?;
                    if k == 0 {
                        break;
                    }
                    h.update(&buf[..k]);
                    out.write_all(&buf[..k]).map_err(io_err(format!("writing {rel}")))?;
                    n += k as u64;
                    done += k as u64;
                    progress(done);
                }
                if n != want.size || hex::encode(h.finalize()) != want.sha256 {
                    return err(format!(
                        "'{rel}' does not match the hash in the manifest: the archive is corrupt or was tampered with"
                    ));
                }
                #[cfg(unix)]
                if entry.header().mode().unwrap_or(0) & 0o111 != 0 {
                    use cap_std::fs::PermissionsExt;
                    let _ = out.set_permissions(cap_std::fs::Permissions::from_mode(0o755));
                }
            }
            other => {
                return err(format!(
                    "'{rel}' is a {other:?} entry: packages may hold only regular files and directories"
                ))
            }
        }
    }
    if let Some(missing) = manifest.files.iter().find(|f| !got.contains(&f.path)) {
        return err(format!(
            "'{}' is in the manifest but missing from the archive",
            missing.path
        ));
    }
    Ok(manifest)
}

/// Compares versions piece by piece, numbers as numbers (3.13.10 > 3.13.9).
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    fn pieces(v: &str) -> Vec<(bool, u64, String)> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut digits = false;
        for c in v.chars() {
            let d = c.is_ascii_digit();
            if !cur.is_empty() && d != digits {
                out.push(std::mem::take(&mut cur));
            }
            digits = d;
            cur.push(c);
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out.into_iter()
            .map(|p| match p.parse::<u64>() {
                Ok(n) => (true, n, String::new()),
                Err(_) => (false, 0, p),
            })
            .collect()
    }
    pieces(a).cmp(&pieces(b))
}

/// The file name of a package archive, split into (name, version).
pub fn parse_archive_name(file: &str) -> Option<(String, String)> {
    let stem = file.strip_suffix(".tar.zst")?;
    let (name, version) = stem.split_once('.')?;
    check_name(name).ok()?;
    check_version(version).ok()?;
    Some((name.to_string(), version.to_string()))
}

/// `repo/index.json`: what a repository offers, with each archive's sha256
/// so that a download is checked before it is opened.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Index {
    #[serde(deserialize_with = "bounded::<_, _, MAX_INDEX>")]
    pub packages: Vec<IndexEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

/// Rewrites `dir/index.json` from the archives in `dir`.
pub fn write_index(dir: &Path) -> Result<Index> {
    let mut index = Index::default();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io_err(format!("reading {}", dir.display())))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    for file in names {
        let Some((name, version)) = parse_archive_name(&file) else {
            continue;
        };
        let (sha256, size) =
            sha256_file(&dir.join(&file)).map_err(io_err(format!("hashing {file}")))?;
        index.packages.push(IndexEntry {
            name,
            version,
            file,
            size,
            sha256,
        });
    }
    let json = serde_json::to_vec_pretty(&index).expect("index serializes");
    let tmp = dir.join(".index.json.tmp");
    std::fs::write(&tmp, json)
        .and_then(|_| std::fs::rename(&tmp, dir.join("index.json")))
        .map_err(io_err("writing index.json"))?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("3.13.10-1", "3.13.9-1"), Greater);
        assert_eq!(compare_versions("3.13.5-1", "3.13.5-2"), Less);
        assert_eq!(compare_versions("1.0", "1.0"), Equal);
    }

    #[test]
    fn unsafe_paths_and_names_are_refused() {
        for p in [
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/./b",
            "",
            "a\\b",
            "a/",
        ] {
            assert!(check_path(p).is_err(), "{p}");
        }
        assert!(check_path("python/lib/os.py").is_ok());
        for n in ["", "Py", "../x", "a/b", "-x", "a b"] {
            assert!(check_name(n).is_err(), "{n}");
        }
        assert_eq!(
            parse_archive_name("python.3.13.5-1.tar.zst"),
            Some(("python".into(), "3.13.5-1".into()))
        );
        assert_eq!(parse_archive_name("x.tar.gz"), None);
    }

    fn manifest_with(steps: serde_json::Value, scratch: Option<&str>) -> Result<Manifest> {
        let mut cmd = serde_json::json!({"steps": steps});
        if let Some(s) = scratch {
            cmd["scratch"] = s.into();
        }
        let m: Manifest = serde_json::from_value(serde_json::json!({
            "format": 1, "name": "evil", "version": "1",
            "commands": {"pwn": cmd},
            "files": [],
        }))
        .map_err(|e| PackageError(e.to_string()))?;
        m.check().map(|()| m)
    }

    #[test]
    fn package_commands_name_only_guest_programs() {
        for steps in [
            serde_json::json!([["-m", "/:/host:rw", "/evil/w.wasm"]]),
            serde_json::json!([["python"], ["-w", "3:/etc/passwd", "python"]]),
            serde_json::json!([["--timeout", "none", "python"]]),
            serde_json::json!([["--", "python"]]),
            serde_json::json!([["evil/w.wasm"]]),
            serde_json::json!([["/evil/../w.wasm"]]),
            serde_json::json!([["/"]]),
            serde_json::json!([["/evil/w\0.wasm"]]),
            serde_json::json!([["python", "-c", "x\0y"]]),
            serde_json::json!([[]]),
            serde_json::json!([]),
        ] {
            let e = manifest_with(steps.clone(), None).unwrap_err().0;
            assert!(e.contains("package evil 1, command 'pwn'"), "{steps}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        for scratch in ["/", "scratch", "/a/../b", "/s:rw -m /:/h"] {
            let e = manifest_with(serde_json::json!([["python"]]), Some(scratch)).unwrap_err();
            assert!(e.0.contains("command 'pwn'"), "{scratch}: {e}");
        }
        // Arguments may look like anything: they follow the program.
        manifest_with(
            serde_json::json!([["python", "-m", "/:/host:rw"], ["/t/x.wasm", "--timeout"]]),
            Some("/scratch"),
        )
        .unwrap();
    }

    #[test]
    fn build_refuses_a_command_that_is_an_option() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a"), b"a").unwrap();
        let mut commands = BTreeMap::new();
        commands.insert(
            "pwn".to_string(),
            Command {
                steps: vec![vec!["-m".into(), "/:/host:rw".into(), "python".into()]],
                scratch: None,
            },
        );
        let info = PackageInfo {
            name: "evil".into(),
            version: "1".into(),
            commands,
            ..Default::default()
        };
        let e = create_archive(&info, src.path(), out.path()).unwrap_err();
        assert!(e.0.contains("command 'pwn'"), "{e}");
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    }

    /// Lists are bounded while they are parsed, not after.
    #[test]
    fn manifest_lists_are_bounded_while_parsed() {
        let words = vec![""; MAX_WORDS + 1];
        let e = manifest_with(serde_json::json!([words]), None).unwrap_err();
        assert!(e.0.contains("more than 256 items"), "{e}");
        let steps = vec![vec!["python"]; MAX_STEPS + 1];
        assert!(manifest_with(serde_json::json!(steps), None).is_err());
        let deps = vec!["a"; MAX_DEPENDS + 1];
        let r: std::result::Result<Manifest, _> = serde_json::from_value(serde_json::json!({
            "format": 1, "name": "a", "version": "1", "depends": deps, "files": [],
        }));
        assert!(r.is_err());
        let cmds: serde_json::Map<String, serde_json::Value> = (0..=MAX_COMMANDS)
            .map(|i| (format!("c{i}"), serde_json::json!({"steps": [["python"]]})))
            .collect();
        let r: std::result::Result<Manifest, _> = serde_json::from_value(serde_json::json!({
            "format": 1, "name": "a", "version": "1", "commands": cmds, "files": [],
        }));
        assert!(r.unwrap_err().to_string().contains("more than 64 entries"));
    }

    /// The decompressed stream stops at the budget with an error (which the
    /// tar reader passes on) instead of yielding more.
    #[test]
    fn capped_reader_stops_at_its_budget() {
        let budget = Budget::new(1000);
        let mut r = Capped {
            inner: std::io::repeat(0),
            budget: budget.clone(),
        };
        let mut buf = vec![0u8; 4096];
        assert_eq!(r.read(&mut buf).unwrap(), 1000);
        assert!(r.read(&mut buf).is_err());
        assert!(budget.hit.get());
        let e = budget.error("x")(io::Error::other("y"));
        assert!(e.0.contains("more than its manifest declares"), "{e}");
        budget.cap.set(1500);
        assert_eq!(r.read(&mut buf).unwrap(), 500);
    }
}
