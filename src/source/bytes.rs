//! The decoders' leaf: reading fixed and length-prefixed integers from a
//! row image ([`take`], [`le_uint`], [`length_prefixed`], …), writing JSON
//! numbers, padded digits and base64, and the error types a value decode
//! fails with ([`Fault`] before the column is known, [`DecodeError`] after).
//! It imports nothing from the other decoder modules, so `value`,
//! `charset`, `decimal`, `temporal`, `jsonb` and `geometry` all build on it
//! without importing each other in a circle.

use base64::Engine as _;

/// A value or column definition that cannot be decoded.
#[derive(thiserror::Error, Debug)]
pub enum DecodeError {
    #[error("{column}: {have} bytes left, need {need}")]
    Truncated {
        column: String,
        have: usize,
        need: usize,
    },
    #[error("{column}: {detail}")]
    Corrupt { column: String, detail: String },
    #[error("column type {type_byte:#04x} ({name}) with metadata {meta:02x?}: {detail}")]
    BadMetadata {
        type_byte: u8,
        name: &'static str,
        meta: Vec<u8>,
        detail: String,
    },
    #[error("column type {type_byte:#04x} ({name}) is not supported")]
    Unsupported { type_byte: u8, name: &'static str },
}

/// A value-level failure, before it is tagged with the column's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    Short { have: usize, need: usize },
    Bad(String),
}

impl Fault {
    pub(crate) fn bad(msg: impl Into<String>) -> Fault {
        Fault::Bad(msg.into())
    }

    pub(crate) fn at(self, column: String) -> DecodeError {
        match self {
            Fault::Short { have, need } => DecodeError::Truncated { column, have, need },
            Fault::Bad(detail) => DecodeError::Corrupt { column, detail },
        }
    }
}

/// 10^0 … 10^9.
pub(crate) const POW10: [u32; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

// ---------------------------------------------------------------- input ---

/// The first `n` bytes of `input`, or a `Short` fault.
#[inline]
pub(crate) fn take(input: &[u8], n: usize) -> Result<&[u8], Fault> {
    input.get(..n).ok_or(Fault::Short {
        have: input.len(),
        need: n,
    })
}

/// Fixed-size array from the start of `input`.
#[inline]
pub(crate) fn take_array<const N: usize>(input: &[u8]) -> Result<[u8; N], Fault> {
    let mut a = [0u8; N];
    a.copy_from_slice(take(input, N)?);
    Ok(a)
}

/// Little-endian unsigned integer of `n` (≤ 8) bytes.
#[inline]
pub(crate) fn le_uint(input: &[u8], n: usize) -> Result<u64, Fault> {
    let b = take(input, n)?;
    Ok(b.iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
}

/// Big-endian unsigned integer of `n` (≤ 8) bytes.
#[inline]
pub(crate) fn be_uint(input: &[u8], n: usize) -> Result<u64, Fault> {
    let b = take(input, n)?;
    Ok(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
}

/// A value with a `len_bytes` little-endian length prefix: returns the
/// payload and the total number of bytes consumed.
pub(crate) fn length_prefixed(input: &[u8], len_bytes: u8) -> Result<(&[u8], usize), Fault> {
    let lb = usize::from(len_bytes);
    let len = le_uint(input, lb)?;
    let len = usize::try_from(len).map_err(|_| Fault::bad("length does not fit in memory"))?;
    let total = lb
        .checked_add(len)
        .ok_or_else(|| Fault::bad("length overflows"))?;
    let payload = input.get(lb..total).ok_or(Fault::Short {
        have: input.len(),
        need: total,
    })?;
    Ok((payload, total))
}

// --------------------------------------------------------------- output ---

#[inline]
pub(crate) fn write_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

#[inline]
pub(crate) fn write_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Shortest round-trip f64 as a JSON number; NaN/inf → `null`.
pub(crate) fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Shortest round-trip f32 as a JSON number; NaN/inf → `null`.
pub(crate) fn write_f32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// `v` in decimal, left-padded with zeros to at least `width` digits.
pub(crate) fn write_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    // Fast path (dates and times): exactly `width` digits, one copy.
    if let Some(&limit) = POW10.get(width) {
        if (1..=8).contains(&width) && v < u64::from(limit) {
            let mut digits = [b'0'; 8];
            let mut rest = v;
            for d in digits[..width].iter_mut().rev() {
                *d = b'0' + (rest % 10) as u8;
                rest /= 10;
            }
            out.extend_from_slice(&digits[..width]);
            return;
        }
    }
    let mut buf = itoa::Buffer::new();
    let s = buf.format(v);
    for _ in s.len()..width {
        out.push(b'0');
    }
    out.extend_from_slice(s.as_bytes());
}

// JSON string escaping is the payload's; the decoders write through it too.
pub(crate) use crate::event::payload::{write_escaped, write_json_str};

/// Standard base64 (with padding) of `bytes`, without quotes.
pub(crate) fn write_base64_body(out: &mut Vec<u8>, bytes: &[u8]) {
    let engine = &base64::engine::general_purpose::STANDARD;
    let start = out.len();
    let Some(n) = base64::encoded_len(bytes.len(), true) else {
        // Unreachable for in-memory slices; never emit partial data silently.
        out.extend_from_slice(b"<too long>");
        return;
    };
    out.resize(start + n, 0);
    if let Some(dst) = out.get_mut(start..) {
        if engine.encode_slice(bytes, dst).is_err() {
            out.truncate(start);
        }
    }
}

/// A JSON string holding standard base64 of `bytes`.
pub(crate) fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    write_base64_body(out, bytes);
    out.push(b'"');
}
