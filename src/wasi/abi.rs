//! Numbers and layouts of the `wasi_snapshot_preview1` ABI (from its witx
//! definition), and the mapping from host errors to WASI errnos.

use std::io;

/// A WASI errno. Host functions return it as the call's `i32` result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub u16);

#[allow(dead_code)]
impl Errno {
    pub const SUCCESS: Errno = Errno(0);
    pub const TOOBIG: Errno = Errno(1);
    pub const ACCES: Errno = Errno(2);
    pub const AGAIN: Errno = Errno(6);
    pub const BADF: Errno = Errno(8);
    pub const BUSY: Errno = Errno(10);
    pub const EXIST: Errno = Errno(20);
    pub const FAULT: Errno = Errno(21);
    pub const FBIG: Errno = Errno(22);
    pub const ILSEQ: Errno = Errno(25);
    pub const INTR: Errno = Errno(27);
    pub const INVAL: Errno = Errno(28);
    pub const IO: Errno = Errno(29);
    pub const ISDIR: Errno = Errno(31);
    pub const LOOP: Errno = Errno(32);
    pub const MFILE: Errno = Errno(33);
    pub const MLINK: Errno = Errno(34);
    pub const NAMETOOLONG: Errno = Errno(37);
    pub const NFILE: Errno = Errno(41);
    pub const NODEV: Errno = Errno(43);
    pub const NOENT: Errno = Errno(44);
    pub const NOMEM: Errno = Errno(48);
    pub const NOSPC: Errno = Errno(51);
    pub const NOSYS: Errno = Errno(52);
    pub const NOTDIR: Errno = Errno(54);
    pub const NOTEMPTY: Errno = Errno(55);
    pub const NOTSOCK: Errno = Errno(57);
    pub const NXIO: Errno = Errno(60);
    pub const NOTSUP: Errno = Errno(58);
    pub const NOTTY: Errno = Errno(59);
    pub const OVERFLOW: Errno = Errno(61);
    pub const PERM: Errno = Errno(63);
    pub const PIPE: Errno = Errno(64);
    pub const RANGE: Errno = Errno(68);
    pub const ROFS: Errno = Errno(69);
    pub const SPIPE: Errno = Errno(70);
    pub const TXTBSY: Errno = Errno(74);
    pub const XDEV: Errno = Errno(75);
    pub const NOTCAPABLE: Errno = Errno(76);
}

impl From<io::Error> for Errno {
    fn from(e: io::Error) -> Errno {
        #[cfg(unix)]
        if let Some(code) = e.raw_os_error() {
            return match code {
                libc::EPERM => Errno::PERM,
                libc::ENOENT => Errno::NOENT,
                libc::EIO => Errno::IO,
                libc::EBADF => Errno::BADF,
                libc::EAGAIN => Errno::AGAIN,
                libc::ENOMEM => Errno::NOMEM,
                libc::EACCES => Errno::ACCES,
                libc::EBUSY => Errno::BUSY,
                libc::EEXIST => Errno::EXIST,
                libc::EXDEV => Errno::XDEV,
                libc::ENODEV => Errno::NODEV,
                libc::ENOTDIR => Errno::NOTDIR,
                libc::EISDIR => Errno::ISDIR,
                libc::EINVAL => Errno::INVAL,
                libc::ENFILE => Errno::NFILE,
                libc::EMFILE => Errno::MFILE,
                libc::ENOTTY => Errno::NOTTY,
                libc::ETXTBSY => Errno::TXTBSY,
                libc::EFBIG => Errno::FBIG,
                libc::ENOSPC => Errno::NOSPC,
                libc::ESPIPE => Errno::SPIPE,
                libc::EROFS => Errno::ROFS,
                libc::EMLINK => Errno::MLINK,
                libc::EPIPE => Errno::PIPE,
                libc::ERANGE => Errno::RANGE,
                libc::ENAMETOOLONG => Errno::NAMETOOLONG,
                libc::ENOSYS => Errno::NOSYS,
                libc::ENOTEMPTY => Errno::NOTEMPTY,
                libc::ELOOP => Errno::LOOP,
                libc::ENXIO => Errno::NXIO,
                libc::EOVERFLOW => Errno::OVERFLOW,
                libc::EILSEQ => Errno::ILSEQ,
                libc::ENOTSUP => Errno::NOTSUP,
                libc::EINTR => Errno::INTR,
                _ => Errno::IO,
            };
        }
        match e.kind() {
            io::ErrorKind::NotFound => Errno::NOENT,
            // cap-std reports an attempt to leave a mount this way.
            io::ErrorKind::PermissionDenied => Errno::PERM,
            io::ErrorKind::AlreadyExists => Errno::EXIST,
            io::ErrorKind::InvalidInput => Errno::INVAL,
            io::ErrorKind::NotADirectory => Errno::NOTDIR,
            io::ErrorKind::IsADirectory => Errno::ISDIR,
            io::ErrorKind::DirectoryNotEmpty => Errno::NOTEMPTY,
            io::ErrorKind::ReadOnlyFilesystem => Errno::ROFS,
            io::ErrorKind::BrokenPipe => Errno::PIPE,
            io::ErrorKind::WouldBlock => Errno::AGAIN,
            io::ErrorKind::Unsupported => Errno::NOTSUP,
            _ => Errno::IO,
        }
    }
}

