//! The two imports through which a session's guest and the host talk:
//!
//! - `pynbox.take(ptr, len) -> i32`: the size of the message the host has
//!   for the guest (the request of the current call, or the result of a
//!   host-function call); with `ptr` not 0 and `len` at least that size,
//!   it is copied to `ptr` and consumed. -1: no message (or not a session).
//! - `pynbox.send(kind, ptr, len) -> i32`: hands the host a message: kind
//!   0 is the answer to the current call, kind 1 a call of a host function
//!   (list `[name, [args...]]` in the interchange form), which runs at once
//!   and leaves its result to be taken (`o` and a value, or `e` and a
//!   message). -1: refused (not a session, too large, unknown kind).
//!
//! Outside a session (a plain run) both answer -1: the guest learns
//! nothing and can do nothing with them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wasmtime::{Caller, Linker};

use super::value::{self, Value};
use super::HostFn;
use crate::runtime::Guest;
use crate::wasi::memory_of;

/// The largest message either way (a request's code, an answer, a host
/// call): the host copies messages out of the guest, and must not be made
/// to hold more than this for one.
pub const MAX_MESSAGE: usize = 64 << 20;

/// The host's side of one session's messages, in the guest's store.
#[derive(Default)]
pub struct Channel {
    /// For the guest to take.
    pub(crate) inbox: Option<Vec<u8>>,
    /// The guest's answer to the current call.
    pub(crate) answer: Option<Vec<u8>>,
    pub functions: HashMap<String, HostFn>,
}

impl Channel {
    /// For src/fuzzing.rs.
    #[doc(hidden)]
    pub fn host_call_for_fuzzing(&mut self, msg: &[u8]) -> Vec<u8> {
        self.host_call(msg)
    }

    /// Runs the host-function call in `msg`; the reply for the guest.
    fn host_call(&mut self, msg: &[u8]) -> Vec<u8> {
        let result = match value::decode(msg) {
            Ok(Value::List(mut parts)) if parts.len() == 2 => {
                let args = parts.pop();
                match (parts.pop(), args) {
                    (Some(Value::Str(name)), Some(Value::List(args))) => {
                        match self.functions.get_mut(&name) {
                            Some(f) => f(args).and_then(|v| {
                                if contains_repr(&v) {
                                    Err(format!(
                                        "the host function '{name}' returned a value outside the interchange form"
                                    ))
                                } else {
                                    Ok(v)
                                }
                            }),
                            None => Err(format!("the host has no function named '{name}'")),
                        }
                    }
                    _ => Err("a host call is [name, [args...]]".to_string()),
                }
            }
            Ok(_) => Err("a host call is [name, [args...]]".to_string()),
            Err(why) => Err(format!("malformed host call: {why}")),
        };
        let error = |message: String| {
            let mut reply = vec![b'e'];
            value::encode(&Value::Str(message), &mut reply);
            reply
        };
        match result {
            Ok(v) => {
                let mut reply = vec![b'o'];
                value::encode(&v, &mut reply);
                if reply.len() > MAX_MESSAGE {
                    return error(format!(
                        "the host function's result is {} bytes, more than a message may hold ({MAX_MESSAGE})",
                        reply.len()
                    ));
                }
                reply
            }
            Err(mut message) => {
                message.truncate(1 << 16);
                error(message)
            }
        }
    }
}

fn contains_repr(v: &Value) -> bool {
    match v {
        Value::Repr(_) => true,
        Value::List(items) => items.iter().any(contains_repr),
        Value::Dict(items) => items
            .iter()
            .any(|(k, v)| contains_repr(k) || contains_repr(v)),
        _ => false,
    }
}

/// Copies `len` bytes at `ptr` out of the guest's memory.
fn guest_bytes(caller: &mut Caller<'_, Guest>, ptr: u32, len: u32) -> Option<Vec<u8>> {
    let memory = memory_of(caller).ok()?;
    let start = ptr as usize;
    let end = start.checked_add(len as usize)?;
    memory.data(&*caller).get(start..end).map(<[u8]>::to_vec)
}

pub(crate) fn add_to_linker(linker: &mut Linker<Guest>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "pynbox",
        "take",
        |mut caller: Caller<'_, Guest>, ptr: u32, len: u32| -> wasmtime::Result<i32> {
            let Some(msg) = caller
                .data()
                .session
                .as_ref()
                .and_then(|c| c.inbox.as_ref())
            else {
                return Ok(-1);
            };
            let size = msg.len();
            if ptr == 0 || (len as usize) < size {
                return Ok(size as i32);
            }
            let memory = memory_of(&mut caller)?;
            let (mem, guest) = memory.data_and_store_mut(&mut caller);
            let msg = guest.session.as_mut().and_then(|c| c.inbox.take());
            let msg = msg.unwrap_or_default();
            let dest = (ptr as usize)
                .checked_add(size)
                .and_then(|end| mem.get_mut(ptr as usize..end));
            match dest {
                Some(d) => {
                    d.copy_from_slice(&msg);
                    Ok(size as i32)
                }
                None => {
                    // Put back: a bad pointer must not lose the message.
                    guest.session.as_mut().unwrap().inbox = Some(msg);
                    Ok(-1)
                }
            }
        },
    )?;
    linker.func_wrap(
        "pynbox",
        "send",
        |mut caller: Caller<'_, Guest>, kind: u32, ptr: u32, len: u32| -> wasmtime::Result<i32> {
            if caller.data().session.is_none() || len as usize > MAX_MESSAGE {
                return Ok(-1);
            }
            let Some(msg) = guest_bytes(&mut caller, ptr, len) else {
                return Ok(-1);
            };
            let guest = caller.data_mut();
            let channel = guest.session.as_mut().unwrap();
            match kind {
                0 => channel.answer = Some(msg),
                1 => {
                    let t = Instant::now();
                    let reply = channel.host_call(&msg);
                    channel.inbox = Some(reply);
                    // The host's time is not the guest's.
                    let spent: Duration = t.elapsed();
                    if let Some(d) = guest.wasi.deadline {
                        guest.wasi.deadline = Some(d.checked_add(spent).unwrap_or(d));
                    }
                }
                _ => return Ok(-1),
            }
            Ok(0)
        },
    )?;
    Ok(())
}
