//! Measures sessions (src/session/): starting one, a call's round trip,
//! a host function's round trip, saving and restoring a session that
//! imported json and holds a list of 10 MiB, and the private memory of 500
//! live sessions; and fresh sandboxes from a pool of sessions started ahead
//! of time (`SessionPool`): the hand-over's latency (take one and run
//! `pass` in it) and how many fresh sessions one core starts per second.
//! Prints one JSON object.
//!
//! cargo run --release --example bench_sessions -- DEST [LIVE_COUNT]

use std::time::Instant;

use pynbox::session::{Python, Session, SessionOptions, SessionPool, Value};
use pynbox::{MountSpec, Runtime};

#[path = "common.rs"]
mod common;
use common::{median, rss_kib};

/// Median milliseconds of `n` runs of `f`.
fn time_ms(n: usize, mut f: impl FnMut()) -> f64 {
    let mut ms: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median(&mut ms)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dest = std::path::PathBuf::from(
        args.next()
            .expect("usage: bench_sessions DEST [LIVE_COUNT]"),
    );
    let live_target: usize = args.next().map(|s| s.parse().unwrap()).unwrap_or(500);
    let rt = Runtime::new(Some(dest.join("cache"))).unwrap();
    let python = Python::from_install(&rt, &dest).unwrap();
    let options = SessionOptions {
        mounts: vec![MountSpec::parse(&format!("{}:/:ro", dest.join("root").display())).unwrap()],
        ..SessionOptions::default()
    };

    let start_ms = time_ms(30, || {
        Session::start(&python, options.clone()).unwrap();
    });
    let mut s = Session::start(&python, options.clone()).unwrap();
    let eval_us = 1e3
        * time_ms(2000, || {
            assert_eq!(s.eval("1+1").unwrap().value, Value::Int(2));
        });
    s.expose("f", |_| Ok(Value::None));
    s.exec("import pynbox_host").unwrap();
    let host_call_us = 1e3
        * time_ms(2000, || {
            s.exec("pynbox_host.f()").unwrap();
        });

    // A session that imported json and holds a list of 10 MiB: 262,144
    // distinct ints, 2 MiB of list and 8 MiB of int objects.
    let mut big = Session::start(&python, options.clone()).unwrap();
    big.exec("import json\ndata = list(range(262_144))")
        .unwrap();
    let mut saved = Vec::new();
    let save_ms = time_ms(10, || saved = big.save().unwrap());
    let restore_ms = time_ms(10, || {
        Session::restore(&python, &saved, options.clone()).unwrap();
    });
    let mut back = Session::restore(&python, &saved, options.clone()).unwrap();
    assert_eq!(back.eval("len(data)").unwrap().value, Value::Int(262_144));
    let mut small = Session::start(&python, options.clone()).unwrap();
    small.exec("import json").unwrap();
    let mut small_saved = Vec::new();
    let small_save_ms = time_ms(10, || small_saved = small.save().unwrap());
    let small_restore_ms = time_ms(10, || {
        Session::restore(&python, &small_saved, options.clone()).unwrap();
    });
    drop((s, big, back, small));

    // Fresh sandboxes. A pool's take is a hand-over when its thread has
    // kept up (waited for here, outside the timing); a core's throughput
    // is what one thread starts, runs `pass` in and drops per second.
    let pool = SessionPool::new(&python, options.clone(), 2).unwrap();
    let mut takes: Vec<f64> = Vec::new();
    for _ in 0..50 {
        while pool.ready() < pool.size() {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let t = Instant::now();
        let mut fresh = pool.take().unwrap();
        fresh.exec("pass").unwrap();
        takes.push(t.elapsed().as_secs_f64() * 1e6);
        drop(fresh);
    }
    let pool_take_pass_us = median(&mut takes);
    drop(pool);
    let n = 100;
    let t = Instant::now();
    for _ in 0..n {
        let mut fresh = Session::start(&python, options.clone()).unwrap();
        fresh.exec("pass").unwrap();
    }
    let fresh_per_second = n as f64 / t.elapsed().as_secs_f64();

    let base = rss_kib();
    let mut live: Vec<Session> = Vec::new();
    for i in 0..live_target {
        let Ok(mut s) = Session::start(&python, options.clone()) else {
            break;
        };
        s.exec(&format!("n = {i}")).unwrap();
        live.push(s);
    }
    let per = (rss_kib().saturating_sub(base)) as f64 / live.len().max(1) as f64 / 1024.0;
    println!(
        "{{\"session_start_ms\": {start_ms:.3}, \"eval_round_trip_us\": {eval_us:.1}, \"host_call_round_trip_us\": {host_call_us:.1}, \
         \"save_10mib_list_ms\": {save_ms:.2}, \"saved_10mib_list_bytes\": {}, \"restore_10mib_list_ms\": {restore_ms:.2}, \
         \"save_json_only_ms\": {small_save_ms:.2}, \"saved_json_only_bytes\": {}, \"restore_json_only_ms\": {small_restore_ms:.2}, \
         \"live_sessions\": {}, \"private_mib_per_session\": {per:.2}, \"pool_take_pass_us\": {pool_take_pass_us:.1}, \
         \"fresh_sessions_per_second_per_core\": {fresh_per_second:.0}}}",
        saved.len(),
        small_saved.len(),
        live.len()
    );
}
