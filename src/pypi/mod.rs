//! Distributions from Python package indexes (PyPI and others speaking the
//! simple API) installed into a sandbox directory: `pynbox pip --dest DEST
//! install|uninstall|list|freeze|sync`, which `DEST/bin/pip` calls.
//!
//! The work runs on the host, and nothing of a distribution runs there:
//! requirements are resolved for the sandbox's interpreter (`target`),
//! with PubGrub (`resolve`), from index pages (`index`); wheels are
//! downloaded into a cache keyed by their sha256 and checked before they
//! are opened, then checked whole and staged (`wheel`), and committed with
//! the receipts of `src/install.rs`, so a failure before the commit leaves
//! DEST as it was and `pynbox list`, `verify` and `remove` know every file.
//! `DEST/pylock.toml` (`lock`) is rewritten after every change.
//!
//! Only pure-Python wheels are installed. A release without one is built
//! from its source distribution inside the sandbox (`build`), and the
//! wheel that comes out is installed like a downloaded one.

pub mod build;
pub mod index;
pub mod lock;
pub mod pyc;
pub mod resolve;
pub mod target;
pub mod wheel;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use pep508_rs::pep440_rs::Version;
use pep508_rs::{MarkerTree, Requirement, VerbatimUrl, VersionOrUrl};
use version_ranges::Ranges;

use crate::install::{
    install_runner, random_hex, refresh_preinit, shell_quote, Dest, Log, StagedFrom, SCRIPT_HEAD,
};
use crate::packages::{
    check_name, sha256_hex, FileEntry, PackageError, PypiOrigin, Receipt, Result,
};
use index::{FileInfo, Sources};
use resolve::{Chosen, Policy, Resolver};
use target::{normalize, Target, WheelName};

pub type Req = Requirement<VerbatimUrl>;

/// Receipts of distributions from indexes are `pypi-NAME`, so that they
/// never clash with pynbox's own packages (`python`, `tests`, ...).
pub const RECEIPT_PREFIX: &str = "pypi-";

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(PackageError(msg.into()))
}

/// What `pynbox pip install` was asked.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub requirements: Vec<String>,
    pub requirement_files: Vec<PathBuf>,
    pub constraint_files: Vec<PathBuf>,
    pub index_url: Option<String>,
    pub extra_index_urls: Vec<String>,
    pub find_links: Vec<PathBuf>,
    pub no_index: bool,
    pub no_deps: bool,
    pub upgrade: bool,
    pub pre: bool,
    pub allow_insecure_http: bool,
    /// Every distribution must be pinned with `==` and given `--hash`es
    /// (on by itself when a requirement file gives any `--hash`, as in pip).
    pub require_hashes: bool,
    /// Do not make the pre-initialised python again after the change (it
    /// takes about 20 s); the stale one is removed instead.
    pub no_preinit: bool,
    /// Do not compile `.pyc` files at install (pip's `--no-compile`).
    pub no_compile: bool,
    /// Seconds one sdist build may take ([`build::DEFAULT_TIMEOUT`]).
    pub build_timeout: Option<u64>,
}

/// What an install does besides placing files.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flags {
    pub no_preinit: bool,
    pub no_compile: bool,
    pub build_timeout: Option<u64>,
}

impl Options {
    fn flags(&self) -> Flags {
        Flags {
            no_preinit: self.no_preinit,
            no_compile: self.no_compile,
            build_timeout: self.build_timeout,
        }
    }
}

fn receipt_name(dist: &str) -> Result<String> {
    let n = format!("{RECEIPT_PREFIX}{dist}");
    check_name(&n).map_err(|_| {
        PackageError(format!(
            "the distribution name '{dist}' is too long for a receipt"
        ))
    })?;
    Ok(n)
}

fn open(dest_path: &Path) -> Result<(Dest, Target)> {
    let dest = Dest::open(dest_path, false)?;
    dest.recover()?;
    let Some(python) = dest.receipt("python")? else {
        return err(format!(
            "{} has no python: install it first with `pynbox install {} python`",
            dest_path.display(),
            dest_path.display()
        ));
    };
    let target = Target::for_python_package(&python.version)?;
    Ok((dest, target))
}

