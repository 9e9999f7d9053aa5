//! Fuzz entry points, shared by the `cargo fuzz` targets in `fuzz/` and by
//! `tests/fuzz_regressions.rs`, which replays every input the fuzzers ever
//! found. Each function panics when an invariant breaks.
#![doc(hidden)]

use std::path::{Path, PathBuf};

use crate::mounts::MountSpec;
use crate::packages;
use crate::wasi::harness::{Harness, Op};

/// Parsers of command-line specifications: never panic, and what parses is
/// well-formed.
pub fn specs(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(m) = MountSpec::parse(&s) {
        assert!(m.guest.starts_with('/'));
        assert!(!m.guest.split('/').any(|c| c == ".." || c == "."));
        let again = MountSpec::parse(&format!(
            "{}:{}:{}",
            m.host.display(),
            m.guest,
            if m.writable { "rw" } else { "ro" }
        ))
        .expect("a parsed mount re-parses");
        assert_eq!(again, m);
    }
    let _ = crate::FdSpec::parse_host(&s);
    let _ = crate::FdSpec::parse_file(&s, true);
    let _ = crate::parse_size(&s);
    if packages::check_path(&s).is_ok() {
        assert!(!s.starts_with('/') && !s.split('/').any(|c| c == ".."));
    }
    let _ = packages::parse_archive_name(&s);
    // Split at a character boundary: the text is arbitrary UTF-8.
    let mid = s
        .char_indices()
        .nth(s.chars().count() / 2)
        .map_or(s.len(), |(i, _)| i);
    let (a, b) = s.split_at(mid);
    let _ = packages::compare_versions(a, b);
}

/// Manifests: what passes `check` is safe by rules stated here on their
/// own, not by calling `check`'s helpers again: every file lands below the
/// root, no two entries collide, and every command step starts with a
/// guest program, never an option of `pynbox run`.
pub fn manifest(data: &[u8]) {
    let Ok(m) = serde_json::from_slice::<packages::Manifest>(data) else {
        return;
    };
    if m.check().is_err() {
        return;
    }
    let safe_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with('-')
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    assert!(safe_name(&m.name), "package name {:?}", m.name);
    let mut paths = std::collections::BTreeSet::new();
    for f in &m.files {
        let p = Path::new(&f.path);
        assert!(p.is_relative(), "{:?} is absolute", f.path);
        assert!(
            p.components()
                .all(|c| matches!(c, std::path::Component::Normal(_))),
            "{:?} leaves the root or names it twice",
            f.path
        );
        assert!(!f.path.contains(['\\', '\0']), "{:?}", f.path);
        assert!(paths.insert(f.path.as_str()), "{:?} twice", f.path);
    }
    // No file is also the directory of another.
    for f in &m.files {
        for a in Path::new(&f.path).ancestors().skip(1) {
            let a = a.to_string_lossy();
            assert!(
                !paths.contains(a.as_ref()),
                "{a:?} is a file and a directory"
            );
        }
    }
    for (name, c) in &m.commands {
        assert!(safe_name(name) && name != "run", "command name {name:?}");
        for step in &c.steps {
            let program = step.first().expect("a step names its program");
            assert!(
                program == "python"
                    || (program.starts_with('/')
                        && program.split('/').any(|c| !c.is_empty())
                        && program.split('/').all(|c| c != "." && c != "..")),
                "command {name:?} starts a step with {program:?}"
            );
            assert!(step.iter().all(|w| !w.contains('\0')), "{step:?}");
        }
    }
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        let p = std::env::temp_dir().join(format!("pynbox-fuzz-{tag}-{}", hex::encode(b)));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn listing(p: &Path) -> Vec<String> {
    let mut v = Vec::new();
    fn walk(base: &Path, d: &Path, v: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if meta.is_dir() {
                v.push(format!("{rel}/"));
                walk(base, &p, v);
            } else if meta.file_type().is_symlink() {
                v.push(format!(
                    "{rel} -> {}",
                    std::fs::read_link(&p).unwrap().display()
                ));
            } else {
                v.push(format!("{rel} {:?}", std::fs::read(&p).unwrap()));
            }
        }
    }
    walk(p, p, &mut v);
    v.sort();
    v
}

/// Archives: unpacking arbitrary bytes never writes outside the staging
/// directory and never panics.
pub fn archive(data: &[u8]) {
    let s = Scratch::new("archive");
    std::fs::create_dir(s.0.join("stage")).unwrap();
    let stage = cap_std::fs::Dir::open_ambient_dir(s.0.join("stage"), cap_std::ambient_authority())
        .unwrap();
    let mut input = data;
    let r = packages::unpack_checked(&mut input, &stage, &mut |_| {});
    // The whole scratch tree but the staging directory's contents: an
    // archive must not have written anywhere else, at any depth.
    let outside: Vec<String> = listing(&s.0)
        .into_iter()
        .filter(|l| !l.starts_with("stage/") || l == "stage/")
        .collect();
    assert_eq!(
        outside,
        vec!["stage/".to_string()],
        "an archive wrote outside its staging directory"
    );
    if let Ok(m) = r {
        for f in &m.files {
            let got =
                std::fs::read(s.0.join("stage").join(&f.path)).expect("a listed file was unpacked");
            assert_eq!(packages::sha256_hex(&got), f.sha256);
        }
    }
}

