//! The sandbox: Wasmtime set up once per process ([`Runtime`]), compiled
//! programs with an on-disk cache of machine code ([`Program`]), and one run
//! of a program with its mounts, descriptors and limits ([`Sandbox`]).

use std::fmt;
use std::fs::File;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{
    Config, Engine, InstancePre, Linker, Module, ResourceLimiter, Store, Trap, UpdateDeadline,
};

use crate::mounts::{MountSpec, Namespace};
use crate::wasi::fdtable::{Desc, FdTable, Sink};
use crate::wasi::{self, Stop, WasiCtx};

/// How often the epoch advances; the time limit's resolution.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// The wasm call stack a guest may use. CPython's own tooling runs it with
/// 8 MiB; less makes deep but legal recursion trap.
const WASM_STACK: usize = 8 << 20;
/// The host thread a guest runs on: the whole wasm stack plus the host's
/// own frames.
const GUEST_THREAD_STACK: usize = WASM_STACK * 2 + (4 << 20);
/// Table elements a guest may grow to (CPython needs about 10,000).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// Linear memory can never exceed 4 GiB in wasm32.
pub const MAX_MEMORY: u64 = 4 << 30;

/// What went wrong before the guest could start, or around it.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// Whether an [`Error`] is the caller's to fix or the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input: a mount, a descriptor, a program that is not valid wasm.
    Input,
    /// The host failed (I/O on the cache, Wasmtime set-up).
    Internal,
}

impl Error {
    pub(crate) fn input(message: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Input,
            message: message.into(),
        }
    }
    pub(crate) fn internal(message: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Internal,
            message: message.into(),
        }
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<crate::mounts::SpecError> for Error {
    fn from(e: crate::mounts::SpecError) -> Error {
        Error::input(e.0)
    }
}

/// The store data of one running guest.
pub(crate) struct Guest {
    pub wasi: WasiCtx,
    pub limiter: MemoryLimiter,
    /// The host's side of a session's messages (src/session/); `None` in
    /// a plain run, whose guest then cannot use them.
    pub session: Option<Box<crate::session::Channel>>,
    /// The native modules this guest may load and has loaded.
    pub native: crate::native::Loader,
}

pub(crate) struct MemoryLimiter {
    max: usize,
    /// The guest was refused memory: a failure that follows is the limit's.
    pub hit: bool,
}

impl MemoryLimiter {
    /// The most linear memory the guest may have, in bytes.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Refusing (rather than trapping) lets the guest see a failed
        // allocation: CPython raises MemoryError.
        if desired > self.max {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// How the guests of a [`Runtime`] are stopped at their time limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interruption {
    /// Checks compiled into the guest's code (Wasmtime's epochs, at every
    /// function entry and loop head): any number of guests per process,
    /// each stopped by itself at its own limit. [`Runtime::new`].
    Epochs,
    /// No checks in the code, so compute runs about 18% faster; the
    /// process runs one guest at a time, and at a run's time limit the
    /// library ends the whole process with status 124 after one line on
    /// stderr (`pynbox: time limit of N s reached (--timeout)`), keeping
    /// what the guest wrote to host descriptors and losing captured
    /// output. For a process that exists to run one guest: the CLI.
    /// Sessions need [`Interruption::Epochs`].
    EndProcess,
}

/// Wasmtime configured for pynbox, with the system calls linked and a
/// cache of compiled machine code. Create one per process and share it.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<Guest>>,
    cache_dir: Option<PathBuf>,
    interruption: Interruption,
}

impl Runtime {
    /// A runtime whose compiled modules are cached in `cache_dir` (none:
    /// compile every time), with [`Interruption::Epochs`].
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Runtime, Error> {
        Runtime::with_interruption(cache_dir, Interruption::Epochs)
    }

