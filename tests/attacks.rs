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
        link(Path::new("../outside"), "data/outdir");
        Fixture { dir }
    }

    fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }

    /// Runs the probe with the standard mounts and extra options, under a
    /// 32 MiB memory limit, and checks the host's peak memory.
    fn probe(&self, opts: &[&str], ops: &[&str]) -> Output {
        self.probe_in(32, opts, ops)
    }

    /// Runs the probe under a memory limit of `mib` MiB; the host process
    /// must stay within that plus [`HOST_OVERHEAD_MIB`] whatever the guest
    /// does.
    fn probe_in(&self, mib: i64, opts: &[&str], ops: &[&str]) -> Output {
        let root = format!("{}:/:ro", self.path("root"));
        let data = format!("{}:/data:rw", self.path("data"));
        let mut args = vec!["run", "-m", &root, "-m", &data];
        args.extend_from_slice(opts);
        checked_run(mib, &args, &[&probe()], ops)
    }

    /// What must never change: everything but the read-write mount.
    fn protected(&self) -> Vec<(std::path::PathBuf, String)> {
        let mut v = snapshot(&self.dir.path().join("outside"));
        v.extend(snapshot(&self.dir.path().join("root")));
        v
    }
}

/// What the host process may use beyond the guest's memory limit (pynbox,
/// Wasmtime, the compiled code): the figure docs/SECURITY.md promises.
const HOST_OVERHEAD_MIB: i64 = 64;

/// `pynbox run OPTS --memory MIB PROGRAM ARGS`, measured: asserts that the
/// host's peak resident memory stayed within the limit plus the overhead.
fn checked_run(mib: i64, opts: &[&str], program: &[&str], args: &[&str]) -> Output {
    let memory = format!("{mib}M");
    let mut cmd = pynbox();
    cmd.args(opts)
        .args(["--memory", &memory])
        .args(program)
        .args(args);
    let (out, peak_kib) = measured(&cmd);
    assert!(
        peak_kib < (mib + HOST_OVERHEAD_MIB) * 1024,
        "host peak RSS {} MiB under a {mib} MiB guest limit",
        peak_kib / 1024
    );
    out
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
    // No second name was given to a file outside (a hard link would not
    // change its content, only its link count).
    use std::os::unix::fs::MetadataExt;
    let secret = std::fs::metadata(f.path("outside/secret.txt")).unwrap();
    assert_eq!(secret.nlink(), 1, "a hard link to a file outside was made");
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
    // Path traversal through every path-taking call. `..` is lexical while
    // no symlink is crossed, so `/data/x/../../outside` is `/outside`: in
    // the read-only root, where no `outside` exists (ENOENT, as the kernel
    // answers before EROFS).
    traversal_open: ["read", "/../outside/secret.txt"] => "read /../outside/secret.txt: error ENOENT";
    traversal_open_below_mount: ["read", "/data/../../outside/secret.txt"] => "read /data/../../outside/secret.txt: error ENOENT";
    traversal_open_inside_subdir: ["read", "/sub/../../outside/secret.txt"] => "read /sub/../../outside/secret.txt: error ENOENT";
    traversal_stat: ["stat", "/sub/../../outside/secret.txt"] => "stat /sub/../../outside/secret.txt: error ENOENT";
    traversal_readlink: ["readlink", "/sub/../../outside/secret.txt"] => "readlink /sub/../../outside/secret.txt: error ENOENT";
    traversal_rename: ["rename", "/data/d.txt=/data/x/../../outside/moved"] => "rename /data/d.txt=/data/x/../../outside/moved: error ENOENT";
    traversal_link: ["link", "/data/d.txt=/data/x/../../outside/linked"] => "link /data/d.txt=/data/x/../../outside/linked: error ENOENT";
    traversal_unlink: ["unlink", "/data/x/../../outside/secret.txt"] => "unlink /data/x/../../outside/secret.txt: error ENOENT";
    traversal_mkdir: ["mkdir", "/data/x/../../outside/newdir"] => "mkdir /data/x/../../outside/newdir: error ENOENT";
    traversal_rmdir: ["rmdir", "/data/x/../../outside/sub"] => "rmdir /data/x/../../outside/sub: error ENOENT";
    traversal_utime: ["utime", "/data/x/../../outside/secret.txt"] => "utime /data/x/../../outside/secret.txt: error ENOENT";
    traversal_chdir: ["chdir", "/data/../..", "read", "outside/secret.txt"] => "read outside/secret.txt: error ENOENT";
    traversal_openat_dir_fd: ["openat", "/data=../outside/secret.txt"] => "openat /data=../outside/secret.txt: error ENOENT";
    traversal_openat_deep: ["openat", "/sub=../../../outside/secret.txt"] => "openat /sub=../../../outside/secret.txt: error ENOENT";
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
    guest_hard_link_to_outside: ["link", "/data/outdir/secret.txt=/data/h2"] => "link /data/outdir/secret.txt=/data/h2: error EPERM";
    guest_hard_link_to_outside_through_a_file_link: ["link", "/data/out=/data/h3", "read", "/data/h3"] => "read /data/h3: error EPERM";
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
    // Each open file holds a host descriptor: 256 by default (--open-files).
    open_files_until_the_limit: ["openmany", "/sub/f.txt"] => "openmany /sub/f.txt: ok 256 EMFILE";
    many_files_in_read_write_mount: ["mkfiles", "/data=5000"] => "mkfiles /data=5000: ok 5000";
}