/// The distributions installed from indexes: receipts with an origin.
fn installed(dest: &Dest) -> Result<Vec<(Receipt, PypiOrigin)>> {
    Ok(dest
        .receipts()?
        .into_iter()
        .filter_map(|r| r.pypi.clone().map(|o| (r, o)))
        .collect())
}

fn parse_req(line: &str, origin: &str) -> Result<Req> {
    Req::from_str(line).map_err(|e| {
        let msg = e.to_string();
        PackageError(format!(
            "{origin}: '{line}' is not a valid requirement: {}",
            msg.lines().next().unwrap_or_default()
        ))
    })
}

/// Distributions in site-packages that belong to pynbox's own packages
/// (not to `pypi-` receipts): each `*.dist-info` of theirs, and each
/// top-level package without one whose `__init__.py` gives a PEP 440
/// `__version__` (the python package's tzdata). Requirements on them are
/// met by what is there: an index's copy would overwrite our files.
fn provided(dest: &Dest) -> Result<HashMap<String, (Version, String)>> {
    let prefix = format!("root/{}/", wheel::SITE_PACKAGES);
    let mut out = HashMap::new();
    for r in dest.receipts()? {
        if r.pypi.is_some() {
            continue;
        }
        let tops: BTreeSet<&str> = r
            .files
            .iter()
            .filter_map(|f| f.path.strip_prefix(&prefix))
            .filter_map(|p| p.split_once('/').map(|(top, _)| top))
            .collect();
        for top in tops {
            let read = |file: &str| -> Option<String> {
                use std::io::Read;
                let f = dest.dir.open(format!("{prefix}{top}/{file}")).ok()?;
                let mut text = String::new();
                f.into_std().take(1 << 16).read_to_string(&mut text).ok()?;
                Some(text)
            };
            let found = if top.ends_with(".dist-info") {
                read("METADATA")
                    .and_then(|m| wheel::parse_metadata(m.as_bytes()).ok())
                    .map(|m| (normalize(&m.name), m.version))
            } else {
                read("__init__.py").and_then(|init| {
                    let line = init.lines().find(|l| l.starts_with("__version__"))?;
                    let v = line.split(['"', '\'']).nth(1)?;
                    Some((normalize(top), v.to_string()))
                })
            };
            if let Some((name, v)) = found {
                if let Ok(v) = v.parse::<Version>() {
                    out.entry(name).or_insert((v, r.name.clone()));
                }
            }
        }
    }
    Ok(out)
}

/// What requirement files add to the command line.
#[derive(Default)]
struct FromFiles {
    reqs: Vec<Req>,
    constraints: Vec<Req>,
    locks: Vec<PathBuf>,
    index_url: Option<String>,
    extra_index_urls: Vec<String>,
    find_links: Vec<PathBuf>,
    no_index: bool,
    pre: bool,
    hashes: HashMap<String, HashSet<String>>,
}

