//! Loading a side module into the running guest: the dynamic linker.
//!
//! Every step works on the guest's own store, through the interpreter's
//! exports: data goes where the guest's allocator gives room, functions
//! get slots in the guest's table, and nothing of the host is reachable
//! from a side module that is not reachable from the interpreter itself.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use wasmtime::{
    Caller, Extern, ExternType, Func, FuncType, Global, GlobalType, Instance, Module, Mutability,
    Ref, Table, Val, ValType,
};

use super::{NativeModules, Ready};
use crate::runtime::Guest;
use crate::wasi::fdtable::Desc;
use crate::wasi::memory_of;

/// How deep libraries may need libraries.
const MAX_DEPTH: usize = 16;
/// The most modules one guest may load.
const MAX_LOADED: usize = 4096;

/// A module in the guest.
pub(crate) struct Library {
    hash: String,
    instance: Instance,
    memory_base: u32,
}

pub(crate) enum Fail {
    /// The module is not loaded; the message goes to `dlerror`.
    Refuse(String),
    /// Guest code failed while loading (a constructor trapped, the time
    /// limit passed): the guest stops as it would for any trap.
    Trap(wasmtime::Error),
}

fn refuse<T>(why: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::Refuse(why.into()))
}

/// `dl_open`: loads the module open as guest descriptor `fd`.
pub(crate) fn open(caller: &mut Caller<'_, Guest>, fd: i32) -> Result<i32, Fail> {
    let file = match u32::try_from(fd).map(|fd| caller.data().wasi.fds.get(fd)) {
        Ok(Ok(Desc::File { file, .. })) => file.try_clone(),
        _ => return refuse("not a file open in the sandbox"),
    };
    let file = file.map_err(|e| Fail::Refuse(format!("cannot read it: {e}")))?;
    let modules = caller.data().native.modules.clone();
    let ready = modules.ready_from_file(&file).map_err(Fail::Refuse)?;
    load(caller, &modules, ready, 0)
}

/// `dl_sym`: the address of a data symbol, or the table slot of a
/// function, that module `handle` exports.
pub(crate) fn symbol(caller: &mut Caller<'_, Guest>, handle: i32, name: &str) -> Result<u32, Fail> {
    let Some(lib) = usize::try_from(handle)
        .ok()
        .and_then(|h| h.checked_sub(1))
        .and_then(|i| caller.data().native.loaded.get(i))
    else {
        return refuse(format!(
            "dlsym: {handle} is not a handle of a loaded module"
        ));
    };
    let (instance, base) = (lib.instance, lib.memory_base);
    match instance.get_export(&mut *caller, name) {
        Some(Extern::Func(f)) => slot(caller, f),
        Some(Extern::Global(g)) => match data_address(caller, g, base) {
            Some(a) => Ok(a),
            None => refuse(format!("{name} is not a data symbol")),
        },
        _ => refuse(format!("undefined symbol: {name}")),
    }
}

/// Loads `ready` (and, first, the libraries it needs); its handle.
fn load(
    caller: &mut Caller<'_, Guest>,
    modules: &Arc<NativeModules>,
    ready: Arc<Ready>,
    depth: usize,
) -> Result<i32, Fail> {
    if depth > MAX_DEPTH {
        return refuse(format!(
            "libraries need libraries more than {MAX_DEPTH} deep (a cycle?)"
        ));
    }
    if let Some(h) = handle_of(caller, &ready.hash) {
        return Ok(h);
    }
    for lib in &ready.info.needed {
        let Some((want, m)) = modules.installed.library(lib) else {
            return refuse(format!(
                "it needs {lib}, which no installed package provides"
            ));
        };
        if handle_of(caller, want).is_some() {
            continue;
        }
        let (want, guest_path) = (want.to_string(), m.guest_path.clone());
        let needed = std::fs::File::open(&m.host_path)
            .map_err(|e| Fail::Refuse(format!("cannot read {guest_path}: {e}")))
            .and_then(|f| modules.ready_from_file(&f).map_err(Fail::Refuse))
            .map_err(|e| match e {
                Fail::Refuse(why) => Fail::Refuse(format!("needed library {lib}: {why}")),
                trap => trap,
            })?;
        if needed.hash != want {
            return refuse(format!(
                "{guest_path} changed since it was installed: install its package again"
            ));
        }
        load(caller, modules, needed, depth + 1).map_err(|e| match e {
            Fail::Refuse(why) => Fail::Refuse(format!("needed library {lib}: {why}")),
            trap => trap,
        })?;
    }
    // A library loaded while loading what it needs is loaded.
    if let Some(h) = handle_of(caller, &ready.hash) {
        return Ok(h);
    }
    instantiate(caller, &ready)
}

