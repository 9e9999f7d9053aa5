//! `_pynbox`: the native half of the `pynbox` Python package (the other
//! half, `python/pynbox/__init__.py`, gives the functions their keyword
//! arguments and defaults, and adds the awaitable variants).
//!
//! Everything here is a thin layer over the pynbox library: arguments are
//! checked and turned into its types, the guest runs with the GIL released,
//! and every error becomes a Python exception (a panic too: it never
//! crosses into Python as one).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use pynbox::install::{InstallOptions, Repo, Runner};
use pynbox::{Input, Limits, MountSpec, Output, Runtime};

mod prepare;
mod session;

create_exception!(
    pynbox,
    Error,
    PyException,
    "Base class of pynbox's own errors."
);
create_exception!(
    pynbox,
    GuestError,
    Error,
    "The guest raised an exception: .type_name, .message, .traceback, .stdout, .stderr."
);
create_exception!(
    pynbox,
    LimitError,
    Error,
    "A call reached one of its limits (TimeLimit, MemoryLimit or OutputLimit)."
);
create_exception!(
    pynbox,
    TimeLimit,
    LimitError,
    "A call ran past its time limit."
);
create_exception!(
    pynbox,
    MemoryLimit,
    LimitError,
    "The guest needed more memory than its limit."
);
create_exception!(
    pynbox,
    OutputLimit,
    LimitError,
    "The guest wrote more than its output limit."
);
create_exception!(
    pynbox,
    SessionDead,
    Error,
    "The session has ended (closed, exited, or killed by a limit) and can run nothing more."
);

/// A `pynbox::Error` as a Python exception: bad input is the caller's
/// (`ValueError`), anything else pynbox's (`pynbox.Error`).
pub(crate) fn to_py_err(e: pynbox::Error) -> PyErr {
    match e.kind() {
        pynbox::ErrorKind::Input => PyValueError::new_err(e.to_string()),
        pynbox::ErrorKind::Internal => Error::new_err(e.to_string()),
    }
}

/// Runs `f` without the GIL, turning a panic into `pynbox.Error`.
pub(crate) fn detached<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> PyResult<T> + Send,
) -> PyResult<T> {
    py.detach(|| catch_unwind(AssertUnwindSafe(f)))
        .unwrap_or_else(|p| {
            Err(Error::new_err(format!(
                "internal error in pynbox: {}",
                panic_text(&p)
            )))
        })
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".into()
    }
}

/// One `Runtime` per install (each has its own cache of machine code),
/// shared by every run and session of the process.
pub(crate) fn runtime_for(dest: &Path) -> PyResult<Runtime> {
    static RUNTIMES: OnceLock<Mutex<HashMap<PathBuf, Runtime>>> = OnceLock::new();
    let mut map = RUNTIMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(r) = map.get(dest) {
        return Ok(r.clone());
    }
    let r = Runtime::new(Some(dest.join("cache"))).map_err(to_py_err)?;
    map.insert(dest.to_path_buf(), r.clone());
    Ok(r)
}

/// The python of `dest` (interpreter, snapshot, native modules), loaded
/// once and shared by every run until the install changes (an install or
/// removal rewrites a receipt, which changes `DEST/packages`).
pub(crate) fn python_for(runtime: &Runtime, dest: &Path) -> PyResult<Arc<pynbox::session::Python>> {
    type Loaded = (Option<std::time::SystemTime>, Arc<pynbox::session::Python>);
    static PYTHONS: OnceLock<Mutex<HashMap<PathBuf, Loaded>>> = OnceLock::new();
    let changed = std::fs::metadata(dest.join("packages"))
        .and_then(|m| m.modified())
        .ok();
    let mut map = PYTHONS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some((when, p)) = map.get(dest) {
        if *when == changed && changed.is_some() {
            return Ok(p.clone());
        }
    }
    let p = Arc::new(pynbox::session::Python::from_install(runtime, dest).map_err(to_py_err)?);
    map.insert(dest.to_path_buf(), (changed, p.clone()));
    Ok(p)
}

/// Mounts, environment and limits, checked, as the Python layer passes
/// them (it fills in the defaults).
pub(crate) struct Settings {
    pub mounts: Vec<MountSpec>,
    pub env: Vec<(String, String)>,
    pub limits: Limits,
}

