//! The simple repository API (PEP 503 HTML, PEP 691 JSON) and local
//! `--find-links` directories: which files a distribution has, and
//! downloads checked against the index's sha256 into a cache keyed by it.
//!
//! Everything an index sends is hostile input: pages are bounded in size,
//! every URL is checked for its transport like `pynbox install`'s
//! repositories (https, or plain http only to loopback unless
//! `--allow-insecure-http`), a remote file without a sha256 is never used,
//! and a download is hashed while it is written and moved into the cache
//! only when the hash matches, so nothing unchecked is ever opened.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::download::{copy_hashed, Hashing};
use crate::install::{random_hex, Repo};
use crate::packages::{self, PackageError, Result};

/// The largest index page (JSON or HTML) read.
pub const MAX_PAGE: u64 = 64 << 20;
/// The largest wheel downloaded.
pub const MAX_WHEEL: u64 = 512 << 20;
/// The largest core-metadata file (PEP 658) downloaded.
pub const MAX_METADATA: u64 = 16 << 20;
/// The most files one page may list.
const MAX_FILES: usize = 200_000;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(PackageError(msg.into()))
}

/// One file a distribution offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub filename: String,
    /// Absolute URL (remote), or `None` for a local file.
    pub url: Option<String>,
    /// A local `--find-links` file.
    pub local: Option<PathBuf>,
    /// Lowercase hex; always present for remote files that are used.
    pub sha256: Option<String>,
    pub requires_python: Option<String>,
    pub yanked: bool,
    /// PEP 658/714: the metadata is served at `URL.metadata`, with this
    /// sha256.
    pub metadata_sha256: Option<String>,
    pub size: Option<u64>,
    /// The index (or find-links directory) that offered it.
    pub source: String,
}

/// Where distributions come from.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub indexes: Vec<String>,
    pub find_links: Vec<PathBuf>,
    pub allow_insecure_http: bool,
}

pub const PYPI: &str = "https://pypi.org/simple";

