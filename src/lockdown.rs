//! The second wall: once a run is set up, the kernel confines pynbox's own
//! process to what the run needs, so that a guest that escaped Wasmtime
//! (a miscompilation, a bug in our WASI layer) lands in a process that can
//! read no other file, start no program and open no socket.
//!
//! - **Landlock** (Linux 5.13+): file-system access only below the mount
//!   directories (read-only or read-write as mounted), the compiled-code
//!   cache and the files named for the run; TCP (and, where the kernel has
//!   them, UDP) bind and connect refused; no signals to processes outside.
//!   Descriptors already open (stdio, `-h`, `-r`, `-w`) keep working.
//! - **seccomp-bpf** on every thread (TSYNC): an allow-list of the system
//!   calls a run makes (found by tracing the test suite), with arguments
//!   checked where a call could do more than a run needs: `clone` only for
//!   threads, `mmap`/`mprotect` never executable, `ioctl` only to ask
//!   whether a descriptor is a terminal, `prctl` only to name a thread,
//!   `tgkill` only within the process. Anything else answers `EPERM`
//!   (`clone3` answers `ENOSYS`, so that the C library falls back to
//!   `clone`, whose flags can be checked).
//!
//! The CLI applies both by default; the library offers them as an explicit
//! step ([`LockDown::apply`]), since they restrict the whole process.

use std::fmt;
use std::path::PathBuf;

use crate::mounts::MountSpec;
use crate::runtime::Error;

/// What the process will still need once locked down.
#[derive(Clone, Debug, Default)]
pub struct LockDown {
    read: Vec<PathBuf>,
    write: Vec<PathBuf>,
}

/// What [`LockDown::apply`] could enforce on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The Landlock ABI enforced, if any.
    pub landlock_abi: Option<i32>,
    /// Whether the Landlock rules hold for every thread of the process
    /// (kernel ABI 8+), not only the calling thread and those it starts.
    pub landlock_all_threads: bool,
    /// Whether network rules were enforced too (ABI 4+).
    pub landlock_network: bool,
    /// The number of system calls the seccomp filter allows, if applied.
    pub seccomp_allowed: Option<usize>,
}

impl Report {
    /// Whether both walls stand.
    pub fn complete(&self) -> bool {
        self.landlock_abi.is_some() && self.seccomp_allowed.is_some()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.landlock_abi {
            Some(abi) => write!(
                f,
                "Landlock ABI {abi} ({}{})",
                if self.landlock_all_threads {
                    "all threads"
                } else {
                    "this thread and those it starts"
                },
                if self.landlock_network {
                    ", TCP bind and connect refused"
                } else {
                    ""
                }
            )?,
            None => f.write_str("no Landlock")?,
        }
        match self.seccomp_allowed {
            Some(n) => write!(f, "; seccomp: {n} system calls allowed"),
            None => f.write_str("; no seccomp"),
        }
    }
}

impl LockDown {
    pub fn new() -> LockDown {
        LockDown::default()
    }

    /// Keeps a mount's host directory reachable, read-only or read-write as
    /// it is mounted.
    pub fn mount(mut self, m: &MountSpec) -> LockDown {
        if m.writable {
            self.write.push(m.host.clone());
        } else {
            self.read.push(m.host.clone());
        }
        self
    }

    /// Keeps a file or a directory (and what lies below it) readable.
    pub fn read(mut self, path: impl Into<PathBuf>) -> LockDown {
        self.read.push(path.into());
        self
    }

    /// Keeps a directory (and what lies below it) readable and writable,
    /// e.g. the compiled-code cache.
    pub fn write(mut self, path: impl Into<PathBuf>) -> LockDown {
        self.write.push(path.into());
        self
    }

    /// Applies Landlock, then seccomp, to the whole process, for the rest
    /// of its life. What the kernel cannot enforce is left out and said in
    /// the report; an error means something that should have worked did
    /// not (a path to keep that cannot be opened, a filter the kernel
    /// refused).
    ///
    /// Call it once the run is set up: after the program is loaded (no
    /// code can be compiled afterwards, as no memory can be made
    /// executable) and, where the kernel cannot restrict every thread
    /// (Landlock ABI below 8), before other threads are started, e.g.
    /// before [`crate::Runtime::new`].
    pub fn apply(&self) -> Result<Report, Error> {
        let mut report = imp::landlock(&self.read, &self.write)?;
        report.seccomp_allowed = imp::seccomp()?;
        Ok(report)
    }

