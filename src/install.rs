//! Installs: putting packages from a repository into a sandbox directory
//! DEST, with receipts, verification and removal.
//!
//! DEST holds `bin/` (the runner and commands), `root/` (the sandbox's `/`),
//! `packages/NAME.installed` (receipts) and `cache/` (compiled machine
//! code). A receipt is written last: a package without one is not installed,
//! whatever files an interrupted install left, and the next install cleans
//! those up.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cap_std::fs::Dir;

use crate::packages::{
    self, check_name, check_version, compare_versions, parse_archive_name, sha256_hex,
    unpack_checked, Command, FileEntry, Index, IndexEntry, PackageError, Receipt, Result, RUNNER,
};

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(PackageError(msg.into()))
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> PackageError {
    move |e| PackageError(format!("{what}: {e}"))
}

/// Where packages come from: a directory (such as `build/packages`) or an
/// http(s) URL serving the same files.
#[derive(Clone, Debug)]
pub enum Repo {
    Dir(PathBuf),
    /// An `https://` URL, or an `http://` one. Over plain http anyone on
    /// the network path can serve their own index and archives, so it is
    /// refused for any host but a loopback address (127.0.0.0/8, ::1,
    /// `localhost`) unless `allow_insecure_http` is set
    /// (`--allow-insecure-http`).
    Url {
        url: String,
        allow_insecure_http: bool,
    },
}

impl Repo {
    /// A directory, or a URL when `s` starts with `http://` or `https://`.
    pub fn parse(s: &str, allow_insecure_http: bool) -> Repo {
        if s.starts_with("http://") || s.starts_with("https://") {
            Repo::Url {
                url: s.trim_end_matches('/').to_string(),
                allow_insecure_http,
            }
        } else {
            Repo::Dir(PathBuf::from(s))
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Repo::Dir(d) => d.display().to_string(),
            Repo::Url { url, .. } => url.clone(),
        }
    }

    /// The HTTP client for a URL repository, after checking its transport:
    /// https, plain http to a loopback address, or plain http explicitly
    /// allowed. Redirects stay on https from an https repository; from a
    /// plain-http one they are followed only when it is explicitly allowed.
    pub(crate) fn agent(url: &str, allow_insecure_http: bool) -> Result<ureq::Agent> {
        let uri: ureq::http::Uri = url
            .parse()
            .map_err(|e| PackageError(format!("'{url}' is not a valid URL: {e}")))?;
        let host = uri.host().unwrap_or_default();
        let mut config = ureq::Agent::config_builder();
        if let Some(roots) = root_certs() {
            config = config.tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build());
        }
        let config = config
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_body(Some(Duration::from_secs(60)))
            .http_status_as_error(false);
        let config = match uri.scheme_str() {
            _ if allow_insecure_http => config,
            Some("https") => config.https_only(true),
            Some("http") if is_loopback_host(host) => config.max_redirects(0),
            Some("http") => {
                return err(format!(
                    "refused the plain-http repository {url}: over http anyone on the network path can serve their own packages; use an https URL, or pass --allow-insecure-http if you trust the network"
                ))
            }
            _ => return err(format!("'{url}': a repository URL starts with https:// or http://")),
        };
        Ok(config.build().into())
    }

    /// What the repository offers. A directory without `index.json` is
    /// scanned (its archives are then checked by their manifests only).
    pub fn index(&self) -> Result<Index> {
        match self {
            Repo::Dir(d) => {
                if !d.is_dir() {
                    return err(format!(
                        "package repository '{}' does not exist: build packages with `pynbox build PKG` or give --repo DIR|URL",
                        d.display()
                    ));
                }
                let idx = d.join("index.json");
                if idx.exists() {
                    let mut data = Vec::new();
                    std::fs::File::open(&idx)
                        .and_then(|f| f.take(packages::MAX_INDEX_FILE).read_to_end(&mut data))
                        .map_err(io_err(format!("reading {}", idx.display())))?;
                    return serde_json::from_slice(&data).map_err(|e| {
                        PackageError(format!("{} is not a valid index: {e}", idx.display()))
                    });
                }
                let mut index = Index::default();
                for e in std::fs::read_dir(d)
                    .map_err(io_err(format!("reading {}", d.display())))?
                    .flatten()
                {
                    let file = e.file_name().to_string_lossy().into_owned();
                    if let Some((name, version)) = parse_archive_name(&file) {
                        index.packages.push(IndexEntry {
                            name,
                            version,
                            size: e.metadata().map(|m| m.len()).unwrap_or(0),
                            sha256: String::new(),
                            file,
                        });
                    }
                }
                Ok(index)
            }
            Repo::Url {
                url: u,
                allow_insecure_http,
            } => {
                let agent = Repo::agent(u, *allow_insecure_http)?;
                let url = format!("{u}/index.json");
                let body = http_get_small(&agent, &url)?;
                serde_json::from_slice(&body)
                    .map_err(|e| PackageError(format!("{url} is not a valid package index: {e}")))
            }
        }
    }

    /// A local path to the archive of `entry`, downloaded into `downloads`
    /// if the repository is remote, and checked against the index's hash.
    fn fetch(&self, entry: &IndexEntry, downloads: &Path) -> Result<PathBuf> {
        if entry.file != format!("{}.{}.tar.zst", entry.name, entry.version) {
            return err(format!(
                "the index names an unexpected file '{}'",
                entry.file
            ));
        }
        // The size bounds the download: none (0) or more than a package
        // may hold is refused, never taken as "no limit".
        if entry.size == 0 || entry.size > packages::MAX_ARCHIVE {
            return err(format!(
                "the repository's index gives no size or an impossible one ({}) for {}: refused; rebuild the index with `pynbox build`",
                entry.size, entry.file
            ));
        }
        let path = match self {
            Repo::Dir(d) => d.join(&entry.file),
            Repo::Url {
                url: u,
                allow_insecure_http,
            } => {
                let agent = Repo::agent(u, *allow_insecure_http)?;
                std::fs::create_dir_all(downloads)
                    .map_err(io_err("creating the download directory"))?;
                let dest = downloads.join(&entry.file);
                // Fetched already in this install (to read its manifest):
                // it is checked below like a fresh download.
                if !dest.exists() {
                    download(&agent, &format!("{u}/{}", entry.file), &dest, entry.size)?;
                }
                dest
            }
        };
        if !entry.sha256.is_empty() {
            let (sha256, _) = packages::sha256_file(&path)
                .map_err(io_err(format!("reading {}", path.display())))?;
            if sha256 != entry.sha256 {
                if matches!(self, Repo::Url { .. }) {
                    let _ = std::fs::remove_file(&path);
                }
                return err(format!(
                    "{} does not match the sha256 in the repository's index: it is corrupt or was tampered with; nothing was installed",
                    entry.file
                ));
            }
        }
        Ok(path)
    }
}

