//! Where Wasmtime's machine code becomes executable, and code mapped
//! ahead so that a process may forbid itself new executable memory and
//! still load it later.
//!
//! The CLI's second wall (`src/lockdown.rs`) refuses every `mmap` or
//! `mprotect` asking for executable memory. Native modules are loaded
//! when the guest imports them, after the wall stands, so their code must
//! be executable before it: [`map_code`] maps a compiled module's file
//! read-only and makes only its `.text` executable, without Wasmtime
//! decoding anything. At import Wasmtime reads that mapping in place
//! (`Module::deserialize_raw`) and asks [`CodeMemory`] to publish the
//! text, which for a mapped region is already done. Mapping is a few
//! system calls per module; decoding, which costs 0.1-0.6 ms a module,
//! happens only for the modules a run imports.
//!
//! Every other code image (the interpreter, code compiled in process) is
//! published as Wasmtime would: `mprotect` to read+execute.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use wasmtime::{Engine, Module};

/// A compiled module's file mapped read-only with its `.text` executable.
/// Never unmapped: Wasmtime keeps pointers into it (unwind information is
/// registered with the process's unwinder) for as long as any store uses
/// the module, which this code cannot see end. Mappings are shared per
/// file version and engine, so mapping one install again costs nothing
/// more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MappedCode {
    base: usize,
    len: usize,
}

impl MappedCode {
    /// The whole file's bytes, for `Module::deserialize_raw`.
    fn bytes(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(
            NonNull::new(self.base as *mut u8).expect("a mapping is never at 0"),
            self.len,
        )
    }
}

struct Slot {
    engine: Engine,
    code: MappedCode,
    /// The one module decoded from it: Wasmtime registers a code image's
    /// addresses process-wide, once, so a mapping must never become two
    /// modules.
    module: Option<Module>,
}

/// File identity → its mappings, one per engine. (Decoding holds this
/// lock; publishing, which decoding calls, takes only [`texts`].)
fn mapped() -> &'static Mutex<HashMap<String, Vec<Slot>>> {
    static MAPPED: OnceLock<Mutex<HashMap<String, Vec<Slot>>>> = OnceLock::new();
    MAPPED.get_or_init(Default::default)
}

/// The text ranges made executable here, which publishing finds done.
fn texts() -> &'static RwLock<Vec<Range<usize>>> {
    static TEXTS: RwLock<Vec<Range<usize>>> = RwLock::new(Vec::new());
    &TEXTS
}

/// The module whose code `code` is, decoded in place the first time.
///
/// # Safety
/// `code` must be the mapping of a file `Module::serialize` of this
/// Wasmtime wrote, whose integrity the caller of [`map_code`] checked.
pub(crate) unsafe fn module(engine: &Engine, code: MappedCode) -> Result<Module, String> {
    let mut m = mapped().lock().unwrap();
    let slot = m
        .values_mut()
        .flatten()
        .find(|s| s.code == code && Engine::same(&s.engine, engine))
        .ok_or("its code was not mapped for this engine")?;
    if let Some(module) = &slot.module {
        return Ok(module.clone());
    }
    // SAFETY: the caller's promise; the mapping is read-only and never
    // unmapped or written, and Wasmtime checks that it fits `engine`.
    let module = unsafe { Module::deserialize_raw(engine, code.bytes()) }
        .map_err(|e| format!("its compiled code cannot be used: {e}"))?;
    slot.module = Some(module.clone());
    Ok(module)
}

/// The largest compiled module mapped ahead.
const MAX_CODE_FILE: u64 = 1 << 30;

