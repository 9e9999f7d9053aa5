//! Guest memory access. Every pointer and length from the guest is checked
//! here, with checked arithmetic: an out-of-bounds one is EFAULT, never a
//! host fault or a panic (in a debug build too).

use super::abi::{Errno, WasiResult};
use crate::mounts::MAX_PATH;

/// Guest address `ptr + off`, or EFAULT if it wraps.
pub(super) fn offset(ptr: u32, off: u64) -> WasiResult<u32> {
    u32::try_from(off)
        .ok()
        .and_then(|o| ptr.checked_add(o))
        .ok_or(Errno::FAULT)
}

pub(super) fn slice(mem: &[u8], ptr: u32, len: u32) -> WasiResult<&[u8]> {
    let start = ptr as usize;
    let end = start.checked_add(len as usize).ok_or(Errno::FAULT)?;
    mem.get(start..end).ok_or(Errno::FAULT)
}

pub(super) fn slice_mut(mem: &mut [u8], ptr: u32, len: u32) -> WasiResult<&mut [u8]> {
    let start = ptr as usize;
    let end = start.checked_add(len as usize).ok_or(Errno::FAULT)?;
    mem.get_mut(start..end).ok_or(Errno::FAULT)
}

pub(super) fn put(mem: &mut [u8], ptr: u32, bytes: &[u8]) -> WasiResult<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| Errno::FAULT)?;
    slice_mut(mem, ptr, len)?.copy_from_slice(bytes);
    Ok(())
}

pub(super) fn put_u32(mem: &mut [u8], ptr: u32, v: u32) -> WasiResult<()> {
    put(mem, ptr, &v.to_le_bytes())
}

pub(super) fn put_u64(mem: &mut [u8], ptr: u32, v: u64) -> WasiResult<()> {
    put(mem, ptr, &v.to_le_bytes())
}

pub(super) fn get_u32(mem: &[u8], ptr: u32) -> WasiResult<u32> {
    let b = slice(mem, ptr, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub(super) fn get_u64(mem: &[u8], ptr: u32) -> WasiResult<u64> {
    let b = slice(mem, ptr, 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
}

/// A path argument. Longer than PATH_MAX is ENAMETOOLONG before anything
/// is copied, so a guest cannot make the host hold a huge path.
pub(super) fn get_path(mem: &[u8], ptr: u32, len: u32) -> WasiResult<String> {
    if len as usize > MAX_PATH {
        return Err(Errno::NAMETOOLONG);
    }
    let bytes = slice(mem, ptr, len)?;
    std::str::from_utf8(bytes)
        .map(str::to_string)
        .map_err(|_| Errno::ILSEQ)
}

/// The most iovecs one call may pass (Linux's IOV_MAX).
pub(super) const IOV_MAX: u32 = 1024;

/// The (ptr, len) pairs of an iovec array, each checked to lie in memory.
/// At most [`IOV_MAX`] pairs: 8 KiB of host memory whatever the guest asks.
pub(super) fn iovecs(mem: &[u8], ptr: u32, count: u32) -> WasiResult<Vec<(u32, u32)>> {
    if count > IOV_MAX {
        return Err(Errno::INVAL);
    }
    let v = (0..count)
        .map(|i| {
            let at = offset(ptr, u64::from(i) * 8)?;
            let (p, l) = (get_u32(mem, at)?, get_u32(mem, offset(at, 4)?)?);
            if l > 0 {
                slice(mem, p, l)?;
            }
            Ok((p, l))
        })
        .collect::<WasiResult<Vec<(u32, u32)>>>()?;
    // The count of bytes moved is returned as a u32 (Linux refuses a total
    // past SSIZE_MAX the same way).
    if v.iter().map(|&(_, l)| u64::from(l)).sum::<u64>() > u64::from(u32::MAX) {
        return Err(Errno::INVAL);
    }
    Ok(v)
}

/// Writes `items` as NUL-terminated strings at `buf` and their addresses
/// at `ptrs` (`args_get`, `environ_get`).
pub(super) fn write_strings(
    mem: &mut [u8],
    items: &[String],
    ptrs: u32,
    buf: u32,
) -> WasiResult<()> {
    let mut at = buf;
    for (i, s) in items.iter().enumerate() {
        put_u32(mem, offset(ptrs, 4 * i as u64)?, at)?;
        put(mem, at, s.as_bytes())?;
        let end = offset(at, s.len() as u64)?;
        put(mem, end, &[0])?;
        at = offset(end, 1)?;
    }
    Ok(())
}
