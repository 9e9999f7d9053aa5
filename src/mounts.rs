//! Mounts: which host directories the guest sees, where, and how a guest
//! path is resolved to one of them.
//!
//! The guest namespace is a tree of mount points. Everything below a mount
//! point is resolved by cap-std beneath the mount's host directory, which
//! refuses `..`, absolute symlinks and symlinks that lead outside, and does so
//! without a check-then-use race (openat2 `RESOLVE_BENEATH` on Linux, a
//! component-by-component walk elsewhere). Directories that exist only
//! because a mount lies below them (`/a` for a mount at `/a/b` with no root
//! mount) are virtual, empty apart from those mount points, and read-only.

use std::fmt;
use std::path::PathBuf;

use crate::wasi::abi::Errno;

/// One `-m HOST:VIRT:ro|rw` mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// The host directory.
    pub host: PathBuf,
    /// The absolute, normalised guest path (`/`, `/data`).
    pub guest: String,
    /// Whether the guest may change what is below the mount.
    pub writable: bool,
}

/// A mount or descriptor specification that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError(pub String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

impl MountSpec {
    /// A mount of `host` at guest path `guest`.
    pub fn new(
        host: impl Into<PathBuf>,
        guest: &str,
        writable: bool,
    ) -> Result<MountSpec, SpecError> {
        let comps = guest_components(guest).map_err(|why| {
            SpecError(format!(
                "mount point '{guest}' {why}: use an absolute path such as /data"
            ))
        })?;
        Ok(MountSpec {
            host: host.into(),
            guest: format!("/{}", comps.join("/")),
            writable,
        })
    }

    /// Parses `HOST:VIRT:ro` or `HOST:VIRT:rw`. The split is made from the
    /// right so that a host path may itself contain ':' (as on Windows).
    pub fn parse(spec: &str) -> Result<MountSpec, SpecError> {
        let usage = "expected HOST_DIR:VIRT_DIR:ro or HOST_DIR:VIRT_DIR:rw";
        let (rest, mode) = spec
            .rsplit_once(':')
            .ok_or_else(|| SpecError(format!("mount '{spec}': {usage}")))?;
        let writable = match mode {
            "ro" => false,
            "rw" => true,
            _ => {
                // `-m /a:/b` has no mode; its last field is the guest path.
                let hint = if mode.starts_with('/') {
                    "the mode is missing"
                } else {
                    "the mode must be ro or rw"
                };
                return Err(SpecError(format!("mount '{spec}': {hint}; {usage}")));
            }
        };
        let (host, guest) = rest
            .rsplit_once(':')
            .ok_or_else(|| SpecError(format!("mount '{spec}': {usage}")))?;
        if host.is_empty() {
            return Err(SpecError(format!(
                "mount '{spec}': the host directory is empty; {usage}"
            )));
        }
        MountSpec::new(host, guest, writable)
    }
}

/// Splits an absolute guest path into its components, refusing `.` and `..`
/// so that a mount point means exactly one place.
pub(crate) fn guest_components(path: &str) -> Result<Vec<String>, &'static str> {
    if !path.starts_with('/') {
        return Err("is not absolute");
    }
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" => {}
            "." | ".." => return Err("contains . or .."),
            c if c.contains('\0') => return Err("contains a NUL byte"),
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

pub(crate) struct Mount {
    pub guest: Vec<String>,
    pub dir: cap_std::fs::Dir,
    pub writable: bool,
    /// (device, inode) of the mount's host directory.
    root_id: (u64, u64),
    /// Directories in this mount's host tree that the guest must not reach
    /// through it: other mounts' host directories, and what lies at mount
    /// points below this mount. Empty in the usual case of separate trees.
    guarded: Vec<(u64, u64)>,
}

/// The longest path a guest may pass, in bytes (Linux's PATH_MAX).
pub(crate) const MAX_PATH: usize = 4096;
/// The longest component (NAME_MAX).
pub(crate) const MAX_NAME: usize = 255;
/// The most components a resolved place may have.
pub(crate) const MAX_DEPTH: usize = 256;

/// A place in the guest namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// `rel` below the root of mount `mount`. `guest` is the lexical guest
    /// path while it is known (it is not once `..` has been handed to cap-std
    /// below a mount root, since symlinks may then stand between).
    Host {
        mount: usize,
        rel: Vec<String>,
        guest: Option<Vec<String>>,
    },
    /// A directory that exists only as the parent of mount points.
    Virtual { guest: Vec<String> },
}

