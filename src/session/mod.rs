//! Sessions: one interpreter kept alive across calls, with its globals,
//! that runs snippet after snippet (`exec`, `eval`), lets guest code call
//! functions of the host, and can be saved to bytes and restored, in this
//! process or another.
//!
//! The interpreter is entered once per call (the `pynbox.session_call`
//! export of `Modules/pynbox_session.c`, a CPython patch) and returns
//! before the call ends, so between calls nothing of the guest is on any
//! stack: its linear memory is its whole state (the one mutable global,
//! the stack pointer, is back at its start value), which [`saved`] writes
//! as the pages that differ from the interpreter's own initial memory.
//!
//! Messages between host and guest go through two imports, `pynbox.take`
//! and `pynbox.send` ([`channel`]), in the interchange form of [`value`];
//! the guest's half, `driver.py`, is pynbox's own code, handed to the
//! interpreter when the session starts.

mod channel;
mod pool;
mod saved;
pub mod value;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{Store, TypedFunc};

pub(crate) use channel::add_to_linker;
#[doc(hidden)]
pub use channel::Channel;
pub use pool::{SessionPool, MAX_POOL_SIZE};
pub use value::Value;

use crate::native::{Installed, NativeModules};
use crate::runtime::{
    new_store, on_guest_thread, status_of, Error, Guest, Input, Limits, Output, Program, Runtime,
    Sandbox, Status,
};
use crate::MountSpec;

const START: &str = "pynbox.session_start";
const CALL: &str = "pynbox.session_call";
const DRIVER: &str = include_str!("driver.py");

/// The python a session runs: the interpreter, and the install's
/// pre-initialised snapshot of it when there is one (sessions then start
/// in about a millisecond instead of tens). Saved sessions name the
/// interpreter and are restored into it, so that they move between
/// installs and machines: a snapshot is made per install and differs.
#[derive(Clone)]
pub struct Python {
    interpreter: Program,
    snapshot: Option<Program>,
    arg0: String,
    native: Arc<NativeModules>,
}

impl Python {
    /// `interpreter` runs as `arg0` (its guest path, e.g.
    /// `/python/bin/python.wasm`); `snapshot`, if given, must be the
    /// pre-initialised form of the same interpreter.
    pub fn new(interpreter: Program, snapshot: Option<Program>, arg0: &str) -> Python {
        Python {
            interpreter,
            snapshot,
            arg0: arg0.to_string(),
            native: NativeModules::none(),
        }
    }

    /// The python of the install at `dest` (`pynbox install DEST python`),
    /// with its snapshot when it was made from that very interpreter.
    pub fn from_install(runtime: &Runtime, dest: &Path) -> Result<Python, Error> {
        let installed = crate::install::Dest::open(dest, false)
            .map_err(|e| Error::input(format!("{}: {e}", dest.display())))?;
        let receipts = installed
            .receipts()
            .map_err(|e| Error::input(format!("{}: {e}", dest.display())))?;
        if !receipts.iter().any(|r| r.name == "python") {
            return Err(Error::input(format!(
                "{} has no python: install it with `pynbox install {} python`",
                dest.display(),
                dest.display()
            )));
        }
        let arg0 = crate::install::PYTHON.to_string();
        let path = dest.join("root").join(arg0.trim_start_matches('/'));
        let file = std::fs::File::open(&path)
            .map_err(|e| Error::input(format!("cannot open {}: {e}", path.display())))?;
        let preinit = dest.join(crate::preinit::INSTALL_PATH);
        let snapshot = if crate::preinit::made_from(&preinit, &file) {
            runtime.load_file(&preinit).ok()
        } else {
            None
        };
        let interpreter = runtime.load_open_file(&arg0, file)?;
        let native = NativeModules::new(runtime, Installed::read(dest)?);
        Ok(Python::new(interpreter, snapshot, &arg0).with_native_modules(native))
    }

