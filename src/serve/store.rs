//! The session store: saved sessions, one file or object each, so that a
//! session dropped from memory (idle, or at shutdown) is restored by its
//! next call, in this server process or a later one.
//!
//! Where: a local directory (`--session-store DIR`), or object storage
//! through the `object_store` crate (`s3://BUCKET/PREFIX`, `gs://...`,
//! `az://...`, configured by the usual `AWS_*`, `GOOGLE_*` and `AZURE_*`
//! variables, e.g. `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`).
//!
//! A saved session is named after its tenant (a hash of the name) and the
//! session id, and holds a magic line, a JSON header (tenant, id, limits)
//! and the bytes of `Session::save`. In a directory it is written to a
//! temporary name, synced and renamed into place, so a reader sees a whole
//! file or none; a process killed mid-write leaves only a temporary file,
//! which the next start removes (object_store's own local files are not
//! used: they are not synced). An object store's PUT is atomic by itself.
//!
//! What comes back from a store is hostile input: nothing larger than a
//! session within the tenant's memory maximum could be is read, the header
//! must name the tenant and id asked for, and the rest goes to
//! `Session::restore`, which checks it like any restore.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme, RetryConfig};
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

/// Where saved sessions go, as `--session-store` names it.
#[derive(Clone, Debug)]
pub enum Location {
    Dir(PathBuf),
    Url(url::Url),
}

impl Location {
    /// A URL when `arg` has a scheme (`s3://...`), else a directory.
    pub fn parse(arg: &OsStr) -> Result<Location, String> {
        match arg.to_str() {
            Some(s) if s.contains("://") => url::Url::parse(s)
                .map(Location::Url)
                .map_err(|e| format!("--session-store {s}: {e}")),
            _ => Ok(Location::Dir(PathBuf::from(arg))),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Dir(d) => write!(f, "{}", d.display()),
            // Without any user:password a URL might carry.
            Location::Url(u) => write!(
                f,
                "{}://{}{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.path()
            ),
        }
    }
}

pub struct Store {
    backend: Backend,
}

enum Backend {
    Dir(PathBuf),
    Object {
        store: Box<dyn ObjectStore>,
        prefix: ObjectPath,
        /// The server's runtime: the store is used from blocking threads.
        rt: tokio::runtime::Handle,
    },
}

/// An object store's calls retry a few times, and give up within this long
/// (object_store's default is three minutes: too long for a request).
const OBJECT_RETRY: Duration = Duration::from_secs(20);

impl Store {
    /// Opens the store at `location`: see [`Store::open_dir`] and
    /// [`Store::open_url`].
    pub fn open(location: &Location, rt: &tokio::runtime::Handle) -> Result<Store, String> {
        match location {
            Location::Dir(d) => Store::open_dir(d),
            Location::Url(u) => Store::open_url(u, rt),
        }
    }