#[test]
fn exhausting_memory() {
    let f = Fixture::new();
    let before = f.protected();
    let out = f.probe_in(64, &[], &["alloc", "60", "alloc", "60", "alloc", "60"]);
    assert_eq!(out.status.code(), Some(137));
    has_line(&out, "alloc 60: error ENOMEM");
    assert_clean(&f, &before, &out);
}

/// The whole host process stays within the guest's limit plus a fixed
/// overhead (documented in docs/SECURITY.md: 64 MiB for pynbox, Wasmtime
/// and the compiled code), with the guest taking all it can get.
#[test]
fn memory_of_the_host_stays_within_the_limit() {
    let f = Fixture::new();
    let before = f.protected();
    let out = f.probe_in(256, &[], &["allocmax", "8"]);
    let got: u64 = probe_lines(&out)
        .iter()
        .find_map(|l| l.strip_prefix("allocmax 8: ok "))
        .expect("the probe reports what it had")
        .parse()
        .unwrap();
    // The guest really pressed the limit: all but a few blocks of it.
    assert!(got >= 256 - 16, "the guest had only {got} MiB");
    assert_clean(&f, &before, &out);
}

/// The same with CPython, which grows its heap its own way.
#[test]
fn memory_of_the_host_stays_within_the_limit_with_python() {
    let dest = dest();
    let root = format!("{}:/:ro", dest.join("root").display());
    let code = "l = []\ntry:\n    while True: l.append(bytearray(4 << 20))\nexcept MemoryError:\n    print('refused after', len(l) * 4, 'MiB')";
    let cache = dest.join("cache");
    let out = checked_run(
        256,
        &[
            "run",
            "-m",
            &root,
            "--cache-dir",
            &cache.display().to_string(),
        ],
        &["python"],
        &["-c", code],
    );
    assert_ok(&out);
    let said = text(&out.stdout);
    let got: u64 = said
        .trim()
        .strip_prefix("refused after ")
        .and_then(|r| r.strip_suffix(" MiB"))
        .unwrap_or_else(|| panic!("{said}"))
        .parse()
        .unwrap();
    assert!(got >= 256 - 48, "Python had only {got} MiB");
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
    let before = f.protected();
    // Compiled before the clock starts.
    f.probe(&[], &["exit", "0"]);
    let start = std::time::Instant::now();
    let out = f.probe(&["--timeout", "0.5"], &["spin", "0"]);
    assert_clean(&f, &before, &out);
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
    let before = f.protected();
    let out = f.probe(&["--timeout", "0.5"], &["sleep", "100"]);
    assert_eq!(out.status.code(), Some(124));
    assert_clean(&f, &before, &out);
}

#[test]
fn flooding_stdout() {
    let f = Fixture::new();
    let before = f.protected();
    let out = f.probe(&["--max-output", "64K"], &["flood", "1000000"]);
    assert_eq!(out.status.code(), Some(153));
    assert!(out.stdout.len() <= 64 * 1024);
    assert_clean(&f, &before, &out);
}

#[test]
fn trap_instruction() {
    let f = Fixture::new();
    let before = f.protected();
    let out = f.probe(&[], &["trap", "0"]);
    assert_eq!(out.status.code(), Some(134));
    assert_clean(&f, &before, &out);
}

