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

/// A session's messages and saved bytes, as a hostile guest or a forged
/// file would make them: values decode to what encodes back to the same
/// bytes, answers and host calls never panic, and a restore of any bytes
/// (framed with a valid checksum, which anyone can compute) either fails
/// cleanly or gives a session within its memory limit.
pub fn session(data: &[u8]) {
    use crate::session::value::{decode, encode, Value};
    if let Ok(v) = decode(data) {
        let mut out = Vec::new();
        encode(&v, &mut out);
        assert_eq!(out, data, "a decoded value encodes back to its bytes");
    }
    crate::session::fuzz_answer(data);
    let mut channel = crate::session::Channel::default();
    channel
        .functions
        .insert("f".into(), Box::new(|args| Ok(Value::List(args))));
    let reply = channel.host_call_for_fuzzing(data);
    assert!(matches!(reply.first(), Some(b'o' | b'e')));
    assert!(decode(&reply[1..]).is_ok(), "the host's reply decodes");

    static PYTHON: std::sync::OnceLock<crate::session::Python> = std::sync::OnceLock::new();
    let python = PYTHON.get_or_init(|| {
        let runtime = crate::Runtime::new(None).unwrap();
        let program = runtime.load_bytes("session-guest", SESSION_GUEST).unwrap();
        crate::session::Python::new(program, None, "/guest.wasm")
    });
    let mut framed = b"pynbox session\n\0".to_vec();
    framed.extend_from_slice(data);
    let sum = blake3::hash(&framed);
    framed.extend_from_slice(sum.as_bytes());
    let limit = 16 << 20;
    let options = crate::session::SessionOptions {
        limits: crate::Limits {
            memory: Some(limit),
            ..crate::Limits::default()
        },
        ..Default::default()
    };
    if let Ok(s) = crate::session::Session::restore(python, &framed, options) {
        assert!(s.memory_size() <= limit as usize);
    }
}

/// The dynamic linker (src/native/): any bytes as a side module, listed as
/// installed, loaded into a small hand-made main guest
/// (`fuzz/guests/dylink_main.wat`). The host never panics or fails, the
/// guest ends within its limits, and what `dylink::read` accepts is
/// within its bounds.
pub fn dylink(data: &[u8]) {
    let _ = load_side_module(data);
}

/// How the `dylink` target's main guest ended with `data` as its module.
fn load_side_module(data: &[u8]) -> crate::Status {
    use crate::native::{dylink, Installed, NativeModules};
    if let Ok(info) = dylink::read(data) {
        assert!(info.memory_size <= dylink::MAX_DATA);
        assert!(info.memory_align_log2 <= dylink::MAX_ALIGN_LOG2);
        assert!(info.table_size <= dylink::MAX_TABLE);
        assert!(info.needed.len() <= dylink::MAX_NEEDED);
        assert!(info.needed.iter().all(|n| !n.contains('/')));
    }
    static MAIN: std::sync::OnceLock<(crate::Runtime, crate::Program)> = std::sync::OnceLock::new();
    let (runtime, program) = MAIN.get_or_init(|| {
        let runtime = crate::Runtime::new(None).unwrap();
        let program = runtime.load_bytes("dylink-main", DYLINK_MAIN).unwrap();
        (runtime, program)
    });
    let dir = scratch_dir("dylink");
    let path = dir.join("m.so");
    std::fs::write(&path, data).unwrap();
    let installed = Installed::from_files(&[("/d/m.so".into(), path)]).unwrap();
    let limit = 64 << 20;
    let result = crate::Sandbox::new(program)
        .mount(MountSpec::new(dir.clone(), "/d", false).unwrap())
        .native_modules(NativeModules::new(runtime, installed))
        .limits(crate::Limits {
            memory: Some(limit),
            timeout: Some(std::time::Duration::from_secs(2)),
            ..crate::Limits::default()
        })
        .run();
    let _ = std::fs::remove_dir_all(&dir);
    let r = result.expect("a side module never makes the host fail");
    assert!(
        !matches!(&r.status, crate::Status::Crashed(why) if why.contains("panic")),
        "{:?}",
        r.status
    );
    r.status
}