pub type WasiResult<T> = Result<T, Errno>;

// Rights bits: wasi-libc asks for these when it opens a file.
pub const RIGHT_FD_READ: u64 = 1 << 1;
pub const RIGHT_FD_SEEK: u64 = 1 << 2;
pub const RIGHT_FD_TELL: u64 = 1 << 5;
pub const RIGHT_FD_WRITE: u64 = 1 << 6;
pub const RIGHT_FD_ALLOCATE: u64 = 1 << 8;
pub const RIGHT_FD_FILESTAT_SET_SIZE: u64 = 1 << 22;
/// Every right defined by preview 1 (bits 0..=29).
pub const ALL_RIGHTS: u64 = (1 << 30) - 1;
pub const WRITE_RIGHTS: u64 = RIGHT_FD_WRITE | RIGHT_FD_ALLOCATE | RIGHT_FD_FILESTAT_SET_SIZE;

pub const OFLAG_CREAT: u16 = 1;
pub const OFLAG_DIRECTORY: u16 = 2;
pub const OFLAG_EXCL: u16 = 4;
pub const OFLAG_TRUNC: u16 = 8;

pub const FDFLAG_APPEND: u16 = 1;
pub const FDFLAG_NONBLOCK: u16 = 1 << 2;

pub const LOOKUP_SYMLINK_FOLLOW: u32 = 1;

pub const FST_ATIM: u16 = 1;
pub const FST_ATIM_NOW: u16 = 2;
pub const FST_MTIM: u16 = 4;
pub const FST_MTIM_NOW: u16 = 8;

pub const FILETYPE_UNKNOWN: u8 = 0;
pub const FILETYPE_CHARACTER_DEVICE: u8 = 2;
pub const FILETYPE_DIRECTORY: u8 = 3;
pub const FILETYPE_REGULAR_FILE: u8 = 4;
pub const FILETYPE_SOCKET_STREAM: u8 = 6;
pub const FILETYPE_SYMBOLIC_LINK: u8 = 7;

pub const CLOCK_REALTIME: u32 = 0;
pub const CLOCK_MONOTONIC: u32 = 1;
pub const CLOCK_PROCESS_CPUTIME: u32 = 2;
pub const CLOCK_THREAD_CPUTIME: u32 = 3;

pub const EVENTTYPE_CLOCK: u8 = 0;
pub const EVENTTYPE_FD_READ: u8 = 1;
pub const EVENTTYPE_FD_WRITE: u8 = 2;
pub const SUBCLOCK_ABSTIME: u16 = 1;

pub const WHENCE_SET: u8 = 0;
pub const WHENCE_CUR: u8 = 1;
pub const WHENCE_END: u8 = 2;

/// A file's attributes as `filestat` lays them out (64 bytes).
#[derive(Clone, Copy, Debug, Default)]
pub struct Filestat {
    pub dev: u64,
    pub ino: u64,
    pub filetype: u8,
    pub nlink: u64,
    pub size: u64,
    pub atim: u64,
    pub mtim: u64,
    pub ctim: u64,
}

impl Filestat {
    pub fn to_bytes(self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..8].copy_from_slice(&self.dev.to_le_bytes());
        b[8..16].copy_from_slice(&self.ino.to_le_bytes());
        b[16] = self.filetype;
        b[24..32].copy_from_slice(&self.nlink.to_le_bytes());
        b[32..40].copy_from_slice(&self.size.to_le_bytes());
        b[40..48].copy_from_slice(&self.atim.to_le_bytes());
        b[48..56].copy_from_slice(&self.mtim.to_le_bytes());
        b[56..64].copy_from_slice(&self.ctim.to_le_bytes());
        b
    }
}
