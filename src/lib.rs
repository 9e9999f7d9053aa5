//! pynbox runs untrusted WebAssembly programs, above all CPython compiled
//! to wasm32-wasip1, so that they see nothing of the host but what they are
//! given: mounted directories, forwarded descriptors, arguments and
//! environment variables, under memory, time and output limits.
//!
//! ```no_run
//! use pynbox::{MountSpec, Runtime, Sandbox};
//! let runtime = Runtime::new(Runtime::default_cache_dir()).unwrap();
//! let python = runtime.load_file("sandbox/root/python/bin/python.wasm".as_ref()).unwrap();
//! let result = Sandbox::new(&python)
//!     .mount(MountSpec::parse("sandbox/root:/:ro").unwrap())
//!     .args(["-c", "print(6 * 7)"])
//!     .run()
//!     .unwrap();
//! assert_eq!(result.stdout, b"42\n");
//! ```

mod code_memory;
pub mod descriptors;
mod download;
pub mod fuzzing;
pub mod install;
pub mod lockdown;
pub mod mounts;
pub mod native;
pub mod packages;
pub mod preinit;
pub mod pypi;
pub mod recipes;
pub mod runtime;
pub mod serve;
pub mod session;
pub mod wasi;

pub use descriptors::{parse_size, FdSource, FdSpec};
pub use lockdown::LockDown;
pub use mounts::{MountSpec, SpecError};
pub use runtime::{
    Error, ErrorKind, Input, Interruption, Limits, Output, Program, RunResult, Runtime, Sandbox,
    Status,
};
