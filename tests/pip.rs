//! `pynbox pip` (and `DEST/bin/pip`): distributions from a package index
//! served here on loopback, in both forms of the simple API (PEP 691 JSON,
//! PEP 503 HTML), with wheels these tests build themselves.
//!
//! The tests that install need the python package (a copy of the test
//! DEST, see tests/common): resolution is for its interpreter, and
//! imports and console scripts run inside the sandbox.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// One file an index offers.
#[derive(Clone)]
struct IndexFile {
    filename: String,
    data: Vec<u8>,
    requires_python: Option<String>,
    yanked: bool,
    /// The sha256 the index claims (the real one unless a test lies).
    sha256: String,
    /// Core metadata served beside the file (PEP 658), in JSON pages.
    metadata: Option<Vec<u8>>,
}

impl IndexFile {
    fn new(filename: &str, data: Vec<u8>) -> IndexFile {
        IndexFile {
            filename: filename.into(),
            sha256: hex(&Sha256::digest(&data)),
            data,
            requires_python: None,
            yanked: false,
            metadata: None,
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A wheel `name-version-py3-none-any.whl` (or with `tag`) holding `files`
/// plus its dist-info: METADATA (with `meta` lines), WHEEL, optional
/// entry_points.txt, and RECORD with real hashes.
struct WheelSpec<'a> {
    name: &'a str,
    version: &'a str,
    tag: &'a str,
    files: Vec<(String, Vec<u8>)>,
    meta: &'a str,
    entry_points: Option<&'a str>,
}

impl<'a> WheelSpec<'a> {
    fn new(name: &'a str, version: &'a str) -> Self {
        WheelSpec {
            name,
            version,
            tag: "py3-none-any",
            files: vec![(
                format!("{name}/__init__.py"),
                format!("VERSION = {version:?}\n").into_bytes(),
            )],
            meta: "",
            entry_points: None,
        }
    }

    fn filename(&self) -> String {
        format!("{}-{}-{}.whl", self.name, self.version, self.tag)
    }

    fn build(&self) -> IndexFile {
        let di = format!("{}-{}.dist-info", self.name, self.version);
        let mut entries = self.files.clone();
        let metadata = format!(
            "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}\nA description.\n",
            self.name, self.version, self.meta
        )
        .into_bytes();
        entries.push((format!("{di}/METADATA"), metadata.clone()));
        entries.push((
            format!("{di}/WHEEL"),
            b"Wheel-Version: 1.0\nGenerator: pynbox-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n".to_vec(),
        ));
        if let Some(ep) = self.entry_points {
            entries.push((format!("{di}/entry_points.txt"), ep.as_bytes().to_vec()));
        }
        let mut record = String::new();
        for (p, d) in &entries {
            record.push_str(&format!("{p},sha256={},{}\n", record_hash(d), d.len()));
        }
        record.push_str(&format!("{di}/RECORD,,\n"));
        entries.push((format!("{di}/RECORD"), record.into_bytes()));
        IndexFile {
            metadata: Some(metadata),
            ..IndexFile::new(&self.filename(), zip_bytes(&entries))
        }
    }
}

type Files = Arc<Mutex<BTreeMap<String, Vec<IndexFile>>>>;

/// A package index on 127.0.0.1: `/simple/NAME/` (JSON when `json`, else
/// HTML) and `/files/FILENAME`.
struct Index {
    url: String,
    files: Files,
    /// Wheels downloaded (not their metadata).
    wheel_hits: Arc<std::sync::atomic::AtomicUsize>,
    /// Cut the next wheel download halfway.
    cut_next: Arc<std::sync::atomic::AtomicBool>,
    /// Wheel requests that asked for a range (resumed downloads).
    range_hits: Arc<std::sync::atomic::AtomicUsize>,
}

impl Index {
    fn start(json: bool) -> Index {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/simple", listener.local_addr().unwrap());
        let files: Files = Default::default();
        let f2 = files.clone();
        let wheel_hits: Arc<std::sync::atomic::AtomicUsize> = Default::default();
        let hits = wheel_hits.clone();
        let cut_next: Arc<std::sync::atomic::AtomicBool> = Default::default();
        let cut = cut_next.clone();
        let range_hits: Arc<std::sync::atomic::AtomicUsize> = Default::default();
        let ranges = range_hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&req).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                if path.ends_with(".whl") {
                    hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                let (ctype, body) = respond(&f2.lock().unwrap(), &path, json);
                // Range requests (`bytes=N-`), for resumed downloads.
                let from: Option<usize> = req
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("range: bytes=")
                            .map(str::to_string)
                    })
                    .and_then(|r| r.trim_end_matches('-').trim().parse().ok());
                let (head, body) = match (body, from) {
                    (Some(b), Some(from)) if from < b.len() => (
                        format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Type: {ctype}\r\nContent-Range: bytes {from}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.len() - 1,
                            b.len(),
                            b.len() - from
                        ),
                        b[from..].to_vec(),
                    ),
                    (Some(b), _) => (
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.len()
                        ),
                        b,
                    ),
                    (None, _) => (
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
                        Vec::new(),
                    ),
                };
                if path.ends_with(".whl") && from.is_some() {
                    ranges.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                let _ = s.write_all(head.as_bytes());
                if path.ends_with(".whl") && cut.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    let _ = s.write_all(&body[..body.len() / 2]);
                    let _ = s.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let _ = s.write_all(&body);
            }
        });
        Index {
            url,
            files,
            wheel_hits,
            cut_next,
            range_hits,
        }
    }

    fn add(&self, name: &str, f: IndexFile) {
        self.files
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .push(f);
    }

    fn wheel(&self, w: &WheelSpec) {
        self.add(&w.name.replace('_', "-"), w.build());
    }
}

