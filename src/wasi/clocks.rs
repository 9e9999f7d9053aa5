//! Time, waiting and randomness: the clocks, `poll_oneoff` (the only call
//! that sleeps on purpose) and `random_get`.

use std::io;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use wasmtime::{Caller, Linker};

use super::abi::*;
use super::fdtable::Desc;
use super::memory::*;
use super::stat::nanos;
use super::{finish, memory_of, Sys, WasiCtx};
use crate::runtime::Guest;

pub(super) fn monotonic_base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn poll_oneoff(cx: &mut WasiCtx, mem: &mut [u8], inp: u32, out: u32, n: u32) -> Sys<u32> {
    if n == 0 {
        return Err(Errno::INVAL.into());
    }
    if n > 4096 {
        return Err(Errno::TOOBIG.into());
    }
    struct Sub {
        userdata: u64,
        kind: u8,
        fd: u32,
        wake: Option<Instant>,
    }
    let now = Instant::now();
    let real_now = nanos(Ok(SystemTime::now()));
    let mono_now = monotonic_base().elapsed().as_nanos() as u64;
    let mut subs = Vec::new();
    for i in 0..n {
        // Each subscription is 48 bytes; the whole array must lie in
        // memory, and no offset may wrap.
        let at = offset(inp, u64::from(i) * 48)?;
        let field = |off: u64| offset(at, off);
        let userdata = get_u64(mem, at)?;
        let kind = slice(mem, field(8)?, 1)?[0];
        match kind {
            EVENTTYPE_CLOCK => {
                let id = get_u32(mem, field(16)?)?;
                let timeout = get_u64(mem, field(24)?)?;
                let f = slice(mem, field(40)?, 2)?;
                let flags = u16::from_le_bytes([f[0], f[1]]);
                let delay = if flags & SUBCLOCK_ABSTIME != 0 {
                    let base = match id {
                        CLOCK_REALTIME => real_now,
                        _ => mono_now,
                    };
                    timeout.saturating_sub(base)
                } else {
                    timeout
                };
                subs.push(Sub {
                    userdata,
                    kind,
                    fd: 0,
                    // About 146 years at most, so that the sum cannot overflow.
                    wake: Some(now + Duration::from_nanos(delay.min(1 << 62))),
                });
            }
            EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE => {
                let fd = get_u32(mem, field(16)?)?;
                subs.push(Sub {
                    userdata,
                    kind,
                    fd,
                    wake: None,
                });
            }
            _ => return Err(Errno::INVAL.into()),
        }
    }

    // Descriptor events: files, memory streams and output are always ready.
    // Host pipes and terminals are asked with poll(2) on Unix.
    let mut ready: Vec<(usize, u16)> = Vec::new();
    #[cfg(unix)]
    let mut wait_on: Vec<(usize, libc::pollfd)> = Vec::new();
    for (i, s) in subs.iter().enumerate() {
        if s.kind == EVENTTYPE_CLOCK {
            continue;
        }
        match cx.fds.get(s.fd) {
            Err(e) => ready.push((i, e.0)),
            #[cfg(unix)]
            Ok(Desc::Host {
                file, stream: true, ..
            }) => {
                use std::os::fd::AsRawFd;
                wait_on.push((
                    i,
                    libc::pollfd {
                        fd: file.as_raw_fd(),
                        events: if s.kind == EVENTTYPE_FD_READ {
                            libc::POLLIN
                        } else {
                            libc::POLLOUT
                        },
                        revents: 0,
                    },
                ));
            }
            Ok(_) => ready.push((i, 0)),
        }
    }
    let earliest = subs.iter().filter_map(|s| s.wake).min();
    #[cfg(unix)]
    if ready.is_empty() && !wait_on.is_empty() {
        loop {
            cx.check_deadline()?;
            // Wake at least every 100 ms to honour the time limit.
            let until = [earliest, cx.deadline].into_iter().flatten().min();
            let ms = until
                .map(|u| {
                    u.saturating_duration_since(Instant::now())
                        .as_millis()
                        .min(100) as i32
                })
                .unwrap_or(100);
            let mut pfds: Vec<libc::pollfd> = wait_on.iter().map(|(_, p)| *p).collect();
            // SAFETY: pfds is a valid, exclusively borrowed array of pollfd.
            let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
            if r > 0 {
                for (k, p) in pfds.iter().enumerate() {
                    if p.revents != 0 {
                        ready.push((wait_on[k].0, 0));
                    }
                }
                break;
            }
            if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return Err(io::Error::last_os_error().into());
            }
            if earliest.is_some_and(|e| Instant::now() >= e) {
                break;
            }
        }
    }
    if ready.is_empty() {
        if let Some(wake) = earliest {
            loop {
                cx.check_deadline()?;
                let now = Instant::now();
                if now >= wake {
                    break;
                }
                let mut step = wake - now;
                if let Some(d) = cx.deadline {
                    step = step.min(d.saturating_duration_since(now) + Duration::from_millis(1));
                }
                std::thread::sleep(step.min(Duration::from_millis(100)));
            }
        }
    }
    let now = Instant::now();
    let mut count = 0u32;
    for (i, s) in subs.iter().enumerate() {
        let (fire, err) = if s.kind == EVENTTYPE_CLOCK {
            (s.wake.is_some_and(|w| now >= w), 0)
        } else {
            match ready.iter().find(|(k, _)| *k == i) {
                Some((_, e)) => (true, *e),
                None => (false, 0),
            }
        };
        if !fire {
            continue;
        }
        let at = offset(out, u64::from(count) * 32)?;
        let mut ev = [0u8; 32];
        ev[0..8].copy_from_slice(&s.userdata.to_le_bytes());
        ev[8..10].copy_from_slice(&err.to_le_bytes());
        ev[10] = s.kind;
        if s.kind != EVENTTYPE_CLOCK {
            // nbytes is advisory; 1 says "something can be transferred".
            ev[16..24].copy_from_slice(&1u64.to_le_bytes());
        }
        put(mem, at, &ev)?;
        count += 1;
    }
    Ok(count)
}