fn module_attack(
    wat_or_bytes: Result<&str, Vec<u8>>,
    mib: i64,
    opts: &[&str],
    expect_code: i32,
    needle: &str,
) -> Output {
    let d = tempfile::tempdir().unwrap();
    let bytes = match wat_or_bytes {
        Ok(w) => wat::parse_str(w).unwrap(),
        Err(b) => b,
    };
    let p = d.path().join("m.wasm");
    std::fs::write(&p, bytes).unwrap();
    // With the fixture's mounts, unless the attack brings its own.
    let f = Fixture::new();
    let before = f.protected();
    let (root, data) = (
        format!("{}:/:ro", f.path("root")),
        format!("{}:/data:rw", f.path("data")),
    );
    let mut args = vec!["run"];
    if !opts.contains(&"-m") {
        args.extend(["-m", &root, "-m", &data]);
    }
    args.extend_from_slice(opts);
    let ps = p.display().to_string();
    let out = checked_run(mib, &args, &[&ps], &[]);
    assert_eq!(
        out.status.code(),
        Some(expect_code),
        "{}",
        text(&out.stderr)
    );
    assert_clean(&f, &before, &out);
    assert!(
        text(&out.stderr).contains(needle),
        "{needle:?} not in {}",
        text(&out.stderr)
    );
    out
}

#[test]
fn malformed_truncated_module() {
    let good = std::fs::read(guest("probe")).unwrap();
    module_attack(
        Err(good[..good.len() / 3].to_vec()),
        32,
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
        32,
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
        32,
        &[],
        2,
        "path_open_all_files",
    );
}