/// The download cache: `$PYNBOX_PYPI_CACHE`, else
/// `$XDG_CACHE_HOME/pynbox/pypi`, else `~/.cache/pynbox/pypi`. Files are
/// kept under their sha256, so a cached file is the file the lock names.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PYNBOX_PYPI_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("pynbox").join("pypi")
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Sources {
    /// Every file offered for `name` (normalized) by every index and
    /// find-links directory, as pip merges them.
    pub fn files(&self, name: &str) -> Result<Vec<FileInfo>> {
        let mut out = Vec::new();
        for index in &self.indexes {
            out.extend(self.index_files(index, name)?);
        }
        for dir in &self.find_links {
            out.extend(local_files(dir, name)?);
        }
        Ok(out)
    }

    fn index_files(&self, index: &str, name: &str) -> Result<Vec<FileInfo>> {
        let page = format!("{}/{name}/", index.trim_end_matches('/'));
        let agent = Repo::agent(&page, self.allow_insecure_http)?;
        let mut last = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(300 << attempt));
            }
            let resp = agent
                .get(&page)
                .header(
                    "Accept",
                    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01",
                )
                .call();
            let mut resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            match resp.status().as_u16() {
                200 => {}
                // Not on this index: another may have it.
                404 => return Ok(Vec::new()),
                s => {
                    last = format!("HTTP status {s}");
                    continue;
                }
            }
            let json = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("json"));
            let mut body = Vec::new();
            resp.body_mut()
                .as_reader()
                .take(MAX_PAGE + 1)
                .read_to_end(&mut body)
                .map_err(|e| PackageError(format!("reading {page}: {e}")))?;
            if body.len() as u64 > MAX_PAGE {
                return err(format!(
                    "{page} is larger than {} MiB: refused",
                    MAX_PAGE >> 20
                ));
            }
            let base = url::Url::parse(&page)
                .map_err(|e| PackageError(format!("'{page}' is not a valid URL: {e}")))?;
            let files = if json {
                parse_json(&body, &base, index)?
            } else {
                parse_html(&String::from_utf8_lossy(&body), &base, index)?
            };
            return Ok(files);
        }
        err(format!("cannot read the index page {page}: {last}"))
    }

    /// A local path holding the verified file, from the cache or
    /// downloaded into it. `offline` forbids the network.
    pub fn fetch(&self, f: &FileInfo, offline: bool) -> Result<PathBuf> {
        let Some(sha) = f.sha256.as_deref().filter(|s| is_hex64(s)) else {
            return err(format!(
                "{}: the index gives no sha256: refused",
                f.filename
            ));
        };
        let files = cache_dir().join("files");
        let cached = files.join(sha);
        if cached_ok(&cached, sha) {
            return Ok(cached);
        }
        std::fs::create_dir_all(&files)
            .map_err(|e| PackageError(format!("creating {}: {e}", files.display())))?;
        let mut tmp = files.join(format!(".{sha}.{}.part", random_hex()));
        let r = if let Some(local) = &f.local {
            std::fs::File::open(local)
                .map_err(|e| PackageError(format!("opening {}: {e}", local.display())))
                .and_then(|mut src| {
                    let mut out = create(&tmp)?;
                    copy_hashed(
                        &mut src,
                        &mut out,
                        &mut Hashing::new(),
                        MAX_WHEEL,
                        &f.filename,
                        None,
                    )
                })
        } else {
            let Some(url) = &f.url else {
                return err(format!("{}: no URL", f.filename));
            };
            if offline {
                return err(format!(
                    "{} ({sha}) is not in the cache {} and --no-index forbids downloading it",
                    f.filename,
                    files.display()
                ));
            }
            // A download cut short is kept as `.SHA.part` and resumed by the
            // next attempt, in this run or a later one; a file that another
            // pynbox is downloading right now (it holds the lock) is
            // downloaded again beside it.
            let part = files.join(format!(".{sha}.part"));
            let out = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&part)
                .ok()
                .filter(|f| f.try_lock().is_ok());
            let mut out = match out {
                Some(o) => {
                    tmp = part;
                    o
                }
                None => create(&tmp)?,
            };
            download(url, &mut out, f, self.allow_insecure_http)
        };
        let got = match r {
            Ok(h) => h,
            // The shared partial download is kept to be resumed.
            Err(e)
                if e.0.contains("run the install again")
                    && tmp.ends_with(format!(".{sha}.part")) =>
            {
                return Err(e)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if got != sha {
            let _ = std::fs::remove_file(&tmp);
            return err(format!(
                "{} does not match the sha256 the index gives ({sha}, got {got}): it is corrupt or was tampered with; nothing was installed",
                f.filename
            ));
        }
        std::fs::rename(&tmp, &cached)
            .map_err(|e| PackageError(format!("caching {}: {e}", f.filename)))?;
        Ok(cached)
    }

    /// The PEP 658 metadata of a file that advertises it, checked
    /// against its sha256 (cached under it).
    pub fn fetch_metadata(&self, f: &FileInfo, offline: bool) -> Result<Option<Vec<u8>>> {
        let (Some(sha), Some(url)) = (f.metadata_sha256.as_deref(), f.url.as_deref()) else {
            return Ok(None);
        };
        let dir = cache_dir().join("metadata");
        let cached = dir.join(sha);
        if cached_ok(&cached, sha) {
            return std::fs::read(&cached)
                .map(Some)
                .map_err(|e| PackageError(format!("reading {}: {e}", cached.display())));
        }
        if offline {
            return Ok(None);
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| PackageError(format!("creating {}: {e}", dir.display())))?;
        let tmp = dir.join(format!(".{sha}.{}.part", random_hex()));
        let meta = FileInfo {
            filename: format!("{}.metadata", f.filename),
            size: None,
            ..f.clone()
        };
        let got = create(&tmp)
            .and_then(|mut out| {
                download(
                    &format!("{url}.metadata"),
                    &mut out,
                    &meta,
                    self.allow_insecure_http,
                )
            })
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })?;
        if got != sha {
            let _ = std::fs::remove_file(&tmp);
            return err(format!(
                "the metadata of {} does not match the sha256 the index gives: refused",
                f.filename
            ));
        }
        std::fs::rename(&tmp, &cached)
            .map_err(|e| PackageError(format!("caching metadata: {e}")))?;
        std::fs::read(&cached)
            .map(Some)
            .map_err(|e| PackageError(format!("reading {}: {e}", cached.display())))
    }
}

