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
    // Streamed straight into the guest's memory: no copy of the pages in
    // the host, and nothing read beyond what the framing declared.
    let mut stream = zstd::stream::read::Decoder::new(c.0)
        .map_err(|e| corrupt(&format!("its pages do not decompress: {e}")))?;
    let mut read = |buf: &mut [u8]| {
        std::io::Read::read_exact(&mut stream, buf)
            .map_err(|e| corrupt(&format!("its pages do not decompress: {e}")))
    };
    let mut word = [0u8; 4];
    read(&mut word)?;
    let count = u32::from_le_bytes(word) as usize;
    if count > max_pages || body_len != (4 + count * (4 + PAGE)) as u64 {
        return Err(corrupt("its page count does not match"));
    }
    let mut raw = vec![0u8; count * 4];
    read(&mut raw)?;
    let mut numbers = Vec::with_capacity(count);
    for w in raw.chunks_exact(4) {
        let n = u32::from_le_bytes(w.try_into().unwrap()) as usize;
        if n >= max_pages || numbers.last().is_some_and(|&last| n <= last) {
            return Err(corrupt("its page numbers are out of order or range"));
        }
        numbers.push(n);
    }

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
    populate(mem, &numbers);
    for n in numbers {
        read(&mut mem[n * PAGE..(n + 1) * PAGE])?;
    }
    if std::io::Read::read(&mut stream, &mut [0u8; 1]).map_or(true, |n| n != 0) {
        return Err(corrupt("its pages have the wrong size"));
    }
    Ok(session)
}

/// Faults in the pages about to be written, a run of them per system
/// call: a page fault each costs more than the copy into it.
fn populate(mem: &mut [u8], numbers: &[usize]) {
    #[cfg(target_os = "linux")]
    {
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        let mut i = 0;
        while i < numbers.len() {
            let mut j = i + 1;
            while j < numbers.len() && numbers[j] == numbers[j - 1] + 1 {
                j += 1;
            }
            let run = &mut mem[numbers[i] * PAGE..(numbers[j - 1] + 1) * PAGE];
            // SAFETY: the range is memory this store owns and holds
            // mutably; the call only faults its pages in (and fails
            // harmlessly on kernels before 5.14).
            unsafe {
                libc::madvise(run.as_mut_ptr().cast(), run.len(), MADV_POPULATE_WRITE);
            }
            i = j;
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (mem, numbers);
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

    /// `data` (a frame without its checksum) with a new checksum.
    fn reframe(mut data: Vec<u8>) -> Vec<u8> {
        let sum = blake3::hash(&data);
        data.extend_from_slice(sum.as_bytes());
        data
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
        assert!(e.to_string().contains(want), "want {want}: {e}");
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
        // Declared sizes that do not match the pages.
        refused(&py, &frame(&py, VERSION, 65536, 10, &ok), l, "page count");
        refused(
            &py,
            &frame(&py, VERSION, 65536, ok.len() as u64 + 1, &ok),
            l,
            "page count",
        );
        // A stream that is not zstd, one cut short, one with more after.
        let mut garbage = frame(&py, VERSION, 65536, ok.len() as u64, &[]);
        let header = garbage.len() - 32 - zstd::bulk::compress(&[], 1).unwrap().len();
        garbage.truncate(header);
        garbage.extend_from_slice(&[0xAA; 50]);
        refused(&py, &reframe(garbage), l, "decompress");
        let packed = zstd::bulk::compress(&ok, 1).unwrap();
        let mut short = frame(&py, VERSION, 65536, ok.len() as u64, &[]);
        short.truncate(header);
        short.extend_from_slice(&packed[..packed.len() / 2]);
        refused(&py, &reframe(short), l, "decompress");
        let mut longer = ok.clone();
        longer.extend_from_slice(&[1; 100]);
        refused(
            &py,
            &frame(&py, VERSION, 65536, ok.len() as u64, &longer),
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