#[test]
fn malformed_huge_memory() {
    module_attack(
        Ok(r#"(module (memory (export "memory") 65536) (func (export "_start")))"#),
        64,
        &[],
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
        32,
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
        256,
        &[],
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
        32,
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
    // Under a 64 MiB limit, measured like every attack.
    let mut cmd = std::process::Command::new(dest.join("bin/run"));
    cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["--memory", "64M", "python", "-c", code]);
    let (out, peak_kib) = measured(&cmd);
    let o = text(&out.stdout);
    assert!(out.status.success(), "{o}\n{}", text(&out.stderr));
    assert!(!o.contains("ESCAPED"), "{o}");
    assert_eq!(o.matches("blocked").count(), 12, "{o}");
    assert!(
        peak_kib < (64 + HOST_OVERHEAD_MIB) * 1024,
        "host peak RSS {} MiB",
        peak_kib / 1024
    );
    // The install the guest ran from is as it was.
    assert_ok(&run(&["verify", &dest.display().to_string()]));
}

// ---------------------------------------------------------------------
// Findings of an attacker's review, each performed as it was found. Every
// one of these succeeded against pynbox before its fix.

/// A read-only mount whose host directory lies inside a read-write
/// mount's: `H` at /w rw and `H/ro` at /w/ro ro, `H/sub` an ordinary
/// directory, and `H/hostlink` a symlink the host made to `ro`.
fn nested_fixture() -> (tempfile::TempDir, String, String) {
    let d = tempfile::tempdir().unwrap();
    let h = d.path().join("h");
    for sub in ["sub", "ro/d"] {
        std::fs::create_dir_all(h.join(sub)).unwrap();
    }
    std::fs::write(h.join("ro/f"), "read-only").unwrap();
    std::os::unix::fs::symlink("ro", h.join("hostlink")).unwrap();
    let w = format!("{}:/w:rw", h.display());
    let ro = format!("{}:/w/ro:ro", h.join("ro").display());
    (d, w, ro)
}

#[test]
fn nested_read_only_mount_is_not_written_through_dot_dot() {
    let (d, w, ro) = nested_fixture();
    let before = snapshot(&d.path().join("h/ro"));
    let ops = [
        ("write", "/w/sub/../ro/f=pwned", "EROFS"),
        ("append", "/w/sub/../ro/f=pwned", "EROFS"),
        ("truncate", "/w/sub/../ro/f", "EROFS"),
        ("unlink", "/w/sub/../ro/f", "EROFS"),
        ("rename", "/w/sub/../ro/f=/w/stolen", "EROFS"),
        ("rename", "/w/sub=/w/sub/../ro/moved", "EROFS"),
        ("link", "/w/sub/../ro/f=/w/linked", "EROFS"),
        ("mkdir", "/w/sub/../ro/new", "EROFS"),
        ("rmdir", "/w/sub/../ro/d", "EROFS"),
        ("utime", "/w/sub/../ro/f", "EROFS"),
        ("openat", "/w/sub=../ro/f", "ok read-only"),
    ];
    let mut args = Vec::new();
    for (op, arg, _) in &ops {
        args.extend([*op, *arg]);
    }
    let out = checked_run(32, &["run", "-m", &w, "-m", &ro], &[&probe()], &args);
    for (op, arg, want) in &ops {
        let want = if want.starts_with("ok") {
            format!("{op} {arg}: {want}")
        } else {
            format!("{op} {arg}: error {want}")
        };
        has_line(&out, &want);
    }
    assert_eq!(snapshot(&d.path().join("h/ro")), before);
    assert!(!d.path().join("h/stolen").exists() && !d.path().join("h/linked").exists());
}

#[test]
fn nested_read_only_mount_is_not_reached_through_symlinks() {
    let (d, w, ro) = nested_fixture();
    let before = snapshot(&d.path().join("h/ro"));
    // The guest makes its own links (allowed here), then goes through
    // them, and through a chain of a link and `..`; the host made one too.
    let ops = [
        ("symlink", ".=/w/self", "ok"),
        ("symlink", "sub=/w/s", "ok"),
        ("write", "/w/self/ro/f=pwned", "error EPERM"),
        ("write", "/w/s/../ro/f=pwned", "error EPERM"),
        ("unlink", "/w/self/ro/f", "error EPERM"),
        ("rmdir", "/w/self/ro/d", "error EPERM"),
        ("rename", "/w/self/ro/f=/w/stolen", "error EPERM"),
        ("mkdir", "/w/s/../ro/new", "error EPERM"),
        ("write", "/w/hostlink/f=pwned", "error EPERM"),
        ("read", "/w/hostlink/f", "error EPERM"),
        ("ls", "/w/hostlink", "error EPERM"),
        ("openat", "/w/s=../ro/f", "error EPERM"),
        // A final link to a file of the read-only mount: read, never written.
        ("symlink", "ro/f=/w/fl", "ok"),
        ("write", "/w/fl=pwned", "error EPERM"),
        ("append", "/w/fl=pwned", "error EPERM"),
        ("truncate", "/w/fl", "error EPERM"),
        ("utime", "/w/fl", "error EPERM"),
        ("read", "/w/fl", "ok read-only"),
    ];
    let mut args = Vec::new();
    for (op, arg, _) in &ops {
        args.extend([*op, *arg]);
    }
    let out = checked_run(
        32,
        &["run", "--allow-symlinks", "-m", &w, "-m", &ro],
        &[&probe()],
        &args,
    );
    for (op, arg, want) in &ops {
        has_line(&out, &format!("{op} {arg}: {want}"));
    }
    assert_eq!(snapshot(&d.path().join("h/ro")), before);
}

#[test]
fn a_mount_hides_what_lies_under_it_through_dot_dot() {
    // `/etc/../data/x` is the mount's x, not the hidden root/data/x.
    let d = tempfile::tempdir().unwrap();
    for sub in ["a/etc", "a/data", "b"] {
        std::fs::create_dir_all(d.path().join(sub)).unwrap();
    }
    std::fs::write(d.path().join("a/data/x"), "hidden").unwrap();
    std::fs::write(d.path().join("b/x"), "mounted").unwrap();
    let a = format!("{}:/:ro", d.path().join("a").display());
    let b = format!("{}:/data:rw", d.path().join("b").display());
    let out = checked_run(
        32,
        &["run", "-m", &a, "-m", &b],
        &[&probe()],
        &[
            "read",
            "/etc/../data/x",
            "openat",
            "/etc=../data/x",
            "write",
            "/etc/../data/y=new",
        ],
    );
    has_line(&out, "read /etc/../data/x: ok mounted");
    has_line(&out, "openat /etc=../data/x: ok mounted");
    has_line(&out, "write /etc/../data/y=new: ok");
    assert!(d.path().join("b/y").exists() && !d.path().join("a/data/y").exists());
}

#[test]
fn standard_streams_cannot_seek_truncate_or_write_at_an_offset() {
    // stdout appends to a host file that already holds the host's data;
    // the guest tries to grow it past --max-output by seeking, to cut it,
    // and to overwrite it.
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("log");
    std::fs::write(&log, "host data\n").unwrap();
    let append = || std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let mut cmd = pynbox();
    cmd.args(["run", "--max-output", "1K", "-h", "0:3", &probe()])
        .args([
            "seek",
            "1=1099511627776",
            "pwrite",
            "1=1099511627776",
            "ftruncate",
            "1=0",
            "seek",
            "3=10",
            "pread",
            "3=0",
            "ftruncate",
            "3=0",
        ])
        .stdin(std::fs::File::open(&log).unwrap())
        .stdout(append())
        .stderr(append());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(6), "six refusals");
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(written.starts_with("host data\n"), "{written}");
    for line in [
        "seek 1=1099511627776: error ESPIPE",
        "pwrite 1=1099511627776: error ESPIPE",
        "ftruncate 1=0: error EINVAL",
        "seek 3=10: error ESPIPE",
        "pread 3=0: error ESPIPE",
        "ftruncate 3=0: error EINVAL",
    ] {
        assert!(written.contains(line), "{line} not in {written}");
    }
    assert!(std::fs::metadata(&log).unwrap().len() < 2048);
}

