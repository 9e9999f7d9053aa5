//! The second wall (src/lockdown.rs): the CLI confines pynbox's own
//! process with Landlock and seccomp. With the `test-compromise` feature
//! (`cargo test --release --features test-compromise --test lockdown`), a
//! guest makes the process itself attempt what a guest that escaped
//! Wasmtime would; each attempt must be refused by the kernel, and must
//! work with `--no-os-sandbox`, which shows that the test can fail.

mod common;

use common::*;

#[test]
fn the_cli_reports_both_walls_and_can_require_them() {
    let out = pynbox()
        .env("VERBOSE", "1")
        .args(["run", "--require-os-sandbox", &probe(), "exit", "0"])
        .output()
        .unwrap();
    assert_ok(&out);
    let err = text(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("pynbox: os sandbox: "))
        .unwrap_or_else(|| panic!("no report in {err}"));
    assert!(line.contains("Landlock ABI "), "{line}");
    assert!(line.contains("system calls allowed"), "{line}");
    // Off on request, with nothing said.
    let out = run(&["run", "--no-os-sandbox", &probe(), "exit", "0"]);
    assert_ok(&out);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let out = run(&[
        "run",
        "--no-os-sandbox",
        "--require-os-sandbox",
        &probe(),
        "exit",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[cfg(feature = "test-compromise")]
mod compromised {
    use super::*;
    use std::process::Output;

    const EPERM: i32 = 1;
    const EACCES: i32 = 13;

    /// A guest that makes pynbox attempt `op` and exits with the errno.
    fn attempt(op: i32, sandbox: bool, env: &[(&str, &str)], mounts: &[&str]) -> Output {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("attempt.wasm");
        let wat = format!(
            r#"(module
              (import "pynbox_test" "attempt" (func $a (param i32) (result i32)))
              (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
              (memory (export "memory") 1)
              (func (export "_start") (call $exit (call $a (i32.const {op})))))"#
        );
        std::fs::write(&m, wat::parse_str(wat).unwrap()).unwrap();
        let mut c = pynbox();
        c.arg("run");
        if !sandbox {
            c.arg("--no-os-sandbox");
        }
        for mount in mounts {
            c.args(["-m", mount]);
        }
        c.arg(&m);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn code(out: &Output) -> i32 {
        out.status
            .code()
            .unwrap_or_else(|| panic!("killed: {:?}", out.status))
    }

    #[test]
    fn a_host_file_outside_the_mounts_cannot_be_opened() {
        let d = tempfile::tempdir().unwrap();
        let secret = d.path().join("secret");
        std::fs::write(&secret, "secret").unwrap();
        let env = [("PYNBOX_TEST_PATH", secret.to_str().unwrap())];
        assert_eq!(code(&attempt(1, true, &env, &[])), EACCES);
        assert_eq!(code(&attempt(1, false, &env, &[])), 0, "the control run");
    }

    #[test]
    fn a_read_only_mount_cannot_be_written_by_a_fresh_open() {
        let d = tempfile::tempdir().unwrap();
        let ro = format!("{}:/ro:ro", d.path().display());
        let target = d.path().join("planted");
        let env = [("PYNBOX_TEST_PATH", target.to_str().unwrap())];
        assert_eq!(code(&attempt(2, true, &env, &[&ro])), EACCES);
        assert!(!target.exists());
        assert_eq!(code(&attempt(2, false, &env, &[&ro])), 0, "the control run");
        assert!(target.exists());
    }

    #[test]
    fn no_file_can_be_created_in_tmp() {
        let name = format!("/tmp/pynbox-lockdown-{}", std::process::id());
        let env = [("PYNBOX_TEST_PATH", name.as_str())];
        assert_eq!(code(&attempt(2, true, &env, &[])), EACCES);
        assert!(!std::path::Path::new(&name).exists());
        assert_eq!(code(&attempt(2, false, &env, &[])), 0, "the control run");
        std::fs::remove_file(&name).unwrap();
    }

    #[test]
    fn no_program_can_be_started() {
        assert_eq!(code(&attempt(3, true, &[], &[])), EPERM);
        // Without the wall the process became /bin/sh, which exited 99.
        assert_eq!(code(&attempt(3, false, &[], &[])), 99, "the control run");
    }

    #[test]
    fn no_socket_reaches_a_listener_on_the_loopback() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let env = [("PYNBOX_TEST_PORT", port.as_str())];
        assert_eq!(code(&attempt(4, true, &env, &[])), EPERM);
        assert!(listener.accept().is_err(), "a connection arrived");
        assert_eq!(code(&attempt(4, false, &env, &[])), 0, "the control run");
        assert!(listener.accept().is_ok(), "the control run's connection");
    }

    #[test]
    fn no_process_can_be_traced_or_started() {
        assert_eq!(code(&attempt(5, true, &[], &[])), EPERM, "ptrace");
        assert_eq!(code(&attempt(6, true, &[], &[])), EPERM, "fork");
        assert_eq!(code(&attempt(6, false, &[], &[])), 0, "the control run");
    }

    #[test]
    fn no_memory_can_be_made_executable() {
        assert_eq!(code(&attempt(7, true, &[], &[])), EPERM);
        assert_eq!(code(&attempt(7, false, &[], &[])), 0, "the control run");
    }
}
