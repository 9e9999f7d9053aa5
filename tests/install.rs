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
    make_pkg_full(repo, name, version, files, depends, commands)
}

fn make_pkg_full(
    repo: &Path,
    name: &str,
    version: &str,
    files: &[(&str, &[u8])],
    depends: &[&str],
    commands: BTreeMap<String, Command>,
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

/// A repository holding `demo`, and a DEST with it installed: the healthy
/// install that a failed one must leave alone.
fn dest_with_demo_installed() -> (tempfile::TempDir, tempfile::TempDir, PathBuf) {
    let repo = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().join("dest");
    make_pkg(repo.path(), "demo", "1", &[("demo/a", b"a")], &[]);
    ok(&install(
        &dest,
        &repo.path().display().to_string(),
        &["demo"],
    ));
    (repo, d, dest)
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
    // bin/run is pynbox itself (no shell in front), and knows its DEST
    // also when started through a symlink of another name.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let run = std::fs::metadata(moved.join("bin/run")).unwrap();
        let pynbox = std::fs::metadata(moved.join("bin/pynbox")).unwrap();
        assert_eq!((run.dev(), run.ino()), (pynbox.dev(), pynbox.ino()));
        let link = d.path().join("sandbox-run");
        std::os::unix::fs::symlink(moved.join("bin/run"), &link).unwrap();
        let out = Process::new(&link)
            .args(["/demo/probe.wasm", "ls", "/demo"])
            .output()
            .unwrap();
        has_line(&out, "ls /demo: ok probe.wasm");
    }
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
        let (repo, _d, dest) = dest_with_demo_installed();
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
            // A 206 says which bytes it holds (RFC 9110): pynbox resumes
            // only from a Content-Range that starts where it asked.
            let range_head = match range {
                Some(from) => format!(
                    "Content-Range: bytes {from}-{}/{}\r\n",
                    data.len().saturating_sub(1),
                    data.len()
                ),
                None => String::new(),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\n{range_head}Content-Length: {}\r\nConnection: close\r\n\r\n",
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

/// Packages never replace the interpreter: native modules load into the
/// one python (src/native/), so any two packages combine and `python` is
/// the python package's whatever else is installed.
#[test]
fn packages_combine_and_python_stays_the_python_package() {
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
    for name in ["ext", "ext2"] {
        let file = format!("{name}/python-{name}.wasm");
        make_pkg(
            repo.path(),
            name,
            "1",
            &[(file.as_str(), &probe)],
            &["python"],
        );
    }
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
    ok(&install(d.path(), &r, &["ext", "ext2"]));
    assert!(
        argv0().contains("ok /python/bin/python.wasm|args|x"),
        "{}",
        argv0()
    );
    ok(&run(&["verify", &d.path().display().to_string()]));
    ok(&run(&["remove", &d.path().display().to_string(), "ext"]));
    ok(&run(&["verify", &d.path().display().to_string()]));
}

/// A package names only a guest program and its arguments: a command whose
/// program word is an option of `pynbox run` (`-m /:/host:rw` would mount
/// the host's `/` read-write), a relative path or one with `..` is refused
/// when the manifest is read, and nothing is installed.
#[test]
fn package_command_cannot_pass_options_to_run() {
    let cases: &[(&str, &[&str])] = &[
        ("mount-host", &["-m", "/:/host:rw", "/evil/w.wasm"]),
        ("write-host-file", &["-w", "3:/tmp/pwned", "/evil/w.wasm"]),
        ("no-timeout", &["--timeout", "none", "python"]),
        ("symlinks", &["--allow-symlinks", "python"]),
        ("dashes", &["--", "-m", "/:/host:rw", "python"]),
        ("relative", &["evil/w.wasm"]),
        ("dotdot", &["/evil/../w.wasm"]),
        ("nul", &["/evil/w.wasm\0x"]),
    ];
    let evil = b"(module)";
    for (label, step) in cases {
        let (repo, _d, dest) = dest_with_demo_installed();
        let before = snapshot(&dest);
        let m = serde_json::json!({
            "format": 1, "name": "evil", "version": "1",
            "commands": {"pwn": {"steps": [step]}},
            "files": [{"path": "evil/w.wasm", "size": evil.len(), "sha256": sha(evil)}],
        });
        raw_archive(
            repo.path(),
            "evil",
            &m,
            &[(b"root/evil/w.wasm", tar::EntryType::Regular, evil, None)],
        );
        pynbox::packages::write_index(repo.path()).unwrap();
        let out = install(&dest, &repo.path().display().to_string(), &["evil"]);
        let e = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{label}: {e}");
        // One line that names the package and the command.
        let line = e
            .lines()
            .find(|l| l.starts_with("pynbox: "))
            .unwrap_or_else(|| panic!("{label}: no error line in {e}"));
        for needle in ["evil", "command 'pwn'", "nothing was installed"] {
            assert!(line.contains(needle), "{label}: {needle:?} not in {line:?}");
        }
        assert!(!dest.join("bin/pwn").exists(), "{label}: bin/pwn installed");
        assert_eq!(snapshot(&dest), before, "{label}: DEST changed");
    }
}

/// Words after a package command's program, and what the user adds, reach
/// the guest as arguments even when they look like options of `pynbox run`;
/// `--` ends the options of `bin/run` and `pynbox run`.
#[test]
fn arguments_that_look_like_options_reach_the_guest() {
    let repo = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let mut cmds = BTreeMap::new();
    cmds.insert(
        "echo_args".to_string(),
        Command {
            steps: vec![vec!["/demo/probe.wasm".into(), "args".into()]],
            scratch: None,
        },
    );
    cmds.insert(
        "dash_args".to_string(),
        Command {
            steps: vec![vec![
                "/demo/probe.wasm".into(),
                "args".into(),
                "-m".into(),
                "/:/host:rw".into(),
            ]],
            scratch: None,
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
    let dest = d.path().join("dest");
    ok(&install(
        &dest,
        &repo.path().display().to_string(),
        &["demo"],
    ));
    let out = Process::new(dest.join("bin/echo_args"))
        .args(["-m", "/:/host:rw", "--timeout", "none"])
        .output()
        .unwrap();
    has_line(
        &out,
        "args -m: ok /demo/probe.wasm|args|-m|/:/host:rw|--timeout|none",
    );
    let out = Process::new(dest.join("bin/dash_args"))
        .arg("-w")
        .output()
        .unwrap();
    has_line(&out, "args -m: ok /demo/probe.wasm|args|-m|/:/host:rw|-w");
    // `--` ends the options of bin/run: what follows is PROGRAM.
    let root = format!("{}:/:ro", dest.join("root").display());
    let out = Process::new(dest.join("bin/run"))
        .args(["-m", &root, "--", "/demo/probe.wasm", "args", "-m"])
        .output()
        .unwrap();
    has_line(&out, "args -m: ok /demo/probe.wasm|args|-m");
    // An option after `--` is not an option: the host's / is not mounted.
    let out = Process::new(dest.join("bin/run"))
        .args([
            "-m",
            &root,
            "--",
            "-m",
            "/:/host:ro",
            "/demo/probe.wasm",
            "ls",
            "/host",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(probe_lines(&out).is_empty(), "{}", text(&out.stdout));
    // The same for pynbox run itself.
    let probe = probe();
    let out = run(&["run", "--", &probe, "args", "--memory"]);
    has_line(&out, &format!("args --memory: ok {probe}|args|--memory"));
}

/// The index of a plain-http repository comes from the same server as the
/// archives, so whoever is on the path could serve a hostile package: only
/// loopback addresses are accepted without `--allow-insecure-http`.
#[test]
fn plain_http_repository_is_refused_unless_loopback_or_allowed() {
    let repo = tempfile::tempdir().unwrap();
    make_pkg(repo.path(), "demo", "1", &[("demo/a", b"a")], &[]);
    let (url, hits) = serve(repo.path().to_path_buf(), false);
    let port = url.rsplit(':').next().unwrap().to_string();
    // 0.0.0.0 reaches this host's listeners on Linux, but it is not a
    // loopback address: it stands for any address here.
    let remote = format!("http://0.0.0.0:{port}");
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().join("dest");
    let out = install(&dest, &remote, &["demo"]);
    let e = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{e}");
    let line = e
        .lines()
        .find(|l| l.starts_with("pynbox: "))
        .unwrap_or_else(|| panic!("no error line in {e}"));
    for needle in [&remote as &str, "https", "--allow-insecure-http"] {
        assert!(line.contains(needle), "{needle:?} not in {line:?}");
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(!dest.join("root/demo/a").exists());
    // Explicitly allowed, it installs.
    let mut args = vec!["install".to_string(), dest.display().to_string()];
    args.extend(["demo".into(), "--repo".into(), remote.clone()]);
    args.push("--allow-insecure-http".into());
    ok(&pynbox().args(&args).output().unwrap());
    assert!(dest.join("root/demo/a").exists());
    // Loopback needs no flag (the other http tests use 127.0.0.1).
    let d2 = tempfile::tempdir().unwrap();
    ok(&install(d2.path(), &url, &["demo"]));
}

/// An index that gives no size would let a server send an endless
/// download: an archive of size 0 is refused before it is fetched.
#[test]
fn index_without_a_size_is_refused() {
    let repo = tempfile::tempdir().unwrap();
    make_pkg(repo.path(), "demo", "1", &[("demo/a", b"a")], &[]);
    let idx = repo.path().join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&idx).unwrap()).unwrap();
    index["packages"][0]["size"] = 0.into();
    std::fs::write(&idx, serde_json::to_vec(&index).unwrap()).unwrap();
    let (url, hits) = serve(repo.path().to_path_buf(), false);
    let d = tempfile::tempdir().unwrap();
    let out = install(d.path(), &url, &["demo"]);
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("no size"), "{e}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(!d.path().join("root/demo/a").exists());
    // The same index in a directory is refused too.
    let out = install(d.path(), &repo.path().display().to_string(), &["demo"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no size"),
        "{}",
        text(&out.stderr)
    );
}

/// Writes `dir/NAME.1.tar.zst` from raw tar bytes: `head`, then `zeros`
/// zero bytes (streamed, so that the test never holds them), compressed.
fn bomb_archive(dir: &Path, name: &str, head: &[u8], zeros: u64) -> PathBuf {
    let path = dir.join(format!("{name}.1.tar.zst"));
    let f = std::fs::File::create(&path).unwrap();
    let mut enc = zstd::Encoder::new(f, 1).unwrap();
    enc.write_all(head).unwrap();
    let block = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let k = left.min(block.len() as u64) as usize;
        enc.write_all(&block[..k]).unwrap();
        left -= k as u64;
    }
    enc.finish().unwrap();
    path
}

/// A tar header block of `kind` for `name`, claiming `size` bytes (sizes
/// of 8 GiB and more are written in base-256, as GNU tar does).
fn header_block(gnu: bool, name: &str, kind: tar::EntryType, size: u64) -> Vec<u8> {
    let mut h = if gnu {
        tar::Header::new_gnu()
    } else {
        tar::Header::new_ustar()
    };
    {
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// A tar entry (header and padded data) for a regular file.
fn file_block(name: &str, data: &[u8]) -> Vec<u8> {
    let mut v = header_block(true, name, tar::EntryType::Regular, data.len() as u64);
    v.extend_from_slice(data);
    v.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
    v
}

/// Tar extension headers (a GNU long name or long link, a PAX header) are
/// data the tar reader would hold in memory whole: one claiming a huge size,
/// backed by zeros that zstd squeezes to almost nothing, must be refused
/// before it is read, with the installer's peak memory staying small and
/// DEST unchanged. So must a manifest that parses into a structure many
/// times its size, and entries past what the manifest declares. A sound
/// package much larger than that limit installs within it too (archives
/// are hashed and unpacked as streams).
#[test]
fn oversized_tar_headers_are_refused_within_bounded_memory() {
    const LIMIT_KIB: i64 = 100 * 1024;
    let zeros = 512u64 << 20;
    let huge = 64u64 << 30;
    let evil = b"evil";
    let manifest = serde_json::to_vec(&serde_json::json!({
        "format": 1, "name": "evil", "version": "1",
        "files": [{"path": "a", "size": 4, "sha256": sha(evil)}],
    }))
    .unwrap();
    let with_manifest = |ext: Vec<u8>| {
        let mut v = file_block("manifest.json", &manifest);
        v.extend(ext);
        v
    };
    // 16 MiB less a little of `"",`: millions of empty words.
    let mut expanding = br#"{"format": 1, "name": "evil", "version": "1", "files": [], "commands": {"pwn": {"steps": [["python""#.to_vec();
    while expanding.len() < (16 << 20) - 100 {
        expanding.extend_from_slice(br#","""#);
    }
    expanding.extend_from_slice(b"]]}}}");
    // Directory entries, each a header, far past what the manifest
    // declares.
    let mut dirs = with_manifest(file_block("root/a", evil));
    for _ in 0..20_000 {
        dirs.extend(header_block(true, "root/d/", tar::EntryType::Directory, 0));
    }
    let cases: Vec<(&str, Vec<u8>, u64, &str)> = vec![
        (
            "long name before the manifest",
            header_block(true, "././@LongLink", tar::EntryType::GNULongName, huge),
            zeros,
            "long-name header",
        ),
        (
            "long name after the manifest",
            with_manifest(header_block(
                true,
                "././@LongLink",
                tar::EntryType::GNULongName,
                huge,
            )),
            zeros,
            "long-name header",
        ),
        (
            "long link",
            with_manifest(header_block(
                true,
                "././@LongLink",
                tar::EntryType::GNULongLink,
                huge,
            )),
            zeros,
            "long-link header",
        ),
        (
            "pax header",
            with_manifest(header_block(
                false,
                "PaxHeaders/a",
                tar::EntryType::XHeader,
                huge,
            )),
            zeros,
            "PAX extension header",
        ),
        (
            "pax global header",
            with_manifest(header_block(
                false,
                "pax_global_header",
                tar::EntryType::XGlobalHeader,
                1 << 30,
            )),
            zeros,
            "PAX extension header",
        ),
        (
            "directory with data",
            with_manifest(header_block(
                true,
                "root/d/",
                tar::EntryType::Directory,
                huge,
            )),
            zeros,
            "claims 68719476736 bytes",
        ),
        (
            "expanding manifest",
            file_block("manifest.json", &expanding),
            0,
            "more than 256 items",
        ),
        (
            "entries past the declared size",
            dirs,
            0,
            "more than its manifest declares",
        ),
    ];
    for (label, head, zeros, needle) in cases {
        let (repo, _d, dest) = dest_with_demo_installed();
        let before = snapshot(&dest);
        let a = bomb_archive(repo.path(), "evil", &head, zeros);
        assert!(std::fs::metadata(&a).unwrap().len() < 1 << 20);
        pynbox::packages::write_index(repo.path()).unwrap();
        let args = [
            "install".to_string(),
            dest.display().to_string(),
            "evil".into(),
            "--repo".into(),
            repo.path().display().to_string(),
        ];
        let (out, peak_kib) = measured(pynbox().args(args));
        let e = text(&out.stderr);
        println!("{label}: peak RSS {} MiB: {}", peak_kib / 1024, e.trim());
        assert_eq!(out.status.code(), Some(1), "{label}: {e}");
        if peak_kib >= LIMIT_KIB {
            println!("FAIL {label}");
            continue;
        }
        assert!(e.contains("nothing was installed"), "{label}: {e}");
        assert!(e.contains(needle), "{label}: expected {needle:?} in {e}");
        assert_eq!(snapshot(&dest), before, "{label}: DEST changed");
    }

    // A sound package larger than the limit: hashed and unpacked as
    // streams.
    let repo = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let mut big = vec![0u8; 128 << 20];
    getrandom_fill(&mut big);
    make_pkg(repo.path(), "big", "1", &[("big/a.bin", &big)], &[]);
    drop(big);
    let args = [
        "install".to_string(),
        d.path().display().to_string(),
        "big".into(),
        "--repo".into(),
        repo.path().display().to_string(),
    ];
    let (out, peak_kib) = measured(pynbox().args(args));
    println!("128 MiB package: peak RSS {} MiB", peak_kib / 1024);
    ok(&out);
    assert!(
        peak_kib < LIMIT_KIB,
        "sound package: peak RSS {peak_kib} KiB"
    );
}

/// An install that dies at each point of its commit (with the `test-faults`
/// feature: `cargo test --release --features test-faults --test install`)
/// leaves the old version, or nothing, and the next install completes.
#[cfg(feature = "test-faults")]
#[test]
fn an_install_killed_at_each_point_of_its_commit_recovers() {
    for point in ["staged", "commit", "receipt"] {
        let (r1, r2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let d = tempfile::tempdir().unwrap();
        make_pkg(
            r1.path(),
            "p",
            "1",
            &[("p/a", b"one a"), ("p/b", b"one b")],
            &[],
        );
        make_pkg(
            r2.path(),
            "p",
            "2",
            &[("p/a", b"two a"), ("p/b", b"two b"), ("p/c", b"two c")],
            &[],
        );
        let (r1, r2) = (
            r1.path().display().to_string(),
            r2.path().display().to_string(),
        );
        let dest = d.path().join("dest");
        ok(&install(&dest, &r1, &["p"]));
        let out = pynbox()
            .env("PYNBOX_TEST_CRASH_AT", point)
            .args(["install", &dest.display().to_string(), "p", "--repo", &r2])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{point}: the install was not interrupted"
        );
        // Never a half-installed package: the old version whole, or none
        // (or the new one whole, once its receipt is written).
        let version = || {
            list(&dest)
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|w| w.first() == Some(&"p"))
                .map(|w| w[1].to_string())
        };
        match (point, version()) {
            ("receipt", Some(v)) => assert_eq!(v, "2", "{point}"),
            (_, None) => {}
            (_, Some(v)) => {
                assert_eq!(v, "1", "{point}");
                assert_ok(&run(&["verify", &dest.display().to_string()]));
            }
        }
        ok(&install(&dest, &r2, &["p"]));
        assert_eq!(version().as_deref(), Some("2"), "{point}: {}", list(&dest));
        ok(&run(&["verify", &dest.display().to_string()]));
        assert_eq!(
            std::fs::read(dest.join("root/p/c")).unwrap(),
            b"two c",
            "{point}"
        );
        assert!(!dest.join(".staging").exists(), "{point}");
    }
}

/// A failed install leaves DEST as it was: not created when it did not
/// exist, and with nothing added when it did.
#[test]
fn a_failed_install_leaves_dest_as_it_was() {
    let repo = tempfile::tempdir().unwrap();
    make_pkg(repo.path(), "p", "1", &[("p/a", b"a")], &[]);
    let r = repo.path().display().to_string();
    let d = tempfile::tempdir().unwrap();
    let fresh = d.path().join("fresh");
    let out = install(&fresh, &r, &["nosuchpackage"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("nosuchpackage"),
        "{}",
        text(&out.stderr)
    );
    assert!(!fresh.exists(), "a failed install created DEST");
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(!install(&empty, &r, &["nosuchpackage"]).status.success());
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "DEST changed"
    );
}