#[test]
fn forwarded_descriptors_count_toward_the_output_limit() {
    let d = tempfile::tempdir().unwrap();
    let out_file = d.path().join("w");
    let w = format!("3:{}", out_file.display());
    let big = format!("3={}", "x".repeat(600));
    let out = run(&[
        "run",
        "--max-output",
        "1K",
        "-w",
        &w,
        &probe(),
        "fdwrite",
        &big,
        "fdwrite",
        &big,
    ]);
    assert_eq!(out.status.code(), Some(153), "{}", text(&out.stderr));
    assert!(std::fs::metadata(&out_file).unwrap().len() <= 1024);
}

/// A module that calls `fd_write(1, iovs, COUNT, nwritten)` with COUNT
/// iovecs that all cover the whole 16 MiB memory, and exits with the errno.
fn gather_bomb(count: u32) -> String {
    format!(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 256)
          (func (export "_start") (local $i i32)
            ;; iovecs at 0x100000, each {{ptr 0, len 16 MiB}}
            (loop $l
              (i32.store (i32.add (i32.const 0x100000) (i32.mul (local.get $i) (i32.const 8))) (i32.const 0))
              (i32.store (i32.add (i32.const 0x100004) (i32.mul (local.get $i) (i32.const 8))) (i32.const 0x1000000))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br_if $l (i32.lt_u (local.get $i) (i32.const {count}))))
            (call $exit (call $w (i32.const 1) (i32.const 0x100000) (i32.const {count}) (i32.const 0x200000)))))"#
    )
}

#[test]
fn gathered_writes_do_not_copy_guest_memory_into_the_host() {
    // 64 iovecs over 16 MiB: 1 GiB reaches /dev/null, the host holds none
    // of it (it peaked at 1.06 GB).
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("m.wasm");
    std::fs::write(&m, wat::parse_str(gather_bomb(64)).unwrap()).unwrap();
    // Through sh, so that the gigabyte goes to /dev/null, not to a file.
    let mut cmd = std::process::Command::new("sh");
    cmd.env("PYNBOX_CACHE_DIR", module_cache()).args([
        "-c",
        "exec \"$0\" \"$@\" >/dev/null",
        &pynbox_bin().display().to_string(),
        "run",
        "--memory",
        "32M",
        "--max-output",
        "none",
        &m.display().to_string(),
    ]);
    let (out, peak_kib) = measured(&cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    println!("1 GiB written: host peak RSS {} MiB", peak_kib / 1024);
    assert!(
        peak_kib < (32 + HOST_OVERHEAD_MIB) * 1024,
        "host peak RSS {} MiB",
        peak_kib / 1024
    );
    // 1,024 iovecs over 16 MiB ask for 16 GiB: refused (EINVAL = 28), not
    // allocated (the host was killed).
    module_attack(Ok(&gather_bomb(1024)), 32, &[], 28, "");
}

#[test]
fn huge_paths_are_refused_before_they_are_copied() {
    // A 16 MiB path of a/a/a/... to path_filestat_get: ENAMETOOLONG (37),
    // with the host's memory untouched (it peaked at 995 MB).
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "path_filestat_get" (func $st (param i32 i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 300)
      (func (export "_start") (local $i i32)
        (loop $l
          (i32.store16 (local.get $i) (i32.const 0x2f61)) ;; "a/"
          (local.set $i (i32.add (local.get $i) (i32.const 2)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 0x1000000))))
        (call $exit (call $st (i32.const 3) (i32.const 1) (i32.const 0) (i32.const 0x1000000) (i32.const 0x1100000)))))"#;
    let d = tempfile::tempdir().unwrap();
    let m = format!("{}:/:ro", d.path().display());
    module_attack(Ok(wat), 32, &["-m", &m], 37, "");
    // One component longer than NAME_MAX is refused the same way.
    let f = Fixture::new();
    let long = format!("/data/{}", "n".repeat(300));
    let out = f.probe(&[], &["stat", &long]);
    has_line(&out, &format!("stat {long}: error ENAMETOOLONG"));
}

#[test]
fn many_directory_descriptors_cost_the_host_no_listings() {
    // 5,000 long names in a directory the guest fills itself, then 1,000
    // descriptors on it, each with a listing started (it peaked at 1.46 GB).
    let f = Fixture::new();
    // Directory descriptors hold no host descriptor: --open-files does not
    // limit them.
    let out = f.probe(
        &[],
        &["mklong", "/data/x=5000", "readdirmany", "/data/x=1000"],
    );
    has_line(&out, "mklong /data/x=5000: ok 5000");
    has_line(&out, "readdirmany /data/x=1000: ok 1000");
}

