//! Wheels: reading their metadata, checking them whole against their
//! `RECORD`, and staging their files for the sandbox's `site-packages`.
//!
//! A wheel is a zip file from the internet. Only the zip's own entry names
//! (each checked like the paths of our own archives) decide where a file
//! goes; `RECORD` is only a list of hashes to compare with. Sizes and
//! counts are bounded before anything is read, every entry is read at
//! most to its declared size, and files are written through a cap-std
//! directory handle, so no entry can land outside the staging area.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;

use cap_std::fs::Dir;
use pep508_rs::pep440_rs::Version;
use sha2::{Digest, Sha256};

use super::target::normalize;
use crate::packages::{check_path, FileEntry, PackageError, Result};

/// The most entries a wheel may hold: what a zip without the zip64
/// extension can.
const MAX_ENTRIES: usize = 65_535;
/// The largest central directory (the zip's list of entries, which the
/// zip reader holds in memory): 65,535 entries with long names.
const MAX_CENTRAL_DIRECTORY: u64 = 32 << 20;
/// The most a wheel may unpack to.
const MAX_UNPACKED: u64 = 2 << 30;
/// The largest METADATA, RECORD, WHEEL or entry_points.txt read into memory.
const MAX_TEXT: u64 = 16 << 20;
/// Where the python package's interpreter finds third-party modules, below
/// DEST's root (`/python/lib/python3.13/site-packages` in the sandbox).
pub const SITE_PACKAGES: &str = "python/lib/python3.13/site-packages";
/// `sys.prefix` below DEST's root, for a wheel's `.data/data` files.
const PREFIX: &str = "python";

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(PackageError(msg.into()))
}

/// What a distribution's core metadata says that resolution needs.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    pub requires_dist: Vec<String>,
    pub requires_python: Option<String>,
}

/// Parses core metadata (RFC 822 headers; the body, the description, is
/// not read).
pub fn parse_metadata(data: &[u8]) -> Result<Metadata> {
    let text = String::from_utf8_lossy(data);
    let mut m = Metadata::default();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = headers.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    for (k, v) in headers {
        match k.as_str() {
            "name" => m.name = v,
            "version" => m.version = v,
            "requires-dist" => m.requires_dist.push(v),
            "requires-python" => m.requires_python = Some(v),
            _ => {}
        }
    }
    if m.name.is_empty() || m.version.is_empty() {
        return err("the metadata gives no Name or Version");
    }
    Ok(m)
}

/// Checks a zip's end-of-central-directory record before the zip reader
/// sees the file: the reader loads the whole list of entries into memory,
/// so its size and count are bounded first. Wheels are at most
/// [`super::index::MAX_WHEEL`], which never needs zip64: a zip64 record
/// is refused.
fn check_central_directory(f: &mut std::fs::File, label: &str) -> Result<()> {
    use std::io::{Seek, SeekFrom};
    let io = |e: std::io::Error| PackageError(format!("{label}: reading the wheel: {e}"));
    let len = f.seek(SeekFrom::End(0)).map_err(io)?;
    // The record is 22 bytes plus a comment of at most 65,535.
    let tail_len = len.min(22 + 65_535);
    f.seek(SeekFrom::Start(len - tail_len)).map_err(io)?;
    let mut tail = vec![0u8; tail_len as usize];
    f.read_exact(&mut tail).map_err(io)?;
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    let Some(at) = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
    else {
        return err(format!(
            "{label} is not a valid wheel (zip): no end of central directory"
        ));
    };
    let u16_at = |o: usize| u16::from_le_bytes([tail[at + o], tail[at + o + 1]]);
    let u32_at = |o: usize| {
        u32::from_le_bytes([
            tail[at + o],
            tail[at + o + 1],
            tail[at + o + 2],
            tail[at + o + 3],
        ])
    };
    let (entries, size, offset) = (u16_at(10), u32_at(12), u32_at(16));
    if entries == u16::MAX || size == u32::MAX || offset == u32::MAX {
        return err(format!(
            "{label} is a zip64 file: wheels that large are refused"
        ));
    }
    if u64::from(size) > MAX_CENTRAL_DIRECTORY || u64::from(size) + u64::from(offset) > len {
        return err(format!(
            "{label}: its zip directory is too large or points outside the file: refused"
        ));
    }
    Ok(())
}

