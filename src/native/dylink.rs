//! What a side module says about itself: its `dylink.0` section (the
//! memory and table it needs, the libraries it needs) and the shape of
//! its imports, checked before anything of it runs.
//!
//! The convention is the one clang and wasm-ld follow for `-fPIC
//! -shared` (WebAssembly/tool-conventions, DynamicLinking.md), as used by
//! Emscripten and Pyodide.

use std::collections::HashSet;

use wasmparser::{Dylink0Subsection, KnownCustom, Parser, Payload, SymbolFlags};

/// The most memory one side module may ask for its data (the guest's
/// memory limit applies on top: the data is allocated inside the guest).
pub const MAX_DATA: u32 = 1 << 30;
/// The largest alignment of a module's data, as a power of two.
pub const MAX_ALIGN_LOG2: u32 = 16;
/// The most table slots one side module may ask for.
pub const MAX_TABLE: u32 = 1 << 18;
/// The most libraries one module may name as needed.
pub const MAX_NEEDED: usize = 64;
/// How much of a module's head is read for its `dylink.0` section alone.
pub const MAX_SECTION: u64 = 1 << 20;

/// A side module's `dylink.0` facts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DylinkInfo {
    pub memory_size: u32,
    pub memory_align_log2: u32,
    pub table_size: u32,
    pub needed: Vec<String>,
    /// Imports marked weak: left at 0 when nothing defines them.
    pub weak: HashSet<String>,
}

/// Reads and checks the `dylink.0` section, which must come first. Also
/// refuses a module that defines its own memory or table (a side module
/// shares the interpreter's). A start function is allowed: wasm-ld makes
/// one (`__wasm_apply_global_relocs`) to set a module's internal GOT
/// entries; it runs at instantiation under the guest's limits.
pub fn read(bytes: &[u8]) -> Result<DylinkInfo, String> {
    let mut info = None;
    let mut first = true;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| format!("not a valid WebAssembly module: {e}"))?;
        match payload {
            Payload::Version { .. } => continue,
            Payload::CustomSection(c) if c.name() == "dylink.0" => {
                if !first || info.is_some() {
                    return Err("its dylink.0 section is not the first section".into());
                }
                info = Some(parse_section(&c)?);
            }
            Payload::CustomSection(_) => {}
            Payload::MemorySection(s) if s.count() > 0 => {
                return Err(
                    "it defines a memory of its own (a side module must import the interpreter's)"
                        .into(),
                );
            }
            Payload::TableSection(s) if s.count() > 0 => {
                return Err(
                    "it defines a table of its own (a side module must import the interpreter's)"
                        .into(),
                );
            }
            Payload::CodeSectionStart { .. } => {
                // Function bodies are the compiler's business.
            }
            _ => {}
        }
        first = false;
    }
    info.ok_or_else(|| {
        "it is not a shared library (no dylink.0 section): build it with -fPIC -shared".into()
    })
}

/// Only the `dylink.0` section, from the head of a module whose whole was
/// checked by [`read`] when it was compiled.
pub fn read_section(head: &[u8]) -> Result<DylinkInfo, String> {
    for payload in Parser::new(0).parse_all(head) {
        match payload.map_err(|e| format!("not a valid WebAssembly module: {e}"))? {
            Payload::Version { .. } => continue,
            Payload::CustomSection(c) if c.name() == "dylink.0" => return parse_section(&c),
            _ => break,
        }
    }
    Err("it is not a shared library (no dylink.0 section): build it with -fPIC -shared".into())
}