#[test]
fn a_sandbox_holds_at_most_its_share_of_host_descriptors() {
    let f = Fixture::new();
    let out = f.probe(&["--open-files", "10"], &["openmany", "/sub/f.txt"]);
    has_line(&out, "openmany /sub/f.txt: ok 10 EMFILE");
}

#[test]
fn a_host_descriptor_that_is_not_open_is_an_error_not_pynbox_own() {
    // Descriptor 3 open, 4 closed: `-h 3:3 -h 4:4` must say 4 is not open,
    // not give the guest pynbox's duplicate of 3 as its 4.
    use std::os::unix::process::CommandExt;
    let mut cmd = pynbox();
    cmd.args([
        "run",
        "-h",
        "3:3",
        "-h",
        "4:4",
        &probe(),
        "fdwrite",
        "4=wrong",
    ]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let fd = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if fd != 3 {
                libc::close(fd);
            }
            libc::close(4);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("host descriptor 4 is not open"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn device_and_inode_numbers_do_not_reveal_the_host() {
    use std::os::unix::fs::MetadataExt;
    let f = Fixture::new();
    let out = f.probe(
        &[],
        &[
            "statid",
            "/sub/f.txt",
            "statid",
            "/sub/../sub/f.txt",
            "lsino",
            "/sub",
            "fstatid",
            "1",
        ],
    );
    let lines = probe_lines(&out);
    let detail = |prefix: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {lines:?}"))
            .to_string()
    };
    let id = detail("statid /sub/f.txt: ok ");
    let host = std::fs::metadata(f.path("root/sub/f.txt")).unwrap();
    let (dev, ino) = id.split_once(':').unwrap();
    assert_ne!(ino, host.ino().to_string(), "the host's inode number");
    assert_ne!(dev, host.dev().to_string(), "the host's device number");
    // Consistent within the sandbox: the same file has the same numbers
    // by any path, and readdir agrees with stat.
    assert_eq!(detail("statid /sub/../sub/f.txt: ok "), id);
    assert_eq!(detail("lsino /sub: ok "), format!("f.txt:{ino}"));
    let stdout_ino = detail("fstatid 1: ok ");
    assert!(!stdout_ino.ends_with(&format!(":{}", host.ino())));
}

#[test]
fn wrapping_guest_pointers_are_efault_not_a_panic() {
    // Offsets that wrap past 4 GiB in a full 4 GiB memory, where the first
    // field still lies in memory and the next one does not exist: an
    // iovec, poll subscriptions and events, argv pointers. Debug builds
    // (CI runs this in one) panicked on each (status 125).
    let calls = [
        // fd_write(1, iovs=0xfffffffc, 1, 0): ptr in memory, len past it
        r#"(call $exit (call $fd_write (i32.const 1) (i32.const 0xfffffffc) (i32.const 1) (i32.const 0)))"#,
        // poll_oneoff(in=0xfffffff8, out=0, 1, 0): userdata in memory, type past it
        r#"(call $exit (call $poll (i32.const 0xfffffff8) (i32.const 0) (i32.const 1) (i32.const 0)))"#,
        // args_get(argv=0xfffffffc, buf=0): argv[0] in memory, argv[1] past it
        r#"(call $exit (call $args_get (i32.const 0xfffffffc) (i32.const 0)))"#,
    ];
    let d = tempfile::tempdir().unwrap();
    for call in calls {
        let wat = format!(
            r#"(module
              (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
              (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
              (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
              (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
              (memory (export "memory") 65536)
              (func (export "_start") {call}))"#
        );
        let p = d.path().join("m.wasm");
        std::fs::write(&p, wat::parse_str(&wat).unwrap()).unwrap();
        let p = p.display().to_string();
        // The whole wasm32 memory is reserved, not touched.
        let out = checked_run(4096, &["run"], &[&p], &["second-argument"]);
        assert_eq!(out.status.code(), Some(21), "{call}: {}", text(&out.stderr));
    }
}

// ---------------------------------------------------------------------
// Promises of docs/SECURITY.md that had no test of their own.

#[test]
fn links_and_renames_between_two_read_write_mounts_are_exdev() {
    let d = tempfile::tempdir().unwrap();
    for sub in ["a", "b"] {
        std::fs::create_dir_all(d.path().join(sub)).unwrap();
    }
    std::fs::write(d.path().join("a/f"), "a").unwrap();
    let a = format!("{}:/a:rw", d.path().join("a").display());
    let b = format!("{}:/b:rw", d.path().join("b").display());
    let out = checked_run(
        32,
        &["run", "-m", &a, "-m", &b],
        &[&probe()],
        &[
            "link",
            "/a/f=/b/f",
            "rename",
            "/a/f=/b/g",
            "link",
            "/a/f=/a/same",
        ],
    );
    has_line(&out, "link /a/f=/b/f: error EXDEV");
    has_line(&out, "rename /a/f=/b/g: error EXDEV");
    // The same call within one mount works: the refusal is the crossing.
    has_line(&out, "link /a/f=/a/same: ok");
    assert!(snapshot(&d.path().join("b")).is_empty());
    assert_eq!(std::fs::read_to_string(d.path().join("a/f")).unwrap(), "a");
}

#[test]
fn sockets_and_signals_answer_their_exact_errnos() {
    // Each call's errno is the exit status: ENOTSUP (58) for every socket
    // call, ENOSYS (52) for proc_raise.
    let calls = [
        (
            "sock_accept",
            "(param i32 i32 i32)",
            "(i32.const 3) (i32.const 0) (i32.const 64)",
            58,
        ),
        (
            "sock_recv",
            "(param i32 i32 i32 i32 i32 i32)",
            "(i32.const 3) (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 64) (i32.const 68)",
            58,
        ),
        (
            "sock_send",
            "(param i32 i32 i32 i32 i32)",
            "(i32.const 3) (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 64)",
            58,
        ),
        (
            "sock_shutdown",
            "(param i32 i32)",
            "(i32.const 3) (i32.const 2)",
            58,
        ),
        ("proc_raise", "(param i32)", "(i32.const 9)", 52),
    ];
    for (name, params, args, errno) in calls {
        let wat = format!(
            r#"(module
              (import "wasi_snapshot_preview1" "{name}" (func $f {params} (result i32)))
              (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
              (memory (export "memory") 1)
              (func (export "_start") (call $exit (call $f {args}))))"#
        );
        module_attack(Ok(&wat), 32, &[], errno, "");
    }
}

#[test]
fn stderr_counts_toward_the_output_limit() {
    let out = run(&["run", "--max-output", "64K", &probe(), "errflood", "1000"]);
    assert_eq!(out.status.code(), Some(153), "{}", text(&out.stdout));
    // The guest's bytes, then pynbox's own line.
    let guest_bytes = out.stderr.iter().take_while(|&&b| b == b'e').count();
    assert!(guest_bytes <= 64 * 1024, "{guest_bytes} bytes got out");
    assert!(text(&out.stderr).contains("output limit of 64K reached"));
}

/// Every import that takes a guest pointer, called with one that lies past
/// the end of memory (0xfffffff0, in a one-page memory) and everything
/// else valid: each must answer EFAULT (21), the status the module exits
/// with. Descriptor 3 is the root directory, which holds `f`; descriptor
/// 1 is stdout; `$file` (at 512) is `f` opened for reading and writing.
#[test]
fn every_import_refuses_an_out_of_range_pointer() {
    const BAD: &str = "(i32.const 0xfffffff0)";
    // (import, its parameters, the arguments)
    let calls: Vec<(&str, &str, String)> = vec![
        ("args_get", "i32 i32", format!("{BAD} (i32.const 64)")),
        ("args_sizes_get", "i32 i32", format!("{BAD} (i32.const 64)")),
        ("environ_get", "i32 i32", format!("{BAD} (i32.const 64)")),
        ("environ_sizes_get", "i32 i32", format!("(i32.const 64) {BAD}")),
        ("clock_res_get", "i32 i32", format!("(i32.const 0) {BAD}")),
        ("clock_time_get", "i32 i64 i32", format!("(i32.const 0) (i64.const 0) {BAD}")),
        ("fd_fdstat_get", "i32 i32", format!("(i32.const 1) {BAD}")),
        ("fd_filestat_get", "i32 i32", format!("(i32.const 1) {BAD}")),
        ("fd_prestat_get", "i32 i32", format!("(i32.const 3) {BAD}")),
        ("fd_prestat_dir_name", "i32 i32 i32", format!("(i32.const 3) {BAD} (i32.const 1)")),
        ("fd_read", "i32 i32 i32 i32", format!("(local.get $file) {BAD} (i32.const 1) (i32.const 64)")),
        ("fd_read", "i32 i32 i32 i32", format!("(local.get $file) (i32.const 128) (i32.const 1) {BAD}")),
        ("fd_pread", "i32 i32 i32 i64 i32", format!("(local.get $file) {BAD} (i32.const 1) (i64.const 0) (i32.const 64)")),
        ("fd_write", "i32 i32 i32 i32", format!("(i32.const 1) {BAD} (i32.const 1) (i32.const 64)")),
        ("fd_write", "i32 i32 i32 i32", format!("(i32.const 1) (i32.const 136) (i32.const 1) {BAD}")),
        ("fd_pwrite", "i32 i32 i32 i64 i32", format!("(local.get $file) {BAD} (i32.const 1) (i64.const 0) (i32.const 64)")),
        ("fd_readdir", "i32 i32 i32 i64 i32", format!("(i32.const 3) {BAD} (i32.const 64) (i64.const 0) (i32.const 64)")),
        ("fd_seek", "i32 i64 i32 i32", format!("(local.get $file) (i64.const 0) (i32.const 0) {BAD}")),
        ("fd_tell", "i32 i32", format!("(local.get $file) {BAD}")),
        ("path_create_directory", "i32 i32 i32", format!("(i32.const 3) {BAD} (i32.const 1)")),
        ("path_filestat_get", "i32 i32 i32 i32 i32", format!("(i32.const 3) (i32.const 0) {BAD} (i32.const 1) (i32.const 64)")),
        ("path_filestat_get", "i32 i32 i32 i32 i32", format!("(i32.const 3) (i32.const 0) (i32.const 256) (i32.const 1) {BAD}")),
        ("path_filestat_set_times", "i32 i32 i32 i32 i64 i64 i32", format!("(i32.const 3) (i32.const 0) {BAD} (i32.const 1) (i64.const 0) (i64.const 0) (i32.const 0)")),
        ("path_link", "i32 i32 i32 i32 i32 i32 i32", format!("(i32.const 3) (i32.const 0) {BAD} (i32.const 1) (i32.const 3) (i32.const 256) (i32.const 1)")),
        ("path_open", "i32 i32 i32 i32 i32 i64 i64 i32 i32", format!("(i32.const 3) (i32.const 0) {BAD} (i32.const 1) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 64)")),
        ("path_open", "i32 i32 i32 i32 i32 i64 i64 i32 i32", format!("(i32.const 3) (i32.const 0) (i32.const 256) (i32.const 1) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) {BAD}")),
        ("path_readlink", "i32 i32 i32 i32 i32 i32", format!("(i32.const 3) {BAD} (i32.const 1) (i32.const 64) (i32.const 8) (i32.const 72)")),
        ("path_remove_directory", "i32 i32 i32", format!("(i32.const 3) {BAD} (i32.const 1)")),
        ("path_rename", "i32 i32 i32 i32 i32 i32", format!("(i32.const 3) {BAD} (i32.const 1) (i32.const 3) (i32.const 256) (i32.const 1)")),
        ("path_symlink", "i32 i32 i32 i32 i32", format!("{BAD} (i32.const 1) (i32.const 3) (i32.const 256) (i32.const 1)")),
        ("path_unlink_file", "i32 i32 i32", format!("(i32.const 3) {BAD} (i32.const 1)")),
        ("poll_oneoff", "i32 i32 i32 i32", format!("{BAD} (i32.const 1024) (i32.const 1) (i32.const 64)")),
        ("random_get", "i32 i32", format!("{BAD} (i32.const 16)")),
    ];
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("f"), "file").unwrap();
    let m = format!("{}:/:rw", root.display());
    for (name, params, args) in &calls {
        let wat = format!(
            r#"(module
              (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
              (import "wasi_snapshot_preview1" "{name}" (func $f (param {params}) (result i32)))
              (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
              (memory (export "memory") 1)
              ;; "f" at 256; an iovec {{ptr 192, len 4}} at 128 and at 136
              (data (i32.const 256) "f")
              (data (i32.const 128) "\c0\00\00\00\04\00\00\00\c0\00\00\00\04\00\00\00")
              (func (export "_start") (local $file i32)
                ;; open f for reading and writing (rights: read, seek, tell, write)
                (if (call $open (i32.const 3) (i32.const 0) (i32.const 256) (i32.const 1) (i32.const 0) (i64.const 0x66) (i64.const 0) (i32.const 0) (i32.const 512))
                  (then (call $exit (i32.const 99))))
                (local.set $file (i32.load (i32.const 512)))
                (call $exit (call $f {args}))))"#
        );
        let p = d.path().join("m.wasm");
        std::fs::write(&p, wat::parse_str(&wat).unwrap()).unwrap();
        let p = p.display().to_string();
        let out = checked_run(32, &["run", "-E", "A=B", "-m", &m], &[&p], &[]);
        assert_eq!(
            out.status.code(),
            Some(21),
            "{name}({args}): {}",
            text(&out.stderr)
        );
    }
    assert_eq!(std::fs::read_to_string(root.join("f")).unwrap(), "file");
}