pub(crate) fn settings(
    dest: &Path,
    mounts: &Bound<'_, PyAny>,
    env: Option<&Bound<'_, PyAny>>,
    memory: &Bound<'_, PyAny>,
    timeout: &Bound<'_, PyAny>,
    max_output: &Bound<'_, PyAny>,
) -> PyResult<Settings> {
    let mut specs = parse_mounts(mounts)?;
    if !specs.iter().any(|m| m.guest == "/") {
        specs.insert(
            0,
            MountSpec::new(dest.join("root"), "/", false).expect("/ is a mount point"),
        );
    }
    let limits = Limits {
        memory: parse_size_arg("memory", memory)?,
        timeout: parse_timeout(timeout)?,
        max_output: parse_size_arg("max_output", max_output)?,
        ..Limits::default()
    };
    Ok(Settings {
        mounts: specs,
        env: parse_env(env)?,
        limits,
    })
}

impl Settings {
    /// A session's options with these mounts, environment and limits.
    pub(crate) fn session_options(self) -> pynbox::session::SessionOptions {
        pynbox::session::SessionOptions {
            mounts: self.mounts,
            env: self.env,
            limits: self.limits,
            ..Default::default()
        }
    }
}

/// `(host_dir, guest_dir, "ro"|"rw")` tuples or `"HOST:GUEST:ro"` strings;
/// every host directory must exist.
fn parse_mounts(mounts: &Bound<'_, PyAny>) -> PyResult<Vec<MountSpec>> {
    if mounts.is_none() {
        return Ok(Vec::new());
    }
    if mounts.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "mounts: a list of mounts, not one string: mounts=[\"HOST:GUEST:ro\"]",
        ));
    }
    let iter = mounts
        .try_iter()
        .map_err(|_| PyTypeError::new_err("mounts: a list of (host_dir, guest_dir, \"ro\"|\"rw\") tuples or \"HOST:GUEST:ro\" strings"))?;
    let mut out: Vec<MountSpec> = Vec::new();
    for item in iter {
        let item = item?;
        let spec = if let Ok(s) = item.cast::<PyString>() {
            MountSpec::parse(&s.to_cow()?).map_err(|e| PyValueError::new_err(e.0))?
        } else if let Ok(t) = item.cast::<PyTuple>() {
            if t.len() != 3 {
                return Err(PyValueError::new_err(format!(
                    "mount {}: expected (host_dir, guest_dir, \"ro\"|\"rw\")",
                    t.repr()?
                )));
            }
            let host: PathBuf = t.get_item(0)?.extract().map_err(|_| {
                PyTypeError::new_err("a mount's host directory is a str or os.PathLike")
            })?;
            let guest: String = t
                .get_item(1)?
                .extract()
                .map_err(|_| PyTypeError::new_err("a mount's guest directory is a str"))?;
            let mode: String = t
                .get_item(2)?
                .extract()
                .map_err(|_| PyTypeError::new_err("a mount's mode is \"ro\" or \"rw\""))?;
            let writable = match mode.as_str() {
                "ro" => false,
                "rw" => true,
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "mount {}: the mode must be \"ro\" or \"rw\", not {mode:?}",
                        t.repr()?
                    )))
                }
            };
            MountSpec::new(host, &guest, writable).map_err(|e| PyValueError::new_err(e.0))?
        } else {
            return Err(PyTypeError::new_err(format!(
                "a mount is a (host_dir, guest_dir, \"ro\"|\"rw\") tuple or a \"HOST:GUEST:ro\" string, not {}",
                item.get_type().name()?
            )));
        };
        if !spec.host.is_dir() {
            return Err(PyValueError::new_err(format!(
                "mount {}:{}: the host directory {} does not exist or is not a directory",
                spec.host.display(),
                spec.guest,
                spec.host.display()
            )));
        }
        if out.iter().any(|m| m.guest == spec.guest) {
            return Err(PyValueError::new_err(format!(
                "{} is mounted twice: give one mount per guest directory",
                spec.guest
            )));
        }
        out.push(spec);
    }
    Ok(out)
}

