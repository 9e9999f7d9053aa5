//! Sessions through the library (src/session/): state kept across calls,
//! guest exceptions, host functions, limits, and sessions saved to bytes
//! and restored. They need the installed `python` package, like
//! tests/python.rs. The hostile side (hand-made guests and saved bytes)
//! is in tests/session_attacks.rs.

mod common;

use common::*;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pynbox::session::{
    CallErrorKind, Python, Session, SessionOptions, SessionPool, Value, MAX_POOL_SIZE,
};
use pynbox::{Limits, MountSpec, Runtime};

fn python() -> &'static Python {
    static P: OnceLock<Python> = OnceLock::new();
    P.get_or_init(|| {
        let runtime = Runtime::new(Some(dest().join("cache"))).unwrap();
        Python::from_install(&runtime, &dest()).unwrap()
    })
}

fn root() -> MountSpec {
    MountSpec {
        host: dest().join("root"),
        guest: "/".into(),
        writable: false,
    }
}

fn options() -> SessionOptions {
    SessionOptions {
        mounts: vec![root()],
        ..SessionOptions::default()
    }
}

fn with_limits(limits: Limits) -> SessionOptions {
    SessionOptions {
        limits,
        ..options()
    }
}

fn session() -> Session {
    Session::start(python(), options()).unwrap()
}

fn eval(s: &mut Session, expr: &str) -> Value {
    match s.eval(expr) {
        Ok(c) => c.value,
        Err(e) => panic!("eval({expr}) failed: {e}\n{}", text(&e.stderr)),
    }
}

fn exec(s: &mut Session, code: &str) -> pynbox::session::Call {
    match s.exec(code) {
        Ok(c) => c,
        Err(e) => panic!("exec failed: {e} {:?}\n{}", e.kind, text(&e.stderr)),
    }
}

fn s(v: &str) -> Value {
    Value::Str(v.into())
}

#[test]
fn state_lives_across_calls_and_output_is_per_call() {
    let mut session = session();
    let c = exec(
        &mut session,
        "x = 6 * 7\nprint('hello')\nimport sys; print('e', file=sys.stderr)",
    );
    assert_eq!(c.value, Value::None);
    assert_eq!(text(&c.stdout), "hello\n");
    assert_eq!(text(&c.stderr), "e\n");
    let c = session.eval("x").unwrap();
    assert_eq!(c.value, Value::Int(42));
    assert!(c.stdout.is_empty() && c.stderr.is_empty());
    exec(&mut session, "def f(n):\n    return n + x\n");
    assert_eq!(eval(&mut session, "f(1)"), Value::Int(43));
    // Runs in __main__, like a script.
    assert_eq!(eval(&mut session, "__name__"), s("__main__"));
}

#[test]
fn eval_returns_values_in_the_interchange_form() {
    let mut session = session();
    let v = eval(
        &mut session,
        "[None, True, False, -5, 2.5, 'é', b'\\x00\\xff', (1, 2), {'k': [1]}, 2**70, object.__new__(type('T', (), {'__repr__': lambda self: '<T>'}))]",
    );
    assert_eq!(
        v,
        Value::List(vec![
            Value::None,
            Value::Bool(true),
            Value::Bool(false),
            Value::Int(-5),
            Value::Float(2.5),
            s("é"),
            Value::Bytes(vec![0, 255]),
            Value::List(vec![Value::Int(1), Value::Int(2)]),
            Value::Dict(vec![(s("k"), Value::List(vec![Value::Int(1)]))]),
            Value::Repr("1180591620717411303424".into()),
            Value::Repr("<T>".into()),
        ])
    );
}

