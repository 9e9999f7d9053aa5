//! Sessions against a hostile guest: a hand-made module that speaks the
//! session protocol (src/session/channel.rs) the way an attacker who
//! controls the guest would: huge and out-of-range messages, malformed and
//! endlessly nested answers, bogus host calls, runaway memory and time.
//! Each attack must end as a clean error (and, where the guest broke the
//! protocol, a dead session), never a host crash or a host allocation the
//! guest chose. Needs no install: the guest is built here.

use std::time::Duration;

use pynbox::session::{CallErrorKind, Python, Session, SessionOptions, Value};
use pynbox::{Limits, Runtime};

/// The attack is chosen by the first character of the code the host
/// sends (`session.exec("3")` runs attack 3).
const HOSTILE: &str = r#"
(module
  (import "pynbox" "take" (func $take (param i32 i32) (result i32)))
  (import "pynbox" "send" (func $send (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; 0: a well-formed answer, None.
  (data (i32.const 0) "oN")
  ;; 3: a list that claims 4 billion items.
  (data (i32.const 16) "ol\ff\ff\ff\ff")
  ;; h: a host call that is not [name, [args]].
  (data (i32.const 32) "l\02\00\00\00")
  (func (export "_start"))
  (func (export "pynbox.session_start") (result i32)
    (drop (call $take (i32.const 0x10000) (i32.const 0x10000)))
    (i32.const 0))
  ;; Answers 'o' + an int: what a host call returned to the guest.
  (func $answer_int (param $v i32)
    (i32.store8 (i32.const 2000) (i32.const 0x6f))
    (i32.store8 (i32.const 2001) (i32.const 0x69))
    (i64.store (i32.const 2002) (i64.extend_i32_s (local.get $v)))
    (drop (call $send (i32.const 0) (i32.const 2000) (i32.const 10))))
  (func (export "pynbox.session_call") (result i32)
    (local $i i32)
    (drop (call $take (i32.const 1024) (i32.const 512)))
    (block $default
    (block $h (block $9 (block $8 (block $7 (block $6 (block $5 (block $4 (block $3 (block $2 (block $1 (block $0
      (br_table $0 $1 $2 $3 $4 $5 $6 $7 $8 $9 $h $default
        (select
          (i32.sub (i32.load8_u (i32.const 1025)) (i32.const 0x30))
          (select (i32.const 10) (i32.const 11) (i32.eq (i32.load8_u (i32.const 1025)) (i32.const 0x68)))
          (i32.lt_u (i32.sub (i32.load8_u (i32.const 1025)) (i32.const 0x30)) (i32.const 10)))))
      ;; 0
      (drop (call $send (i32.const 0) (i32.const 0) (i32.const 2)))
      (return (i32.const 0)))
      ;; 1: an answer of 2 GiB (far past the memory): refused.
      (call $answer_int (call $send (i32.const 0) (i32.const 0) (i32.const 0x7fffffff)))
      (return (i32.const 0)))
      ;; 2: a take into memory the guest does not have.
      (drop (call $send (i32.const 1) (i32.const 32) (i32.const 5)))
      (call $answer_int (call $take (i32.const 0xfffffff0) (i32.const 100)))
      (return (i32.const 0)))
      ;; 3
      (drop (call $send (i32.const 0) (i32.const 16) (i32.const 6)))
      (return (i32.const 0)))
      ;; 4: a list nested 100,000 deep.
      (i32.store8 (i32.const 4096) (i32.const 0x6f))
      (local.set $i (i32.const 0))
      (loop $fill
        (i32.store8 (i32.add (i32.const 4097) (i32.mul (local.get $i) (i32.const 5))) (i32.const 0x6c))
        (i32.store (i32.add (i32.const 4098) (i32.mul (local.get $i) (i32.const 5))) (i32.const 1))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $fill (i32.lt_u (local.get $i) (i32.const 20000))))
      (i32.store8 (i32.add (i32.const 4097) (i32.const 100000)) (i32.const 0x4e))
      (drop (call $send (i32.const 0) (i32.const 4096) (i32.const 100002)))
      (return (i32.const 0)))
      ;; 5: all the memory there is.
      (drop (memory.grow (i32.const 65000)))
      (unreachable))
      ;; 6: forever.
      (loop $spin (br $spin))
      (return (i32.const 0)))
      ;; 7: a message of a kind that does not exist.
      (call $answer_int (call $send (i32.const 9) (i32.const 0) (i32.const 2)))
      (return (i32.const 0)))
      ;; 8: the driver fails.
      (return (i32.const 1)))
      ;; 9: no answer at all.
      (return (i32.const 0)))
      ;; h: the host's reply to a bogus call, sent back as a string.
      (drop (call $send (i32.const 1) (i32.const 32) (i32.const 5)))
      (local.set $i (call $take (i32.const 3000) (i32.const 1000)))
      (i32.store8 (i32.const 3000) (i32.const 0x6f))
      (drop (call $send (i32.const 0) (i32.const 3000) (local.get $i)))
      (return (i32.const 0)))
    (unreachable))
)
"#;

fn hostile() -> Python {
    let runtime = Runtime::new(None).unwrap();
    let wasm = wat::parse_str(HOSTILE).unwrap();
    let program = runtime.load_bytes("hostile.wasm", &wasm).unwrap();
    Python::new(program, None, "/hostile.wasm")
}

fn start(limits: Limits) -> Session {
    let options = SessionOptions {
        limits,
        ..SessionOptions::default()
    };
    Session::start(&hostile(), options).unwrap()
}

fn limited() -> Session {
    start(Limits {
        memory: Some(64 << 20),
        timeout: Some(Duration::from_secs(1)),
        ..Limits::default()
    })
}

#[test]
fn a_well_formed_answer_is_taken() {
    let mut s = limited();
    assert_eq!(s.eval("0").unwrap().value, Value::None);
}

#[test]
fn messages_past_the_guests_memory_or_the_size_cap_are_refused() {
    let mut s = limited();
    assert_eq!(s.eval("1").unwrap().value, Value::Int(-1));
    assert_eq!(s.eval("2").unwrap().value, Value::Int(-1));
    assert_eq!(s.eval("7").unwrap().value, Value::Int(-1));
    assert!(s.is_alive());
}

#[test]
fn bogus_host_calls_get_an_error_reply() {
    let mut s = limited();
    assert_eq!(
        s.eval("h").unwrap().value,
        Value::Str("malformed host call: the message ends early".into())
    );
}

#[test]
fn malformed_answers_end_the_session() {
    for (attack, why) in [
        ("3", "malformed"),
        ("4", "nest"),
        ("8", "driver failed"),
        ("9", "no answer"),
    ] {
        let mut s = limited();
        let e = s.eval(attack).unwrap_err();
        assert_eq!(e.kind, CallErrorKind::Ended, "{attack}: {e}");
        assert!(e.message.contains(why), "{attack}: {e}");
        assert!(!s.is_alive());
        assert_eq!(s.eval("0").unwrap_err().kind, CallErrorKind::Dead);
    }
}

#[test]
fn runaway_memory_and_time_hit_the_limits() {
    let mut s = limited();
    assert_eq!(s.eval("5").unwrap_err().kind, CallErrorKind::MemoryLimit);
    let mut s = limited();
    assert_eq!(s.eval("6").unwrap_err().kind, CallErrorKind::TimeLimit);
}

#[test]
fn a_guest_without_session_exports_is_refused_at_start() {
    let runtime = Runtime::new(None).unwrap();
    let wasm = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#)
        .unwrap();
    let program = runtime.load_bytes("plain.wasm", &wasm).unwrap();
    let e = Session::start(
        &Python::new(program, None, "/plain.wasm"),
        SessionOptions::default(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("no session support"), "{e}");
}
