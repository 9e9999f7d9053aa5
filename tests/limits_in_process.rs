//! Time limits through the library, where no watchdog can end the process:
//! every host call that can wait must end at the deadline by itself. Each
//! sandbox runs on a thread of its own, so that a call that does not end
//! fails the test instead of hanging it.

mod common;

use common::*;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pynbox::{Input, Limits, MountSpec, Output, RunResult, Runtime, Sandbox, Status};

const LIMIT: Duration = Duration::from_secs(1);
/// How long past the limit a run may take before the test gives up on it.
const GRACE: Duration = Duration::from_secs(10);

fn sandbox(ops: &[&str]) -> Sandbox {
    let runtime = Runtime::new(Some(module_cache())).unwrap();
    // Compiled before the clock starts.
    let program = runtime.load_file(&guest("probe")).unwrap();
    Sandbox::new(&program)
        .args(ops.iter().copied())
        .limits(Limits {
            timeout: Some(LIMIT),
            ..Limits::default()
        })
}

/// Runs `s` on its own thread; its result and how long it took, or a
/// failure if it is still running well past its limit.
fn run_bounded(s: Sandbox) -> (RunResult, Duration) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let t = Instant::now();
        let r = s.run();
        let _ = tx.send((r, t.elapsed()));
    });
    let (r, took) = rx
        .recv_timeout(LIMIT + GRACE)
        .expect("the sandbox was still running long past its time limit");
    (r.unwrap(), took)
}

fn file(fd: impl Into<OwnedFd>) -> File {
    File::from(fd.into())
}

#[test]
fn a_read_from_stdin_that_never_delivers_ends_at_the_limit() {
    let (r, _w) = std::io::pipe().unwrap();
    let (res, took) = run_bounded(sandbox(&["fdread", "0"]).stdin(Input::File(file(r))));
    assert_eq!(res.status, Status::TimeLimit, "{}", text(&res.stdout));
    assert!(took >= LIMIT, "{took:?}");
}

#[test]
fn a_read_from_a_forwarded_pipe_ends_at_the_limit() {
    let (r, _w) = std::io::pipe().unwrap();
    let (res, _) = run_bounded(sandbox(&["fdread", "3"]).file(3, file(r), true, false));
    assert_eq!(res.status, Status::TimeLimit, "{}", text(&res.stdout));
}

#[test]
fn a_write_to_a_full_pipe_ends_at_the_limit() {
    // Nobody reads: the pipe fills after 64 KiB of the megabyte.
    let (_r, w) = std::io::pipe().unwrap();
    let (res, _) = run_bounded(sandbox(&["flood", "1024"]).stdout(Output::File(file(w))));
    assert_eq!(res.status, Status::TimeLimit);
}

#[test]
fn a_fifo_inside_a_mount_is_refused_without_waiting() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("fifo");
    let c = std::ffi::CString::new(fifo.display().to_string()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let s = sandbox(&["read", "/data/fifo", "write", "/data/fifo=x"])
        .mount(MountSpec::new(d.path(), "/data", true).unwrap());
    let (res, took) = run_bounded(s);
    let out = text(&res.stdout);
    assert!(out.contains("read /data/fifo: error ENXIO"), "{out}");
    assert!(out.contains("write /data/fifo=x: error ENXIO"), "{out}");
    assert_eq!(res.status, Status::Exited(2));
    assert!(took < LIMIT, "{took:?}");
}

#[test]
fn sleeping_past_the_limit_ends_at_the_limit() {
    let (res, _) = run_bounded(sandbox(&["sleep", "100"]));
    assert_eq!(res.status, Status::TimeLimit);
}

#[test]
fn a_loop_without_calls_ends_at_the_limit() {
    let (res, _) = run_bounded(sandbox(&["spin", "0"]));
    assert_eq!(res.status, Status::TimeLimit);
}
