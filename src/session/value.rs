//! The interchange form of values that cross between a session's guest and
//! the host: `eval` results, host-function arguments and results.
//!
//! A tagged binary form, one byte of tag then the payload, little-endian;
//! the guest's side is `encode`/`decode` in `driver.py`. The guest is
//! hostile: [`decode`] checks every length against what is left of the
//! message and limits nesting, so a message costs the host no more than
//! its own size in values.

use std::fmt;

/// A value in the interchange form.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    /// An int that fits in 64 bits (a larger one crosses as [`Value::Repr`]
    /// in an `eval` result and is refused as a host-function argument).
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    /// From a list or a tuple.
    List(Vec<Value>),
    /// Keys in the guest dict's order.
    Dict(Vec<(Value, Value)>),
    /// An object outside this form, as its `repr()`: only in `eval`
    /// results, never sent to the guest.
    Repr(String),
}

/// Nesting deeper than this is refused (the guest's encoder stops there
/// too), so that decoding cannot exhaust the host's stack.
pub const MAX_DEPTH: usize = 100;

const NONE: u8 = b'N';
const TRUE: u8 = b'T';
const FALSE: u8 = b'F';
const INT: u8 = b'i';
const FLOAT: u8 = b'f';
const STR: u8 = b's';
const BYTES: u8 = b'b';
const LIST: u8 = b'l';
const DICT: u8 = b'd';
const REPR: u8 = b'r';

impl fmt::Display for Value {
    /// Python's literal syntax, for messages and tests.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => f.write_str("None"),
            Value::Bool(true) => f.write_str("True"),
            Value::Bool(false) => f.write_str("False"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Bytes(b) => write!(f, "b{:?}", String::from_utf8_lossy(b)),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Dict(items) => {
                f.write_str("{")?;
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
            Value::Repr(r) => f.write_str(r),
        }
    }
}

/// Appends `v` to `out`. A [`Value::Repr`] is written too (the guest's
/// decoder refuses it: it never goes to the guest).
pub fn encode(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::None => out.push(NONE),
        Value::Bool(true) => out.push(TRUE),
        Value::Bool(false) => out.push(FALSE),
        Value::Int(n) => {
            out.push(INT);
            out.extend_from_slice(&n.to_le_bytes());
        }
        Value::Float(x) => {
            out.push(FLOAT);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::Str(s) => put_bytes(out, STR, s.as_bytes()),
        Value::Bytes(b) => put_bytes(out, BYTES, b),
        Value::Repr(s) => put_bytes(out, REPR, s.as_bytes()),
        Value::List(items) => {
            put_len(out, LIST, items.len());
            for i in items {
                encode(i, out);
            }
        }
        Value::Dict(items) => {
            put_len(out, DICT, items.len());
            for (k, v) in items {
                encode(k, out);
                encode(v, out);
            }
        }
    }
}

fn put_len(out: &mut Vec<u8>, tag: u8, n: usize) {
    out.push(tag);
    // Messages are capped far below 4 GiB (session::MAX_MESSAGE).
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, tag: u8, b: &[u8]) {
    put_len(out, tag, b.len());
    out.extend_from_slice(b);
}

/// A reader over one message.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err("the message ends early".into());
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    pub fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<usize, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn eight(&mut self) -> Result<[u8; 8], String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(a)
    }

    /// A length-prefixed UTF-8 string (after its tag).
    pub fn string(&mut self) -> Result<String, String> {
        let n = self.u32()?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a string is not UTF-8".into())
    }

    pub fn value(&mut self) -> Result<Value, String> {
        self.value_at(0)
    }

    fn value_at(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!("values nest deeper than {MAX_DEPTH}"));
        }
        Ok(match self.byte()? {
            NONE => Value::None,
            TRUE => Value::Bool(true),
            FALSE => Value::Bool(false),
            INT => Value::Int(i64::from_le_bytes(self.eight()?)),
            FLOAT => Value::Float(f64::from_le_bytes(self.eight()?)),
            STR => Value::Str(self.string()?),
            REPR => Value::Repr(self.string()?),
            BYTES => {
                let n = self.u32()?;
                Value::Bytes(self.take(n)?.to_vec())
            }
            LIST => {
                let n = self.u32()?;
                // Each item takes at least one byte: a count beyond what
                // is left is a lie, and must not size an allocation.
                let mut items = Vec::with_capacity(n.min(self.buf.len()));
                for _ in 0..n {
                    items.push(self.value_at(depth + 1)?);
                }
                Value::List(items)
            }
            DICT => {
                let n = self.u32()?;
                let mut items = Vec::with_capacity(n.min(self.buf.len() / 2));
                for _ in 0..n {
                    let k = self.value_at(depth + 1)?;
                    let v = self.value_at(depth + 1)?;
                    items.push((k, v));
                }
                Value::Dict(items)
            }
            t => return Err(format!("unknown value tag {t:#04x}")),
        })
    }
}

/// One whole message holding one value.
pub fn decode(buf: &[u8]) -> Result<Value, String> {
    let mut r = Reader::new(buf);
    let v = r.value()?;
    if !r.is_empty() {
        return Err("bytes after the value".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let v = Value::List(vec![
            Value::None,
            Value::Bool(true),
            Value::Int(-7),
            Value::Float(1.5),
            Value::Str("é".into()),
            Value::Bytes(vec![0, 255]),
            Value::Dict(vec![(Value::Str("k".into()), Value::List(vec![]))]),
            Value::Repr("<object>".into()),
        ]);
        let mut out = Vec::new();
        encode(&v, &mut out);
        assert_eq!(decode(&out), Ok(v));
    }

    #[test]
    fn hostile_messages_are_refused_cheaply() {
        // A list that claims 4 billion items in a 5-byte message.
        assert!(decode(&[b'l', 255, 255, 255, 255]).is_err());
        assert!(decode(&[b's', 10, 0, 0, 0, b'a']).is_err());
        assert!(decode(&[b's', 1, 0, 0, 0, 0xff]).is_err());
        assert!(decode(b"?").is_err());
        assert!(decode(b"NN").is_err());
        assert!(decode(&[]).is_err());
        let deep = [[b'l', 1, 0, 0, 0]; MAX_DEPTH + 2].concat();
        let mut deep = deep.to_vec();
        deep.push(b'N');
        assert!(decode(&deep).unwrap_err().contains("nest"));
    }
}
