//! Measures the embedding API: a fresh sandbox running `-c pass` in a
//! process that is already running, and how many Python sandboxes can be
//! live at once with the private memory each costs. Prints one JSON object.
//!
//! cargo run --release --example bench_api -- DEST [LIVE_COUNT]

use std::io::Write;
use std::time::Instant;

use pynbox::{Input, MountSpec, Output, Runtime, Sandbox, Status};

#[path = "common.rs"]
mod common;
use common::{median, rss_kib};

fn main() {
    let mut args = std::env::args().skip(1);
    let dest = std::path::PathBuf::from(args.next().expect("usage: bench_api DEST [LIVE_COUNT]"));
    let live_target: usize = args.next().map(|s| s.parse().unwrap()).unwrap_or(500);
    let rt = Runtime::new(Some(dest.join("cache"))).unwrap();
    let plain = rt
        .load_file(&dest.join("root/python/bin/python.wasm"))
        .unwrap();
    // The pre-initialised interpreter `pynbox install` made, as an
    // embedder would load it.
    let python = rt
        .load_file(&dest.join(pynbox::preinit::INSTALL_PATH))
        .expect("DEST has no pre-initialised python: install with this pynbox");
    let root = MountSpec::parse(&format!("{}:/:ro", dest.join("root").display())).unwrap();

    // Fresh sandbox + `pass`, in process: Python pre-initialised and plain,
    // and the smallest C guest.
    let fresh_pass = |program: &pynbox::Program, n: usize| {
        let mut ms = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            let r = Sandbox::new(program)
                .mount(root.clone())
                .args(["-c", "pass"])
                .run()
                .unwrap();
            assert_eq!(
                r.status,
                Status::Exited(0),
                "{}",
                String::from_utf8_lossy(&r.stderr)
            );
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        ms
    };
    let mut py_ms = fresh_pass(&python, 100);
    let mut plain_ms = fresh_pass(&plain, 30);
    let hello = wat_hello(&rt);
    let mut c_ms = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let r = Sandbox::new(&hello).run().unwrap();
        assert_eq!(r.status, Status::Exited(0));
        c_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }

    // Live sandboxes: each Python guest blocks reading its stdin, a pipe
    // whose write end we hold, until all have started.
    let base = rss_kib();
    let mut handles = Vec::new();
    let mut writers = Vec::new();
    let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut live = 0;
    for _ in 0..live_target {
        let (r, w) = match std::io::pipe() {
            Ok(p) => p,
            Err(_) => break,
        };
        let (ready_r, ready_w) = std::io::pipe().unwrap();
        let python = python.clone();
        let root = root.clone();
        let started = started.clone();
        let h = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                let r = Sandbox::new(&python)
                    .mount(root)
                    .args(["-c", "import os, sys; os.write(3, b'x'); sys.stdin.read()"])
                    .file(
                        3,
                        std::fs::File::from(std::os::fd::OwnedFd::from(ready_w)),
                        false,
                        true,
                    )
                    .stdin(Input::File(std::fs::File::from(
                        std::os::fd::OwnedFd::from(r),
                    )))
                    .stdout(Output::Null)
                    .run();
                started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                r.map(|r| r.status)
            });
        let Ok(h) = h else { break };
        // Wait until this guest is up and blocked on stdin.
        let mut b = [0u8; 1];
        let mut ready_r = ready_r;
        if std::io::Read::read(&mut ready_r, &mut b).unwrap_or(0) != 1 {
            break;
        }
        handles.push(h);
        writers.push(w);
        live += 1;
    }
    let peak = rss_kib();
    for w in writers.iter_mut() {
        let _ = w.write_all(b"");
    }
    drop(writers);
    for h in handles {
        let _ = h.join();
    }
    let per = if live > 0 {
        (peak.saturating_sub(base)) as f64 / live as f64 / 1024.0
    } else {
        0.0
    };
    println!(
        "{{\"fresh_python_pass_ms\": {:.3}, \"fresh_plain_python_pass_ms\": {:.3}, \"fresh_minimal_guest_ms\": {:.3}, \"live_sandboxes\": {live}, \"private_mib_per_sandbox\": {per:.2}}}",
        median(&mut py_ms),
        median(&mut plain_ms),
        median(&mut c_ms)
    );
}

fn wat_hello(rt: &Runtime) -> pynbox::Program {
    // The smallest WASI command: returns at once.
    let bytes = b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0\x03\x02\x01\0\x05\x03\x01\0\x01\x07\x13\x02\x06memory\x02\0\x06_start\0\0\x0a\x04\x01\x02\0\x0b";
    rt.load_bytes("minimal", bytes).unwrap()
}