    /// A runtime whose guests are stopped at their limit as `how` says.
    /// Each way compiles its own machine code (both are cached).
    pub fn with_interruption(
        cache_dir: Option<PathBuf>,
        how: Interruption,
    ) -> Result<Runtime, Error> {
        let epochs = how == Interruption::Epochs;
        let mut config = Config::new();
        config.epoch_interruption(epochs);
        config.max_wasm_stack(WASM_STACK);
        // Wasmtime checks this against the wasm stack even when, as here,
        // nothing runs asynchronously.
        config.async_stack_size(WASM_STACK + (1 << 20));
        // Publishes code as Wasmtime would, except native modules' code
        // mapped before the CLI's second wall (src/code_memory.rs).
        #[cfg(unix)]
        config.with_custom_code_memory(Some(crate::code_memory::CodeMemory::shared()));
        let engine = Engine::new(&config)
            .map_err(|e| Error::internal(format!("cannot set up Wasmtime: {e}")))?;
        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker)
            .and_then(|_| crate::session::add_to_linker(&mut linker))
            .and_then(|_| crate::native::add_to_linker(&mut linker))
            .map_err(|e| Error::internal(format!("cannot link the WASI calls: {e}")))?;
        if epochs {
            start_epoch_ticker(&engine);
        }
        raise_open_file_limit();
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            cache_dir,
            interruption: how,
        })
    }

    pub fn interruption(&self) -> Interruption {
        self.interruption
    }

    /// The default cache directory: `$PYNBOX_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/pynbox/modules`, else `~/.cache/pynbox/modules`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("PYNBOX_CACHE_DIR") {
            return Some(PathBuf::from(d));
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("pynbox").join("modules"))
    }

    /// Loads a program from a `.wasm` file on the host.
    pub fn load_file(&self, path: &Path) -> Result<Program, Error> {
        let file = File::open(path)
            .and_then(|f| {
                if f.metadata()?.is_dir() {
                    Err(std::io::Error::from(std::io::ErrorKind::IsADirectory))
                } else {
                    Ok(f)
                }
            })
            .map_err(|e| {
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => "it does not exist".to_string(),
                    std::io::ErrorKind::IsADirectory => "it is a directory".to_string(),
                    _ => e.to_string(),
                };
                Error::input(format!(
                    "cannot read program '{}': {why}: give the path of a .wasm file",
                    path.display()
                ))
            })?;
        self.load_open_file(&path.display().to_string(), file)
    }

    /// Loads a program from an open file. When the cache has already
    /// compiled a file with the same identity (device, inode, size and
    /// change times), the file is not even read: start-up does not pay for
    /// hashing a large interpreter.
    pub fn load_open_file(&self, name: &str, mut file: File) -> Result<Program, Error> {
        let t = Instant::now();
        let index = self.identity_index(&file, "");
        let indexed = index.as_ref().and_then(|i| std::fs::read_to_string(i).ok());
        if let Some((key, id)) = indexed.as_deref().and_then(|s| {
            let mut lines = s.lines();
            Some((lines.next()?, lines.next()?))
        }) {
            let entry = self
                .cache_dir
                .as_ref()
                .unwrap()
                .join(format!("{key}.cwasm"));
            if let Some(module) = self.load_cache_entry(&entry) {
                timing("load compiled code by file identity", t);
                return self.link(name, module, id);
            }
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes)
            .map_err(|e| Error::input(format!("cannot read program '{name}': {e}")))?;
        check_magic(name, &bytes)?;
        let (module, key, id) = self.compile_cached(name, &bytes)?;
        if let Some(index) = index {
            let _ = std::fs::create_dir_all(index.parent().unwrap())
                .and_then(|_| write_atomically(&index, format!("{key}\n{id}\n").as_bytes()));
        }
        self.link(name, module, &id)
    }

    /// Where the cache records what it knows of a file with `file`'s
    /// identity: one entry per file, engine and `kind` (programs and side
    /// modules are compiled differently).
    fn identity_index(&self, file: &File, kind: &str) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        let id = format!("{} {}{kind}", open_file_identity(file)?, self.engine_hash());
        Some(
            dir.join("files")
                .join(&blake3::hash(id.as_bytes()).to_hex()[..32]),
        )
    }

    /// Loads a program from the bytes of a wasm module; `name` is used in
    /// messages.
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<Program, Error> {
        check_magic(name, bytes)?;
        let (module, _, id) = self.compile_cached(name, bytes)?;
        self.link(name, module, &id)
    }

    /// `id` is the module's own hash ([`Program::id`]).
    pub(crate) fn link(&self, name: &str, module: Module, id: &str) -> Result<Program, Error> {
        let pre = self.linker.instantiate_pre(&module).map_err(|e| {
            Error::input(format!(
                "'{name}' cannot run in pynbox: {}",
                root_message(&e)
            ))
        })?;
        if module.get_export("_start").is_none() {
            return Err(Error::input(format!(
                "'{name}' has no _start function: it is not a WASI command module"
            )));
        }
        Ok(Program {
            pre,
            name: name.to_string(),
            id: id.to_string(),
            interruption: self.interruption,
        })
    }

    /// A native side module (src/native/), compiled or from the cache.
    /// A native side module (src/native/) open as `file`: its compiled
    /// code, its `dylink.0` facts and the sha256 of its bytes, if
    /// `allowed` accepts that sha256. When the cache has seen a file with
    /// the same identity (device, inode, size, change times), the file is
    /// not read whole nor hashed again, as for programs
    /// ([`Runtime::load_open_file`]); otherwise it is read (at most
    /// [`crate::native::MAX_MODULE_BYTES`]), hashed, checked and compiled.
    /// `mapped` gives the module already in memory for a sha256, if any
    /// (a copy of an installed file has another identity but the same
    /// code, and a process under its second wall cannot map code again).
    pub(crate) fn side_module(
        &self,
        file: &File,
        allowed: &dyn Fn(&str) -> bool,
        mapped: &dyn Fn(&str) -> Option<Module>,
    ) -> Result<(Module, crate::native::dylink::DylinkInfo, String), String> {
        use crate::native::dylink;
        let index = self.identity_index(file, " side");
        let indexed = index.as_ref().and_then(|i| std::fs::read_to_string(i).ok());
        if let Some((key, sha)) = indexed.as_deref().and_then(|s| {
            let mut lines = s.lines();
            let key = lines.next()?;
            let _id = lines.next()?;
            Some((key, lines.next()?))
        }) {
            if allowed(sha) {
                let entry = self
                    .cache_dir
                    .as_ref()
                    .unwrap()
                    .join(format!("{key}.cwasm"));
                if let Some(module) = mapped(sha).or_else(|| self.load_cache_entry(&entry)) {
                    return Ok((module, read_dylink(file)?, sha.to_string()));
                }
            }
        }
        let bytes = read_whole(file, crate::native::MAX_MODULE_BYTES)?;
        let sha = crate::native::hex_sha256(&bytes);
        if !allowed(&sha) {
            return Err(crate::native::NOT_INSTALLED.to_string());
        }
        if !bytes.starts_with(b"\0asm") {
            return Err("it is not a WebAssembly module".into());
        }
        let info = dylink::read(&bytes)?;
        let (module, key, id) = match mapped(&sha) {
            Some(module) => {
                let id = blake3::hash(&bytes).to_hex().to_string();
                (module, self.cache_key(&id), id)
            }
            None => self
                .compile_cached("a native module", &bytes)
                .map_err(|e| e.to_string())?,
        };
        if let Some(index) = index {
            let _ = std::fs::create_dir_all(index.parent().unwrap())
                .and_then(|_| write_atomically(&index, format!("{key}\n{id}\n{sha}\n").as_bytes()));
        }
        Ok((module, info, sha))
    }

    /// The compiled code of the installed side module open as `file`,
    /// mapped with its code executable but not decoded (see
    /// `src/code_memory.rs`); `None` if `pynbox install` did not compile
    /// it into this cache or its entry fails its check. Reads the cache's
    /// small index files only, not the module.
    pub(crate) fn map_side_module(&self, file: &File) -> Option<MappedSide> {
        let index = std::fs::read_to_string(self.identity_index(file, " side")?).ok()?;
        let mut lines = index.lines();
        let (key, _id, sha) = (lines.next()?, lines.next()?, lines.next()?);
        let entry = self.cache_dir.as_ref()?.join(format!("{key}.cwasm"));
        let code_identity = self.checked_cache_entry(&entry)?;
        let code = self.map_checked_entry(key, &code_identity)?;
        Some(MappedSide {
            sha: sha.to_string(),
            key: key.to_string(),
            code_identity,
            code,
        })
    }

    /// Maps the cache entry `key` if it is still the version `identity`,
    /// one whose hash [`checked_cache_entry`] checked.
    ///
    /// [`checked_cache_entry`]: Runtime::checked_cache_entry
    pub(crate) fn map_checked_entry(
        &self,
        key: &str,
        identity: &str,
    ) -> Option<crate::code_memory::MappedCode> {
        if key.len() != 32 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let entry = self.cache_dir.as_ref()?.join(format!("{key}.cwasm"));
        let code = File::open(&entry).ok()?;
        if open_file_identity(&code)? != identity {
            return None; // replaced since the check
        }
        crate::code_memory::map_code(&self.engine, &code, identity).ok()
    }

    /// Where the record of how an install's side modules were mapped is
    /// kept for this engine (see `NativeModules::preload`); `stamp` names
    /// the install's state.
    pub(crate) fn mapping_record(&self, stamp: &str) -> Option<PathBuf> {
        let id = format!("mapping {stamp} {}", self.engine_hash());
        Some(self.cache_dir.as_ref()?.join("files").join(format!(
            "mapping-{}",
            &blake3::hash(id.as_bytes()).to_hex()[..32]
        )))
    }

    /// The side module open as `file`, whose code [`map_side_module`]
    /// mapped: decoded now, in place, with its `dylink.0`.
    ///
    /// [`map_side_module`]: Runtime::map_side_module
    pub(crate) fn side_module_mapped(
        &self,
        file: &File,
        code: crate::code_memory::MappedCode,
    ) -> Result<(Module, crate::native::dylink::DylinkInfo), String> {
        Ok((self.module_from_mapped(code)?, read_dylink(file)?))
    }

    /// The module whose compiled code [`map_side_module`] mapped, decoded
    /// in place.
    ///
    /// [`map_side_module`]: Runtime::map_side_module
    pub(crate) fn module_from_mapped(
        &self,
        code: crate::code_memory::MappedCode,
    ) -> Result<Module, String> {
        // SAFETY: as in `load_cache_entry`: the mapping is of a cache entry
        // this code wrote and whose hash was checked since it last changed
        // (`map_checked_entry`).
        unsafe { crate::code_memory::module(&self.engine, code) }
    }

    /// Compiles the native side module at `path` into the cache.
    pub fn precompile_side_module(&self, path: &Path) -> Result<(), Error> {
        let file = File::open(path)
            .map_err(|e| Error::input(format!("cannot read '{}': {e}", path.display())))?;
        self.side_module(&file, &|_| true, &|_| None)
            .map(|_| ())
            .map_err(|why| Error::input(format!("'{}' cannot be loaded: {why}", path.display())))
    }

    /// Compiles the program at `path` into the cache and records the
    /// file's identity, so that its first run neither compiles nor reads it.
    pub fn precompile_file(&self, path: &Path) -> Result<(), Error> {
        self.load_file(path).map(|_| ())
    }

    /// The engine's settings, which decide whether compiled code fits it.
    fn engine_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        h.finish()
    }

    /// The cache key of a module whose [`Program::id`] is `id`.
    fn cache_key(&self, id: &str) -> String {
        let mut key = blake3::Hasher::new();
        key.update(id.as_bytes());
        key.update(&self.engine_hash().to_le_bytes());
        key.update(env!("CARGO_PKG_VERSION").as_bytes());
        key.finalize().to_hex()[..32].to_string()
    }

    /// The compiled module, its cache key and its id.
    fn compile_cached(&self, name: &str, bytes: &[u8]) -> Result<(Module, String, String), Error> {
        let t = Instant::now();
        let id = blake3::hash(bytes).to_hex().to_string();
        let key = self.cache_key(&id);
        let entry = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{key}.cwasm")));
        timing("hash the module", t);
        if let Some(entry) = &entry {
            let t = Instant::now();
            if let Some(module) = self.load_cache_entry(entry) {
                timing("load compiled code from the cache", t);
                return Ok((module, key, id));
            }
        }
        let module = Module::new(&self.engine, bytes).map_err(|e| {
            Error::input(format!(
                "'{name}' is not a valid WebAssembly module: {}",
                root_message(&e)
            ))
        })?;
        if let Some(entry) = &entry {
            // A cache that cannot be written only costs speed.
            let _ = store_cache_entry(entry, &module);
        }
        Ok((module, key, id))
    }

    /// A cache entry is `KEY.cwasm`, exactly what `Module::serialize`
    /// wrote, so that Wasmtime can map it from the file instead of copying
    /// it; beside it `KEY.sum` holds the entry's blake3 hash and the file's
    /// identity (size, modification time, inode) when the hash was last
    /// checked. An entry whose identity changed since is hashed again: a
    /// truncated, rewritten or corrupted entry fails and is rebuilt. One
    /// from another Wasmtime or configuration is refused by Wasmtime's own
    /// header check and rebuilt.
    fn load_cache_entry(&self, entry: &Path) -> Option<Module> {
        self.checked_cache_entry(entry)?;
        // SAFETY: Wasmtime requires that deserialized code comes from
        // `Module::serialize` of a trusted Wasmtime. The entry lives in the
        // user's own cache directory, was written by this code, and its
        // hash was checked since it last changed; Wasmtime checks that it
        // matches this engine's version and settings. Entries are replaced
        // by rename, never rewritten in place, so the mapping stays valid.
        unsafe { Module::deserialize_file(&self.engine, entry) }.ok()
    }

    /// The entry's identity if its hash was checked since it last changed
    /// (checking it now if not); `None` if it fails.
    fn checked_cache_entry(&self, entry: &Path) -> Option<String> {
        let sum_path = entry.with_extension("sum");
        let sum = std::fs::read_to_string(&sum_path).ok()?;
        let mut lines = sum.lines();
        let hash = lines.next()?;
        let checked = lines.next();
        let identity = file_identity(entry)?;
        if checked != Some(identity.as_str()) {
            let data = std::fs::read(entry).ok()?;
            if blake3::hash(&data).to_hex().as_str() != hash {
                return None;
            }
            // Remember the check; if this fails, the next run checks again.
            let _ = std::fs::write(&sum_path, format!("{hash}\n{identity}\n"));
        }
        Some(identity)
    }
}

