//! The dynamic linker (src/native/) attacked with hand-made side modules:
//! each must become an `ImportError` naming what was wrong (or, for guest
//! code that misbehaves while loading, a limit or a crash of the guest),
//! and the host must go on as before. The well-behaved case, a real C
//! extension module, is checked from inside by test_pynbox.py.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use pynbox::native::{Installed, NativeModules};
use pynbox::{Limits, MountSpec, Runtime, Sandbox, Status};

const SUFFIX: &str = ".cpython-313-wasm32-wasi.so";

/// A side module: `dylink` is the body of its dylink.0 section, `body`
/// the rest in text form.
fn side_module(dylink: &[u8], body: &str) -> Vec<u8> {
    let escaped: String = dylink.iter().map(|b| format!("\\{b:02x}")).collect();
    let text = format!("(module (@custom \"dylink.0\" (before first) \"{escaped}\") {body})");
    wat::parse_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// mem_info: data size, alignment (log2), table size, as LEB128 bytes.
fn mem_info(size: &[u8], align: u8, table: &[u8]) -> Vec<u8> {
    let mut body = size.to_vec();
    body.push(align);
    body.extend_from_slice(table);
    body.push(0);
    let mut d = vec![1, body.len() as u8];
    d.extend(body);
    d
}

fn needs(lib: &str) -> Vec<u8> {
    let mut d = mem_info(&[0], 0, &[0]);
    d.extend_from_slice(&[2, (lib.len() + 2) as u8, 1, lib.len() as u8]);
    d.extend_from_slice(lib.as_bytes());
    d
}

fn leb(mut v: u32) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

struct Mods {
    dir: PathBuf,
    files: Vec<(String, PathBuf)>,
}

impl Mods {
    fn new(tag: &str) -> Mods {
        let dir = std::env::temp_dir().join(format!("pynbox-native-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Mods {
            dir,
            files: Vec::new(),
        }
    }

    /// Writes `bytes` as `file`; `listed`: recorded as installed.
    fn add(&mut self, file: &str, bytes: &[u8], listed: bool) {
        let path = self.dir.join(file);
        std::fs::write(&path, bytes).unwrap();
        if listed {
            self.files.push((format!("/mods/{file}"), path));
        }
    }

    fn module(&mut self, name: &str, bytes: &[u8]) {
        self.add(&format!("{name}{SUFFIX}"), bytes, true);
    }
}

impl Drop for Mods {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn runtime() -> Runtime {
    Runtime::new(Some(module_cache())).unwrap()
}

/// Runs python with `/mods` importable and the listed modules loadable.
fn run_python(runtime: &Runtime, mods: &Mods, code: &str, limits: Limits) -> pynbox::RunResult {
    let program = runtime
        .load_file(&dest().join("root/python/bin/python.wasm"))
        .unwrap();
    let native = NativeModules::new(runtime, Installed::from_files(&mods.files).unwrap());
    Sandbox::new(&program)
        .arg0("/python/bin/python.wasm")
        .args(["-c", code])
        .mount(MountSpec::new(dest().join("root"), "/", false).unwrap())
        .mount(MountSpec::new(mods.dir.clone(), "/mods", false).unwrap())
        .native_modules(native)
        .limits(limits)
        .run()
        .unwrap()
}

/// Imports each module; a line `NAME | MESSAGE` for each.
fn import_each(names: &[&str]) -> String {
    format!(
        "import sys\nsys.path.insert(0, '/mods')\nfor n in {names:?}:\n    try:\n        __import__(n)\n        print(n, '| LOADED')\n    except ImportError as e:\n        print(n, '|', e)\n"
    )
}

fn lines_of(out: &[u8]) -> std::collections::HashMap<String, String> {
    text(out)
        .lines()
        .filter_map(|l| l.split_once(" | "))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn hostile_side_modules_are_import_errors_naming_the_fault() {
    let mut m = Mods::new("hostile");
    let empty = mem_info(&[0], 0, &[0]);
    m.module("no_dylink", &wat::parse_str("(module)").unwrap());
    m.module(
        "huge_data",
        &side_module(&mem_info(&leb(2 << 30), 0, &[0]), ""),
    );
    m.module(
        "huge_table",
        &side_module(&mem_info(&[0], 0, &leb(1 << 20)), ""),
    );
    m.module(
        "undefined_function",
        &side_module(&empty, r#"(import "env" "no_such_function" (func))"#),
    );
    m.module(
        "undefined_data",
        &side_module(
            &empty,
            r#"(import "GOT.mem" "no_such_data" (global (mut i32)))"#,
        ),
    );
    m.module(
        "wasi_import",
        &side_module(
            &empty,
            r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
        ),
    );
    m.module("own_memory", &side_module(&empty, "(memory 1)"));
    m.module(
        "wrong_type",
        &side_module(
            &empty,
            r#"(import "env" "malloc" (func (param i64) (result i64)))"#,
        ),
    );
    // Data and elements placed far beyond what the module asked for.
    m.module(
        "data_out_of_range",
        &side_module(
            &mem_info(&[16], 0, &[0]),
            r#"(import "env" "memory" (memory 1))
               (import "env" "__memory_base" (global $mb i32))
               (data (offset (i32.add (global.get $mb) (i32.const 0x7ffffff0))) "0123456789abcdef0123456789abcdef")"#,
        ),
    );
    m.module(
        "elem_out_of_range",
        &side_module(
            &mem_info(&[0], 0, &[1]),
            r#"(import "env" "__indirect_function_table" (table 0 funcref))
               (import "env" "__table_base" (global $tb i32))
               (func $f)
               (elem (offset (i32.add (global.get $tb) (i32.const 1000000))) func $f)"#,
        ),
    );
    m.module("missing_library", &side_module(&needs("libnothere.so"), ""));
    // A cycle of libraries that need each other.
    m.module("cycle", &side_module(&needs("liba.so"), ""));
    m.add("liba.so", &side_module(&needs("libb.so"), ""), true);
    m.add("libb.so", &side_module(&needs("liba.so"), ""), true);
    // Not recorded as installed: as if the guest had written it.
    m.add(
        &format!("unlisted{SUFFIX}"),
        &side_module(&empty, ""),
        false,
    );
    m.add(
        &format!("garbage{SUFFIX}"),
        b"\0asm\x01\0\0\0\xff\xff\xff",
        true,
    );

    let expected = [
        ("no_dylink", "no dylink.0 section"),
        ("huge_data", "bytes of data"),
        ("huge_table", "table slots"),
        ("undefined_function", "undefined symbol: no_such_function"),
        ("undefined_data", "undefined symbol: no_such_data"),
        ("wasi_import", "imports wasi_snapshot_preview1.fd_write"),
        ("own_memory", "memory of its own"),
        ("wrong_type", "cannot link it"),
        ("data_out_of_range", "cannot link it"),
        ("elem_out_of_range", "cannot link it"),
        (
            "missing_library",
            "it needs libnothere.so, which no installed package provides",
        ),
        ("cycle", "more than 16 deep"),
        (
            "unlisted",
            "not a native module installed by `pynbox install`",
        ),
        ("garbage", "not a valid WebAssembly module"),
    ];
    let names: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
    let rt = runtime();
    let r = run_python(&rt, &m, &import_each(&names), Limits::default());
    assert_eq!(r.status, Status::Exited(0), "{}", text(&r.stderr));
    let got = lines_of(&r.stdout);
    for (name, why) in expected {
        let line = got
            .get(name)
            .unwrap_or_else(|| panic!("no line for {name}: {}", text(&r.stdout)));
        assert!(line.contains(why), "{name}: {line}");
        // CPython's message names the file it tried.
        assert!(
            line.contains(&format!("/mods/{name}{SUFFIX}")),
            "{name}: {line}"
        );
    }
    // And the host goes on: the same runtime runs python again.
    let again = run_python(&rt, &m, "print(6 * 7)", Limits::default());
    assert_eq!(text(&again.stdout), "42\n");
}

#[test]
fn a_module_larger_than_the_memory_limit_is_refused_inside_the_limit() {
    let mut m = Mods::new("memory");
    m.module("big", &side_module(&mem_info(&leb(512 << 20), 0, &[0]), ""));
    let r = run_python(
        &runtime(),
        &m,
        &import_each(&["big"]),
        Limits {
            memory: Some(256 << 20),
            ..Limits::default()
        },
    );
    let got = lines_of(&r.stdout);
    assert!(
        got.get("big")
            .is_some_and(|l| l.contains("no memory for its")),
        "{} {}",
        text(&r.stdout),
        text(&r.stderr)
    );
}

/// Constructors and start functions are guest code: they run under the
/// run's limits.
#[test]
fn constructors_run_under_the_limits() {
    let mut m = Mods::new("ctors");
    m.module(
        "spins",
        &side_module(
            &mem_info(&[0], 0, &[0]),
            r#"(func (export "__wasm_call_ctors") (loop (br 0)))"#,
        ),
    );
    m.module(
        "start_spins",
        &side_module(
            &mem_info(&[0], 0, &[0]),
            "(func $s (loop (br 0))) (start $s)",
        ),
    );
    m.module(
        "traps",
        &side_module(
            &mem_info(&[0], 0, &[0]),
            r#"(func (export "__wasm_call_ctors") unreachable)"#,
        ),
    );
    let rt = runtime();
    let limits = Limits {
        timeout: Some(Duration::from_secs(2)),
        ..Limits::default()
    };
    let r = run_python(&rt, &m, &import_each(&["spins"]), limits);
    assert_eq!(r.status, Status::TimeLimit);
    let r = run_python(&rt, &m, &import_each(&["start_spins"]), limits);
    assert_eq!(r.status, Status::TimeLimit);
    let r = run_python(&rt, &m, &import_each(&["traps"]), Limits::default());
    assert!(matches!(r.status, Status::Crashed(_)), "{:?}", r.status);
}

/// A function a module both defines and imports (a weak definition of
/// default visibility: C++ templates) is an earlier module's when one
/// defines it, else the module's own; a module that calls its own before
/// it is linked (from its start function) is refused with an ImportError.
#[test]
fn weak_functions_resolve_to_the_first_definition() {
    let mut m = Mods::new("weak");
    // Its init raises ValueError(pynbox_weak()).
    let weak = |value: i32| {
        side_module(
            &mem_info(&[0], 0, &[0]),
            &format!(
                r#"(import "env" "memory" (memory 0))
                   (import "GOT.mem" "PyExc_ValueError" (global $exc (mut i32)))
                   (import "env" "PyErr_SetObject" (func $raise (param i32 i32)))
                   (import "env" "PyLong_FromLong" (func $long (param i32) (result i32)))
                   (import "env" "pynbox_weak" (func $w (result i32)))
                   (func (export "pynbox_weak") (result i32) i32.const {value})
                   (func (export "PyInit_weak{value}") (result i32)
                     (call $raise (i32.load (global.get $exc)) (call $long (call $w)))
                     i32.const 0)"#
            ),
        )
    };
    m.module("weak1", &weak(1));
    m.module("weak2", &weak(2));
    m.module(
        "weak_early",
        &side_module(
            &mem_info(&[0], 0, &[0]),
            r#"(import "env" "pynbox_early" (func $w (result i32)))
               (func (export "pynbox_early") (result i32) i32.const 7)
               (func $s (drop (call $w))) (start $s)"#,
        ),
    );
    let rt = runtime();
    let code = "import sys\nsys.path.insert(0, '/mods')\nfor n in ['weak2', 'weak1']:\n    try:\n        __import__(n)\n    except ValueError as e:\n        print(n, e.args[0])\n";
    let r = run_python(&rt, &m, code, Limits::default());
    assert_eq!(r.status, Status::Exited(0), "{}", text(&r.stderr));
    // weak2 alone: its own; weak1 after it: weak2's, the first loaded.
    assert_eq!(text(&r.stdout), "weak2 2\nweak1 2\n", "{}", text(&r.stderr));
    let code = "import sys\nsys.path.insert(0, '/mods')\nfor n in ['weak1', 'weak2']:\n    try:\n        __import__(n)\n    except ValueError as e:\n        print(n, e.args[0])\n";
    let r = run_python(&rt, &m, code, Limits::default());
    assert_eq!(text(&r.stdout), "weak1 1\nweak2 1\n", "{}", text(&r.stderr));
    let r = run_python(&rt, &m, &import_each(&["weak_early"]), Limits::default());
    assert_eq!(r.status, Status::Exited(0), "{}", text(&r.stderr));
    let lines = lines_of(&r.stdout);
    assert!(
        lines["weak_early"].contains("called its own function before it was linked"),
        "{lines:?}"
    );
}

/// The interpreter's C++ symbols come from a table in guest memory
/// (src/native/cxx.rs). A module that scribbles over it before any C++
/// name is looked up leaves the names unresolvable, as ImportErrors; the
/// host reads the wrecked table within bounds and the guest goes on.
#[test]
fn a_wrecked_cxx_symbol_table_is_import_errors_not_host_harm() {
    let mut m = Mods::new("cxxtable");
    m.module(
        "wants_cxx",
        &side_module(
            &mem_info(&[0], 0, &[0]),
            r#"(import "env" "_Znwm" (func $new (param i32) (result i32)))
               (func (export "PyInit_wants_cxx") (result i32)
                 (drop (call $new (i32.const 8)))
                 i32.const 0)"#,
        ),
    );
    m.module(
        "scribble",
        &side_module(
            &mem_info(&[0], 0, &[0]),
            r#"(import "env" "memory" (memory 0))
               (import "GOT.mem" "pynbox_cxx_symbols" (global $tab (mut i32)))
               (import "GOT.mem" "pynbox_cxx_symbol_count" (global $cnt (mut i32)))
               (func (export "PyInit_scribble") (result i32)
                 (local $i i32) (local $n i32) (local $e i32)
                 (local.set $n (i32.load (global.get $cnt)))
                 (loop $l
                   (local.set $e (i32.add (global.get $tab) (i32.mul (local.get $i) (i32.const 12))))
                   ;; every name beyond memory, every value a slot that is not there
                   (i32.store (local.get $e) (i32.const -16))
                   (i32.store offset=4 (local.get $e) (i32.const -1))
                   (local.set $i (i32.add (local.get $i) (i32.const 1)))
                   (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
                 (i32.store (global.get $cnt) (i32.const -1))
                 i32.const 0)"#,
        ),
    );
    let code = |names: &[&str]| {
        format!(
            "import sys\nsys.path.insert(0, '/mods')\nfor n in {names:?}:\n    try:\n        __import__(n)\n        print(n, '| LOADED')\n    except ImportError as e:\n        print(n, '|', e)\n    except SystemError:\n        print(n, '| RAN')\nprint('alive | yes')\n"
        )
    };
    let rt = runtime();
    // As built: operator new resolves through the table and runs.
    let r = run_python(&rt, &m, &code(&["wants_cxx"]), Limits::default());
    assert_eq!(r.status, Status::Exited(0), "{}", text(&r.stderr));
    assert_eq!(
        lines_of(&r.stdout)["wants_cxx"],
        "RAN",
        "{}",
        text(&r.stderr)
    );
    // Wrecked first: the name is not found, and nothing else happens.
    let r = run_python(
        &rt,
        &m,
        &code(&["scribble", "wants_cxx"]),
        Limits::default(),
    );
    assert_eq!(r.status, Status::Exited(0), "{}", text(&r.stderr));
    let lines = lines_of(&r.stdout);
    assert_eq!(lines["scribble"], "RAN", "{lines:?}");
    assert!(
        lines["wants_cxx"].contains("undefined symbol: _Znwm"),
        "{lines:?}"
    );
    assert_eq!(lines["alive"], "yes", "{lines:?}");
}

/// A C++ extension module (the tests package's): the C++ library the
/// interpreter exports works from it, and a C++ exception, which nothing
/// in the sandbox can catch, ends the guest with a line saying so.
#[test]
fn a_cxx_module_works_and_its_exceptions_end_the_guest() {
    let run = |code: &str| {
        std::process::Command::new(dest().join("bin/run"))
            .args([
                "python",
                "-c",
                &format!(
                    "import sys; sys.path.insert(0, '/test/native'); import pynbox_cxx; {code}"
                ),
            ])
            .output()
            .unwrap()
    };
    let out = run("print(pynbox_cxx.distinct_words('b a c a b dd'))");
    assert_eq!(text(&out.stdout), "a b c dd\n", "{}", text(&out.stderr));
    let out = run("pynbox_cxx.throw_now()");
    assert_eq!(out.status.code(), Some(134), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("C++ code threw an exception, which C++ in this sandbox cannot catch"),
        "{}",
        text(&out.stderr)
    );
}

/// The modules `pynbox install` placed load through `bin/run`, and a copy
/// changed by the guest does not (also checked from inside by
/// test_pynbox.py, which this runs by name).
#[test]
fn installed_modules_load_through_bin_run() {
    let out = std::process::Command::new(dest().join("bin/run"))
        .args([
            "python",
            "-c",
            "import sys; sys.path.insert(0, '/test/native'); import pynbox_ext; print(pynbox_ext.helper_add(2, 3), pynbox_ext.__spec__.loader.__class__.__name__)",
        ])
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout),
        "5 ExtensionFileLoader\n",
        "{}",
        text(&out.stderr)
    );
}

/// With `allowing_any` (the CLI's `--allow-any-native-module`, which needs
/// `--no-os-sandbox`), a module the guest wrote loads; without, it does
/// not, and the CLI refuses the flag while its second wall stands.
#[test]
fn a_guest_written_module_loads_only_when_the_user_opts_in() {
    let scratch = tempfile::tempdir().unwrap();
    let code = "import shutil, sys; shutil.copy('/test/native/pynbox_ext.cpython-313-wasm32-wasi.so', '/s/'); \
                sys.path.insert(0, '/s'); \
                open('/s/pynbox_ext.cpython-313-wasm32-wasi.so', 'ab').write(b'\\x00\\x02\\x01x'); \
                import pynbox_ext; print(pynbox_ext.__file__, pynbox_ext.helper_add(1, 2))";
    let run = |extra: &[&str]| {
        std::process::Command::new(dest().join("bin/run"))
            .args(["-m", &format!("{}:/:ro", dest().join("root").display())])
            .args(["-m", &format!("{}:/s:rw", scratch.path().display())])
            .args(extra)
            .args(["python", "-c", code])
            .output()
            .unwrap()
    };
    // A byte-for-byte copy is the installed module's code: it loads, under
    // the second wall, from the code mapped before the wall went up.
    let copy = "import shutil, sys; shutil.copy('/test/native/pynbox_ext.cpython-313-wasm32-wasi.so', '/s/'); \
                sys.path.insert(0, '/s'); import pynbox_ext; print(pynbox_ext.__file__, pynbox_ext.helper_add(1, 2))";
    let out = std::process::Command::new(dest().join("bin/run"))
        .args(["-m", &format!("{}:/:ro", dest().join("root").display())])
        .args(["-m", &format!("{}:/s:rw", scratch.path().display())])
        .args(["python", "-c", copy])
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout),
        "/s/pynbox_ext.cpython-313-wasm32-wasi.so 3\n",
        "{}",
        text(&out.stderr)
    );
    // The copy with an empty custom section appended is no
    // installed module: refused by default.
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not a native module installed by `pynbox install`"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["--allow-any-native-module"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--no-os-sandbox"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["--allow-any-native-module", "--no-os-sandbox"]);
    assert_eq!(
        text(&out.stdout),
        "/s/pynbox_ext.cpython-313-wasm32-wasi.so 3\n",
        "{}",
        text(&out.stderr)
    );
}