#[test]
fn guest_exceptions_come_back_with_type_message_and_traceback() {
    let mut session = session();
    exec(&mut session, "def broken():\n    return 1 / 0\n");
    let e = session.exec("print('before')\nbroken()").unwrap_err();
    let CallErrorKind::Guest {
        type_name,
        traceback,
    } = &e.kind
    else {
        panic!("{e:?}")
    };
    assert_eq!(type_name, "ZeroDivisionError");
    assert_eq!(e.message, "division by zero");
    assert_eq!(text(&e.stdout), "before\n");
    // The traceback shows the session's own lines.
    assert!(traceback.contains("return 1 / 0"), "{traceback}");
    assert!(traceback.contains("<session:"), "{traceback}");
    assert!(session.is_alive());
    // A syntax error, an exception class of a module, SystemExit.
    let e = session.exec("x = (").unwrap_err();
    assert!(
        matches!(&e.kind, CallErrorKind::Guest { type_name, .. } if type_name == "SyntaxError")
    );
    let e = session.exec("import json; json.loads('{')").unwrap_err();
    assert!(
        matches!(&e.kind, CallErrorKind::Guest { type_name, .. } if type_name == "json.decoder.JSONDecodeError"),
        "{e:?}"
    );
    let e = session.exec("raise SystemExit(3)").unwrap_err();
    assert!(matches!(&e.kind, CallErrorKind::Guest { type_name, .. } if type_name == "SystemExit"));
    assert_eq!(eval(&mut session, "2 + 2"), Value::Int(4));
}

#[test]
fn host_functions_are_called_with_values_and_their_errors_cross() {
    let mut session = session();
    session.expose("add", |args| match args.as_slice() {
        [Value::Int(a), Value::Int(b)] => Ok(Value::Int(a + b)),
        _ => Err(format!("add takes two ints, not {args:?}")),
    });
    session.expose("echo", |mut args| Ok(args.pop().unwrap_or(Value::None)));
    session.expose("quota", |_| Err("quota exceeded: 0 calls left".into()));
    exec(&mut session, "import pynbox_host");
    assert_eq!(
        eval(&mut session, "pynbox_host.call('add', 2, 3)"),
        Value::Int(5)
    );
    assert_eq!(eval(&mut session, "pynbox_host.add(40, 2)"), Value::Int(42));
    assert_eq!(
        eval(&mut session, "pynbox_host.echo({'a': [b'x', 1.5, None]})"),
        Value::Dict(vec![(
            s("a"),
            Value::List(vec![
                Value::Bytes(b"x".to_vec()),
                Value::Float(1.5),
                Value::None
            ])
        )])
    );
    // The host refuses: the guest sees HostError with the host's message.
    exec(
        &mut session,
        "try:\n    pynbox_host.quota()\nexcept pynbox_host.HostError as e:\n    refused = str(e)\n",
    );
    assert_eq!(
        eval(&mut session, "refused"),
        s("quota exceeded: 0 calls left")
    );
    exec(
        &mut session,
        "try:\n    pynbox_host.add('a', 1)\nexcept pynbox_host.HostError as e:\n    bad = str(e)\n",
    );
    assert!(eval(&mut session, "bad")
        .to_string()
        .contains("add takes two ints"));
    exec(
        &mut session,
        "try:\n    pynbox_host.nothing()\nexcept pynbox_host.HostError as e:\n    missing = str(e)\n",
    );
    assert_eq!(
        eval(&mut session, "missing"),
        s("the host has no function named 'nothing'")
    );
    // An unrefused HostError reaches the host as the guest's exception.
    let e = session.exec("pynbox_host.quota()").unwrap_err();
    assert!(
        matches!(&e.kind, CallErrorKind::Guest { type_name, .. } if type_name == "pynbox_host.HostError")
    );
    // What cannot cross is refused in the guest, before the host sees it.
    let e = session.exec("pynbox_host.echo(object())").unwrap_err();
    assert!(matches!(&e.kind, CallErrorKind::Guest { type_name, .. } if type_name == "TypeError"));
    assert!(session.is_alive());
}

#[test]
fn time_in_host_functions_does_not_count_against_the_limit() {
    let mut session = Session::start(
        python(),
        with_limits(Limits {
            timeout: Some(Duration::from_millis(1500)),
            ..Limits::default()
        }),
    )
    .unwrap();
    session.expose("slow", |_| {
        std::thread::sleep(Duration::from_millis(700));
        Ok(Value::None)
    });
    let t = Instant::now();
    exec(
        &mut session,
        "import pynbox_host\nfor _ in range(4): pynbox_host.slow()",
    );
    assert!(t.elapsed() >= Duration::from_millis(2800));
}

