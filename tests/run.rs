//! `pynbox run` from the outside: the real binary on real wasm guests.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    std::fs::create_dir_all(p.join("root/sub")).unwrap();
    std::fs::create_dir_all(p.join("data")).unwrap();
    std::fs::write(p.join("root/sub/f.txt"), "hello").unwrap();
    std::fs::write(p.join("secret.txt"), "secret").unwrap();
    std::fs::write(p.join("data/d.txt"), "data").unwrap();
    t
}

fn m(t: &tempfile::TempDir, sub: &str, guest: &str, mode: &str) -> String {
    format!("{}:{guest}:{mode}", t.path().join(sub).display())
}

#[test]
fn root_lists_mount_points_and_root_contents() {
    let t = tree();
    let out = run(&[
        "run",
        "-m",
        &m(&t, "root", "/", "ro"),
        "-m",
        &m(&t, "data", "/data", "rw"),
        "-m",
        &m(&t, "data", "/deep/er/mnt", "ro"),
        &probe(),
        "ls",
        "/",
        "ls",
        "/deep",
        "ls",
        "/deep/er/mnt",
        "read",
        "/deep/er/mnt/d.txt",
    ]);
    has_line(&out, "ls /: ok data,deep,sub");
    has_line(&out, "ls /deep: ok er");
    has_line(&out, "ls /deep/er/mnt: ok d.txt");
    has_line(&out, "read /deep/er/mnt/d.txt: ok data");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn without_root_mount_only_mount_points_exist() {
    let t = tree();
    let out = run(&[
        "run",
        "-m",
        &m(&t, "data", "/data", "ro"),
        &probe(),
        "ls",
        "/",
        "read",
        "/etc/passwd",
        "write",
        "/x=1",
    ]);
    has_line(&out, "ls /: ok data");
    has_line(&out, "read /etc/passwd: error ENOENT");
    has_line(&out, "write /x=1: error EROFS");
}

#[test]
fn nested_read_write_mount_under_read_only_root() {
    let t = tree();
    let before = snapshot(&t.path().join("root"));
    let out = run(&[
        "run",
        "-m",
        &m(&t, "root", "/", "ro"),
        "-m",
        &m(&t, "data", "/data", "rw"),
        &probe(),
        "write",
        "/data/new.txt=abc",
        "read",
        "/data/new.txt",
        "write",
        "/sub/new.txt=abc",
        "mkdir",
        "/data/dir",
        "rmdir",
        "/data/dir",
        "unlink",
        "/data/new.txt",
    ]);
    has_line(&out, "write /data/new.txt=abc: ok");
    has_line(&out, "read /data/new.txt: ok abc");
    has_line(&out, "write /sub/new.txt=abc: error EROFS");
    has_line(&out, "rmdir /data/dir: ok");
    has_line(&out, "unlink /data/new.txt: ok");
    assert_eq!(before, snapshot(&t.path().join("root")));
}

#[test]
fn read_only_mount_refuses_every_change() {
    let t = tree();
    let before = snapshot(t.path());
    let out = run(&[
        "run",
        "-m",
        &m(&t, "root", "/", "ro"),
        &probe(),
        "write",
        "/sub/f.txt=x",
        "write",
        "/sub/new=x",
        "append",
        "/sub/f.txt=x",
        "openrw",
        "/sub/f.txt",
        "unlink",
        "/sub/f.txt",
        "mkdir",
        "/sub/d",
        "rmdir",
        "/sub",
        "rename",
        "/sub/f.txt=/sub/g.txt",
        "link",
        "/sub/f.txt=/sub/h",
        "utime",
        "/sub/f.txt",
        "truncate",
        "/sub/f.txt",
        "symlink",
        "f.txt=/sub/l",
    ]);
    for line in [
        "write /sub/f.txt=x: error EROFS",
        "write /sub/new=x: error EROFS",
        "append /sub/f.txt=x: error EROFS",
        "openrw /sub/f.txt: error EROFS",
        "unlink /sub/f.txt: error EROFS",
        "mkdir /sub/d: error EROFS",
        "rmdir /sub: error EROFS",
        "rename /sub/f.txt=/sub/g.txt: error EROFS",
        "link /sub/f.txt=/sub/h: error EROFS",
        "utime /sub/f.txt: error EROFS",
        "truncate /sub/f.txt: error EROFS",
        "symlink f.txt=/sub/l: error EROFS",
    ] {
        has_line(&out, line);
    }
    assert_eq!(before, snapshot(t.path()));
}

#[test]
fn dot_dot_cannot_leave_a_mount() {
    let t = tree();
    let out = run(&[
        "run",
        "-m",
        &m(&t, "root", "/", "ro"),
        "-m",
        &m(&t, "data", "/data", "rw"),
        &probe(),
        "read",
        "/../secret.txt",
        "read",
        "/sub/../../secret.txt",
        "read",
        "/data/../../secret.txt",
        "ls",
        "/..",
        "chdir",
        "/data",
        "read",
        "../../secret.txt",
        "stat",
        "/../../..",
    ]);
    for l in probe_lines(&out) {
        assert!(!l.contains("ok secret"), "escaped: {l}");
    }
    has_line(&out, "read /../secret.txt: error ENOENT");
    // `..` is lexical: /sub/../.. is /, whose parent is itself.
    has_line(&out, "read /sub/../../secret.txt: error ENOENT");
    has_line(&out, "ls /..: ok data,sub");
}

#[test]
fn symlinks_pointing_out_are_not_followed() {
    let t = tree();
    let root = t.path().join("root");
    let secret = t.path().join("secret.txt");
    std::os::unix::fs::symlink(&secret, root.join("abs")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", root.join("rel")).unwrap();
    std::os::unix::fs::symlink("rel", root.join("chain")).unwrap();
    std::os::unix::fs::symlink(t.path(), root.join("dirlink")).unwrap();
    std::os::unix::fs::symlink("sub/../..", root.join("updir")).unwrap();
    std::os::unix::fs::symlink("sub/f.txt", root.join("inside")).unwrap();
    let out = run(&[
        "run",
        "-m",
        &m(&t, "root", "/", "ro"),
        &probe(),
        "read",
        "/abs",
        "read",
        "/rel",
        "read",
        "/chain",
        "read",
        "/dirlink/secret.txt",
        "read",
        "/updir/secret.txt",
        "ls",
        "/dirlink",
        "stat",
        "/abs",
        "read",
        "/inside",
    ]);
    for op in [
        "read /abs",
        "read /rel",
        "read /chain",
        "read /dirlink/secret.txt",
        "read /updir/secret.txt",
        "ls /dirlink",
        "stat /abs",
    ] {
        has_line(&out, &format!("{op}: error EPERM"));
    }
    has_line(&out, "read /inside: ok hello");
}

#[test]
fn guest_cannot_create_symlinks_unless_allowed() {
    let t = tree();
    let data = m(&t, "data", "/data", "rw");
    let out = run(&["run", "-m", &data, &probe(), "symlink", "d.txt=/data/l"]);
    has_line(&out, "symlink d.txt=/data/l: error EPERM");
    assert!(!t.path().join("data/l").exists());

    let out = run(&[
        "run",
        "--allow-symlinks",
        "-m",
        &data,
        &probe(),
        "symlink",
        "d.txt=/data/l",
        "read",
        "/data/l",
        "symlink",
        "/etc/passwd=/data/abs",
        "symlink",
        "../secret.txt=/data/up",
        "read",
        "/data/up",
    ]);
    has_line(&out, "symlink d.txt=/data/l: ok");
    has_line(&out, "read /data/l: ok data");
    // Even when allowed, a link pointing out leads nowhere.
    for l in probe_lines(&out) {
        assert!(!l.contains("ok secret"), "escaped: {l}");
    }
}

#[test]
fn hard_links_cannot_cross_mounts() {
    let t = tree();
    let out = run(&[
        "run",
        "-m",
        &m(&t, "root", "/", "ro"),
        "-m",
        &m(&t, "data", "/data", "rw"),
        &probe(),
        "link",
        "/sub/f.txt=/data/stolen",
        "link",
        "/data/d.txt=/data/same",
    ]);
    // The read-only file must not become writable through a new name.
    has_line(&out, "link /sub/f.txt=/data/stolen: error EROFS");
    has_line(&out, "link /data/d.txt=/data/same: ok");
    assert!(!t.path().join("data/stolen").exists());
}

#[test]
fn host_symlink_swap_race_never_escapes() {
    // The host flips a path between a real directory, an absolute symlink
    // to the outside and a relative one (`../outside`) while the guest
    // keeps reading and writing a file through it.
    let t = tree();
    let data = t.path().join("data");
    let outside = t.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("f.txt"), "secret").unwrap();
    let outside_before = snapshot(&outside);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let stop = stop.clone();
        let data = data.clone();
        let outside = outside.clone();
        std::thread::spawn(move || {
            let swap = data.join("swap");
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::fs::remove_file(&swap);
                let _ = std::fs::remove_dir_all(&swap);
                match n % 3 {
                    0 => {
                        let _ = std::os::unix::fs::symlink(&outside, &swap);
                    }
                    1 => {
                        let _ = std::os::unix::fs::symlink("../outside", &swap);
                    }
                    _ => {
                        let _ = std::fs::create_dir(&swap);
                        let _ = std::fs::write(swap.join("f.txt"), "inside");
                    }
                }
                n += 1;
            }
            n
        })
    };
    let mut ops = Vec::new();
    for _ in 0..250 {
        ops.extend([
            "read",
            "/data/swap/f.txt",
            "write",
            "/data/swap/w.txt=pwned",
        ]);
    }
    let p = probe();
    // Compiled before the race starts.
    assert_ok(&run(&["run", &p, "exit", "0"]));
    let start = Instant::now();
    let (mut ok_reads, mut ok_writes) = (0, 0);
    while start.elapsed() < Duration::from_secs(4) {
        let mount = m(&t, "data", "/data", "rw");
        let mut args = vec!["run", "-m", &mount, &p];
        args.extend(ops.iter().copied());
        let out = run(&args);
        for l in probe_lines(&out) {
            assert!(!l.contains("secret"), "escaped during the race: {l}");
            if l.ends_with("ok inside") {
                ok_reads += 1;
            } else if l.starts_with("write") && l.ends_with(": ok") {
                ok_writes += 1;
            }
        }
        assert_eq!(
            snapshot(&outside),
            outside_before,
            "a write went outside during the race"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    assert!(flips > 100, "the host did not race ({flips} swaps)");
    assert!(ok_reads > 0, "the guest never read the real file");
    assert!(ok_writes > 0, "the guest never wrote the real directory");
}

#[test]
fn arguments_environment_and_exit_status() {
    let out = run(&[
        "run",
        "-E",
        "A=1",
        "-E",
        "B=x=y",
        &probe(),
        "env",
        "A",
        "env",
        "B",
        "env",
        "HOME",
        "env",
        "PATH",
        "args",
        "a b",
        "exit",
        "7",
    ]);
    has_line(&out, "env A: ok 1");
    has_line(&out, "env B: ok x=y");
    has_line(&out, "env HOME: ok (unset)");
    has_line(&out, "env PATH: ok (unset)");
    assert!(text(&out.stdout).contains("|args|a b|exit|7"));
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn stdio_is_binary_safe_through_pipes() {
    let t = tree();
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70000).collect();
    let mut child = pynbox()
        .args(["run", &probe(), "echo", "0=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = Vec::new();
    for i in 0..100 {
        input.extend_from_slice(format!("line {i}\n").as_bytes());
    }
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout).matches("echo:line").count(), 100);
    drop(t);

    // Every byte value, through stdin and back out of stdout, unchanged.
    let mut child = pynbox()
        .args(["run", &probe(), "cat", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = {
        let bytes = bytes.clone();
        std::thread::spawn(move || stdin.write_all(&bytes).unwrap())
    };
    let out = child.wait_with_output().unwrap();
    feed.join().unwrap();
    assert_ok(&out);
    assert!(out.stdout == bytes, "the bytes came back changed");

    // And from a file given with -r.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("in.bin"), &bytes).unwrap();
    let r = format!("3:{}", d.path().join("in.bin").display());
    let out = run(&["run", "-r", &r, &probe(), "cat", "3"]);
    assert_ok(&out);
    assert!(out.stdout == bytes, "the bytes came back changed");
}

#[test]
fn forwarded_files_with_r_and_w() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in.txt");
    let output = d.path().join("out.txt");
    std::fs::write(&input, "from the host").unwrap();
    let out = run(&[
        "run",
        "-r",
        &format!("3:{}", input.display()),
        "-w",
        &format!("4:{}", output.display()),
        &probe(),
        "fdread",
        "3",
        "fdwrite",
        "4=to the host",
        "fdwrite",
        "3=nope",
        "fdguess",
        "10",
    ]);
    has_line(&out, "fdread 3: ok from the host");
    has_line(&out, "fdwrite 4=to the host: ok");
    has_line(&out, "fdwrite 3=nope: error EBADF");
    // 3 and 4 forwarded, the root preopen at 5, nothing else.
    has_line(&out, "fdguess 10: ok 0,1,2,3,4,5");
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "to the host");
}

#[test]
fn descriptors_not_granted_do_not_exist() {
    let out = run(&[
        "run",
        &probe(),
        "fdguess",
        "1000",
        "fdread",
        "7",
        "fdwrite",
        "9=x",
    ]);
    has_line(&out, "fdguess 1000: ok 0,1,2,3");
    has_line(&out, "fdread 7: error EBADF");
    has_line(&out, "fdwrite 9=x: error EBADF");
}

/// A host program drives a guest over two pipes on descriptors 3 and 4,
/// as Grist's data engine did: 1,000 requests, each answered in turn.
#[test]
fn host_drives_guest_over_pipes_on_3_and_4() {
    let (to_guest_r, mut to_guest_w) = std::io::pipe().unwrap();
    let (from_guest_r, from_guest_w) = std::io::pipe().unwrap();
    let mut cmd = pynbox();
    cmd.args(["run", "-h", "3:3", "-h", "4:4", &probe(), "echo", "3=4"]);
    let child = spawn_with_fds_3_4(cmd.stdout(Stdio::piped()), to_guest_r, from_guest_w);
    let mut reader = BufReader::new(from_guest_r);
    for i in 0..1000 {
        writeln!(to_guest_w, "request {i}").unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, format!("echo:request {i}\n"));
    }
    drop(to_guest_w);
    let out = child.wait_with_output().unwrap();
    has_line(&out, "echo 3=4: ok 1000 lines");
    assert!(out.status.success());
}