/// The certificate authorities of `SSL_CERT_FILE` (a PEM bundle), when
/// it is set, as curl, pip and git honour it: networks that inspect TLS
/// with an authority of their own set it. Otherwise the web PKI roots
/// built into pynbox.
fn root_certs() -> Option<ureq::tls::RootCerts> {
    let path = std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty())?;
    let mut pem = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(16 << 20).read_to_end(&mut pem))
        .ok()?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    (!certs.is_empty()).then(|| ureq::tls::RootCerts::new_with_certs(&certs))
}

/// Whether `host` (as a URL gives it) is a loopback address: 127.0.0.0/8,
/// ::1 (or ::ffff:127.x.y.z) or `localhost`.
fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") || h.eq_ignore_ascii_case("localhost.") {
        return true;
    }
    match h.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => a.is_loopback(),
        Ok(std::net::IpAddr::V6(a)) => {
            a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

fn http_get_small(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>> {
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500 << attempt));
        }
        match agent.get(url).call() {
            Ok(mut r) if r.status() == 200 => {
                let mut body = Vec::new();
                r.body_mut()
                    .as_reader()
                    .take(packages::MAX_INDEX_FILE)
                    .read_to_end(&mut body)
                    .map_err(io_err(format!("reading {url}")))?;
                return Ok(body);
            }
            Ok(r) if r.status() == 404 => {
                return err(format!(
                    "{url}: not found (404): is this a pynbox package repository?"
                ))
            }
            Ok(r) => last = format!("HTTP status {}", r.status()),
            Err(e) => last = e.to_string(),
        }
    }
    err(format!("cannot fetch {url}: {last}"))
}

/// Downloads `url` to `dest` through `dest.part`, which keeps what a
/// download cut short got so that the next attempt (in this install or the
/// next) resumes it (see [`crate::download::resumable`]). `expected` is the
/// size the index gives (never 0): more is refused.
fn download(agent: &ureq::Agent, url: &str, dest: &Path, expected: u64) -> Result<()> {
    let part = dest.with_extension("zst.part");
    let name = dest.file_name().unwrap().to_string_lossy().into_owned();
    let mut out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&part)
        .map_err(io_err("opening the partial download"))?;
    match crate::download::resumable(agent, url, &mut out, &name, expected, Some(expected)) {
        Ok(_) => std::fs::rename(&part, dest).map_err(io_err("finishing the download")),
        // Kept to be resumed.
        Err(e) if e.0.contains("run the install again") => Err(e),
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

/// A one-line progress display on stderr: redrawn on a terminal, a line
/// per quarter otherwise.
pub struct Progress {
    label: String,
    total: u64,
    tty: bool,
    last_draw: Instant,
    last_quarter: u64,
}

impl Progress {
    pub fn new(label: &str, total: u64) -> Progress {
        Progress {
            label: label.to_string(),
            total,
            tty: std::io::stderr().is_terminal(),
            last_draw: Instant::now() - Duration::from_secs(1),
            last_quarter: 0,
        }
    }

    pub fn update(&mut self, done: u64) {
        if self.tty {
            if self.last_draw.elapsed() >= Duration::from_millis(100) {
                self.last_draw = Instant::now();
                let pct = (done * 100).checked_div(self.total).unwrap_or(0);
                eprint!("\r  {} {pct:>3}% ({} MiB)", self.label, done >> 20);
            }
        } else if self.total > 0 && done <= self.total {
            let q = done * 4 / self.total;
            if q > self.last_quarter && q < 4 {
                self.last_quarter = q;
                eprintln!("  {} {}%", self.label, q * 25);
            }
        }
    }

    pub fn finish(&mut self) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
    }
}