#[test]
fn a_call_past_its_time_limit_ends_the_session() {
    let mut session = Session::start(
        python(),
        with_limits(Limits {
            timeout: Some(Duration::from_secs(1)),
            ..Limits::default()
        }),
    )
    .unwrap();
    exec(&mut session, "x = 1");
    let e = session
        .exec("print('spinning')\nwhile True: pass")
        .unwrap_err();
    assert_eq!(e.kind, CallErrorKind::TimeLimit, "{e}");
    assert!(e.message.contains("time limit"), "{e}");
    assert!(!session.is_alive());
    let e = session.eval("x").unwrap_err();
    assert_eq!(e.kind, CallErrorKind::Dead);
    assert!(e.message.contains("time limit"), "{e}");
    assert!(session.save().is_err());
}

#[test]
fn the_time_limit_is_per_call() {
    let mut session = Session::start(
        python(),
        with_limits(Limits {
            timeout: Some(Duration::from_millis(800)),
            ..Limits::default()
        }),
    )
    .unwrap();
    for _ in 0..4 {
        exec(&mut session, "import time; time.sleep(0.3)");
    }
}

#[test]
fn memory_limit_refused_allocation_leaves_the_session_usable() {
    let mut session = Session::start(
        python(),
        with_limits(Limits {
            memory: Some(256 << 20),
            ..Limits::default()
        }),
    )
    .unwrap();
    exec(&mut session, "keep = 'still here'");
    let e = session
        .exec("big = bytearray(512 * 1024 * 1024)")
        .unwrap_err();
    assert_eq!(e.kind, CallErrorKind::MemoryLimit, "{e:?}");
    assert!(session.is_alive());
    assert_eq!(eval(&mut session, "keep"), s("still here"));
    // The limit is the session's: memory kept by earlier calls counts.
    exec(
        &mut session,
        "chunks = [bytearray(50 * 1024 * 1024) for _ in range(3)]",
    );
    let e = session
        .exec("more = bytearray(100 * 1024 * 1024)")
        .unwrap_err();
    assert_eq!(e.kind, CallErrorKind::MemoryLimit, "{e:?}");
}

#[test]
fn the_output_limit_is_the_sessions() {
    let mut session = Session::start(
        python(),
        with_limits(Limits {
            max_output: Some(10_000),
            ..Limits::default()
        }),
    )
    .unwrap();
    exec(&mut session, "print('x' * 6000)");
    let e = session.exec("print('y' * 6000)").unwrap_err();
    assert_eq!(e.kind, CallErrorKind::OutputLimit, "{e:?}");
    assert!(!session.is_alive());
}

#[test]
fn a_guest_that_exits_ends_its_session() {
    let mut session = session();
    let e = session.exec("import os; os._exit(3)").unwrap_err();
    assert_eq!(e.kind, CallErrorKind::Ended);
    assert!(e.message.contains("status 3"), "{e}");
    assert_eq!(session.exec("1").unwrap_err().kind, CallErrorKind::Dead);
}

#[test]
fn a_saved_session_is_restored_with_its_state() {
    let mut session = session();
    exec(
        &mut session,
        "import json, random\ndata = {'n': [1, 2, 3]}\nr = random.random()\nclass Counter:\n    def __init__(self): self.n = 0\n    def up(self): self.n += 1; return self.n\nc = Counter(); c.up()\nbig = list(range(100000))",
    );
    let saved = session.save().unwrap();
    // The original goes on by itself.
    assert_eq!(eval(&mut session, "c.up()"), Value::Int(2));

    let mut restored = Session::restore(python(), &saved, options()).unwrap();
    assert_eq!(
        eval(&mut restored, "json.dumps(data)"),
        s("{\"n\": [1, 2, 3]}")
    );
    assert_eq!(eval(&mut restored, "c.up()"), Value::Int(2));
    assert_eq!(eval(&mut restored, "r"), eval(&mut session, "r"));
    assert_eq!(eval(&mut restored, "sum(big)"), Value::Int(4999950000));
    // Output and new imports work after the restore.
    let c = exec(
        &mut restored,
        "import decimal\nprint(decimal.Decimal('1.1') * 2)",
    );
    assert_eq!(text(&c.stdout), "2.2\n");
    // A restored session saves and restores again.
    let again = restored.save().unwrap();
    let mut third = Session::restore(python(), &again, options()).unwrap();
    assert_eq!(eval(&mut third, "c.up()"), Value::Int(3));
}