/// Maps `file`, a compiled module Wasmtime wrote (`Module::serialize`) and
/// whose integrity the caller checked, read-only, and makes its `.text`
/// section executable, for `engine`. `identity` names the file's version
/// (device, inode, size, times): the same version is mapped once per
/// process and engine.
#[cfg(unix)]
pub(crate) fn map_code(engine: &Engine, file: &File, identity: &str) -> Result<MappedCode, String> {
    if let Some(slot) = mapped()
        .lock()
        .unwrap()
        .get(identity)
        .and_then(|slots| slots.iter().find(|s| Engine::same(&s.engine, engine)))
    {
        return Ok(slot.code);
    }
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len == 0 || len > MAX_CODE_FILE {
        return Err(format!("a compiled module of {len} bytes"));
    }
    let len = len as usize;
    use std::os::fd::AsRawFd;
    // SAFETY: a new private read-only mapping of an open file; nothing
    // else refers to the address range the kernel picks.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    let unmap = |why: String| {
        // SAFETY: the mapping made above, not yet handed out.
        unsafe { libc::munmap(base, len) };
        Err(why)
    };
    // SAFETY: `base` is a readable mapping of `len` bytes, alive for the
    // process (see `MappedCode`).
    let bytes = unsafe { std::slice::from_raw_parts(base as *const u8, len) };
    // Only the ELF header and the section table are read here (not the
    // symbol table, as a whole-file parse would); the sections stay on
    // disk until used.
    let text = match text_range(bytes) {
        Ok(Some(text)) => text,
        Ok(None) => return unmap("no .text section".into()),
        Err(e) => return unmap(format!("not a compiled module: {e}")),
    };
    let page = page_size();
    if text.end > len || text.start % page != 0 {
        return unmap("its .text is not page-aligned".into());
    }
    let start = base as usize + text.start;
    if !text.is_empty() {
        // SAFETY: a page-aligned range inside the mapping made above.
        let r = unsafe {
            libc::mprotect(
                start as *mut libc::c_void,
                text.len(),
                libc::PROT_READ | libc::PROT_EXEC,
            )
        };
        if r != 0 {
            return unmap(format!("mprotect: {}", std::io::Error::last_os_error()));
        }
    }
    let code = MappedCode {
        base: base as usize,
        len,
    };
    texts().write().unwrap().push(start..start + text.len());
    mapped()
        .lock()
        .unwrap()
        .entry(identity.to_string())
        .or_default()
        .push(Slot {
            engine: engine.clone(),
            code,
            module: None,
        });
    Ok(code)
}

/// Where the `.text` section of the ELF image `bytes` is.
fn text_range(bytes: &[u8]) -> object::read::Result<Option<Range<usize>>> {
    use object::read::elf::{FileHeader, SectionHeader};
    let header = object::elf::FileHeader64::<object::Endianness>::parse(bytes)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, bytes)?;
    for section in sections.iter() {
        if sections.section_name(endian, section)? == b".text" {
            return Ok(section
                .file_range(endian)
                .map(|(offset, size)| offset as usize..(offset + size) as usize));
        }
    }
    Ok(None)
}

#[cfg(not(unix))]
pub(crate) fn map_code(
    _engine: &Engine,
    _file: &File,
    _identity: &str,
) -> Result<MappedCode, String> {
    Err("mapping code ahead needs a Unix system".into())
}

#[cfg(unix)]
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// Publishes code for every engine of this process (see the module
/// comment).
#[cfg(unix)]
pub(crate) struct CodeMemory;

#[cfg(unix)]
impl CodeMemory {
    pub(crate) fn shared() -> Arc<dyn wasmtime::CustomCodeMemory> {
        Arc::new(CodeMemory)
    }

    /// Whether `ptr..ptr+len` is (inside) a text range [`map_code`] made
    /// executable.
    fn premapped(ptr: *const u8, len: usize) -> bool {
        let (start, end) = (ptr as usize, ptr as usize + len);
        texts()
            .read()
            .unwrap()
            .iter()
            .any(|t| t.start <= start && end <= t.end)
    }

