//! Embedding pynbox: run Python code in a fresh sandbox from a Rust
//! program, with input from memory and output captured.
//!
//! ```text
//! pynbox install /tmp/sandbox python
//! cargo run --release --example embed -- /tmp/sandbox
//! ```

use std::path::PathBuf;
use std::time::Duration;

use pynbox::{Input, Limits, MountSpec, Runtime, Sandbox, Status};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dest = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: embed DEST (an install with python)")?,
    );
    // One runtime per process; the install's cache already holds the
    // interpreter's machine code, so loading does not compile.
    let runtime = Runtime::new(Some(dest.join("cache")))?;
    // The install's pre-initialised python (a snapshot taken after start-up
    // and the common imports) starts a run in a fraction of the time; it
    // serves runs with plain `-c`, `-m` or a script and no PYTHON* variables.
    let preinit = dest.join(pynbox::preinit::INSTALL_PATH);
    let python = if preinit.is_file() {
        runtime.load_file(&preinit)?
    } else {
        runtime.load_file(&dest.join("root/python/bin/python.wasm"))?
    };

    let root = MountSpec::parse(&format!("{}:/:ro", dest.join("root").display()))?;
    let result = Sandbox::new(&python)
        .arg0("python")
        .args([
            "-c",
            "import sys, json; data = json.load(sys.stdin); print(sum(data['values']))",
        ])
        .mount(root)
        .stdin(Input::Bytes(br#"{"values": [1, 2, 3, 36]}"#.to_vec()))
        .limits(Limits {
            memory: Some(256 << 20),
            timeout: Some(Duration::from_secs(10)),
            max_output: Some(1 << 20),
            ..Limits::default()
        })
        .run()?;

    match result.status {
        Status::Exited(0) => print!(
            "the sandbox answered: {}",
            String::from_utf8_lossy(&result.stdout)
        ),
        other => {
            eprintln!(
                "the guest failed: {other:?}\n{}",
                String::from_utf8_lossy(&result.stderr)
            );
            std::process::exit(1);
        }
    }
    Ok(())
}
