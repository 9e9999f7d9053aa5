//! Sessions from Python: a live interpreter that keeps its globals across
//! calls (`pynbox::session`), host callbacks, and sessions saved as bytes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::ThreadId;

use pyo3::exceptions::{PyOverflowError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};

use pynbox::session::{CallError, CallErrorKind, Python as Interpreter, Value};

use crate::{
    detached, runtime_for, settings, to_py_err, GuestError, MemoryLimit, OutputLimit, SessionDead,
    TimeLimit,
};

/// How deep a value may nest on its way between host and guest (the
/// guest's bound too).
const MAX_DEPTH: usize = pynbox::session::value::MAX_DEPTH;

/// The program a session starts from, per install: loading it is the
/// slow part of a start.
fn python_for(dest: &Path) -> PyResult<Interpreter> {
    let mut map = programs().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = map.get(dest) {
        return Ok(p.clone());
    }
    let runtime = runtime_for(dest)?;
    let p = Interpreter::from_install(&runtime, dest).map_err(to_py_err)?;
    map.insert(dest.to_path_buf(), p.clone());
    Ok(p)
}

fn programs() -> &'static Mutex<HashMap<PathBuf, Interpreter>> {
    static PROGRAMS: OnceLock<Mutex<HashMap<PathBuf, Interpreter>>> = OnceLock::new();
    PROGRAMS.get_or_init(Default::default)
}

/// Called after an install: its interpreter may have changed.
pub(crate) fn forget_programs() {
    programs().lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// A value of the guest outside the interchange form, as its `repr()`.
#[pyclass(module = "pynbox", frozen, eq)]
#[derive(PartialEq)]
pub struct Repr {
    #[pyo3(get)]
    text: String,
}

#[pymethods]
impl Repr {
    #[new]
    fn new(text: String) -> Repr {
        Repr { text }
    }
    fn __repr__(&self) -> String {
        self.text.clone()
    }
    fn __str__(&self) -> String {
        self.text.clone()
    }
}

/// Output of one `exec`.
#[pyclass(module = "pynbox", name = "Output", frozen)]
pub struct CallOutput {
    out: Vec<u8>,
    err: Vec<u8>,
}

#[pymethods]
impl CallOutput {
    #[getter]
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }
    #[getter]
    fn stdout_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.out)
    }
    #[getter]
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err).into_owned()
    }
    #[getter]
    fn stderr_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.err)
    }
    fn __repr__(&self) -> String {
        format!(
            "Output(stdout={:?}, stderr={:?})",
            String::from_utf8_lossy(&self.out),
            String::from_utf8_lossy(&self.err)
        )
    }
}

/// A Python value in the interchange form.
fn to_value(v: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "a value nests more than {MAX_DEPTH} levels deep (or contains itself)"
        )));
    }
    if v.is_none() {
        return Ok(Value::None);
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if v.is_instance_of::<PyInt>() {
        return v.extract::<i64>().map(Value::Int).map_err(|_| {
            PyOverflowError::new_err("an int passed to or from the guest must fit in 64 bits")
        });
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        return Ok(Value::Float(f.value()));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Value::Str(s.to_cow()?.to_string()));
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = v.cast::<PyByteArray>() {
        return Ok(Value::Bytes(b.to_vec()));
    }
    if let Ok(l) = v.cast::<PyList>() {
        return l
            .iter()
            .map(|x| to_value(&x, depth + 1))
            .collect::<PyResult<_>>()
            .map(Value::List);
    }
    if let Ok(t) = v.cast::<PyTuple>() {
        return t
            .iter()
            .map(|x| to_value(&x, depth + 1))
            .collect::<PyResult<_>>()
            .map(Value::List);
    }
    if let Ok(d) = v.cast::<PyDict>() {
        let mut out = Vec::with_capacity(d.len());
        for (k, x) in d.iter() {
            out.push((to_value(&k, depth + 1)?, to_value(&x, depth + 1)?));
        }
        return Ok(Value::Dict(out));
    }
    if let Ok(r) = v.cast::<Repr>() {
        return Ok(Value::Repr(r.get().text.clone()));
    }
    Err(PyTypeError::new_err(format!(
        "cannot pass a value of type {} between host and guest: use None, bool, int, float, str, bytes, list, tuple or dict",
        v.get_type().name()?
    )))
}