/// An installed side module's code, mapped by [`Runtime::map_side_module`].
pub(crate) struct MappedSide {
    /// sha256 of the module's bytes.
    pub sha: String,
    /// Its cache entry, and that entry's identity when its hash was checked.
    pub key: String,
    pub code_identity: String,
    pub code: crate::code_memory::MappedCode,
}

/// A runtime of each [`Interruption`], for compiling a program ahead for
/// every way it may be run.
pub fn all_runtimes(cache_dir: Option<PathBuf>) -> Result<Vec<Runtime>, Error> {
    [Interruption::EndProcess, Interruption::Epochs]
        .into_iter()
        .map(|how| Runtime::with_interruption(cache_dir.clone(), how))
        .collect()
}

/// A side module's `dylink.0` section, which comes first and is small:
/// read from its first 64 KiB, unless that cuts it short.
fn read_dylink(file: &File) -> Result<crate::native::dylink::DylinkInfo, String> {
    use crate::native::dylink;
    let head = read_head(file, 64 << 10)?;
    match dylink::read_section(&head) {
        Err(_) if head.len() == 64 << 10 => {
            dylink::read_section(&read_head(file, dylink::MAX_SECTION)?)
        }
        r => r,
    }
}

/// Device, inode, size and modification and change times of an open file.
pub(crate) fn open_file_identity(f: &File) -> Option<String> {
    let m = f.metadata().ok()?;
    let mtime = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    #[cfg(unix)]
    let (dev, ino, ctime) = {
        use std::os::unix::fs::MetadataExt;
        (m.dev(), m.ino(), (m.ctime(), m.ctime_nsec()))
    };
    #[cfg(not(unix))]
    let (dev, ino, ctime) = (0, 0, (0, 0));
    Some(format!(
        "{dev} {ino} {} {} {ctime:?}",
        m.len(),
        mtime.as_nanos()
    ))
}