pub(super) fn open_zip(path: &Path, label: &str) -> Result<zip::ZipArchive<std::fs::File>> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| PackageError(format!("opening {}: {e}", path.display())))?;
    check_central_directory(&mut f, label)?;
    let z = zip::ZipArchive::new(f)
        .map_err(|e| PackageError(format!("{label} is not a valid wheel (zip): {e}")))?;
    if z.len() > MAX_ENTRIES {
        return err(format!(
            "{label} holds more than {MAX_ENTRIES} entries: refused"
        ));
    }
    Ok(z)
}

/// The entry name of index `i`, checked: UTF-8, a safe relative path.
pub(super) fn entry_name(
    z: &mut zip::ZipArchive<std::fs::File>,
    i: usize,
    label: &str,
) -> Result<(String, bool)> {
    let e = z
        .by_index_raw(i)
        .map_err(|e| PackageError(format!("{label}: bad zip entry: {e}")))?;
    let raw = std::str::from_utf8(e.name_raw())
        .map_err(|_| PackageError(format!("{label}: a file name in the wheel is not UTF-8")))?
        .to_string();
    let is_dir = raw.ends_with('/');
    let name = raw.trim_end_matches('/').to_string();
    check_path(&name).map_err(|_| {
        PackageError(format!(
            "{label}: unsafe path '{name}' in the wheel: refused, nothing was installed"
        ))
    })?;
    if e.is_symlink() {
        return err(format!("{label}: '{name}' is a symbolic link: refused"));
    }
    Ok((name, is_dir))
}

/// Reads a small entry whole (at most [`MAX_TEXT`]).
fn read_small(
    z: &mut zip::ZipArchive<std::fs::File>,
    name: &str,
    label: &str,
) -> Result<Option<Vec<u8>>> {
    let mut e = match z.by_name(name) {
        Ok(e) => e,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return err(format!("{label}: reading {name}: {e}")),
    };
    if e.size() > MAX_TEXT {
        return err(format!(
            "{label}: {name} is larger than {} MiB: refused",
            MAX_TEXT >> 20
        ));
    }
    let mut data = Vec::new();
    (&mut e)
        .take(MAX_TEXT + 1)
        .read_to_end(&mut data)
        .map_err(|e| PackageError(format!("{label}: reading {name}: {e}")))?;
    if data.len() as u64 > MAX_TEXT {
        return err(format!("{label}: {name} is larger than it says: refused"));
    }
    Ok(Some(data))
}

/// The single `NAME-VERSION.dist-info` directory of the wheel of
/// distribution `name` (normalized).
fn dist_info(z: &mut zip::ZipArchive<std::fs::File>, name: &str, label: &str) -> Result<String> {
    let mut found = BTreeSet::new();
    for i in 0..z.len() {
        let (n, _) = entry_name(z, i, label)?;
        let top = n.split('/').next().unwrap_or_default();
        if let Some(stem) = top.strip_suffix(".dist-info") {
            found.insert((top.to_string(), stem.to_string()));
        }
    }
    let mut matching = found.iter().filter(|(_, stem)| {
        stem.rsplit_once('-')
            .is_some_and(|(n, _)| normalize(n) == name)
    });
    match (matching.next(), matching.next()) {
        (Some((top, _)), None) => Ok(top.clone()),
        (None, _) => err(format!(
            "{label}: the wheel has no .dist-info directory for {name}"
        )),
        _ => err(format!(
            "{label}: the wheel has more than one .dist-info directory"
        )),
    }
}

/// The core metadata inside a wheel (for an index that does not serve it
/// separately).
pub fn wheel_metadata(path: &Path, name: &str, label: &str) -> Result<Metadata> {
    let mut z = open_zip(path, label)?;
    let di = dist_info(&mut z, name, label)?;
    let data = read_small(&mut z, &format!("{di}/METADATA"), label)?
        .ok_or_else(|| PackageError(format!("{label}: the wheel has no {di}/METADATA")))?;
    parse_metadata(&data).map_err(|e| PackageError(format!("{label}: {e}")))
}

/// A `console_scripts` (or `gui_scripts`) entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPoint {
    pub name: String,
    pub module: String,
    pub attr: String,
}

/// The files of a wheel, staged below `stage` (a directory of the staging
/// area), with where each goes below DEST.
pub struct Staged {
    /// (DEST-relative path, size, sha256; path below `stage`).
    pub files: Vec<(FileEntry, String)>,
    pub scripts: Vec<EntryPoint>,
    /// Entries not installed, for the log (e.g. `.data/scripts`).
    pub skipped: Vec<String>,
}