#[test]
fn memory_limit_ends_guest_with_message_and_status() {
    let out = run(&[
        "run",
        "--memory",
        "64M",
        &probe(),
        "alloc",
        "32",
        "alloc",
        "200",
    ]);
    has_line(&out, "alloc 32: ok");
    has_line(&out, "alloc 200: error ENOMEM");
    // The guest saw the refusal and exited non-zero itself.
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("memory limit of 64M reached (--memory)"));
    let out = run(&["run", "--memory", "none", &probe(), "alloc", "200"]);
    has_line(&out, "alloc 200: ok");
}

#[test]
fn time_limit_stops_a_loop_without_calls() {
    // Compiled before the clock starts.
    assert_ok(&run(&["run", &probe(), "exit", "0"]));
    let start = Instant::now();
    let out = run(&["run", "--timeout", "1", &probe(), "spin", "0"]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(124));
    assert!(text(&out.stderr).contains("time limit of 1 s reached (--timeout)"));
    assert!(took < Duration::from_secs(3), "took {took:?}");

    let out = run(&["run", "--timeout", "0.5", &probe(), "sleep", "30"]);
    assert_eq!(out.status.code(), Some(124));
}

#[test]
fn output_limit_holds_against_a_flood() {
    let out = run(&["run", "--max-output", "100K", &probe(), "flood", "100000"]);
    assert_eq!(out.status.code(), Some(153));
    assert!(
        out.stdout.len() <= 100 * 1024,
        "{} bytes got out",
        out.stdout.len()
    );
    assert!(text(&out.stderr).contains("output limit of 100K reached (--max-output)"));
}