impl Target {
    pub fn guest_path(&self) -> Option<&[String]> {
        match self {
            Target::Host { guest, .. } => guest.as_deref(),
            Target::Virtual { guest } => Some(guest),
        }
    }
}

/// The mounts of one sandbox.
pub(crate) struct Namespace {
    pub mounts: Vec<Mount>,
    /// When the namespace was made, in nanoseconds since the epoch: the
    /// modification time a directory shows at least when mount points
    /// appear in it (see [`Namespace::listing_mtime`]).
    pub made: u64,
}

impl Namespace {
    /// Opens every mount's host directory. Errors name the mount to fix.
    pub fn open(specs: &[MountSpec]) -> Result<Namespace, SpecError> {
        let mut mounts: Vec<Mount> = Vec::new();
        for spec in specs {
            let guest = guest_components(&spec.guest)
                .map_err(|why| SpecError(format!("mount point '{}' {why}", spec.guest)))?;
            if mounts.iter().any(|m| m.guest == guest) {
                return Err(SpecError(format!(
                    "mount point '{}' is given twice: give each guest path one mount",
                    spec.guest
                )));
            }
            let meta = std::fs::metadata(&spec.host).map_err(|e| {
                SpecError(format!(
                    "mount {}:{}: host directory '{}' cannot be used: {}",
                    spec.host.display(),
                    spec.guest,
                    spec.host.display(),
                    io_reason(&e)
                ))
            })?;
            if !meta.is_dir() {
                return Err(SpecError(format!(
                    "mount {}:{}: '{}' is not a directory: mount a directory",
                    spec.host.display(),
                    spec.guest,
                    spec.host.display()
                )));
            }
            let dir = cap_std::fs::Dir::open_ambient_dir(&spec.host, cap_std::ambient_authority())
                .map_err(|e| {
                    SpecError(format!(
                        "mount {}:{}: cannot open '{}': {}",
                        spec.host.display(),
                        spec.guest,
                        spec.host.display(),
                        io_reason(&e)
                    ))
                })?;
            let root_id = dir.dir_metadata().map(|m| identity(&m)).map_err(|e| {
                SpecError(format!(
                    "mount {}:{}: cannot read '{}': {}",
                    spec.host.display(),
                    spec.guest,
                    spec.host.display(),
                    io_reason(&e)
                ))
            })?;
            mounts.push(Mount {
                guest,
                dir,
                writable: spec.writable,
                root_id,
                guarded: Vec::new(),
            });
        }
        guard_nested_trees(&mut mounts, specs);
        let made = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(Namespace { mounts, made })
    }

    /// The guest's `/`, its only preopened directory: one preopen for the
    /// whole tree keeps `ls /` showing every mount point and lets this
    /// module, not wasi-libc, decide which mount a path belongs to.
    pub fn root(&self) -> Target {
        self.locate(&[])
    }

    /// The deepest mount holding guest path `g`, or a virtual directory.
    fn locate(&self, g: &[String]) -> Target {
        let best = self
            .mounts
            .iter()
            .enumerate()
            .filter(|(_, m)| g.starts_with(&m.guest))
            .max_by_key(|(_, m)| m.guest.len());
        match best {
            Some((i, m)) => Target::Host {
                mount: i,
                rel: g[m.guest.len()..].to_vec(),
                guest: Some(g.to_vec()),
            },
            None => Target::Virtual { guest: g.to_vec() },
        }
    }

    fn is_mount_point(&self, g: &[String]) -> Option<usize> {
        self.mounts.iter().position(|m| m.guest == g)
    }

    /// Whether guest path `g` has mount points strictly below it.
    pub fn has_mounts_below(&self, g: &[String]) -> bool {
        self.mounts
            .iter()
            .any(|m| m.guest.len() > g.len() && m.guest.starts_with(g))
    }