    /// Landlock only (the first half of [`LockDown::apply`]), for a caller
    /// that must restrict file access before it starts threads and the
    /// system calls after it has loaded its program.
    pub fn apply_landlock(&self) -> Result<Report, Error> {
        imp::landlock(&self.read, &self.write)
    }

    /// seccomp only (the second half of [`LockDown::apply`]); the number of
    /// allowed system calls, or None where the kernel has no seccomp.
    pub fn apply_seccomp() -> Result<Option<usize>, Error> {
        imp::seccomp()
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use landlock::{
        path_beneath_rules, Access, AccessFs, AccessNet, LandlockStatus, RestrictSelfAttr, Ruleset,
        RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
    };
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };

    use super::Report;
    use crate::runtime::Error;

    /// The newest ABI this code asks for; older kernels give what they have.
    const WANT: ABI = ABI::V10;

    pub fn landlock(read: &[PathBuf], write: &[PathBuf]) -> Result<Report, Error> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Error::internal(format!("cannot apply Landlock ({what}): {e}"))
        };
        // A path that does not exist cannot be kept (Landlock rules name
        // what exists); nothing can create it afterwards either, so the
        // run's own error about it (a missing program, say) stays the one
        // the user sees.
        let read: Vec<&PathBuf> = read.iter().filter(|p| p.exists()).collect();
        let write: Vec<&PathBuf> = write.iter().filter(|p| p.exists()).collect();
        let status = Ruleset::default()
            .handle_access(AccessFs::from_all(WANT))
            .and_then(|r| r.handle_access(AccessNet::from_all(WANT)))
            .and_then(|r| r.scope(Scope::from_all(WANT)))
            .and_then(|r| r.create())
            .and_then(|r| r.add_rules(path_beneath_rules(read, AccessFs::from_read(WANT))))
            .and_then(|r| r.add_rules(path_beneath_rules(write, AccessFs::from_all(WANT))))
            .and_then(|r| r.all_threads(true))
            .and_then(|r| r.restrict_self())
            .map_err(|e| fail("rules", &e))?;
        let abi = match status.landlock {
            LandlockStatus::Available { effective_abi, .. } => Some(effective_abi as i32),
            _ => None,
        };
        let enforced = !matches!(status.ruleset, RulesetStatus::NotEnforced);
        let abi = abi.filter(|_| enforced);
        Ok(Report {
            landlock_abi: abi,
            landlock_all_threads: enforced && status.all_threads,
            // Network rules came with ABI 4.
            landlock_network: abi.is_some_and(|a| a >= 4),
            seccomp_allowed: None,
        })
    }

    /// System calls a run makes once it is set up, found with `strace -f
    /// -c` over the test suite (runs of CPython and of C guests: files,
    /// directories, pipes, sleeps, traps, stack overflows, limits).
    const ALLOWED: &[&str] = &[
        // descriptors and files (the WASI layer, below the mounts)
        "read",
        "write",
        "readv",
        "writev",
        "pread64",
        "pwrite64",
        "preadv",
        "pwritev",
        "lseek",
        "close",
        "openat",
        "openat2",
        "fstat",
        "newfstatat",
        "statx",
        "getdents64",
        "mkdirat",
        "unlinkat",
        "renameat",
        "renameat2",
        "linkat",
        "symlinkat",
        "readlinkat",
        "utimensat",
        "ftruncate",
        "fallocate",
        "fsync",
        "fdatasync",
        "fcntl",
        "poll",
        "ppoll",
        "dup",
        "fadvise64",
        // memory
        "mmap",
        "munmap",
        "mremap",
        "madvise",
        "brk",
        "mlock",
        "munlock",
        "memfd_create",
        // threads, signals (Wasmtime's trap handling), time, randomness
        "futex",
        "set_robust_list",
        "rseq",
        "sched_getaffinity",
        "sched_yield",
        "gettid",
        "getpid",
        "exit",
        "exit_group",
        "sigaltstack",
        "rt_sigaction",
        "rt_sigprocmask",
        "rt_sigreturn",
        "clock_gettime",
        "clock_getres",
        "clock_nanosleep",
        "nanosleep",
        "getrandom",
        "getrlimit",
        "prlimit64",
        "membarrier",
    ];

    fn nr(name: &str) -> i64 {
        match name {
            "read" => libc::SYS_read,
            "write" => libc::SYS_write,
            "readv" => libc::SYS_readv,
            "writev" => libc::SYS_writev,
            "pread64" => libc::SYS_pread64,
            "pwrite64" => libc::SYS_pwrite64,
            "preadv" => libc::SYS_preadv,
            "pwritev" => libc::SYS_pwritev,
            "lseek" => libc::SYS_lseek,
            "close" => libc::SYS_close,
            "openat" => libc::SYS_openat,
            "openat2" => libc::SYS_openat2,
            "fstat" => libc::SYS_fstat,
            "newfstatat" => libc::SYS_newfstatat,
            "statx" => libc::SYS_statx,
            "getdents64" => libc::SYS_getdents64,
            "mkdirat" => libc::SYS_mkdirat,
            "unlinkat" => libc::SYS_unlinkat,
            "renameat" => libc::SYS_renameat,
            "renameat2" => libc::SYS_renameat2,
            "linkat" => libc::SYS_linkat,
            "symlinkat" => libc::SYS_symlinkat,
            "readlinkat" => libc::SYS_readlinkat,
            "utimensat" => libc::SYS_utimensat,
            "ftruncate" => libc::SYS_ftruncate,
            "fallocate" => libc::SYS_fallocate,
            "fsync" => libc::SYS_fsync,
            "fdatasync" => libc::SYS_fdatasync,
            "fcntl" => libc::SYS_fcntl,
            "poll" => libc::SYS_poll,
            "ppoll" => libc::SYS_ppoll,
            "dup" => libc::SYS_dup,
            "fadvise64" => libc::SYS_fadvise64,
            "mmap" => libc::SYS_mmap,
            "munmap" => libc::SYS_munmap,
            "mremap" => libc::SYS_mremap,
            "madvise" => libc::SYS_madvise,
            "brk" => libc::SYS_brk,
            "mlock" => libc::SYS_mlock,
            "munlock" => libc::SYS_munlock,
            "memfd_create" => libc::SYS_memfd_create,
            "futex" => libc::SYS_futex,
            "set_robust_list" => libc::SYS_set_robust_list,
            "rseq" => libc::SYS_rseq,
            "sched_getaffinity" => libc::SYS_sched_getaffinity,
            "sched_yield" => libc::SYS_sched_yield,
            "gettid" => libc::SYS_gettid,
            "getpid" => libc::SYS_getpid,
            "exit" => libc::SYS_exit,
            "exit_group" => libc::SYS_exit_group,
            "sigaltstack" => libc::SYS_sigaltstack,
            "rt_sigaction" => libc::SYS_rt_sigaction,
            "rt_sigprocmask" => libc::SYS_rt_sigprocmask,
            "rt_sigreturn" => libc::SYS_rt_sigreturn,
            "clock_gettime" => libc::SYS_clock_gettime,
            "clock_getres" => libc::SYS_clock_getres,
            "clock_nanosleep" => libc::SYS_clock_nanosleep,
            "nanosleep" => libc::SYS_nanosleep,
            "getrandom" => libc::SYS_getrandom,
            "getrlimit" => libc::SYS_getrlimit,
            "prlimit64" => libc::SYS_prlimit64,
            "membarrier" => libc::SYS_membarrier,
            other => unreachable!("no number for {other}"),
        }
    }

    fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
        SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).expect("a valid condition")
    }

    fn rule(conds: Vec<SeccompCondition>) -> SeccompRule {
        SeccompRule::new(conds).expect("a valid rule")
    }

    fn arch() -> Option<TargetArch> {
        if cfg!(target_arch = "x86_64") {
            Some(TargetArch::x86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(TargetArch::aarch64)
        } else if cfg!(target_arch = "riscv64") {
            Some(TargetArch::riscv64)
        } else {
            None
        }
    }

    /// The allow-list filter: every call in [`ALLOWED`], and a few more
    /// with their arguments checked.
    fn allow_list(arch: TargetArch) -> Result<(SeccompFilter, usize), seccompiler::BackendError> {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            ALLOWED.iter().map(|n| (nr(n), vec![])).collect();
        let prot_exec = libc::PROT_EXEC as u64;
        // No new executable memory: code is mapped when the program loads.
        rules.insert(
            libc::SYS_mmap,
            vec![rule(vec![cond(2, SeccompCmpOp::MaskedEq(prot_exec), 0)])],
        );
        rules.insert(
            libc::SYS_mprotect,
            vec![rule(vec![cond(2, SeccompCmpOp::MaskedEq(prot_exec), 0)])],
        );
        // Threads only: a new process could outlive every check here.
        let thread = libc::CLONE_THREAD as u64;
        rules.insert(
            libc::SYS_clone,
            vec![rule(vec![cond(0, SeccompCmpOp::MaskedEq(thread), thread)])],
        );
        // isatty() and nothing else of ioctl.
        rules.insert(
            libc::SYS_ioctl,
            vec![rule(vec![cond(1, SeccompCmpOp::Eq, libc::TCGETS)])],
        );
        // Naming a thread; and no_new_privs and one more filter, which only
        // take rights away (the second filter below is installed that way).
        rules.insert(
            libc::SYS_prctl,
            vec![
                rule(vec![cond(0, SeccompCmpOp::Eq, libc::PR_SET_NAME as u64)]),
                rule(vec![cond(
                    0,
                    SeccompCmpOp::Eq,
                    libc::PR_SET_NO_NEW_PRIVS as u64,
                )]),
            ],
        );
        rules.insert(
            libc::SYS_seccomp,
            vec![rule(vec![cond(
                0,
                SeccompCmpOp::Eq,
                libc::SECCOMP_SET_MODE_FILTER as u64,
            )])],
        );
        // A signal to a thread of this process (abort, Wasmtime), no other.
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u64;
        rules.insert(
            libc::SYS_tgkill,
            vec![rule(vec![cond(0, SeccompCmpOp::Eq, pid)])],
        );
        let n = rules.len();
        let f = SeccompFilter::new(
            rules,
            SeccompAction::Errno(libc::EPERM as u32),
            SeccompAction::Allow,
            arch,
        )?;
        Ok((f, n))
    }

    pub fn seccomp() -> Result<Option<usize>, Error> {
        let fail = |e: &dyn std::fmt::Display| {
            Error::internal(format!("cannot apply the seccomp filter: {e}"))
        };
        let Some(arch) = arch() else {
            return Ok(None);
        };
        let (allow, n) = allow_list(arch).map_err(|e| fail(&e))?;
        // clone3 passes its flags in memory, where a filter cannot look:
        // ENOSYS makes the C library fall back to clone, checked above.
        // (Installed second, so that its errno wins over the first's.)
        let clone3 = SeccompFilter::new(
            [(libc::SYS_clone3, vec![])].into_iter().collect(),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )
        .map_err(|e| fail(&e))?;
        for f in [allow, clone3] {
            let prog: seccompiler::BpfProgram = f.try_into().map_err(|e| fail(&e))?;
            match seccompiler::apply_filter_all_threads(&prog) {
                Ok(()) => {}
                // No seccomp in this kernel: say so, do not fail.
                Err(seccompiler::Error::Seccomp(e))
                    if e.raw_os_error() == Some(libc::EINVAL) && !seccomp_available() =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(fail(&e)),
            }
        }
        Ok(Some(n))
    }

    fn seccomp_available() -> bool {
        // SAFETY: prctl(PR_GET_SECCOMP) reads the calling thread's mode.
        unsafe { libc::prctl(libc::PR_GET_SECCOMP) >= 0 }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::path::PathBuf;

    use super::Report;
    use crate::runtime::Error;

    pub fn landlock(_read: &[PathBuf], _write: &[PathBuf]) -> Result<Report, Error> {
        Ok(Report {
            landlock_abi: None,
            landlock_all_threads: false,
            landlock_network: false,
            seccomp_allowed: None,
        })
    }

    pub fn seccomp() -> Result<Option<usize>, Error> {
        Ok(None)
    }
}