pub(super) fn add_to_linker(linker: &mut Linker<Guest>) -> wasmtime::Result<()> {
    sys!(linker, "clock_res_get", |cx, mem, id: u32, out: u32| {
        match id {
            CLOCK_REALTIME | CLOCK_MONOTONIC | CLOCK_PROCESS_CPUTIME | CLOCK_THREAD_CPUTIME => {
                put_u64(mem, out, 1_000)?;
                Ok(())
            }
            _ => Err(Errno::INVAL.into()),
        }
    });
    sys!(
        linker,
        "clock_time_get",
        |cx, mem, id: u32, _precision: i64, out: u32| {
            let t = match id {
                CLOCK_REALTIME => nanos(Ok(SystemTime::now())),
                // There is no CPU-time clock: the process clocks count wall time
                // from the first start in this process, like the monotonic one.
                CLOCK_MONOTONIC | CLOCK_PROCESS_CPUTIME | CLOCK_THREAD_CPUTIME => {
                    monotonic_base().elapsed().as_nanos() as u64
                }
                _ => return Err(Errno::INVAL.into()),
            };
            put_u64(mem, out, t)?;
            Ok(())
        }
    );
    sys!(
        linker,
        "poll_oneoff",
        |cx, mem, inp: u32, out: u32, n: u32, nevents: u32| {
            let count = poll_oneoff(cx, mem, inp, out, n)?;
            put_u32(mem, nevents, count)?;
            Ok(())
        }
    );
    sys!(linker, "random_get", |cx, mem, buf: u32, len: u32| {
        let out = slice_mut(mem, buf, len)?;
        getrandom::fill(out).map_err(|_| Errno::IO)?;
        Ok(())
    });
    Ok(())
}