    /// An object store, configured from the environment, checked by
    /// writing and removing a probe object, so that a wrong bucket,
    /// endpoint or credential stops the server at start rather than at
    /// its first save.
    pub fn open_url(url: &url::Url, rt: &tokio::runtime::Handle) -> Result<Store, String> {
        let shown = Location::Url(url.clone()).to_string();
        let fail = |e: &dyn std::fmt::Display| {
            format!(
                "--session-store {shown}: {}",
                e.to_string().replace('\n', " ")
            )
        };
        let (scheme, prefix) = ObjectStoreScheme::parse(url).map_err(|e| fail(&e))?;
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: OBJECT_RETRY,
            ..RetryConfig::default()
        };
        let store: Box<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::AmazonS3 => Box::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry)
                    .build()
                    .map_err(|e| fail(&e))?,
            ),
            ObjectStoreScheme::GoogleCloudStorage => Box::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry)
                    .build()
                    .map_err(|e| fail(&e))?,
            ),
            ObjectStoreScheme::MicrosoftAzure => Box::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry)
                    .build()
                    .map_err(|e| fail(&e))?,
            ),
            _ => {
                return Err(format!(
                    "--session-store {shown}: give a directory, or an s3://, gs:// or az:// URL"
                ))
            }
        };
        let s = Store {
            backend: Backend::Object {
                store,
                prefix,
                rt: rt.clone(),
            },
        };
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| e.to_string())?;
        let probe = format!(".probe-{}", hex::encode(random));
        s.put(
            &probe,
            b"pynbox serve checks that it can write here".to_vec(),
        )
        .and_then(|()| s.delete(&probe))
        .map_err(|e| format!("--session-store {shown}: {e}"))?;
        Ok(s)
    }

    /// Opens (making it, private to this user) the store directory and
    /// removes what killed writers left.
    pub fn open_dir(dir: &Path) -> Result<Store, String> {
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
            backend: Backend::Dir(dir.to_path_buf()),
        })
    }

    /// The name (file or object, below the store) of session `id` of
    /// `tenant`; none for an id that is not one this server makes (32
    /// lowercase hex digits). The id comes from the request's path,
    /// percent-decoded: anything else (`..%2F..`) must never become part
    /// of a name.
    fn name(tenant: &str, id: &str) -> Option<String> {
        if !is_session_id(id) {
            return None;
        }
        let t = blake3::hash(tenant.as_bytes()).to_hex();
        Some(format!("{}-{id}.session", &t[..32]))
    }

    /// Runs `f` (an object store call) on the server's runtime, from a
    /// blocking thread.
    fn object<R>(
        &self,
        f: impl AsyncFnOnce(&dyn ObjectStore, &ObjectPath) -> object_store::Result<R>,
    ) -> Result<R, object_store::Error> {
        let Backend::Object { store, prefix, rt } = &self.backend else {
            unreachable!("only for object stores")
        };
        rt.block_on(f(store.as_ref(), prefix))
    }

    /// Writes `name` whole (atomically: a reader sees all of it or none).
    fn put(&self, name: &str, data: Vec<u8>) -> Result<(), String> {
        match &self.backend {
            Backend::Dir(dir) => write_file(dir, name, &data),
            Backend::Object { .. } => self
                .object(async |store, prefix| {
                    store
                        .put(&prefix.clone().join(name), data.into())
                        .await
                        .map(|_| ())
                })
                .map_err(|e| one_line(&e)),
        }
        .map_err(|e| format!("cannot write to the session store: {e}"))
    }

    /// The contents of `name`, if there is such a file or object; an error
    /// if it is larger than `max` bytes (it is not read then).
    fn get(&self, name: &str, max: u64) -> Result<Option<Vec<u8>>, Failure> {
        let too_large = |n: u64| {
            Failure::Refused(format!(
                "the stored session is {n} bytes, more than a session of this tenant can be ({max})"
            ))
        };
        let io = |e: &dyn std::fmt::Display| {
            Failure::Io(format!(
                "cannot read the session store: {}",
                e.to_string().replace('\n', " ")
            ))
        };
        match &self.backend {
            Backend::Dir(dir) => {
                let f = match std::fs::File::open(dir.join(name)) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(io(&e)),
                };
                let mut data = Vec::new();
                f.take(max.saturating_add(1))
                    .read_to_end(&mut data)
                    .map_err(|e| io(&e))?;
                if data.len() as u64 > max {
                    return Err(too_large(data.len() as u64));
                }
                Ok(Some(data))
            }
            Backend::Object { .. } => {
                let r = self.object(async |store, prefix| {
                    let got = match store.get(&prefix.clone().join(name)).await {
                        Ok(g) => g,
                        Err(object_store::Error::NotFound { .. }) => return Ok(Err(None)),
                        Err(e) => return Err(e),
                    };
                    // The size the server declared (HTTP framing holds the
                    // body to it), checked before the body is read.
                    let n = got.range.end.saturating_sub(got.range.start);
                    if got.meta.size > max || n > max {
                        return Ok(Err(Some(got.meta.size.max(n))));
                    }
                    got.bytes().await.map(|b| Ok(b.to_vec()))
                });
                match r {
                    Ok(Ok(data)) => Ok(Some(data)),
                    Ok(Err(None)) => Ok(None),
                    Ok(Err(Some(n))) => Err(too_large(n)),
                    Err(e) => Err(io(&e)),
                }
            }
        }
    }

    /// Removes `name` (nothing if there is none).
    fn delete(&self, name: &str) -> Result<(), String> {
        match &self.backend {
            Backend::Dir(dir) => match std::fs::remove_file(dir.join(name)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.to_string()),
            },
            Backend::Object { .. } => self
                .object(async |store, prefix| {
                    match store.delete(&prefix.clone().join(name)).await {
                        Err(object_store::Error::NotFound { .. }) => Ok(()),
                        r => r,
                    }
                })
                .map_err(|e| one_line(&e)),
        }
        .map_err(|e| format!("cannot remove from the session store: {e}"))
    }

    /// Writes a saved session atomically.
    pub fn save(
        &self,
        tenant: &str,
        id: &str,
        limits: StoredLimits,
        saved: &[u8],
    ) -> Result<(), String> {
        let name =
            Store::name(tenant, id).ok_or("cannot write to the session store: not a session id")?;
        let header = serde_json::to_vec(&Header {
            tenant: tenant.into(),
            id: id.into(),
            limits,
        })
        .map_err(|e| e.to_string())?;
        let mut data = Vec::with_capacity(MAGIC.len() + 4 + header.len() + saved.len());
        data.extend_from_slice(MAGIC);
        data.extend_from_slice(&(header.len() as u32).to_le_bytes());
        data.extend_from_slice(&header);
        data.extend_from_slice(saved);
        self.put(&name, data).map_err(withheld)
    }

    /// The saved session `id` of `tenant`, if the store has it. One larger
    /// than `max` bytes is refused unread.
    pub fn load(
        &self,
        tenant: &str,
        id: &str,
        max: u64,
    ) -> Result<Option<(StoredLimits, Vec<u8>)>, String> {
        let Some(name) = Store::name(tenant, id) else {
            return Ok(None);
        };
        let data = match self.get(&name, max) {
            Ok(Some(data)) => data,
            Ok(None) => return Ok(None),
            Err(Failure::Refused(e)) => return Err(e),
            Err(Failure::Io(e)) => return Err(withheld(e)),
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
        match Store::name(tenant, id) {
            Some(name) => self.delete(&name).map_err(withheld),
            None => Ok(()),
        }
    }
}

