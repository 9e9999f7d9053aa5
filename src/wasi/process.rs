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

/// A compromised runner, for the tests of the second wall only: with the
/// `test-compromise` feature (which release builds never enable), a guest
/// can make pynbox's own process attempt what a guest that escaped
/// Wasmtime would, and learn the errno (0: it worked). See
/// `tests/lockdown.rs`.
#[cfg(feature = "test-compromise")]
pub(super) mod compromise {
    use std::ffi::CString;

    use wasmtime::{Caller, Linker};

    use crate::runtime::Guest;

    /// What `attempt(op)` tries; the target is taken from the process's
    /// environment (`PYNBOX_TEST_PATH`, `PYNBOX_TEST_PORT`).
    fn attempt(op: i32) -> i32 {
        let path =
            CString::new(std::env::var("PYNBOX_TEST_PATH").unwrap_or_default()).unwrap_or_default();
        let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(-1);
        // SAFETY: each call is made with valid arguments; what it does to
        // the process is the point of the test.
        unsafe {
            let r: i64 = match op {
                // Read a host file.
                1 => libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC).into(),
                // Create or write a host file.
                2 => libc::open(
                    path.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC,
                    0o644,
                )
                .into(),
                // Start a program.
                3 => {
                    let sh = c"/bin/sh";
                    let argv = [
                        sh.as_ptr(),
                        c"-c".as_ptr(),
                        c"exit 99".as_ptr(),
                        std::ptr::null(),
                    ];
                    let envp = [std::ptr::null()];
                    libc::execve(sh.as_ptr(), argv.as_ptr(), envp.as_ptr()).into()
                }
                // Connect to a TCP listener on the loopback.
                4 => {
                    let port: u16 = std::env::var("PYNBOX_TEST_PORT")
                        .ok()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(9);
                    let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                    if s < 0 {
                        -1
                    } else {
                        let addr = libc::sockaddr_in {
                            sin_family: libc::AF_INET as u16,
                            sin_port: port.to_be(),
                            sin_addr: libc::in_addr {
                                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
                            },
                            sin_zero: [0; 8],
                        };
                        libc::connect(
                            s,
                            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
                            std::mem::size_of::<libc::sockaddr_in>() as u32,
                        )
                        .into()
                    }
                }
                // Trace the parent.
                5 => libc::ptrace(libc::PTRACE_ATTACH, libc::getppid(), 0, 0),
                // Start a process.
                6 => libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0),
                // Make memory executable (somewhere to put shellcode).
                7 => {
                    let p = libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    );
                    if p == libc::MAP_FAILED {
                        -1
                    } else {
                        0
                    }
                }
                _ => return -1,
            };
            if r == 0 && op == 6 {
                // The child of a clone that worked: leave at once.
                libc::_exit(0);
            }
            if r < 0 {
                errno()
            } else {
                0
            }
        }
    }

    pub fn add_to_linker(linker: &mut Linker<Guest>) -> wasmtime::Result<()> {
        linker.func_wrap("pynbox_test", "attempt", |_: Caller<'_, Guest>, op: i32| {
            attempt(op)
        })?;
        Ok(())
    }
}