/// Writes then renames, so that a reader never sees half a file.
pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), fastrand_suffix()));
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn check_magic(name: &str, bytes: &[u8]) -> Result<(), Error> {
    if bytes.starts_with(b"\0asm") {
        return Ok(());
    }
    Err(Error::input(format!(
        "'{name}' is not a WebAssembly module (it does not start with \\0asm): \
         give a .wasm file compiled for wasm32-wasip1"
    )))
}

/// Reads `file` from its start (whatever its offset), at most `max` bytes.
fn read_head(file: &File, max: u64) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; max.min(1 << 20) as usize];
    let mut offset = 0u64;
    while offset < max {
        let want = buf.len().min((max - offset) as usize);
        let n =
            read_at(file, &mut buf[..want], offset).map_err(|e| format!("cannot read it: {e}"))?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
        offset += n as u64;
    }
    Ok(bytes)
}

/// The whole of `file`, refused past `max` bytes.
pub(crate) fn read_whole(file: &File, max: u64) -> Result<Vec<u8>, String> {
    let bytes = read_head(file, max + 1)?;
    if bytes.len() as u64 > max {
        return Err(format!("it is larger than {max} bytes"));
    }
    Ok(bytes)
}

#[cfg(unix)]
fn read_at(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(f, buf, offset)
}