fn parse_env(env: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<(String, String)>> {
    let Some(env) = env.filter(|e| !e.is_none()) else {
        return Ok(Vec::new());
    };
    let dict = env
        .cast::<PyDict>()
        .map_err(|_| PyTypeError::new_err("env: a dict of str to str"))?;
    let mut out = Vec::new();
    for (k, v) in dict.iter() {
        let (Ok(k), Ok(v)) = (k.extract::<String>(), v.extract::<String>()) else {
            return Err(PyTypeError::new_err("env: a dict of str to str"));
        };
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(PyValueError::new_err(format!(
                "env: {k:?} is not a valid variable name (non-empty, without '=' or NUL; values without NUL)"
            )));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// A size in bytes (an int), a string such as "256M", or None: no limit.
fn parse_size_arg(name: &str, v: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
    if v.is_none() {
        return Ok(None);
    }
    if v.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{name}: a number of bytes, a size such as \"256M\", or None"
        )));
    }
    if let Ok(n) = v.extract::<i128>() {
        return match u64::try_from(n) {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(PyValueError::new_err(format!(
                "{name}: {n} is not a limit: give a positive number of bytes, or None for no limit"
            ))),
        };
    }
    if let Ok(s) = v.extract::<String>() {
        return match pynbox::parse_size(&s) {
            Ok(Some(0)) => Err(PyValueError::new_err(format!(
                "{name}: {s:?} is not a limit: give a positive size, or None for no limit"
            ))),
            Ok(n) => Ok(n),
            Err(e) => Err(PyValueError::new_err(format!("{name}: {}", e.0))),
        };
    }
    Err(PyTypeError::new_err(format!(
        "{name}: a number of bytes, a size such as \"256M\", or None, not {}",
        v.get_type().name()?
    )))
}

/// Seconds (int or float), or None: no limit.
fn parse_timeout(v: &Bound<'_, PyAny>) -> PyResult<Option<Duration>> {
    if v.is_none() {
        return Ok(None);
    }
    if v.is_instance_of::<pyo3::types::PyBool>() || v.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "timeout: a number of seconds, or None for no limit",
        ));
    }
    let secs: f64 = v
        .extract()
        .map_err(|_| PyTypeError::new_err("timeout: a number of seconds, or None for no limit"))?;
    if secs.is_nan() || secs <= 0.0 {
        return Err(PyValueError::new_err(format!(
            "timeout: {secs} is not a limit: give a number of seconds greater than 0, or None for no limit"
        )));
    }
    // Too far away to represent: no limit.
    Ok(Duration::try_from_secs_f64(secs).ok())
}

fn bytes_arg(name: &str, v: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<u8>> {
    let Some(v) = v.filter(|v| !v.is_none()) else {
        return Ok(Vec::new());
    };
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(s.to_cow()?.as_bytes().to_vec());
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(b) = v.extract::<Vec<u8>>() {
        if v.is_instance_of::<pyo3::types::PyByteArray>() {
            return Ok(b);
        }
    }
    Err(PyTypeError::new_err(format!(
        "{name}: bytes or str, not {}",
        v.get_type().name()?
    )))
}

/// What a run produced.
#[pyclass(module = "pynbox", name = "Result", frozen)]
struct RunResult {
    #[pyo3(get)]
    exit_code: i32,
    out: Vec<u8>,
    err: Vec<u8>,
    #[pyo3(get)]
    limit: Option<&'static str>,
    #[pyo3(get)]
    crash: Option<String>,
}

#[pymethods]
impl RunResult {
    /// Standard output, decoded as UTF-8 (invalid bytes replaced).
    #[getter]
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }
    #[getter]
    fn stdout_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.out)
    }
    /// Standard error, decoded as UTF-8 (invalid bytes replaced).
    #[getter]
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err).into_owned()
    }
    #[getter]
    fn stderr_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.err)
    }
    fn __repr__(&self) -> String {
        let cut = |b: &[u8]| {
            let s = String::from_utf8_lossy(b);
            if s.chars().count() > 60 {
                format!("{:?}...", s.chars().take(60).collect::<String>())
            } else {
                format!("{s:?}")
            }
        };
        format!(
            "Result(exit_code={}, stdout={}, stderr={}, limit={})",
            self.exit_code,
            cut(&self.out),
            cut(&self.err),
            match self.limit {
                Some(l) => format!("{l:?}"),
                None => "None".into(),
            }
        )
    }
}

