//! The interpreter's table of C++ library symbols.
//!
//! Side modules import what they use of libc++ and libc++abi by name. The
//! interpreter does not export those names as wasm exports (Wasmtime would
//! decode 2,583 of them at every start); it carries them in a table in its
//! own memory (`recipes/python/files/cxx_symbols.py` writes it):
//!
//! ```c
//! struct { const char *name; const void *address; unsigned is_function; }
//! pynbox_cxx_symbols[pynbox_cxx_symbol_count];
//! ```
//!
//! read here when a module imports a name the exports do not have. The
//! table is in guest memory, so the guest may have changed it: all it can
//! make an entry say is a slot of its own function table or an address in
//! its own memory, which it reaches anyway, and every read is bounded.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::{Caller, Extern, Ref};

use crate::runtime::Guest;
use crate::wasi::memory_of;

/// The most entries read (libc++ and libc++abi have about 2,600).
const MAX_SYMBOLS: u32 = 1 << 16;
/// The longest name read.
const MAX_NAME: usize = 4096;

/// What an entry names: a function's table slot, or a data address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Symbol {
    Function(u32),
    Data(u32),
}

/// The table as the guest's memory holds it now; empty for an interpreter
/// without one (the C++ library exported as wasm exports, as before).
pub(crate) fn read_table(caller: &mut Caller<'_, Guest>) -> Arc<HashMap<String, Symbol>> {
    let mut table = HashMap::new();
    let (Some(entries), Some(count)) = (
        data_export(caller, "pynbox_cxx_symbols"),
        data_export(caller, "pynbox_cxx_symbol_count"),
    ) else {
        return Arc::new(table);
    };
    let Ok(memory) = memory_of(caller) else {
        return Arc::new(table);
    };
    let data = memory.data(&*caller);
    let u32_at = |addr: u32| -> Option<u32> {
        let a = addr as usize;
        let bytes = data.get(a..a.checked_add(4)?)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    };
    let Some(count) = u32_at(count) else {
        return Arc::new(table);
    };
    for i in 0..count.min(MAX_SYMBOLS) {
        let Some(entry) = i.checked_mul(12).and_then(|o| entries.checked_add(o)) else {
            break;
        };
        let (Some(name), Some(value), Some(is_function)) = (
            u32_at(entry),
            entry.checked_add(4).and_then(u32_at),
            entry.checked_add(8).and_then(u32_at),
        ) else {
            break;
        };
        let start = name as usize;
        let Some(tail) = data.get(start..data.len().min(start.saturating_add(MAX_NAME))) else {
            continue;
        };
        let Some(end) = tail.iter().position(|&b| b == 0) else {
            continue;
        };
        let Ok(name) = std::str::from_utf8(&tail[..end]) else {
            continue;
        };
        let symbol = if is_function != 0 {
            Symbol::Function(value)
        } else {
            Symbol::Data(value)
        };
        // The first entry of a name wins, as in a symbol table.
        table.entry(name.to_string()).or_insert(symbol);
    }
    Arc::new(table)
}

/// The value of the interpreter's data export `name` (an address).
fn data_export(caller: &mut Caller<'_, Guest>, name: &str) -> Option<u32> {
    let Some(Extern::Global(g)) = caller.get_export(name) else {
        return None;
    };
    super::link::data_address(caller, g, 0)
}

/// The function in slot `slot` of the interpreter's table.
pub(crate) fn function_at(caller: &mut Caller<'_, Guest>, slot: u32) -> Option<wasmtime::Func> {
    let Some(Extern::Table(table)) = caller.get_export("__indirect_function_table") else {
        return None;
    };
    match table.get(&mut *caller, u64::from(slot)) {
        Some(Ref::Func(Some(f))) => Some(f),
        _ => None,
    }
}