fn respond(
    files: &BTreeMap<String, Vec<IndexFile>>,
    path: &str,
    json: bool,
) -> (String, Option<Vec<u8>>) {
    if let Some(file) = path.strip_prefix("/files/") {
        if let Some(wheel) = file.strip_suffix(".metadata") {
            let f = files.values().flatten().find(|f| f.filename == wheel);
            return ("text/plain".into(), f.and_then(|f| f.metadata.clone()));
        }
        let f = files.values().flatten().find(|f| f.filename == file);
        return ("application/octet-stream".into(), f.map(|f| f.data.clone()));
    }
    let Some(name) = path
        .strip_prefix("/simple/")
        .map(|n| n.trim_end_matches('/'))
    else {
        return (String::new(), None);
    };
    let Some(list) = files.get(name) else {
        return (String::new(), None);
    };
    if json {
        let files: Vec<serde_json::Value> = list
            .iter()
            .map(|f| {
                let mut v = serde_json::json!({
                    "filename": f.filename,
                    "url": format!("../../files/{}", f.filename),
                    "hashes": {"sha256": f.sha256},
                    "yanked": f.yanked,
                    "size": f.data.len(),
                });
                if let Some(r) = &f.requires_python {
                    v["requires-python"] = r.clone().into();
                }
                if let Some(m) = &f.metadata {
                    v["core-metadata"] = serde_json::json!({"sha256": hex(&Sha256::digest(m))});
                }
                v
            })
            .collect();
        let page =
            serde_json::json!({"meta": {"api-version": "1.0"}, "name": name, "files": files});
        (
            "application/vnd.pypi.simple.v1+json".into(),
            Some(page.to_string().into_bytes()),
        )
    } else {
        let mut page = format!("<!DOCTYPE html>\n<html><body><h1>Links for {name}</h1>\n");
        for f in list {
            let rp = f
                .requires_python
                .as_deref()
                .map(|r| {
                    format!(
                        " data-requires-python=\"{}\"",
                        r.replace('<', "&lt;").replace('>', "&gt;")
                    )
                })
                .unwrap_or_default();
            let y = if f.yanked { " data-yanked=\"\"" } else { "" };
            page.push_str(&format!(
                "<a href=\"/files/{}#sha256={}\"{rp}{y}>{}</a><br/>\n",
                f.filename, f.sha256, f.filename
            ));
        }
        page.push_str("</body></html>\n");
        ("text/html".into(), Some(page.into_bytes()))
    }
}

/// A DEST of its own with the python package: a copy of the test DEST.
fn fresh_dest() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let to = d.path().join("dest");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(dest())
        .arg(&to)
        .status()
        .unwrap();
    assert!(st.success());
    (d, to)
}

/// `pynbox pip --dest DEST ARGS` with a download cache of the test's own.
/// Changes skip making the pre-initialised python again (20 s each):
/// `pip_preinit` is the one test path that does.
fn pip(dest: &Path, cache: &Path, args: &[&str]) -> Output {
    let mut args = args.to_vec();
    if ["install", "uninstall", "sync"].contains(&args[0]) {
        args.push("--no-preinit");
    }
    pip_preinit(dest, cache, &args)
}

fn pip_preinit(dest: &Path, cache: &Path, args: &[&str]) -> Output {
    pynbox()
        .env("PYNBOX_PYPI_CACHE", cache)
        .arg("pip")
        .arg("--dest")
        .arg(dest)
        .args(args)
        .output()
        .unwrap()
}