/// `run(code_or_argv, mounts, env, stdin, memory, timeout, max_output,
/// dest)`: every argument given (the Python layer has the defaults).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn run(
    py: Python<'_>,
    code_or_argv: &Bound<'_, PyAny>,
    mounts: &Bound<'_, PyAny>,
    env: Option<&Bound<'_, PyAny>>,
    stdin: Option<&Bound<'_, PyAny>>,
    memory: &Bound<'_, PyAny>,
    timeout: &Bound<'_, PyAny>,
    max_output: &Bound<'_, PyAny>,
    dest: PathBuf,
) -> PyResult<RunResult> {
    let args: Vec<String> = if let Ok(code) = code_or_argv.cast::<PyString>() {
        vec!["-c".into(), code.to_cow()?.to_string()]
    } else if code_or_argv.is_instance_of::<PyList>() || code_or_argv.is_instance_of::<PyTuple>() {
        code_or_argv
            .extract()
            .map_err(|_| PyTypeError::new_err("code_or_argv: a list of str arguments for python"))?
    } else {
        return Err(PyTypeError::new_err(format!(
            "code_or_argv: Python code (a str) or python's arguments (a list of str), not {}",
            code_or_argv.get_type().name()?
        )));
    };
    if args.iter().any(|a| a.contains('\0')) {
        return Err(PyValueError::new_err(
            "code_or_argv: an argument contains a NUL character",
        ));
    }
    let s = settings(&dest, mounts, env, memory, timeout, max_output)?;
    let stdin = bytes_arg("stdin", stdin)?;
    detached(py, move || {
        let runtime = runtime_for(&dest)?;
        let python = python_for(&runtime, &dest)?;
        // The interpreter runs from the install; the guest must see it too.
        let guest_path = python.arg0();
        match pynbox::mounts::open_guest_file(&s.mounts, guest_path) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) | Err(e) => {
                return Err(PyValueError::new_err(format!(
                    "the python interpreter {guest_path}: {e} (the mount at / must be the install's root)"
                )))
            }
        }
        let mut sandbox = python
            .sandbox(&args, &s.env)
            .stdin(Input::Bytes(stdin))
            .stdout(Output::Capture)
            .stderr(Output::Capture)
            .limits(s.limits);
        for m in s.mounts {
            sandbox = sandbox.mount(m);
        }
        let r = sandbox.run().map_err(to_py_err)?;
        let (limit, crash) = (r.status.limit(), r.status.crash().map(str::to_string));
        Ok(RunResult {
            exit_code: r.status.exit_code(),
            out: r.stdout,
            err: r.stderr,
            limit,
            crash,
        })
    })
}

/// `install(dest, packages, repo, runner)`: installs packages (and what
/// they depend on) into `dest`, quietly; returns the log's lines.
#[pyfunction]
fn install(
    py: Python<'_>,
    dest: PathBuf,
    packages: &Bound<'_, PyAny>,
    repo: String,
    runner: Option<PathBuf>,
) -> PyResult<Vec<String>> {
    let packages: Vec<String> = if let Ok(s) = packages.cast::<PyString>() {
        vec![s.to_cow()?.to_string()]
    } else {
        packages.extract().map_err(|_| {
            PyTypeError::new_err(
                "packages: a list of package names (\"python\", \"lxml\", \"NAME=VERSION\")",
            )
        })?
    };
    if packages.is_empty() {
        return Err(PyValueError::new_err(
            "packages: name at least one package, e.g. [\"python\"]",
        ));
    }
    let options = InstallOptions {
        runner: runner.map_or(Runner::Skip, Runner::File),
        quiet: true,
    };
    let r = detached(py, move || {
        let mut lines = Vec::new();
        let repo = Repo::parse(&repo, false);
        let r = pynbox::install::install_with(&dest, &packages, &repo, &options, &mut |l| {
            lines.push(l.to_string())
        });
        Ok(r.map(|_| lines).map_err(|e| e.to_string()))
    })?;
    session::forget_programs();
    r.map_err(Error::new_err)
}

#[pymodule]
fn _pynbox(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("GuestError", py.get_type::<GuestError>())?;
    m.add("LimitError", py.get_type::<LimitError>())?;
    m.add("TimeLimit", py.get_type::<TimeLimit>())?;
    m.add("MemoryLimit", py.get_type::<MemoryLimit>())?;
    m.add("OutputLimit", py.get_type::<OutputLimit>())?;
    m.add("SessionDead", py.get_type::<SessionDead>())?;
    m.add_class::<RunResult>()?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(install, m)?)?;
    m.add_function(wrap_pyfunction!(prepare::prepare, m)?)?;
    session::register(m)?;
    Ok(())
}
