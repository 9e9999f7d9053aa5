//! Native extension modules: wasm side modules loaded into a running
//! guest, so that one interpreter serves any set of native packages.
//!
//! An extension module (`etree.cpython-313-wasm32-wasi.so`) or a library
//! it needs (`libxml2.so`) is a wasm module built with `clang -fPIC
//! -shared`: it imports the interpreter's memory, function table and stack
//! pointer, says in its `dylink.0` section how much memory and how many
//! table slots it needs, and imports what it uses of the interpreter (the
//! C API, the C library) by name. CPython's ordinary `dlopen` path
//! (`Python/dynload_shlib.c`) reaches the host through three imports
//! (`recipes/python/files/pynbox_dynload.c` is the guest's half):
//!
//! - `pynbox.dl_open(fd, flags) -> handle`: the guest opened the file
//!   itself, through its mounts; the host reads it through that
//!   descriptor, and loads it only if it is one of the modules `pynbox
//!   install` placed ([`Installed`], identified by the sha256 the
//!   package's receipt records), together with the libraries it needs;
//! - `pynbox.dl_sym(handle, name, len) -> address or table index`;
//! - `pynbox.dl_error(buf, cap) -> len`: why the last call failed.
//!
//! Loading ([`link`]) allocates the module's data inside the guest (its
//! own allocator, so the memory limit holds), grows the table, resolves
//! every import against the interpreter's exports and the modules
//! already loaded, applies relocations and runs constructors. A module
//! that cannot be loaded is an `ImportError` in the guest, never an error
//! of the host.

mod cxx;
pub mod dylink;
mod link;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use wasmtime::{Caller, Linker, Module};

use crate::runtime::{Error, Guest, Runtime};
use crate::wasi::memory_of;

/// The largest side module the host reads (numpy's biggest is about
/// 10 MB).
pub const MAX_MODULE_BYTES: u64 = 256 << 20;
/// The longest symbol name `dl_sym` accepts.
const MAX_SYMBOL: usize = 4096;

/// The native modules of an install: the `.so` files its packages'
/// receipts list, by content. Read before the process is locked down.
#[derive(Clone, Debug, Default)]
pub struct Installed {
    /// sha256 of the file's bytes → where it is.
    by_hash: HashMap<String, InstalledModule>,
    /// Any module may be loaded, also one the guest wrote
    /// ([`Installed::allowing_any`]).
    any: bool,
    /// The install's receipts' identities, when read from an install:
    /// names its state for the record of how its modules were mapped.
    stamp: Option<String>,
}

#[derive(Clone, Debug)]
struct InstalledModule {
    /// The path the guest sees (`/python/lib/.../x.so`), for messages.
    guest_path: String,
    /// The file on the host, for libraries named as needed.
    host_path: PathBuf,
}

impl Installed {
    /// No modules: every `dlopen` is refused.
    pub fn none() -> Installed {
        Installed::default()
    }

    /// The `.so` files installed in `dest` (`pynbox install DEST ...`).
    ///
    /// Every run needs this list, and the receipts it comes from are large
    /// (about 1 MB of JSON with numpy installed, 1.7 ms to parse), so the
    /// list is kept in `DEST/cache/native-modules`, stamped with the
    /// receipts' identities: any install or removal changes a receipt, and
    /// with it the stamp, and the list is made again.
    pub fn read(dest: &Path) -> Result<Installed, Error> {
        let stamp = receipts_stamp(dest);
        let list = dest.join("cache").join(MODULE_LIST);
        if let Some(installed) = stamp
            .as_deref()
            .and_then(|stamp| read_module_list(&list, stamp, dest))
        {
            return Ok(Installed { stamp, ..installed });
        }
        let installed = crate::install::Dest::open(dest, false)
            .map_err(|e| Error::input(format!("{}: {e}", dest.display())))?;
        let receipts = installed
            .receipts()
            .map_err(|e| Error::input(format!("{}: {e}", dest.display())))?;
        let mut by_hash = HashMap::new();
        for r in receipts {
            for f in r.files {
                let Some(below_root) = f.path.strip_prefix("root/") else {
                    continue;
                };
                if is_module_name(below_root) {
                    by_hash.insert(
                        f.sha256.to_ascii_lowercase(),
                        InstalledModule {
                            guest_path: format!("/{below_root}"),
                            host_path: dest.join(&f.path),
                        },
                    );
                }
            }
        }
        if let Some(stamp) = &stamp {
            // A list that cannot be written only costs the next run time.
            let _ = write_module_list(&list, stamp, dest, &by_hash);
        }
        Ok(Installed {
            by_hash,
            any: false,
            stamp,
        })
    }