/// Whether a cache entry exists and still has its sha256 (a damaged one is
/// removed and fetched again).
fn cached_ok(path: &Path, sha: &str) -> bool {
    match packages::sha256_file(path) {
        Ok((h, _)) if h == sha => true,
        Ok(_) => {
            let _ = std::fs::remove_file(path);
            false
        }
        Err(_) => false,
    }
}

/// A new, empty file, readable too (a download hashes what it holds).
fn create(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| PackageError(format!("creating {}: {e}", path.display())))
}

/// Downloads `f` from `url` into `out`, resuming what `out` holds of a
/// download cut short (see [`crate::download::resumable`]).
fn download(
    url: &str,
    out: &mut std::fs::File,
    f: &FileInfo,
    allow_insecure_http: bool,
) -> Result<String> {
    let agent = Repo::agent(url, allow_insecure_http)?;
    let limit = if f.filename.ends_with(".metadata") {
        MAX_METADATA
    } else {
        MAX_WHEEL
    };
    crate::download::resumable(&agent, url, out, &f.filename, limit, f.size)
}

#[derive(Deserialize)]
struct JsonPage {
    #[serde(default)]
    meta: Option<JsonMeta>,
    files: Vec<JsonFile>,
}

#[derive(Deserialize)]
struct JsonMeta {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
}

#[derive(Deserialize)]
struct JsonFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
    #[serde(default, rename = "requires-python")]
    requires_python: Option<String>,
    #[serde(default)]
    yanked: Option<BoolOr>,
    #[serde(default, rename = "core-metadata")]
    core_metadata: Option<BoolOr>,
    #[serde(default, rename = "dist-info-metadata")]
    dist_info_metadata: Option<BoolOr>,
    #[serde(default)]
    size: Option<u64>,
}