/// sha256 as RECORD writes it: urlsafe base64 without padding.
fn record_hash(digest: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in digest.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// RECORD's rows: path → `sha256=...` hash, or empty. A small CSV reader
/// (quoted fields with doubled quotes), since RECORD is CSV.
fn parse_record(data: &[u8], label: &str) -> Result<BTreeMap<String, String>> {
    let text = std::str::from_utf8(data)
        .map_err(|_| PackageError(format!("{label}: RECORD is not UTF-8")))?;
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars().peekable();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            match c {
                '"' if quoted && chars.peek() == Some(&'"') => {
                    cur.push('"');
                    chars.next();
                }
                '"' => quoted = !quoted,
                ',' if !quoted => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        let path = fields[0].clone();
        let hash = fields.get(1).cloned().unwrap_or_default();
        if out.insert(path.clone(), hash).is_some() {
            return err(format!("{label}: RECORD lists '{path}' twice"));
        }
    }
    Ok(out)
}

fn valid_identifier_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|p| {
            !p.is_empty()
                && !p.starts_with(|c: char| c.is_ascii_digit())
                && p.chars().all(|c| c.is_alphanumeric() || c == '_')
        })
}

/// A console script's name becomes `DEST/bin/NAME`: a plain file name.
pub fn check_script_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !["run", "pynbox", "pip"].contains(&n)
}

/// The console and GUI scripts of an `entry_points.txt` (INI). Entries
/// whose names or targets are not plain identifiers are refused: they
/// are written into host scripts.
pub fn parse_entry_points(data: &[u8], label: &str) -> Result<Vec<EntryPoint>> {
    let text = String::from_utf8_lossy(data);
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().to_string();
            continue;
        }
        if section != "console_scripts" && section != "gui_scripts" {
            continue;
        }
        let Some((name, target)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim();
        // `module:attr [extra1, extra2]`: extras only gate installing.
        let target = target.split('[').next().unwrap_or_default().trim();
        let (module, attr) = target.split_once(':').unwrap_or((target, ""));
        let (module, attr) = (module.trim(), attr.trim());
        if !check_script_name(name)
            || !valid_identifier_path(module)
            || !valid_identifier_path(attr)
        {
            return err(format!(
                "{label}: the console script '{name} = {target}' is not a plain name and module:function: refused"
            ));
        }
        out.push(EntryPoint {
            name: name.to_string(),
            module: module.to_string(),
            attr: attr.to_string(),
        });
    }
    Ok(out)
}