fn handle_of(caller: &Caller<'_, Guest>, hash: &str) -> Option<i32> {
    let loaded = &caller.data().native.loaded;
    loaded
        .iter()
        .position(|l| l.hash == hash)
        .map(|i| i as i32 + 1)
}

/// The interpreter's export `name`, which a loadable interpreter has.
fn main_export(caller: &mut Caller<'_, Guest>, name: &str) -> Result<Extern, Fail> {
    caller.get_export(name).ok_or_else(|| {
        Fail::Refuse(format!(
            "this interpreter cannot load native modules (it does not export {name}): \
             install the current python package"
        ))
    })
}

fn instantiate(caller: &mut Caller<'_, Guest>, ready: &Ready) -> Result<i32, Fail> {
    let (module, info) = (&ready.module, &ready.info);
    if caller.data().native.loaded.len() >= MAX_LOADED {
        return refuse(format!("more than {MAX_LOADED} native modules loaded"));
    }
    let memory = memory_of(caller).map_err(Fail::Trap)?;
    let Extern::Table(table) = main_export(caller, "__indirect_function_table")? else {
        return refuse("the interpreter's __indirect_function_table is not a table");
    };
    let Extern::Global(stack_pointer) = main_export(caller, "__stack_pointer")? else {
        return refuse("the interpreter's __stack_pointer is not a global");
    };
    let alloc = main_export(caller, "pynbox_dl_alloc")?
        .into_func()
        .and_then(|f| f.typed::<(i32, i32), i32>(&*caller).ok())
        .ok_or_else(|| {
            Fail::Refuse("the interpreter's pynbox_dl_alloc has the wrong type".into())
        })?;

    // The module's data, inside the guest's heap: zeroed (its bss) and
    // counted against the guest's memory limit.
    let memory_base = if info.memory_size > 0 {
        let align = 1i32 << info.memory_align_log2;
        let p = alloc
            .call(&mut *caller, (info.memory_size as i32, align))
            .map_err(Fail::Trap)? as u32;
        if p == 0 {
            return refuse(format!(
                "no memory for its {} bytes of data (the memory limit?)",
                info.memory_size
            ));
        }
        p
    } else {
        0
    };
    // Its slots in the table, after every slot in use.
    let table_base = table
        .grow(&mut *caller, u64::from(info.table_size), Ref::Func(None))
        .map_err(|_| {
            Fail::Refuse(format!(
                "no room in the function table for {} more slots",
                info.table_size
            ))
        })?;
    let table_base = u32::try_from(table_base)
        .map_err(|_| Fail::Refuse("the function table is too large".into()))?;

    let mut imports = Vec::new();
    // GOT entries for symbols the module defines itself: set once it is
    // instantiated.
    let mut pending: Vec<(String, Global, bool)> = Vec::new();
    // Its own weak functions that it imports: filled once it is
    // instantiated.
    let mut own_funcs: Vec<(String, Arc<OnceLock<Func>>)> = Vec::new();
    for import in module.imports() {
        let (m, n) = (import.module(), import.name());
        let ext: Extern = match (m, n, import.ty()) {
            ("env", "memory", ExternType::Memory(_)) => memory.into(),
            ("env", "__indirect_function_table", ExternType::Table(_)) => table.into(),
            ("env", "__stack_pointer", ExternType::Global(_)) => stack_pointer.into(),
            ("env", "__memory_base", ExternType::Global(_)) => {
                constant(caller, memory_base)?.into()
            }
            ("env", "__table_base", ExternType::Global(_)) => constant(caller, table_base)?.into(),
            ("GOT.mem", _, ExternType::Global(_)) => {
                let addr = resolve_data(caller, n);
                let g = got(caller, addr.unwrap_or(0))?;
                if addr.is_none() {
                    pending.push((n.to_string(), g, false));
                }
                g.into()
            }
            ("GOT.func", _, ExternType::Global(_)) => {
                let index = match resolve_func(caller, n) {
                    Some(f) => Some(slot(caller, f)?),
                    None => None,
                };
                let g = got(caller, index.unwrap_or(0))?;
                if index.is_none() {
                    pending.push((n.to_string(), g, true));
                }
                g.into()
            }
            ("env", _, ExternType::Func(ty)) => match resolve_func(caller, n) {
                Some(f) => f.into(),
                // A weak definition of its own (C++ templates and inline
                // functions of default visibility): wasm-ld imports it so
                // that an earlier definition wins, as in ELF; with none,
                // the module's own is called, through a trampoline that
                // finds it once the module is instantiated.
                None if exports_func(module, n) => {
                    let own = Arc::new(OnceLock::new());
                    own_funcs.push((n.to_string(), own.clone()));
                    trampoline(caller, &ty, own).into()
                }
                None => return refuse(format!("undefined symbol: {n}")),
            },
            _ => {
                return refuse(format!(
                    "it imports {m}.{n}, which a native module cannot import"
                ))
            }
        };
        imports.push(ext);
    }
    // Instantiating also runs its start function (wasm-ld's, which sets
    // its internal GOT entries; a hostile one's is guest code like any).
    let instance = Instance::new(&mut *caller, module, &imports).map_err(|e| {
        let stopped = e.downcast_ref::<crate::wasi::Stop>().is_some()
            || matches!(
                e.downcast_ref::<wasmtime::Trap>(),
                Some(wasmtime::Trap::Interrupt)
            );
        if stopped || caller.data().limiter.hit {
            Fail::Trap(e)
        } else {
            Fail::Refuse(format!("cannot link it: {}", root_message(&e)))
        }
    })?;

    for (name, own) in own_funcs {
        let f = instance
            .get_func(&mut *caller, &name)
            .ok_or_else(|| Fail::Refuse(format!("undefined symbol: {name}")))?;
        // (Set once: the cell is new and only this loop fills it.)
        let _ = own.set(f);
    }
    // What the module defines of what it reaches through its GOT.
    for (name, g, func) in pending {
        let value = match instance.get_export(&mut *caller, &name) {
            Some(Extern::Func(f)) if func => Some(slot(caller, f)?),
            Some(Extern::Global(d)) if !func => data_address(caller, d, memory_base),
            _ => None,
        };
        match value {
            Some(v) => g
                .set(&mut *caller, Val::I32(v as i32))
                .map_err(Fail::Trap)?,
            None if info.weak.contains(&name) => {}
            None => return refuse(format!("undefined symbol: {name}")),
        }
    }
    // Its own functions' slots are their addresses for everyone.
    remember_slots(
        caller,
        table,
        u64::from(table_base),
        u64::from(info.table_size),
    );

    caller.data_mut().native.loaded.push(Library {
        hash: ready.hash.clone(),
        instance,
        memory_base,
    });
    let handle = caller.data().native.loaded.len() as i32;
    for init in ["__wasm_apply_data_relocs", "__wasm_call_ctors"] {
        if let Ok(f) = instance.get_typed_func::<(), ()>(&mut *caller, init) {
            f.call(&mut *caller, ()).map_err(Fail::Trap)?;
        }
    }
    Ok(handle)
}

