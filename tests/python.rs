//! The installed CPython in the sandbox, driven from outside through
//! `DEST/bin/run`: the quick start, stdio, descriptors, limits, and the
//! guest's own test suite.
//!
//! These tests need the `python` and `tests` packages: `scripts/test.sh`
//! builds and installs them and sets `PYNBOX_TEST_DEST`; without it the
//! packages are installed from `build/packages` into a temporary DEST.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin_run() -> Command {
    let mut c = Command::new(dest().join("bin/run"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    c
}

fn py(args: &[&str]) -> Output {
    bin_run().args(args).output().unwrap()
}

fn py_c(code: &str) -> Output {
    py(&["python", "-c", code])
}

#[test]
fn quick_start_lists_the_root() {
    let out = py_c("import os; print(sorted(os.listdir('/')))");
    assert_ok(&out);
    assert_eq!(text(&out.stdout).trim(), "['python', 'test']");
}

#[test]
fn test_pynbox_ends_with_all_passed() {
    let out = Command::new(dest().join("bin/test_pynbox"))
        .output()
        .unwrap();
    let o = text(&out.stdout);
    assert!(out.status.success(), "{o}\n{}", text(&out.stderr));
    assert!(o.trim_end().ends_with("All passed"), "{o}");
    assert!(
        o.contains("python: ") && o.contains(" passed, 0 failed"),
        "{o}"
    );
    assert!(
        o.contains("native: ") && o.contains("native huge allocation refused ... ok"),
        "{o}"
    );
}

#[test]
fn exit_status_and_tracebacks() {
    assert_eq!(py_c("import sys; sys.exit(42)").status.code(), Some(42));
    assert_eq!(py_c("exit(3)").status.code(), Some(3));
    let out = py_c("raise ValueError('boom')");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("ValueError: boom"));
    assert_eq!(py_c("pass").status.code(), Some(0));
}

#[test]
fn arguments_and_environment() {
    let out = bin_run()
        .args([
            "-E",
            "GREETING=hi there",
            "python",
            "-c",
            "import os, sys; print(sys.argv[1:], os.environ.get('GREETING'), 'HOME' in os.environ)",
            "a",
            "-b",
            "c d",
        ])
        .env("HOME", "/root")
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(
        text(&out.stdout).trim(),
        "['a', '-b', 'c d'] hi there False"
    );
}

