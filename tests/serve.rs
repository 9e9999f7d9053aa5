//! `pynbox serve` as its users meet it: the real binary on loopback, over
//! HTTP, against an install with python (like tests/session.rs). Every
//! endpoint, tokens and tenants, limits, overload, bad requests, idle
//! sessions saved and restored (by the same process, and by a second one
//! after the first was killed; in a directory, and in S3 when
//! `PYNBOX_TEST_S3_ENDPOINT` names an S3-compatible server, as
//! `scripts/test-serve-s3.sh` does with moto), a graceful shutdown,
//! request ids and log lines, `/metrics`, and the CPU quota.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const TOKEN_A: &str = "token-of-tenant-a-0123456789";
const TOKEN_B: &str = "token-of-tenant-b-0123456789";

/// A scratch directory with a tokens file for tenants a and b.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("pynbox-serve-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("tokens.toml"),
            format!(
                "[[tenant]]\nname = \"a\"\ntoken = \"{TOKEN_A}\"\n\n\
                 [[tenant]]\nname = \"b\"\ntoken = \"{TOKEN_B}\"\nmax_memory = \"128M\"\n"
            ),
        )
        .unwrap();
        Dir(d)
    }
    fn store(&self) -> PathBuf {
        self.0.join("store")
    }
    fn tokens(&self) -> PathBuf {
        self.0.join("tokens.toml")
    }
    /// Saved sessions in the store.
    fn saved(&self) -> usize {
        std::fs::read_dir(self.store())
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".session"))
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    /// `pynbox serve` on an ephemeral loopback port with `dir`'s tokens and
    /// store, and `extra` arguments; returns once it is ready.
    fn start(dir: &Dir, extra: &[&str]) -> Server {
        Server::start_with_store(dir, dir.store().as_os_str(), &[], extra)
    }

    /// The same with `--session-store STORE` and `env` added to its
    /// environment.
    fn start_with_store(
        dir: &Dir,
        store: &std::ffi::OsStr,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Server {
        let n = std::fs::read_dir(&dir.0).unwrap().count();
        let log = dir.0.join(format!("server-{n}.log"));
        let mut child = pynbox()
            // Where runs get their scratch directories (see the SIGTERM test).
            .env("TMPDIR", std::env::temp_dir())
            .envs(env.iter().copied())
            .arg("serve")
            .arg("--dest")
            .arg(dest())
            .args(["--listen", "127.0.0.1:0", "--tokens"])
            .arg(dir.tokens())
            .arg("--session-store")
            .arg(store)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting pynbox serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "no address on stdout: {line:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        let server = Server { child, url, log };
        let started = Instant::now();
        loop {
            let (status, _, _) = server.call("GET", "/readyz", None, None);
            if status == 200 {
                return server;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "not ready: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request: status, JSON body (null when there is none), and the
    /// x-request-id and retry-after headers.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value, [Option<String>; 2]) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}{path}", self.url);
        let auth = token.map(|t| format!("Bearer {t}"));
        let r = match (method, body) {
            ("GET", _) => {
                let mut r = agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = agent.delete(&url);
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                r.call()
            }
            (_, b) => {
                let mut r = agent.post(&url).header("content-type", "application/json");
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                r.send(b.unwrap_or(""))
            }
        };
        let mut r = r.unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()));
        let header = |name: &str| {
            r.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let headers = [header("x-request-id"), header("retry-after")];
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"))
        };
        (status, value, headers)
    }

    /// A POST as tenant a (or `token`) that must answer `status`.
    fn post(&self, path: &str, token: &str, body: Value, status: u16) -> Value {
        let (s, v, h) = self.call("POST", path, Some(token), Some(&body.to_string()));
        assert_eq!(s, status, "POST {path} {body}: {v}\n{}", self.log());
        assert!(h[0].is_some(), "no x-request-id");
        v
    }

    fn run(&self, body: Value) -> Value {
        self.post("/v1/run", TOKEN_A, body, 200)
    }

    fn session(&self, token: &str, limits: Value) -> String {
        let v = self.post("/v1/sessions", token, json!({ "limits": limits }), 201);
        v["id"].as_str().unwrap().to_string()
    }

    fn exec(&self, token: &str, id: &str, code: &str) -> Value {
        self.post(
            &format!("/v1/sessions/{id}/exec"),
            token,
            json!({ "code": code }),
            200,
        )
    }

    fn eval(&self, token: &str, id: &str, code: &str) -> Value {
        self.post(
            &format!("/v1/sessions/{id}/eval"),
            token,
            json!({ "code": code }),
            200,
        )
    }

    fn signal(&self, sig: i32) {
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Waits for the process to exit; its exit code.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(
                started.elapsed() < limit,
                "the server did not exit: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log has `n` lines containing `what`.
    fn wait_for_log(&self, what: &str, n: usize) {
        let started = Instant::now();
        while self.log().matches(what).count() < n {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no {n} x {what:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    /// SIGTERM, so that the server removes its scratch directory; SIGKILL
    /// if it does not stop.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(libc::SIGTERM);
            let started = Instant::now();
            while self.child.try_wait().ok().flatten().is_none()
                && started.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // What a server killed with SIGKILL (as one test does) leaves:
        // its sessions' scratch directories.
        let _ = std::fs::remove_dir_all(
            std::env::temp_dir().join(format!("pynbox-serve-{}", self.child.id())),
        );
    }
}

#[test]
fn runs_sessions_and_probes() {
    let dir = Dir::new("endpoints");
    let server = Server::start(&dir, &[]);
    let (s, v, h) = server.call("GET", "/healthz", None, None);
    assert_eq!((s, &v["status"]), (200, &json!("ok")));
    assert!(h[0].as_ref().is_some_and(|id| id.len() == 16));

    let r = server.run(json!({"code": "print(6 * 7)"}));
    assert_eq!(
        r,
        json!({"exit_code": 0, "stdout": "42\n", "stderr": "", "limit": null, "crash": null})
    );
    // argv, stdin, and files in the scratch mount at /tmp (writable).
    let r = server.run(json!({
        "argv": ["/tmp/prog.py", "arg"],
        "stdin": "from stdin",
        "files": {
            "prog.py": "import sys\nprint(open('/tmp/data.txt').read(), sys.argv[1], sys.stdin.read())\nopen('/tmp/new', 'w').write('x')\nraise SystemExit(3)",
            "data.txt": "data"
        }
    }));
    assert_eq!(r["stdout"], "data arg from stdin\n", "{r}");
    assert_eq!(r["exit_code"], 3);
    let r = server.run(json!({"code": "1/0"}));
    assert_eq!(r["exit_code"], 1);
    assert!(r["stderr"].as_str().unwrap().contains("ZeroDivisionError"));

    let id = server.session(TOKEN_A, json!({}));
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    let r = server.exec(TOKEN_A, &id, "x = 6 * 7\nprint('hi')");
    assert_eq!(r, json!({"stdout": "hi\n", "stderr": ""}));
    let r = server.eval(TOKEN_A, &id, "x");
    assert_eq!(r, json!({"value": 42, "stdout": "", "stderr": ""}));
    let r = server.eval(
        TOKEN_A,
        &id,
        "[None, 1.5, 'é', b'\\x00\\xff', {'k': (1, 2)}, {1: 2}, object.__name__, float('inf'), object]",
    );
    assert_eq!(
        r["value"],
        json!([null, 1.5, "é", {"$bytes": "AP8="}, {"k": [1, 2]}, {"$dict": [[1, 2]]},
               "object", {"$float": "inf"}, {"$repr": "<class 'object'>"}])
    );
    // A guest exception: 200 with the error, and the session lives on.
    let r = server.exec(TOKEN_A, &id, "print('before'); 1/0");
    assert_eq!(r["stdout"], "before\n");
    assert_eq!(r["error"]["kind"], "guest");
    assert_eq!(r["error"]["type"], "ZeroDivisionError");
    assert_eq!(r["error"]["message"], "division by zero");
    assert!(r["error"]["traceback"]
        .as_str()
        .unwrap()
        .contains("ZeroDivisionError"));
    assert_eq!(r["alive"], true);
    assert_eq!(
        server.eval(TOKEN_A, &id, "1/0")["error"]["type"],
        "ZeroDivisionError"
    );
    assert_eq!(server.eval(TOKEN_A, &id, "x + 1")["value"], 43);

    let path = format!("/v1/sessions/{id}");
    let (s, _, _) = server.call("DELETE", &path, Some(TOKEN_A), None);
    assert_eq!(s, 204);
    let (s, v, _) = server.call(
        "POST",
        &format!("{path}/eval"),
        Some(TOKEN_A),
        Some(r#"{"code": "x"}"#),
    );
    assert_eq!((s, &v["error"]["type"]), (404, &json!("NotFound")));
    let (s, _, _) = server.call("DELETE", &path, Some(TOKEN_A), None);
    assert_eq!(s, 404);
    let (s, _, _) = server.call("GET", "/v1/nothing", Some(TOKEN_A), None);
    assert_eq!(s, 404);
}

#[test]
fn tokens_and_tenants() {
    let dir = Dir::new("tenants");
    let server = Server::start(&dir, &[]);
    let body = r#"{"code": "print(1)"}"#;
    for token in [None, Some("wrong-token-0123456789"), Some("")] {
        let (s, v, h) = server.call("POST", "/v1/run", token, Some(body));
        assert_eq!(s, 401, "{v}");
        assert_eq!(v["error"]["type"], "Unauthorized");
        assert!(h[0].is_some());
    }
    let id = server.session(TOKEN_A, json!(null));
    server.exec(TOKEN_A, &id, "secret = 'of a'");
    // Tenant b is told exactly what an unknown id gets.
    let unknown = "0123456789abcdef0123456789abcdef";
    for sid in [id.as_str(), unknown, "not-an-id"] {
        let (s, v, _) = server.call(
            "POST",
            &format!("/v1/sessions/{sid}/eval"),
            Some(TOKEN_B),
            Some(r#"{"code": "secret"}"#),
        );
        assert_eq!(
            (s, v),
            (
                404,
                json!({"error": {"type": "NotFound", "message": "no such session"}})
            )
        );
        let (s, _, _) = server.call(
            "DELETE",
            &format!("/v1/sessions/{sid}"),
            Some(TOKEN_B),
            None,
        );
        assert_eq!(s, 404);
    }
    assert_eq!(server.eval(TOKEN_A, &id, "secret")["value"], "of a");
    // b's own sessions are b's.
    let idb = server.session(TOKEN_B, json!({}));
    assert_ne!(id, idb);
    server.exec(TOKEN_B, &idb, "secret = 'of b'");
    assert_eq!(server.eval(TOKEN_B, &idb, "secret")["value"], "of b");
    assert_eq!(server.eval(TOKEN_A, &id, "secret")["value"], "of a");
}

#[test]
fn limits_end_runs_and_sessions() {
    let dir = Dir::new("limits");
    // The server's own maximum caps what a request asks for.
    let server = Server::start(&dir, &["--max-timeout", "2"]);
    let t = Instant::now();
    let r = server.run(json!({"code": "while True: pass", "limits": {"timeout": 1}}));
    assert_eq!(r["limit"], "time", "{r}");
    assert!(t.elapsed() < Duration::from_secs(10));
    let t = Instant::now();
    let r = server.run(json!({"code": "while True: pass", "limits": {"timeout": 1000}}));
    assert_eq!(r["limit"], "time");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let r = server.run(json!({"code": "print('x' * 5000)", "limits": {"max_output": 1000}}));
    assert_eq!(r["limit"], "output");
    let r = server.run(json!({
        "code": "b = bytearray(300 * 1024 * 1024)",
        "limits": {"memory": 64 * 1024 * 1024}
    }));
    assert_ne!(r["exit_code"], 0, "{r}");
    // Tenant b's memory maximum (128M, from the tokens file) holds
    // whatever it asks for; a has the server's.
    let big = json!({"code": "b = bytearray(200 * 1024 * 1024); print('ok')", "limits": {"memory": 1 << 30}});
    assert_eq!(
        server.post("/v1/run", TOKEN_A, big.clone(), 200)["stdout"],
        "ok\n"
    );
    let r = server.post("/v1/run", TOKEN_B, big, 200);
    assert_ne!(r["exit_code"], 0, "{r}");
    let r = server.post(
        "/v1/run",
        TOKEN_A,
        json!({"code": "1", "limits": {"timeout": -1}}),
        400,
    );
    assert_eq!(r["error"]["type"], "BadRequest");

    let id = server.session(TOKEN_A, json!({"timeout": 1}));
    server.exec(TOKEN_A, &id, "x = 1");
    let r = server.exec(TOKEN_A, &id, "while True: pass");
    assert_eq!(r["error"]["kind"], "limit", "{r}");
    assert_eq!(r["error"]["type"], "TimeLimit");
    assert_eq!(r["alive"], false);
    let r = server.eval(TOKEN_A, &id, "x");
    assert_eq!(r["error"]["kind"], "dead", "{r}");
}

#[test]
fn overload_oversize_and_malformed_requests() {
    let dir = Dir::new("overload");
    let server = Server::start(
        &dir,
        &[
            "--max-concurrent",
            "1",
            "--queue",
            "1",
            "--max-body",
            "1K",
            "--max-sessions",
            "2",
        ],
    );
    let statuses: Vec<(u16, Option<String>)> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let (st, _, h) = server.call(
                        "POST",
                        "/v1/run",
                        Some(TOKEN_A),
                        Some(r#"{"code": "import time; time.sleep(1.5)"}"#),
                    );
                    (st, h[1].clone())
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert!((1..=2).contains(&ok), "{statuses:?}");
    assert_eq!(ok + refused.len(), 4, "{statuses:?}");
    assert!(refused.iter().all(|(_, r)| r.as_deref() == Some("1")));
    // Another tenant has a queue of its own.
    let (s, _, _) = server.call("POST", "/v1/run", Some(TOKEN_B), Some(r#"{"code": "1"}"#));
    assert_eq!(s, 200);

    let big = json!({ "code": format!("x = '{}'", "a".repeat(4000)) }).to_string();
    let (s, v, _) = server.call("POST", "/v1/run", Some(TOKEN_A), Some(&big));
    assert_eq!((s, &v["error"]["type"]), (413, &json!("PayloadTooLarge")));
    for bad in [
        "{",
        "[1]",
        r#"{"code": 1}"#,
        r#"{"code": "1", "extra": 1}"#,
        r#"{}"#,
    ] {
        let (s, v, _) = server.call("POST", "/v1/run", Some(TOKEN_A), Some(bad));
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().contains('\n'));
    }
    // The server is unaffected.
    assert_eq!(server.run(json!({"code": "print(2)"}))["stdout"], "2\n");

    // At most --max-sessions sessions of a tenant in memory.
    let first = server.session(TOKEN_A, json!({}));
    server.session(TOKEN_A, json!({}));
    let r = server.post("/v1/sessions", TOKEN_A, json!({}), 429);
    assert_eq!(r["error"]["type"], "TooManyRequests");
    server.session(TOKEN_B, json!({}));
    let (s, _, _) = server.call(
        "DELETE",
        &format!("/v1/sessions/{first}"),
        Some(TOKEN_A),
        None,
    );
    assert_eq!(s, 204);
    server.session(TOKEN_A, json!({}));
}

#[test]
fn idle_sessions_are_saved_and_restored_by_this_process_and_the_next() {
    let dir = Dir::new("idle");
    let server = Server::start(&dir, &["--session-idle", "0.5"]);
    let id = server.session(TOKEN_A, json!({}));
    server.exec(TOKEN_A, &id, "x = 5");
    server.wait_for_log("saved to the store", 1);
    assert_eq!(dir.saved(), 1);
    // Restored transparently on its next call.
    assert_eq!(server.eval(TOKEN_A, &id, "x")["value"], 5);
    assert!(server.log().contains("restored from the store"));
    server.exec(TOKEN_A, &id, "x += 1");
    server.wait_for_log("saved to the store", 2);
    // Still invisible to another tenant, in the store too.
    let (s, _, _) = server.call(
        "POST",
        &format!("/v1/sessions/{id}/eval"),
        Some(TOKEN_B),
        Some(r#"{"code": "x"}"#),
    );
    assert_eq!(s, 404);

    // Killed without a chance to save anything more: what was saved lives.
    let mut server = server;
    server.signal(libc::SIGKILL);
    server.wait(Duration::from_secs(10));
    let second = Server::start(&dir, &[]);
    assert_eq!(second.eval(TOKEN_A, &id, "x")["value"], 6);
    let (s, _, _) = second.call("DELETE", &format!("/v1/sessions/{id}"), Some(TOKEN_A), None);
    assert_eq!(s, 204);
    assert_eq!(dir.saved(), 0);
}

#[test]
fn sigterm_finishes_running_work_and_saves_live_sessions() {
    let dir = Dir::new("sigterm");
    let mut server = Server::start(&dir, &["--grace", "20"]);
    let id = server.session(TOKEN_A, json!({}));
    server.exec(TOKEN_A, &id, "x = 'kept'");
    assert_eq!(dir.saved(), 0);
    std::thread::scope(|s| {
        let running =
            s.spawn(|| server.run(json!({"code": "import time; time.sleep(1.5); print('done')"})));
        // The run has its scratch directory while it runs.
        let scratch = std::env::temp_dir().join(format!("pynbox-serve-{}", server.child.id()));
        let started = Instant::now();
        // (Sessions keep theirs below sessions/.)
        let runs = || {
            std::fs::read_dir(&scratch).map_or(0, |d| {
                d.flatten().filter(|e| e.file_name() != "sessions").count()
            })
        };
        while runs() == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the run did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        server.signal(libc::SIGTERM);
        let r = running.join().unwrap();
        assert_eq!(r["stdout"], "done\n");
    });
    let code = server.wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{}", server.log());
    assert_eq!(dir.saved(), 1);
    let second = Server::start(&dir, &[]);
    assert_eq!(second.eval(TOKEN_A, &id, "x")["value"], "kept");
}

/// One HTTP/1.1 request over a Unix socket: status and body.
fn unix_request(path: &Path, request: &str) -> (u16, String) {
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

#[test]
fn unix_socket_and_refusals_to_start() {
    let dir = Dir::new("unix");
    let sock = dir.0.join("api.sock");
    let mut child = pynbox()
        .arg("serve")
        .arg("--dest")
        .arg(dest())
        .arg("--unix")
        .arg(&sock)
        .arg("--no-auth")
        .arg("--session-store")
        .arg(dir.store())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env("TMPDIR", std::env::temp_dir())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if sock.exists()
            && unix_request(
                &sock,
                "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .0 == 200
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(50));
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let body = r#"{"code": "print(3)"}"#;
    let (status, answer) = unix_request(
        &sock,
        &format!(
            "POST /v1/run HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 200, "{answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["stdout"], "3\n");
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(child.wait().unwrap().code(), Some(0));

    // No tokens: only on loopback, and only when asked for.
    let out = run(&[
        "serve",
        "--dest",
        &dest().display().to_string(),
        "--listen",
        "0.0.0.0:0",
        "--no-auth",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a loopback address"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["serve", "--dest", "/nonexistent", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--tokens"),
        "{}",
        text(&out.stderr)
    );
    // Without an interpreter the server stops, saying why.
    let out = run(&[
        "serve",
        "--dest",
        &dir.0.display().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--no-auth",
        "--session-store",
        &dir.store().display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot load the interpreter"),
        "{}",
        text(&out.stderr)
    );
    // A tokens file with a short token is refused.
    let bad = dir.0.join("bad.toml");
    std::fs::write(&bad, "[[tenant]]\nname = \"a\"\ntoken = \"short\"\n").unwrap();
    let out = run(&[
        "serve",
        "--dest",
        &dest().display().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--tokens",
        &bad.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("shorter than 16"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn sessions_run_side_by_side_and_one_session_takes_turns() {
    let dir = Dir::new("parallel");
    let server = &Server::start(&dir, &["--max-concurrent", "4"]);
    let one = server.session(TOKEN_A, json!({}));
    let two = server.session(TOKEN_A, json!({}));
    let both = |ids: [&str; 2], code: &str| {
        let started = Instant::now();
        std::thread::scope(|s| {
            let t: Vec<_> = ids
                .iter()
                .map(|&id| s.spawn(move || server.exec(TOKEN_A, id, code)))
                .collect();
            for t in t {
                let r = t.join().unwrap();
                assert!(r.get("error").is_none(), "{r}");
            }
        });
        started.elapsed()
    };
    // Two sessions: at once.
    let took = both([&one, &two], "import time; time.sleep(1)");
    assert!(took < Duration::from_millis(1900), "{took:?}");
    // One session: one call after the other, each seeing the last one's state.
    let code = "import time\nn = globals().get('n', 0)\ntime.sleep(0.5)\nn += 1";
    let took = both([&one, &one], code);
    assert!(took >= Duration::from_millis(1000), "{took:?}");
    assert_eq!(server.eval(TOKEN_A, &one, "n")["value"], 2);
}

#[test]
fn a_session_has_its_own_tmp_kept_through_a_save_and_removed_with_it() {
    let dir = Dir::new("session-tmp");
    let server = Server::start(&dir, &["--session-idle", "0.5"]);
    let one = server.session(TOKEN_A, json!({}));
    let two = server.session(TOKEN_A, json!({}));
    server.exec(TOKEN_A, &one, "open('/tmp/mine', 'w').write('one')");
    assert_eq!(
        server.eval(TOKEN_A, &two, "__import__('os').listdir('/tmp')")["value"],
        json!([])
    );
    // Saved to the store, dropped from memory, restored: the file is there.
    server.wait_for_log(
        &format!("session saved to the store tenant=\"a\" session=\"{one}\""),
        1,
    );
    assert_eq!(
        server.eval(TOKEN_A, &one, "open('/tmp/mine').read()")["value"],
        "one"
    );
    assert!(server.log().contains(&format!(
        "restored from the store tenant=\"a\" session=\"{one}\""
    )));
    // Runs do not see it either.
    assert_eq!(
        server.run(json!({"code": "import os; print(os.listdir('/tmp'))"}))["stdout"],
        "[]\n"
    );
    // Its directory goes with the session.
    let scratch = std::env::temp_dir()
        .join(format!("pynbox-serve-{}", server.child.id()))
        .join("sessions");
    let dirs = || -> Vec<String> {
        std::fs::read_dir(&scratch)
            .unwrap()
            .flatten()
            .flat_map(|t| std::fs::read_dir(t.path()).unwrap().flatten())
            .map(|s| s.file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert!(dirs().contains(&one), "{:?}", dirs());
    let (s, _, _) = server.call(
        "DELETE",
        &format!("/v1/sessions/{one}"),
        Some(TOKEN_A),
        None,
    );
    assert_eq!(s, 204);
    assert!(!dirs().contains(&one), "{:?}", dirs());
    assert!(dirs().contains(&two), "{:?}", dirs());
}

#[test]
fn mcp_stdio_is_for_one_client_and_refuses_listening_or_tokens() {
    let dir = Dir::new("mcp-stdio-cli");
    let dest = dest().display().to_string();
    for extra in [
        &["--tokens", "tokens.toml"][..],
        &["--listen", "127.0.0.1:0"],
        &["--no-auth"],
    ] {
        let out = pynbox()
            .args(["serve", "--dest", &dest, "--mcp-stdio"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains("cannot be used with"), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // A client that goes away at once: the server stops, exit 0, and
    // wrote nothing but MCP (here: nothing) on stdout.
    let out = pynbox()
        .args(["serve", "--dest", &dest, "--mcp-stdio", "--session-store"])
        .arg(dir.store())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
}

/// A GET or POST with extra headers: status, headers, body text.
fn raw(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, ureq::http::HeaderMap, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}{path}", server.url);
    let r = if method == "GET" {
        let mut r = agent.get(&url);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.call()
    } else {
        let mut r = agent.post(&url).header("content-type", "application/json");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send(body)
    };
    let mut r = r.unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", server.log()));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.body_mut().read_to_string().unwrap())
}

#[test]
fn request_ids_and_json_log_lines() {
    let dir = Dir::new("logs");
    let server = Server::start(&dir, &["--log-format", "json"]);
    let auth = format!("Bearer {TOKEN_A}");
    let secret_code = "print('code-that-must-not-be-logged')";
    let body = json!({ "code": secret_code }).to_string();
    // A sane id of the client's is echoed; anything else is replaced.
    let (s, h, _) = raw(
        &server,
        "POST",
        "/v1/run",
        &[("authorization", &auth), ("x-request-id", "client-id-1")],
        &body,
    );
    assert_eq!(s, 200);
    assert_eq!(h["x-request-id"], "client-id-1");
    let (_, h, _) = raw(
        &server,
        "GET",
        "/healthz",
        &[("x-request-id", "two words\" injected=1")],
        "",
    );
    let id = h["x-request-id"].to_str().unwrap();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    server.run(json!({"code": "while True: pass", "limits": {"timeout": 0.5}}));
    let (s, _, _) = raw(&server, "POST", "/v1/run", &[], &body);
    assert_eq!(s, 401);

    server.wait_for_log("\"route\":\"/v1/run\"", 3);
    let log = server.log();
    // Every line is one JSON object.
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let requests: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "request" && l["route"] == "/v1/run")
        .collect();
    let first = requests
        .iter()
        .find(|l| l["request_id"] == "client-id-1")
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(first["tenant"], "a");
    assert_eq!(first["status"], 200);
    assert_eq!(first["outcome"], "ok");
    assert_eq!(first["method"], "POST");
    assert!(first["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(requests
        .iter()
        .any(|l| l["outcome"] == "limit" && l["limit"] == "time" && l["tenant"] == "a"));
    assert!(requests
        .iter()
        .any(|l| l["status"] == 401 && l["outcome"] == "Unauthorized" && l["tenant"] == "-"));
    assert!(!log.contains("must-not-be-logged"), "{log}");
    assert!(!log.contains(TOKEN_A), "{log}");
}

/// The value of the metric line that starts with `series ` on `page`.
fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{page}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_count_runs_sessions_and_memory() {
    let dir = Dir::new("metrics");
    let server = Server::start(&dir, &["--session-idle", "0.5"]);
    let page = || {
        let (s, h, text) = raw(&server, "GET", "/metrics", &[], "");
        assert_eq!(s, 200);
        assert!(h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"));
        text
    };
    server.run(json!({"code": "print(1)"}));
    server.run(json!({"code": "raise SystemExit(3)"}));
    server.run(json!({"code": "while True: pass", "limits": {"timeout": 0.5}}));
    let id = server.session(TOKEN_A, json!({}));
    server.exec(TOKEN_A, &id, "x = 1");
    server.exec(TOKEN_A, &id, "1/0");
    let p = page();
    for (series, n) in [
        (
            r#"pynbox_runs_total{kind="run",outcome="ok",limit=""}"#,
            1.0,
        ),
        (
            r#"pynbox_runs_total{kind="run",outcome="exit",limit=""}"#,
            1.0,
        ),
        (
            r#"pynbox_runs_total{kind="run",outcome="limit",limit="time"}"#,
            1.0,
        ),
        (
            r#"pynbox_runs_total{kind="start",outcome="ok",limit=""}"#,
            1.0,
        ),
        (
            r#"pynbox_runs_total{kind="exec",outcome="ok",limit=""}"#,
            1.0,
        ),
        (
            r#"pynbox_runs_total{kind="exec",outcome="error",limit=""}"#,
            1.0,
        ),
        (r#"pynbox_request_duration_seconds_count{kind="run"}"#, 3.0),
        ("pynbox_queue_depth", 0.0),
    ] {
        assert_eq!(metric(&p, series), n, "{series}");
    }
    assert!(metric(&p, "pynbox_resident_memory_bytes") > 1e6);
    // The idle session is saved, then restored by a call.
    server.wait_for_log("saved to the store", 1);
    assert_eq!(metric(&page(), "pynbox_sessions_saved_total"), 1.0);
    assert_eq!(metric(&page(), "pynbox_sessions_live"), 0.0);
    assert_eq!(server.eval(TOKEN_A, &id, "x")["value"], 1);
    let p = page();
    assert_eq!(metric(&p, "pynbox_sessions_restored_total"), 1.0);
    assert_eq!(metric(&p, "pynbox_sessions_live"), 1.0);
    assert!(!p.contains("tenant") && !p.contains(&id));
    drop(server);

    let off = Server::start(&dir, &["--no-metrics"]);
    let (s, _, _) = raw(&off, "GET", "/metrics", &[], "");
    assert_eq!(s, 404);
}

#[test]
fn a_tenant_past_its_cpu_quota_waits_and_others_do_not() {
    let dir = Dir::new("quota");
    std::fs::write(
        dir.tokens(),
        format!(
            "[[tenant]]\nname = \"a\"\ntoken = \"{TOKEN_A}\"\n\n\
             [[tenant]]\nname = \"b\"\ntoken = \"{TOKEN_B}\"\ncpu_seconds_per_minute = 1\n"
        ),
    )
    .unwrap();
    let server = Server::start(&dir, &[]);
    let sleep = json!({"code": "import time; time.sleep(1.5)"});
    server.post("/v1/run", TOKEN_B, sleep.clone(), 200);
    // 1.5 s used of 1 s per minute: refused until the debt is refilled.
    for (path, body) in [
        ("/v1/run", sleep.to_string()),
        ("/v1/sessions", "{}".into()),
    ] {
        let (s, v, h) = server.call("POST", path, Some(TOKEN_B), Some(&body));
        assert_eq!(s, 429, "{v}");
        assert_eq!(v["error"]["type"], "QuotaExceeded");
        assert_eq!(v["error"]["quota"], "cpu_seconds_per_minute");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cpu_seconds_per_minute"));
        let retry: u64 = h[1].as_deref().unwrap().parse().unwrap();
        assert!((1..=61).contains(&retry), "{retry}");
    }
    // Tenant a has no quota.
    server.run(sleep.clone());
    server.run(sleep);
}

/// The S3-compatible server the S3 store test runs against
/// (`scripts/test-serve-s3.sh` starts moto on loopback and sets it).
const S3_ENDPOINT: &str = "PYNBOX_TEST_S3_ENDPOINT";

/// One unsigned request to the S3 test server (moto takes them): status
/// and body.
fn s3(method: &str, url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = match method {
        "PUT" => agent.put(url).send(""),
        _ => agent.get(url).call(),
    }
    .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap())
}

#[test]
fn idle_sessions_in_s3_survive_a_killed_server() {
    let Ok(endpoint) = std::env::var(S3_ENDPOINT) else {
        println!(
            "skipped: {S3_ENDPOINT} is not set (scripts/test-serve-s3.sh runs this test against moto on loopback)"
        );
        return;
    };
    let dir = Dir::new("s3");
    let bucket = format!("pynbox-test-{}", std::process::id());
    assert_eq!(s3("PUT", &format!("{endpoint}/{bucket}")).0, 200);
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ];
    let url = format!("s3://{bucket}/sessions");
    let objects = || {
        let (s, body) = s3("GET", &format!("{endpoint}/{bucket}?list-type=2"));
        assert_eq!(s, 200, "{body}");
        body.matches(".session</Key>").count()
    };
    let server = Server::start_with_store(&dir, url.as_ref(), &env, &["--session-idle", "0.5"]);
    // The start-up probe leaves nothing behind.
    assert_eq!(objects(), 0);
    let id = server.session(TOKEN_A, json!({}));
    server.exec(TOKEN_A, &id, "x = 5");
    server.wait_for_log("saved to the store", 1);
    assert_eq!(objects(), 1);
    assert_eq!(dir.saved(), 0, "nothing in the local directory");
    assert_eq!(server.eval(TOKEN_A, &id, "x")["value"], 5);
    assert!(server.log().contains("restored from the store"));
    server.exec(TOKEN_A, &id, "x += 1");
    server.wait_for_log("saved to the store", 2);
    let (s, _, _) = server.call(
        "POST",
        &format!("/v1/sessions/{id}/eval"),
        Some(TOKEN_B),
        Some(r#"{"code": "x"}"#),
    );
    assert_eq!(s, 404);

    // Killed without a chance to save anything more: what was saved lives.
    let mut server = server;
    server.signal(libc::SIGKILL);
    server.wait(Duration::from_secs(10));
    let mut second = Server::start_with_store(&dir, url.as_ref(), &env, &[]);
    assert_eq!(second.eval(TOKEN_A, &id, "x")["value"], 6);
    // SIGTERM saves the live session to the store on the way out.
    second.exec(TOKEN_A, &id, "x += 1");
    second.signal(libc::SIGTERM);
    assert_eq!(
        second.wait(Duration::from_secs(20)),
        Some(0),
        "{}",
        second.log()
    );
    let second = Server::start_with_store(&dir, url.as_ref(), &env, &[]);
    assert_eq!(second.eval(TOKEN_A, &id, "x")["value"], 7);
    let (_, listing) = s3("GET", &format!("{endpoint}/{bucket}?list-type=2"));
    let key = listing
        .split("<Key>")
        .find_map(|k| k.split_once("</Key>").map(|(k, _)| k.to_string()))
        .filter(|k| k.ends_with(&format!("{id}.session")))
        .unwrap_or_else(|| panic!("{listing}"));
    let (s, _, _) = second.call("DELETE", &format!("/v1/sessions/{id}"), Some(TOKEN_A), None);
    assert_eq!(s, 204);
    assert_eq!(objects(), 0);
    drop(second);

    // An object larger than any session of the tenant could be is
    // refused unread (1 MiB of memory: at most about 2 MiB stored).
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let put = agent
        .put(&format!("{endpoint}/{bucket}/{key}"))
        .send(&vec![b'x'; 3 << 20][..])
        .unwrap();
    assert_eq!(put.status().as_u16(), 200);
    let third = Server::start_with_store(&dir, url.as_ref(), &env, &["--max-memory", "1M"]);
    let (s, v, _) = third.call(
        "POST",
        &format!("/v1/sessions/{id}/eval"),
        Some(TOKEN_A),
        Some(r#"{"code": "x"}"#),
    );
    assert_eq!(s, 500, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than a session of this tenant can be"),
        "{v}"
    );
    drop(third);

    // A bucket that does not exist stops the server at start, saying so.
    let out = pynbox()
        .envs(env)
        .args(["serve", "--dest"])
        .arg(dest())
        .args(["--listen", "127.0.0.1:0", "--no-auth", "--session-store"])
        .arg(format!("s3://{bucket}-missing/x"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--session-store s3://"),
        "{}",
        text(&out.stderr)
    );
}
