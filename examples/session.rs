//! A session from Rust: state kept across calls, a host function, and the
//! session saved to bytes and restored (README, "Embedding").
//!
//! ```text
//! pynbox install /tmp/sandbox python
//! cargo run --release --example session -- /tmp/sandbox
//! ```

use std::path::PathBuf;

use pynbox::session::{Python, Session, SessionOptions, Value};
use pynbox::{MountSpec, Runtime};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dest = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: session DEST (an install with python)")?,
    );
    let runtime = Runtime::new(Some(dest.join("cache")))?;
    let python = Python::from_install(&runtime, &dest)?;
    let options = SessionOptions {
        mounts: vec![MountSpec::parse(&format!(
            "{}:/:ro",
            dest.join("root").display()
        ))?],
        ..SessionOptions::default()
    };
    let mut session = Session::start(&python, options.clone())?;
    session.expose("lookup", |args| Ok(Value::Int(args.len() as i64)));
    session.exec("import pynbox_host\nx = pynbox_host.lookup(1, 2)")?;
    assert_eq!(session.eval("x * 21")?.value, Value::Int(42));
    let saved: Vec<u8> = session.save()?;
    let mut again = Session::restore(&python, &saved, options)?;
    assert_eq!(again.eval("x")?.value, Value::Int(2));
    let printed = again.exec("print('restored, x =', x)")?;
    print!("{}", String::from_utf8_lossy(&printed.stdout));
    println!("saved session: {} bytes", saved.len());
    Ok(())
}