    /// One run of this python with these arguments and environment: from
    /// the snapshot when they allow resuming it
    /// ([`crate::preinit::resumable`]), else the interpreter; started as
    /// the interpreter's guest path, able to load the install's native
    /// modules. Add mounts (the install's root at `/`), input, output and
    /// limits, then run it. The CLI, the Python package and the server
    /// all start one-shot runs this way.
    pub fn sandbox(&self, args: &[String], env: &[(String, String)]) -> Sandbox {
        let program = match &self.snapshot {
            Some(s) if crate::preinit::resumable(args, env) => s,
            _ => &self.interpreter,
        };
        let mut sandbox = Sandbox::new(program)
            .arg0(&self.arg0)
            .args(args.iter().cloned())
            .native_modules(self.native.clone());
        for (k, v) in env {
            sandbox = sandbox.env(k, v);
        }
        sandbox
    }

    /// Lets sessions of this python load these native modules (see
    /// [`crate::native`]); by default none.
    pub fn with_native_modules(mut self, modules: Arc<NativeModules>) -> Python {
        self.native = modules;
        self
    }

    /// The interpreter's guest path.
    pub fn arg0(&self) -> &str {
        &self.arg0
    }
}

/// What a session sees of the host, given at start and again at restore
/// (they are the host's, not the guest's).
#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    pub mounts: Vec<MountSpec>,
    /// The guest's environment (read at start; a restored session keeps
    /// the one it was saved with).
    pub env: Vec<(String, String)>,
    /// `timeout` applies to each call, `memory` and `max_output` to the
    /// session as a whole.
    pub limits: Limits,
    pub allow_symlinks: bool,
}