/// A value from the guest as a Python object.
fn from_value<'py>(py: Python<'py>, v: Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::None => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
        Value::Int(n) => n.into_pyobject(py)?.into_any(),
        Value::Float(f) => PyFloat::new(py, f).into_any(),
        Value::Str(s) => PyString::new(py, &s).into_any(),
        Value::Bytes(b) => PyBytes::new(py, &b).into_any(),
        Value::List(items) => {
            let l = PyList::empty(py);
            for x in items {
                l.append(from_value(py, x)?)?;
            }
            l.into_any()
        }
        Value::Dict(pairs) => {
            let d = PyDict::new(py);
            for (k, x) in pairs {
                let k = from_value(py, k)?;
                // An unhashable key (a list) cannot be a dict key here.
                if k.hash().is_err() {
                    return Err(PyTypeError::new_err(format!(
                        "the guest returned a dict with an unhashable key: {}",
                        k.repr()?
                    )));
                }
                d.set_item(k, from_value(py, x)?)?;
            }
            d.into_any()
        }
        Value::Repr(text) => Bound::new(py, Repr { text })?.into_any(),
    })
}

/// A failed call as a Python exception, with the call's output on it.
fn call_err(py: Python<'_>, e: CallError) -> PyErr {
    let message = if e.message.is_empty() {
        match &e.kind {
            // A guest exception's message is its own, even when empty.
            CallErrorKind::Guest { .. } => String::new(),
            CallErrorKind::TimeLimit => "the call reached its time limit".into(),
            CallErrorKind::MemoryLimit => {
                "the session reached its memory limit (the guest raised MemoryError)".into()
            }
            CallErrorKind::OutputLimit => "the session reached its output limit".into(),
            _ => "the session has ended".into(),
        }
    } else {
        e.message.clone()
    };
    let out = String::from_utf8_lossy(&e.stdout).into_owned();
    let errtext = String::from_utf8_lossy(&e.stderr).into_owned();
    let err = match &e.kind {
        CallErrorKind::Guest {
            type_name,
            traceback,
        } => {
            let err = GuestError::new_err(if e.message.is_empty() {
                type_name.clone()
            } else {
                format!("{type_name}: {}", e.message)
            });
            let v = err.value(py);
            let _ = v.setattr("type_name", type_name);
            let _ = v.setattr("traceback", traceback);
            err
        }
        CallErrorKind::TimeLimit => TimeLimit::new_err(message.clone()),
        CallErrorKind::MemoryLimit => MemoryLimit::new_err(message.clone()),
        CallErrorKind::OutputLimit => OutputLimit::new_err(message.clone()),
        CallErrorKind::Ended | CallErrorKind::Dead => SessionDead::new_err(message.clone()),
        CallErrorKind::Input => PyValueError::new_err(message.clone()),
    };
    let v = err.value(py);
    let _ = v.setattr("message", &message);
    let _ = v.setattr("stdout", out);
    let _ = v.setattr("stderr", errtext);
    err
}

/// The live session, and the thread running one of its callbacks, if
/// any: a callback that called into its own session would wait for
/// itself.
struct Inner {
    session: Mutex<Option<pynbox::session::Session>>,
    in_callback: Arc<Mutex<Option<ThreadId>>>,
}

fn is_in_callback(slot: &Mutex<Option<ThreadId>>) -> bool {
    *slot.lock().unwrap_or_else(|p| p.into_inner()) == Some(std::thread::current().id())
}