    /// Modules an embedder placed itself: each `(guest path, host file)`
    /// is recorded by the sha256 of the file's bytes now, and only those
    /// exact bytes load later.
    pub fn from_files(files: &[(String, PathBuf)]) -> Result<Installed, Error> {
        let mut by_hash = HashMap::new();
        for (guest_path, host_path) in files {
            let bytes = std::fs::File::open(host_path)
                .map_err(|e| e.to_string())
                .and_then(|f| crate::runtime::read_whole(&f, MAX_MODULE_BYTES))
                .map_err(|e| Error::input(format!("cannot read {}: {e}", host_path.display())))?;
            by_hash.insert(
                hex_sha256(&bytes),
                InstalledModule {
                    guest_path: guest_path.clone(),
                    host_path: host_path.clone(),
                },
            );
        }
        Ok(Installed {
            by_hash,
            any: false,
            stamp: None,
        })
    }

    /// Lets the guest load any side module it can open, also one it wrote
    /// itself, not only those listed. The guest then brings its own code:
    /// still wasm, confined like the interpreter, but chosen by the guest
    /// (see docs/SECURITY.md). Needs a process that may still map new
    /// code (the CLI allows it only without its second wall).
    pub fn allowing_any(mut self) -> Installed {
        self.any = true;
        self
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The installed library with this file name (a `dylink.0` needed
    /// entry); the first by guest path when two packages ship one.
    fn library(&self, name: &str) -> Option<(&str, &InstalledModule)> {
        self.by_hash
            .iter()
            .filter(|(_, m)| m.guest_path.rsplit('/').next() == Some(name))
            .min_by(|a, b| a.1.guest_path.cmp(&b.1.guest_path))
            .map(|(h, m)| (h.as_str(), m))
    }
}

/// The list of an install's native modules, in its cache (see
/// [`Installed::read`]).
const MODULE_LIST: &str = "native-modules";
const MODULE_LIST_HEADER: &str = "pynbox native modules 1";

/// The identities of `dest`'s receipts (name, size, inode, times), which
/// change whenever a package is installed, upgraded or removed.
fn receipts_stamp(dest: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for e in std::fs::read_dir(dest.join("packages")).ok()? {
        let e = e.ok()?;
        let name = e.file_name().into_string().ok()?;
        if name.ends_with(".installed") {
            let file = std::fs::File::open(e.path()).ok()?;
            parts.push(format!(
                "{name}={}",
                crate::runtime::open_file_identity(&file)?
            ));
        }
    }
    parts.sort();
    let stamp = parts.join(" ");
    (!stamp.contains('\n')).then_some(stamp)
}

/// The list made for exactly these receipts, if there is one and it reads
/// whole.
fn read_module_list(list: &Path, stamp: &str, dest: &Path) -> Option<Installed> {
    let text = std::fs::read_to_string(list).ok()?;
    let mut lines = text.lines();
    if lines.next()? != MODULE_LIST_HEADER || lines.next()? != stamp {
        return None;
    }
    let mut by_hash = HashMap::new();
    let mut ended = false;
    for line in lines {
        if line == "end" {
            ended = true;
            break;
        }
        let (sha, path) = line.split_once(' ')?;
        let below_root = path.strip_prefix("root/")?;
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        if !is_module_name(below_root) || below_root.split('/').any(|c| c == ".." || c.is_empty()) {
            return None;
        }
        by_hash.insert(
            sha.to_ascii_lowercase(),
            InstalledModule {
                guest_path: format!("/{below_root}"),
                host_path: dest.join(path),
            },
        );
    }
    ended.then_some(Installed {
        by_hash,
        any: false,
        stamp: None,
    })
}

fn write_module_list(
    list: &Path,
    stamp: &str,
    dest: &Path,
    by_hash: &HashMap<String, InstalledModule>,
) -> std::io::Result<()> {
    let mut text = format!("{MODULE_LIST_HEADER}\n{stamp}\n");
    for (sha, m) in by_hash {
        let path = m.host_path.strip_prefix(dest).ok().and_then(|p| p.to_str());
        match path {
            Some(p) if !p.contains('\n') => text.push_str(&format!("{sha} {p}\n")),
            _ => return Ok(()), // not expressible: read the receipts each run
        }
    }
    text.push_str("end\n");
    std::fs::create_dir_all(list.parent().unwrap_or(Path::new(".")))?;
    crate::runtime::write_atomically(list, text.as_bytes())
}

/// Whether a file below the root is a native module by its name: an
/// extension module or a shared library (`x.so`, `libfoo.so.2`).
pub fn is_module_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".so") || name.contains(".so.")
}