fn exports_func(module: &Module, name: &str) -> bool {
    matches!(module.get_export(name), Some(ExternType::Func(_)))
}

/// A host function of type `ty` that calls the function `own` will hold.
/// Called before that (by the module's start function), it fails, and the
/// load is refused naming why.
fn trampoline(caller: &mut Caller<'_, Guest>, ty: &FuncType, own: Arc<OnceLock<Func>>) -> Func {
    Func::new(
        &mut *caller,
        ty.clone(),
        move |mut caller, params, results| {
            let f = *own.get().ok_or_else(|| {
                wasmtime::Error::msg("a native module called its own function before it was linked")
            })?;
            f.call(&mut caller, params, results)
        },
    )
}

fn constant(caller: &mut Caller<'_, Guest>, v: u32) -> Result<Global, Fail> {
    Global::new(
        &mut *caller,
        GlobalType::new(ValType::I32, Mutability::Const),
        Val::I32(v as i32),
    )
    .map_err(Fail::Trap)
}

fn got(caller: &mut Caller<'_, Guest>, v: u32) -> Result<Global, Fail> {
    Global::new(
        &mut *caller,
        GlobalType::new(ValType::I32, Mutability::Var),
        Val::I32(v as i32),
    )
    .map_err(Fail::Trap)
}

