//! Shared helpers for the integration tests: the real `pynbox` binary, C
//! guests compiled with the project's wasm32-wasip1 toolchain, and the
//! installed Python when a test needs it.
#![allow(dead_code)]

mod measure;
#[allow(unused_imports)]
pub use measure::measured;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn pynbox_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pynbox"))
}

/// A cache directory for compiled modules shared by all tests of a run.
pub fn module_cache() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pynbox-test-modules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `pynbox ARGS`, with no host environment but what the runner needs.
pub fn pynbox() -> Command {
    let mut c = Command::new(pynbox_bin());
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PYNBOX_CACHE_DIR", module_cache())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .stdin(Stdio::null());
    c
}

pub fn run(args: &[&str]) -> Output {
    pynbox().args(args).output().expect("running pynbox")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Fails with the exit status and both streams unless `out` succeeded.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The wasm32-wasip1 toolchain directory (made on first use by the
/// project's own recipe).
pub fn toolchain() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo().join("recipes/toolchain.sh"))
            .arg("--print-dir")
            .output()
            .expect("running recipes/toolchain.sh");
        assert!(
            out.status.success(),
            "recipes/toolchain.sh failed:\n{}",
            text(&out.stderr)
        );
        PathBuf::from(text(&out.stdout).trim())
    })
    .clone()
}

/// Compiles `tests/guests/NAME.c` to wasm once per test run.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<Vec<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let dir = std::env::temp_dir().join(format!("pynbox-test-guests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{name}.wasm"));
    let mut done = built.lock().unwrap();
    if !done.iter().any(|n| n == name) {
        let cc = toolchain().join("bin/wasm32-wasip1-clang");
        let st = Command::new(cc)
            .args(["-O2", "-o"])
            .arg(&out)
            .arg(repo().join(format!("tests/guests/{name}.c")))
            .status()
            .expect("running the wasm C compiler");
        assert!(st.success(), "compiling {name}.c failed");
        done.push(name.to_string());
    }
    out
}

pub fn probe() -> String {
    guest("probe").display().to_string()
}

/// Lines of the probe's output, as "OP ARG: RESULT".
pub fn probe_lines(out: &Output) -> Vec<String> {
    text(&out.stdout).lines().map(str::to_string).collect()
}

/// Asserts that probe output has exactly this line.
pub fn has_line(out: &Output, line: &str) {
    let lines = probe_lines(out);
    assert!(
        lines.iter().any(|l| l == line),
        "expected line {line:?} in:\n{}\nstderr:\n{}",
        lines.join("\n"),
        text(&out.stderr)
    );
}

/// A snapshot of every file below `dir` (path, content, or link target),
/// to show that the host was not changed.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut v = Vec::new();
    fn walk(base: &Path, d: &Path, v: &mut Vec<(PathBuf, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(d).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_path_buf();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                v.push((
                    rel,
                    format!("-> {}", std::fs::read_link(&p).unwrap().display()),
                ));
            } else if meta.is_dir() {
                v.push((rel.clone(), format!("dir {:?}", meta.modified().ok())));
                walk(base, &p, v);
            } else {
                v.push((
                    rel,
                    format!(
                        "{:?} {:?}",
                        std::fs::read(&p).unwrap(),
                        meta.modified().ok()
                    ),
                ));
            }
        }
    }
    walk(dir, dir, &mut v);
    v
}

/// An install with the `python` and `tests` packages: `PYNBOX_TEST_DEST`
/// (set by scripts/test.sh), else a fresh install from `build/packages`.
/// Fails with instructions when the packages were never built.
pub fn dest() -> PathBuf {
    static DEST: OnceLock<PathBuf> = OnceLock::new();
    DEST.get_or_init(|| {
        if let Some(d) = std::env::var_os("PYNBOX_TEST_DEST").map(PathBuf::from) {
            assert!(
                d.join("root/python/bin/python.wasm").exists(),
                "PYNBOX_TEST_DEST={} has no python",
                d.display()
            );
            return d;
        }
        let pkgs = repo().join("build/packages");
        let has_python = std::fs::read_dir(&pkgs)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("python."))
            })
            .unwrap_or(false);
        assert!(
            has_python,
            "the python package is not built: run scripts/test.sh (or `pynbox build python tests`) first"
        );
        let d = std::env::temp_dir().join(format!("pynbox-test-dest-{}", std::process::id()));
        let out = pynbox()
            .args(["install", &d.display().to_string(), "python", "tests", "--repo"])
            .arg(&pkgs)
            .output()
            .unwrap();
        assert!(out.status.success(), "install failed: {}", text(&out.stderr));
        d
    })
    .clone()
}

/// Installs `pkgs` into `dest` from `build/packages`, which must hold the
/// package `needed` (else: how to build it).
#[allow(dead_code)] // (not every test file installs packages)
pub fn install_built(dest: &Path, pkgs: &[&str], needed: &str) {
    let packages = repo().join("build/packages");
    assert!(
        std::fs::read_dir(&packages)
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with(&format!("{needed}."))))
            .unwrap_or(false),
        "the {needed} package is not built: run scripts/test.sh (or `pynbox build python tests lxml numpy`) first"
    );
    let out = pynbox()
        .arg("install")
        .arg(dest)
        .args(pkgs)
        .arg("--repo")
        .arg(&packages)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install failed: {}",
        text(&out.stderr)
    );
}

/// Spawns `cmd` with `r` as its descriptor 3 and `w` as its descriptor 4,
/// as a parent shell would (`3<&r 4>&w`), and closes them here.
pub fn spawn_with_fds_3_4(
    cmd: &mut Command,
    r: std::io::PipeReader,
    w: std::io::PipeWriter,
) -> std::process::Child {
    use std::os::fd::IntoRawFd;
    use std::os::unix::process::CommandExt;
    let r = r.into_raw_fd();
    let w = w.into_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Move both out of the way first: either may already be 3 or 4.
            let r2 = libc::fcntl(r, libc::F_DUPFD, 100);
            let w2 = libc::fcntl(w, libc::F_DUPFD, 100);
            if r2 < 0 || w2 < 0 || libc::dup2(r2, 3) < 0 || libc::dup2(w2, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(r2);
            libc::close(w2);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    // SAFETY: the raw descriptors are ours; the child has its own copies.
    unsafe {
        libc::close(r);
        libc::close(w);
    }
    child
}

/// sha256 as RECORD writes it (urlsafe base64, no padding).
#[allow(dead_code)]
pub fn record_hash(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(data);
    let mut out = String::new();
    for c in d.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A zip archive (a wheel) of `entries`.
#[allow(dead_code)]
pub fn zip_bytes(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (p, d) in entries {
        w.start_file(p.as_str(), opts).unwrap();
        w.write_all(d).unwrap();
    }
    w.finish().unwrap().into_inner()
}
