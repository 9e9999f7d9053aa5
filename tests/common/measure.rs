//! Measuring a command's peak memory from a test process.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use super::repo;

/// `bench/launch.c` (the benchmarks' launcher), built once per test run
/// with the host's C compiler.
fn measure_launcher() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("pynbox-test-support-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("measure");
        let st = Command::new("cc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(repo().join("bench/launch.c"))
            .status()
            .expect("running the host's C compiler (cc)");
        assert!(st.success(), "compiling bench/launch.c failed");
        exe
    })
    .clone()
}

/// Runs `cmd` (its program, arguments and explicitly set environment, with
/// nothing else of this process's environment) through a small launcher
/// that measures it alone: its output and peak resident memory in KiB.
/// (A child's peak on Linux starts at its parent's, and a test process
/// may hold hundreds of MiB.)
pub fn measured(cmd: &Command) -> (Output, i64) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let mut m = Command::new(measure_launcher());
    m.arg(&report)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            m.env(k, v);
        }
    }
    let status = m.status().expect("running bench/launch.c");
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap_or_default();
    // "NANOSECONDS PEAK_KIB"
    let peak = String::from_utf8(read("report"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "the launcher failed: {}",
                String::from_utf8_lossy(&read("stderr"))
            )
        });
    (
        Output {
            status,
            stdout: read("stdout"),
            stderr: read("stderr"),
        },
        peak,
    )
}
