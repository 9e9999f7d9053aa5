//! `pynbox install`, `list`, `verify`, `remove` and `DEST/bin/run`, with
//! packages made here (the probe guest stands in for a real program), and
//! hostile archives that must be refused.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use pynbox::packages::{create_archive, Command, PackageInfo};

/// Makes package `name` `version` in `repo` from (path, content) pairs.
fn make_pkg(
    repo: &Path,
    name: &str,
    version: &str,
    files: &[(&str, &[u8])],
    depends: &[&str],
) -> PathBuf {
    make_pkg_cmds(repo, name, version, files, depends, BTreeMap::new())
}

fn make_pkg_cmds(
    repo: &Path,
    name: &str,
    version: &str,
    files: &[(&str, &[u8])],
    depends: &[&str],
    commands: BTreeMap<String, Command>,
) -> PathBuf {
    make_pkg_full(repo, name, version, files, depends, commands, None)
}

fn make_pkg_full(
    repo: &Path,
    name: &str,
    version: &str,
    files: &[(&str, &[u8])],
    depends: &[&str],
    commands: BTreeMap<String, Command>,
    interpreter: Option<&str>,
) -> PathBuf {
    let src = tempfile::tempdir().unwrap();
    for (p, data) in files {
        let f = src.path().join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, data).unwrap();
    }
    let deps: Vec<String> = depends.iter().map(|s| s.to_string()).collect();
    let info = PackageInfo {
        name: name.into(),
        version: version.into(),
        depends: deps,
        commands,
        interpreter: interpreter.map(str::to_string),
    };
    let a = create_archive(&info, src.path(), repo).unwrap();
    pynbox::packages::write_index(repo).unwrap();
    a
}

fn install(dest: &Path, repo: &str, pkgs: &[&str]) -> std::process::Output {
    let mut args = vec!["install".to_string(), dest.display().to_string()];
    args.extend(pkgs.iter().map(|s| s.to_string()));
    args.extend(["--repo".to_string(), repo.to_string()]);
    pynbox().args(&args).output().unwrap()
}

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn list(dest: &Path) -> String {
    text(&run(&["list", &dest.display().to_string()]).stdout)
}

fn probe_bytes() -> Vec<u8> {
    std::fs::read(guest("probe")).unwrap()
}