#[test]
fn traps_and_stack_overflow_are_reported_not_crashes() {
    let out = run(&["run", &probe(), "trap", "0"]);
    assert_eq!(out.status.code(), Some(134));
    assert!(
        text(&out.stderr).starts_with("pynbox: the guest crashed:"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["run", &probe(), "recurse", "100000000"]);
    assert_eq!(out.status.code(), Some(134));
    assert!(
        text(&out.stderr).contains("crashed"),
        "{}",
        text(&out.stderr)
    );
}

fn one_line_usage_error(out: &std::process::Output, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("pynbox: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
}

#[test]
fn bad_command_lines_give_one_line_errors() {
    let t = tree();
    let p = probe();
    one_line_usage_error(
        &run(&["run", "--frobnicate", &p]),
        "unknown option '--frobnicate'",
    );
    one_line_usage_error(&run(&["run", "-m", "/tmp:/data", &p]), "mode is missing");
    one_line_usage_error(&run(&["run", "-m", "/tmp:/data:rx", &p]), "ro or rw");
    one_line_usage_error(
        &run(&["run", "-m", "/no/such/dir:/d:ro", &p]),
        "does not exist",
    );
    one_line_usage_error(
        &run(&["run", "-m", &m(&t, "data", "data", "ro"), &p]),
        "not absolute",
    );
    one_line_usage_error(&run(&["run", "-h", "77:3", &p]), "not open");
    one_line_usage_error(&run(&["run", "-h", "x", &p]), "-h HOST_FD:GUEST_FD");
    one_line_usage_error(&run(&["run", "/no/such/prog.wasm"]), "does not exist");
    one_line_usage_error(&run(&["run", "--memory", "lots", &p]), "not a size");
    one_line_usage_error(&run(&["run", "--timeout", "-1", &p]), "--timeout");
    // Too large for a duration: an error, not a panic.
    one_line_usage_error(&run(&["run", "--timeout", "1e300", &p]), "--timeout");
    one_line_usage_error(&run(&["run", "--open-files", "many", &p]), "--open-files");
    one_line_usage_error(&run(&["run", "-E", "NOEQUALS", &p]), "NAME=VALUE");
    std::fs::write(t.path().join("text.wasm"), "hello").unwrap();
    one_line_usage_error(
        &run(&["run", &t.path().join("text.wasm").display().to_string()]),
        "not a WebAssembly module",
    );
}

#[test]
fn malformed_and_hostile_modules_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let good = std::fs::read(guest("probe")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() / 2].to_vec(), "not a valid WebAssembly module"),
        ("garbage", [b"\0asm\x01\0\0\0".as_slice(), &[0xff; 64]].concat(), "not a valid WebAssembly module"),
        (
            "unknown-import",
            wat::parse_str(r#"(module (import "env" "launch_missiles" (func)) (memory (export "memory") 1) (func (export "_start")))"#).unwrap(),
            "launch_missiles",
        ),
        (
            "wrong-signature",
            wat::parse_str(r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i64))) (memory (export "memory") 1) (func (export "_start")))"#).unwrap(),
            "fd_write",
        ),
        ("no-start", wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap(), "_start"),
    ];
    for (name, bytes, needle) in cases {
        let p = d.path().join(format!("{name}.wasm"));
        std::fs::write(&p, bytes).unwrap();
        one_line_usage_error(&run(&["run", &p.display().to_string()]), needle);
    }
    // Asking for more memory or table than allowed is refused at start,
    // not by the host running out.
    let huge =
        wat::parse_str(r#"(module (memory (export "memory") 60000) (func (export "_start")))"#)
            .unwrap();
    let p = d.path().join("huge.wasm");
    std::fs::write(&p, huge).unwrap();
    let out = run(&["run", "--memory", "64M", &p.display().to_string()]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    let table = wat::parse_str(r#"(module (memory (export "memory") 1) (table 100000000 funcref) (func (export "_start")))"#).unwrap();
    let p = d.path().join("table.wasm");
    std::fs::write(&p, table).unwrap();
    let out = run(&["run", &p.display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn verbose_prints_the_equivalent_command() {
    let t = tree();
    let out = pynbox()
        .env("VERBOSE", "1")
        .args([
            "run",
            "-m",
            &m(&t, "data", "/data", "ro"),
            "-E",
            "A=b c",
            "--timeout",
            "5",
            &probe(),
            "env",
            "A",
        ])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(err.starts_with("pynbox run -m "), "{err}");
    for part in [
        "/data:ro",
        "-E 'A=b c'",
        "--memory 1G",
        "--timeout 5",
        "--max-output 1G",
        "env A",
    ] {
        assert!(err.contains(part), "{part} missing in {err}");
    }
}

#[test]
fn compiled_code_cache_is_used_and_corruption_is_rebuilt() {
    let cache = tempfile::tempdir().unwrap();
    let run_with_cache = || {
        pynbox()
            .env("PYNBOX_CACHE_DIR", cache.path())
            .args(["run", &probe(), "env", "X"])
            .output()
            .unwrap()
    };
    assert!(run_with_cache().status.success());
    let entries: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    let first = std::fs::metadata(entry).unwrap().modified().unwrap();
    // Corrupt one byte in the middle: the entry must be rebuilt, not run.
    // (After a pause, so that the rewrite gets a later modification time
    // even on file systems with coarse timestamps.)
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut bytes = std::fs::read(entry).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(entry, &bytes).unwrap();
    let out = run_with_cache();
    has_line(&out, "env X: ok (unset)");
    let rebuilt = std::fs::read(entry).unwrap();
    assert_ne!(rebuilt, bytes, "the corrupt entry was kept");
    assert!(
        std::fs::metadata(entry).unwrap().modified().unwrap() > first,
        "the entry was not rewritten"
    );
}

#[test]
fn a_guest_blocked_reading_stdin_ends_at_the_limit_in_the_cli() {
    // stdin is a pipe that stays open and never delivers.
    let warm = run(&["run", &probe(), "exit", "0"]);
    assert_ok(&warm); // compiled before the clock starts
    let (r, _w) = std::io::pipe().unwrap();
    let start = Instant::now();
    let out = pynbox()
        .args(["run", "--timeout", "1", &probe(), "fdread", "0"])
        .stdin(r)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("time limit"));
    // The limit, plus process start; the watchdog would only end it 1 s
    // later still.
    assert!(
        start.elapsed() < Duration::from_millis(1900),
        "{:?}",
        start.elapsed()
    );
}
