//! The guest's process: its arguments and environment, its exit, and the
//! services it is refused (signals, sockets).

use wasmtime::{Caller, Linker};

use super::abi::*;
use super::memory::*;
use super::{finish, memory_of, Stop, Sys};
use crate::runtime::Guest;

pub(super) fn add_to_linker(linker: &mut Linker<Guest>) -> wasmtime::Result<()> {
    sys!(linker, "args_sizes_get", |cx, mem, argc: u32, size: u32| {
        put_u32(mem, argc, cx.args.len() as u32)?;
        let total: usize = cx.args.iter().map(|a| a.len() + 1).sum();
        put_u32(mem, size, total as u32)?;
        Ok(())
    });
    sys!(linker, "args_get", |cx, mem, argv: u32, buf: u32| {
        Ok(write_strings(mem, &cx.args, argv, buf)?)
    });
    sys!(
        linker,
        "environ_sizes_get",
        |cx, mem, count: u32, size: u32| {
            put_u32(mem, count, cx.env.len() as u32)?;
            let total: usize = cx.env.iter().map(|a| a.len() + 1).sum();
            put_u32(mem, size, total as u32)?;
            Ok(())
        }
    );
    sys!(linker, "environ_get", |cx, mem, env: u32, buf: u32| {
        Ok(write_strings(mem, &cx.env, env, buf)?)
    });
    linker.func_wrap(
        super::MODULE,
        "proc_exit",
        |_: Caller<'_, Guest>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(Stop::Exit(code)))
        },
    )?;
    sys!(linker, "proc_raise", |cx, mem, _sig: u32| {
        Err(Errno::NOSYS.into())
    });
    sys!(linker, "sched_yield", |cx, mem| {
        std::thread::yield_now();
        Ok(())
    });
    // No sockets are ever granted.
    sys!(
        linker,
        "sock_accept",
        |cx, mem, _fd: u32, _flags: u32, _out: u32| { Err(Errno::NOTSUP.into()) }
    );
    sys!(
        linker,
        "sock_recv",
        |cx, mem, _fd: u32, _a: u32, _b: u32, _c: u32, _d: u32, _e: u32| {
            Err(Errno::NOTSUP.into())
        }
    );
    sys!(
        linker,
        "sock_send",
        |cx, mem, _fd: u32, _a: u32, _b: u32, _c: u32, _d: u32| { Err(Errno::NOTSUP.into()) }
    );
    sys!(linker, "sock_shutdown", |cx, mem, _fd: u32, _how: u32| {
        Err(Errno::NOTSUP.into())
    });
    Ok(())
}