#[test]
fn install_skip_upgrade_verify_remove() {
    let repo = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().join("sandbox");
    let probe = probe_bytes();
    make_pkg(
        repo.path(),
        "demo",
        "1.0-1",
        &[
            ("demo/probe.wasm", &probe),
            ("demo/old.txt", b"old"),
            ("demo/keep.txt", b"v1"),
        ],
        &[],
    );
    let r = repo.path().display().to_string();

    let out = install(&dest, &r, &["demo"]);
    ok(&out);
    assert!(text(&out.stderr).contains("installed demo 1.0-1"));
    assert!(dest.join("root/demo/old.txt").exists());
    assert!(list(&dest).contains("demo         1.0-1"));
    assert!(list(&dest).contains("runner"));
    // The runner runs programs inside the install, with / mounted from root.
    let out = Process::new(dest.join("bin/run"))
        .args(["/demo/probe.wasm", "ls", "/", "read", "/demo/keep.txt"])
        .output()
        .unwrap();
    has_line(&out, "ls /: ok demo");
    has_line(&out, "read /demo/keep.txt: ok v1");

    // The same version again is skipped.
    let out = install(&dest, &r, &["demo"]);
    ok(&out);
    assert!(
        text(&out.stderr).contains("demo 1.0-1 is already installed (skipped)"),
        "{}",
        text(&out.stderr)
    );

    // A newer version replaces it and leaves no stale file.
    make_pkg(
        repo.path(),
        "demo",
        "1.10-1",
        &[("demo/probe.wasm", &probe), ("demo/keep.txt", b"v2")],
        &[],
    );
    ok(&install(&dest, &r, &["demo"]));
    assert!(list(&dest).contains("1.10-1"), "{}", list(&dest));
    assert!(
        !dest.join("root/demo/old.txt").exists(),
        "stale file of the old version"
    );
    assert_eq!(
        std::fs::read(dest.join("root/demo/keep.txt")).unwrap(),
        b"v2"
    );
    // And an explicit older version goes back.
    ok(&install(&dest, &r, &["demo=1.0-1"]));
    assert!(dest.join("root/demo/old.txt").exists());

    // verify: clean, then a changed and a missing file are reported.
    let out = run(&["verify", &dest.display().to_string()]);
    ok(&out);
    assert!(text(&out.stdout).contains("demo 1.0-1: ok (3 files)"));
    std::fs::write(dest.join("root/demo/keep.txt"), b"tampered").unwrap();
    std::fs::remove_file(dest.join("root/demo/old.txt")).unwrap();
    let out = run(&["verify", &dest.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let o = text(&out.stdout);
    assert!(o.contains("demo 1.0-1: changed: root/demo/keep.txt"), "{o}");
    assert!(o.contains("demo 1.0-1: missing: root/demo/old.txt"), "{o}");

    // remove takes exactly the package's files.
    std::fs::write(dest.join("root/mine.txt"), b"user file").unwrap();
    ok(&run(&["remove", &dest.display().to_string(), "demo"]));
    assert!(!dest.join("root/demo").exists());
    assert!(dest.join("root/mine.txt").exists());
    assert!(!list(&dest).contains("demo"));
    let out = run(&["remove", &dest.display().to_string(), "runner"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn dependencies_are_installed_and_protected() {
    let repo = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    make_pkg(repo.path(), "base", "1", &[("base/a", b"a")], &[]);
    make_pkg(repo.path(), "app", "1", &[("app/b", b"b")], &["base"]);
    ok(&install(
        d.path(),
        &repo.path().display().to_string(),
        &["app"],
    ));
    let l = list(d.path());
    assert!(l.contains("base") && l.contains("app"), "{l}");
    let out = run(&["remove", &d.path().display().to_string(), "base"]);
    assert!(
        text(&out.stderr).contains("app depends on base"),
        "{}",
        text(&out.stderr)
    );
    ok(&run(&[
        "remove",
        &d.path().display().to_string(),
        "app",
        "base",
    ]));
}

#[test]
fn missing_package_says_how_to_get_it() {
    let repo = tempfile::tempdir().unwrap();
    make_pkg(repo.path(), "demo", "1", &[("demo/a", b"a")], &[]);
    let d = tempfile::tempdir().unwrap();
    let out = install(d.path(), &repo.path().display().to_string(), &["lxml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("pynbox build lxml"),
        "{}",
        text(&out.stderr)
    );
    let out = install(d.path(), &repo.path().display().to_string(), &["demo=9"]);
    assert!(
        text(&out.stderr).contains("available versions: 1"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn install_is_relocatable_and_run_prints_usage() {
    let repo = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    make_pkg(
        repo.path(),
        "demo",
        "1",
        &[("demo/probe.wasm", &probe_bytes())],
        &[],
    );
    let first = d.path().join("first");
    ok(&install(
        &first,
        &repo.path().display().to_string(),
        &["demo"],
    ));
    let moved = d.path().join("moved place");
    std::fs::rename(&first, &moved).unwrap();
    let out = Process::new(moved.join("bin/run"))
        .args(["/demo/probe.wasm", "ls", "/demo"])
        .output()
        .unwrap();
    has_line(&out, "ls /demo: ok probe.wasm");
    let out = Process::new(moved.join("bin/run")).output().unwrap();
    let o = text(&out.stdout);
    assert!(o.contains("Usage:"), "{o}");
    assert!(
        o.contains(&format!(
            "Default mount, used when no -m is given: {}/root:/:ro",
            moved.canonicalize().unwrap().display()
        )),
        "{o}"
    );
    // Every option of pynbox run passes through bin/run.
    let data = tempfile::tempdir().unwrap();
    let out = Process::new(moved.join("bin/run"))
        .args([
            "-m",
            &format!("{}:/:ro", moved.join("root").display()),
            "-m",
            &format!("{}:/data:rw", data.path().display()),
            "-E",
            "K=V",
            "--timeout",
            "10",
            "/demo/probe.wasm",
            "write",
            "/data/x=1",
            "env",
            "K",
        ])
        .output()
        .unwrap();
    has_line(&out, "write /data/x=1: ok");
    has_line(&out, "env K: ok V");
}

#[test]
fn package_commands_run_guest_programs() {
    let repo = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let mut cmds = BTreeMap::new();
    cmds.insert(
        "check_demo".to_string(),
        Command {
            steps: vec![
                vec![
                    "/demo/probe.wasm".into(),
                    "write".into(),
                    "/scratch/f=1".into(),
                ],
                vec![
                    "/demo/probe.wasm".into(),
                    "ls".into(),
                    "/scratch".into(),
                    "args".into(),
                    "it's $(quoted)".into(),
                ],
            ],
            scratch: Some("/scratch".into()),
        },
    );
    make_pkg_cmds(
        repo.path(),
        "demo",
        "1",
        &[("demo/probe.wasm", &probe_bytes())],
        &[],
        cmds,
    );
    ok(&install(
        d.path(),
        &repo.path().display().to_string(),
        &["demo"],
    ));
    let out = Process::new(d.path().join("bin/check_demo"))
        .output()
        .unwrap();
    let o = text(&out.stdout);
    // The steps of one run share a fresh scratch directory; words are
    // passed unchanged.
    assert!(o.contains("ls /scratch: ok f\n"), "{o}");
    assert!(o.contains("|args|it's $(quoted)"), "{o}");
    assert!(o.trim_end().ends_with("All passed"), "{o}");
    let out = run(&["verify", &d.path().display().to_string()]);
    ok(&out);
}

/// Writes a raw tar.zst with a manifest listing `files`, and entries as
/// given: (raw path bytes, entry type, data). The manifest is honest about
/// hashes unless the test lies in it.
/// One raw tar entry: path bytes, type, data, link target.
type RawEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8], Option<&'a str>);
type OwnedEntry = (Vec<u8>, tar::EntryType, Vec<u8>, Option<String>);

fn raw_archive(
    dir: &Path,
    name: &str,
    manifest: &serde_json::Value,
    entries: &[RawEntry],
) -> PathBuf {
    let path = dir.join(format!("{name}.1.tar.zst"));
    let f = std::fs::File::create(&path).unwrap();
    let mut enc = zstd::Encoder::new(f, 3).unwrap();
    {
        let mut buf = Vec::new();
        let mut push = |raw: &[u8], kind: tar::EntryType, data: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_old();
            {
                let old = h.as_old_mut();
                old.name = [0; 100];
                old.name[..raw.len()].copy_from_slice(raw);
            }
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if let Some(l) = link {
                let old = h.as_old_mut();
                old.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
            h.set_cksum();
            buf.extend_from_slice(h.as_bytes());
            buf.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            buf.extend(std::iter::repeat_n(0u8, pad));
        };
        let m = serde_json::to_vec(manifest).unwrap();
        push(b"manifest.json", tar::EntryType::Regular, &m, None);
        for (raw, kind, data, link) in entries {
            push(raw, *kind, data, *link);
        }
        buf.extend(std::iter::repeat_n(0u8, 1024));
        enc.write_all(&buf).unwrap();
    }
    enc.finish().unwrap();
    path
}

fn sha(data: &[u8]) -> String {
    pynbox::packages::sha256_hex(data)
}

#[test]
fn hostile_archives_are_refused_and_dest_is_unchanged() {
    let outside = tempfile::tempdir().unwrap();
    let evil = b"evil";
    let manifest = |path: &str| serde_json::json!({"format": 1, "name": "evil", "version": "1", "files": [{"path": path, "size": 4, "sha256": sha(evil)}]});
    let escape = format!(
        "root/../../../../../../..{}/pwned",
        outside.path().display()
    );
    let abs = format!("{}/pwned", outside.path().display());
    let cases: Vec<(&str, serde_json::Value, Vec<OwnedEntry>, &str)> = vec![
        (
            "dotdot",
            manifest("a"),
            vec![(
                escape.clone().into_bytes(),
                tar::EntryType::Regular,
                evil.to_vec(),
                None,
            )],
            "unsafe path",
        ),
        (
            "absolute",
            manifest("a"),
            vec![(
                abs.clone().into_bytes(),
                tar::EntryType::Regular,
                evil.to_vec(),
                None,
            )],
            "only root/",
        ),
        (
            "manifest-dotdot",
            manifest("../pwned"),
            vec![(
                b"root/../pwned".to_vec(),
                tar::EntryType::Regular,
                evil.to_vec(),
                None,
            )],
            "unsafe path",
        ),
        (
            "symlink",
            manifest("a"),
            vec![(
                b"root/a".to_vec(),
                tar::EntryType::Symlink,
                vec![],
                Some(outside.path().display().to_string()),
            )],
            "Symlink",
        ),
        (
            "hardlink",
            manifest("a"),
            vec![(
                b"root/a".to_vec(),
                tar::EntryType::Link,
                vec![],
                Some("/etc/passwd".into()),
            )],
            "Link",
        ),
        (
            "device",
            manifest("a"),
            vec![(b"root/a".to_vec(), tar::EntryType::Char, vec![], None)],
            "Char",
        ),
        (
            "unlisted",
            manifest("a"),
            vec![
                (
                    b"root/a".to_vec(),
                    tar::EntryType::Regular,
                    evil.to_vec(),
                    None,
                ),
                (
                    b"root/b".to_vec(),
                    tar::EntryType::Regular,
                    evil.to_vec(),
                    None,
                ),
            ],
            "not in its manifest",
        ),
        (
            "bad-hash",
            manifest("a"),
            vec![(
                b"root/a".to_vec(),
                tar::EntryType::Regular,
                b"good".to_vec(),
                None,
            )],
            "does not match the hash",
        ),
        ("missing", manifest("a"), vec![], "missing from the archive"),
    ];
    for (label, m, entries, needle) in cases {
        let repo = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("dest");
        // A healthy install first, which a failed one must leave alone.
        make_pkg(repo.path(), "demo", "1", &[("demo/a", b"a")], &[]);
        ok(&install(
            &dest,
            &repo.path().display().to_string(),
            &["demo"],
        ));
        let before = snapshot(&dest);
        let e: Vec<RawEntry> = entries
            .iter()
            .map(|(p, k, d, l)| (p.as_slice(), *k, d.as_slice(), l.as_deref()))
            .collect();
        raw_archive(repo.path(), "evil", &m, &e);
        pynbox::packages::write_index(repo.path()).unwrap();
        let out = install(&dest, &repo.path().display().to_string(), &["evil"]);
        assert_eq!(out.status.code(), Some(1), "{label}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(needle),
            "{label}: expected {needle:?} in {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("nothing was installed"),
            "{label}: {}",
            text(&out.stderr)
        );
        assert!(
            !outside.path().join("pwned").exists(),
            "{label}: wrote outside DEST"
        );
        assert_eq!(snapshot(&dest), before, "{label}: DEST changed");
    }
}

#[test]
fn corrupt_archive_is_refused_before_unpacking() {
    let repo = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let a = make_pkg(repo.path(), "demo", "1", &[("demo/a", &[7u8; 100000])], &[]);
    let mut bytes = std::fs::read(&a).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&a, bytes).unwrap();
    let out = install(d.path(), &repo.path().display().to_string(), &["demo"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("does not match the sha256 in the repository's index"),
        "{}",
        text(&out.stderr)
    );
    assert!(!list(d.path()).contains("demo"));
    // Without an index the manifest's hashes still catch it.
    std::fs::remove_file(repo.path().join("index.json")).unwrap();
    let out = install(d.path(), &repo.path().display().to_string(), &["demo"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(!d.path().join("root/demo/a").exists());
}

#[test]
fn interrupted_install_recovers() {
    let repo = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    // Big enough that extraction takes a while; random so zstd cannot
    // shrink it to nothing.
    let mut big = vec![0u8; 64 << 20];
    getrandom_fill(&mut big);
    make_pkg(
        repo.path(),
        "big",
        "1",
        &[("big/a.bin", &big), ("big/b.bin", &big[..1 << 20])],
        &[],
    );
    let r = repo.path().display().to_string();
    let dest = d.path().join("dest");
    ok(&install(&dest, &r, &[]));
    let mut child = pynbox()
        .args(["install", &dest.display().to_string(), "big", "--repo", &r])
        .spawn()
        .unwrap();
    // Kill it while it writes into the staging area.
    let start = std::time::Instant::now();
    loop {
        let staged = walk_size(&dest.join(".staging"));
        if staged > 1 << 20 || start.elapsed() > std::time::Duration::from_secs(20) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        !list(&dest).contains("big"),
        "a killed install looks installed"
    );
    ok(&install(&dest, &r, &["big"]));
    assert!(list(&dest).contains("big"));
    ok(&run(&["verify", &dest.display().to_string()]));
    assert!(!dest.join(".staging").exists());
}

fn walk_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                walk_size(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

fn getrandom_fill(b: &mut [u8]) {
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for chunk in b.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// A tiny HTTP/1.1 file server on loopback with Range support. When
/// `cut_first` is set, the first download of an archive stops halfway.
fn serve(
    dir: PathBuf,
    cut_first: bool,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hits2 = hits.clone();
    std::thread::spawn(move || {
        let mut cut = cut_first;
        for stream in listener.incoming().take(50) {
            let Ok(mut s) = stream else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let req = String::from_utf8_lossy(&req).to_string();
            let path = req
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_string();
            let range: Option<u64> = req
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("range: bytes="))
                .and_then(|l| l[13..].split('-').next().map(|n| n.trim().parse().unwrap()));
            let Ok(data) = std::fs::read(dir.join(&path)) else {
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            };
            if path.ends_with(".tar.zst") {
                hits2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            let (status, body) = match range {
                Some(from) => ("206 Partial Content", &data[from as usize..]),
                None => ("200 OK", &data[..]),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            if cut && path.ends_with(".tar.zst") {
                cut = false;
                let _ = s.write_all(&body[..body.len() / 2]);
                let _ = s.shutdown(std::net::Shutdown::Both);
                continue;
            }
            let _ = s.write_all(body);
        }
    });
    (format!("http://{addr}"), hits)
}

#[test]
fn install_from_an_http_repository_resumes_a_cut_download() {
    let repo = tempfile::tempdir().unwrap();
    let mut data = vec![0u8; 4 << 20];
    getrandom_fill(&mut data);
    make_pkg(repo.path(), "demo", "1", &[("demo/a.bin", &data)], &[]);
    let (url, hits) = serve(repo.path().to_path_buf(), true);
    let d = tempfile::tempdir().unwrap();
    let out = install(d.path(), &url, &["demo"]);
    ok(&out);
    assert!(
        hits.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "no second request after the cut"
    );
    assert_eq!(
        std::fs::read(d.path().join("root/demo/a.bin")).unwrap(),
        data
    );
    ok(&run(&["verify", &d.path().display().to_string()]));
}

#[test]
fn http_repository_with_tampered_archive_is_refused() {
    let repo = tempfile::tempdir().unwrap();
    let a = make_pkg(repo.path(), "demo", "1", &[("demo/a.bin", b"hello")], &[]);
    // Swap the archive for another one after the index was written.
    let other = tempfile::tempdir().unwrap();
    let b = make_pkg(other.path(), "demo", "1", &[("demo/a.bin", b"evil!")], &[]);
    std::fs::copy(b, &a).unwrap();
    let (url, _) = serve(repo.path().to_path_buf(), false);
    let d = tempfile::tempdir().unwrap();
    let out = install(d.path(), &url, &["demo"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("does not match the sha256"),
        "{}",
        text(&out.stderr)
    );
    assert!(!d.path().join("root/demo/a.bin").exists());
}

/// A package with native modules ships its own interpreter (WASI has no
/// dlopen); while it is installed, `python` means that interpreter.
#[test]
fn package_interpreter_replaces_python_while_installed() {
    let repo = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let probe = probe_bytes();
    make_pkg(
        repo.path(),
        "python",
        "1",
        &[("python/bin/python.wasm", &probe)],
        &[],
    );
    make_pkg_full(
        repo.path(),
        "ext",
        "1",
        &[("ext/python-ext.wasm", &probe)],
        &["python"],
        BTreeMap::new(),
        Some("ext/python-ext.wasm"),
    );
    make_pkg_full(
        repo.path(),
        "ext2",
        "1",
        &[("ext2/python-ext2.wasm", &probe)],
        &["python"],
        BTreeMap::new(),
        Some("ext2/python-ext2.wasm"),
    );
    let r = repo.path().display().to_string();
    ok(&install(d.path(), &r, &["python"]));
    let argv0 = || {
        text(
            &Process::new(d.path().join("bin/run"))
                .args(["python", "args", "x"])
                .output()
                .unwrap()
                .stdout,
        )
    };
    assert!(
        argv0().contains("ok /python/bin/python.wasm|args|x"),
        "{}",
        argv0()
    );
    ok(&install(d.path(), &r, &["ext"]));
    assert!(
        argv0().contains("ok /ext/python-ext.wasm|args|x"),
        "{}",
        argv0()
    );
    ok(&run(&["verify", &d.path().display().to_string()]));
    let out = install(d.path(), &r, &["ext2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("both replace the python interpreter"),
        "{}",
        text(&out.stderr)
    );
    ok(&run(&["remove", &d.path().display().to_string(), "ext"]));
    assert!(
        argv0().contains("ok /python/bin/python.wasm|args|x"),
        "{}",
        argv0()
    );
    ok(&run(&["verify", &d.path().display().to_string()]));
}
