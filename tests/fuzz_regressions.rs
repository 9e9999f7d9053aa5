//! Replays every input kept under `fuzz/regressions/TARGET/` (crashes the
//! fuzzers found, and seeds that exercise each target), so that a fixed bug
//! stays fixed without a fuzzer.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        f(&std::fs::read(e.path()).unwrap());
        n += 1;
    }
    assert!(n > 0, "no inputs in {}", dir.display());
}

#[test]
fn specs() {
    replay("specs", pynbox::fuzzing::specs);
}

#[test]
fn manifest() {
    replay("manifest", pynbox::fuzzing::manifest);
}

#[test]
fn archive() {
    replay("archive", pynbox::fuzzing::archive);
}

#[test]
fn syscalls() {
    replay("syscalls", pynbox::fuzzing::syscalls);
}

#[test]
fn session() {
    replay("session", pynbox::fuzzing::session);
}

#[test]
fn dylink() {
    replay("dylink", pynbox::fuzzing::dylink);
}