/// Checks the wheel of `name` `version` whole and writes its files below
/// `stage`: every entry a safe path, listed in RECORD with its hash, read
/// to exactly its declared size. `RECORD` is written anew for the
/// installed paths, with `INSTALLER` (`pynbox`) and, for a distribution
/// the user named, `REQUESTED`.
pub fn stage(
    path: &Path,
    name: &str,
    version: &Version,
    label: &str,
    stage: &Dir,
    requested: bool,
) -> Result<Staged> {
    let mut z = open_zip(path, label)?;
    let di = dist_info(&mut z, name, label)?;
    let di_version = di
        .strip_suffix(".dist-info")
        .and_then(|s| s.rsplit_once('-'))
        .and_then(|(_, v)| v.parse::<Version>().ok());
    if di_version.as_ref() != Some(version) {
        return err(format!("{label}: its {di} does not name version {version}"));
    }
    let data_dir = format!("{}.data", di.trim_end_matches(".dist-info"));
    let record = read_small(&mut z, &format!("{di}/RECORD"), label)?
        .ok_or_else(|| PackageError(format!("{label}: the wheel has no {di}/RECORD")))?;
    let record = parse_record(&record, label)?;
    let wheel = read_small(&mut z, &format!("{di}/WHEEL"), label)?
        .ok_or_else(|| PackageError(format!("{label}: the wheel has no {di}/WHEEL")))?;
    let wheel = parse_metadata_like(&wheel);
    match wheel.get("wheel-version") {
        Some(v) if v.split('.').next() == Some("1") => {}
        v => {
            return err(format!(
                "{label}: Wheel-Version {} is not supported (1.x is)",
                v.map(String::as_str).unwrap_or("(none)")
            ))
        }
    }
    let scripts = match read_small(&mut z, &format!("{di}/entry_points.txt"), label)? {
        Some(d) => parse_entry_points(&d, label)?,
        None => Vec::new(),
    };
    let declared: u64 = (0..z.len())
        .filter_map(|i| z.by_index_raw(i).ok().map(|e| e.size()))
        .fold(0u64, |a, b| a.saturating_add(b));
    if declared > MAX_UNPACKED {
        return err(format!(
            "{label} unpacks to more than {} GiB: refused",
            MAX_UNPACKED >> 30
        ));
    }
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut seen = BTreeSet::new();
    let mut new_record = String::new();
    let mut destinations: BTreeSet<String> = [
        format!("{SITE_PACKAGES}/{di}/RECORD"),
        format!("{SITE_PACKAGES}/{di}/INSTALLER"),
        format!("{SITE_PACKAGES}/{di}/REQUESTED"),
    ]
    .into();
    let own = [
        format!("{di}/RECORD"),
        format!("{di}/INSTALLER"),
        format!("{di}/REQUESTED"),
    ];
    for i in 0..z.len() {
        let (entry, is_dir) = entry_name(&mut z, i, label)?;
        if is_dir {
            continue;
        }
        if !seen.insert(entry.clone()) {
            return err(format!(
                "{label}: '{entry}' appears twice in the wheel: refused"
            ));
        }
        let signature = entry == format!("{di}/RECORD.jws") || entry == format!("{di}/RECORD.p7s");
        if own.contains(&entry) {
            continue;
        }
        // Where the entry goes below the root: site-packages, or for
        // `.data/KIND/...` the place pip puts KIND. Scripts of `.data`
        // are host programs with a #! line: they are not installed.
        let to = match entry.strip_prefix(&format!("{data_dir}/")) {
            Some(rest) => {
                let (kind, rel) = rest.split_once('/').unwrap_or((rest, ""));
                if rel.is_empty() {
                    return err(format!(
                        "{label}: unexpected '{entry}' in the wheel: refused"
                    ));
                }
                match kind {
                    "purelib" | "platlib" => format!("{SITE_PACKAGES}/{rel}"),
                    "data" => format!("{PREFIX}/{rel}"),
                    "headers" => format!("{PREFIX}/include/python3.13/{name}/{rel}"),
                    "scripts" => {
                        skipped.push(entry.clone());
                        continue;
                    }
                    _ => {
                        return err(format!(
                            "{label}: '{entry}' is in an unknown .data directory: refused"
                        ))
                    }
                }
            }
            None => format!("{SITE_PACKAGES}/{entry}"),
        };
        check_path(&to)
            .map_err(|_| PackageError(format!("{label}: unsafe path '{entry}': refused")))?;
        // Two entries must not land on one file (`x.py` and
        // `.data/purelib/x.py`, or pynbox's own dist-info files).
        if !destinations.insert(to.clone()) {
            return err(format!(
                "{label}: two entries would both install {to}: refused"
            ));
        }
        let mut e = z
            .by_index(i)
            .map_err(|e| PackageError(format!("{label}: reading '{entry}': {e}")))?;
        let size = e.size();
        if let Some(parent) = Path::new(&to).parent() {
            stage
                .create_dir_all(parent)
                .map_err(|err| PackageError(format!("{label}: staging '{entry}': {err}")))?;
        }
        let mut out = stage
            .create(&to)
            .map_err(|err| PackageError(format!("{label}: staging '{entry}': {err}")))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0u64;
        let mut limited = (&mut e).take(size.saturating_add(1));
        loop {
            let k = limited
                .read(&mut buf)
                .map_err(|err| PackageError(format!("{label}: reading '{entry}': {err}")))?;
            if k == 0 {
                break;
            }
            n += k as u64;
            if n > size {
                return err(format!(
                    "{label}: '{entry}' is larger than the zip says: refused"
                ));
            }
            h.update(&buf[..k]);
            out.write_all(&buf[..k])
                .map_err(|err| PackageError(format!("{label}: staging '{entry}': {err}")))?;
        }
        if n != size {
            return err(format!(
                "{label}: '{entry}' is shorter than the zip says: refused"
            ));
        }
        let digest = h.finalize();
        if !signature {
            match record.get(&entry) {
                Some(r) if r == &format!("sha256={}", record_hash(&digest)) => {}
                Some(_) => {
                    return err(format!(
                        "{label}: '{entry}' does not match its hash in RECORD: the wheel is corrupt or was tampered with; nothing was installed"
                    ))
                }
                None => {
                    return err(format!(
                        "{label}: '{entry}' is not listed in RECORD: refused, nothing was installed"
                    ))
                }
            }
        }
        let rel = record_path(&to);
        new_record.push_str(&format!(
            "{},sha256={},{n}\n",
            csv(&rel),
            record_hash(&digest)
        ));
        files.push((
            FileEntry {
                path: format!("root/{to}"),
                size: n,
                sha256: hex::encode(digest),
            },
            to,
        ));
    }
    let mut extra = vec![(format!("{di}/INSTALLER"), b"pynbox\n".to_vec())];
    if requested {
        extra.push((format!("{di}/REQUESTED"), Vec::new()));
    }
    for (p, data) in &extra {
        new_record.push_str(&format!(
            "{},sha256={},{}\n",
            csv(p),
            record_hash(&Sha256::digest(data)),
            data.len()
        ));
    }
    new_record.push_str(&format!("{},,\n", csv(&format!("{di}/RECORD"))));
    extra.push((format!("{di}/RECORD"), new_record.into_bytes()));
    for (p, data) in extra {
        let to = format!("{SITE_PACKAGES}/{p}");
        stage
            .write(&to, &data)
            .map_err(|e| PackageError(format!("{label}: staging {p}: {e}")))?;
        files.push((
            FileEntry {
                path: format!("root/{to}"),
                size: data.len() as u64,
                sha256: hex::encode(Sha256::digest(&data)),
            },
            to,
        ));
    }
    Ok(Staged {
        files,
        scripts,
        skipped,
    })
}

