//! The attack suite: each test is one attempt to get out of the sandbox or
//! past a limit, made by a hostile guest, and asserts that it fails, that
//! nothing outside the read-write mount changed, and that the host process
//! ended cleanly. Run it alone with `cargo test --release --test attacks`.
//!
//! The fixture, per test:
//!   outside/secret.txt        never readable, never changed
//!   root/  (mounted at / ro)  sub/f.txt and symlinks pointing out
//!   data/  (mounted at /data rw)

mod common;

use common::*;
use std::path::Path;
use std::process::Output;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for d in ["outside/sub", "root/sub", "data/x"] {
            std::fs::create_dir_all(p.join(d)).unwrap();
        }
        std::fs::write(p.join("outside/secret.txt"), "secret").unwrap();
        std::fs::write(p.join("outside/sub/deep.txt"), "secret deep").unwrap();
        std::fs::write(p.join("root/sub/f.txt"), "inside").unwrap();
        std::fs::write(p.join("data/d.txt"), "data").unwrap();
        let link =
            |target: &Path, at: &str| std::os::unix::fs::symlink(target, p.join(at)).unwrap();
        link(&p.join("outside/secret.txt"), "root/abs");
        link(Path::new("../outside/secret.txt"), "root/rel");
        link(Path::new("rel"), "root/chain");
        link(&p.join("outside"), "root/dirlink");
        link(Path::new("../outside/sub"), "root/mid");
        link(&p.join("outside/secret.txt"), "data/out");
        link(&p.join("outside/new.txt"), "data/dangle");
        Fixture { dir }
    }

    fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }

    /// Runs the probe with the standard mounts and extra options.
    fn probe(&self, opts: &[&str], ops: &[&str]) -> Output {
        let root = format!("{}:/:ro", self.path("root"));
        let data = format!("{}:/data:rw", self.path("data"));
        let p = probe();
        let mut args = vec!["run", "-m", &root, "-m", &data];
        args.extend_from_slice(opts);
        args.push(&p);
        args.extend_from_slice(ops);
        run(&args)
    }

    /// What must never change: everything but the read-write mount.
    fn protected(&self) -> Vec<(std::path::PathBuf, String)> {
        let mut v = snapshot(&self.dir.path().join("outside"));
        v.extend(snapshot(&self.dir.path().join("root")));
        v
    }
}

/// Runs one attack: `ops` for the probe, the line that shows it failed.
fn attack(opts: &[&str], ops: &[&str], expect: &str) -> Output {
    let f = Fixture::new();
    let before = f.protected();
    let out = f.probe(opts, ops);
    has_line(&out, expect);
    assert_clean(&f, &before, &out);
    out
}

fn assert_clean(f: &Fixture, before: &[(std::path::PathBuf, String)], out: &Output) {
    for l in text(&out.stdout).lines() {
        assert!(!l.contains(": ok secret"), "the guest read a secret: {l}");
    }
    assert_eq!(
        f.protected(),
        before,
        "the host changed outside the read-write mount"
    );
    assert!(!Path::new(&f.path("outside/new.txt")).exists());
    // The host ended on its own terms: an exit status, not a signal.
    assert!(
        out.status.code().is_some(),
        "pynbox died of a signal: {:?}",
        out.status
    );
}

macro_rules! attacks {
    ($($name:ident: [$($op:expr),*] => $expect:expr;)*) => {
        $(
            #[test]
            fn $name() {
                attack(&[], &[$($op),*], $expect);
            }
        )*
    };
}

