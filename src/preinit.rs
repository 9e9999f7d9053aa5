//! Pre-initialised Python: a snapshot of the interpreter after start-up and
//! its most used imports, made with `wasmtime-wizer` at install time, from
//! which a run resumes instead of starting from nothing.
//!
//! The interpreter's side is `Modules/pynbox_snapshot.c` (a CPython patch in
//! `recipes/python/patches/`): `wizer.initialize` starts Python and imports
//! the modules; `wizer.resume`, which becomes the snapshot's `_start`, draws
//! a fresh hash secret (rebuilding every hash table made before the
//! snapshot), reseeds `random`, reads the run's own argv and environment and
//! runs Python's main. A snapshot is only resumed for a command line it was
//! made for (see [`resumable`]); any other run starts the plain interpreter.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use wasmtime::{Instance, Module, Store, Val};
use wasmtime_wizer::{InstanceState, SnapshotVal, ValType, Wizer};

use crate::runtime::{
    new_store, on_guest_thread, open_file_identity, write_atomically, Error, Guest, Input, Output,
    Runtime, Sandbox,
};
use crate::MountSpec;

/// The export that starts Python and imports the snapshot's modules.
const INIT: &str = "wizer.initialize";
/// The export that becomes the snapshot's `_start`.
const RESUME: &str = "wizer.resume";
/// Start-up and the imports take well under a second.
const INIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs `wasm`'s initialisation with `mounts` (the interpreter's files),
/// started as `arg0` (the interpreter's guest path, as in a plain run), and
/// returns the pre-initialised module, whose `_start` resumes a run.
pub fn preinitialize(
    runtime: &Runtime,
    wasm: &[u8],
    arg0: &str,
    mounts: &[MountSpec],
) -> Result<Vec<u8>, Error> {
    let mut wizer = Wizer::new();
    wizer.init_func(INIT).func_rename("_start", RESUME);
    let (cx, instrumented) = wizer
        .instrument(wasm)
        .map_err(|e| Error::input(format!("cannot pre-initialise this module: {e:#}")))?;
    let module = Module::new(&runtime.engine, &instrumented)
        .map_err(|e| Error::internal(format!("cannot compile the instrumented module: {e:#}")))?;
    if module.get_export(INIT).is_none() || module.get_export(RESUME).is_none() {
        return Err(Error::input(format!(
            "this interpreter cannot be pre-initialised: it lacks the {INIT} and {RESUME} exports (rebuild it with `pynbox build python`)"
        )));
    }
    let program = runtime.link("python", module, "instrumented for pre-initialisation")?;
    let mut sandbox = Sandbox::new(&program)
        .arg0(arg0)
        .stdin(Input::Null)
        .stdout(Output::Capture)
        .stderr(Output::Capture);
    for m in mounts {
        sandbox = sandbox.mount(m.clone());
    }
    let setup = sandbox.setup()?;
    let stderr = setup.stderr.clone();
    let failed = |what: String| {
        let err = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
        Error::internal(format!("{what}\n{}", err.trim_end()))
    };

    on_guest_thread(|| {
        // The packages' code runs here too: it gets a time limit (and the
        // default memory limit) like any guest.
        let mut store = new_store(&runtime.engine, setup.guest, Some(INIT_TIMEOUT));
        let instance = program
            .pre
            .instantiate(&mut store)
            .map_err(|e| failed(format!("cannot instantiate the interpreter: {e:#}")))?;
        instance
            .get_typed_func::<(), ()>(&mut store, INIT)
            .and_then(|f| f.call(&mut store, ()))
            .map_err(|e| failed(format!("the interpreter's start-up failed: {e:#}")))?;
        let mut state = Snapshot {
            store: &mut store,
            instance,
        };
        block_on(wizer.snapshot(&cx, &mut state))
            .map_err(|e| Error::internal(format!("cannot snapshot the interpreter: {e:#}")))
    })
}

/// Where an install keeps its pre-initialised interpreter (bin/run passes
/// it as `--preinit`), and beside it `python.wasm.from`: what it was made
/// from (first line: the installed packages and the interpreter's hash;
/// second: the interpreter file's identity, which a run compares with the
/// file it would otherwise load).
pub const INSTALL_PATH: &str = "cache/preinit/python.wasm";

/// Removes DEST's pre-initialised python, so that no run resumes a
/// snapshot made before the installed files changed (`pynbox pip
/// --no-preinit`); runs start the plain interpreter until `pynbox install
/// DEST` makes it again.
pub fn discard(dest: &Path) {
    let out = dest.join(INSTALL_PATH);
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(from_path(&out));
}

fn from_path(preinit: &Path) -> PathBuf {
    let mut p = preinit.as_os_str().to_owned();
    p.push(".from");
    PathBuf::from(p)
}

/// Whether `preinit` was made from exactly this interpreter file.
pub fn made_from(preinit: &Path, interpreter: &File) -> bool {
    let Ok(from) = std::fs::read_to_string(from_path(preinit)) else {
        return false;
    };
    let id = open_file_identity(interpreter);
    id.is_some() && from.lines().nth(1) == id.as_deref() && preinit.is_file()
}