/// A path below the root as RECORD gives it: relative to site-packages.
fn record_path(to: &str) -> String {
    match to.strip_prefix(&format!("{SITE_PACKAGES}/")) {
        Some(r) => r.to_string(),
        None => format!(
            "../../../{}",
            to.strip_prefix(&format!("{PREFIX}/")).unwrap_or(to)
        ),
    }
}

fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `Key: value` lines (WHEEL), keys lowercased.
fn parse_metadata_like(data: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(data)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_hashes_are_urlsafe_base64_without_padding() {
        // sha256 of "" as pip writes it.
        assert_eq!(
            record_hash(&Sha256::digest(b"")),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
        let r = parse_record(
            b"a/b.py,sha256=x,3\n\"c,d.py\",sha256=y,1\ne/RECORD,,\n",
            "w",
        )
        .unwrap();
        assert_eq!(r["a/b.py"], "sha256=x");
        assert_eq!(r["c,d.py"], "sha256=y");
        assert_eq!(r["e/RECORD"], "");
        assert!(parse_record(b"a,1\na,2\n", "w").is_err());
    }

    #[test]
    fn metadata_and_entry_points_are_read() {
        let m = parse_metadata(
            b"Metadata-Version: 2.1\nName: Foo\nVersion: 1.0\nRequires-Dist: bar>=1; extra == 'x'\nRequires-Python: >=3.8\n\nRequires-Dist: not-a-header\n",
        )
        .unwrap();
        assert_eq!(m.name, "Foo");
        assert_eq!(m.requires_dist, ["bar>=1; extra == 'x'"]);
        assert_eq!(m.requires_python.as_deref(), Some(">=3.8"));
        let eps = parse_entry_points(
            b"[console_scripts]\nhello = hello.cli:main [extra]\n[other]\nx = y:z\n",
            "w",
        )
        .unwrap();
        assert_eq!(
            eps,
            [EntryPoint {
                name: "hello".into(),
                module: "hello.cli".into(),
                attr: "main".into()
            }]
        );
        for bad in [
            "[console_scripts]\nx = os;import:y\n",
            "[console_scripts]\n../x = a:b\n",
            "[console_scripts]\nrun = a:b\n",
            "[console_scripts]\nx = a:b'c\n",
            "[console_scripts]\nx = a\n",
        ] {
            assert!(parse_entry_points(bad.as_bytes(), "w").is_err(), "{bad}");
        }
        assert_eq!(
            record_path("python/lib/python3.13/site-packages/a/b.py"),
            "a/b.py"
        );
        assert_eq!(record_path("python/share/x"), "../../../share/x");
    }
}
