//! Each session's scratch directory, mounted read-write at `/tmp` in the
//! guest: what the guest writes there between calls, and what the MCP
//! file tools list and read.
//!
//! It lives below the process's scratch directory
//! (`$TMPDIR/pynbox-serve-PID/sessions/TENANT/ID`), TENANT being a hash of
//! the tenant's name (a name may be `..`), ID the session id (32 hex
//! digits, checked before it gets here). It outlives the session's stay
//! in memory (an idle session saved to the store and restored finds its
//! files again), and goes with the session's deletion or with the server
//! process: a session restored by another process finds an empty `/tmp`.

use std::path::PathBuf;

use super::{ApiError, State};

impl State {
    /// Where session `id` of `tenant` keeps its `/tmp`.
    pub(super) fn session_scratch(&self, tenant: &str, id: &str) -> PathBuf {
        let t = blake3::derive_key("pynbox serve scratch tenant", tenant.as_bytes());
        self.scratch
            .join("sessions")
            .join(hex::encode(&t[..16]))
            .join(id)
    }

    /// The scratch directory of session `id`, made if it is not there.
    pub(super) fn make_session_scratch(&self, tenant: &str, id: &str) -> Result<PathBuf, ApiError> {
        let dir = self.session_scratch(tenant, id);
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&dir)
            .map_err(|e| ApiError::internal(format!("cannot make a scratch directory: {e}")))?;
        Ok(dir)
    }

    /// Removes the scratch directory of session `id` (ended or deleted).
    pub(super) fn remove_session_scratch(&self, tenant: &str, id: &str) {
        let _ = std::fs::remove_dir_all(self.session_scratch(tenant, id));
    }
}
