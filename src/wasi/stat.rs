//! What the guest learns of a file: WASI filestats from host metadata, and
//! the timestamps it may set.

use std::hash::BuildHasher;
use std::io;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cap_fs_ext::MetadataExt;

use super::abi::*;

pub(super) fn nanos(t: io::Result<SystemTime>) -> u64 {
    t.ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The key of the numbers below, drawn once per process.
fn id_key() -> &'static std::collections::hash_map::RandomState {
    static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    KEY.get_or_init(Default::default)
}

/// The inode number the guest sees for host file (`dev`, `ino`): a keyed
/// hash, the same for the same file throughout the process (so that
/// `os.path.samefile` and `st_ino` from `scandir` agree with `stat`), but
/// telling nothing of the host's own numbers.
pub(super) fn guest_ino(dev: u64, ino: u64) -> u64 {
    id_key().hash_one((dev, ino))
}

/// The device number the guest sees: keyed like [`guest_ino`], one per
/// host file system.
pub(super) fn guest_dev(dev: u64) -> u64 {
    // Small enough to print as a device number, large enough not to clash.
    id_key().hash_one(("dev", dev)) >> 32
}

pub(super) fn filestat_of_cap(m: &cap_std::fs::Metadata) -> Filestat {
    let ft = m.file_type();
    Filestat {
        dev: guest_dev(m.dev()),
        ino: guest_ino(m.dev(), m.ino()),
        filetype: filetype_of_cap(&ft),
        nlink: m.nlink(),
        size: m.len(),
        atim: nanos(m.accessed().map(|t| t.into_std())),
        mtim: nanos(m.modified().map(|t| t.into_std())),
        ctim: ctime_cap(m),
    }
}

#[cfg(unix)]
pub(super) fn ctime_cap(m: &cap_std::fs::Metadata) -> u64 {
    use cap_fs_ext::OsMetadataExt as _;
    (m.ctime() as u64) * 1_000_000_000 + m.ctime_nsec() as u64
}

#[cfg(not(unix))]
pub(super) fn ctime_cap(m: &cap_std::fs::Metadata) -> u64 {
    nanos(m.created().map(|t| t.into_std()))
}

pub(super) fn filetype_of_cap(ft: &cap_std::fs::FileType) -> u8 {
    use cap_fs_ext::FileTypeExt;
    if ft.is_dir() {
        FILETYPE_DIRECTORY
    } else if ft.is_file() {
        FILETYPE_REGULAR_FILE
    } else if ft.is_symlink() {
        FILETYPE_SYMBOLIC_LINK
    } else if ft.is_char_device() {
        FILETYPE_CHARACTER_DEVICE
    } else if ft.is_socket() {
        FILETYPE_SOCKET_STREAM
    } else {
        FILETYPE_UNKNOWN
    }
}

pub(super) fn filestat_of_std(m: &std::fs::Metadata) -> Filestat {
    let ft = m.file_type();
    #[cfg(unix)]
    let (dev, ino, nlink, ctim, filetype) = {
        use std::os::unix::fs::{FileTypeExt, MetadataExt as M};
        let filetype = if ft.is_char_device() {
            FILETYPE_CHARACTER_DEVICE
        } else if ft.is_socket() {
            FILETYPE_SOCKET_STREAM
        } else if ft.is_dir() {
            FILETYPE_DIRECTORY
        } else if ft.is_file() {
            FILETYPE_REGULAR_FILE
        } else {
            FILETYPE_UNKNOWN
        };
        (
            M::dev(m),
            M::ino(m),
            M::nlink(m),
            (M::ctime(m) as u64) * 1_000_000_000 + M::ctime_nsec(m) as u64,
            filetype,
        )
    };
    #[cfg(not(unix))]
    let (dev, ino, nlink, ctim, filetype) = (
        0,
        0,
        1,
        nanos(m.created()),
        if ft.is_file() {
            FILETYPE_REGULAR_FILE
        } else if ft.is_dir() {
            FILETYPE_DIRECTORY
        } else {
            FILETYPE_UNKNOWN
        },
    );
    Filestat {
        dev: guest_dev(dev),
        ino: guest_ino(dev, ino),
        filetype,
        nlink,
        size: m.len(),
        atim: nanos(m.accessed()),
        mtim: nanos(m.modified()),
        ctim,
    }
}

pub(super) fn virtual_dir_stat() -> Filestat {
    Filestat {
        filetype: FILETYPE_DIRECTORY,
        nlink: 1,
        ..Filestat::default()
    }
}

pub(super) fn time_spec(
    ts: u64,
    flags: u16,
    set: u16,
    now: u16,
) -> WasiResult<Option<cap_fs_ext::SystemTimeSpec>> {
    if flags & set != 0 && flags & now != 0 {
        return Err(Errno::INVAL);
    }
    Ok(if flags & now != 0 {
        Some(cap_fs_ext::SystemTimeSpec::SymbolicNow)
    } else if flags & set != 0 {
        Some(cap_fs_ext::SystemTimeSpec::Absolute(
            cap_std::time::SystemTime::from_std(UNIX_EPOCH + Duration::from_nanos(ts)),
        ))
    } else {
        None
    })
}

pub(super) fn std_time_spec(
    ts: u64,
    flags: u16,
    set: u16,
    now: u16,
) -> WasiResult<Option<fs_set_times::SystemTimeSpec>> {
    Ok(time_spec(ts, flags, set, now)?.map(|s| match s {
        cap_fs_ext::SystemTimeSpec::SymbolicNow => fs_set_times::SystemTimeSpec::SymbolicNow,
        cap_fs_ext::SystemTimeSpec::Absolute(t) => {
            fs_set_times::SystemTimeSpec::Absolute(t.into_std())
        }
    }))
}