/// Why a module that is not in [`Installed`] is refused.
pub(crate) const NOT_INSTALLED: &str = "not a native module installed by `pynbox install` (modules written or changed inside the sandbox are refused)";

/// A module ready to instantiate: compiled, its `dylink.0` read.
pub(crate) struct Ready {
    pub module: Module,
    pub info: dylink::DylinkInfo,
    /// sha256 of its bytes: which installed module it is.
    pub hash: String,
}

/// The installed modules compiled for one [`Runtime`]: what a guest of
/// that runtime may load. Shared by every sandbox and session of an
/// install.
pub struct NativeModules {
    installed: Installed,
    runtime: Option<Runtime>,
    /// Modules made ready: by sha256, and the sha256 by file identity,
    /// so that a module made ready once is not mapped again; and the code
    /// the CLI's preload mapped before its second wall forbids new
    /// executable memory.
    ready: Mutex<Prepared>,
}

#[derive(Default)]
struct Prepared {
    by_hash: HashMap<String, Arc<Ready>>,
    by_identity: HashMap<String, String>,
    /// Code [`NativeModules::preload`] mapped, by sha256, until the
    /// module is first loaded and becomes [`Ready`].
    mapped: HashMap<String, crate::code_memory::MappedCode>,
}

impl NativeModules {
    /// Nothing may be loaded.
    pub fn none() -> Arc<NativeModules> {
        Arc::new(NativeModules {
            installed: Installed::none(),
            runtime: None,
            ready: Mutex::new(Prepared::default()),
        })
    }

    /// Whether no module is installed (and none other may load).
    pub fn is_empty(&self) -> bool {
        self.installed.is_empty() && !self.installed.any
    }

    pub fn new(runtime: &Runtime, installed: Installed) -> Arc<NativeModules> {
        Arc::new(NativeModules {
            installed,
            runtime: Some(runtime.clone()),
            ready: Mutex::new(Prepared::default()),
        })
    }

    /// Maps every installed module's compiled code now, from the cache
    /// `pynbox install` filled (found by file identity, without reading
    /// the modules), with its machine code executable but not yet decoded:
    /// for a process about to forbid itself new executable memory (the
    /// CLI's second wall). A module is decoded when a guest first loads
    /// it, so a run pays only for what it imports. A module the cache
    /// cannot serve this way is made ready now, whole; one that fails
    /// fails again, with its message, when the guest asks for it.
    ///
    /// What was mapped is recorded in the cache for the install's state
    /// (its receipts) and this engine: module, file identity, cache entry
    /// and the entry's checked identity. The next run maps from the record
    /// with a few system calls a module, without opening the modules or
    /// the cache's index; an entry that changed since is found by its
    /// identity and takes the long way.
    pub fn preload(&self) {
        let t = std::time::Instant::now();
        self.map_installed();
        crate::runtime::timing("preload", t);
    }