#[cfg(not(unix))]
fn read_at(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(f, buf, offset)
}

/// The identity of the file at `p` (see [`open_file_identity`]).
fn file_identity(p: &Path) -> Option<String> {
    open_file_identity(&File::open(p).ok()?)
}

fn store_cache_entry(entry: &Path, module: &Module) -> std::io::Result<()> {
    let body = module
        .serialize()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    std::fs::create_dir_all(entry.parent().unwrap_or(Path::new(".")))?;
    write_atomically(entry, &body)?;
    let sum = format!(
        "{}\n{}\n",
        blake3::hash(&body).to_hex(),
        file_identity(entry).unwrap_or_default()
    );
    write_atomically(&entry.with_extension("sum"), sum.as_bytes())
}

/// With `PYNBOX_TIMING=1`, says on stderr where start-up time goes.
pub fn timing(what: &str, since: Instant) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("PYNBOX_TIMING").is_some_and(|v| v == "1")) {
        eprintln!(
            "pynbox timing: {what}: {:.2} ms",
            since.elapsed().as_secs_f64() * 1e3
        );
    }
}

fn fastrand_suffix() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

fn root_message(e: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    parts.dedup();
    parts.join(": ")
}

/// Raises the process's soft limit on open descriptors to its hard limit,
/// once: each sandbox has its own cap well below it
/// ([`Limits::open_files`]), so that many sandboxes fit in one process and
/// none can use up the others' share.
fn raise_open_file_limit() {
    #[cfg(unix)]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: getrlimit/setrlimit on plain data.
            unsafe {
                let mut r: libc::rlimit = std::mem::zeroed();
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
                    r.rlim_cur = r.rlim_max;
                    libc::setrlimit(libc::RLIMIT_NOFILE, &r);
                }
            }
        });
    }
}

fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("pynbox-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}

/// A compiled, linked program, ready to run any number of times.
#[derive(Clone)]
pub struct Program {
    pub(crate) pre: InstancePre<Guest>,
    name: String,
    id: String,
    pub(crate) interruption: Interruption,
}

impl Program {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The blake3 hash of the module's bytes: which build this is. A
    /// saved session names it and is refused by any other program.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Where the guest's standard input comes from.
pub enum Input {
    /// The host process's own standard input.
    Inherit,
    /// Empty.
    Null,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// A host file or pipe.
    File(File),
}

/// Where the guest's standard output or error goes.
pub enum Output {
    /// The host process's own stream.
    Inherit,
    /// Nowhere.
    Null,
    /// Kept in memory and returned in [`RunResult`].
    Capture,
    /// A host file or pipe.
    File(File),
}

/// The resource limits of one run. `None` means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory, in bytes.
    pub memory: Option<u64>,
    /// Wall-clock time.
    pub timeout: Option<Duration>,
    /// Bytes written to stdout, stderr and forwarded descriptors together.
    pub max_output: Option<u64>,
    /// Files below the mounts the guest may hold open at once: each holds a
    /// host descriptor, and all sandboxes of a process share its table.
    pub open_files: usize,
}

impl Default for Limits {
    /// 1 GiB of memory, one hour, 1 GiB of output, 256 open files.
    fn default() -> Limits {
        Limits {
            memory: Some(1 << 30),
            timeout: Some(Duration::from_secs(3600)),
            max_output: Some(1 << 30),
            open_files: crate::wasi::fdtable::DEFAULT_MAX_OPEN_FILES,
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// The guest exited (returned from `_start`: 0, or `proc_exit(n)`).
    Exited(i32),
    /// `--timeout` passed.
    TimeLimit,
    /// The guest failed after being refused memory beyond `--memory`.
    MemoryLimit,
    /// stdout and stderr passed `--max-output`.
    OutputLimit,
    /// The guest trapped (a crash: stack overflow, unreachable, bad access).
    Crashed(String),
}

impl Status {
    /// Which limit ended the run, as the binding and the server name it:
    /// "time", "memory" or "output".
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            Status::TimeLimit => Some("time"),
            Status::MemoryLimit => Some("memory"),
            Status::OutputLimit => Some("output"),
            Status::Exited(_) | Status::Crashed(_) => None,
        }
    }

    /// Why the guest crashed, if it did.
    pub fn crash(&self) -> Option<&str> {
        match self {
            Status::Crashed(why) => Some(why),
            _ => None,
        }
    }

    /// The exit status the CLI uses for this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            Status::Exited(n) => *n,
            Status::TimeLimit => 124,
            Status::MemoryLimit => 137,
            Status::OutputLimit => 153,
            Status::Crashed(_) => 134,
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct RunResult {
    pub status: Status,
    /// Captured standard output ([`Output::Capture`]), else empty.
    pub stdout: Vec<u8>,
    /// Captured standard error ([`Output::Capture`]), else empty.
    pub stderr: Vec<u8>,
}

/// One run of a program: its arguments, environment, mounts, descriptors
/// and limits. Nothing is shared with the host unless given here.
pub struct Sandbox {
    program: Program,
    args: Vec<String>,
    env: Vec<(String, String)>,
    mounts: Vec<MountSpec>,
    files: Vec<(u32, File, bool, bool)>,
    stdin: Input,
    stdout: Output,
    stderr: Output,
    limits: Limits,
    allow_symlinks: bool,
    native: Arc<crate::native::NativeModules>,
}

impl Sandbox {
    /// A sandbox for `program`, with `argv[0]` set to the program's name,
    /// no mounts, no environment, empty stdin, captured output and the
    /// default limits.
    pub fn new(program: &Program) -> Sandbox {
        Sandbox {
            args: vec![program.name.clone()],
            program: program.clone(),
            env: Vec::new(),
            mounts: Vec::new(),
            files: Vec::new(),
            stdin: Input::Null,
            stdout: Output::Capture,
            stderr: Output::Capture,
            limits: Limits::default(),
            allow_symlinks: false,
            native: crate::native::NativeModules::none(),
        }
    }

    /// Sets `argv[0]`, the name the guest sees itself run as.
    pub fn arg0(mut self, name: &str) -> Sandbox {
        self.args[0] = name.to_string();
        self
    }

    /// Appends guest arguments (after `argv[0]`).
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Sandbox {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets a guest environment variable.
    pub fn env(mut self, name: &str, value: &str) -> Sandbox {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds a mount.
    pub fn mount(mut self, spec: MountSpec) -> Sandbox {
        self.mounts.push(spec);
        self
    }

    /// Gives the guest an open host file or pipe as descriptor `guest_fd`.
    pub fn file(mut self, guest_fd: u32, file: File, read: bool, write: bool) -> Sandbox {
        self.files.push((guest_fd, file, read, write));
        self
    }

    pub fn stdin(mut self, input: Input) -> Sandbox {
        self.stdin = input;
        self
    }

    pub fn stdout(mut self, output: Output) -> Sandbox {
        self.stdout = output;
        self
    }

    pub fn stderr(mut self, output: Output) -> Sandbox {
        self.stderr = output;
        self
    }

    pub fn limits(mut self, limits: Limits) -> Sandbox {
        self.limits = limits;
        self
    }

    /// Lets the guest create symbolic links in read-write mounts.
    pub fn allow_symlinks(mut self, allow: bool) -> Sandbox {
        self.allow_symlinks = allow;
        self
    }

    /// The native modules the guest may load (`dlopen`): by default none.
    pub fn native_modules(mut self, modules: Arc<crate::native::NativeModules>) -> Sandbox {
        self.native = modules;
        self
    }

    /// Runs the program to its end and reports how it ended.
    pub fn run(self) -> Result<RunResult, Error> {
        let pre = self.program.pre.clone();
        let epochs = self.program.interruption == Interruption::Epochs;
        let timeout = self.limits.timeout;
        let setup = self.setup()?;
        let engine = pre.module().engine().clone();

        let guest = setup.guest;
        // Without epochs, nothing in the guest's code stops it: the process
        // ends at the deadline (see Interruption::EndProcess).
        let _watchdog = match guest.wasi.deadline {
            Some(deadline) if !epochs => Some(end_process_at(deadline, timeout)?),
            _ => None,
        };
        let status = on_guest_thread(move || run_guest(&engine, &pre, guest, epochs))?;
        let take = |b: Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().unwrap());
        Ok(RunResult {
            status,
            stdout: take(setup.stdout),
            stderr: take(setup.stderr),
        })
    }

    /// The guest's state before it starts: descriptors, namespace, limits.
    pub(crate) fn setup(self) -> Result<Setup, Error> {
        let ns = Namespace::open(&self.mounts)?;
        let mut fds = FdTable::new(self.limits.open_files);
        let out_buf = Arc::new(Mutex::new(Vec::new()));
        let err_buf = Arc::new(Mutex::new(Vec::new()));
        fds.insert_at(0, input_desc(self.stdin)?);
        fds.insert_at(1, output_desc(self.stdout, 1, &out_buf)?);
        fds.insert_at(2, output_desc(self.stderr, 2, &err_buf)?);
        for (n, file, read, write) in self.files {
            if n as usize >= crate::wasi::fdtable::MAX_FDS {
                return Err(Error::input(format!(
                    "guest descriptor {n} is too large: use a number below {}",
                    crate::wasi::fdtable::MAX_FDS
                )));
            }
            fds.insert_at(n, Desc::host(file, read, write));
        }
        let root = ns.root();
        fds.push(Desc::Dir {
            target: root,
            preopen: Some("/".into()),
        })
        .map_err(|_| Error::input("too many descriptors"))?;

        let env = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        // A limit too far away to represent is no limit.
        let deadline = self
            .limits
            .timeout
            .and_then(|t| Instant::now().checked_add(t));
        let memory_max = self.limits.memory.unwrap_or(MAX_MEMORY).min(MAX_MEMORY) as usize;
        let guest = Guest {
            wasi: WasiCtx {
                fds,
                ns,
                args: self.args,
                env,
                allow_symlinks: self.allow_symlinks,
                max_output: self.limits.max_output,
                output_written: 0,
                deadline,
                memory: None,
            },
            limiter: MemoryLimiter {
                max: memory_max,
                hit: false,
            },
            session: None,
            native: crate::native::Loader::new(self.native),
        };
        Ok(Setup {
            guest,
            stdout: out_buf,
            stderr: err_buf,
        })
    }
}

/// Runs `f`, which runs wasm code, on a thread of its own: wasm code runs
/// on the host thread's stack, which must have room for the whole wasm
/// stack plus the host's own frames.
pub(crate) fn on_guest_thread<T: Send>(
    f: impl FnOnce() -> Result<T, Error> + Send,
) -> Result<T, Error> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("pynbox-guest".into())
            .stack_size(GUEST_THREAD_STACK)
            .spawn_scoped(s, f)
            .map_err(|e| Error::internal(format!("cannot start the guest thread: {e}")))?
            .join()
            .map_err(|_| Error::internal("the guest thread panicked"))?
    })
}

