//! Pre-initialised Python (src/preinit.rs, Modules/pynbox_snapshot.c): runs
//! of an install's `bin/run` resume from a snapshot taken after start-up
//! and the common imports. These tests check that such a run is used, and
//! that it shares no secret or state with the snapshot or other runs: a
//! fresh hash secret (with every table built before the snapshot still
//! consistent), fresh random state, the run's own argv and environment.
//!
//! Like tests/python.rs, they need the installed `python` package.

mod common;

use common::*;
use std::process::{Command, Output, Stdio};

fn bin_run(args: &[&str]) -> Output {
    Command::new(dest().join("bin/run"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .args(args)
        .output()
        .unwrap()
}

fn ok_stdout(out: &Output) -> String {
    assert_ok(out);
    text(&out.stdout).trim().to_string()
}

/// Whether the run started from the snapshot: it has the snapshot's
/// imports before the command imports anything.
const RESUMED: &str = "import sys; print('decimal' in sys.modules and 'sqlite3' in sys.modules)";

#[test]
fn install_made_a_snapshot_and_plain_runs_use_it() {
    let snap = dest().join(pynbox::preinit::INSTALL_PATH);
    assert!(snap.is_file(), "{} is missing", snap.display());
    assert_eq!(ok_stdout(&bin_run(&["python", "-c", RESUMED])), "True");
    // Started as a plain run would be: the same executable and paths (but
    // for the '' that -I leaves out of sys.path).
    let paths = "import sys; print(sys.executable, sys.prefix, sys.path)";
    assert_eq!(
        ok_stdout(&bin_run(&["python", "-c", paths])).replace("'', ", ""),
        ok_stdout(&bin_run(&["python", "-I", "-c", paths]))
    );
    // A script and -m resume too.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.py"), RESUMED).unwrap();
    let m = format!("{}:/work:ro", dir.path().display());
    assert_eq!(
        ok_stdout(&bin_run(&[
            "-m",
            &format!("{}/root:/:ro", dest().display()),
            "-m",
            &m,
            "python",
            "/work/s.py"
        ])),
        "True"
    );
}

#[test]
fn every_run_draws_its_own_hash_secret_and_random_state() {
    // The first field proves the run resumed from the snapshot (a fallback
    // to the plain interpreter would print False), then hashes, Python's
    // and SQLite's generators, the host's entropy.
    let code = "import sys; r = 'decimal' in sys.modules and 'sqlite3' in sys.modules; \
                import random, os, sqlite3; \
                b, n = sqlite3.connect(':memory:').execute('select hex(randomblob(16)), random()').fetchone(); \
                print(r, hash('pynbox'), hash(b'pynbox'), random.random(), random.getrandbits(64), os.urandom(8).hex(), b, n)";
    let runs = |extra: &[&str]| -> Vec<Vec<String>> {
        (0..3)
            .map(|_| {
                let mut args = vec!["python"];
                args.extend_from_slice(extra);
                args.extend(["-c", code]);
                ok_stdout(&bin_run(&args))
                    .split(' ')
                    .map(String::from)
                    .collect()
            })
            .collect()
    };
    // Resumed runs, then plain ones (-I does not resume).
    for (extra, resumed) in [(&[][..], "True"), (&["-I"][..], "False")] {
        let runs = runs(extra);
        for r in &runs {
            assert_eq!(r[0], resumed, "{extra:?}: {runs:?}");
        }
        for field in 1..8 {
            let values: std::collections::HashSet<&String> =
                runs.iter().map(|r| &r[field]).collect();
            assert_eq!(
                values.len(),
                3,
                "{extra:?}: field {field} repeated across runs started within a second: {runs:?}"
            );
        }
    }
}

/// After the secret changed, every key of every table reachable from the
/// modules is found again through a fresh, equal copy of itself: the
/// tables made before the snapshot were all rebuilt.
#[test]
fn tables_built_before_the_snapshot_work_with_the_new_secret() {
    let code = r#"
import sys, gc, datetime, decimal, json, re, sqlite3, collections
def fresh(k):
    if type(k) is str: return ''.join(list(k)) if len(k) > 1 else k
    if type(k) is bytes: return bytes(bytearray(k))
    if type(k) is frozenset: return frozenset(fresh(x) for x in k)
    if type(k) is tuple: return tuple(fresh(x) for x in k)
    return k
seen, todo, dicts, sets, keys = set(), [sys.modules, sys.__dict__], 0, 0, 0
while todo:
    o = todo.pop()
    if id(o) in seen: continue
    seen.add(id(o))
    if type(o) in (dict, collections.OrderedDict, collections.defaultdict):
        dicts += 1
        for k in list(o):
            keys += 1
            f = fresh(k)
            assert hash(f) == hash(k) and f in o, (k, type(o))
    elif type(o) in (set, frozenset):
        sets += 1
        for k in o:
            assert fresh(k) in o, (k, o)
    todo.extend(gc.get_referents(o))
assert datetime.timedelta(0) == datetime.timedelta.resolution * 0
assert hash(datetime.date(2000, 1, 1)) == hash(datetime.date(2000, 1, 1))
assert re.compile('a+').match('aaa') and json.loads('{"a": [1]}') == {"a": [1]}
print(dicts > 500, sets > 50, keys > 5000)
"#;
    assert_eq!(
        ok_stdout(&bin_run(&["python", "-c", code])),
        "True True True"
    );
}

#[test]
fn the_run_has_its_own_argv_and_environment() {
    let out = bin_run(&[
        "-E",
        "GREETING=hi",
        "python",
        "-c",
        "import os, sys; print(sys.argv, sys.orig_argv[1:3], sorted(os.environ), os.environ['GREETING'], os.environb[b'GREETING'])",
        "x",
        "-y",
    ]);
    assert_eq!(
        ok_stdout(&out),
        "['-c', 'x', '-y'] ['-c', \"import os, sys; print(sys.argv, sys.orig_argv[1:3], sorted(os.environ), os.environ['GREETING'], os.environb[b'GREETING'])\"] ['GREETING'] hi b'hi'"
    );
    let out = Command::new(dest().join("bin/run"))
        .env_clear()
        .args(["python", "-m", "json.tool"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"{\"a\":1}")?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(ok_stdout(&out), "{\n    \"a\": 1\n}");
}

#[test]
fn a_fixed_hash_seed_is_honoured_like_the_plain_interpreter() {
    let code = "import sys; print(hash('pynbox'), 'decimal' in sys.modules)";
    let seeded = |preinit: bool| {
        let mut c = pynbox();
        c.args(["run", "-m", &format!("{}/root:/:ro", dest().display())])
            .arg("--cache-dir")
            .arg(dest().join("cache"))
            .args(["-E", "PYTHONHASHSEED=1234", "--guest-program"]);
        if preinit {
            c.arg("--preinit")
                .arg(dest().join(pynbox::preinit::INSTALL_PATH));
        }
        ok_stdout(&c.args(["python", "-c", code]).output().unwrap())
    };
    let resumed = seeded(true);
    let plain = seeded(false);
    assert!(
        resumed.ends_with("True") && plain.ends_with("False"),
        "{resumed} / {plain}"
    );
    assert_eq!(resumed.split(' ').next(), plain.split(' ').next());
    assert_eq!(seeded(true), resumed);
}

#[test]
fn options_the_snapshot_cannot_honour_start_the_plain_interpreter() {
    let flags = "import sys; print(sys.flags.isolated, sys.flags.no_site, sys.flags.hash_randomization, 'decimal' in sys.modules)";
    assert_eq!(
        ok_stdout(&bin_run(&["python", "-I", "-c", flags])),
        "1 0 1 False"
    );
    assert_eq!(
        ok_stdout(&bin_run(&["python", "-S", "-c", flags])),
        "0 1 1 False"
    );
    assert_eq!(
        ok_stdout(&bin_run(&["-E", "PYTHONHASHSEED=0", "python", "-c", flags])),
        "0 0 0 False"
    );
    let out = bin_run(&[
        "-E",
        "PYTHONPATH=/elsewhere",
        "python",
        "-c",
        "import sys; print('/elsewhere' in sys.path)",
    ]);
    assert_eq!(ok_stdout(&out), "True");
}

/// The interpreter itself refuses a command line the snapshot was not made
/// for, should the host ever resume one.
#[test]
fn the_snapshot_refuses_a_run_it_cannot_honour() {
    let out = pynbox()
        .args(["run", "-m", &format!("{}/root:/:ro", dest().display())])
        .arg("--cache-dir")
        .arg(dest().join("cache"))
        .arg(dest().join(pynbox::preinit::INSTALL_PATH))
        .args(["-I", "-c", "print('ran')"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(text(&out.stdout).is_empty());
    assert!(
        text(&out.stderr).contains("cannot honour this run's 'isolated' setting"),
        "{}",
        text(&out.stderr)
    );
}

/// Through the library: a snapshot is an ordinary program, and fresh
/// sandboxes made from it in one process share nothing.
#[test]
fn in_process_sandboxes_from_the_snapshot_are_independent() {
    let runtime = pynbox::Runtime::new(Some(dest().join("cache"))).unwrap();
    let program = runtime
        .load_file(&dest().join(pynbox::preinit::INSTALL_PATH))
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..5 {
        let r = pynbox::Sandbox::new(&program)
            .mount(pynbox::MountSpec::parse(&format!("{}/root:/:ro", dest().display())).unwrap())
            .args([
                "-c",
                "import sys, random; sys.modules['json'].marker = 1; \
                 print('decimal' in sys.modules); print(hash('x')); print(random.random())",
            ])
            .run()
            .unwrap();
        assert_eq!(r.status, pynbox::Status::Exited(0), "{}", text(&r.stderr));
        let out = text(&r.stdout);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "True", "not resumed from the snapshot");
        // Each of the hash secret and the random state is the run's own.
        for (kind, value) in [("hash", lines[1]), ("random", lines[2])] {
            assert!(seen.insert(format!("{kind} {value}")), "a {kind} repeated");
        }
    }
    let r = pynbox::Sandbox::new(&program)
        .mount(pynbox::MountSpec::parse(&format!("{}/root:/:ro", dest().display())).unwrap())
        .args(["-c", "import json; print(hasattr(json, 'marker'))"])
        .run()
        .unwrap();
    assert_eq!(text(&r.stdout).trim(), "False");
}

/// A mount below a directory that the snapshot's import system had already
/// listed (its caches come from install time) is found: the directory
/// shows a modification time no older than the run's mount table.
#[test]
fn a_package_mounted_into_the_standard_library_imports_from_a_resumed_run() {
    let pkg = tempfile::tempdir().unwrap();
    std::fs::write(pkg.path().join("__init__.py"), "X = 42\n").unwrap();
    let out = pynbox()
        .args(["run", "-m", &format!("{}/root:/:ro", dest().display())])
        .arg("-m")
        .arg(format!(
            "{}:/python/lib/python3.13/mountedpkg:ro",
            pkg.path().display()
        ))
        .arg("--cache-dir")
        .arg(dest().join("cache"))
        .arg("--guest-program")
        .arg("--preinit")
        .arg(dest().join(pynbox::preinit::INSTALL_PATH))
        .args([
            "python",
            "-c",
            &format!("{RESUMED}; import mountedpkg; print(mountedpkg.X)"),
        ])
        .output()
        .unwrap();
    assert_eq!(ok_stdout(&out), "True\n42");
}