/// Writes `dir/name` through a synced temporary file renamed into place.
fn write_file(dir: &Path, name: &str, data: &[u8]) -> Result<(), String> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| e.to_string())?;
    let temp = dir.join(format!("{TEMP_PREFIX}{}", hex::encode(random)));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&temp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&temp, dir.join(name))?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        e.to_string()
    })
}

/// Why a stored session could not be read.
enum Failure {
    /// The store failed (its message names endpoints and paths).
    Io(String),
    /// What is stored is refused (the client may be told why).
    Refused(String),
}

/// `e`, a failure of the store itself, in the log; what a client is told
/// instead (no endpoint, bucket or path of the server's).
fn withheld(e: String) -> String {
    tracing::warn!("{e}");
    let what = e.split(':').next().unwrap_or("the session store failed");
    format!("{what} (the server's log says why)")
}

/// An object store error on one line (their sources can span several).
fn one_line(e: &object_store::Error) -> String {
    e.to_string().replace('\n', " ")
}

/// The most bytes a stored session of a tenant whose guests may have
/// `memory` bytes can take: its changed pages, compressed (zstd can grow
/// incompressible data by a little), and the framing.
pub fn max_stored(memory: u64) -> u64 {
    memory.saturating_add(memory / 64).saturating_add(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_sessions_come_back_for_their_tenant_only() {
        let dir = std::env::temp_dir().join(format!("pynbox-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::open_dir(&dir).unwrap();
        let id = "0123456789abcdef0123456789abcdef";
        let limits = StoredLimits {
            memory: Some(1 << 20),
            timeout: Some(1.5),
            max_output: None,
        };
        s.save("a", id, limits, b"state").unwrap();
        let (l, data) = s.load("a", id, 1 << 20).unwrap().unwrap();
        assert_eq!((l, data.as_slice()), (limits, &b"state"[..]));
        assert!(s.load("b", id, 1 << 20).unwrap().is_none());
        // Larger than a session of the tenant can be: refused unread.
        s.save("a", id, limits, &[7; 5000]).unwrap();
        let e = s.load("a", id, 4000).unwrap_err();
        assert!(
            e.contains("more than a session of this tenant can be"),
            "{e}"
        );
        assert_eq!(s.load("a", id, 1 << 20).unwrap().unwrap().1, vec![7; 5000]);
        assert!(Store::name("a", "../x").is_none());
        std::fs::write(dir.join(format!("{TEMP_PREFIX}x")), b"").unwrap();
        let s = Store::open_dir(&dir).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        s.remove("a", id).unwrap();
        assert!(s.load("a", id, 1 << 20).unwrap().is_none());
        // A store that fails tells the client so, not where it is.
        std::fs::create_dir(dir.join(Store::name("a", id).unwrap())).unwrap();
        let e = s.load("a", id, 1 << 20).unwrap_err();
        assert_eq!(
            e,
            "cannot read the session store (the server's log says why)"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn store_locations_are_directories_unless_they_are_urls() {
        let p = |s: &str| Location::parse(OsStr::new(s)).unwrap();
        assert!(matches!(p("/var/lib/pynbox"), Location::Dir(_)));
        assert!(matches!(p("relative/dir"), Location::Dir(_)));
        assert!(matches!(p("s3://bucket/prefix"), Location::Url(_)));
        // Credentials in a URL are never shown.
        assert_eq!(
            p("s3://key:secret@bucket/prefix").to_string(),
            "s3://bucket/prefix"
        );
        assert!(Location::parse(OsStr::new("s3://[bad")).is_err());
    }

    #[test]
    fn ids_from_requests_never_name_files_outside_the_store() {
        let base = std::env::temp_dir().join(format!("pynbox-store-escape-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("store");
        let s = Store::open_dir(&dir).unwrap();
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
            assert!(s.load("a", id, 1 << 20).unwrap().is_none());
            assert!(s.save("a", id, limits, b"x").is_err());
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&base);
    }
}