attacks! {
    // Path traversal through every path-taking call.
    traversal_open: ["read", "/../outside/secret.txt"] => "read /../outside/secret.txt: error ENOENT";
    traversal_open_below_mount: ["read", "/data/../../outside/secret.txt"] => "read /data/../../outside/secret.txt: error ENOENT";
    traversal_open_inside_subdir: ["read", "/sub/../../outside/secret.txt"] => "read /sub/../../outside/secret.txt: error EPERM";
    traversal_stat: ["stat", "/sub/../../outside/secret.txt"] => "stat /sub/../../outside/secret.txt: error EPERM";
    traversal_readlink: ["readlink", "/sub/../../outside/secret.txt"] => "readlink /sub/../../outside/secret.txt: error EPERM";
    traversal_rename: ["rename", "/data/d.txt=/data/x/../../outside/moved"] => "rename /data/d.txt=/data/x/../../outside/moved: error EPERM";
    traversal_link: ["link", "/data/d.txt=/data/x/../../outside/linked"] => "link /data/d.txt=/data/x/../../outside/linked: error EPERM";
    traversal_unlink: ["unlink", "/data/x/../../outside/secret.txt"] => "unlink /data/x/../../outside/secret.txt: error EPERM";
    traversal_mkdir: ["mkdir", "/data/x/../../outside/newdir"] => "mkdir /data/x/../../outside/newdir: error EPERM";
    traversal_rmdir: ["rmdir", "/data/x/../../outside/sub"] => "rmdir /data/x/../../outside/sub: error EPERM";
    traversal_utime: ["utime", "/data/x/../../outside/secret.txt"] => "utime /data/x/../../outside/secret.txt: error EPERM";
    traversal_chdir: ["chdir", "/data/../..", "read", "outside/secret.txt"] => "read outside/secret.txt: error ENOENT";
    traversal_openat_dir_fd: ["openat", "/data=../outside/secret.txt"] => "openat /data=../outside/secret.txt: error ENOENT";
    traversal_openat_deep: ["openat", "/sub=../../../outside/secret.txt"] => "openat /sub=../../../outside/secret.txt: error EPERM";
    traversal_absolute_openat: ["openat", "/sub=/etc/passwd"] => "openat /sub=/etc/passwd: error ENOENT";
    // Symlinks pointing out, placed by the host.
    symlink_absolute: ["read", "/abs"] => "read /abs: error EPERM";
    symlink_relative: ["read", "/rel"] => "read /rel: error EPERM";
    symlink_chained: ["read", "/chain"] => "read /chain: error EPERM";
    symlink_intermediate_component: ["read", "/dirlink/secret.txt"] => "read /dirlink/secret.txt: error EPERM";
    symlink_intermediate_relative: ["read", "/mid/deep.txt"] => "read /mid/deep.txt: error EPERM";
    symlink_stat: ["stat", "/abs"] => "stat /abs: error EPERM";
    symlink_list: ["ls", "/dirlink"] => "ls /dirlink: error EPERM";
    symlink_write_through: ["write", "/data/out=pwned"] => "write /data/out=pwned: error EPERM";
    symlink_create_through_dangling: ["write", "/data/dangle=pwned"] => "write /data/dangle=pwned: error EPERM";
    // Links made by the guest.
    guest_symlink_refused: ["symlink", "../outside/secret.txt=/data/l"] => "symlink ../outside/secret.txt=/data/l: error EPERM";
    guest_hard_link_from_read_only: ["link", "/sub/f.txt=/data/h"] => "link /sub/f.txt=/data/h: error EROFS";
    guest_hard_link_to_outside: ["link", "/../outside/secret.txt=/data/h2"] => "link /../outside/secret.txt=/data/h2: error EROFS";
    guest_rename_out_of_read_only: ["rename", "/sub/f.txt=/data/g"] => "rename /sub/f.txt=/data/g: error EROFS";
    // Every change to a read-only mount.
    read_only_write: ["write", "/sub/f.txt=x"] => "write /sub/f.txt=x: error EROFS";
    read_only_create: ["write", "/sub/new=x"] => "write /sub/new=x: error EROFS";
    read_only_append: ["append", "/sub/f.txt=x"] => "append /sub/f.txt=x: error EROFS";
    read_only_truncate: ["truncate", "/sub/f.txt"] => "truncate /sub/f.txt: error EROFS";
    read_only_unlink: ["unlink", "/sub/f.txt"] => "unlink /sub/f.txt: error EROFS";
    read_only_mkdir: ["mkdir", "/sub/d"] => "mkdir /sub/d: error EROFS";
    read_only_rmdir: ["rmdir", "/sub"] => "rmdir /sub: error EROFS";
    read_only_utime: ["utime", "/sub/f.txt"] => "utime /sub/f.txt: error EROFS";
    read_only_rename: ["rename", "/sub/f.txt=/sub/g.txt"] => "rename /sub/f.txt=/sub/g.txt: error EROFS";
    remove_mount_point: ["rmdir", "/data"] => "rmdir /data: error EBUSY";
    // Descriptors and memory access.
    descriptor_guessing: ["fdguess", "1000"] => "fdguess 1000: ok 0,1,2,3";
    descriptor_write_ungranted: ["fdwrite", "77=x"] => "fdwrite 77=x: error EBADF";
    huge_read: ["hugeread", "/sub/f.txt"] => "hugeread /sub/f.txt: error EFAULT";
    huge_write: ["hugewrite", "1"] => "hugewrite 1: error EFAULT";
    open_files_until_the_limit: ["openmany", "/sub/f.txt"] => "openmany /sub/f.txt: ok 1020 EMFILE";
    many_files_in_read_write_mount: ["mkfiles", "/data=5000"] => "mkfiles /data=5000: ok 5000";
}