/// An install directory.
pub struct Dest {
    path: PathBuf,
    pub(crate) dir: Dir,
    options: InstallOptions,
}

/// How an install is made, for programs that embed pynbox; the CLI uses
/// the defaults.
#[derive(Clone, Debug, Default)]
pub struct InstallOptions {
    /// What becomes `DEST/bin/pynbox`, the runner `bin/run` calls.
    pub runner: Runner,
    /// No progress display or notices on stderr ("compiling ...",
    /// "pre-initialising ..."); outcome lines still go to the log.
    pub quiet: bool,
}

/// The executable an install copies to `DEST/bin/pynbox`.
#[derive(Clone, Debug, Default)]
pub enum Runner {
    /// The running executable: right for the `pynbox` CLI itself, wrong
    /// inside another program (in a Python extension it is Python).
    #[default]
    CurrentExe,
    /// This file, a `pynbox` CLI (the one a Python wheel carries).
    File(PathBuf),
    /// None: `DEST/bin/` gets no runner, `run` or `pip`, for an install
    /// used only through the library.
    Skip,
}

impl Dest {
    /// Opens (creating if needed) an install directory.
    pub fn open(path: &Path, create: bool) -> Result<Dest> {
        if create {
            std::fs::create_dir_all(path)
                .map_err(io_err(format!("creating {}", path.display())))?;
        } else if !path.join("packages").is_dir() {
            return err(format!(
                "'{}' is not a pynbox install: create one with `pynbox install {} python`",
                path.display(),
                path.display()
            ));
        }
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())
            .map_err(io_err(format!("opening {}", path.display())))?;
        for d in ["bin", "root", "packages", "cache"] {
            if create {
                dir.create_dir_all(d)
                    .map_err(io_err(format!("creating {d}")))?;
            }
        }
        Ok(Dest {
            path: path.canonicalize().unwrap_or_else(|_| path.to_path_buf()),
            dir,
            options: InstallOptions::default(),
        })
    }

    /// The same install, changed with `options` from now on.
    pub fn with_options(mut self, options: InstallOptions) -> Dest {
        self.options = options;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn receipts(&self) -> Result<Vec<Receipt>> {
        let mut out = Vec::new();
        let entries = self
            .dir
            .read_dir("packages")
            .map_err(io_err("reading packages/"))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pkg) = name.strip_suffix(".installed") {
                if let Some(r) = self.receipt(pkg)? {
                    out.push(r);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn receipt(&self, name: &str) -> Result<Option<Receipt>> {
        check_name(name)?;
        let p = format!("packages/{name}.installed");
        match self.dir.read(&p) {
            Ok(data) => serde_json::from_slice(&data).map(Some).map_err(|e| {
                PackageError(format!(
                    "receipt {p} is damaged: {e}; reinstall the package"
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => err(format!("reading {p}: {e}")),
        }
    }

    fn write_receipt(&self, r: &Receipt) -> Result<()> {
        let tmp = format!("packages/.{}.tmp", r.name);
        let json = serde_json::to_vec_pretty(r).expect("receipt serializes");
        self.dir
            .write(&tmp, json)
            .map_err(io_err("writing a receipt"))?;
        self.dir
            .rename(&tmp, &self.dir, format!("packages/{}.installed", r.name))
            .map_err(io_err("writing a receipt"))
    }

    /// Removes what an interrupted install left: staging directories and
    /// the files of a package that never got its receipt.
    pub(crate) fn recover(&self) -> Result<()> {
        if self.dir.exists(".staging") {
            self.dir
                .remove_dir_all(".staging")
                .map_err(io_err("cleaning .staging"))?;
        }
        let owned = self.owned_files(None)?;
        for e in self
            .dir
            .read_dir("packages")
            .map_err(io_err("reading packages/"))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pkg) = name.strip_suffix(".installing") {
                let data = self
                    .dir
                    .read(format!("packages/{name}"))
                    .unwrap_or_default();
                let files: Vec<String> = serde_json::from_slice(&data).unwrap_or_default();
                for f in files
                    .iter()
                    .filter(|f| !owned.contains(*f) && packages::check_path(f).is_ok())
                {
                    let _ = self.dir.remove_file(f);
                    self.prune(f);
                }
                eprintln!("  cleaned up an interrupted install of {pkg}");
                let _ = self.dir.remove_file(format!("packages/{name}"));
            }
        }
        Ok(())
    }

    /// Files owned by installed packages, other than `except`.
    pub(crate) fn owned_files(&self, except: Option<&str>) -> Result<BTreeSet<String>> {
        Ok(self
            .receipts()?
            .into_iter()
            .filter(|r| Some(r.name.as_str()) != except)
            .flat_map(|r| r.files.into_iter().map(|f| f.path))
            .collect())
    }

    /// Removes empty directories above a removed file, up to `root/`.
    pub(crate) fn prune(&self, file: &str) {
        let mut p = Path::new(file).parent();
        while let Some(d) = p {
            if d.as_os_str().is_empty() || d == Path::new("root") || d == Path::new("bin") {
                break;
            }
            if self.dir.remove_dir(d).is_err() {
                break;
            }
            p = d.parent();
        }
    }

    /// Replaces package `name`'s files with `files` (DEST-relative path,
    /// staged source), then writes its receipt.
    /// `pypi` records where a distribution from a Python package index
    /// came from (src/pypi/); it is `None` for pynbox's own packages.
    pub(crate) fn commit(
        &self,
        name: &str,
        version: &str,
        depends: &[String],
        staged: &[(FileEntry, StagedFrom)],
        pypi: Option<packages::PypiOrigin>,
    ) -> Result<()> {
        let others = self.owned_files(Some(name))?;
        if let Some((f, _)) = staged.iter().find(|(f, _)| others.contains(&f.path)) {
            let owner = self
                .receipts()?
                .into_iter()
                .find(|r| r.files.iter().any(|x| x.path == f.path))
                .map(|r| r.name)
                .unwrap_or_default();
            return err(format!(
                "{name} would overwrite {} of package {owner}: remove {owner} first",
                f.path
            ));
        }
        let old = self.receipt(name)?;
        fault_point("staged");
        // From here on the package is not installed until the new receipt
        // is written; the marker lets a later run clean up after a crash.
        let marker: Vec<&str> = staged.iter().map(|(f, _)| f.path.as_str()).collect();
        self.dir
            .write(
                format!("packages/{name}.installing"),
                serde_json::to_vec(&marker).unwrap(),
            )
            .map_err(io_err("writing the install marker"))?;
        if old.is_some() {
            self.dir
                .remove_file(format!("packages/{name}.installed"))
                .map_err(io_err("removing the old receipt"))?;
        }
        if let Some(old) = &old {
            let keep: BTreeSet<&str> = marker.iter().copied().collect();
            for f in old.files.iter().filter(|f| !keep.contains(f.path.as_str())) {
                let _ = self.dir.remove_file(&f.path);
                self.prune(&f.path);
            }
        }
        for (i, (f, from)) in staged.iter().enumerate() {
            if i == 1 {
                fault_point("commit");
            }
            if let Some(parent) = Path::new(&f.path).parent() {
                self.dir
                    .create_dir_all(parent)
                    .map_err(io_err(format!("creating {}", parent.display())))?;
            }
            match from {
                StagedFrom::Staging(rel) => self
                    .dir
                    .rename(rel, &self.dir, &f.path)
                    .map_err(io_err(format!("installing {}", f.path)))?,
                StagedFrom::Bytes(data, exec) => {
                    let tmp = format!("{}.pynbox-new", f.path);
                    self.dir
                        .write(&tmp, data)
                        .map_err(io_err(format!("writing {}", f.path)))?;
                    #[cfg(unix)]
                    if *exec {
                        use cap_std::fs::PermissionsExt;
                        self.dir
                            .set_permissions(&tmp, cap_std::fs::Permissions::from_mode(0o755))
                            .map_err(io_err(format!("making {} executable", f.path)))?;
                    }
                    #[cfg(not(unix))]
                    let _ = exec;
                    self.dir
                        .rename(&tmp, &self.dir, &f.path)
                        .map_err(io_err(format!("installing {}", f.path)))?;
                }
                StagedFrom::LinkTo(source) => {
                    let tmp = format!("{}.pynbox-new", f.path);
                    let _ = self.dir.remove_file(&tmp);
                    if self.dir.hard_link(source, &self.dir, &tmp).is_err() {
                        self.dir
                            .copy(source, &self.dir, &tmp)
                            .map_err(io_err(format!("writing {}", f.path)))?;
                    }
                    self.dir
                        .rename(&tmp, &self.dir, &f.path)
                        .map_err(io_err(format!("installing {}", f.path)))?;
                }
            }
        }
        self.write_receipt(&Receipt {
            name: name.into(),
            version: version.into(),
            depends: depends.to_vec(),
            files: staged.iter().map(|(f, _)| f.clone()).collect(),
            pypi,
        })?;
        fault_point("receipt");
        let _ = self.dir.remove_file(format!("packages/{name}.installing"));
        Ok(())
    }
}

/// A deliberate crash at a named point of an install, for the tests of
/// recovery: with the `test-faults` feature (never in release builds),
/// `PYNBOX_TEST_CRASH_AT=NAME` ends the process there, as a kill would.
#[cfg(feature = "test-faults")]
fn fault_point(name: &str) {
    if std::env::var("PYNBOX_TEST_CRASH_AT").as_deref() == Ok(name) {
        std::process::abort();
    }
}

#[cfg(not(feature = "test-faults"))]
fn fault_point(_name: &str) {}

pub(crate) enum StagedFrom {
    /// A DEST-relative path in the staging area.
    Staging(String),
    /// Bytes written by pynbox itself, and whether they are executable.
    Bytes(Vec<u8>, bool),
    /// A hard link of a DEST-relative file committed before it in the same
    /// package (a copy where the file system has no hard links).
    LinkTo(String),
}

/// One outcome line per package, for the caller to print.
pub type Log<'a> = &'a mut dyn FnMut(&str);

/// Installs the runner (always) and `requests` (`NAME` or `NAME=VERSION`)
/// with what they depend on.
pub fn install(dest_path: &Path, requests: &[String], repo: &Repo, log: Log) -> Result<()> {
    install_with(dest_path, requests, repo, &InstallOptions::default(), log)
}

/// [`install`] with another runner, or quietly.
pub fn install_with(
    dest_path: &Path,
    requests: &[String],
    repo: &Repo,
    options: &InstallOptions,
    log: Log,
) -> Result<()> {
    // A failed install leaves DEST as it was: a DEST it had to create is
    // removed again, and an empty one emptied again. (One that held an
    // install is protected by the staging and receipts below.)
    let existed = dest_path.exists();
    let was_empty = std::fs::read_dir(dest_path).is_ok_and(|mut d| d.next().is_none());
    let r = install_into(dest_path, requests, repo, options, log);
    if r.is_err() {
        if !existed {
            let _ = std::fs::remove_dir_all(dest_path);
        } else if was_empty {
            for e in std::fs::read_dir(dest_path).into_iter().flatten().flatten() {
                let p = e.path();
                let _ = if p.is_dir() && !p.is_symlink() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }
    r
}

fn install_into(
    dest_path: &Path,
    requests: &[String],
    repo: &Repo,
    options: &InstallOptions,
    log: Log,
) -> Result<()> {
    let dest = Dest::open(dest_path, true)?.with_options(options.clone());
    dest.recover()?;

    let mut wanted: Vec<(String, Option<String>)> = Vec::new();
    for r in requests {
        let (name, version) = match r.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (r.clone(), None),
        };
        check_name(&name)?;
        if let Some(v) = &version {
            check_version(v)?;
        }
        if name == RUNNER {
            continue;
        }
        wanted.push((name, version));
    }
    if wanted.is_empty() {
        // `pynbox install DEST` alone refreshes what an install derives.
        install_runner(&dest, log)?;
        return refresh_preinit(&dest, log);
    }
    let index = repo.index()?;
    // Dependencies first, each once.
    let mut order: Vec<IndexEntry> = Vec::new();
    let mut visiting = Vec::new();
    for (name, version) in &wanted {
        resolve(
            &index,
            repo,
            name,
            version.as_deref(),
            &mut order,
            &mut visiting,
            &dest,
        )?;
    }
    // Only once every request is known to be installable.
    install_runner(&dest, log)?;
    let downloads = dest.path().join(".downloads");
    for entry in &order {
        if let Some(r) = dest.receipt(&entry.name)? {
            if r.version == entry.version {
                log(&format!(
                    "{} {} is already installed (skipped)",
                    entry.name, entry.version
                ));
                continue;
            }
        }
        let archive = repo.fetch(entry, &downloads)?;
        install_archive(&dest, &archive, log)?;
    }
    let _ = std::fs::remove_dir_all(&downloads);
    let _ = dest.dir.remove_dir(".staging");
    install_runner(&dest, log)?;
    refresh_preinit(&dest, log)
}

/// Pre-initialises the interpreter bin/run uses (src/preinit.rs), again
/// whenever the installed packages change: their files are what it
/// imported. A failure costs only speed (runs start the plain interpreter),
/// so it is a warning.
pub(crate) fn refresh_preinit(dest: &Dest, log: Log) -> Result<()> {
    let receipts = dest.receipts()?;
    let python = PYTHON;
    let mut installed: Vec<String> = receipts
        .iter()
        .filter(|r| r.name != RUNNER)
        .map(|r| format!("{}={}", r.name, r.version))
        .collect();
    installed.sort();
    let start = Instant::now();
    let quiet = dest.options.quiet;
    let notice = || {
        if !quiet {
            eprintln!("  pre-initialising {python} (start-up and common imports, once)...");
        }
    };
    match crate::preinit::refresh(dest.path(), python, &installed.join(","), &notice) {
        Ok(true) => log(&format!(
            "pre-initialised {python} in {:.1} s",
            start.elapsed().as_secs_f64()
        )),
        Ok(false) => {}
        Err(e) => log(&format!(
            "warning: {python} was not pre-initialised, runs will start it from scratch: {e}"
        )),
    }
    Ok(())
}

fn resolve(
    index: &Index,
    repo: &Repo,
    name: &str,
    version: Option<&str>,
    order: &mut Vec<IndexEntry>,
    visiting: &mut Vec<String>,
    dest: &Dest,
) -> Result<()> {
    if order.iter().any(|e| e.name == name) {
        return Ok(());
    }
    if visiting.iter().any(|v| v == name) {
        return err(format!(
            "packages depend on each other in a cycle: {} -> {name}",
            visiting.join(" -> ")
        ));
    }
    let mut candidates: Vec<&IndexEntry> = index
        .packages
        .iter()
        .filter(|e| e.name == name && version.is_none_or(|v| v == e.version))
        .collect();
    candidates.sort_by(|a, b| compare_versions(&a.version, &b.version));
    let Some(entry) = candidates.last() else {
        let what = match version {
            Some(v) => format!("{name} {v}"),
            None => name.to_string(),
        };
        let offered: Vec<String> = index
            .packages
            .iter()
            .filter(|e| e.name == name)
            .map(|e| e.version.clone())
            .collect();
        let extra = if offered.is_empty() {
            format!("build it with `pynbox build {name}`, or give --repo DIR|URL")
        } else {
            format!("available versions: {}", offered.join(", "))
        };
        return err(format!(
            "package {what} is not in the repository {}: {extra}",
            repo.describe()
        ));
    };
    // The manifest's dependencies are known only after fetching; the
    // repository's archives carry them, so peek into the archive.
    visiting.push(name.to_string());
    let deps = archive_depends(repo, entry, dest)
        .map_err(|e| PackageError(format!("{}: {e}; nothing was installed", entry.file)))?;
    for d in deps {
        // A dependency that is installed already is kept as it is.
        if dest.receipt(&d)?.is_none() {
            resolve(index, repo, &d, None, order, visiting, dest)?;
        }
    }
    visiting.pop();
    order.push((*entry).clone());
    Ok(())
}

/// Reads only the manifest at the head of an archive.
fn archive_depends(repo: &Repo, entry: &IndexEntry, dest: &Dest) -> Result<Vec<String>> {
    let path = repo.fetch(entry, &dest.path().join(".downloads"))?;
    let f = std::fs::File::open(&path).map_err(io_err(format!("opening {}", path.display())))?;
    let m = packages::read_manifest(std::io::BufReader::new(f))?;
    if m.name != entry.name || m.version != entry.version {
        return err(format!(
            "{} holds {} {}, not what its name says",
            entry.file, m.name, m.version
        ));
    }
    Ok(m.depends)
}

/// Installs one archive file into `dest`.
pub fn install_archive(dest: &Dest, archive: &Path, log: Log) -> Result<()> {
    let file =
        std::fs::File::open(archive).map_err(io_err(format!("opening {}", archive.display())))?;
    let label = archive
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    dest.dir
        .create_dir_all(".staging")
        .map_err(io_err("creating .staging"))?;
    let stage_name = format!(".staging/{}", random_hex());
    dest.dir
        .create_dir(&stage_name)
        .map_err(io_err("creating a staging directory"))?;
    let staging = dest
        .dir
        .open_dir(&stage_name)
        .map_err(io_err("opening the staging directory"))?;
    let mut progress = Progress::new(&format!("unpacking {label}"), 0);
    let quiet = dest.options.quiet;
    let mut reader = std::io::BufReader::new(file);
    let manifest = unpack_checked(&mut reader, &staging, &mut |n| {
        if !quiet {
            progress.update(n)
        }
    });
    if !quiet {
        progress.finish();
    }
    let manifest = match manifest {
        Ok(m) => m,
        Err(e) => {
            let _ = dest.dir.remove_dir_all(&stage_name);
            let _ = dest.dir.remove_dir(".staging");
            return err(format!("{label}: {e}; nothing was installed"));
        }
    };
    let mut staged: Vec<(FileEntry, StagedFrom)> = manifest
        .files
        .iter()
        .map(|f| {
            (
                FileEntry {
                    path: format!("root/{}", f.path),
                    size: f.size,
                    sha256: f.sha256.clone(),
                },
                StagedFrom::Staging(format!("{stage_name}/{}", f.path)),
            )
        })
        .collect();
    for (cmd, spec) in &manifest.commands {
        let script = command_script(&manifest.name, spec).into_bytes();
        staged.push((
            FileEntry {
                path: format!("bin/{cmd}"),
                size: script.len() as u64,
                sha256: sha256_hex(&script),
            },
            StagedFrom::Bytes(script, true),
        ));
    }
    let r = dest.commit(
        &manifest.name,
        &manifest.version,
        &manifest.depends,
        &staged,
        None,
    );
    let _ = dest.dir.remove_dir_all(&stage_name);
    let _ = dest.dir.remove_dir(".staging");
    r?;
    log(&format!("installed {} {}", manifest.name, manifest.version));
    precompile(dest, &manifest, log);
    Ok(())
}

/// Compiles the package's wasm programs and native modules into DEST's
/// cache now, so that no run waits for the compiler: once for each way of
/// stopping a guest (bin/run's, and the library's for sessions and
/// embedders).
fn precompile(dest: &Dest, manifest: &packages::Manifest, log: Log) {
    let Ok(runtimes) = crate::runtime::all_runtimes(Some(dest.path().join("cache"))) else {
        return;
    };
    for f in &manifest.files {
        let program = f.path.ends_with(".wasm");
        if !program && !crate::native::is_module_name(&f.path) {
            continue;
        }
        let path = dest.path().join("root").join(&f.path);
        let start = Instant::now();
        if !dest.options.quiet {
            eprintln!(
                "  compiling /{} to machine code (once, at install)...",
                f.path
            );
        }
        let compiled = if program {
            runtimes.iter().try_for_each(|r| r.precompile_file(&path))
        } else {
            runtimes
                .iter()
                .try_for_each(|r| r.precompile_side_module(&path))
        };
        match compiled {
            Ok(()) => log(&format!(
                "compiled /{} in {:.1} s",
                f.path,
                start.elapsed().as_secs_f64()
            )),
            Err(e) => log(&format!("warning: /{} was not precompiled: {e}", f.path)),
        }
    }
}

pub(crate) fn random_hex() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The guest path of the python package's interpreter.
pub const PYTHON: &str = "/python/bin/python.wasm";

pub(crate) const SCRIPT_HEAD: &str = r#"#!/bin/sh
# Generated by `pynbox install`. It finds its own directory, so the
# install can be moved. (Without a subshell when $0 has a directory part:
# each fork costs about a millisecond of every run's start.)
here=${0%/*}
if [ "$here" = "$0" ] || [ ! -x "$here/pynbox" ]; then
  here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd -P) || exit 125
fi
dest=$here/..
"#;

/// `bin/pip`: installs distributions from a Python package index into
/// this DEST (src/pypi/). The work is done on the host by pynbox; only the
/// installed files and console scripts are for the sandbox.
fn pip_script() -> String {
    format!("{SCRIPT_HEAD}exec \"$here/pynbox\" pip --dest \"$dest\" \"$@\"\n")
}

/// A host script for a package command. It only ever calls `bin/run`,
/// every word from the manifest is quoted, and the options end with `--`
/// before them, so that no word of the package is read as an option of
/// `pynbox run` (the manifest check refuses such a program first).
fn command_script(package: &str, c: &Command) -> String {
    let mut s = String::from(SCRIPT_HEAD);
    s.push_str(&format!("# Command of package {package}.\n"));
    let mut mounts = String::from(r#" -m "$dest/root:/:ro""#);
    if let Some(scratch) = &c.scratch {
        s.push_str("scratch=$(mktemp -d) || exit 125\ntrap 'rm -rf \"$scratch\"' EXIT\n");
        mounts.push_str(&format!(
            r#" -m "$scratch":{}"#,
            shell_quote(&format!("{scratch}:rw"))
        ));
    }
    let line = |step: &[String]| {
        let words: Vec<String> = step.iter().map(|w| shell_quote(w)).collect();
        format!(r#""$here/run"{mounts} -- {}"#, words.join(" "))
    };
    if c.steps.len() == 1 {
        s.push_str(&format!("{} \"$@\"\n", line(&c.steps[0])));
    } else {
        s.push_str("failed=0\n");
        for step in &c.steps {
            s.push_str(&format!("{} || failed=$((failed + 1))\n", line(step)));
        }
        s.push_str(&format!(
            "if [ \"$failed\" -eq 0 ]; then\n  echo \"All passed\"\nelse\n  echo \"FAILED: $failed of {} parts failed\"\n  exit 1\nfi\n",
            c.steps.len()
        ));
    }
    s
}

/// Installs or refreshes the runner: the `pynbox` executable the options
/// name (by default this very one) as `bin/pynbox`, and `bin/run`.
/// Nothing with [`Runner::Skip`].
pub(crate) fn install_runner(dest: &Dest, log: Log) -> Result<()> {
    let exe = match &dest.options.runner {
        Runner::CurrentExe => {
            std::env::current_exe().map_err(io_err("finding the pynbox executable"))?
        }
        Runner::File(f) => f.clone(),
        Runner::Skip => return Ok(()),
    };
    let bin = std::fs::read(&exe).map_err(io_err(format!("reading {}", exe.display())))?;
    let pip = pip_script().into_bytes();
    // bin/run is the same executable, which knows it is bin/run by its
    // name (src/main.rs `as_bin_run`): no shell starts in front of a run.
    let run = FileEntry {
        path: "bin/run".into(),
        size: bin.len() as u64,
        sha256: sha256_hex(&bin),
    };
    let files = vec![
        (
            FileEntry {
                path: "bin/pynbox".into(),
                size: bin.len() as u64,
                sha256: sha256_hex(&bin),
            },
            StagedFrom::Bytes(bin, true),
        ),
        (run, StagedFrom::LinkTo("bin/pynbox".into())),
        (
            FileEntry {
                path: "bin/pip".into(),
                size: pip.len() as u64,
                sha256: sha256_hex(&pip),
            },
            StagedFrom::Bytes(pip, true),
        ),
    ];
    let version = env!("CARGO_PKG_VERSION");
    if let Some(r) = dest.receipt(RUNNER)? {
        let same = r.version == version
            && r.files.len() == files.len()
            && r.files.iter().zip(&files).all(|(a, (b, _))| a == b)
            && verify_receipt(dest, &r).is_empty();
        if same {
            return Ok(());
        }
    }
    dest.commit(RUNNER, version, &[], &files, None)?;
    log(&format!("installed {RUNNER} {version} (bin/run)"));
    Ok(())
}

/// The problems of one installed package: `changed: PATH` or `missing: PATH`.
pub fn verify_receipt(dest: &Dest, r: &Receipt) -> Vec<String> {
    let mut problems = Vec::new();
    for f in &r.files {
        match dest.dir.open(&f.path) {
            Ok(file) => {
                let mut file = file.into_std();
                let ok = match packages::hash_reader(&mut file) {
                    Ok((h, n)) => h == f.sha256 && n == f.size,
                    Err(_) => false,
                };
                if !ok {
                    problems.push(format!("changed: {}", f.path));
                }
            }
            Err(_) => problems.push(format!("missing: {}", f.path)),
        }
    }
    problems
}

/// Removes the named packages' files and receipts.
pub fn remove(dest_path: &Path, names: &[String], log: Log) -> Result<()> {
    let dest = Dest::open(dest_path, false)?;
    dest.recover()?;
    let mut removed_pypi = false;
    for name in names {
        check_name(name)?;
        if name == RUNNER {
            return err("the runner is part of every install and cannot be removed (delete DEST to remove everything)");
        }
        let Some(r) = dest.receipt(name)? else {
            return err(format!(
                "{name} is not installed in {}",
                dest.path().display()
            ));
        };
        for other in dest.receipts()? {
            if other.name != *name && !names.contains(&other.name) && other.depends.contains(name) {
                return err(format!(
                    "{} depends on {name}: remove {} first",
                    other.name, other.name
                ));
            }
        }
        dest.dir
            .remove_file(format!("packages/{name}.installed"))
            .map_err(io_err("removing the receipt"))?;
        for f in &r.files {
            let _ = dest.dir.remove_file(&f.path);
            dest.prune(&f.path);
        }
        log(&format!("removed {} {}", r.name, r.version));
        removed_pypi |= r.pypi.is_some();
    }
    // DEST/pylock.toml lists what is installed from package indexes.
    if removed_pypi {
        crate::pypi::write_lock(&dest)?;
    }
    install_runner(&dest, log)?;
    refresh_preinit(&dest, log)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generated options end with `--`, so even a step whose first
    /// word looks like an option of `pynbox run` (which the manifest check
    /// refuses first) reaches `bin/run` as PROGRAM.
    #[test]
    fn command_script_ends_options_before_the_program() {
        let c = Command {
            steps: vec![vec![
                "-m".into(),
                "/:/host:rw".into(),
                "/evil/w.wasm".into(),
            ]],
            scratch: Some("/scratch".into()),
        };
        let s = command_script("evil", &c);
        assert!(
            s.contains(
                r#""$here/run" -m "$dest/root:/:ro" -m "$scratch":'/scratch:rw' -- '-m' '/:/host:rw' '/evil/w.wasm' "$@""#
            ),
            "{s}"
        );
        // Run it with a stand-in bin/run that prints its arguments.
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("cmd"), &s).unwrap();
        std::fs::write(bin.join("run"), "#!/bin/sh\nprintf '%s\\n' \"$@\"\n").unwrap();
        std::fs::write(bin.join("pynbox"), "").unwrap();
        #[cfg(unix)]
        for f in ["cmd", "run", "pynbox"] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(bin.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let out = std::process::Command::new(bin.join("cmd"))
            .arg("-w")
            .output()
            .unwrap();
        let args: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let dd = args.iter().position(|a| a == "--").expect("no --");
        assert_eq!(
            args[dd + 1..],
            ["-m", "/:/host:rw", "/evil/w.wasm", "-w"],
            "{args:?}"
        );
        assert_eq!(
            args[..dd].iter().filter(|a| *a == "-m").count(),
            2,
            "{args:?}"
        );
    }

    #[test]
    fn plain_http_is_only_for_loopback_unless_allowed() {
        for h in [
            "127.0.0.1",
            "127.8.9.10",
            "localhost",
            "LOCALHOST",
            "[::1]",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
            Repo::agent(&format!("http://{h}:8000/repo"), false).unwrap();
        }
        for h in [
            "0.0.0.0",
            "10.0.0.1",
            "128.0.0.1",
            "example.org",
            "localhost.example.org",
            "[::]",
            "[::2]",
            "127.0.0.1.example.org",
        ] {
            assert!(!is_loopback_host(h), "{h}");
            let url = format!("http://{h}/repo");
            let e = Repo::agent(&url, false).unwrap_err().0;
            assert!(
                e.contains(&url) && e.contains("https") && e.contains("--allow-insecure-http"),
                "{e}"
            );
            Repo::agent(&url, true).unwrap();
            Repo::agent(&format!("https://{h}/repo"), false).unwrap();
        }
        // The host is the URL's, after any user information.
        assert!(Repo::agent("http://127.0.0.1@example.org/", false).is_err());
        assert!(Repo::agent("ftp://127.0.0.1/", false).is_err());
        // The library refuses too, before any request.
        let repo = Repo::parse("http://192.0.2.1/repo", false);
        assert!(repo
            .index()
            .unwrap_err()
            .0
            .contains("--allow-insecure-http"));
    }
}
