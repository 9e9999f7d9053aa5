//! The session store: a local directory holding saved sessions, one file
//! each, so that a session dropped from memory (idle, or at shutdown) is
//! restored by its next call, in this server process or a later one.
//!
//! A file is named after its tenant (a hash of the name) and the session
//! id, and holds a magic line, a JSON header (tenant, id, limits) and the
//! bytes of `Session::save`. It is written to a temporary name, synced and
//! renamed into place, so a reader sees a whole file or none; a process
//! killed mid-write leaves only a temporary file, which the next start
//! removes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Limits;

const MAGIC: &[u8] = b"pynbox-serve-session 1\n";

/// Whether `id` has the form of the ids sessions are given: 128 random
/// bits as 32 lowercase hex digits.
pub fn is_session_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
const TEMP_PREFIX: &str = ".partial-";

/// A session's limits as the store keeps them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct StoredLimits {
    pub memory: Option<u64>,
    pub timeout: Option<f64>,
    pub max_output: Option<u64>,
}

impl StoredLimits {
    pub fn of(l: &Limits) -> StoredLimits {
        StoredLimits {
            memory: l.memory,
            timeout: l.timeout.map(|t| t.as_secs_f64()),
            max_output: l.max_output,
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            memory: self.memory,
            timeout: self
                .timeout
                .and_then(|t| Duration::try_from_secs_f64(t).ok()),
            max_output: self.max_output,
            ..Limits::default()
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    tenant: String,
    id: String,
    limits: StoredLimits,
}

pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (making it, private to this user) the store directory and
    /// removes what killed writers left.
    pub fn open(dir: &Path) -> Result<Store, String> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir)
            .map_err(|e| format!("cannot make the session store {}: {e}", dir.display()))?;
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read the session store {}: {e}", dir.display()))?;
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// The file of session `id` (32 hex digits, checked by the caller) of
    /// `tenant`.
    /// The file of session `id` of `tenant`; none for an id that is not
    /// one this server makes (32 lowercase hex digits). The id comes from
    /// the request's path, percent-decoded: anything else (`..%2F..`)
    /// must never become part of a file name.
    fn path(&self, tenant: &str, id: &str) -> Option<PathBuf> {
        if !is_session_id(id) {
            return None;
        }
        let t = blake3::hash(tenant.as_bytes()).to_hex();
        Some(self.dir.join(format!("{}-{id}.session", &t[..32])))
    }

    /// Writes a saved session atomically.
    pub fn save(
        &self,
        tenant: &str,
        id: &str,
        limits: StoredLimits,
        saved: &[u8],
    ) -> Result<(), String> {
        let header = serde_json::to_vec(&Header {
            tenant: tenant.into(),
            id: id.into(),
            limits,
        })
        .map_err(|e| e.to_string())?;
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| e.to_string())?;
        let temp = self
            .dir
            .join(format!("{TEMP_PREFIX}{}", hex::encode(random)));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&temp)?;
            f.write_all(MAGIC)?;
            f.write_all(&(header.len() as u32).to_le_bytes())?;
            f.write_all(&header)?;
            f.write_all(saved)?;
            f.sync_all()?;
            let path = self
                .path(tenant, id)
                .ok_or_else(|| std::io::Error::other("not a session id"))?;
            std::fs::rename(&temp, path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            format!("cannot write to the session store: {e}")
        })
    }

    /// The saved session `id` of `tenant`, if the store has it.
    pub fn load(&self, tenant: &str, id: &str) -> Result<Option<(StoredLimits, Vec<u8>)>, String> {
        let Some(path) = self.path(tenant, id) else {
            return Ok(None);
        };
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read the session store: {e}")),
        };
        let bad = || format!("the stored session {id} is damaged");
        let rest = data.strip_prefix(MAGIC).ok_or_else(bad)?;
        if rest.len() < 4 {
            return Err(bad());
        }
        let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let rest = &rest[4..];
        if n > rest.len() {
            return Err(bad());
        }
        let header: Header = serde_json::from_slice(&rest[..n]).map_err(|_| bad())?;
        // The name is a hash of the tenant: a file of another tenant's
        // under this name would be a collision, or a planted file.
        if header.tenant != tenant || header.id != id {
            return Ok(None);
        }
        Ok(Some((header.limits, rest[n..].to_vec())))
    }

    /// Forgets session `id` of `tenant` (nothing if it was never saved).
    pub fn remove(&self, tenant: &str, id: &str) -> Result<(), String> {
        let Some(path) = self.path(tenant, id) else {
            return Ok(());
        };
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove from the session store: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_sessions_come_back_for_their_tenant_only() {
        let dir = std::env::temp_dir().join(format!("pynbox-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::open(&dir).unwrap();
        let id = "0123456789abcdef0123456789abcdef";
        let limits = StoredLimits {
            memory: Some(1 << 20),
            timeout: Some(1.5),
            max_output: None,
        };
        s.save("a", id, limits, b"state").unwrap();
        let (l, data) = s.load("a", id).unwrap().unwrap();
        assert_eq!((l, data.as_slice()), (limits, &b"state"[..]));
        assert!(s.load("b", id).unwrap().is_none());
        std::fs::write(dir.join(format!("{TEMP_PREFIX}x")), b"").unwrap();
        let s = Store::open(&dir).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        s.remove("a", id).unwrap();
        assert!(s.load("a", id).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ids_from_requests_never_name_files_outside_the_store() {
        let base = std::env::temp_dir().join(format!("pynbox-store-escape-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("store");
        let s = Store::open(&dir).unwrap();
        // What a percent-decoded `..%2F` in the request's path would give.
        // A directory in the store with the name a tenant's file would
        // start with lets `HASH-x/../../` resolve: the id check alone
        // keeps the victim.
        let victim = base.join("victim.session");
        std::fs::write(&victim, b"keep").unwrap();
        let prefix = &blake3::hash(b"a").to_hex()[..32];
        std::fs::create_dir(dir.join(format!("{prefix}-x"))).unwrap();
        let limits = StoredLimits::of(&Limits::default());
        for id in [
            "../victim",
            "x/../../victim",
            "/etc/passwd",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcde",
            "",
        ] {
            s.remove("a", id).unwrap();
            assert!(s.load("a", id).unwrap().is_none());
            assert!(s.save("a", id, limits, b"x").is_err());
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&base);
    }
}
