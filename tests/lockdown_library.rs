//! The second wall through the library: `LockDown::apply` confines the
//! whole embedding process, so this test binary holds this one test alone.
//! After it, sandboxes still run over the kept directories, and the
//! process itself can open nothing else, start no program and open no
//! socket.

mod common;

use common::*;
use pynbox::{LockDown, MountSpec, Runtime, Sandbox, Status};

#[test]
fn an_embedding_process_locks_itself_down_and_keeps_running_sandboxes() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("in.txt"), "kept").unwrap();
    // A host file that exists everywhere, outside what is kept.
    let outside = std::path::Path::new("/etc/passwd");
    assert!(std::fs::read(outside).is_ok());
    let cache = d.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let mount = MountSpec::new(&data, "/data", true).unwrap();

    // Where Landlock cannot reach threads already running, it must come
    // before the runtime starts its own.
    let program_path = guest("probe");
    // The whole temporary directory is kept writable, so that it can be
    // removed at the end.
    let report = LockDown::new()
        .mount(&mount)
        .write(d.path())
        .read(&program_path)
        .apply_landlock()
        .unwrap();
    assert!(report.landlock_abi.is_some(), "{report}");
    let runtime = Runtime::new(Some(cache.clone())).unwrap();
    let program = runtime.load_file(&program_path).unwrap();
    let allowed = LockDown::apply_seccomp().unwrap();
    assert!(allowed.is_some());

    let r = Sandbox::new(&program)
        .mount(mount)
        .args(["read", "/data/in.txt", "write", "/data/out.txt=new"])
        .run()
        .unwrap();
    assert_eq!(r.status, Status::Exited(0), "{}", text(&r.stdout));
    assert!(text(&r.stdout).contains("read /data/in.txt: ok kept"));
    assert_eq!(
        std::fs::read_to_string(data.join("out.txt")).unwrap(),
        "new"
    );

    // The process itself: no other file, no program, no socket.
    let e = std::fs::read(outside).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    let e = std::process::Command::new("/bin/true")
        .status()
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    let e = std::net::TcpListener::bind("127.0.0.1:0").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
}