fn run_py(dest: &Path, code: &str) -> Output {
    std::process::Command::new(dest.join("bin/run"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["python", "-c", code])
        .output()
        .unwrap()
}

fn fails_with(out: &Output, what: &str) -> String {
    let e = text(&out.stderr);
    assert!(!out.status.success(), "succeeded:\n{e}");
    assert!(e.contains(what), "expected {what:?} in:\n{e}");
    assert!(!e.contains("panicked"), "{e}");
    e
}

/// Every file below `dir` (path and content hash), without times: what
/// an uninstall must restore.
fn listing(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if p.is_dir() {
                out.insert(rel + "/", String::new());
                walk(base, &p, out);
            } else {
                out.insert(rel, hex(&Sha256::digest(std::fs::read(&p).unwrap())));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

const SITE: &str = "root/python/lib/python3.13/site-packages";

/// The app of several tests: markers for wasi, an extra, a console script.
fn app_index(json: bool) -> Index {
    let idx = Index::start(json);
    let mut app = WheelSpec::new("app", "1.0");
    app.meta = "Requires-Dist: wasidep>=1.0; sys_platform == \"wasi\"\nRequires-Dist: winonly; sys_platform == \"win32\"\nRequires-Dist: fancylib; extra == \"fancy\"\nProvides-Extra: fancy\nRequires-Python: >=3.8";
    app.files.push((
        "app/cli.py".into(),
        b"import sys\ndef main():\n    import wasidep\n    print('hello from the sandbox', sys.platform, wasidep.VERSION, sys.argv[1:])\n    return 3\n".to_vec(),
    ));
    app.entry_points = Some("[console_scripts]\napp-hello = app.cli:main\n");
    idx.wheel(&app);
    idx.wheel(&WheelSpec::new("wasidep", "1.0"));
    idx.wheel(&WheelSpec::new("wasidep", "1.1"));
    idx.wheel(&WheelSpec::new("winonly", "1.0"));
    idx.wheel(&WheelSpec::new("fancylib", "2.0"));
    idx
}

#[test]
fn install_with_markers_extras_console_script_then_uninstall_exactly() {
    let idx = app_index(true);
    let (_d, dest) = fresh_dest();
    let cache = tempfile::tempdir().unwrap();
    let before_root = listing(&dest.join("root"));
    let before_bin = listing(&dest.join("bin"));
    let out = pip_preinit(
        &dest,
        cache.path(),
        &["install", "app[fancy]", "--index-url", &idx.url],
    );
    assert_ok(&out);
    assert!(
        text(&out.stderr).contains("pre-initialised"),
        "{}",
        text(&out.stderr)
    );
    assert!(dest.join("cache/preinit/python.wasm").is_file());
    let site = dest.join(SITE);
    assert!(site.join("app/cli.py").is_file());
    assert!(
        site.join("wasidep/__init__.py").is_file(),
        "the wasi dependency"
    );
    assert!(
        site.join("fancylib/__init__.py").is_file(),
        "the extra's dependency"
    );
    assert!(
        !site.join("winonly").exists(),
        "a win32-only dependency was installed"
    );
    // Compiled inside the sandbox at install, and recorded in the receipt.
    assert!(site.join("app/__pycache__/cli.cpython-313.pyc").is_file());
    assert_eq!(
        std::fs::read_to_string(site.join("app-1.0.dist-info/INSTALLER")).unwrap(),
        "pynbox\n"
    );
    // The newest wasidep, importable inside the sandbox.
    let out = run_py(
        &dest,
        "import app, wasidep, fancylib; print(app.VERSION, wasidep.VERSION)",
    );
    assert_ok(&out);
    assert_eq!(text(&out.stdout).trim(), "1.0 1.1");
    // The console script runs in the sandbox, with its arguments.
    let out = std::process::Command::new(dest.join("bin/app-hello"))
        .args(["a b", "--x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "hello from the sandbox wasi 1.1 ['a b', '--x']"
    );
    // Receipts: list, verify, pip list/freeze, the lock.
    let l = text(&run(&["list", &dest.display().to_string()]).stdout);
    assert!(l.contains("pypi-app") && l.contains("pypi-wasidep"), "{l}");
    assert_ok(&run(&["verify", &dest.display().to_string()]));
    let freeze = pip(&dest, cache.path(), &["freeze"]);
    assert_eq!(
        text(&freeze.stdout),
        "app==1.0\nfancylib==2.0\nwasidep==1.1\n"
    );
    let lock = std::fs::read_to_string(dest.join("pylock.toml")).unwrap();
    assert!(lock.contains("lock-version = \"1.0\""), "{lock}");
    assert!(
        lock.contains("name = \"app-1.0-py3-none-any.whl\""),
        "{lock}"
    );
    assert!(lock.contains("sha256 = "), "{lock}");
    // bin/pip is the same front.
    let out = std::process::Command::new(dest.join("bin/pip"))
        .arg("list")
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(
        text(&out.stdout).contains("wasidep 1.1") || text(&out.stdout).contains("wasidep  "),
        "{}",
        text(&out.stdout)
    );
    // Uninstalling everything restores the root and bin/ file for file.
    let out = pip(
        &dest,
        cache.path(),
        &["uninstall", "app", "wasidep", "fancylib"],
    );
    assert_ok(&out);
    assert_eq!(listing(&dest.join("root")), before_root);
    // (bin/pynbox, bin/pip and bin/run, a hard link of bin/pynbox, are the
    // runner's, refreshed to this pynbox.)
    let runner_files = |mut l: BTreeMap<String, String>| {
        l.remove("pynbox");
        l.remove("pip");
        l.remove("run");
        l
    };
    assert_eq!(
        runner_files(listing(&dest.join("bin"))),
        runner_files(before_bin)
    );
    assert_eq!(text(&pip(&dest, cache.path(), &["freeze"]).stdout), "");
    let e = fails_with(
        &pip(&dest, cache.path(), &["uninstall", "app"]),
        "app is not installed",
    );
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn uninstall_removes_only_that_distributions_files() {
    let idx = app_index(false);
    let (_d, dest) = fresh_dest();
    let cache = tempfile::tempdir().unwrap();
    assert_ok(&pip(
        &dest,
        cache.path(),
        &["install", "wasidep==1.0", "--index-url", &idx.url],
    ));
    let with_dep = listing(&dest.join("root"));
    assert_ok(&pip(
        &dest,
        cache.path(),
        &["install", "app", "--index-url", &idx.url],
    ));
    // wasidep 1.0 still fits app's requirement: kept, as pip keeps it.
    assert!(text(&pip(&dest, cache.path(), &["freeze"]).stdout).contains("wasidep==1.0"));
    let out = pip(&dest, cache.path(), &["uninstall", "app"]);
    assert_ok(&out);
    assert_eq!(listing(&dest.join("root")), with_dep);
    assert!(!dest.join("bin/app-hello").exists());
    // pynbox remove knows PyPI receipts too, and the lock follows.
    assert!(std::fs::read_to_string(dest.join("pylock.toml"))
        .unwrap()
        .contains("wasidep"));
    let out = run(&["remove", &dest.display().to_string(), "pypi-wasidep"]);
    assert_ok(&out);
    assert_eq!(text(&pip(&dest, cache.path(), &["freeze"]).stdout), "");
    assert!(!std::fs::read_to_string(dest.join("pylock.toml"))
        .unwrap()
        .contains("wasidep"));
}

#[test]
fn a_conflict_is_explained() {
    let idx = Index::start(true);
    let mut a = WheelSpec::new("left", "1.0");
    a.meta = "Requires-Dist: shared>=2";
    let mut b = WheelSpec::new("right", "1.0");
    b.meta = "Requires-Dist: shared<2";
    idx.wheel(&a);
    idx.wheel(&b);
    idx.wheel(&WheelSpec::new("shared", "1.0"));
    idx.wheel(&WheelSpec::new("shared", "2.0"));
    let (_d, dest) = fresh_dest();
    let cache = tempfile::tempdir().unwrap();
    let before = snapshot(&dest);
    let out = pip(
        &dest,
        cache.path(),
        &["install", "left", "right", "--index-url", &idx.url],
    );
    let e = fails_with(&out, "no set of versions satisfies the requirements");
    eprintln!("{e}");
    assert!(e.contains("left") && e.contains("right"), "{e}");
    assert!(e.contains("shared >=2") || e.contains("shared>=2"), "{e}");
    assert!(e.contains("shared <2") || e.contains("shared<2"), "{e}");
    assert!(
        snapshot(&dest) == before,
        "a failed resolution changed DEST"
    );
    // The JSON index serves PEP 658 metadata: resolving fetched no wheel.
    assert_eq!(idx.wheel_hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn yanked_pre_releases_and_requires_python_are_skipped() {
    for json in [true, false] {
        let idx = Index::start(json);
        idx.wheel(&WheelSpec::new("lib", "1.0"));
        let mut y = WheelSpec::new("lib", "1.1").build();
        y.yanked = true;
        idx.add("lib", y);
        idx.wheel(&WheelSpec::new("lib", "2.0b1"));
        // Newer, but for a later Python: said by the index...
        let mut rp = WheelSpec::new("lib", "1.3").build();
        rp.requires_python = Some(">=3.14".into());
        idx.add("lib", rp);
        // ...or only by the wheel's metadata.
        let mut m = WheelSpec::new("lib", "1.4");
        m.meta = "Requires-Python: >=3.99";
        idx.wheel(&m);
        let (_d, dest) = fresh_dest();
        let cache = tempfile::tempdir().unwrap();
        assert_ok(&pip(
            &dest,
            cache.path(),
            &["install", "lib", "--index-url", &idx.url],
        ));
        assert_eq!(
            text(&pip(&dest, cache.path(), &["freeze"]).stdout),
            "lib==1.0\n",
            "json={json}"
        );
        // A yanked release pinned exactly is taken, as pip does.
        assert_ok(&pip(
            &dest,
            cache.path(),
            &["install", "lib==1.1", "--index-url", &idx.url],
        ));
        assert_eq!(
            text(&pip(&dest, cache.path(), &["freeze"]).stdout),
            "lib==1.1\n"
        );
        // --pre --upgrade takes the pre-release.
        assert_ok(&pip(
            &dest,
            cache.path(),
            &["install", "--pre", "-U", "lib", "--index-url", &idx.url],
        ));
        assert_eq!(
            text(&pip(&dest, cache.path(), &["freeze"]).stdout),
            "lib==2.0b1\n"
        );
        let out = run_py(&dest, "import lib; print(lib.VERSION)");
        assert_eq!(text(&out.stdout).trim(), "2.0b1");
        // Only Requires-Python rules 1.4 out: asking for it says so.
        let e = fails_with(
            &pip(
                &dest,
                cache.path(),
                &["install", "lib==1.4", "--index-url", &idx.url],
            ),
            "requires Python >=3.99",
        );
        assert!(e.contains("lib"), "{e}");
    }
}

#[test]
fn a_hash_mismatch_is_refused_and_dest_is_unchanged() {
    let idx = Index::start(false);
    let mut f = WheelSpec::new("lib", "1.0").build();
    f.sha256 = hex(&Sha256::digest(b"something else"));
    idx.add("lib", f);
    let (_d, dest) = fresh_dest();
    let cache = tempfile::tempdir().unwrap();
    let before = snapshot(&dest);
    let out = pip(
        &dest,
        cache.path(),
        &["install", "lib", "--index-url", &idx.url],
    );
    let e = fails_with(&out, "does not match the sha256");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(snapshot(&dest) == before, "DEST changed");
    // Nothing unchecked stays in the cache.
    let cached = listing(cache.path());
    assert!(cached.keys().all(|k| k.ends_with('/')), "{cached:?}");
}

#[test]
fn hostile_wheels_are_refused_and_dest_is_unchanged() {
    let (_d, dest) = fresh_dest();
    let before = snapshot(&dest);
    let cases: Vec<(&str, String, &str)> = vec![
        ("../../../../escape.py", "unsafe path", "escape"),
        ("/etc/evil.py", "unsafe path", "absolute"),
        ("lib-1.0.data/../../x.py", "unsafe path", "data-dotdot"),
        ("lib-1.0.data/unknown/x.py", "unknown .data", "data-kind"),
    ]
    .into_iter()
    .map(|(p, e, n)| (p, e.to_string(), n))
    .collect();
    for (path, want, _) in &cases {
        let idx = Index::start(true);
        let mut w = WheelSpec::new("lib", "1.0");
        w.files
            .push((path.to_string(), b"print('pwned')\n".to_vec()));
        idx.wheel(&w);
        let cache = tempfile::tempdir().unwrap();
        let out = pip(
            &dest,
            cache.path(),
            &["install", "lib", "--index-url", &idx.url],
        );
        let e = fails_with(&out, want);
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(snapshot(&dest) == before, "DEST changed by {path}");
    }
    // Two entries for one installed file.
    let idx = Index::start(false);
    let mut w = WheelSpec::new("lib", "1.0");
    w.files.push((
        "lib-1.0.data/purelib/lib/__init__.py".into(),
        b"evil = 1\n".to_vec(),
    ));
    idx.wheel(&w);
    let cache = tempfile::tempdir().unwrap();
    let out = pip(
        &dest,
        cache.path(),
        &["install", "lib", "--index-url", &idx.url],
    );
    fails_with(&out, "two entries would both install");
    assert!(snapshot(&dest) == before, "DEST changed");
    // A file missing from RECORD, or with another hash there.
    let idx = Index::start(true);
    let di = "lib-1.0.dist-info";
    let entries = vec![
        ("lib/__init__.py".to_string(), b"x = 1\n".to_vec()),
        (
            format!("{di}/METADATA"),
            b"Metadata-Version: 2.1\nName: lib\nVersion: 1.0\n".to_vec(),
        ),
        (format!("{di}/WHEEL"), b"Wheel-Version: 1.0\n".to_vec()),
        (
            format!("{di}/RECORD"),
            format!("lib/__init__.py,sha256={},6\n", record_hash(b"x = 2\n")).into_bytes(),
        ),
    ];
    idx.add(
        "lib",
        IndexFile::new("lib-1.0-py3-none-any.whl", zip_bytes(&entries)),
    );
    let cache = tempfile::tempdir().unwrap();
    let out = pip(
        &dest,
        cache.path(),
        &["install", "lib", "--index-url", &idx.url],
    );
    fails_with(&out, "does not match its hash in RECORD");
    assert!(snapshot(&dest) == before, "DEST changed");
}

#[test]
fn sdist_only_dependencies_are_refused_naming_the_chain() {
    let idx = Index::start(true);
    let mut top = WheelSpec::new("top", "1.0");
    top.meta = "Requires-Dist: middle";
    let mut middle = WheelSpec::new("middle", "2.0");
    middle.meta = "Requires-Dist: native>=1";
    idx.wheel(&top);
    idx.wheel(&middle);
    // An sdist pynbox does not build (only .tar.gz and .zip are).
    idx.add(
        "native",
        IndexFile::new("native-1.0.tar.bz2", b"not really".to_vec()),
    );
    let mut plat = WheelSpec::new("native", "1.0");
    plat.tag = "cp313-cp313-manylinux_2_17_x86_64";
    idx.wheel(&plat);
    let (_d, dest) = fresh_dest();
    let cache = tempfile::tempdir().unwrap();
    let out = pip(
        &dest,
        cache.path(),
        &["install", "top", "--index-url", &idx.url],
    );
    let e = fails_with(&out, "cannot install native");
    eprintln!("{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("your request -> top 1.0 -> middle 2.0 -> native"),
        "{e}"
    );
    assert!(
        e.contains("native 1.0 offers only native-1.0.tar.bz2 and 1 wheel for other platforms"),
        "{e}"
    );
    let out = pip(
        &dest,
        cache.path(),
        &["install", "nothere", "--index-url", &idx.url],
    );
    fails_with(&out, "cannot install nothere: it is not offered by");
    let mut future = WheelSpec::new("future_only", "1.0").build();
    future.requires_python = Some(">=3.14".into());
    idx.add("future-only", future);
    let out = pip(
        &dest,
        cache.path(),
        &["install", "future-only", "--index-url", &idx.url],
    );
    fails_with(
        &out,
        "has no release whose Requires-Python admits the sandbox's Python 3.13.5",
    );
}

#[test]
fn lock_then_sync_offline_reproduces_the_set() {
    let idx = app_index(true);
    let (_d, dest) = fresh_dest();
    let cache = tempfile::tempdir().unwrap();
    assert_ok(&pip(
        &dest,
        cache.path(),
        &["install", "app", "--index-url", &idx.url],
    ));
    let lock = std::fs::read_to_string(dest.join("pylock.toml")).unwrap();
    let saved = _d.path().join("pylock.toml");
    std::fs::write(&saved, &lock).unwrap();
    let freeze = text(&pip(&dest, cache.path(), &["freeze"]).stdout);
    drop(idx);
    // A second DEST, with no index at all: everything from the cache.
    let (_d2, other) = fresh_dest();
    assert_ok(&pip(
        &other,
        cache.path(),
        &["install", "--no-index", "-r", &saved.display().to_string()],
    ));
    assert_eq!(text(&pip(&other, cache.path(), &["freeze"]).stdout), freeze);
    let out = run_py(&other, "import app, wasidep; print(wasidep.VERSION)");
    assert_ok(&out);
    assert_eq!(text(&out.stdout).trim(), "1.1");
    // sync removes what the lock does not list.
    let empty = _d.path().join("pylock.empty.toml");
    std::fs::write(&empty, "lock-version = \"1.0\"\ncreated-by = \"test\"\n").unwrap();
    assert_ok(&pip(
        &other,
        cache.path(),
        &["sync", "--no-index", &empty.display().to_string()],
    ));
    assert_eq!(text(&pip(&other, cache.path(), &["freeze"]).stdout), "");
    assert_ok(&pip(
        &other,
        cache.path(),
        &["sync", "--no-index", &saved.display().to_string()],
    ));
    assert_eq!(text(&pip(&other, cache.path(), &["freeze"]).stdout), freeze);
    // Without the cache, offline cannot work: said in one line.
    let empty_cache = tempfile::tempdir().unwrap();
    let (_d3, third) = fresh_dest();
    let e = fails_with(
        &pip(
            &third,
            empty_cache.path(),
            &["sync", "--no-index", &saved.display().to_string()],
        ),
        "is not in the cache",
    );
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn plain_http_index_is_refused_unless_loopback_or_allowed() {
    let (_d, dest) = fresh_dest();
    let cache = tempfile::tempdir().unwrap();
    let out = pip(
        &dest,
        cache.path(),
        &["install", "x", "--index-url", "http://192.0.2.1/simple"],
    );
    let e = fails_with(&out, "--allow-insecure-http");
    assert_eq!(e.lines().count(), 1, "{e}");
    let out = pip(
        &dest,
        cache.path(),
        &["install", "x[", "--index-url", "http://127.0.0.1:1/simple"],
    );
    let e = fails_with(&out, "is not a valid requirement");
    assert_eq!(e.lines().count(), 1, "{e}");
}

/// The python package brings tzdata into site-packages (for zoneinfo): a
/// requirement on it is met by that copy, never by the index's.
#[test]
fn distributions_of_our_own_packages_satisfy_requirements() {
    let idx = Index::start(true);
    let mut w = WheelSpec::new("needs_tz", "1.0");
    w.meta = "Requires-Dist: tzdata>=2020.1";
    idx.wheel(&w);
    idx.wheel(&WheelSpec::new("tzdata", "2099.1"));
    let (_d, dest) = fresh_dest();
    let cache = tempfile::tempdir().unwrap();
    let tz = dest.join(SITE).join("tzdata/__init__.py");
    let before = std::fs::read(&tz).unwrap();
    let out = pip(
        &dest,
        cache.path(),
        &["install", "needs-tz", "--index-url", &idx.url],
    );
    assert_ok(&out);
    assert_eq!(
        text(&pip(&dest, cache.path(), &["freeze"]).stdout),
        "needs-tz==1.0\n"
    );
    assert_eq!(std::fs::read(&tz).unwrap(), before);
    let e = fails_with(
        &pip(
            &dest,
            cache.path(),
            &["install", "tzdata>=2099", "--index-url", &idx.url],
        ),
        "is part of pynbox's package python",
    );
    assert_eq!(
        e.lines().filter(|l| l.starts_with("pynbox:")).count(),
        1,
        "{e}"
    );
}

/// Hash-checking mode, as pip's: every distribution pinned and hashed.
#[test]
fn hash_checking_mode_needs_every_distribution_pinned_and_hashed() {
    let idx = Index::start(true);
    let mut lib = WheelSpec::new("lib", "1.0");
    lib.meta = "Requires-Dist: dep";
    let lib = lib.build();
    let dep = WheelSpec::new("dep", "1.0").build();
    let (lib_sha, dep_sha) = (lib.sha256.clone(), dep.sha256.clone());
    idx.add("lib", lib);
    idx.add("dep", dep);
    let (d, dest) = fresh_dest();
    let cache = tempfile::tempdir().unwrap();
    let req = d.path().join("requirements.txt");
    let install = |content: &str| {
        std::fs::write(&req, content).unwrap();
        let r = req.display().to_string();
        pip(
            &dest,
            cache.path(),
            &["install", "-r", &r, "--index-url", &idx.url],
        )
    };
    let e = fails_with(
        &install(&format!("lib==1.0 --hash=sha256:{lib_sha}\n")),
        "dep 1.0 has no --hash",
    );
    assert_eq!(e.lines().count(), 1, "{e}");
    fails_with(
        &install(&format!(
            "lib==1.0 --hash=sha256:{dep_sha}\ndep==1.0 --hash=sha256:{dep_sha}\n"
        )),
        "offers no file with a sha256 that --hash allows",
    );
    fails_with(
        &install(&format!("lib --hash=sha256:{lib_sha}\n")),
        "needs ==VERSION and --hash",
    );
    fails_with(
        &pip(
            &dest,
            cache.path(),
            &[
                "install",
                "--require-hashes",
                "lib==1.0",
                "--index-url",
                &idx.url,
            ],
        ),
        "needs ==VERSION and --hash",
    );
    assert_eq!(text(&pip(&dest, cache.path(), &["freeze"]).stdout), "");
    assert_ok(&install(&format!(
        "lib==1.0 \\\n    --hash=sha256:{lib_sha}\ndep==1.0 --hash=sha256:{dep_sha}\n"
    )));
    assert_eq!(
        text(&pip(&dest, cache.path(), &["freeze"]).stdout),
        "dep==1.0\nlib==1.0\n"
    );
}

/// `pynbox pip --dest DEST install REQS...` from the real PyPI, with a
/// download cache of its own (TLS-inspecting networks: set SSL_CERT_FILE).
fn real_pypi_install(dest: &Path, reqs: &[&str]) -> Output {
    let cache = tempfile::tempdir().unwrap();
    let mut c = pynbox();
    if let Some(f) = std::env::var_os("SSL_CERT_FILE") {
        c.env("SSL_CERT_FILE", f);
    }
    c.env("PYNBOX_PYPI_CACHE", cache.path())
        .args(["pip", "--dest"])
        .arg(dest)
        .arg("install")
        .args(reqs)
        .arg("--no-preinit")
        .output()
        .unwrap()
}

/// The real PyPI, when the network allows: `cargo test --release --test
/// pip -- --ignored` (TLS-inspecting networks: set SSL_CERT_FILE).
#[test]
#[ignore = "needs the internet (pypi.org)"]
fn real_pypi_requests_attrs_dateutil() {
    let (_d, dest) = fresh_dest();
    let out = real_pypi_install(&dest, &["requests", "attrs", "python-dateutil"]);
    assert_ok(&out);
    let out = run_py(
        &dest,
        "import requests, attrs, dateutil.parser; print(dateutil.parser.parse('2024-02-03').month)",
    );
    assert_ok(&out);
    assert_eq!(text(&out.stdout).trim(), "2");
}

/// --extra-index-url, -c constraints, --no-deps and --find-links with
/// --no-index.
#[test]
fn index_options_constraints_no_deps_and_find_links() {
    let first = Index::start(true);
    let second = Index::start(false);
    let mut app = WheelSpec::new("app", "1.0");
    app.meta = "Requires-Dist: wasidep>=1.0; sys_platform == \"wasi\"";
    first.wheel(&app);
    second.wheel(&WheelSpec::new("wasidep", "1.0"));
    second.wheel(&WheelSpec::new("wasidep", "1.1"));
    let (d, dest) = fresh_dest();
    let cache = tempfile::tempdir().unwrap();
    let constraints = d.path().join("constraints.txt");
    std::fs::write(&constraints, "wasidep<1.1\nnever-installed==3\n").unwrap();
    let c = constraints.display().to_string();
    let out = pip(
        &dest,
        cache.path(),
        &[
            "install",
            "app",
            "-i",
            &first.url,
            "--extra-index-url",
            &second.url,
            "-c",
            &c,
        ],
    );
    assert_ok(&out);
    assert_eq!(
        text(&pip(&dest, cache.path(), &["freeze"]).stdout),
        "app==1.0\nwasidep==1.0\n"
    );
    // --no-deps: only what is named.
    let (_d2, other) = fresh_dest();
    let out = pip(
        &other,
        cache.path(),
        &["install", "--no-deps", "app", "-i", &first.url],
    );
    assert_ok(&out);
    assert_eq!(
        text(&pip(&other, cache.path(), &["freeze"]).stdout),
        "app==1.0\n"
    );
    // A directory of wheels, no index at all; the lock names the file.
    let links = d.path().join("wheels");
    std::fs::create_dir(&links).unwrap();
    let w = WheelSpec::new("local_only", "0.5").build();
    std::fs::write(links.join(&w.filename), &w.data).unwrap();
    let l = links.display().to_string();
    let out = pip(
        &other,
        cache.path(),
        &["install", "local-only", "--no-index", "--find-links", &l],
    );
    assert_ok(&out);
    let out = run_py(&other, "import local_only; print(local_only.VERSION)");
    assert_eq!(text(&out.stdout).trim(), "0.5");
    let lock = std::fs::read_to_string(other.join("pylock.toml")).unwrap();
    assert!(lock.contains("path = "), "{lock}");
}

/// A download cut halfway is resumed from where it stopped (a Range
/// request), over both index forms.
#[test]
fn a_cut_download_is_resumed() {
    for json in [true, false] {
        let idx = Index::start(json);
        let mut w = WheelSpec::new("big", "1.0");
        let mut data = vec![0u8; 3 << 20];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i * 7919 % 251) as u8;
        }
        w.files.push(("big/data.bin".into(), data.clone()));
        idx.wheel(&w);
        let (_d, dest) = fresh_dest();
        let cache = tempfile::tempdir().unwrap();
        idx.cut_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let out = pip(
            &dest,
            cache.path(),
            &["install", "big", "--index-url", &idx.url],
        );
        assert_ok(&out);
        assert!(idx.wheel_hits.load(std::sync::atomic::Ordering::SeqCst) >= 2);
        assert!(!idx.cut_next.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(idx.range_hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(
            std::fs::read(dest.join(SITE).join("big/data.bin")).unwrap(),
            data
        );
        // No partial download is left in the cache.
        let left: Vec<String> = listing(cache.path())
            .into_keys()
            .filter(|k| k.ends_with(".part"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

/// A source distribution `name-version.tar.gz`: `files` below its
/// top-level directory `name-version/`, plus a PKG-INFO of Metadata-Version
/// `mv` with `meta` lines. Paths are written into the tar headers as they
/// are (so a test can write hostile ones); `links` are symbolic links.
fn sdist_with(
    name: &str,
    version: &str,
    mv: &str,
    meta: &str,
    files: &[(String, Vec<u8>)],
    links: &[(&str, &str)],
) -> IndexFile {
    let top = format!("{name}-{version}");
    let mut entries: Vec<(String, Vec<u8>)> = vec![(
        format!("{top}/PKG-INFO"),
        format!("Metadata-Version: {mv}\nName: {name}\nVersion: {version}\n{meta}\n").into_bytes(),
    )];
    for (p, d) in files {
        let p = if p.starts_with("../") || p.starts_with('/') {
            p.clone()
        } else {
            format!("{top}/{p}")
        };
        entries.push((p, d.clone()));
    }
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let raw_name = |h: &mut tar::Header, p: &str| {
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..p.len()].copy_from_slice(p.as_bytes());
    };
    for (p, d) in &entries {
        let mut h = tar::Header::new_ustar();
        raw_name(&mut h, p);
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, d.as_slice()).unwrap();
    }
    for (p, to) in links {
        let mut h = tar::Header::new_ustar();
        raw_name(&mut h, &format!("{top}/{p}"));
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_link_name(to).unwrap();
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
    }
    let data = b.into_inner().unwrap().finish().unwrap();
    IndexFile::new(&format!("{name}-{version}.tar.gz"), data)
}

/// A PEP 517 backend in the sdist itself (`backend-path = ["."]`), so no
/// setuptools is needed: it zips `src/` into a pure wheel whose METADATA
/// has `requires`, after running `before` (the test's Python code, at
/// the start of `build_wheel`).
fn in_tree_backend(
    name: &str,
    version: &str,
    requires: &str,
    before: &str,
) -> Vec<(String, Vec<u8>)> {
    let backend = format!(
        r#"import base64, hashlib, os, zipfile
NAME, VERSION = {name:?}, {version:?}

def _hash(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
{before}
    files = {{}}
    for root, dirs, names in os.walk("src"):
        for n in names:
            p = os.path.join(root, n)
            with open(p, "rb") as f:
                files[os.path.relpath(p, "src")] = f.read()
    di = NAME + "-" + VERSION + ".dist-info"
    files[di + "/METADATA"] = ("Metadata-Version: 2.1\nName: " + NAME + "\nVersion: " + VERSION + "\n" + {requires:?} + "\n").encode()
    files[di + "/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test-backend\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = "".join(p + "," + _hash(d) + "," + str(len(d)) + "\n" for p, d in files.items())
    files[di + "/RECORD"] = (record + di + "/RECORD,,\n").encode()
    wheel = NAME + "-" + VERSION + "-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w") as z:
        for p, d in files.items():
            z.writestr(p, d)
    return wheel
"#
    );
    vec![
        (
            "pyproject.toml".into(),
            b"[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\".\"]\n"
                .to_vec(),
        ),
        ("backend.py".into(), backend.into_bytes()),
        (
            format!("src/{name}/__init__.py"),
            format!("VERSION = {version:?}\n").into_bytes(),
        ),
    ]
}

/// What the hostile build below tries, each recorded in the wheel it
/// makes: reading the host's /etc/passwd, a socket, writing outside its
/// scratch directories.
const PROBES: &str = r#"    results = {}
    def attempt(label, f):
        try:
            results[label] = "done: " + repr(f())[:200]
        except BaseException as e:
            results[label] = "error: " + type(e).__name__
    attempt("passwd", lambda: open("/etc/passwd").read())
    def sock():
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect(("127.0.0.1", 80))
    attempt("socket", sock)
    attempt("root", lambda: open("/python/pwned.txt", "w").write("x"))
    attempt("env", lambda: open("/build/env/pwned.txt", "w").write("x"))
    attempt("subprocess", lambda: __import__("subprocess").run(["sh", "-c", "id"]))
    with open("src/hello/probes.py", "w") as f:
        f.write("RESULTS = " + repr(results) + "\n")
"#;

/// An sdist-only release is built inside the sandbox: its metadata
/// (dynamic: Metadata-Version 2.1) by a build during resolution, its
/// dependency resolved from that, its hostile attempts refused by the
/// sandbox; the wheel is cached under the sdist's sha256, the lock records
/// the sdist, and an offline install from the lock takes the cached wheel.
#[test]
fn an_sdist_is_built_inside_the_sandbox_cached_and_locked() {
    let idx = Index::start(true);
    idx.wheel(&WheelSpec::new("wasidep", "1.0"));
    idx.add(
        "hello",
        sdist_with(
            "hello",
            "1.0",
            "2.1",
            "",
            &in_tree_backend("hello", "1.0", "Requires-Dist: wasidep", PROBES),
            &[("docs/README", "../backend.py")],
        ),
    );
    let (_d, dest) = fresh_dest();
    let cache = tempfile::tempdir().unwrap();
    let out = pip(
        &dest,
        cache.path(),
        &["install", "hello", "--index-url", &idx.url],
    );
    assert_ok(&out);
    let e = text(&out.stderr);
    assert_eq!(e.matches("building hello 1.0").count(), 1, "{e}");
    assert!(e.contains("installed wasidep 1.0"), "{e}");
    let out = run_py(
        &dest,
        "import hello, wasidep, hello.probes as p\nfor k, v in sorted(p.RESULTS.items()): print(k, v)",
    );
    assert_ok(&out);
    let probes = text(&out.stdout);
    eprintln!("{probes}");
    for line in [
        "passwd error: FileNotFoundError",
        "root error: ",
        "env error: ",
        "socket error: ",
        "subprocess error: ",
    ] {
        assert!(probes.contains(line), "{line:?} not in:\n{probes}");
    }
    assert!(!probes.contains("done"), "{probes}");
    assert!(!dest.join("root/python/pwned.txt").exists());
    let lock = std::fs::read_to_string(dest.join("pylock.toml")).unwrap();
    assert!(
        lock.contains("[packages.sdist]\nname = \"hello-1.0.tar.gz\""),
        "{lock}"
    );
    let saved = _d.path().join("pylock.toml");
    std::fs::write(&saved, &lock).unwrap();
    drop(idx);
    // Offline, from the caches: the built wheel is not built again.
    let (_d2, other) = fresh_dest();
    let out = pip(
        &other,
        cache.path(),
        &["sync", "--no-index", &saved.display().to_string()],
    );
    assert_ok(&out);
    assert!(
        !text(&out.stderr).contains("building"),
        "{}",
        text(&out.stderr)
    );
    assert_ok(&run_py(&other, "import hello, wasidep"));
}

/// Build requirements are resolved from the index as wheels and installed
/// into a throwaway environment (not DEST), with what the backend's
/// get_requires_for_build_wheel adds; PKG-INFO 2.2 is read for resolution
/// without a build.
#[test]
fn build_requirements_are_fetched_as_wheels_into_a_throwaway_environment() {
    let idx = Index::start(false);
    let mut backend = WheelSpec::new("minibackend", "1.0");
    let tree = in_tree_backend("tool", "2.0", "", "    import buildhelper");
    let code = String::from_utf8(tree[1].1.clone())
        .unwrap()
        .replace("    return []\n", "    return [\"buildhelper>=1\"]\n");
    backend.files = vec![("minibackend/__init__.py".into(), code.into_bytes())];
    idx.wheel(&backend);
    let mut helper = WheelSpec::new("buildhelper", "1.0");
    helper.files = vec![("buildhelper.py".into(), b"".to_vec())];
    idx.wheel(&helper);
    let mut files = tree;
    files[0].1 =
        b"[build-system]\nrequires = [\"minibackend>=1\"]\nbuild-backend = \"minibackend\"\n"
            .to_vec();
    files.remove(1);
    idx.add("tool", sdist_with("tool", "2.0", "2.2", "", &files, &[]));
    let (_d, dest) = fresh_dest();
    let cache = tempfile::tempdir().unwrap();
    let out = pip(
        &dest,
        cache.path(),
        &["install", "tool", "--index-url", &idx.url],
    );
    assert_ok(&out);
    let freeze = text(&pip(&dest, cache.path(), &["freeze"]).stdout);
    assert_eq!(
        freeze, "tool==2.0\n",
        "the build environment leaked into DEST"
    );
    assert_ok(&run_py(&dest, "import tool; assert tool.VERSION == '2.0'"));
    // Without the extra requirement on the index, the build cannot start.
    idx.files.lock().unwrap().remove("buildhelper");
    let (_d2, other) = fresh_dest();
    let cache2 = tempfile::tempdir().unwrap();
    let e = fails_with(
        &pip(
            &other,
            cache2.path(),
            &["install", "tool", "--index-url", &idx.url],
        ),
        "build requirements: cannot install buildhelper",
    );
    assert!(!e.contains("panicked"), "{e}");
}

/// Hostile or failing sdists: a `../` member and a link out of the tree
/// refused before any build; a build that never ends stopped by
/// --build-timeout; one that needs a C compiler explained in one line.
/// DEST is unchanged each time.
#[test]
fn hostile_and_failing_sdists_leave_dest_unchanged() {
    let idx = Index::start(true);
    let mut escape = in_tree_backend("escape", "1.0", "", "");
    escape.push(("../escaped.txt".into(), b"x".to_vec()));
    idx.add(
        "escape",
        sdist_with("escape", "1.0", "2.2", "", &escape, &[]),
    );
    idx.add(
        "linker",
        sdist_with(
            "linker",
            "1.0",
            "2.2",
            "",
            &in_tree_backend("linker", "1.0", "", ""),
            &[("passwd", "../../../../etc/passwd")],
        ),
    );
    idx.add(
        "forever",
        sdist_with(
            "forever",
            "1.0",
            "2.2",
            "",
            &in_tree_backend("forever", "1.0", "", "    while True:\n        pass"),
            &[],
        ),
    );
    // What setuptools does for a C extension: announce it and spawn the
    // compiler, which WASI cannot.
    let compile = "    print(\"running build_ext\")\n    print(\"building 'fast' extension\")\n    import subprocess\n    subprocess.check_call([\"cc\", \"-c\", \"fast.c\"])";
    idx.add(
        "native",
        sdist_with(
            "native",
            "1.0",
            "2.2",
            "",
            &in_tree_backend("native", "1.0", "", compile),
            &[],
        ),
    );
    let (_d, dest) = fresh_dest();
    let cache = tempfile::tempdir().unwrap();
    let before = snapshot(&dest);
    let e = fails_with(
        &pip(
            &dest,
            cache.path(),
            &["install", "escape", "--index-url", &idx.url],
        ),
        "unsafe path '../escaped.txt' in the source distribution: refused",
    );
    assert!(!e.contains("  | "), "a build ran:\n{e}");
    fails_with(
        &pip(
            &dest,
            cache.path(),
            &["install", "linker", "--index-url", &idx.url],
        ),
        "is a link to '../../../../etc/passwd', outside the source tree: refused",
    );
    let started = std::time::Instant::now();
    let e = fails_with(
        &pip(
            &dest,
            cache.path(),
            &["install", "forever", "--index-url", &idx.url, "--build-timeout", "3"],
        ),
        "cannot build forever 1.0 from its source distribution inside the sandbox: the build ran past its time limit of 3 s",
    );
    assert!(started.elapsed().as_secs() < 60, "{e}");
    let e = fails_with(
        &pip(&dest, cache.path(), &["install", "native", "--index-url", &idx.url]),
        "cannot build native 1.0 from its source distribution inside the sandbox: the build needs a C compiler (the sandbox has none)",
    );
    eprintln!("{e}");
    assert!(e.contains("  | building 'fast' extension"), "{e}");
    assert_eq!(
        e.lines().filter(|l| l.starts_with("pynbox:")).count(),
        1,
        "{e}"
    );
    // DEST/cache is the machine-code cache that loading the building
    // interpreter may fill: not part of what is installed.
    let installed = |s: Vec<(PathBuf, String)>| -> Vec<(PathBuf, String)> {
        s.into_iter()
            .filter(|(p, _)| !p.starts_with("cache"))
            .collect()
    };
    let after = installed(snapshot(&dest));
    let changed: Vec<_> = after.iter().filter(|e| !before.contains(e)).collect();
    assert!(after == installed(before), "DEST changed: {changed:?}");
    assert!(!_d.path().join("escaped.txt").exists());
}

/// MarkupSafe publishes no wheel for wasi: its sdist is built in the
/// sandbox, where its C speedups cannot compile and it falls back to pure
/// Python (`cargo test --release --test pip -- --ignored`).
#[test]
#[ignore = "needs the internet (pypi.org)"]
fn real_pypi_markupsafe_from_its_sdist() {
    let (_d, dest) = fresh_dest();
    let out = real_pypi_install(&dest, &["markupsafe"]);
    assert_ok(&out);
    assert!(text(&out.stderr).contains("building markupsafe"));
    let out = run_py(&dest, "import markupsafe; print(markupsafe.escape('<a>'))");
    assert_ok(&out);
    assert_eq!(text(&out.stdout).trim(), "&lt;a&gt;");
}
