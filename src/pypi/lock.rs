//! `DEST/pylock.toml` (PEP 751): the exact wheels installed from package
//! indexes, with their hashes, written after every change and read back
//! to reproduce the set (offline, from the download cache).

use serde::{Deserialize, Serialize};

use crate::packages::{PackageError, PypiOrigin, Result};

/// The largest lock file read.
const MAX_LOCK: u64 = 16 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub struct Lock {
    #[serde(rename = "lock-version")]
    pub lock_version: String,
    #[serde(rename = "created-by", default)]
    pub created_by: String,
    #[serde(
        rename = "requires-python",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub requires_python: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<String>,
    #[serde(default)]
    pub packages: Vec<LockPackage>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LockPackage {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wheels: Vec<LockWheel>,
    /// The source distribution, for a package installed from a wheel
    /// built inside the sandbox: built again (or taken from the build
    /// cache) when the lock is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdist: Option<LockWheel>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LockWheel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    pub hashes: Hashes,
}

impl LockWheel {
    /// The file's name: as the lock gives it, else the last part of its
    /// URL or path.
    pub fn file_name(&self) -> String {
        self.name
            .clone()
            .or_else(|| {
                self.url
                    .as_deref()
                    .or(self.path.as_deref())
                    .and_then(|u| u.rsplit('/').next())
                    .map(str::to_string)
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Hashes {
    #[serde(default)]
    pub sha256: Option<String>,
}

/// The lock for the distributions installed from indexes, in name order.
pub fn render(installed: &[(String, String, PypiOrigin)]) -> String {
    let lock = Lock {
        lock_version: "1.0".into(),
        created_by: "pynbox".into(),
        requires_python: Some("==3.13.*".into()),
        environments: vec![
            "sys_platform == \"wasi\" and platform_machine == \"wasm32\" and implementation_name == \"cpython\"".into(),
        ],
        packages: installed
            .iter()
            .map(|(name, version, o)| {
                let file = LockWheel {
                    name: Some(o.file.clone()),
                    url: o.url.clone(),
                    path: o.path.clone(),
                    size: Some(o.size),
                    hashes: Hashes {
                        sha256: Some(o.sha256.clone()),
                    },
                };
                let (sdist, wheels) = if o.file.ends_with(".whl") {
                    (None, vec![file])
                } else {
                    (Some(file), Vec::new())
                };
                LockPackage {
                    name: name.clone(),
                    version: Some(version.clone()),
                    marker: None,
                    index: o.index.clone(),
                    wheels,
                    sdist,
                }
            })
            .collect(),
    };
    let body = toml::to_string(&lock).expect("the lock serializes");
    format!("# Written by pynbox after every `pynbox pip` change: the wheels installed\n# from package indexes. Reproduce with `DEST/bin/pip sync DEST/pylock.toml`.\n{body}")
}

/// Whether a requirements file is a PEP 751 lock (`pylock.toml`,
/// `pylock.NAME.toml`).
pub fn is_lock_file(path: &std::path::Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "pylock.toml" || (n.starts_with("pylock.") && n.ends_with(".toml")))
}

pub fn read(path: &std::path::Path) -> Result<Lock> {
    use std::io::Read;
    let mut data = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_LOCK + 1).read_to_string(&mut data))
        .map_err(|e| PackageError(format!("reading {}: {e}", path.display())))?;
    if data.len() as u64 > MAX_LOCK {
        return Err(PackageError(format!(
            "{} is larger than 16 MiB: refused",
            path.display()
        )));
    }
    let lock: Lock = toml::from_str(&data).map_err(|e| {
        PackageError(format!(
            "{} is not a valid pylock.toml: {}",
            path.display(),
            e.message()
        ))
    })?;
    if lock.lock_version.split('.').next() != Some("1") {
        return Err(PackageError(format!(
            "{}: lock-version {} is not supported (1.x is)",
            path.display(),
            lock.lock_version
        )));
    }
    Ok(lock)
}