/// A function of that name: the interpreter's first, then the loaded
/// modules' in load order (as `RTLD_GLOBAL` would).
fn resolve_func(caller: &mut Caller<'_, Guest>, name: &str) -> Option<Func> {
    if let Some(Extern::Func(f)) = caller.get_export(name) {
        return Some(f);
    }
    if let Some(super::cxx::Symbol::Function(slot)) = cxx_symbol(caller, name) {
        return super::cxx::function_at(caller, slot);
    }
    let instances: Vec<Instance> = caller
        .data()
        .native
        .loaded
        .iter()
        .map(|l| l.instance)
        .collect();
    instances
        .into_iter()
        .find_map(|i| i.get_func(&mut *caller, name))
}

/// The address of a data symbol of that name, found as [`resolve_func`]
/// finds functions.
fn resolve_data(caller: &mut Caller<'_, Guest>, name: &str) -> Option<u32> {
    if let Some(Extern::Global(g)) = caller.get_export(name) {
        return data_address(caller, g, 0);
    }
    if let Some(super::cxx::Symbol::Data(address)) = cxx_symbol(caller, name) {
        return Some(address);
    }
    let libs: Vec<(Instance, u32)> = caller
        .data()
        .native
        .loaded
        .iter()
        .map(|l| (l.instance, l.memory_base))
        .collect();
    libs.into_iter().find_map(|(i, base)| {
        let g = i.get_global(&mut *caller, name)?;
        data_address(caller, g, base)
    })
}

/// The interpreter's C++ library symbol `name` (see `cxx.rs`), from its
/// table as read at the first lookup of this guest.
fn cxx_symbol(caller: &mut Caller<'_, Guest>, name: &str) -> Option<super::cxx::Symbol> {
    // Only mangled C++ names are in the table.
    if !name.starts_with("_Z") {
        return None;
    }
    let table = match &caller.data().native.cxx {
        Some(t) => t.clone(),
        None => {
            let t = super::cxx::read_table(caller);
            caller.data_mut().native.cxx = Some(t.clone());
            t
        }
    };
    table.get(name).copied()
}

/// An exported data symbol is an immutable i32 global: its address in
/// the interpreter, or its offset from the module's `__memory_base`.
pub(super) fn data_address(caller: &mut Caller<'_, Guest>, g: Global, base: u32) -> Option<u32> {
    let ty = g.ty(&*caller);
    if ty.mutability() != Mutability::Const || !matches!(ty.content(), ValType::I32) {
        return None;
    }
    let v = g.get(&mut *caller).i32()? as u32;
    v.checked_add(base)
}

/// The table slot of `f`: the one it already has, or a new one.
fn slot(caller: &mut Caller<'_, Guest>, f: Func) -> Result<u32, Fail> {
    let Extern::Table(table) = main_export(caller, "__indirect_function_table")? else {
        return refuse("the interpreter's __indirect_function_table is not a table");
    };
    if caller.data().native.slots.is_none() {
        let size = table.size(&*caller);
        caller.data_mut().native.slots = Some(HashMap::new());
        remember_slots(caller, table, 0, size);
    }
    let key = f.to_raw(&mut *caller) as usize;
    if let Some(&i) = caller
        .data()
        .native
        .slots
        .as_ref()
        .and_then(|s| s.get(&key))
    {
        return Ok(i);
    }
    let i = table
        .grow(&mut *caller, 1, Ref::Func(Some(f)))
        .map_err(|_| Fail::Refuse("no room in the function table".into()))?;
    let i = u32::try_from(i).map_err(|_| Fail::Refuse("the function table is too large".into()))?;
    if let Some(s) = caller.data_mut().native.slots.as_mut() {
        s.insert(key, i);
    }
    Ok(i)
}

/// Records the functions in slots `start..start + n` (the first slot of
/// a function is its address).
fn remember_slots(caller: &mut Caller<'_, Guest>, table: Table, start: u64, n: u64) {
    if caller.data().native.slots.is_none() {
        // Built in full on the first address asked for.
        return;
    }
    for i in start..start.saturating_add(n) {
        if let Some(Ref::Func(Some(f))) = table.get(&mut *caller, i) {
            let key = f.to_raw(&mut *caller) as usize;
            let u = i as u32;
            if let Some(s) = caller.data_mut().native.slots.as_mut() {
                s.entry(key).or_insert(u);
            }
        }
    }
}

fn root_message(e: &wasmtime::Error) -> String {
    e.chain()
        .last()
        .map(|c| c.to_string())
        .unwrap_or_else(|| e.to_string())
}
