//! Fresh sessions started ahead of time, so that a caller who wants a new
//! sandbox for each job gets one in microseconds instead of the few
//! milliseconds a start takes (resuming the snapshot, the rehash of its
//! heap under a fresh hash secret, the driver's start).
//!
//! A background thread keeps up to `size` sessions started with the same
//! options, each warmed up (a first `pass` compiled and run outside
//! `__main__`: a fresh interpreter's first call costs milliseconds);
//! [`SessionPool::take`] hands one over and wakes the thread to start the
//! next. Every session is started for one taker and never given
//! to another, so what one job leaves in its interpreter no other job sees.
//! When the pool is empty (takes faster than starts), `take` starts one
//! itself: the pool lowers latency, it cannot raise the number of starts
//! a core can make per second.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::{Python, Session, SessionOptions};
use crate::runtime::Error;

/// The most sessions a pool keeps ready: each holds its memory (about 4
/// MiB for a fresh python, up to the memory limit) while it waits.
pub const MAX_POOL_SIZE: usize = 64;

/// See the module's documentation.
pub struct SessionPool {
    shared: Arc<Shared>,
    filler: Option<JoinHandle<()>>,
}

struct Shared {
    python: Python,
    options: SessionOptions,
    size: usize,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Session>,
    closing: bool,
    /// The filler's last start failed: it waits for the next `take`
    /// before it tries again, rather than spinning on a failing start.
    failed: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves a queue of
        // sessions that are still whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SessionPool {
    /// A pool that keeps `size` (1 to [`MAX_POOL_SIZE`]) sessions of
    /// `python` started with `options`. One is started before this
    /// returns, so that options no session can start with are an error
    /// here rather than at the first `take`; the thread starts the rest.
    pub fn new(
        python: &Python,
        options: SessionOptions,
        size: usize,
    ) -> Result<SessionPool, Error> {
        if !(1..=MAX_POOL_SIZE).contains(&size) {
            return Err(Error::input(format!(
                "a session pool keeps 1 to {MAX_POOL_SIZE} sessions ready, not {size}"
            )));
        }
        let first = start_warm(python, &options)?;
        let shared = Arc::new(Shared {
            python: python.clone(),
            options,
            size,
            state: Mutex::new(State {
                ready: VecDeque::from([first]),
                ..State::default()
            }),
            wake: Condvar::new(),
        });
        let filler = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("pynbox-session-pool".into())
                .spawn(move || fill(&shared))
                .map_err(|e| Error::internal(format!("cannot start the pool's thread: {e}")))?
        };
        Ok(SessionPool {
            shared,
            filler: Some(filler),
        })
    }

    /// A fresh session: one started ahead of time when the pool has one,
    /// else one started now (with that start's error, if it fails).
    pub fn take(&self) -> Result<Session, Error> {
        let ready = {
            let mut state = self.shared.state();
            state.failed = false;
            state.ready.pop_front()
        };
        self.shared.wake.notify_all();
        match ready {
            Some(s) => Ok(s),
            None => Session::start(&self.shared.python, self.shared.options.clone()),
        }
    }

    /// How many sessions are started and waiting.
    pub fn ready(&self) -> usize {
        self.shared.state().ready.len()
    }

    /// How many sessions the pool keeps ready.
    pub fn size(&self) -> usize {
        self.shared.size
    }
}

impl Drop for SessionPool {
    /// Stops the thread (after the start it may be in) and ends the
    /// sessions nobody took.
    fn drop(&mut self) {
        let waiting = {
            let mut state = self.shared.state();
            state.closing = true;
            std::mem::take(&mut state.ready)
        };
        self.shared.wake.notify_all();
        drop(waiting);
        if let Some(t) = self.filler.take() {
            let _ = t.join();
        }
    }
}

/// A session started and warmed up.
fn start_warm(python: &Python, options: &SessionOptions) -> Result<Session, Error> {
    let mut s = Session::start(python, options.clone())?;
    s.warm_up()
        .map_err(|e| Error::input(format!("the session's warm-up failed: {e}")))?;
    Ok(s)
}

/// The pool's thread: starts sessions while fewer than `size` wait.
fn fill(shared: &Shared) {
    loop {
        {
            let mut state = shared.state();
            while !state.closing && (state.failed || state.ready.len() >= shared.size) {
                state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            if state.closing {
                return;
            }
        }
        let started = start_warm(&shared.python, &shared.options);
        let mut state = shared.state();
        if state.closing {
            return;
        }
        match started {
            Ok(s) => state.ready.push_back(s),
            Err(_) => state.failed = true,
        }
    }
}