    /// Names directly below `g` that lead to mount points.
    pub fn mount_children(&self, g: &[String]) -> Vec<String> {
        let mut names: Vec<String> = self
            .mounts
            .iter()
            .filter(|m| m.guest.len() > g.len() && m.guest.starts_with(g))
            .map(|m| m.guest[g.len()].clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Whether `t` is the root of a mount (which the guest may not remove
    /// or rename).
    pub fn is_mount_root(&self, t: &Target) -> bool {
        match t {
            Target::Host { rel, guest, .. } => {
                rel.is_empty()
                    || guest
                        .as_deref()
                        .is_some_and(|g| self.is_mount_point(g).is_some())
            }
            Target::Virtual { .. } => true,
        }
    }

    /// Resolves `path`, relative to directory `base`, to a target. Only the
    /// mount tree is walked here; what lies below a mount root is left to
    /// cap-std, so no host symlink is followed by this code.
    ///
    /// `..` is taken lexically (the guest path loses its last component,
    /// and a mount point reached that way is the mount, not what it
    /// hides) unless the component it leaves is a symlink: then `..` is
    /// the symlink target's parent, which only the host knows, so it is
    /// handed to cap-std and the guest path becomes unknown. Where the
    /// host tree lets such a path reach another mount's directory,
    /// [`Namespace::confine`] refuses it by the directory's identity.
    pub fn resolve(&self, base: &Target, path: &str) -> Result<Target, Errno> {
        if path.starts_with('/') {
            // WASI paths are relative to a directory descriptor; wasi-libc
            // strips the preopen's prefix before calling us.
            return Err(Errno::PERM);
        }
        if path.len() > MAX_PATH {
            return Err(Errno::NAMETOOLONG);
        }
        if path.contains('\0') {
            return Err(Errno::INVAL);
        }
        let mut cur = base.clone();
        for comp in path.split('/') {
            if comp.len() > MAX_NAME {
                return Err(Errno::NAMETOOLONG);
            }
            cur = match comp {
                "" | "." => continue,
                ".." => self.parent(cur)?,
                name => self.child(cur, name)?,
            };
            let depth = match &cur {
                Target::Host { rel, guest, .. } => {
                    rel.len().max(guest.as_ref().map_or(0, Vec::len))
                }
                Target::Virtual { guest } => guest.len(),
            };
            // Each component is a heap string kept as long as a directory
            // descriptor lives: bound what one descriptor can hold.
            if depth > MAX_DEPTH {
                return Err(Errno::NAMETOOLONG);
            }
        }
        Ok(cur)
    }

    /// `cur/..`.
    fn parent(&self, cur: Target) -> Result<Target, Errno> {
        Ok(match cur {
            Target::Host {
                mount,
                mut rel,
                guest,
            } => {
                if rel.is_empty() {
                    // Above a mount's root lies the mount tree, which we
                    // know exactly.
                    let mut g = guest.unwrap_or_else(|| self.mounts[mount].guest.clone());
                    g.pop();
                    return Ok(self.locate(&g));
                }
                match guest {
                    Some(mut g) if !self.leaves_symlink(mount, &rel, &g)? => {
                        g.pop();
                        rel.pop();
                        Target::Host {
                            mount,
                            rel,
                            guest: Some(g),
                        }
                    }
                    _ => {
                        rel.push("..".into());
                        Target::Host {
                            mount,
                            rel,
                            guest: None,
                        }
                    }
                }
            }
            Target::Virtual { mut guest } => {
                guest.pop();
                self.locate(&guest)
            }
        })
    }

    /// Whether the last component of `rel` (guest path `g`) is a symlink,
    /// so that `..` after it is not lexical. A missing component is an
    /// error, as it is for the kernel, unless mounts below make it a
    /// virtual directory.
    fn leaves_symlink(&self, mount: usize, rel: &[String], g: &[String]) -> Result<bool, Errno> {
        match self.mounts[mount].dir.symlink_metadata(rel_path(rel)) {
            Ok(m) if m.file_type().is_symlink() => Ok(true),
            Ok(m) if m.is_dir() => Ok(false),
            Ok(_) => Err(Errno::NOTDIR),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.has_mounts_below(g) => {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `cur/name`.
    fn child(&self, cur: Target, name: &str) -> Result<Target, Errno> {
        Ok(match cur {
            Target::Host {
                mount,
                mut rel,
                guest,
            } => match guest {
                Some(mut g) => {
                    g.push(name.to_string());
                    if let Some(m) = self.is_mount_point(&g) {
                        Target::Host {
                            mount: m,
                            rel: vec![],
                            guest: Some(g),
                        }
                    } else {
                        rel.push(name.to_string());
                        Target::Host {
                            mount,
                            rel,
                            guest: Some(g),
                        }
                    }
                }
                None => {
                    rel.push(name.to_string());
                    Target::Host {
                        mount,
                        rel,
                        guest: None,
                    }
                }
            },
            Target::Virtual { mut guest } => {
                guest.push(name.to_string());
                if let Some(m) = self.is_mount_point(&guest) {
                    Target::Host {
                        mount: m,
                        rel: vec![],
                        guest: Some(guest),
                    }
                } else if self.has_mounts_below(&guest) {
                    Target::Virtual { guest }
                } else {
                    return Err(Errno::NOENT);
                }
            }
        })
    }

    /// Refuses a place below mount `mount` that the host tree, through a
    /// symlink, makes another mount's directory or a directory hidden
    /// under a mount point: a mount hides what lies under it on every
    /// path, and a read-only mount nested in a read-write one's host tree
    /// is not written through the outer one. `rel`'s directory and its
    /// ancestors up to the mount root are compared by (device, inode);
    /// with `last`, the named entry itself too (not followed). Only mounts
    /// whose host tree holds such a directory pay for the walk.
    pub fn confine(&self, mount: usize, rel: &[String], last: bool) -> Result<(), Errno> {
        let m = &self.mounts[mount];
        if m.guarded.is_empty() {
            return Ok(());
        }
        let hit = |id: (u64, u64)| m.guarded.contains(&id);
        let parent = &rel[..rel.len().saturating_sub(1)];
        if last && !rel.is_empty() {
            match m.dir.symlink_metadata(rel_path(rel)) {
                Ok(meta) if hit(identity(&meta)) => return Err(Errno::PERM),
                _ => {}
            }
        }
        let dir = match m.dir.open_dir(rel_path(parent)) {
            Ok(d) => d,
            // Nothing there: the operation itself will fail the same way.
            Err(_) => return Ok(()),
        };
        ancestors_avoid(&dir, m.root_id, &m.guarded)
    }
    /// Opens a file named by an absolute guest path, through the mounts and
    /// with the same confinement as the guest's own reads.
    pub fn open_guest_file(&self, path: &str) -> std::io::Result<std::fs::File> {
        let rel = path.strip_prefix('/').ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an absolute path")
        })?;
        let not_found =
            || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file in the mounts");
        match self.resolve(&self.root(), rel).map_err(|_| not_found())? {
            Target::Host { mount, rel, .. } => {
                Ok(self.mounts[mount].dir.open(rel_path(&rel))?.into_std())
            }
            Target::Virtual { .. } => Err(not_found()),
        }
    }

    /// The virtual directory standing in for `t` when the host has no such
    /// directory but mounts lie below it.
    pub fn virtual_fallback(&self, t: &Target) -> Option<Target> {
        match t {
            Target::Host { guest: Some(g), .. } if self.has_mounts_below(g) => {
                Some(Target::Virtual { guest: g.clone() })
            }
            _ => None,
        }
    }
}

impl Namespace {
    /// The modification time directory `t` shows: its host's, but no older
    /// than this namespace where mount points appear in its listing. A
    /// mount adds names to a directory without touching the host's, and a
    /// reader that caches listings by modification time (CPython's import
    /// system, whose caches a pre-initialised interpreter brings from
    /// install time) must see that the listing changed.
    pub fn listing_mtime(&self, t: &Target, host_mtime: u64) -> u64 {
        match t.guest_path() {
            Some(g) if self.has_mounts_below(g) => host_mtime.max(self.made),
            _ => host_mtime,
        }
    }

    /// Whether another mount's directory, or one a mount point hides, lies
    /// in mount `mount`'s host tree, so that a symlink there could lead to
    /// it.
    pub fn is_guarded(&self, mount: usize) -> bool {
        !self.mounts[mount].guarded.is_empty()
    }

    /// [`Namespace::confine`] for a directory already opened below mount
    /// `mount`: its own identity and its ancestors', with no race.
    pub fn confine_dir(&self, mount: usize, dir: &impl std::os::fd::AsFd) -> Result<(), Errno> {
        let m = &self.mounts[mount];
        if m.guarded.is_empty() {
            return Ok(());
        }
        ancestors_avoid(dir, m.root_id, &m.guarded)
    }
}

/// (device, inode): what names a directory whatever path reaches it.
fn identity(m: &cap_std::fs::Metadata) -> (u64, u64) {
    use cap_fs_ext::MetadataExt;
    (m.dev(), m.ino())
}

/// Fills each mount's `guarded` list: the host directories of other mounts
/// that lie inside its host tree, and the directories of its own tree that
/// mount points below it hide.
fn guard_nested_trees(mounts: &mut [Mount], specs: &[MountSpec]) {
    for i in 0..mounts.len() {
        let mut guarded = Vec::new();
        for (j, spec) in specs.iter().enumerate() {
            if i == j {
                continue;
            }
            if host_dir_is_below(&spec.host, mounts[i].root_id) {
                guarded.push(mounts[j].root_id);
            }
            let (outer, inner) = (&mounts[i].guest, &mounts[j].guest);
            if inner.len() > outer.len() && inner.starts_with(outer) {
                if let Ok(m) = mounts[i]
                    .dir
                    .symlink_metadata(rel_path(&inner[outer.len()..]))
                {
                    guarded.push(identity(&m));
                }
            }
        }
        guarded.retain(|id| *id != mounts[i].root_id);
        mounts[i].guarded = guarded;
    }
}

/// Whether host directory `dir` lies strictly inside the directory whose
/// identity is `root`.
fn host_dir_is_below(dir: &std::path::Path, root: (u64, u64)) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(real) = std::fs::canonicalize(dir) else {
        return false;
    };
    real.ancestors().skip(1).any(|a| {
        std::fs::metadata(a)
            .map(|m| (m.dev(), m.ino()) == root)
            .unwrap_or(false)
    })
}

/// Walks from `dir` up to the directory `stop`, failing with EPERM if any
/// directory on the way is in `guarded`.
#[cfg(unix)]
fn ancestors_avoid(
    dir: &impl std::os::fd::AsFd,
    stop: (u64, u64),
    guarded: &[(u64, u64)],
) -> Result<(), Errno> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let stat = |fd: i32| -> Result<(u64, u64), Errno> {
        // SAFETY: fstat on a descriptor we own; st is plain data.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok((st.st_dev as u64, st.st_ino as u64))
    };
    let mut cur: Option<OwnedFd> = None;
    // A bound on the walk: a tree deeper than any path a guest may pass.
    for _ in 0..=MAX_DEPTH * 2 {
        let fd = cur
            .as_ref()
            .map_or(dir.as_fd().as_raw_fd(), |f| f.as_raw_fd());
        let id = stat(fd)?;
        if guarded.contains(&id) {
            return Err(Errno::PERM);
        }
        if id == stop {
            return Ok(());
        }
        // SAFETY: openat on a valid directory descriptor; the result is a
        // new descriptor we own.
        let up = unsafe {
            libc::openat(
                fd,
                c"..".as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if up < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let up = unsafe { OwnedFd::from_raw_fd(up) };
        if stat(up.as_raw_fd())? == id {
            // The file system's root, and the mount root never met: the
            // directory was moved out from under the mount meanwhile.
            return Err(Errno::PERM);
        }
        cur = Some(up);
    }
    Err(Errno::NAMETOOLONG)
}

#[cfg(not(unix))]
fn ancestors_avoid(
    _dir: &impl std::os::fd::AsFd,
    _stop: (u64, u64),
    _guarded: &[(u64, u64)],
) -> Result<(), Errno> {
    Ok(())
}

/// Opens the file at absolute guest path `path` as a guest with `mounts`
/// would see it (used to find a program inside an installed root).
/// The outer error is a mount that cannot be used; the inner one, a file
/// that cannot be opened.
pub fn open_guest_file(
    mounts: &[MountSpec],
    path: &str,
) -> Result<Result<std::fs::File, SpecError>, SpecError> {
    let ns = Namespace::open(mounts)?;
    Ok(ns
        .open_guest_file(path)
        .map_err(|e| SpecError(format!("cannot read {path} from the mounts: {e}"))))
}

/// The path cap-std resolves beneath a mount's root.
pub(crate) fn rel_path(rel: &[String]) -> PathBuf {
    if rel.is_empty() {
        PathBuf::from(".")
    } else {
        rel.iter().collect::<PathBuf>()
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "it does not exist".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mount_specs() {
        let m = MountSpec::parse("/tmp:/data/:rw").unwrap();
        assert_eq!(m.host, PathBuf::from("/tmp"));
        assert_eq!(m.guest, "/data");
        assert!(m.writable);
        assert_eq!(MountSpec::parse("/tmp://:ro").unwrap().guest, "/");
        assert!(!MountSpec::parse("C:\\x:/w:ro").unwrap().writable);
        assert_eq!(
            MountSpec::parse("C:\\x:/w:ro").unwrap().host,
            PathBuf::from("C:\\x")
        );
    }

    #[test]
    fn rejects_bad_mount_specs() {
        for bad in [
            "/tmp:/data",
            "/tmp:/data:rx",
            "/tmp:data:ro",
            "/tmp:/a/../b:ro",
            ":/a:ro",
            "ro",
            "",
        ] {
            let e = MountSpec::parse(bad).unwrap_err();
            assert!(e.0.contains("mount"), "{bad}: {e}");
        }
        assert!(MountSpec::parse("/tmp:/data")
            .unwrap_err()
            .0
            .contains("mode is missing"));
        assert!(MountSpec::parse("/tmp:data:ro")
            .unwrap_err()
            .0
            .contains("not absolute"));
    }
}