/// A fresh directory for one fuzz input.
fn scratch_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pynbox-fuzz-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `fuzz/guests/dylink_main.wat`, compiled.
const DYLINK_MAIN: &[u8] = include_bytes!("../fuzz/guests/dylink_main.wasm");

/// The smallest session guest: memory, the two exports, nothing else.
const SESSION_GUEST: &[u8] = b"\x00\x61\x73\x6d\x01\x00\x00\x00\x01\x0e\x03\x60\x02\x7f\x7f\x01\x7f\x60\x00\x00\x60\x00\x01\x7f\x02\x0f\x01\x06\x70\x79\x6e\x62\x6f\x78\x04\x74\x61\x6b\x65\x00\x00\x03\x04\x03\x01\x02\x02\x05\x03\x01\x00\x01\x07\x40\x04\x06\x6d\x65\x6d\x6f\x72\x79\x02\x00\x06\x5f\x73\x74\x61\x72\x74\x00\x01\x14\x70\x79\x6e\x62\x6f\x78\x2e\x73\x65\x73\x73\x69\x6f\x6e\x5f\x73\x74\x61\x72\x74\x00\x02\x13\x70\x79\x6e\x62\x6f\x78\x2e\x73\x65\x73\x73\x69\x6f\x6e\x5f\x63\x61\x6c\x6c\x00\x03\x0a\x0e\x03\x02\x00\x0b\x04\x00\x41\x00\x0b\x04\x00\x41\x00\x0b\x00\x0e\x04\x6e\x61\x6d\x65\x01\x07\x01\x00\x04\x74\x61\x6b\x65";

#[cfg(test)]
mod tests {
    /// The `dylink` target reaches the loader: a real library loads, a
    /// section cut short is refused.
    #[test]
    fn the_dylink_target_loads_and_refuses() {
        let seeds =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/dylink");
        let helper = std::fs::read(seeds.join("helper-library")).unwrap();
        assert_eq!(super::load_side_module(&helper), crate::Status::Exited(0));
        let cut = std::fs::read(seeds.join("cut-short")).unwrap();
        assert_eq!(super::load_side_module(&cut), crate::Status::Exited(1));
    }

    /// The committed main guest of the `dylink` target is its source,
    /// compiled (`PYNBOX_WRITE_GUEST=1` writes it).
    #[test]
    fn the_dylink_main_guest_is_its_source() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/guests");
        let built = wat::parse_file(dir.join("dylink_main.wat")).unwrap();
        if std::env::var_os("PYNBOX_WRITE_GUEST").is_some() {
            std::fs::write(dir.join("dylink_main.wasm"), &built).unwrap();
        }
        assert_eq!(built, super::DYLINK_MAIN, "run with PYNBOX_WRITE_GUEST=1");
    }

    /// The fuzz entry restores an honest frame (so that the fuzzer starts
    /// from inputs that reach the page writes).
    #[test]
    fn an_honest_saved_frame_restores() {
        let runtime = crate::Runtime::new(None).unwrap();
        let program = runtime.load_bytes("g", super::SESSION_GUEST).unwrap();
        let id = program.id().as_bytes().to_vec();
        let mut body = 1u32.to_le_bytes().to_vec();
        body.extend_from_slice(&2u32.to_le_bytes());
        body.extend(std::iter::repeat_n(9u8, 4096));
        let mut data = 1u32.to_le_bytes().to_vec();
        data.extend_from_slice(&(id.len() as u32).to_le_bytes());
        data.extend_from_slice(&id);
        data.extend_from_slice(&65536u64.to_le_bytes());
        data.extend_from_slice(&(body.len() as u64).to_le_bytes());
        data.extend_from_slice(&zstd::bulk::compress(&body, 1).unwrap());
        super::session(&data);
        let mut framed = b"pynbox session\n\0".to_vec();
        framed.extend_from_slice(&data);
        let sum = blake3::hash(&framed);
        framed.extend_from_slice(sum.as_bytes());
        let python = crate::session::Python::new(program, None, "/g");
        let s = crate::session::Session::restore(&python, &framed, Default::default()).unwrap();
        assert_eq!(s.memory_size(), 65536);
        if let Some(dir) = std::env::var_os("PYNBOX_WRITE_SEED") {
            std::fs::write(std::path::Path::new(&dir).join("saved-frame"), &data).unwrap();
        }
    }
}