#[test]
fn saving_refuses_open_files_and_works_once_they_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options();
    opts.mounts.push(MountSpec {
        host: dir.path().to_path_buf(),
        guest: "/work".into(),
        writable: true,
    });
    let mut session = Session::start(python(), opts.clone()).unwrap();
    exec(&mut session, "f = open('/work/notes', 'w'); f.write('x')");
    let e = session.save().unwrap_err();
    assert!(e.to_string().contains("close them before saving"), "{e}");
    exec(&mut session, "f.close()");
    let saved = session.save().unwrap();
    let mut restored = Session::restore(python(), &saved, opts).unwrap();
    assert_eq!(eval(&mut restored, "open('/work/notes').read()"), s("x"));
}

#[test]
fn restore_refuses_bytes_that_are_not_a_session_of_this_interpreter() {
    let mut session = session();
    exec(&mut session, "x = 1");
    let saved = session.save().unwrap();
    let refuse = |data: &[u8], want: &str| {
        let e = Session::restore(python(), data, options())
            .err()
            .expect("restore should fail");
        assert!(e.to_string().contains(want), "{e}");
    };
    refuse(b"", "not a saved pynbox session");
    refuse(b"hello world, not a session", "not a saved pynbox session");
    refuse(&saved[..saved.len() / 2], "corrupt");
    let mut flipped = saved.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    refuse(&flipped, "corrupt");
    // Another interpreter build: the install's snapshot stands in for one.
    let runtime = Runtime::new(Some(dest().join("cache"))).unwrap();
    let other = runtime
        .load_file(&dest().join(pynbox::preinit::INSTALL_PATH))
        .unwrap();
    let foreign = Python::new(other, None, python().arg0());
    let e = Session::restore(&foreign, &saved, options()).err().unwrap();
    assert!(e.to_string().contains("another interpreter build"), "{e}");
    // A memory limit below what the session holds.
    let e = Session::restore(
        python(),
        &saved,
        with_limits(Limits {
            memory: Some(1 << 20),
            ..Limits::default()
        }),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("memory limit"), "{e}");
}

#[test]
fn many_sessions_live_at_once_each_with_its_own_state() {
    let mut sessions: Vec<Session> = (0..500).map(|_| session()).collect();
    for (i, s) in sessions.iter_mut().enumerate() {
        exec(s, &format!("n = {i}"));
    }
    for (i, s) in sessions.iter_mut().enumerate() {
        assert_eq!(eval(s, "n * 2"), Value::Int(2 * i as i64));
    }
}

#[test]
fn sessions_run_in_parallel_threads() {
    let handles: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut s = session();
                exec(&mut s, &format!("t = {t}\ntotal = sum(range(200000))"));
                (eval(&mut s, "t"), eval(&mut s, "total"))
            })
        })
        .collect();
    for (t, h) in handles.into_iter().enumerate() {
        assert_eq!(
            h.join().unwrap(),
            (Value::Int(t as i64), Value::Int(19999900000))
        );
    }
}

#[test]
fn sessions_start_without_the_snapshot_too() {
    let runtime = Runtime::new(Some(dest().join("cache"))).unwrap();
    let plain = runtime
        .load_file(&dest().join("root/python/bin/python.wasm"))
        .unwrap();
    let py = Python::new(plain, None, python().arg0());
    let mut session = Session::start(&py, options()).unwrap();
    exec(&mut session, "import json\nv = json.loads('[1, 2]')");
    assert_eq!(
        eval(&mut session, "v"),
        Value::List(vec![Value::Int(1), Value::Int(2)])
    );
    // A session started from the snapshot restores into the plain one:
    // both are the same interpreter build.
    let mut from_snapshot = self::session();
    exec(&mut from_snapshot, "w = 'snap'");
    let saved = from_snapshot.save().unwrap();
    let mut restored = Session::restore(&py, &saved, options()).unwrap();
    assert_eq!(eval(&mut restored, "w"), s("snap"));
}