fn parse_section(c: &wasmparser::CustomSectionReader<'_>) -> Result<DylinkInfo, String> {
    let KnownCustom::Dylink0(reader) = c.as_known() else {
        return Err("its dylink.0 section cannot be read".into());
    };
    let mut found = DylinkInfo::default();
    for sub in reader {
        match sub.map_err(|e| format!("malformed dylink.0 section: {e}"))? {
            Dylink0Subsection::MemInfo(m) => {
                if m.memory_size > MAX_DATA {
                    return Err(format!(
                        "it asks for {} bytes of data (at most {MAX_DATA})",
                        m.memory_size
                    ));
                }
                if m.memory_alignment > MAX_ALIGN_LOG2 {
                    return Err(format!(
                        "it asks for data aligned to 2^{} bytes (at most 2^{MAX_ALIGN_LOG2})",
                        m.memory_alignment
                    ));
                }
                if m.table_size > MAX_TABLE {
                    return Err(format!(
                        "it asks for {} table slots (at most {MAX_TABLE})",
                        m.table_size
                    ));
                }
                found.memory_size = m.memory_size;
                found.memory_align_log2 = m.memory_alignment;
                found.table_size = m.table_size;
            }
            Dylink0Subsection::Needed(names) => {
                if found.needed.len() + names.len() > MAX_NEEDED {
                    return Err(format!("it needs more than {MAX_NEEDED} libraries"));
                }
                for n in names {
                    check_library_name(n)?;
                    found.needed.push(n.to_string());
                }
            }
            Dylink0Subsection::ImportInfo(imports) => {
                for i in imports {
                    if i.flags.contains(SymbolFlags::BINDING_WEAK) {
                        found.weak.insert(i.field.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(found)
}

/// A needed library is named by its file name alone: it is looked up
/// among the installed ones, never by a path the module chooses.
fn check_library_name(n: &str) -> Result<(), String> {
    let ok =
        !n.is_empty() && n.len() <= 255 && n != "." && n != ".." && !n.contains(['/', '\\', '\0']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "it needs a library named {:?}, which is not a file name",
            n.chars().take(100).collect::<String>()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(dylink: &[u8], rest: &str) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        let mut section = Vec::new();
        section.push(8u8);
        section.extend_from_slice(b"dylink.0");
        section.extend_from_slice(dylink);
        m.push(0);
        m.push(section.len() as u8);
        m.extend(section);
        let body = wat::parse_str(format!("(module {rest})")).unwrap();
        m.extend_from_slice(&body[8..]);
        m
    }

    fn mem_info(size: u8, align: u8, table: u8) -> Vec<u8> {
        vec![1, 4, size, align, table, 0]
    }

    #[test]
    fn reads_memory_table_and_needed_libraries() {
        let mut d = mem_info(100, 4, 3);
        d.extend_from_slice(&[2, 12, 1, 10]);
        d.extend_from_slice(b"libxml2.so");
        let info = read(&module(&d, "")).unwrap();
        assert_eq!(
            info,
            DylinkInfo {
                memory_size: 100,
                memory_align_log2: 4,
                table_size: 3,
                needed: vec!["libxml2.so".into()],
                weak: HashSet::new(),
            }
        );
    }

    #[test]
    fn refuses_what_a_side_module_must_not_be() {
        let no_dylink = wat::parse_str("(module)").unwrap();
        assert!(read(&no_dylink).unwrap_err().contains("-fPIC -shared"));
        let own_memory = module(&mem_info(0, 0, 0), "(memory 1)");
        assert!(read(&own_memory).unwrap_err().contains("memory of its own"));
        let own_table = module(&mem_info(0, 0, 0), "(table 1 funcref)");
        assert!(read(&own_table).unwrap_err().contains("table of its own"));
        let start = module(&mem_info(0, 0, 0), "(func $f) (start $f)");
        assert!(read(&start).is_ok());
        let huge_align = module(&mem_info(0, 40, 0), "");
        assert!(read(&huge_align).unwrap_err().contains("aligned"));
        let mut path = mem_info(0, 0, 0);
        path.extend_from_slice(&[2, 10, 1, 8]);
        path.extend_from_slice(b"../x.so\0");
        assert!(read(&module(&path, ""))
            .unwrap_err()
            .contains("not a file name"));
        // Sizes beyond the limits, in LEB128.
        let huge = [1, 8, 0x80, 0x80, 0x80, 0x80, 0x08, 0, 0, 0];
        assert!(read(&module(&huge, ""))
            .unwrap_err()
            .contains("bytes of data"));
        // A section cut short.
        assert!(read(&module(&[1, 4, 1], "")).is_err());
    }
}
