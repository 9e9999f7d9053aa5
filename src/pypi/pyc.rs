//! `.pyc` files compiled at install, inside the sandbox, as pip compiles
//! them: the sandbox's own CPython runs `compileall` over a distribution's
//! staged site-packages files before they are committed.
//!
//! The run sees DEST's root read-only and only the distribution's staging
//! directory writable, mounted at the real site-packages path (so the
//! compiled code names the installed paths); it has no network and the
//! usual limits. What it leaves is not trusted either: only regular files
//! at the names compileall gives the staged `.py` files
//! (`__pycache__/NAME.cpython-313.pyc`) are taken, and they are committed
//! and recorded in the receipt like the other files.

use std::path::Path;
use std::time::Duration;

use crate::install::{Dest, PYTHON};
use crate::mounts::MountSpec;
use crate::runtime::{Input, Limits, Output, Program, Runtime, Sandbox, Status};

use super::wheel::SITE_PACKAGES;

/// CPython 3.13's `sys.implementation.cache_tag`.
const CACHE_TAG: &str = "cpython-313";

/// The sandbox's interpreter, loaded once for every distribution of an
/// install (its machine code is in DEST's cache already).
pub struct Compiler {
    program: Program,
    root: std::path::PathBuf,
}

impl Compiler {
    pub fn new(dest: &Dest) -> Result<Compiler, String> {
        let runtime = Runtime::new(Some(dest.path().join("cache"))).map_err(|e| e.to_string())?;
        let path = dest
            .path()
            .join("root")
            .join(PYTHON.trim_start_matches('/'));
        let program = runtime.load_file(&path).map_err(|e| e.to_string())?;
        Ok(Compiler {
            program,
            root: dest.path().join("root"),
        })
    }

    /// Compiles the `.py` files among `staged` (paths below the root, as
    /// staged below `stage`), returning the `.pyc` files made (paths below
    /// the root). A file that does not compile (Python 2 code in a wheel,
    /// say) is left without one, as pip leaves it.
    pub fn compile(&self, stage: &Path, staged: &[String]) -> Result<Vec<String>, String> {
        let prefix = format!("{SITE_PACKAGES}/");
        let sources: Vec<&str> = staged
            .iter()
            .filter(|p| p.starts_with(&prefix) && p.ends_with(".py"))
            .map(String::as_str)
            .collect();
        if sources.is_empty() {
            return Ok(Vec::new());
        }
        let guest = format!("/{SITE_PACKAGES}");
        let mounts = [
            MountSpec::new(&self.root, "/", false),
            MountSpec::new(stage.join(SITE_PACKAGES), &guest, true),
        ];
        let mut sandbox = Sandbox::new(&self.program)
            .arg0("python")
            .args(["-m", "compileall", "-q", &guest])
            .stdin(Input::Null)
            .stdout(Output::Capture)
            .stderr(Output::Capture)
            .limits(Limits {
                memory: Some(1 << 30),
                timeout: Some(Duration::from_secs(600)),
                max_output: Some(1 << 20),
                ..Limits::default()
            });
        for m in mounts {
            sandbox = sandbox.mount(m.map_err(|e| e.to_string())?);
        }
        let result = sandbox.run().map_err(|e| e.to_string())?;
        match result.status {
            // compileall exits 1 when a file did not compile.
            Status::Exited(0 | 1) => {}
            other => {
                return Err(format!(
                    "compileall ended with {other:?}: {}",
                    String::from_utf8_lossy(&result.stderr)
                        .lines()
                        .last()
                        .unwrap_or_default()
                ))
            }
        }
        let mut made = Vec::new();
        for src in sources {
            let (dir, file) = src.rsplit_once('/').unwrap_or(("", src));
            let stem = file.trim_end_matches(".py");
            let pyc = format!("{dir}/__pycache__/{stem}.{CACHE_TAG}.pyc");
            let is_file =
                std::fs::symlink_metadata(stage.join(&pyc)).is_ok_and(|m| m.file_type().is_file());
            if is_file {
                made.push(pyc);
            }
        }
        Ok(made)
    }
}