/// Ends the process at `deadline` unless the returned sender is dropped
/// first (the run ended).
fn end_process_at(
    deadline: Instant,
    limit: Option<Duration>,
) -> Result<std::sync::mpsc::Sender<()>, Error> {
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let limit = limit.map_or(0.0, |t| t.as_secs_f64());
    std::thread::Builder::new()
        .name("pynbox-time-limit".into())
        .stack_size(64 << 10)
        .spawn(move || {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(left) {
                eprintln!("pynbox: time limit of {limit} s reached (--timeout)");
                std::process::exit(124);
            }
        })
        // Without its watchdog the run could outlast its limit: refuse it.
        .map_err(|e| Error::internal(format!("cannot start the time-limit thread: {e}")))?;
    Ok(done)
}

/// A guest ready to start, and where its captured output goes.
pub(crate) struct Setup {
    pub guest: Guest,
    pub stdout: Arc<Mutex<Vec<u8>>>,
    pub stderr: Arc<Mutex<Vec<u8>>>,
}

/// A store for `guest`, with its memory limit, and its deadline brought
/// forward to `timeout` from now if that is sooner.
///
/// The epoch advances every 10 ms; at each tick the wall clock is compared
/// with the deadline, so a loaded machine, whose ticker thread sleeps
/// longer, does not stretch the limit.
pub(crate) fn new_store(
    engine: &Engine,
    mut guest: Guest,
    timeout: Option<Duration>,
    epochs: bool,
) -> Store<Guest> {
    // A limit too far away to represent is no limit.
    if let Some(d) = timeout.and_then(|t| Instant::now().checked_add(t)) {
        guest.wasi.deadline = Some(guest.wasi.deadline.map_or(d, |g| g.min(d)));
    }
    let mut store = Store::new(engine, guest);
    store.limiter(|g| &mut g.limiter);
    if !epochs {
        return store;
    }
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| match ctx.data().wasi.deadline {
        Some(d) if Instant::now() >= d => Err(wasmtime::Error::new(Stop::Timeout)),
        Some(_) => Ok(UpdateDeadline::Continue(1)),
        None => Ok(UpdateDeadline::Continue(u64::MAX / 2)),
    });
    store
}