#[test]
fn script_from_stdin_and_binary_stdout() {
    let mut child = bin_run()
        .args(["python"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"import sys\nsys.stdout.buffer.write(bytes(range(256)) * 3)\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_ok(&out);
    let want: Vec<u8> = (0..=255u8).cycle().take(768).collect();
    assert_eq!(out.stdout, want);
}

#[test]
fn interactive_prompt_on_a_terminal() {
    let (mut master, mut child) = python_on_a_terminal();
    master.write_all(b"print(6 * 7)\nexit()\n").unwrap();
    let mut seen = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    set_nonblocking(&master);
    while start.elapsed() < Duration::from_secs(30) {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(_) => break,
        }
        if let Ok(Some(_)) = child.try_wait() {
            // Read what is still buffered in the terminal, then stop.
            std::thread::sleep(Duration::from_millis(100));
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            break;
        }
    }
    let status = child.wait().unwrap();
    let s = text(&seen);
    assert!(s.contains(">>> "), "no prompt in {s:?}");
    assert!(s.contains("42"), "no answer in {s:?}");
    assert!(!s.contains("warning"), "a warning at start: {s:?}");
    assert!(status.success());
}

#[test]
fn continuation_prompts_come_before_the_lines_they_ask_for() {
    // Typed as a user types: each line only once its prompt is on the
    // terminal. A prompt written late (buffered until the end) makes a wait
    // time out, and the transcript shows where.
    let (mut master, mut child) = python_on_a_terminal();
    set_nonblocking(&master);
    let mut seen = Vec::new();
    let mut wait_for = |master: &mut std::fs::File, want: &str, count: usize| {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while text(&seen).matches(want).count() < count {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no {want:?} (#{count}) on the terminal: {:?}",
                text(&seen)
            );
            match master.read(&mut buf) {
                Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        text(&seen)
    };
    wait_for(&mut master, ">>> ", 1);
    master.write_all(b"def f():\n").unwrap();
    wait_for(&mut master, "... ", 1);
    master.write_all(b"    return 41 + 1\n").unwrap();
    wait_for(&mut master, "... ", 2);
    master.write_all(b"\n").unwrap();
    wait_for(&mut master, ">>> ", 2);
    master.write_all(b"f()\n").unwrap();
    wait_for(&mut master, "42", 1);
    master.write_all(b"exit()\n").unwrap();
    let s = wait_for(&mut master, "exit()", 1);
    assert!(child.wait().unwrap().success());
    // Prompt, then the echo of what was typed at it, in that order.
    let order = [
        ">>> def f():",
        "...     return 41 + 1",
        "... \r\n>>> f()",
        "42",
    ];
    let mut at = 0;
    for want in order {
        let i = s[at..]
            .find(want)
            .unwrap_or_else(|| panic!("{want:?} not after byte {at} of {s:?}"));
        at += i + want.len();
    }
}

/// `bin/run python` with a pseudo-terminal as its stdin, stdout and
/// stderr, as a user's shell gives it; returns the terminal's other side.
fn python_on_a_terminal() -> (std::fs::File, std::process::Child) {
    let (master, slave) = openpty();
    let child = bin_run()
        .arg("python")
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    (master, child)
}

fn openpty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let (mut m, mut s) = (0, 0);
    let r = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty failed");
    unsafe { (std::fs::File::from_raw_fd(m), std::fs::File::from_raw_fd(s)) }
}

fn set_nonblocking(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    unsafe {
        let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// A host program drives Python over descriptors 3 and 4, as Grist's data
/// engine did: JSON requests in, JSON answers out, 1,000 times.
#[test]
fn host_drives_python_over_pipes_3_and_4() {
    let code = r#"
import json, os
buf = b''
n = 0
while True:
    chunk = os.read(3, 65536)
    if not chunk:
        break
    buf += chunk
    while b'\n' in buf:
        line, buf = buf.split(b'\n', 1)
        req = json.loads(line)
        os.write(4, (json.dumps({'id': req['id'], 'sum': sum(req['values'])}) + '\n').encode())
        n += 1
print('served', n)
"#;
    let (to_guest_r, mut to_guest_w) = std::io::pipe().unwrap();
    let (from_guest_r, from_guest_w) = std::io::pipe().unwrap();
    let mut cmd = bin_run();
    cmd.args(["-h", "3:3", "-h", "4:4", "python", "-c", code])
        .stdout(Stdio::piped());
    let child = spawn_with_fds_3_4(&mut cmd, to_guest_r, from_guest_w);
    let mut reader = BufReader::new(from_guest_r);
    for i in 0..1000u64 {
        writeln!(to_guest_w, "{{\"id\": {i}, \"values\": [{i}, 1, 2]}}").unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, format!("{{\"id\": {i}, \"sum\": {}}}\n", i + 3));
    }
    drop(to_guest_w);
    let out = child.wait_with_output().unwrap();
    assert_ok(&out);
    assert_eq!(text(&out.stdout).trim(), "served 1000");
}

#[test]
fn read_write_mount_and_read_only_root() {
    let d = tempfile::tempdir().unwrap();
    let root = format!("{}:/:ro", dest().join("root").display());
    let data = format!("{}:/data:rw", d.path().display());
    let code = "import errno, os\nopen('/data/out.txt','w').write('written inside')\nos.chmod('/data/out.txt', 0o600)\nfor f in (lambda: open('/python/evil.txt','w'), lambda: os.chmod('/python/bin/python.wasm', 0o777)):\n    try:\n        f()\n    except OSError as e:\n        print('refused', errno.errorcode[e.errno])\n";
    let out = py(&["-m", &root, "-m", &data, "python", "-c", code]);
    assert_ok(&out);
    assert_eq!(text(&out.stdout).trim(), "refused EROFS\nrefused EROFS");
    assert_eq!(
        std::fs::read_to_string(d.path().join("out.txt")).unwrap(),
        "written inside"
    );
    assert!(!dest().join("root/python/evil.txt").exists());
}

#[test]
fn limits_end_python_with_their_status() {
    let start = Instant::now();
    // bin/run has no epoch checks in the guest's code: the process ends at
    // the limit, keeping what the guest had written.
    let out = py(&[
        "--timeout",
        "1",
        "python",
        "-c",
        "print('before', flush=True)\nwhile True: pass",
    ]);
    assert_eq!(out.status.code(), Some(124));
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(text(&out.stderr).contains("time limit of 1 s reached"));
    assert_eq!(text(&out.stdout), "before\n");

    let out = py(&[
        "--memory",
        "128M",
        "python",
        "-c",
        "x = bytearray(500 * 2**20)",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("MemoryError"));
    assert!(text(&out.stderr).contains("memory limit of 128M reached"));

    // MemoryError can be caught: the guest goes on.
    let out = py(&[
        "--memory",
        "128M",
        "python",
        "-c",
        "try:\n    x = bytearray(500 * 2**20)\nexcept MemoryError:\n    print('recovered')",
    ]);
    assert_ok(&out);
    assert_eq!(text(&out.stdout).trim(), "recovered");

    let out = py(&[
        "--max-output",
        "1M",
        "python",
        "-c",
        "while True: print('x' * 1000)",
    ]);
    assert_eq!(out.status.code(), Some(153));
    assert!(out.stdout.len() <= 1 << 20);
}

#[test]
fn deep_recursion_is_an_exception_not_a_crash() {
    let out = py_c("import sys\ndef f(n): return f(n + 1)\ntry:\n    f(0)\nexcept RecursionError:\n    print('RecursionError')\n");
    assert_ok(&out);
    assert_eq!(text(&out.stdout).trim(), "RecursionError");
    let out = py_c("import json\nx = []\nfor _ in range(100000): x = [x]\ntry:\n    json.dumps(x)\nexcept RecursionError:\n    print('RecursionError')\n");
    assert_ok(&out);
    assert_eq!(text(&out.stdout).trim(), "RecursionError");
}

#[test]
fn each_run_gets_fresh_randomness_and_hash_seed() {
    let code = "import random; print(hash('pynbox'), random.random())";
    let fields = || -> Vec<String> {
        let out = py_c(code);
        assert_ok(&out);
        let f: Vec<String> = text(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        assert_eq!(f.len(), 2, "{f:?}");
        f
    };
    let (a, b) = (fields(), fields());
    assert_ne!(a[0], b[0], "the same hash secret twice");
    assert_ne!(a[1], b[1], "the same random state twice");
    let fixed = || {
        let out = py(&[
            "-E",
            "PYTHONHASHSEED=0",
            "python",
            "-c",
            "print(hash('pynbox'))",
        ]);
        assert_ok(&out);
        let h = text(&out.stdout).trim().to_string();
        assert!(h.parse::<i64>().is_ok(), "{h:?}");
        h
    };
    assert_eq!(fixed(), fixed());
}

#[test]
fn every_required_module_works() {
    let code = r#"
import zlib, bz2, lzma, sqlite3, decimal, pyexpat, xml.etree.ElementTree as ET, _elementtree
import hashlib, unicodedata, zoneinfo, array, _json, _pickle, _datetime, math, cmath, _random, _struct, select, binascii
assert hashlib.sha3_256(b'abc').hexdigest() == '3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532'
assert hashlib.blake2s(b'abc').hexdigest() == '508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982'
assert zlib.decompress(zlib.compress(b'x' * 1000)) == b'x' * 1000
assert decimal.Decimal('1.1') + decimal.Decimal('2.2') == decimal.Decimal('3.3')
db = sqlite3.connect(':memory:'); assert db.execute('select sqlite_version()').fetchone()[0] >= '3.40'
print('ok')
"#;
    let out = py_c(code);
    assert_ok(&out);
    assert_eq!(text(&out.stdout).trim(), "ok");
}

#[test]
fn impossible_services_raise_python_errors() {
    let code = r#"
import os, socket, subprocess, threading
for name, f in [
    ('pipe', lambda: os.pipe()),
    ('subprocess', lambda: subprocess.run(['ls'])),
    ('socket', lambda: socket.create_connection(('127.0.0.1', 1))),
    ('thread', lambda: threading.Thread(target=print).start()),
]:
    try:
        f()
        print(name, 'WORKED')
    except (OSError, RuntimeError, AttributeError) as e:
        print(name, 'refused')
"#;
    let out = py_c(code);
    assert_ok(&out);
    for name in ["pipe", "subprocess", "socket", "thread"] {
        assert!(
            text(&out.stdout).contains(&format!("{name} refused")),
            "{}",
            text(&out.stdout)
        );
    }
}

/// What real programs (and CPython's own test helpers) rely on: a
/// read-only mount answers as the kernel does, a lookup error before
/// EROFS; a name with a trailing slash must be a directory's; O_NONBLOCK
/// is kept (issue 16's deviations).
#[test]
fn errnos_follow_the_kernel_on_read_only_mounts_and_trailing_slashes() {
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("f"), "f").unwrap();
    let code = r#"
import errno, os
def e(f):
    try:
        f()
        return 'ok'
    except OSError as x:
        return errno.errorcode[x.errno]
W = '/python/bin/python.wasm'
print(' '.join([
    e(lambda: os.unlink('/python/nope')),
    e(lambda: os.rmdir('/python/nope')),
    e(lambda: os.mkdir('/python')),
    e(lambda: os.mkdir('/python/new')),
    e(lambda: os.mkdir('/nope/new')),
    e(lambda: os.unlink(W)),
    e(lambda: os.rename('/python/nope', '/python/x')),
    e(lambda: os.utime('/python/nope')),
    e(lambda: os.close(os.open(W, os.O_RDONLY | os.O_CREAT))),
    e(lambda: os.open(W, os.O_RDONLY | os.O_CREAT | os.O_EXCL)),
    e(lambda: open('/python/new.txt', 'w')),
    e(lambda: open('/s/does_not_exist/', 'w')),
    e(lambda: os.stat('/s/f/')),
    e(lambda: os.stat(W + '/')),
    e(lambda: open('/s/f/')),
]))
fd = os.open('/s/f', os.O_RDONLY)
os.set_blocking(fd, False)
print(os.get_blocking(fd))
"#;
    let s = format!("{}:/s:rw", scratch.path().display());
    let root = format!("{}/root:/:ro", dest().display());
    let out = py(&["-m", &root, "-m", &s, "python", "-c", code]);
    assert_ok(&out);
    let o = text(&out.stdout);
    let mut lines = o.lines();
    assert_eq!(
        lines.next().unwrap(),
        "ENOENT ENOENT EEXIST EROFS ENOENT EROFS ENOENT ENOENT ok EEXIST EROFS EISDIR ENOTDIR ENOTDIR ENOTDIR"
    );
    assert_eq!(lines.next().unwrap(), "False", "O_NONBLOCK was dropped");
    assert!(!scratch.path().join("does_not_exist").exists());
}