/// Reads a pip requirements file: one requirement a line, `#` comments,
/// `\` continuations, the options pip allows there that pynbox supports
/// (`-r`, `-c`, `-i`, `--extra-index-url`, `-f`, `--no-index`, `--pre`,
/// `--hash`). Paths are relative to the file.
fn read_requirements(
    path: &Path,
    constraint: bool,
    out: &mut FromFiles,
    depth: usize,
) -> Result<()> {
    if depth > 16 {
        return err(format!(
            "{}: requirement files include each other too deeply",
            path.display()
        ));
    }
    if !constraint && lock::is_lock_file(path) {
        out.locks.push(path.to_path_buf());
        return Ok(());
    }
    let meta = std::fs::metadata(path)
        .map_err(|e| PackageError(format!("reading {}: {e}", path.display())))?;
    if meta.len() > 16 << 20 {
        return err(format!("{} is larger than 16 MiB", path.display()));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| PackageError(format!("reading {}: {e}", path.display())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let origin = path.display().to_string();
    let mut logical = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if let Some(l) = line.strip_suffix('\\') {
            cur.push_str(l);
            cur.push(' ');
            continue;
        }
        cur.push_str(line);
        logical.push(std::mem::take(&mut cur));
    }
    logical.push(cur);
    for (i, line) in logical.iter().enumerate() {
        // A comment starts at a `#` at the start or after whitespace.
        let mut l = line.as_str();
        if let Some(p) = l
            .find('#')
            .filter(|&p| p == 0 || l[..p].ends_with([' ', '\t']))
        {
            l = &l[..p];
        }
        let l = l.trim();
        if l.is_empty() {
            continue;
        }
        let at = format!("{origin}:{}", i + 1);
        let mut words = l.split_whitespace();
        let first = words.next().unwrap_or_default();
        let value = |flag: &str, words: &mut std::str::SplitWhitespace| -> Result<String> {
            let inline = first
                .strip_prefix(flag)
                .and_then(|r| r.strip_prefix('='))
                .filter(|r| !r.is_empty());
            match inline {
                Some(v) => Ok(v.to_string()),
                None => words
                    .next()
                    .map(str::to_string)
                    .ok_or_else(|| PackageError(format!("{at}: {flag} needs a value"))),
            }
        };
        let is = |short: &str, long: &str| {
            first == short || first == long || first.starts_with(&format!("{long}="))
        };
        if first.starts_with('-') {
            if is("-r", "--requirement") {
                let v = value(
                    if first.starts_with("--") {
                        "--requirement"
                    } else {
                        "-r"
                    },
                    &mut words,
                )?;
                read_requirements(&dir.join(v), constraint, out, depth + 1)?;
            } else if is("-c", "--constraint") {
                let v = value(
                    if first.starts_with("--") {
                        "--constraint"
                    } else {
                        "-c"
                    },
                    &mut words,
                )?;
                read_requirements(&dir.join(v), true, out, depth + 1)?;
            } else if is("-i", "--index-url") {
                out.index_url = Some(value(
                    if first.starts_with("--") {
                        "--index-url"
                    } else {
                        "-i"
                    },
                    &mut words,
                )?);
            } else if is("", "--extra-index-url") {
                out.extra_index_urls
                    .push(value("--extra-index-url", &mut words)?);
            } else if is("-f", "--find-links") {
                let v = value(
                    if first.starts_with("--") {
                        "--find-links"
                    } else {
                        "-f"
                    },
                    &mut words,
                )?;
                out.find_links.push(dir.join(v));
            } else if first == "--no-index" {
                out.no_index = true;
            } else if first == "--pre" {
                out.pre = true;
            } else {
                return err(format!(
                    "{at}: the option '{first}' is not supported by pynbox pip"
                ));
            }
            continue;
        }
        // A requirement, perhaps followed by `--hash=sha256:HEX` options.
        let (req, opts) = match l.find(" --") {
            Some(p) => (&l[..p], &l[p..]),
            None => (l, ""),
        };
        let r = parse_req(req.trim(), &at)?;
        for o in opts.split_whitespace() {
            let Some(h) = o.strip_prefix("--hash=") else {
                return err(format!(
                    "{at}: the option '{o}' is not supported after a requirement"
                ));
            };
            let Some(hex) = h.strip_prefix("sha256:") else {
                return err(format!("{at}: only sha256 hashes are supported ('{h}')"));
            };
            out.hashes
                .entry(r.name.to_string())
                .or_default()
                .insert(hex.to_ascii_lowercase());
        }
        if constraint {
            out.constraints.push(r);
        } else {
            out.reqs.push(r);
        }
    }
    Ok(())
}

/// Installs requirements (or a lock file given with `-r`) into DEST.
pub fn install(dest_path: &Path, opts: &Options, log: Log) -> Result<()> {
    let (dest, target) = open(dest_path)?;
    let mut files = FromFiles::default();
    for f in &opts.requirement_files {
        read_requirements(f, false, &mut files, 0)?;
    }
    for f in &opts.constraint_files {
        read_requirements(f, true, &mut files, 0)?;
    }
    let mut reqs: Vec<Req> = Vec::new();
    for r in &opts.requirements {
        reqs.push(parse_req(r, "the command line")?);
    }
    reqs.append(&mut files.reqs);
    let no_index = opts.no_index || files.no_index;
    let mut indexes = Vec::new();
    if !no_index {
        indexes.push(
            opts.index_url
                .clone()
                .or(files.index_url.clone())
                .unwrap_or_else(|| index::PYPI.to_string()),
        );
        indexes.extend(opts.extra_index_urls.iter().cloned());
        indexes.extend(files.extra_index_urls.iter().cloned());
    }
    let mut find_links = opts.find_links.clone();
    find_links.extend(files.find_links.iter().cloned());
    let sources = Sources {
        indexes,
        find_links,
        allow_insecure_http: opts.allow_insecure_http,
    };
    if !files.locks.is_empty() {
        if !reqs.is_empty() || files.locks.len() > 1 {
            return err("a pylock.toml is installed on its own: give it as the only -r, without other requirements");
        }
        return install_lock(
            &dest,
            &target,
            &files.locks[0],
            &sources,
            no_index,
            false,
            opts.flags(),
            log,
        );
    }
    if reqs.is_empty() {
        return err("nothing to install: name requirements (pip install NAME...) or give -r FILE");
    }
    let mut constraints: HashMap<String, Ranges<Version>> = HashMap::new();
    for c in &files.constraints {
        let range = match &c.version_or_url {
            Some(VersionOrUrl::VersionSpecifier(s)) => Ranges::from(s.clone()),
            Some(VersionOrUrl::Url(_)) => {
                return err(format!("constraint '{c}': URLs are not supported"))
            }
            None => Ranges::full(),
        };
        if c.evaluate_markers(&target.markers, &[]) {
            let e = constraints
                .entry(c.name.to_string())
                .or_insert_with(Ranges::full);
            *e = e.intersection(&range);
        }
    }
    let already = installed(&dest)?;
    let preferences = if opts.upgrade {
        HashMap::new()
    } else {
        already
            .iter()
            .filter_map(|(r, _)| {
                let name = r.name.strip_prefix(RECEIPT_PREFIX)?.to_string();
                Some((name, r.version.parse().ok()?))
            })
            .collect()
    };
    let provided = provided(&dest)?;
    for (n, (v, owner)) in &provided {
        if reqs.iter().any(|r| r.name.to_string() == *n) {
            log(&format!("{n} {v} is part of pynbox's package {owner}"));
        }
    }
    let policy = Policy {
        provided,
        pre: opts.pre || files.pre,
        no_deps: opts.no_deps,
        offline: no_index,
        constraints,
        preferences,
        hashes: files.hashes,
    };
    let hash_mode = opts.require_hashes || !policy.hashes.is_empty();
    if hash_mode {
        for r in &reqs {
            let pinned = match &r.version_or_url {
                Some(VersionOrUrl::VersionSpecifier(s)) => s.iter().any(|s| {
                    matches!(
                        s.operator(),
                        pep508_rs::pep440_rs::Operator::Equal
                            | pep508_rs::pep440_rs::Operator::ExactEqual
                    )
                }),
                _ => false,
            };
            if !pinned || !policy.hashes.contains_key(&r.name.to_string()) {
                return err(format!(
                    "'{r}': in hash-checking mode (--require-hashes, or any --hash in a requirement file) every requirement needs ==VERSION and --hash=sha256:..., as pip requires"
                ));
            }
        }
    }
    let requested: BTreeSet<String> = reqs.iter().map(|r| r.name.to_string()).collect();
    let builder = build::Builder::new(&dest, &sources, &target, no_index, opts.build_timeout);
    let chosen = Resolver::new(&sources, &target, &policy, reqs, Some(&builder)).resolve()?;
    if hash_mode {
        if let Some(c) = chosen.iter().find(|c| !policy.hashes.contains_key(&c.name)) {
            return err(format!(
                "{} {} has no --hash: in hash-checking mode every distribution, dependencies too, needs one (pip freeze prints the set to pin)",
                c.name, c.version
            ));
        }
    }
    apply(
        &dest,
        &sources,
        &builder,
        no_index,
        opts.flags(),
        chosen,
        &requested,
        &[],
        log,
    )
}

/// Installs exactly the wheels of a lock file; with `exact`, removes the
/// distributions from indexes that it does not list (`sync`).
#[allow(clippy::too_many_arguments)]
fn install_lock(
    dest: &Dest,
    target: &Target,
    path: &Path,
    sources: &Sources,
    offline: bool,
    exact: bool,
    flags: Flags,
    log: Log,
) -> Result<()> {
    let lock = lock::read(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut chosen = Vec::new();
    let mut requested = BTreeSet::new();
    for p in &lock.packages {
        if let Some(m) = &p.marker {
            let tree = MarkerTree::from_str(m)
                .map_err(|e| PackageError(format!("{}: marker '{m}': {e}", path.display())))?;
            if !tree.evaluate(&target.markers, &[]) {
                continue;
            }
        }
        let name = normalize(&p.name);
        let Some(version) = p.version.as_deref().and_then(|v| v.parse::<Version>().ok()) else {
            return err(format!(
                "{}: package {} has no valid version",
                path.display(),
                p.name
            ));
        };
        let source = p.index.clone().unwrap_or_default();
        let mut pick = None;
        for w in &p.wheels {
            let file = w.file_name();
            let Some(wn) = WheelName::parse(&file) else {
                continue;
            };
            if wn.name != name || wn.version != version || !wn.usable() {
                continue;
            }
            pick = Some(locked_file(w, file, path, dir, &source)?);
            break;
        }
        // A locked sdist is built again (or its wheel taken from the
        // build cache, keyed by the sdist's sha256).
        if let (None, Some(sd)) = (&pick, &p.sdist) {
            let file = sd.file_name();
            let fits = target::sdist_name(&file).is_some_and(|(n, v)| n == name && v == version)
                && build::buildable(&file);
            // A file without its hash is refused even when it does not fit.
            let info = locked_file(sd, file, path, dir, &source)?;
            if fits {
                pick = Some(info);
            }
        }
        let Some(wheel) = pick else {
            return err(format!(
                "cannot install {} {version} from {}: it lists neither a pure-Python wheel (py3-none-any) nor a source distribution pynbox can build",
                p.name,
                path.display()
            ));
        };
        requested.insert(name.clone());
        chosen.push(Chosen {
            name,
            version,
            wheel,
            depends: Vec::new(),
        });
    }
    let remove: Vec<String> = if exact {
        installed(dest)?
            .into_iter()
            .filter(|(r, _)| {
                !chosen
                    .iter()
                    .any(|c| Some(c.name.as_str()) == r.name.strip_prefix(RECEIPT_PREFIX))
            })
            .map(|(r, _)| r.name)
            .collect()
    } else {
        Vec::new()
    };
    let builder = build::Builder::new(dest, sources, target, offline, flags.build_timeout);
    apply(
        dest, sources, &builder, offline, flags, chosen, &requested, &remove, log,
    )
}

/// `pynbox pip sync LOCK`: DEST ends up with exactly the lock's
/// distributions from indexes.
pub fn sync(
    dest_path: &Path,
    lock_path: &Path,
    no_index: bool,
    allow_insecure_http: bool,
    flags: Flags,
    log: Log,
) -> Result<()> {
    let (dest, target) = open(dest_path)?;
    let sources = Sources {
        indexes: Vec::new(),
        find_links: Vec::new(),
        allow_insecure_http,
    };
    install_lock(
        &dest, &target, lock_path, &sources, no_index, true, flags, log,
    )
}

/// The host script for a console script: a call of `bin/run` with a fixed
/// guest command line, the entry point's names checked as identifiers
/// The file a lock entry names, as the index would describe it: its sha256
/// is required (a lock is only as good as its hashes).
fn locked_file(
    f: &lock::LockWheel,
    file: String,
    lock_path: &Path,
    dir: &Path,
    source: &str,
) -> Result<FileInfo> {
    let Some(sha) = f.hashes.sha256.as_deref() else {
        return err(format!(
            "{}: {file} has no sha256: refused",
            lock_path.display()
        ));
    };
    Ok(FileInfo {
        sha256: Some(sha.to_ascii_lowercase()),
        url: f.url.clone(),
        local: f.path.as_ref().map(|p| dir.join(p)),
        requires_python: None,
        yanked: false,
        metadata_sha256: None,
        size: f.size,
        source: source.to_string(),
        filename: file,
    })
}

/// (`wheel::parse_entry_points`) and quoted.
fn console_script(dist: &str, ep: &wheel::EntryPoint) -> String {
    let first = ep.attr.split('.').next().unwrap_or(&ep.attr);
    let code = format!(
        "import sys; sys.argv[0] = {:?}; from {} import {first}; sys.exit({}())",
        ep.name, ep.module, ep.attr
    );
    format!(
        "{SCRIPT_HEAD}# Console script {} of {dist} (installed from a package index by pynbox pip).\nexec \"$here/run\" -- python -c {} \"$@\"\n",
        ep.name,
        shell_quote(&code)
    )
}

/// Downloads, checks and stages every chosen wheel, then commits them
/// (and removes `remove`). Nothing in DEST changes before every wheel is
/// staged and every file checked against the other packages' files.
#[allow(clippy::too_many_arguments)]
fn apply(
    dest: &Dest,
    sources: &Sources,
    builder: &build::Builder,
    offline: bool,
    flags: Flags,
    chosen: Vec<Chosen>,
    requested: &BTreeSet<String>,
    remove: &[String],
    log: Log,
) -> Result<()> {
    let previous: BTreeMap<String, Receipt> = installed(dest)?
        .into_iter()
        .map(|(r, _)| (r.name.clone(), r))
        .collect();
    let mut todo = Vec::new();
    for c in chosen {
        let rname = receipt_name(&c.name)?;
        let same = previous.get(&rname).is_some_and(|r| {
            r.pypi
                .as_ref()
                .is_some_and(|o| Some(&o.sha256) == c.wheel.sha256.as_ref())
        });
        if same {
            log(&format!("{} {} is already installed", c.name, c.version));
            continue;
        }
        todo.push((rname, c));
    }
    if todo.is_empty() && remove.is_empty() {
        return finish(dest, flags.no_preinit, log);
    }
    // Every wheel, downloaded or built, before DEST changes at all.
    let mut paths = Vec::new();
    for (_, c) in todo.iter_mut() {
        if c.wheel.filename.ends_with(".whl") {
            paths.push((sources.fetch(&c.wheel, offline)?, c.wheel.filename.clone()));
            continue;
        }
        let sdist = sources.fetch(&c.wheel, offline)?;
        if c.wheel.size.is_none() {
            c.wheel.size = std::fs::metadata(&sdist).map(|m| m.len()).ok();
        }
        paths.push(builder.wheel(&c.wheel, &c.name, &c.version)?);
    }
    dest.dir
        .create_dir_all(".staging")
        .map_err(|e| PackageError(format!("creating .staging: {e}")))?;
    let stage_name = format!(".staging/{}", random_hex());
    let cleanup = || {
        let _ = dest.dir.remove_dir_all(&stage_name);
        let _ = dest.dir.remove_dir(".staging");
    };
    let r = stage_and_commit(
        dest,
        &stage_name,
        &todo,
        &paths,
        &previous,
        requested,
        remove,
        flags,
        log,
    );
    cleanup();
    r?;
    finish(dest, flags.no_preinit, log)
}

#[allow(clippy::too_many_arguments)]
fn stage_and_commit(
    dest: &Dest,
    stage_name: &str,
    todo: &[(String, Chosen)],
    paths: &[(PathBuf, String)],
    previous: &BTreeMap<String, Receipt>,
    requested: &BTreeSet<String>,
    remove: &[String],
    flags: Flags,
    log: Log,
) -> Result<()> {
    dest.dir
        .create_dir(stage_name)
        .map_err(|e| PackageError(format!("creating a staging directory: {e}")))?;
    let mut staged_all = Vec::new();
    for ((rname, c), (path, label)) in todo.iter().zip(paths) {
        let sub = format!("{stage_name}/{}", c.name);
        dest.dir
            .create_dir(&sub)
            .map_err(|e| PackageError(format!("creating a staging directory: {e}")))?;
        let dir = dest
            .dir
            .open_dir(&sub)
            .map_err(|e| PackageError(format!("opening the staging directory: {e}")))?;
        let was_requested = requested.contains(&c.name)
            || previous
                .get(rname)
                .and_then(|r| r.pypi.as_ref())
                .is_some_and(|o| o.requested);
        let s = wheel::stage(path, &c.name, &c.version, label, &dir, was_requested)?;
        for e in &s.skipped {
            log(&format!(
                "  {}: not installed: {e} (a host script)",
                c.wheel.filename
            ));
        }
        let staged: Vec<String> = s.files.iter().map(|(_, rel)| rel.clone()).collect();
        let mut files: Vec<(FileEntry, StagedFrom)> = s
            .files
            .into_iter()
            .map(|(f, rel)| (f, StagedFrom::Staging(format!("{sub}/{rel}"))))
            .collect();
        for ep in &s.scripts {
            let script = console_script(&c.name, ep).into_bytes();
            files.push((
                FileEntry {
                    path: format!("bin/{}", ep.name),
                    size: script.len() as u64,
                    sha256: sha256_hex(&script),
                },
                StagedFrom::Bytes(script, true),
            ));
        }
        staged_all.push((rname.clone(), c, files, was_requested, path, sub, staged));
    }
    // Every file must be new or the distribution's own: checked for all
    // distributions before the first one is committed.
    let replacing: BTreeSet<&str> = todo
        .iter()
        .map(|(r, _)| r.as_str())
        .chain(remove.iter().map(String::as_str))
        .collect();
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for r in dest.receipts()? {
        if !replacing.contains(r.name.as_str()) {
            for f in r.files {
                owners.insert(f.path, r.name.clone());
            }
        }
    }
    let mut new_paths: BTreeMap<&str, &str> = BTreeMap::new();
    for (rname, c, files, ..) in &staged_all {
        for (f, _) in files {
            if let Some(owner) = owners.get(&f.path) {
                return err(format!(
                    "{} {} would overwrite {} of {owner}: nothing was installed",
                    c.name, c.version, f.path
                ));
            }
            if let Some(other) = new_paths.insert(&f.path, rname) {
                return err(format!(
                    "{} and {other} would both install {}: nothing was installed",
                    rname, f.path
                ));
            }
        }
    }
    // `.pyc` files, once every wheel is known good: loading the interpreter
    // may write DEST's machine-code cache. A failure costs only speed
    // (imports then compile in memory), so it is a warning.
    let compiler = if flags.no_compile {
        None
    } else {
        pyc::Compiler::new(dest)
            .inspect_err(|e| log(&format!("warning: no .pyc files are compiled: {e}")))
            .ok()
    };
    for (_, c, files, _, _, sub, staged) in staged_all.iter_mut() {
        let Some(compiler) = &compiler else { break };
        let stage = dest.path().join(&*sub);
        let pycs = match compiler.compile(&stage, staged) {
            Ok(p) => p,
            Err(e) => {
                log(&format!(
                    "warning: {} {}: no .pyc files: {e}",
                    c.name, c.version
                ));
                continue;
            }
        };
        for pyc in pycs {
            let path = format!("root/{pyc}");
            // A cache file another package owns stays that package's.
            if owners.contains_key(&path) {
                continue;
            }
            let (sha256, size) = crate::packages::sha256_file(&stage.join(&pyc))
                .map_err(|e| PackageError(format!("reading {pyc}: {e}")))?;
            files.push((
                FileEntry { path, size, sha256 },
                StagedFrom::Staging(format!("{sub}/{pyc}")),
            ));
        }
    }
    install_runner(dest, log)?;
    for name in remove {
        remove_receipt(dest, name, log)?;
    }
    for (rname, c, files, was_requested, path, ..) in staged_all {
        let mut depends = vec!["python".to_string()];
        for d in &c.depends {
            depends.push(receipt_name(d)?);
        }
        let origin = PypiOrigin {
            name: c.name.clone(),
            file: c.wheel.filename.clone(),
            url: c.wheel.url.clone(),
            path: c.wheel.local.as_ref().map(|p| {
                p.canonicalize()
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string()
            }),
            index: Some(c.wheel.source.clone()).filter(|s| !s.is_empty()),
            size: c
                .wheel
                .size
                .unwrap_or_else(|| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)),
            sha256: c.wheel.sha256.clone().unwrap_or_default(),
            requested: was_requested,
        };
        dest.commit(
            &rname,
            &c.version.to_string(),
            &depends,
            &files,
            Some(origin),
        )?;
        log(&format!("installed {} {}", c.name, c.version));
    }
    Ok(())
}

fn remove_receipt(dest: &Dest, rname: &str, log: Log) -> Result<()> {
    let Some(r) = dest.receipt(rname)? else {
        return Ok(());
    };
    dest.dir
        .remove_file(format!("packages/{rname}.installed"))
        .map_err(|e| PackageError(format!("removing the receipt of {rname}: {e}")))?;
    for f in &r.files {
        let _ = dest.dir.remove_file(&f.path);
        dest.prune(&f.path);
    }
    log(&format!(
        "removed {} {}",
        r.name.strip_prefix(RECEIPT_PREFIX).unwrap_or(&r.name),
        r.version
    ));
    Ok(())
}

/// After a change: the lock file and the pre-initialised interpreter.
fn finish(dest: &Dest, no_preinit: bool, log: Log) -> Result<()> {
    write_lock(dest)?;
    if no_preinit {
        crate::preinit::discard(dest.path());
        return Ok(());
    }
    refresh_preinit(dest, log)
}

/// Rewrites `DEST/pylock.toml` from the receipts (also after `pynbox
/// remove DEST pypi-NAME`).
pub(crate) fn write_lock(dest: &Dest) -> Result<()> {
    let list: Vec<(String, String, PypiOrigin)> = installed(dest)?
        .into_iter()
        .map(|(r, o)| (o.name.clone(), r.version, o))
        .collect();
    let text = lock::render(&list);
    dest.dir
        .write("pylock.toml.pynbox-new", text)
        .and_then(|_| {
            dest.dir
                .rename("pylock.toml.pynbox-new", &dest.dir, "pylock.toml")
        })
        .map_err(|e| PackageError(format!("writing pylock.toml: {e}")))
}

/// Removes distributions installed from indexes, exactly their files.
/// Like pip, one that others require is removed all the same, with a
/// warning naming them.
pub fn uninstall(dest_path: &Path, names: &[String], no_preinit: bool, log: Log) -> Result<()> {
    let (dest, _) = open(dest_path)?;
    let mut rnames = Vec::new();
    for n in names {
        let name = normalize(n);
        let rname = receipt_name(&name)?;
        if dest.receipt(&rname)?.and_then(|r| r.pypi).is_none() {
            return err(format!(
                "{n} is not installed from a package index in {} (pip list shows what is)",
                dest_path.display()
            ));
        }
        rnames.push(rname);
    }
    for (r, _) in installed(&dest)? {
        if rnames.contains(&r.name) {
            continue;
        }
        for d in r.depends.iter().filter(|d| rnames.contains(d)) {
            log(&format!(
                "warning: {} requires {}, which is being removed",
                r.name.trim_start_matches(RECEIPT_PREFIX),
                d.trim_start_matches(RECEIPT_PREFIX)
            ));
        }
    }
    for rname in &rnames {
        remove_receipt(&dest, rname, log)?;
    }
    finish(&dest, no_preinit, log)
}

/// (name, version) of every distribution installed from an index.
pub fn list(dest_path: &Path) -> Result<Vec<(String, String)>> {
    let dest = Dest::open(dest_path, false)?;
    Ok(installed(&dest)?
        .into_iter()
        .map(|(r, o)| (o.name, r.version))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirement_files_are_read_like_pips() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("more.txt"),
            "baz[x] ; sys_platform == 'wasi'\n",
        )
        .unwrap();
        std::fs::write(d.path().join("c.txt"), "bar<2\n").unwrap();
        std::fs::write(
            d.path().join("req.txt"),
            "# comment\nfoo>=1 # trailing\nbar \\\n  ==1.0 --hash=sha256:ABCD\n-r more.txt\n-c c.txt\n--index-url https://example.org/simple\n--pre\n",
        )
        .unwrap();
        let mut f = FromFiles::default();
        read_requirements(&d.path().join("req.txt"), false, &mut f, 0).unwrap();
        let names: Vec<String> = f.reqs.iter().map(|r| r.to_string()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names[1].starts_with("bar==1.0"), "{names:?}");
        assert_eq!(f.constraints.len(), 1);
        assert_eq!(f.index_url.as_deref(), Some("https://example.org/simple"));
        assert!(f.pre);
        assert!(f.hashes["bar"].contains("abcd"));
        std::fs::write(d.path().join("bad.txt"), "-e .\n").unwrap();
        let e = read_requirements(&d.path().join("bad.txt"), false, &mut f, 0).unwrap_err();
        assert!(e.0.contains("bad.txt:1") && e.0.contains("-e"), "{e}");
    }

    #[test]
    fn console_scripts_call_bin_run_with_quoted_code() {
        let ep = wheel::EntryPoint {
            name: "hello".into(),
            module: "hello.cli".into(),
            attr: "main.run".into(),
        };
        let s = console_script("hello", &ep);
        assert!(
            s.ends_with("exec \"$here/run\" -- python -c 'import sys; sys.argv[0] = \"hello\"; from hello.cli import main; sys.exit(main.run())' \"$@\"\n"),
            "{s}"
        );
    }
}