    fn map_installed(&self) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        let record = self
            .installed
            .stamp
            .as_deref()
            .and_then(|stamp| runtime.mapping_record(stamp));
        let mut lines = Vec::new();
        let mut left: HashMap<&String, &InstalledModule> = self.installed.by_hash.iter().collect();
        if let Some(text) = record
            .as_ref()
            .and_then(|r| std::fs::read_to_string(r).ok())
        {
            for line in text.lines() {
                let mut f = line.split('\t');
                let (Some(sha), Some(identity), Some(key), Some(code_identity), None) =
                    (f.next(), f.next(), f.next(), f.next(), f.next())
                else {
                    continue;
                };
                if !left.contains_key(&sha.to_string()) {
                    continue;
                }
                if let Some(code) = runtime.map_checked_entry(key, code_identity) {
                    let mut prepared = self.ready.lock().unwrap();
                    prepared
                        .by_identity
                        .insert(identity.to_string(), sha.to_string());
                    prepared.mapped.insert(sha.to_string(), code);
                    left.remove(&sha.to_string());
                    lines.push(line.to_string());
                }
            }
            if left.is_empty() {
                return;
            }
        }
        let mut whole = Vec::new();
        for m in left.into_values() {
            let t = std::time::Instant::now();
            let Ok(file) = std::fs::File::open(&m.host_path) else {
                continue;
            };
            let identity = crate::runtime::open_file_identity(&file);
            match (identity, runtime.map_side_module(&file)) {
                (Some(identity), Some(side)) if self.installed.by_hash.contains_key(&side.sha) => {
                    lines.push(format!(
                        "{}\t{identity}\t{}\t{}",
                        side.sha, side.key, side.code_identity
                    ));
                    let mut prepared = self.ready.lock().unwrap();
                    prepared.by_identity.insert(identity, side.sha.clone());
                    prepared.mapped.insert(side.sha, side.code);
                }
                _ => whole.push(file),
            }
            crate::runtime::timing(&format!("map {}", m.guest_path), t);
        }
        if let Some(record) = record {
            // Only well-formed lines (identities hold no tabs or newlines);
            // a record that cannot be written costs the next run time.
            lines.retain(|l| l.split('\t').count() == 4 && !l.contains('\n'));
            lines.sort();
            let _ =
                std::fs::create_dir_all(record.parent().unwrap_or(Path::new("."))).and_then(|_| {
                    crate::runtime::write_atomically(&record, lines.join("\n").as_bytes())
                });
        }
        for file in whole {
            let _ = self.ready_from_file(&file);
        }
    }

    /// The module open as `file`, if it is an installed one.
    pub(crate) fn ready_from_file(&self, file: &std::fs::File) -> Result<Arc<Ready>, String> {
        let Some(runtime) = &self.runtime else {
            return Err(
                "no native modules are installed in this sandbox (only modules placed by `pynbox install` may be loaded)"
                    .into(),
            );
        };
        let installed = |sha: &str| self.installed.any || self.installed.by_hash.contains_key(sha);
        if self.installed.is_empty() && !self.installed.any {
            return Err(
                "no native modules are installed in this sandbox (only modules placed by `pynbox install` may be loaded)"
                    .into(),
            );
        }
        let identity = crate::runtime::open_file_identity(file);
        {
            let prepared = self.ready.lock().unwrap();
            if let Some(r) = identity
                .as_ref()
                .and_then(|i| prepared.by_identity.get(i))
                .and_then(|h| prepared.by_hash.get(h))
            {
                return Ok(r.clone());
            }
        }
        let premapped = identity.as_ref().and_then(|i| {
            let prepared = self.ready.lock().unwrap();
            let sha = prepared.by_identity.get(i)?;
            Some((sha.clone(), *prepared.mapped.get(sha)?))
        });
        let (module, info, hash) = match premapped {
            Some((sha, code)) => {
                let (module, info) = runtime.side_module_mapped(file, code)?;
                (module, info, sha)
            }
            None => {
                // The same bytes in another file (a copy) use the code
                // already made ready or mapped.
                let mapped = |sha: &str| {
                    let prepared = self.ready.lock().unwrap();
                    if let Some(r) = prepared.by_hash.get(sha) {
                        return Some(r.module.clone());
                    }
                    let code = *prepared.mapped.get(sha)?;
                    drop(prepared);
                    runtime.module_from_mapped(code).ok()
                };
                runtime.side_module(file, &installed, &mapped)?
            }
        };
        if !self.installed.by_hash.contains_key(&hash) {
            // A module of the guest's own (allowing_any): not kept, so that
            // guests writing module after module cannot grow this table.
            return Ok(Arc::new(Ready { module, info, hash }));
        }
        let mut prepared = self.ready.lock().unwrap();
        if let Some(i) = identity {
            prepared.by_identity.insert(i, hash.clone());
        }
        Ok(prepared
            .by_hash
            .entry(hash.clone())
            .or_insert_with(|| Arc::new(Ready { module, info, hash }))
            .clone())
    }
}

pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One guest's loaded modules.
pub(crate) struct Loader {
    modules: Arc<NativeModules>,
    loaded: Vec<link::Library>,
    /// Why the last call failed, for `dl_error`.
    error: String,
    /// Function → its table slot, so that a function has one address
    /// whoever asks (CPython compares slot functions by address).
    slots: Option<HashMap<usize, u32>>,
    /// The interpreter's C++ library symbols (`cxx.rs`), read at the first
    /// name the interpreter does not export.
    cxx: Option<Arc<HashMap<String, cxx::Symbol>>>,
}

impl Loader {
    pub(crate) fn new(modules: Arc<NativeModules>) -> Loader {
        Loader {
            modules,
            loaded: Vec::new(),
            error: String::new(),
            slots: None,
            cxx: None,
        }
    }
}

impl Loader {
    /// How many modules the guest has loaded.
    pub(crate) fn loaded_count(&self) -> usize {
        self.loaded.len()
    }
}

/// What a `dl_*` import answers: the value, or 0 with the reason kept for
/// `dl_error`; a trap of guest code stops the guest.
fn answer(caller: &mut Caller<'_, Guest>, r: Result<i32, link::Fail>) -> wasmtime::Result<i32> {
    match r {
        Ok(v) => Ok(v),
        Err(link::Fail::Refuse(why)) => {
            caller.data_mut().native.error = why;
            Ok(0)
        }
        Err(link::Fail::Trap(e)) => Err(e),
    }
}

/// Registers `pynbox.dl_open`, `pynbox.dl_sym` and `pynbox.dl_error`.
pub(crate) fn add_to_linker(linker: &mut Linker<Guest>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "pynbox",
        "dl_open",
        |mut caller: Caller<'_, Guest>, fd: i32, _flags: i32| -> wasmtime::Result<i32> {
            let r = link::open(&mut caller, fd);
            answer(&mut caller, r)
        },
    )?;
    linker.func_wrap(
        "pynbox",
        "dl_sym",
        |mut caller: Caller<'_, Guest>, handle: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let name = {
                let memory = memory_of(&mut caller)?;
                let data = memory.data(&caller);
                let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
                match ptr.checked_add(len) {
                    Some(end) if end <= data.len() && len <= MAX_SYMBOL => {
                        String::from_utf8_lossy(&data[ptr..end]).into_owned()
                    }
                    _ => {
                        caller.data_mut().native.error = "dlsym: bad symbol name".into();
                        return Ok(0);
                    }
                }
            };
            let r = link::symbol(&mut caller, handle, &name).map(|v| v as i32);
            answer(&mut caller, r)
        },
    )?;
    linker.func_wrap(
        "pynbox",
        "dl_error",
        |mut caller: Caller<'_, Guest>, ptr: i32, cap: i32| -> wasmtime::Result<i32> {
            let message = std::mem::take(&mut caller.data_mut().native.error);
            let memory = memory_of(&mut caller)?;
            let data = memory.data_mut(&mut caller);
            let (ptr, cap) = (ptr as u32 as usize, cap as u32 as usize);
            let n = message.len().min(cap);
            match ptr.checked_add(n) {
                Some(end) if end <= data.len() => {
                    data[ptr..end].copy_from_slice(&message.as_bytes()[..n]);
                    Ok(n as i32)
                }
                _ => Ok(0),
            }
        },
    )?;
    Ok(())
}