/// `true`/`false`, a reason (yanked), or a map of hashes (metadata).
#[derive(Deserialize)]
#[serde(untagged)]
enum BoolOr {
    Bool(bool),
    // A yank's reason: read to tell it from the other forms, not shown.
    Text(#[allow(dead_code)] String),
    Hashes(BTreeMap<String, String>),
}

fn resolve_url(base: &url::Url, href: &str) -> Result<String> {
    base.join(href)
        .map(|u| u.to_string())
        .map_err(|e| PackageError(format!("the index gives a bad URL '{href}': {e}")))
}

fn parse_json(body: &[u8], base: &url::Url, index: &str) -> Result<Vec<FileInfo>> {
    let page: JsonPage = serde_json::from_slice(body)
        .map_err(|e| PackageError(format!("{base} is not a valid PEP 691 page: {e}")))?;
    if let Some(v) = page.meta.and_then(|m| m.api_version) {
        if !v.starts_with("1.") {
            return err(format!(
                "{base} speaks simple API version {v}; pynbox reads 1.x"
            ));
        }
    }
    if page.files.len() > MAX_FILES {
        return err(format!("{base} lists more than {MAX_FILES} files: refused"));
    }
    let mut out = Vec::new();
    for f in page.files {
        let (url, fragment_sha) = split_fragment(&resolve_url(base, &f.url)?);
        let sha256 = f
            .hashes
            .get("sha256")
            .map(|s| s.to_ascii_lowercase())
            .or(fragment_sha);
        let meta = f.core_metadata.or(f.dist_info_metadata);
        let metadata_sha256 = match meta {
            Some(BoolOr::Hashes(h)) => h.get("sha256").map(|s| s.to_ascii_lowercase()),
            _ => None,
        };
        out.push(FileInfo {
            filename: f.filename,
            url: Some(url),
            local: None,
            sha256: sha256.filter(|s| is_hex64(s)),
            requires_python: f.requires_python,
            yanked: match f.yanked {
                Some(BoolOr::Bool(b)) => b,
                Some(BoolOr::Text(_)) => true,
                _ => false,
            },
            metadata_sha256: metadata_sha256.filter(|s| is_hex64(s)),
            size: f.size,
            source: index.to_string(),
        });
    }
    Ok(out)
}

/// A URL without its fragment, and the sha256 the fragment gives
/// (`#sha256=...`), if any.
fn split_fragment(url: &str) -> (String, Option<String>) {
    match url.split_once('#') {
        Some((u, frag)) => (
            u.to_string(),
            frag.strip_prefix("sha256=").map(|h| h.to_ascii_lowercase()),
        ),
        None => (url.to_string(), None),
    }
}

/// The anchors of a PEP 503 page. A small scanner rather than an HTML
/// parser: the format is a list of `<a>` elements whose attributes carry
/// everything, and anything else on the page is ignored.
fn parse_html(body: &str, base: &url::Url, index: &str) -> Result<Vec<FileInfo>> {
    let mut out = Vec::new();
    let lower = body.to_ascii_lowercase();
    let mut pos = 0;
    while let Some(i) = lower[pos..].find("<a") {
        let start = pos + i + 2;
        pos = start;
        // `<a` followed by whitespace: not `<abbr>`.
        if !lower[start..].starts_with(|c: char| c.is_ascii_whitespace()) {
            continue;
        }
        let Some(end) = find_tag_end(&body[start..]) else {
            break;
        };
        let attrs = parse_attrs(&body[start..start + end]);
        let text_start = start + end + 1;
        let Some(close) = lower[text_start..].find("</a") else {
            break;
        };
        let text = unescape(body[text_start..text_start + close].trim());
        pos = text_start + close;
        let Some(href) = attrs.get("href") else {
            continue;
        };
        if out.len() == MAX_FILES {
            return err(format!("{base} lists more than {MAX_FILES} files: refused"));
        }
        let (url, sha256) = split_fragment(&resolve_url(base, href)?);
        let filename = if text.is_empty() {
            url.rsplit('/').next().unwrap_or_default().to_string()
        } else {
            text
        };
        let meta = attrs
            .get("data-core-metadata")
            .or(attrs.get("data-dist-info-metadata"));
        out.push(FileInfo {
            filename,
            url: Some(url),
            local: None,
            sha256: sha256.filter(|s| is_hex64(s)),
            requires_python: attrs.get("data-requires-python").cloned(),
            yanked: attrs.contains_key("data-yanked"),
            metadata_sha256: meta
                .and_then(|m| m.strip_prefix("sha256="))
                .map(|s| s.to_ascii_lowercase())
                .filter(|s| is_hex64(s)),
            size: None,
            source: index.to_string(),
        });
    }
    Ok(out)
}

/// The offset of the `>` that ends a tag, outside quoted values.
fn find_tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_attrs(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        let ns = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' && b[i] != b'/' {
            i += 1;
        }
        if ns == i {
            i += 1;
            continue;
        }
        let name = s[ns..i].to_ascii_lowercase();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let q = b[i];
                let vs = i + 1;
                i = vs;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                value = unescape(&s[vs..i.min(b.len())]);
                i += 1;
            } else {
                let vs = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                value = unescape(&s[vs..i]);
            }
        }
        out.entry(name).or_insert(value);
    }
    out
}