fn run_guest(
    engine: &Engine,
    pre: &InstancePre<Guest>,
    guest: Guest,
    epochs: bool,
) -> Result<Status, Error> {
    // The deadline is the guest's own, set when the sandbox was made.
    let mut store = new_store(engine, guest, None, epochs);
    let t = Instant::now();
    let instance = match pre.instantiate(&mut store) {
        Ok(i) => i,
        Err(e) => {
            if store.data().limiter.hit {
                return Ok(Status::MemoryLimit);
            }
            return Err(Error::input(format!(
                "cannot start the program: {}",
                root_message(&e)
            )));
        }
    };
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .map_err(|e| Error::input(format!("the program's _start is not usable: {e}")))?;
    timing("instantiate", t);
    let t = Instant::now();
    let result = start.call(&mut store, ());
    timing("run the guest", t);
    let hit_memory = store.data().limiter.hit;
    Ok(match result {
        Ok(()) => Status::Exited(0),
        Err(e) => status_of(&e, hit_memory),
    })
}

/// How a guest that failed with `e` ended; `hit_memory`: it had been
/// refused memory.
pub(crate) fn status_of(e: &wasmtime::Error, hit_memory: bool) -> Status {
    if let Some(stop) = e.downcast_ref::<Stop>() {
        match *stop {
            Stop::Exit(0) => Status::Exited(0),
            Stop::Exit(_) if hit_memory => Status::MemoryLimit,
            Stop::Exit(n) => Status::Exited(n),
            Stop::OutputLimit => Status::OutputLimit,
            Stop::Timeout => Status::TimeLimit,
        }
    } else if let Some(trap) = e.downcast_ref::<Trap>() {
        match trap {
            Trap::Interrupt => Status::TimeLimit,
            _ if hit_memory => Status::MemoryLimit,
            Trap::StackOverflow => Status::Crashed("wasm stack overflow".into()),
            t => Status::Crashed(with_backtrace(t.to_string(), e)),
        }
    } else if hit_memory {
        Status::MemoryLimit
    } else {
        Status::Crashed(root_message(e))
    }
}

/// The guest's wasm backtrace after a trap's message, when the host's
/// environment has PYNBOX_BACKTRACE set: for whoever ports a native package
/// and needs to know which function trapped (the name section names them).
fn with_backtrace(message: String, e: &wasmtime::Error) -> String {
    match e.downcast_ref::<wasmtime::WasmBacktrace>() {
        Some(bt) if std::env::var_os("PYNBOX_BACKTRACE").is_some() => format!("{message}\n{bt}"),
        _ => message,
    }
}

fn input_desc(input: Input) -> Result<Desc, Error> {
    Ok(match input {
        Input::Inherit => Desc::host(inherit(0)?, true, false),
        Input::Null => Desc::Memory {
            input: Some(Cursor::new(Vec::new())),
            output: None,
        },
        Input::Bytes(b) => Desc::Memory {
            input: Some(Cursor::new(b)),
            output: None,
        },
        Input::File(f) => Desc::host(f, true, false),
    })
}

fn output_desc(output: Output, n: i32, buf: &Arc<Mutex<Vec<u8>>>) -> Result<Desc, Error> {
    Ok(match output {
        Output::Inherit => Desc::host(inherit(n)?, false, true),
        Output::Null => Desc::Memory {
            input: None,
            output: Some(Sink::Discard),
        },
        Output::Capture => Desc::Memory {
            input: None,
            output: Some(Sink::Buffer(buf.clone())),
        },
        Output::File(f) => Desc::host(f, false, true),
    })
}

/// A new handle on the host's stdin (0), stdout (1) or stderr (2), so that
/// closing it in the guest leaves the host's own stream open.
#[cfg(unix)]
fn inherit(n: i32) -> Result<File, Error> {
    use std::os::fd::{AsFd, BorrowedFd};
    // SAFETY: 0, 1 and 2 are open for the life of the process or the
    // duplication below fails cleanly.
    let fd = unsafe { BorrowedFd::borrow_raw(n) };
    let owned = fd
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::internal(format!("standard stream {n} is not usable: {e}")))?;
    Ok(File::from(owned))
}

#[cfg(windows)]
fn inherit(n: i32) -> Result<File, Error> {
    use std::os::windows::io::AsHandle;
    let owned = match n {
        0 => std::io::stdin().as_handle().try_clone_to_owned(),
        1 => std::io::stdout().as_handle().try_clone_to_owned(),
        _ => std::io::stderr().as_handle().try_clone_to_owned(),
    }
    .map_err(|e| Error::internal(format!("standard stream {n} is not usable: {e}")))?;
    Ok(File::from(owned))
}