/// What a successful call returned.
#[derive(Debug)]
pub struct Call {
    /// `eval`'s value; `None` for `exec`.
    pub value: Value,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A call that failed, with what the guest wrote before it did.
#[derive(Debug)]
pub struct CallError {
    pub kind: CallErrorKind,
    /// One line: the guest exception's message, or what ended the session.
    pub message: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Why a call failed, and whether the session lives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallErrorKind {
    /// The guest's code raised; the session lives on.
    Guest {
        type_name: String,
        traceback: String,
    },
    /// The call passed its time limit. The guest was stopped wherever it
    /// was, so the session has ended.
    TimeLimit,
    /// The guest was refused memory beyond the session's limit. If Python
    /// raised `MemoryError` the session lives on ([`Session::is_alive`]);
    /// if the interpreter itself failed, it has ended.
    MemoryLimit,
    /// The session's output passed its limit; the session has ended.
    OutputLimit,
    /// The guest exited (`os._exit`) or crashed; the session has ended.
    Ended,
    /// An earlier call ended the session.
    Dead,
    /// The request itself was refused (too large); the session lives on.
    Input,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            CallErrorKind::Guest { type_name, .. } => write!(f, "{type_name}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for CallError {}

/// A live interpreter. See the module's documentation.
pub struct Session {
    store: Store<Guest>,
    call: TypedFunc<(), i32>,
    memory: wasmtime::Memory,
    python: Python,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    timeout: Option<Duration>,
    /// Why the session ended, once it has.
    ended: Option<String>,
}

/// A host function guest code may call (see [`Session::expose`]).
pub type HostFn = Box<dyn FnMut(Vec<Value>) -> Result<Value, String> + Send>;

impl Session {
    /// Starts python with `options`: from the snapshot when there is one.
    /// Start-up counts against the time limit like a call.
    pub fn start(python: &Python, options: SessionOptions) -> Result<Session, Error> {
        let program = python.snapshot.as_ref().unwrap_or(&python.interpreter);
        let (mut session, instance) = Session::instantiate(python, program, &options)?;
        let start = instance
            .get_typed_func::<(), i32>(&mut session.store, START)
            .map_err(|_| no_sessions(program))?;
        session.channel().inbox = Some(DRIVER.as_bytes().to_vec());
        session.arm();
        let store = &mut session.store;
        let result = on_guest_thread(|| Ok(start.call(&mut *store, ())))?;
        let failed = |why: String| {
            let err = String::from_utf8_lossy(&session.stderr.lock().unwrap()).into_owned();
            Error::input(format!(
                "the session could not start: {why}{}",
                if err.trim().is_empty() {
                    String::new()
                } else {
                    format!("\n{}", err.trim_end())
                }
            ))
        };
        match result {
            Ok(0) => {}
            Ok(_) => return Err(failed("the interpreter refused".into())),
            Err(e) => {
                let status = status_of(&e, session.store.data().limiter.hit);
                return Err(failed(describe(&status, &options.limits)));
            }
        }
        session.stdout.lock().unwrap().clear();
        session.stderr.lock().unwrap().clear();
        Ok(session)
    }

    /// A fresh instance of `program` in a store for a session, before
    /// anything of it runs.
    fn instantiate(
        python: &Python,
        program: &Program,
        options: &SessionOptions,
    ) -> Result<(Session, wasmtime::Instance), Error> {
        let module = program.pre.module();
        if module.get_export(START).is_none() || module.get_export(CALL).is_none() {
            return Err(no_sessions(program));
        }
        let mut sandbox = Sandbox::new(program)
            .native_modules(python.native.clone())
            .arg0(&python.arg0)
            .stdin(Input::Null)
            .stdout(Output::Capture)
            .stderr(Output::Capture)
            .limits(options.limits)
            .allow_symlinks(options.allow_symlinks);
        for m in &options.mounts {
            sandbox = sandbox.mount(m.clone());
        }
        for (k, v) in &options.env {
            sandbox = sandbox.env(k, v);
        }
        if program.interruption != crate::runtime::Interruption::Epochs {
            return Err(Error::input(
                "sessions need a runtime with epoch interruption (Runtime::new): a time limit must not end the process",
            ));
        }
        let mut setup = sandbox.setup()?;
        setup.guest.session = Some(Box::default());
        let engine = module.engine().clone();
        let mut store = new_store(&engine, setup.guest, None, true);
        let instance = program.pre.instantiate(&mut store).map_err(|e| {
            if store.data().limiter.hit {
                Error::input("the session needs more memory than its limit to start")
            } else {
                Error::internal(format!("cannot instantiate the interpreter: {e:#}"))
            }
        })?;
        let call = instance
            .get_typed_func::<(), i32>(&mut store, CALL)
            .map_err(|_| no_sessions(program))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| Error::input("the interpreter exports no memory"))?;
        let session = Session {
            store,
            call,
            memory,
            python: python.clone(),
            stdout: setup.stdout,
            stderr: setup.stderr,
            timeout: options.limits.timeout,
            ended: None,
        };
        Ok((session, instance))
    }

    fn channel(&mut self) -> &mut Channel {
        self.store
            .data_mut()
            .session
            .as_mut()
            .expect("a session's guest has a channel")
    }

    /// Starts the clock of one call and forgets the last one's memory
    /// refusal.
    fn arm(&mut self) {
        let deadline = self.timeout.and_then(|t| Instant::now().checked_add(t));
        let guest = self.store.data_mut();
        guest.wasi.deadline = deadline;
        guest.limiter.hit = false;
    }

    /// Runs `code` as a module's body in the session's `__main__`.
    pub fn exec(&mut self, code: &str) -> Result<Call, CallError> {
        self.request(b'x', code)
    }

    /// Runs `pass` outside `__main__`, uncounted, so that a fresh
    /// interpreter's first compile and exec (milliseconds) are paid before
    /// a pool hands the session out.
    pub(crate) fn warm_up(&mut self) -> Result<(), CallError> {
        self.request(b'w', "pass").map(|_| ())
    }

    /// Evaluates the expression `expr` in `__main__` and returns its value
    /// ([`Value::Repr`] for an object outside the interchange form).
    pub fn eval(&mut self, expr: &str) -> Result<Call, CallError> {
        self.request(b'e', expr)
    }

    /// Lets guest code call `f` as `pynbox_host.call(name, *args)` or
    /// `pynbox_host.NAME(*args)`. An `Err(message)` (a failure, or a
    /// refusal such as a quota) raises `pynbox_host.HostError(message)` in
    /// the guest. The time `f` takes does not count against the call's
    /// time limit. Registering a name again replaces the function.
    pub fn expose<F>(&mut self, name: &str, f: F)
    where
        F: FnMut(Vec<Value>) -> Result<Value, String> + Send + 'static,
    {
        self.channel()
            .functions
            .insert(name.to_string(), Box::new(f));
    }

    /// Whether the session can still take calls.
    pub fn is_alive(&self) -> bool {
        self.ended.is_none()
    }

    fn take_output(&self) -> (Vec<u8>, Vec<u8>) {
        let take = |b: &Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().unwrap());
        (take(&self.stdout), take(&self.stderr))
    }

    fn request(&mut self, op: u8, code: &str) -> Result<Call, CallError> {
        if let Some(why) = &self.ended {
            return Err(CallError {
                kind: CallErrorKind::Dead,
                message: format!("the session has ended ({why}): start a new one"),
                stdout: Vec::new(),
                stderr: Vec::new(),
            });
        }
        if code.len() > channel::MAX_MESSAGE - 1 {
            return Err(CallError {
                kind: CallErrorKind::Input,
                message: format!(
                    "the code is {} bytes, more than a session call takes ({} bytes)",
                    code.len(),
                    channel::MAX_MESSAGE - 1
                ),
                stdout: Vec::new(),
                stderr: Vec::new(),
            });
        }
        let mut msg = Vec::with_capacity(code.len() + 1);
        msg.push(op);
        msg.extend_from_slice(code.as_bytes());
        self.channel().inbox = Some(msg);
        self.channel().answer = None;
        self.arm();
        let call = self.call.clone();
        let store = &mut self.store;
        let result = on_guest_thread(|| Ok(call.call(&mut *store, ())));
        let hit = self.store.data().limiter.hit;
        let answer = self.channel().answer.take();
        self.channel().inbox = None;
        let (stdout, stderr) = self.take_output();
        let fail = |kind, message: String| CallError {
            kind,
            message,
            stdout: stdout.clone(),
            stderr: stderr.clone(),
        };
        let ended = match result {
            Err(e) => format!("pynbox could not run the call: {e}"),
            Ok(Err(trap)) => {
                let status = status_of(&trap, hit);
                let why = describe(&status, &self.store_limits());
                self.ended = Some(why.clone());
                let kind = match status {
                    Status::TimeLimit => CallErrorKind::TimeLimit,
                    Status::MemoryLimit => CallErrorKind::MemoryLimit,
                    Status::OutputLimit => CallErrorKind::OutputLimit,
                    _ => CallErrorKind::Ended,
                };
                return Err(fail(kind, why));
            }
            Ok(Ok(0)) => match answer.as_deref().map(parse_answer) {
                Some(Ok(Answer::Value(value))) => {
                    return Ok(Call {
                        value,
                        stdout,
                        stderr,
                    })
                }
                Some(Ok(Answer::Raised {
                    type_name,
                    message,
                    traceback,
                })) => {
                    let kind = if hit && type_name == "MemoryError" {
                        CallErrorKind::MemoryLimit
                    } else {
                        CallErrorKind::Guest {
                            type_name,
                            traceback,
                        }
                    };
                    return Err(fail(kind, message));
                }
                Some(Err(why)) => format!("the guest's answer is malformed: {why}"),
                None => "the guest gave no answer".to_string(),
            },
            Ok(Ok(_)) => "the session's driver failed".to_string(),
        };
        // The guest broke the protocol: it can no longer be trusted to
        // answer the next call.
        self.ended = Some(ended.clone());
        Err(fail(CallErrorKind::Ended, ended))
    }

    fn store_limits(&self) -> Limits {
        let g = self.store.data();
        Limits {
            memory: Some(g.limiter.max() as u64),
            timeout: self.timeout,
            max_output: g.wasi.max_output,
            open_files: 0,
        }
    }

    /// The session as bytes: its memory (the pages that differ from the
    /// interpreter's initial memory, compressed) and which interpreter
    /// build it runs. Refused while the guest holds files or descriptors
    /// beyond its standard ones open: they are the host's, and are not
    /// saved (close them first).
    pub fn save(&mut self) -> Result<Vec<u8>, Error> {
        if let Some(why) = &self.ended {
            return Err(Error::input(format!(
                "the session has ended ({why}): there is nothing to save"
            )));
        }
        // A saved session is its memory; a loaded module is also code and
        // table slots, which a restore would not have.
        let loaded = self.store.data().native.loaded_count();
        if loaded > 0 {
            return Err(Error::input(format!(
                "the session has loaded {loaded} native module(s) (extension modules such as lxml.etree): such a session cannot be saved yet"
            )));
        }
        saved::save(self)
    }

    /// Brings back a session saved by [`Session::save`], into `python`'s
    /// interpreter (it must be the very build the session was saved from),
    /// with `options`' mounts and limits. The bytes are checked and
    /// confined like any guest: a hostile one is a hostile guest.
    pub fn restore(
        python: &Python,
        data: &[u8],
        options: SessionOptions,
    ) -> Result<Session, Error> {
        saved::restore(python, data, options)
    }
}

impl Session {
    /// The guest's linear memory, in bytes.
    pub fn memory_size(&self) -> usize {
        self.memory.data_size(&self.store)
    }
}

/// For src/fuzzing.rs: the answer parser on arbitrary bytes.
#[doc(hidden)]
pub fn fuzz_answer(data: &[u8]) {
    let _ = parse_answer(data);
}

fn no_sessions(program: &Program) -> Error {
    Error::input(format!(
        "'{}' has no session support (the {START} and {CALL} exports): rebuild the python package with this pynbox (`pynbox build python`)",
        program.name()
    ))
}

/// One line for how a session ended.
fn describe(status: &Status, limits: &Limits) -> String {
    match status {
        Status::TimeLimit => format!(
            "time limit of {} s reached",
            limits.timeout.map_or(0.0, |t| t.as_secs_f64())
        ),
        Status::MemoryLimit => format!(
            "memory limit of {} bytes reached",
            limits.memory.unwrap_or(crate::runtime::MAX_MEMORY)
        ),
        Status::OutputLimit => format!(
            "output limit of {} bytes reached",
            limits.max_output.unwrap_or(u64::MAX)
        ),
        Status::Exited(n) => format!("the guest exited with status {n}"),
        Status::Crashed(why) => format!("the guest crashed: {why}"),
    }
}

enum Answer {
    Value(Value),
    Raised {
        type_name: String,
        message: String,
        traceback: String,
    },
}

/// The driver's answer: `o` and a value, or `e` and three strings.
fn parse_answer(buf: &[u8]) -> Result<Answer, String> {
    let mut r = value::Reader::new(buf);
    let answer = match r.byte()? {
        b'o' => Answer::Value(r.value()?),
        b'e' => {
            let mut text = || match r.value()? {
                Value::Str(s) => Ok(s),
                _ => Err("an exception's text is not a string".to_string()),
            };
            Answer::Raised {
                type_name: text()?,
                message: text()?,
                traceback: text()?,
            }
        }
        t => return Err(format!("unknown answer tag {t:#04x}")),
    };
    if !r.is_empty() {
        return Err("bytes after the answer".into());
    }
    Ok(answer)
}
