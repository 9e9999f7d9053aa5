//! A session as bytes, and back.
//!
//! ```text
//! magic "pynbox session\n\0" | version u32 | id length u32 | id (the
//! interpreter's Program::id) | memory size u64 | body size u64 |
//! zstd(body) | blake3 of everything before it (32 bytes)
//!
//! body: page count u32 | page numbers u32, ascending | the pages
//! ```
//!
//! Pages are 4 KiB, and only those that differ from the interpreter's
//! initial memory are kept. Restoring instantiates the interpreter and
//! writes them back. The guest's memory is the guest's: a forged one is a
//! hostile guest, confined like any other. What the host must not trust
//! is the framing, and every size in it is checked before it sizes
//! anything (the memory against the session's limit).

use super::{Python, Session, SessionOptions};
use crate::runtime::{Error, MAX_MEMORY};

const MAGIC: &[u8; 16] = b"pynbox session\n\0";
const VERSION: u32 = 1;
const PAGE: usize = 4096;
const WASM_PAGE: u64 = 65536;
/// zstd's level: the fast end, since pages of a heap compress well anyway.
const LEVEL: i32 = 1;

pub(super) fn save(s: &mut Session) -> Result<Vec<u8>, Error> {
    let changed = s.store.data().wasi.fds.changed_since_start(1);
    if !changed.is_empty() {
        return Err(Error::input(format!(
            "the session holds descriptors {changed:?} open (files or directories it opened, or closed standard ones): \
             close them before saving; open files are the host's and are not saved"
        )));
    }
    // The interpreter's own initial memory, from a fresh instance (its
    // pages are mapped from the compiled image, not copied).
    let (mut fresh, instance) =
        Session::instantiate(&s.python, &s.python.interpreter, &SessionOptions::default())?;
    let base = instance
        .get_memory(&mut fresh.store, "memory")
        .ok_or_else(|| Error::internal("the interpreter exports no memory"))?;
    let base = base.data(&fresh.store);
    let memory = s.memory.data(&s.store);

    let mut numbers = Vec::new();
    let mut pages = Vec::new();
    for (n, page) in memory.chunks(PAGE).enumerate() {
        let start = n * PAGE;
        let same = match base.get(start..start + page.len()) {
            Some(b) => b == page,
            None => page.iter().all(|&x| x == 0),
        };
        if !same {
            numbers.push(n as u32);
            pages.extend_from_slice(page);
        }
    }
    let mut body = Vec::with_capacity(4 + numbers.len() * 4 + pages.len());
    body.extend_from_slice(&(numbers.len() as u32).to_le_bytes());
    for n in &numbers {
        body.extend_from_slice(&n.to_le_bytes());
    }
    body.extend_from_slice(&pages);
    drop(pages);
    let packed = zstd::bulk::compress(&body, LEVEL)
        .map_err(|e| Error::internal(format!("cannot compress the session: {e}")))?;

    let id = s.python.interpreter.id().as_bytes();
    let mut out = Vec::with_capacity(packed.len() + 128);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(id.len() as u32).to_le_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(&(memory.len() as u64).to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&packed);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    Ok(out)
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.0.len() {
            return Err(corrupt("it ends early"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
}

fn corrupt(why: &str) -> Error {
    Error::input(format!("the saved session is corrupt: {why}"))
}

pub(super) fn restore(
    python: &Python,
    data: &[u8],
    options: SessionOptions,
) -> Result<Session, Error> {
    if !data.starts_with(MAGIC) {
        return Err(Error::input(
            "these bytes are not a saved pynbox session (give what Session::save returned)",
        ));
    }
    let Some(framed) = data.len().checked_sub(32).map(|n| &data[..n]) else {
        return Err(corrupt("it ends early"));
    };
    if blake3::hash(framed).as_bytes() != &data[framed.len()..] {
        return Err(corrupt(
            "its checksum does not match (truncated or altered)",
        ));
    }
    let mut c = Cursor(&framed[MAGIC.len()..]);
    let version = c.u32()?;
    if version != VERSION {
        return Err(Error::input(format!(
            "the session was saved in format {version}; this pynbox reads format {VERSION}"
        )));
    }
    let id_len = c.u32()? as usize;
    let id = c.take(id_len)?;
    if id != python.interpreter.id().as_bytes() {
        return Err(Error::input(format!(
            "the session was saved from another interpreter build ({}), not this one ({}): restore it with the python it was saved from",
            String::from_utf8_lossy(&id[..id.len().min(64)]),
            python.interpreter.id()
        )));
    }
    let size = c.u64()?;
    let limit = options.limits.memory.unwrap_or(MAX_MEMORY).min(MAX_MEMORY);
    if size % WASM_PAGE != 0 || size > MAX_MEMORY {
        return Err(corrupt("its memory size is impossible"));
    }
    if size > limit {
        return Err(Error::input(format!(
            "the saved session has {size} bytes of memory, more than the memory limit of {limit}: raise the limit"
        )));
    }
    let max_pages = (size as usize) / PAGE;
    let body_len = c.u64()?;
    if body_len > (4 + max_pages * (4 + PAGE)) as u64 {
        return Err(corrupt("its contents are larger than its memory"));
    }
    // At most body_len bytes come out, whatever the compressed stream says.
    let body = zstd::bulk::decompress(c.0, body_len as usize)
        .map_err(|e| corrupt(&format!("its pages do not decompress: {e}")))?;
    if body.len() as u64 != body_len {
        return Err(corrupt("its pages have the wrong size"));
    }
    let mut b = Cursor(&body);
    let count = b.u32()? as usize;
    if count > max_pages || body.len() != 4 + count * (4 + PAGE) {
        return Err(corrupt("its page count does not match"));
    }
    let mut numbers = Vec::with_capacity(count);
    for _ in 0..count {
        let n = b.u32()? as usize;
        if n >= max_pages || numbers.last().is_some_and(|&last| n <= last) {
            return Err(corrupt("its page numbers are out of order or range"));
        }
        numbers.push(n);
    }
    let pages = b.0;

    let (mut session, _) = Session::instantiate(python, &python.interpreter, &options)?;
    let memory = session.memory;
    let current = memory.data_size(&session.store) as u64;
    if size < current {
        return Err(corrupt("its memory is smaller than the interpreter's own"));
    }
    memory
        .grow(&mut session.store, (size - current) / WASM_PAGE)
        .map_err(|_| {
            Error::input(format!(
                "the saved session needs {size} bytes of memory, more than the memory limit allows"
            ))
        })?;
    let mem = memory.data_mut(&mut session.store);
    for (i, n) in numbers.iter().enumerate() {
        mem[n * PAGE..(n + 1) * PAGE].copy_from_slice(&pages[i * PAGE..(i + 1) * PAGE]);
    }
    Ok(session)
}

#[cfg(test)]
mod tests {
    //! Forged saved sessions, with a valid checksum (anyone can compute
    //! one): every size in the framing is checked before it sizes
    //! anything.
    use super::*;
    use crate::runtime::{Limits, Runtime};

    const GUEST: &str = r#"(module
      (import "pynbox" "take" (func $take (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start"))
      (func (export "pynbox.session_start") (result i32) (i32.const 0))
      (func (export "pynbox.session_call") (result i32) (i32.const 0)))"#;

    fn python() -> Python {
        let runtime = Runtime::new(None).unwrap();
        let wasm = wat::parse_str(GUEST).unwrap();
        Python::new(
            runtime.load_bytes("g.wasm", &wasm).unwrap(),
            None,
            "/g.wasm",
        )
    }

    /// A frame with `size` bytes of memory, declared body length
    /// `body_len` and `body` compressed.
    fn frame(py: &Python, version: u32, size: u64, body_len: u64, body: &[u8]) -> Vec<u8> {
        let id = py.interpreter.id().as_bytes();
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&(id.len() as u32).to_le_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&body_len.to_le_bytes());
        out.extend_from_slice(&zstd::bulk::compress(body, 1).unwrap());
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    fn pages(numbers: &[u32]) -> Vec<u8> {
        let mut b = (numbers.len() as u32).to_le_bytes().to_vec();
        for n in numbers {
            b.extend_from_slice(&n.to_le_bytes());
        }
        b.extend(std::iter::repeat_n(7u8, numbers.len() * PAGE));
        b
    }

    fn refused(py: &Python, data: &[u8], limits: Limits, want: &str) {
        let options = SessionOptions {
            limits,
            ..SessionOptions::default()
        };
        let e = restore(py, data, options).err().expect("must be refused");
        assert!(e.to_string().contains(want), "{e}");
    }

    #[test]
    fn forged_frames_are_refused() {
        let py = python();
        let l = Limits::default();
        let ok = pages(&[0, 3]);
        // The honest one restores, and its pages are there.
        let good = frame(&py, VERSION, 65536, ok.len() as u64, &ok);
        let session = restore(&py, &good, SessionOptions::default()).unwrap();
        assert_eq!(session.memory.data(&session.store)[3 * PAGE], 7);

        refused(
            &py,
            &frame(&py, 2, 65536, ok.len() as u64, &ok),
            l,
            "format 2",
        );
        refused(
            &py,
            &frame(&py, VERSION, 65535, ok.len() as u64, &ok),
            l,
            "impossible",
        );
        refused(
            &py,
            &frame(&py, VERSION, 8 << 30, ok.len() as u64, &ok),
            l,
            "impossible",
        );
        let small = Limits {
            memory: Some(1 << 20),
            ..l
        };
        refused(
            &py,
            &frame(&py, VERSION, 4 << 20, ok.len() as u64, &ok),
            small,
            "memory limit",
        );
        // A declared body larger than its memory could need.
        refused(
            &py,
            &frame(&py, VERSION, 65536, 1 << 40, &ok),
            l,
            "larger than its memory",
        );
        // A stream that decompresses to more than it declares.
        refused(&py, &frame(&py, VERSION, 65536, 10, &ok), l, "decompress");
        refused(
            &py,
            &frame(&py, VERSION, 65536, ok.len() as u64 + 1, &ok),
            l,
            "wrong size",
        );
        // Page numbers out of range, repeated, out of order; a count that lies.
        for bad in [&[0u32, 16][..], &[3, 3], &[3, 0]] {
            let b = pages(bad);
            refused(
                &py,
                &frame(&py, VERSION, 65536, b.len() as u64, &b),
                l,
                "page numbers",
            );
        }
        let mut lie = pages(&[1]);
        lie[0] = 200;
        refused(
            &py,
            &frame(&py, VERSION, 65536, lie.len() as u64, &lie),
            l,
            "page count",
        );
        // A memory smaller than the interpreter's own.
        refused(&py, &frame(&py, VERSION, 0, 4, &[0; 4]), l, "smaller");
        // The checksum covers everything.
        let mut altered = good.clone();
        altered[MAGIC.len() + 1] ^= 1;
        refused(&py, &altered, l, "checksum");
    }
}