#[test]
fn exhausting_memory() {
    let f = Fixture::new();
    let before = f.protected();
    let out = f.probe(
        &["--memory", "64M"],
        &["alloc", "60", "alloc", "60", "alloc", "60"],
    );
    assert_eq!(out.status.code(), Some(137));
    has_line(&out, "alloc 60: error ENOMEM");
    assert_clean(&f, &before, &out);
}

/// The whole host process stays within the guest's limit plus a fixed
/// overhead (documented in docs/SECURITY.md: 64 MiB for pynbox, Wasmtime
/// and the compiled code).
#[test]
fn memory_of_the_host_stays_within_the_limit() {
    let f = Fixture::new();
    let args: Vec<String> = [
        "run",
        "--memory",
        "256M",
        &probe(),
        "alloc",
        "100",
        "alloc",
        "100",
        "alloc",
        "100",
        "alloc",
        "100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (status, peak_kib) = run_cli_measured(&args);
    assert_eq!(status.code(), Some(137));
    println!(
        "peak RSS of the host under a 256M guest limit: {} MiB",
        peak_kib / 1024
    );
    assert!(peak_kib < (256 + 64) * 1024, "host peak RSS {peak_kib} KiB");
    drop(f);
}

#[test]
fn stack_overflow_in_c() {
    let f = Fixture::new();
    let before = f.protected();
    let out = f.probe(&[], &["recurse", "1000000000"]);
    assert_eq!(out.status.code(), Some(134));
    assert!(text(&out.stderr).contains("the guest crashed"));
    assert_clean(&f, &before, &out);
}

#[test]
fn infinite_loop_without_calls() {
    let f = Fixture::new();
    let start = std::time::Instant::now();
    let out = f.probe(&["--timeout", "0.5"], &["spin", "0"]);
    assert_eq!(out.status.code(), Some(124));
    // Documented margin: the limit plus 0.5 s (10 ms epochs, process start).
    assert!(
        start.elapsed() < std::time::Duration::from_millis(1000 + 500),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn sleeping_past_the_limit() {
    let f = Fixture::new();
    let out = f.probe(&["--timeout", "0.5"], &["sleep", "100"]);
    assert_eq!(out.status.code(), Some(124));
}

#[test]
fn flooding_stdout() {
    let f = Fixture::new();
    let out = f.probe(&["--max-output", "64K"], &["flood", "1000000"]);
    assert_eq!(out.status.code(), Some(153));
    assert!(out.stdout.len() <= 64 * 1024);
}

#[test]
fn trap_instruction() {
    let f = Fixture::new();
    let out = f.probe(&[], &["trap", "0"]);
    assert_eq!(out.status.code(), Some(134));
}

fn module_attack(
    wat_or_bytes: Result<&str, Vec<u8>>,
    opts: &[&str],
    expect_code: i32,
    needle: &str,
) {
    let d = tempfile::tempdir().unwrap();
    let bytes = match wat_or_bytes {
        Ok(w) => wat::parse_str(w).unwrap(),
        Err(b) => b,
    };
    let p = d.path().join("m.wasm");
    std::fs::write(&p, bytes).unwrap();
    let mut args = vec!["run"];
    args.extend_from_slice(opts);
    let ps = p.display().to_string();
    args.push(&ps);
    let out = run(&args);
    assert_eq!(
        out.status.code(),
        Some(expect_code),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains(needle),
        "{needle:?} not in {}",
        text(&out.stderr)
    );
}

#[test]
fn malformed_truncated_module() {
    let good = std::fs::read(guest("probe")).unwrap();
    module_attack(
        Err(good[..good.len() / 3].to_vec()),
        &[],
        2,
        "not a valid WebAssembly module",
    );
}

#[test]
fn malformed_invalid_code() {
    // Type error in the function body: validation must refuse it.
    module_attack(
        Ok(
            r#"(module (memory (export "memory") 1) (func (export "_start") (i32.add (i64.const 1) (i32.const 2)) drop))"#,
        ),
        &[],
        2,
        "not a valid WebAssembly module",
    );
}

#[test]
fn malformed_imports_missing_function() {
    module_attack(
        Ok(
            r#"(module (import "wasi_snapshot_preview1" "path_open_all_files" (func)) (memory (export "memory") 1) (func (export "_start")))"#,
        ),
        &[],
        2,
        "path_open_all_files",
    );
}

#[test]
fn malformed_huge_memory() {
    module_attack(
        Ok(r#"(module (memory (export "memory") 65536) (func (export "_start")))"#),
        &["--memory", "64M"],
        137,
        "memory limit",
    );
}

#[test]
fn malformed_huge_table() {
    module_attack(
        Ok(
            r#"(module (memory (export "memory") 1) (table 4000000000 funcref) (func (export "_start")))"#,
        ),
        &[],
        2,
        "cannot start",
    );
}

#[test]
fn malformed_memory_grow_loop() {
    module_attack(
        Ok(r#"(module (memory (export "memory") 1)
              (func (export "_start") (loop (br_if 0 (i32.ne (memory.grow (i32.const 1000)) (i32.const -1)))) unreachable))"#),
        &["--memory", "256M"],
        137,
        "memory limit of 256M",
    );
}

#[test]
fn malformed_out_of_bounds_pointer_to_wasi() {
    // fd_write with an iovec array far outside memory: EFAULT, then exit 0.
    module_attack(
        Ok(
            r#"(module (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
              (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
              (memory (export "memory") 1)
              (func (export "_start") (call $exit (call $w (i32.const 1) (i32.const 0xfffffff0) (i32.const 2) (i32.const 0)))))"#,
        ),
        &[],
        21, // EFAULT, returned by fd_write and used as the exit status
        "",
    );
}

/// Attacks written in Python, against the installed interpreter.
#[test]
fn python_attempts_to_reach_the_host() {
    let dest = dest();
    let code = r#"
import os
attempts = {
    'etc passwd': lambda: open('/etc/passwd').read(),
    'dotdot': lambda: open('/../../../etc/passwd').read(),
    'proc': lambda: open('/proc/self/environ').read(),
    'dir fd escape': lambda: os.open('../../etc/passwd', os.O_RDONLY, dir_fd=os.open('/python', os.O_RDONLY)),
    'listdir parent': lambda: os.listdir('/python/../..') and open('/python/../../etc/passwd').read(),
    'write root': lambda: open('/evil', 'w').write('x'),
    'symlink': lambda: os.symlink('/etc/passwd', '/python/x'),
    'chmod': lambda: os.chmod('/python/bin/python.wasm', 0o777),
    'ctypes': lambda: __import__('ctypes'),
    'fork': lambda: os.fork(),
    'execv': lambda: os.execv('/bin/sh', ['sh']),
    'socket': lambda: __import__('socket').socket().connect(('127.0.0.1', 22)),
}
for name, f in attempts.items():
    try:
        f()
        print('ESCAPED', name)
    except (OSError, ImportError, AttributeError, NotImplementedError) as e:
        print('blocked', name, type(e).__name__)
"#;
    let out = std::process::Command::new(dest.join("bin/run"))
        .args(["python", "-c", code])
        .output()
        .unwrap();
    let o = text(&out.stdout);
    assert!(out.status.success(), "{o}\n{}", text(&out.stderr));
    assert!(!o.contains("ESCAPED"), "{o}");
    assert_eq!(o.matches("blocked").count(), 12, "{o}");
}