impl Inner {
    /// Runs `f` on the session, or raises `SessionDead` when it is closed.
    fn with<T>(&self, f: impl FnOnce(&mut pynbox::session::Session) -> PyResult<T>) -> PyResult<T> {
        if is_in_callback(&self.in_callback) {
            return Err(PyRuntimeError::new_err(
                "a callback cannot call into the session that is calling it",
            ));
        }
        let mut guard = self.session.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            Some(s) => f(s),
            None => Err(SessionDead::new_err("the session is closed")),
        }
    }
}

/// `Session(mounts, env, memory, timeout, max_output, dest, restore)`:
/// the Python layer gives every argument.
#[pyclass(module = "pynbox._pynbox", name = "Session", frozen)]
pub struct PySession {
    inner: Arc<Inner>,
}

impl PySession {
    fn wrap(session: pynbox::session::Session) -> PySession {
        PySession {
            inner: Arc::new(Inner {
                session: Mutex::new(Some(session)),
                in_callback: Arc::new(Mutex::new(None)),
            }),
        }
    }
}

#[pymethods]
impl PySession {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        mounts: &Bound<'_, PyAny>,
        env: Option<&Bound<'_, PyAny>>,
        memory: &Bound<'_, PyAny>,
        timeout: &Bound<'_, PyAny>,
        max_output: &Bound<'_, PyAny>,
        dest: PathBuf,
        restore: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PySession> {
        let s = settings(&dest, mounts, env, memory, timeout, max_output)?;
        let data: Option<Vec<u8>> = match restore.filter(|r| !r.is_none()) {
            None => None,
            Some(r) => Some(if let Ok(b) = r.cast::<PyBytes>() {
                b.as_bytes().to_vec()
            } else if let Ok(b) = r.cast::<PyByteArray>() {
                b.to_vec()
            } else {
                return Err(PyTypeError::new_err(format!(
                    "Session.restore: bytes from Session.save(), not {}",
                    r.get_type().name()?
                )));
            }),
        };
        let session = detached(py, move || {
            let python = python_for(&dest)?;
            let options = s.session_options();
            match data {
                None => pynbox::session::Session::start(&python, options),
                Some(d) => pynbox::session::Session::restore(&python, &d, options),
            }
            .map_err(to_py_err)
        })?;
        Ok(PySession::wrap(session))
    }

    /// Runs `code` (statements) in the session's globals.
    fn exec(&self, py: Python<'_>, code: &str) -> PyResult<CallOutput> {
        let code = code.to_string();
        let inner = self.inner.clone();
        let r = detached(py, move || inner.with(|s| Ok(s.exec(&code))))?;
        match r {
            Ok(c) => Ok(CallOutput {
                out: c.stdout,
                err: c.stderr,
            }),
            Err(e) => Err(call_err(py, e)),
        }
    }

    /// Evaluates `expr` in the session's globals and returns its value
    /// (a `Repr` when it has no interchange form).
    fn eval<'py>(&self, py: Python<'py>, expr: &str) -> PyResult<Bound<'py, PyAny>> {
        let expr = expr.to_string();
        let inner = self.inner.clone();
        let r = detached(py, move || inner.with(|s| Ok(s.eval(&expr))))?;
        match r {
            Ok(c) => from_value(py, c.value),
            Err(e) => Err(call_err(py, e)),
        }
    }

    /// Lets guest code call `fn` as `pynbox_host.call(name, *args)`.
    fn expose(&self, py: Python<'_>, name: &str, func: Py<PyAny>) -> PyResult<()> {
        if !func.bind(py).is_callable() {
            return Err(PyTypeError::new_err(format!(
                "expose({name:?}, ...): the function must be callable"
            )));
        }
        if name.is_empty() || name.contains('\0') {
            return Err(PyValueError::new_err(
                "expose: the name must be a non-empty str without NUL",
            ));
        }
        let name = name.to_string();
        let inner = self.inner.clone();
        let slot = inner.in_callback.clone();
        detached(py, move || {
            inner.with(|s| {
                s.expose(&name, move |args: Vec<Value>| {
                    let outer = slot
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .replace(std::thread::current().id());
                    let r = Python::attach(|py| callback(py, &func, args));
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = outer;
                    r
                });
                Ok(())
            })
        })
    }

    /// The session as bytes, for `Session.restore`.
    fn save<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let inner = self.inner.clone();
        let data = detached(py, move || inner.with(|s| s.save().map_err(to_py_err)))?;
        Ok(PyBytes::new(py, &data))
    }

    /// Whether the session can still run calls.
    #[getter]
    fn alive(&self) -> bool {
        match self.inner.session.try_lock() {
            Ok(g) => g.as_ref().is_some_and(|s| s.is_alive()),
            // In a call: alive.
            Err(_) => true,
        }
    }

    /// Ends the session and frees its memory; further calls raise
    /// `SessionDead`. Closing twice is harmless.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner.clone();
        detached(py, move || {
            if is_in_callback(&inner.in_callback) {
                return Err(PyRuntimeError::new_err(
                    "a callback cannot close the session that is calling it",
                ));
            }
            let taken = inner
                .session
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            drop(taken);
            Ok(())
        })
    }
}