    fn protect(ptr: *const u8, len: usize, prot: libc::c_int) -> wasmtime::Result<()> {
        // SAFETY: Wasmtime hands a page-aligned range of a code image it
        // owns and is publishing or retiring.
        let r = unsafe { libc::mprotect(ptr as *mut libc::c_void, len, prot) };
        if r != 0 {
            return Err(wasmtime::Error::msg(format!(
                "mprotect: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }
}

#[cfg(unix)]
impl wasmtime::CustomCodeMemory for CodeMemory {
    fn required_alignment(&self) -> usize {
        page_size()
    }

    fn publish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        if CodeMemory::premapped(ptr, len) {
            return Ok(());
        }
        // As Wasmtime's own publishing does: make the instruction cache
        // see the new code (nothing to do on x86-64), then flip the pages.
        // SAFETY: the range is the code image being published.
        unsafe { wasmtime_internal_jit_icache_coherence::clear_cache(ptr.cast(), len) }
            .map_err(|e| wasmtime::Error::msg(format!("instruction cache: {e}")))?;
        CodeMemory::protect(ptr, len, libc::PROT_READ | libc::PROT_EXEC)?;
        wasmtime_internal_jit_icache_coherence::pipeline_flush_mt()
            .map_err(|e| wasmtime::Error::msg(format!("pipeline flush: {e}")))
    }

    fn unpublish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        if CodeMemory::premapped(ptr, len) {
            // Stays mapped and executable for the process (see MappedCode).
            return Ok(());
        }
        CodeMemory::protect(ptr, len, libc::PROT_READ | libc::PROT_WRITE)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use wasmtime::{Config, Instance, Store};

    /// The permissions of the pages of `range` in /proc/self/maps, with
    /// their extent: `[(start, end, "r-xp"), ...]`.
    fn protections(range: Range<usize>) -> Vec<(usize, usize, String)> {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mut out = Vec::new();
        for line in maps.lines() {
            let mut parts = line.split_whitespace();
            let (span, perms) = (parts.next().unwrap(), parts.next().unwrap());
            let (a, b) = span.split_once('-').unwrap();
            let (a, b) = (
                usize::from_str_radix(a, 16).unwrap(),
                usize::from_str_radix(b, 16).unwrap(),
            );
            if a < range.end && range.start < b {
                out.push((a.max(range.start), b.min(range.end), perms.to_string()));
            }
        }
        out
    }

    #[test]
    fn only_the_text_of_a_mapped_module_is_executable_and_it_runs_in_place() {
        let mut config = Config::new();
        config.with_custom_code_memory(Some(CodeMemory::shared()));
        let engine = Engine::new(&config).unwrap();
        let wat = r#"(module
            (data (i32.const 0) "\90\90\90\c3 bytes of the guest's own, never executable")
            (memory (export "m") 1)
            (func (export "answer") (result i32) i32.const 42))"#;
        let compiled = Module::new(&engine, wat::parse_str(wat).unwrap())
            .unwrap()
            .serialize()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.cwasm");
        std::fs::write(&path, &compiled).unwrap();
        let file = File::open(&path).unwrap();
        let code = map_code(&engine, &file, &format!("test {}", path.display())).unwrap();

        // What the kernel says: the .text pages are r-x, every other page
        // of the file (the data above among them) is read-only.
        let whole = code.base..code.base + code.len;
        let text = texts()
            .read()
            .unwrap()
            .iter()
            .find(|t| whole.start <= t.start && t.end <= whole.end)
            .cloned()
            .unwrap();
        assert!(!text.is_empty());
        let page = page_size();
        let text_pages = text.start..text.end.div_ceil(page) * page;
        for (a, b, perms) in protections(whole.clone()) {
            let executable = perms.contains('x');
            let in_text = text_pages.start <= a && b <= text_pages.end;
            assert_eq!(executable, in_text, "{a:#x}-{b:#x} {perms}");
            assert!(!perms.contains('w'), "{a:#x}-{b:#x} {perms}");
        }

        // Wasmtime uses the mapping in place, publishing nothing new, and
        // the code runs.
        // SAFETY: `compiled` came from `serialize` above.
        let module = unsafe { module(&engine, code) }.unwrap();
        assert_eq!(answer(&engine, &module), 42);

        // The same file version maps once, and is decoded once: a second
        // module over the same code would clash in Wasmtime's registry of
        // code addresses.
        assert_eq!(
            map_code(&engine, &file, &format!("test {}", path.display())).unwrap(),
            code
        );
        // SAFETY: as above.
        let again = unsafe { super::module(&engine, code) }.unwrap();
        assert!(Module::same(&again, &module));
        // Another engine gets a mapping of its own.
        let other = Engine::new(&config).unwrap();
        let elsewhere = map_code(&other, &file, &format!("test {}", path.display())).unwrap();
        assert_ne!(elsewhere, code);
        // SAFETY: as above.
        let third = unsafe { super::module(&other, elsewhere) }.unwrap();
        assert_eq!(answer(&other, &third), 42);
    }

    /// What the test module's `answer` returns.
    fn answer(engine: &Engine, module: &Module) -> i32 {
        let mut store = Store::new(engine, ());
        let instance = Instance::new(&mut store, module, &[]).unwrap();
        let answer = instance
            .get_typed_func::<(), i32>(&mut store, "answer")
            .unwrap();
        answer.call(&mut store, ()).unwrap()
    }

    #[test]
    fn a_file_that_is_not_a_compiled_module_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [
            ("empty", &b""[..]),
            ("text", &b"not an ELF file at all"[..]),
            ("elf-head", &b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0"[..]),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let file = File::open(&path).unwrap();
            let engine = Engine::default();
            let identity = format!("refused {}", path.display());
            assert!(map_code(&engine, &file, &identity).is_err(), "{name}");
        }
    }
}