#[test]
fn a_guest_that_rewrites_the_driver_only_ends_its_own_session() {
    // The driver is guest code: the guest can replace it, and then say
    // anything. The host trusts none of it.
    let mut session = session();
    exec(
        &mut session,
        "import gc, _pynbox_session\n\
         def evil():\n    import _pynbox_session\n    _pynbox_session.take()\n    _pynbox_session.send(0, b'ol' + b'\\xff' * 4)\n\
         serve = [f for f in gc.get_objects() if getattr(f, '__name__', '') == 'serve'][0]\n\
         serve.__code__ = evil.__code__\n",
    );
    let e = session.eval("1").unwrap_err();
    assert_eq!(e.kind, CallErrorKind::Ended, "{e}");
    assert!(e.message.contains("malformed"), "{e}");
    assert!(!session.is_alive());
    // Other sessions are untouched.
    assert_eq!(eval(&mut self::session(), "1 + 1"), Value::Int(2));
}

/// Sessions of an install's python load its native modules; such a
/// session cannot be saved (a module's code and table slots are not in the
/// memory image), and says so instead of saving something that would not
/// restore.
#[test]
fn a_session_loads_native_modules_and_refuses_to_save_then() {
    let mut s = session();
    exec(
        &mut s,
        "import sys; sys.path.insert(0, '/test/native'); import pynbox_ext",
    );
    assert_eq!(
        eval(&mut s, "pynbox_ext.helper_add(20, 22)"),
        Value::Int(42)
    );
    let e = s.save().unwrap_err().to_string();
    assert!(e.contains("native module"), "{e}");
    // The session lives on.
    assert_eq!(
        eval(&mut s, "pynbox_ext.sort_ints([3, 1, 2])"),
        Value::List(vec![Value::Int(1), Value::Int(2), Value::Int(3)])
    );
}

/// Waits until the pool has `n` sessions ready (its thread starts them).
fn wait_ready(pool: &SessionPool, n: usize) {
    let until = Instant::now() + Duration::from_secs(60);
    while pool.ready() < n {
        assert!(Instant::now() < until, "the pool never reached {n} ready");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_pool_hands_out_fresh_sessions_none_twice_and_refills() {
    let pool = SessionPool::new(python(), options(), 3).unwrap();
    assert_eq!(pool.size(), 3);
    wait_ready(&pool, 3);
    let mut a = pool.take().unwrap();
    let mut b = pool.take().unwrap();
    // The pool's warm-up is not a call of the session's: the taker's
    // first call is its first.
    let e = b.exec("raise KeyError('first')").unwrap_err();
    match &e.kind {
        CallErrorKind::Guest { traceback, .. } => {
            assert!(traceback.contains("<session:1>"), "{traceback}")
        }
        other => panic!("{other:?}"),
    }
    exec(&mut a, "secret = 'left by a'");
    // Each is its own interpreter, with its own hash secret.
    assert_eq!(eval(&mut b, "'secret' in globals()"), Value::Bool(false));
    let hashes: Vec<Value> = [&mut a, &mut b]
        .into_iter()
        .map(|s| eval(s, "hash('pynbox')"))
        .collect();
    assert_ne!(hashes[0], hashes[1]);
    drop(a);
    // Taking more than the pool holds starts the rest on the spot; none
    // is a session somebody had.
    let mut more: Vec<Session> = (0..5).map(|_| pool.take().unwrap()).collect();
    for s in &mut more {
        assert_eq!(eval(s, "'secret' in globals()"), Value::Bool(false));
        assert_eq!(eval(s, "1 + 1"), Value::Int(2));
    }
    wait_ready(&pool, 3);
    assert_eq!(pool.ready(), 3);
    // Sessions taken live on after the pool is gone; the ones waiting end.
    drop(pool);
    assert_eq!(eval(&mut b, "6 * 7"), Value::Int(42));
}

#[test]
fn a_pool_keeps_its_options_and_refuses_bad_ones_up_front() {
    let limited = with_limits(Limits {
        timeout: Some(Duration::from_millis(500)),
        ..Limits::default()
    });
    let pool = SessionPool::new(python(), limited, 1).unwrap();
    let mut s = pool.take().unwrap();
    let e = s.exec("while True: pass").unwrap_err();
    assert_eq!(e.kind, CallErrorKind::TimeLimit, "{e}");
    for size in [0, MAX_POOL_SIZE + 1] {
        let e = SessionPool::new(python(), options(), size)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("1 to 64 sessions") && e.contains(&size.to_string()),
            "{e}"
        );
    }
    let tiny = with_limits(Limits {
        memory: Some(1 << 20),
        ..Limits::default()
    });
    let e = SessionPool::new(python(), tiny, 2)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("memory"), "{e}");
}