/// Fresh sessions started ahead of time (`pynbox::session::SessionPool`).
#[pyclass(module = "pynbox._pynbox", name = "SessionPool", frozen)]
pub struct PySessionPool {
    /// Taken out on close; a take in progress holds its own reference.
    pool: Mutex<Option<Arc<pynbox::session::SessionPool>>>,
}

impl PySessionPool {
    fn get(&self) -> PyResult<Arc<pynbox::session::SessionPool>> {
        let guard = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .clone()
            .ok_or_else(|| PyRuntimeError::new_err("the session pool is closed"))
    }
}

#[pymethods]
impl PySessionPool {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        size: usize,
        mounts: &Bound<'_, PyAny>,
        env: Option<&Bound<'_, PyAny>>,
        memory: &Bound<'_, PyAny>,
        timeout: &Bound<'_, PyAny>,
        max_output: &Bound<'_, PyAny>,
        dest: PathBuf,
    ) -> PyResult<PySessionPool> {
        let s = settings(&dest, mounts, env, memory, timeout, max_output)?;
        let pool = detached(py, move || {
            let python = python_for(&dest)?;
            pynbox::session::SessionPool::new(&python, s.session_options(), size).map_err(to_py_err)
        })?;
        Ok(PySessionPool {
            pool: Mutex::new(Some(Arc::new(pool))),
        })
    }

    /// A fresh session: started ahead of time when one is ready.
    fn take(&self, py: Python<'_>) -> PyResult<PySession> {
        let pool = self.get()?;
        let session = detached(py, move || pool.take().map_err(to_py_err))?;
        Ok(PySession::wrap(session))
    }

    /// How many sessions are started and waiting.
    #[getter]
    fn ready(&self) -> usize {
        self.get().map_or(0, |p| p.ready())
    }

    /// Stops the pool's thread and ends the sessions nobody took.
    fn close(&self, py: Python<'_>) {
        let taken = self.pool.lock().unwrap_or_else(|p| p.into_inner()).take();
        py.detach(move || drop(taken));
    }
}

/// One host callback: the guest's arguments in, the result or the
/// exception's `Type: message` out.
fn callback(py: Python<'_>, func: &Py<PyAny>, args: Vec<Value>) -> Result<Value, String> {
    let run = || -> PyResult<Value> {
        let args = args
            .into_iter()
            .map(|a| from_value(py, a))
            .collect::<PyResult<Vec<_>>>()?;
        let r = func.bind(py).call1(PyTuple::new(py, args)?)?;
        to_value(&r, 0)
    };
    run().map_err(|e| {
        let name = e
            .get_type(py)
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "Exception".into());
        let msg = e.value(py).str().map(|s| s.to_string()).unwrap_or_default();
        if msg.is_empty() {
            name
        } else {
            format!("{name}: {msg}")
        }
    })
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySession>()?;
    m.add_class::<PySessionPool>()?;
    m.add_class::<Repr>()?;
    m.add_class::<CallOutput>()?;
    Ok(())
}
