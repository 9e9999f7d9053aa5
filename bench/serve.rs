//! Measures `pynbox serve` on loopback: one-shot runs of `print(1)`
//! through `POST /v1/run` and a session's `eval("1+1")`, from several
//! client threads at once (runs per second, per core, and p50/p99
//! latency), the memory each live session adds to the server (its RSS
//! from `/metrics`), and, for comparison, the same `print(1)` as a new
//! `DEST/bin/run python -c` process per run from the same number of
//! threads. Every phase is bounded in time and in count. Prints one JSON
//! object.
//!
//! cargo build --release && cargo run --release --example bench_serve -- DEST [SECONDS] [LIVE_SESSIONS]
//!
//! The server is `target/release/pynbox` next to this example (or
//! `$PYNBOX`), started with `--no-auth` on an ephemeral loopback port.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The most requests of one phase, whatever the time allows.
const MAX_COUNT: usize = 20_000;

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM: the server removes its scratch directory.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn post(agent: &ureq::Agent, url: &str, body: &Value) -> (u16, Value) {
    let mut r = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body.to_string())
        .expect("request");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn metric(agent: &ureq::Agent, url: &str, name: &str) -> f64 {
    let page = agent
        .get(format!("{url}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `threads` threads each calling `f` until `seconds` pass or `MAX_COUNT`
/// calls are made in all; every call's latency, and the wall time.
fn load(
    threads: usize,
    seconds: f64,
    f: impl Fn(usize) -> Box<dyn FnMut() + Send> + Sync,
) -> (Vec<f64>, f64) {
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let count = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    let mut all: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let mut call = f(i);
                let count = &count;
                s.spawn(move || {
                    let mut ms = Vec::new();
                    while Instant::now() < until
                        && count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < MAX_COUNT
                    {
                        let t = Instant::now();
                        call();
                        ms.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    ms
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let wall = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    (all, wall)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(name: &str, (ms, wall): (Vec<f64>, f64), cores: usize) -> Value {
    let per_s = ms.len() as f64 / wall;
    json!({
        "what": name,
        "count": ms.len(),
        "per_second": (per_s * 10.0).round() / 10.0,
        "per_second_per_core": (per_s / cores as f64 * 10.0).round() / 10.0,
        "p50_ms": (percentile(&ms, 0.5) * 100.0).round() / 100.0,
        "p99_ms": (percentile(&ms, 0.99) * 100.0).round() / 100.0,
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dest = PathBuf::from(
        args.next()
            .expect("usage: bench_serve DEST [SECONDS] [LIVE_SESSIONS]"),
    );
    let seconds: f64 = args.next().map_or(10.0, |s| s.parse().unwrap());
    let live: usize = args.next().map_or(200, |s| s.parse().unwrap());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = 2 * cores;
    let pynbox = std::env::var_os("PYNBOX").map_or_else(
        || {
            let exe = std::env::current_exe().unwrap();
            exe.parent().unwrap().parent().unwrap().join("pynbox")
        },
        PathBuf::from,
    );
    let store = std::env::temp_dir().join(format!("pynbox-bench-serve-{}", std::process::id()));

    let mut child = Command::new(&pynbox)
        .args(["serve", "--dest"])
        .arg(&dest)
        .args(["--listen", "127.0.0.1:0", "--no-auth", "--session-store"])
        .arg(&store)
        .args(["--max-sessions", &(live + threads + 10).to_string()])
        .args(["--queue", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", pynbox.display()));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let server = Server { child, url };
    let url = server.url.as_str();
    let a = agent();
    let ready = Instant::now();
    while a
        .get(format!("{url}/readyz"))
        .call()
        .map_or(true, |r| r.status() != 200)
    {
        assert!(ready.elapsed() < Duration::from_secs(120), "not ready");
        std::thread::sleep(Duration::from_millis(50));
    }

    let run_url = format!("{url}/v1/run");
    let print1 = json!({"code": "print(1)"});
    // Warm: the compiled code is loaded, the blocking pool has threads.
    for _ in 0..threads {
        assert_eq!(post(&a, &run_url, &print1).1["stdout"], "1\n");
    }
    let runs = load(threads, seconds, |_| {
        let a = agent();
        let (u, b) = (run_url.clone(), print1.clone());
        Box::new(move || {
            let (s, v) = post(&a, &u, &b);
            assert!(s == 200 && v["stdout"] == "1\n", "{s} {v}");
        })
    });

    let sessions: Vec<String> = (0..threads)
        .map(|_| {
            post(&a, &format!("{url}/v1/sessions"), &json!({})).1["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let evals = load(threads, seconds, |i| {
        let a = agent();
        let u = format!("{url}/v1/sessions/{}/eval", sessions[i]);
        let b = json!({"code": "1+1"});
        Box::new(move || {
            let (s, v) = post(&a, &u, &b);
            assert!(s == 200 && v["value"] == 2, "{s} {v}");
        })
    });

    // Memory per live session: the server's RSS before and after
    // `live` more sessions, each having run a little code.
    let before = metric(&a, url, "pynbox_resident_memory_bytes");
    for _ in 0..live {
        let (s, v) = post(&a, &format!("{url}/v1/sessions"), &json!({}));
        assert_eq!(s, 201, "{v}");
        let id = v["id"].as_str().unwrap();
        post(
            &a,
            &format!("{url}/v1/sessions/{id}/exec"),
            &json!({"code": "x = [i for i in range(100)]"}),
        );
    }
    let after = metric(&a, url, "pynbox_resident_memory_bytes");
    drop(server);
    let _ = std::fs::remove_dir_all(&store);

    let run = dest.join("bin/run");
    let processes = load(threads, seconds, |_| {
        let run = run.clone();
        Box::new(move || {
            let out = Command::new(&run)
                .args(["python", "-c", "print(1)"])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(out.status.success() && out.stdout == b"1\n");
        })
    });

    let out = json!({
        "cores": cores,
        "client_threads": threads,
        "seconds_per_phase": seconds,
        "serve_run_print1": summary("POST /v1/run print(1)", runs, cores),
        "serve_session_eval": summary("POST /v1/sessions/ID/eval 1+1", evals, cores),
        "subprocess_bin_run_print1": summary("DEST/bin/run python -c 'print(1)' per run", processes, cores),
        "live_sessions": live,
        "rss_per_live_session_mib": ((after - before) / live as f64 / 1048576.0 * 100.0).round() / 100.0,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