/// HTML character references in attribute values and text.
fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        // A reference is short: look for its `;` among the next bytes
        // (by byte, as a cut there could split a character).
        let Some(semi) = rest.bytes().take(12).position(|b| b == b';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let ent = &rest[1..semi];
        let c = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => ent
                .strip_prefix("#x")
                .or_else(|| ent.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The files of `name` in a local directory (`--find-links DIR`), hashed
/// here: the directory is the user's own.
fn local_files(dir: &Path, name: &str) -> Result<Vec<FileInfo>> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| PackageError(format!("--find-links {}: {e}", dir.display())))?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Ok(filename) = e.file_name().into_string() else {
            continue;
        };
        let matches = super::target::WheelName::parse(&filename)
            .map(|w| w.name)
            .or_else(|| super::target::sdist_name(&filename).map(|s| s.0))
            .is_some_and(|n| n == name);
        if !matches || !e.path().is_file() {
            continue;
        }
        let (sha, size) = packages::sha256_file(&e.path())
            .map_err(|err| PackageError(format!("reading {}: {err}", e.path().display())))?;
        out.push(FileInfo {
            filename,
            url: None,
            local: Some(e.path()),
            sha256: Some(sha),
            requires_python: None,
            yanked: false,
            metadata_sha256: None,
            size: Some(size),
            source: dir.display().to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_pages_are_read_tolerantly() {
        let base = url::Url::parse("https://example.org/simple/foo/").unwrap();
        let sha = "a".repeat(64);
        let page = format!(
            r#"<!DOCTYPE html><html><body><h1>Links for foo</h1>
            <abbr>x</abbr>
            <a href="../../files/foo-1.0-py3-none-any.whl#sha256={sha}" data-requires-python="&gt;=3.8">foo-1.0-py3-none-any.whl</a><br/>
            <A HREF='https://cdn.example.org/foo-2.0.tar.gz' data-yanked="">foo-2.0.tar.gz</A>
            <a href="foo-3.0-py3-none-any.whl#sha256={sha}" data-core-metadata="sha256={sha}">foo-3.0-py3-none-any.whl</a>
            </body></html>"#
        );
        let files = parse_html(&page, &base, "idx").unwrap();
        assert_eq!(files.len(), 3, "{files:?}");
        assert_eq!(
            files[0].url.as_deref(),
            Some("https://example.org/files/foo-1.0-py3-none-any.whl")
        );
        assert_eq!(files[0].sha256.as_deref(), Some(sha.as_str()));
        assert_eq!(files[0].requires_python.as_deref(), Some(">=3.8"));
        assert!(!files[0].yanked);
        assert!(files[1].yanked);
        assert_eq!(files[1].sha256, None);
        assert_eq!(files[2].metadata_sha256.as_deref(), Some(sha.as_str()));
        assert_eq!(unescape("a&lt;b&#62;c&#x3D;&bogus;"), "a<b>c=&bogus;");
        assert_eq!(unescape("&ééééééééé;"), "&ééééééééé;");
    }

    #[test]
    fn json_pages_are_read() {
        let base = url::Url::parse("https://example.org/simple/foo/").unwrap();
        let sha = "B".repeat(64);
        let page = serde_json::json!({
            "meta": {"api-version": "1.1"},
            "name": "foo",
            "files": [
                {"filename": "foo-1.0-py3-none-any.whl", "url": "/f/foo-1.0-py3-none-any.whl",
                 "hashes": {"sha256": sha}, "requires-python": ">=3.14", "yanked": "broken",
                 "core-metadata": {"sha256": sha}, "size": 10},
                {"filename": "foo-0.9.tar.gz", "url": "foo-0.9.tar.gz", "hashes": {}},
            ]
        });
        let files = parse_json(page.to_string().as_bytes(), &base, "idx").unwrap();
        assert_eq!(
            files[0].url.as_deref(),
            Some("https://example.org/f/foo-1.0-py3-none-any.whl")
        );
        assert_eq!(files[0].sha256, Some("b".repeat(64)));
        assert!(files[0].yanked);
        assert_eq!(files[0].size, Some(10));
        assert_eq!(files[1].sha256, None);
        let v2 = serde_json::json!({"meta": {"api-version": "2.0"}, "files": []});
        assert!(parse_json(v2.to_string().as_bytes(), &base, "i").is_err());
    }
}