/// Makes (or keeps, when nothing changed) the pre-initialised interpreter
/// at `dest/INSTALL_PATH` for the interpreter at `dest/root/GUEST_PATH`,
/// with `dest/root` mounted at `/` as bin/run mounts it. `stamp` names
/// what else the snapshot depends on (the installed packages); `notice`
/// is called before the slow part. Returns whether a new one was made.
pub fn refresh(
    dest: &Path,
    guest_path: &str,
    stamp: &str,
    notice: &dyn Fn(),
) -> Result<bool, Error> {
    let out = dest.join(INSTALL_PATH);
    let from = from_path(&out);
    let interpreter = dest.join("root").join(guest_path.trim_start_matches('/'));
    let gone = || {
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(&from);
    };
    let Ok(mut file) = File::open(&interpreter) else {
        gone();
        return Ok(false);
    };
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes)
        .map_err(|e| Error::input(format!("cannot read {}: {e}", interpreter.display())))?;
    let stamp = format!("{stamp} {}", blake3::hash(&bytes).to_hex());
    let identity = open_file_identity(&file).unwrap_or_default();
    if let Ok(old) = std::fs::read_to_string(&from) {
        if old.lines().next() == Some(stamp.as_str()) && out.is_file() {
            if old.lines().nth(1) != Some(identity.as_str()) {
                let _ = write_atomically(&from, format!("{stamp}\n{identity}\n").as_bytes());
            }
            return Ok(false);
        }
    }
    gone();
    notice();
    let runtime = Runtime::new(Some(dest.join("cache")))?;
    let root = MountSpec {
        host: dest.join("root"),
        guest: "/".into(),
        writable: false,
    };
    let snapshot = preinitialize(&runtime, &bytes, guest_path, &[root])?;
    let dir = out.parent().expect("INSTALL_PATH has a directory");
    std::fs::create_dir_all(dir)
        .and_then(|_| write_atomically(&out, &snapshot))
        .map_err(|e| Error::internal(format!("cannot write {}: {e}", out.display())))?;
    // Written last: a snapshot without it is never used.
    runtime.precompile_file(&out)?;
    write_atomically(&from, format!("{stamp}\n{identity}\n").as_bytes())
        .map_err(|e| Error::internal(format!("cannot write {}: {e}", from.display())))?;
    Ok(true)
}

/// Whether a run of python with these arguments (after argv[0]) and
/// environment can resume from the snapshot: the snapshot was started as
/// plain `python` with no environment, so only runs whose options leave
/// every start-up setting alike qualify. `-c CMD`, `-m MODULE`, a script
/// or `-` (each followed by any arguments of the program's own), or
/// nothing at all. The environment may hold anything but Python's and the
/// locale's variables; PYTHONHASHSEED is honoured by the resume, except 0,
/// which turns hash randomisation off and so changes `sys.flags`. The
/// interpreter checks the same again and refuses a mismatch.
pub fn resumable(args: &[String], env: &[(String, String)]) -> bool {
    let args_ok = match args.first().map(String::as_str) {
        None => true,
        Some("-c") | Some("-m") => args.len() >= 2,
        Some(a) => a == "-" || !a.starts_with('-'),
    };
    let env_ok = env.iter().all(|(k, v)| {
        if k == "PYTHONHASHSEED" {
            return v == "random" || v.parse::<u32>().is_ok_and(|n| n != 0);
        }
        !(k.starts_with("PYTHON") || k.starts_with("LC_") || k == "LANG")
    });
    args_ok && env_ok
}

struct Snapshot<'a> {
    store: &'a mut Store<Guest>,
    instance: Instance,
}

impl InstanceState for Snapshot<'_> {
    fn global_get(&mut self, name: &str, _: ValType) -> impl Future<Output = SnapshotVal> + Send {
        let global = self.instance.get_global(&mut *self.store, name);
        let v = match global.map(|g| g.get(&mut *self.store)) {
            Some(Val::I32(x)) => SnapshotVal::I32(x),
            Some(Val::I64(x)) => SnapshotVal::I64(x),
            Some(Val::F32(x)) => SnapshotVal::F32(x),
            Some(Val::F64(x)) => SnapshotVal::F64(x),
            Some(Val::V128(x)) => SnapshotVal::V128(x.as_u128()),
            // Wizer instruments only the value-typed globals it then asks for.
            _ => unreachable!("wizer asked for a global it did not export: {name}"),
        };
        std::future::ready(v)
    }

    fn memory_contents(
        &mut self,
        name: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) -> impl Future<Output = ()> + Send {
        if let Some(memory) = self.instance.get_memory(&mut *self.store, name) {
            contents(memory.data(&*self.store));
        }
        std::future::ready(())
    }
}

/// Wizer's snapshot is async only in signature: everything above is
/// ready at once, so polling it to the end needs no executor.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::resumable;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn only_plain_command_lines_resume() {
        let none: Vec<(String, String)> = vec![];
        for ok in [
            &[][..],
            &["-c", "pass"],
            &["-c", "pass", "-x"],
            &["-m", "json.tool", "-h"],
            &["/a.py", "-I"],
            &["-"],
        ] {
            assert!(resumable(&s(ok), &none), "{ok:?}");
        }
        for bad in [
            &["-I", "-c", "pass"][..],
            &["-S"],
            &["-c"],
            &["-u", "x.py"],
            &["-X", "dev"],
            &["-W", "error"],
        ] {
            assert!(!resumable(&s(bad), &none), "{bad:?}");
        }
        let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert!(resumable(&s(&["-c", "1"]), &env("HOME", "/")));
        assert!(resumable(&s(&["-c", "1"]), &env("PYTHONHASHSEED", "123")));
        assert!(!resumable(&s(&["-c", "1"]), &env("PYTHONHASHSEED", "0")));
        assert!(!resumable(&s(&["-c", "1"]), &env("PYTHONPATH", "/x")));
        assert!(!resumable(&s(&["-c", "1"]), &env("LC_ALL", "C")));
    }
}
