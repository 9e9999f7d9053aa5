//! Thousands of runs without a leak: 1,000 sandboxes one after another and
//! 8 at a time, through the library and through the CLI. Between the first
//! and the last hundred runs, host descriptors and threads must not grow,
//! and memory only within a fixed bound. The figures are printed
//! (`cargo test --release --test load -- --nocapture`).

mod common;

use common::*;
use pynbox::{MountSpec, Output as Out, Runtime, Sandbox, Status};

#[derive(Debug, Clone, Copy)]
struct Usage {
    fds: usize,
    threads: usize,
    rss_kib: u64,
}

/// The process's usage once threads that just ended are gone: a thread
/// whose join has returned can still be listed by /proc for a moment, so
/// the fewest threads seen over up to half a second count.
fn usage() -> Usage {
    let mut u = sample();
    for _ in 0..25 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let next = sample();
        u.threads = u.threads.min(next.threads);
        u.fds = u.fds.min(next.fds);
        u.rss_kib = next.rss_kib;
    }
    u
}

fn sample() -> Usage {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Usage {
        fds,
        threads: field("Threads:") as usize,
        rss_kib: field("VmRSS:"),
    }
}

/// Allowed growth of resident memory between the 100th and the 1,000th run
/// (allocator caches, Wasmtime's lazily grown internal tables).
const RSS_BOUND_KIB: u64 = 64 * 1024;

fn check(label: &str, after_100: Usage, after_all: Usage) {
    println!(
        "{label}: after 100 runs {after_100:?}; after 1000 runs {after_all:?}; growth: {} fds, {} threads, {} KiB",
        after_all.fds as i64 - after_100.fds as i64,
        after_all.threads as i64 - after_100.threads as i64,
        after_all.rss_kib as i64 - after_100.rss_kib as i64
    );
    assert!(
        after_all.fds <= after_100.fds,
        "{label}: descriptors leaked"
    );
    assert!(
        after_all.threads <= after_100.threads,
        "{label}: threads leaked"
    );
    assert!(
        after_all.rss_kib <= after_100.rss_kib + RSS_BOUND_KIB,
        "{label}: memory grew by more than {RSS_BOUND_KIB} KiB"
    );
}

fn one_run(rt_program: &pynbox::Program, data: &std::path::Path, i: usize) {
    let r = Sandbox::new(rt_program)
        .mount(MountSpec::new(data, "/data", true).unwrap())
        .args([
            "write",
            &format!("/data/f{}=x", i % 10),
            "read",
            "/data/in.txt",
            "fdguess",
            "8",
        ])
        .stdout(Out::Capture)
        .run()
        .unwrap();
    assert_eq!(r.status, Status::Exited(0), "{}", text(&r.stdout));
    assert!(text(&r.stdout).contains("read /data/in.txt: ok hello"));
}

/// Runs the ignored test `name` of this binary alone, in a child process,
/// so that the descriptors, threads and memory it measures of "its own
/// process" are its own and no other test's.
fn alone_in_a_child(name: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            name,
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    print!("{}", text(&out.stdout));
    assert!(
        out.status.success() && text(&out.stdout).contains("1 passed"),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn library_thousand_runs_sequential_and_parallel() {
    alone_in_a_child("library_runs");
}

#[test]
fn cli_thousand_runs_sequential_and_parallel() {
    alone_in_a_child("cli_runs");
}

#[test]
#[ignore = "measures its own process: run alone by library_thousand_runs_sequential_and_parallel"]
fn library_runs() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("in.txt"), "hello").unwrap();
    let rt = Runtime::new(Some(module_cache())).unwrap();
    let program = rt.load_file(&guest("probe")).unwrap();

    let mut after_100 = None;
    for i in 0..1000 {
        one_run(&program, d.path(), i);
        if i == 99 {
            after_100 = Some(usage());
        }
    }
    check("library, one after another", after_100.unwrap(), usage());

    // 8 at a time: 8 threads, 125 runs each, measured at 100 and 1000.
    let run_batch = |n: usize| {
        std::thread::scope(|s| {
            for t in 0..8 {
                let program = &program;
                let path = d.path();
                s.spawn(move || {
                    for i in 0..n {
                        one_run(program, path, t * 1000 + i);
                    }
                });
            }
        });
    };
    run_batch(13); // ~100 runs
    let after_100 = usage();
    run_batch(112); // the rest of 1,000
    check("library, 8 at a time", after_100, usage());
}

#[test]
#[ignore = "measures its own process: run alone by cli_thousand_runs_sequential_and_parallel"]
fn cli_runs() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("in.txt"), "hello").unwrap();
    let mut cmd = pynbox();
    cmd.args([
        "run",
        "-m",
        &format!("{}:/data:rw", d.path().display()),
        &probe(),
        "read",
        "/data/in.txt",
        "write",
        "/data/out=x",
        "fdguess",
        "8",
    ]);
    let before = usage();
    let mut rss = Vec::new();
    for _ in 0..1000 {
        let (out, maxrss) = measured(&cmd);
        assert_ok(&out);
        rss.push(maxrss);
    }
    let first: i64 = rss[..100].iter().max().copied().unwrap();
    let last: i64 = rss[900..].iter().max().copied().unwrap();
    println!("cli, one after another: peak RSS of a run: first 100 max {first} KiB, last 100 max {last} KiB");
    assert!(
        last <= first + 16 * 1024,
        "CLI runs grew: {first} -> {last} KiB"
    );

    let peaks = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..125 {
                    let (out, maxrss) = measured(&cmd);
                    assert_ok(&out);
                    peaks.lock().unwrap().push(maxrss);
                }
            });
        }
    });
    let peaks = peaks.into_inner().unwrap();
    println!(
        "cli, 8 at a time: {} runs, peak RSS of a run max {} KiB",
        peaks.len(),
        peaks.iter().max().unwrap()
    );
    assert_eq!(peaks.len(), 1000);
    let after = usage();
    // The test process itself must not keep descriptors of finished children.
    assert!(
        after.fds <= before.fds,
        "descriptors leaked: {before:?} -> {after:?}"
    );
}