/// The host's secret: a content and a size no guest operation can produce
/// (guest writes are 4 bytes), so that a read or a stat that shows either
/// has reached it.
const SECRET_LEN: usize = 1337;
fn secret() -> Vec<u8> {
    b"host secret "
        .iter()
        .copied()
        .cycle()
        .take(SECRET_LEN)
        .collect()
}
/// A name only the host's `outside/` holds: no guest path can make it
/// (guest paths are built from the words below), so a listing showing it
/// is a listing of `outside/`. (A guest may well make its own `secret`.)
const OUTSIDE_MARKER: &str = "host-only-marker";

/// Everything in the scratch tree the guest may not change: all of it but
/// the read-write mount's own files (its nested read-only mount included).
fn protected(p: &Path) -> Vec<String> {
    listing(p)
        .into_iter()
        .filter(|l| !l.starts_with("rw/") || l.starts_with("rw/nested/"))
        .collect()
}

/// The system-call layer under random sequences of operations on a fixed
/// tree: nothing outside the mounts is read, listed, stat'ed or changed,
/// and the read-only mounts stay as they were.
///
/// Tree: `outside/secret` (never reachable), `ro/` mounted at `/`
/// read-only (a file, a directory, symlinks pointing in and out), `rw/`
/// mounted at `/rw` read-write (with a symlink pointing out, as a host
/// could leave one), and `rw/nested/` mounted at `/rw/nested` read-only: a
/// read-only mount inside a read-write mount's host tree. Paths are
/// absolute or relative to a directory the sequence opened.
pub fn syscalls(data: &[u8]) {
    let s = Scratch::new("syscalls");
    let p = &s.0;
    for d in ["outside/dir", "ro/dir", "rw/dir", "rw/nested/dir"] {
        std::fs::create_dir_all(p.join(d)).unwrap();
    }
    std::fs::write(p.join("outside/secret"), secret()).unwrap();
    std::fs::write(p.join("outside").join(OUTSIDE_MARKER), b"").unwrap();
    std::fs::write(p.join("ro/file"), b"ro file").unwrap();
    std::fs::write(p.join("rw/file"), b"rw file").unwrap();
    std::fs::write(p.join("rw/nested/file"), b"nested file").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::symlink;
        symlink(p.join("outside/secret"), p.join("ro/abs")).unwrap();
        symlink("../outside", p.join("ro/up")).unwrap();
        symlink("file", p.join("ro/in")).unwrap();
        symlink(p.join("outside"), p.join("rw/out")).unwrap();
        symlink("nested", p.join("rw/in")).unwrap();
    }
    let before = protected(p);
    let mounts = [
        MountSpec::new(p.join("ro"), "/", false).unwrap(),
        MountSpec::new(p.join("rw"), "/rw", true).unwrap(),
        MountSpec::new(p.join("rw/nested"), "/rw/nested", false).unwrap(),
    ];
    let mut h = Harness::new(&mounts, data.first().is_some_and(|b| b & 1 == 1)).unwrap();

    const WORDS: [&str; 15] = [
        "..", ".", "", "rw", "dir", "file", "abs", "up", "in", "out", "secret", "new", "outside",
        "ro", "nested",
    ];
    let mut it = data.iter().skip(1).copied();
    let path = |it: &mut dyn Iterator<Item = u8>| -> String {
        let b = it.next().unwrap_or(0);
        let n = b % 5 + 1;
        let mut parts = Vec::new();
        for _ in 0..n {
            parts.push(WORDS[it.next().unwrap_or(0) as usize % WORDS.len()]);
        }
        // One path in four is relative to the last directory opened.
        let lead = if b & 0x60 == 0x60 { "" } else { "/" };
        format!("{lead}{}", parts.join("/"))
    };
    let secret = secret();
    for _ in 0..32 {
        let Some(code) = it.next() else { break };
        let op = match code % 11 {
            0 => Op::Read(path(&mut it)),
            1 => Op::Write(path(&mut it), b"fuzz".to_vec()),
            2 => Op::Mkdir(path(&mut it)),
            3 => Op::Rmdir(path(&mut it)),
            4 => Op::Unlink(path(&mut it)),
            5 => Op::Rename(path(&mut it), path(&mut it)),
            6 => Op::Link(path(&mut it), path(&mut it)),
            7 => Op::Symlink(path(&mut it), path(&mut it)),
            8 => Op::List(path(&mut it)),
            9 => Op::OpenDir(path(&mut it)),
            _ => Op::Stat(path(&mut it)),
        };
        let r = h.apply(&op);
        if let Ok(bytes) = &r {
            assert!(
                !bytes.windows(12).any(|w| w == &secret[..12]),
                "{op:?} read the host's secret"
            );
            match op {
                Op::List(_) => assert!(
                    !String::from_utf8_lossy(bytes)
                        .split('/')
                        .any(|n| n == OUTSIDE_MARKER),
                    "{op:?} listed outside"
                ),
                Op::Stat(_) => assert_ne!(
                    bytes.as_slice(),
                    (SECRET_LEN as u64).to_le_bytes().as_slice(),
                    "{op:?} stat'ed the host's secret"
                ),
                _ => {}
            }
        }
        assert_eq!(
            protected(p),
            before,
            "{op:?} changed the host outside the read-write mount"
        );
    }
}
