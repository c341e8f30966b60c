//! MySQL binary JSON (JSONB, `json_binary.cc`) → compact JSON text, and
//! PARTIAL_JSON diffs (binlog_row_value_options=PARTIAL_JSON) applied to a
//! before-image.
//!
//! Objects keep the stored key order (MySQL's own order: by length, then
//! bytes), which is what `SELECT` shows. OPAQUE scalars print as MySQL's
//! JSON functions print them (see docs/types.md).

use super::bytes::{
    le_uint, write_base64_body, write_f64, write_i64, write_json_str, write_u64, DecodeError, Fault,
};
use super::decimal;
use super::temporal::{write_datetime_packed, write_time_packed};

const SMALL_OBJECT: u8 = 0x00;
const LARGE_OBJECT: u8 = 0x01;
const SMALL_ARRAY: u8 = 0x02;
const LARGE_ARRAY: u8 = 0x03;
const LITERAL: u8 = 0x04;
const INT16: u8 = 0x05;
const UINT16: u8 = 0x06;
const INT32: u8 = 0x07;
const UINT32: u8 = 0x08;
const INT64: u8 = 0x09;
const UINT64: u8 = 0x0a;
const DOUBLE: u8 = 0x0b;
const STRING: u8 = 0x0c;
const OPAQUE: u8 = 0x0f;

/// Deeper than MySQL allows (100), so real documents always fit.
const MAX_DEPTH: usize = 150;

/// Walk state: nesting depth and a budget of values (guards against
/// documents whose entries share offsets and would expand exponentially).
struct Walk {
    budget: usize,
    /// Output length that a real document of this size cannot exceed.
    out_limit: usize,
}

/// Decode a whole binary JSON document (the column payload) into `out`.
/// An empty payload is JSON `null` (MySQL reads it so, see Field_json).
pub(crate) fn write_jsonb(data: &[u8], out: &mut Vec<u8>) -> Result<(), Fault> {
    let Some((&t, body)) = data.split_first() else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    let mut walk = Walk {
        budget: data.len() + 1,
        out_limit: out.len() + 8 * data.len() + 1024,
    };
    write_value(t, body, out, 0, &mut walk)
}

/// Variable-length string length: 7 bits per byte, up to 5 bytes.
pub(crate) fn read_varlen(data: &[u8]) -> Result<(usize, usize), Fault> {
    let mut len: u64 = 0;
    for i in 0..5 {
        let b = *data.get(i).ok_or(Fault::Short {
            have: data.len(),
            need: i + 1,
        })?;
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let len = u32::try_from(len).map_err(|_| Fault::bad("JSON length overflows"))?;
            return Ok((len as usize, i + 1));
        }
    }
    Err(Fault::bad(
        "JSON variable-length integer longer than 5 bytes",
    ))
}

/// `data[start..start+len]`, checked.
fn slice(data: &[u8], start: usize, len: usize) -> Result<&[u8], Fault> {
    let end = start
        .checked_add(len)
        .ok_or_else(|| Fault::bad("JSON offset overflows"))?;
    data.get(start..end).ok_or_else(|| {
        Fault::bad(format!(
            "JSON offset {start}+{len} is outside the {}-byte value",
            data.len()
        ))
    })
}

fn write_value(
    t: u8,
    data: &[u8],
    out: &mut Vec<u8>,
    depth: usize,
    walk: &mut Walk,
) -> Result<(), Fault> {
    walk.budget = walk
        .budget
        .checked_sub(1)
        .ok_or_else(|| Fault::bad("JSON document references more values than it has bytes"))?;
    if out.len() > walk.out_limit {
        return Err(Fault::bad("JSON document expands beyond its size"));
    }
    match t {
        SMALL_OBJECT | LARGE_OBJECT | SMALL_ARRAY | LARGE_ARRAY => {
            if depth >= MAX_DEPTH {
                return Err(Fault::bad("JSON nesting too deep"));
            }
            write_container(t, data, out, depth + 1, walk)
        }
        LITERAL => {
            let b = *data.first().ok_or(Fault::Short { have: 0, need: 1 })?;
            write_literal(b, out)
        }
        INT16 => {
            write_i64(out, i64::from(le_uint(data, 2)? as u16 as i16));
            Ok(())
        }
        UINT16 => {
            write_u64(out, le_uint(data, 2)?);
            Ok(())
        }
        INT32 => {
            write_i64(out, i64::from(le_uint(data, 4)? as u32 as i32));
            Ok(())
        }
        UINT32 => {
            write_u64(out, le_uint(data, 4)?);
            Ok(())
        }
        INT64 => {
            write_i64(out, le_uint(data, 8)? as i64);
            Ok(())
        }
        UINT64 => {
            write_u64(out, le_uint(data, 8)?);
            Ok(())
        }
        DOUBLE => {
            write_f64(out, f64::from_bits(le_uint(data, 8)?));
            Ok(())
        }
        STRING => {
            let (len, n) = read_varlen(data)?;
            let bytes = slice(data, n, len)?;
            let s = std::str::from_utf8(bytes)
                .map_err(|e| Fault::bad(format!("JSON string is not UTF-8: {e}")))?;
            write_json_str(out, s);
            Ok(())
        }
        OPAQUE => {
            let field_type = *data.first().ok_or(Fault::Short { have: 0, need: 1 })?;
            let rest = data.get(1..).unwrap_or(&[]);
            let (len, n) = read_varlen(rest)?;
            let bytes = slice(rest, n, len)?;
            write_opaque(field_type, bytes, out)
        }
        other => Err(Fault::bad(format!("unknown JSON value type {other:#04x}"))),
    }
}

fn write_literal(b: u8, out: &mut Vec<u8>) -> Result<(), Fault> {
    out.extend_from_slice(match b {
        0 => b"null".as_slice(),
        1 => b"true",
        2 => b"false",
        x => return Err(Fault::bad(format!("unknown JSON literal {x:#04x}"))),
    });
    Ok(())
}

/// OPAQUE values, printed as MySQL's JSON functions print them.
fn write_opaque(field_type: u8, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Fault> {
    let packed = || -> Result<i64, Fault> { Ok(le_uint(bytes, 8)? as i64) };
    match field_type {
        // NEWDECIMAL: precision, scale, binary decimal → number.
        0xf6 => {
            let (&precision, rest) = bytes
                .split_first()
                .ok_or(Fault::Short { have: 0, need: 2 })?;
            let (&scale, rest) = rest
                .split_first()
                .ok_or(Fault::Short { have: 1, need: 2 })?;
            decimal::write_decimal(rest, precision, scale, false, out)?;
            Ok(())
        }
        // DATE / NEWDATE: packed datetime, date part only.
        0x0a | 0x0e => write_datetime_packed(out, packed()?, 0, true),
        // DATETIME / TIMESTAMP (and their v2 type codes): 6 fraction digits.
        0x0c | 0x07 | 0x11 | 0x12 => write_datetime_packed(out, packed()?, 6, false),
        0x0b | 0x13 => write_time_packed(out, packed()?, 6),
        t => {
            out.extend_from_slice(b"\"base64:type");
            write_u64(out, u64::from(t));
            out.push(b':');
            write_base64_body(out, bytes);
            out.push(b'"');
            Ok(())
        }
    }
}

fn write_container(
    t: u8,
    data: &[u8],
    out: &mut Vec<u8>,
    depth: usize,
    walk: &mut Walk,
) -> Result<(), Fault> {
    let large = t == LARGE_OBJECT || t == LARGE_ARRAY;
    let is_object = t == SMALL_OBJECT || t == LARGE_OBJECT;
    let w = if large { 4 } else { 2 };
    let count = le_uint(data, w)? as usize;
    let size = le_uint(data.get(w..).unwrap_or(&[]), w)? as usize;
    let data = data.get(..size).ok_or_else(|| {
        Fault::bad(format!(
            "JSON container claims {size} bytes, {} left",
            data.len()
        ))
    })?;
    let key_entry = if is_object { w + 2 } else { 0 };
    let value_entry = 1 + w;
    let fits = count
        .checked_mul(key_entry + value_entry)
        .and_then(|x| x.checked_add(2 * w))
        .is_some_and(|h| h <= size);
    if !fits {
        return Err(Fault::bad(format!(
            "JSON container of {size} bytes cannot hold {count} entries"
        )));
    }
    let values_at = 2 * w + count * key_entry;

    out.push(if is_object { b'{' } else { b'[' });
    for i in 0..count {
        if i > 0 {
            out.push(b',');
        }
        if is_object {
            let e = slice(data, 2 * w + i * key_entry, key_entry)?;
            let key_off = le_uint(e, w)? as usize;
            let key_len = le_uint(e.get(w..).unwrap_or(&[]), 2)? as usize;
            let key = slice(data, key_off, key_len)?;
            let key = std::str::from_utf8(key)
                .map_err(|e| Fault::bad(format!("JSON key is not UTF-8: {e}")))?;
            write_json_str(out, key);
            out.push(b':');
        }
        let e = slice(data, values_at + i * value_entry, value_entry)?;
        let (&vt, slot) = e.split_first().ok_or_else(|| Fault::bad("empty entry"))?;
        let inlined = match vt {
            LITERAL | INT16 | UINT16 => true,
            INT32 | UINT32 => large,
            _ => false,
        };
        if inlined {
            walk.budget = walk
                .budget
                .checked_sub(1)
                .ok_or_else(|| Fault::bad("JSON document references too many values"))?;
            match vt {
                LITERAL => write_literal(slot.first().copied().unwrap_or(0xff), out)?,
                INT16 => write_i64(out, i64::from(le_uint(slot, 2)? as u16 as i16)),
                UINT16 => write_u64(out, le_uint(slot, 2)?),
                INT32 => write_i64(out, i64::from(le_uint(slot, 4)? as u32 as i32)),
                _ => write_u64(out, le_uint(slot, 4)?),
            }
        } else {
            let off = le_uint(slot, w)? as usize;
            let v = data
                .get(off..)
                .filter(|_| off >= values_at)
                .ok_or_else(|| {
                    Fault::bad(format!(
                        "JSON value offset {off} is outside the {size}-byte container"
                    ))
                })?;
            write_value(vt, v, out, depth, walk)?;
        }
    }
    out.push(if is_object { b'}' } else { b']' });
    Ok(())
}

// ------------------------------------------------------- partial update ---

/// A parsed JSON value with object key order preserved (for diffs).
#[derive(Debug, Clone, PartialEq)]
enum Json {
    /// Any scalar, kept as its JSON text.
    Raw(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Json::Raw(s) => out.extend_from_slice(s.as_bytes()),
            Json::Array(a) => {
                out.push(b'[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    v.write(out);
                }
                out.push(b']');
            }
            Json::Object(o) => {
                out.push(b'{');
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json_str(out, k);
                    out.push(b':');
                    v.write(out);
                }
                out.push(b'}');
            }
        }
    }
}

/// Parser for JSON text that keeps scalars as their exact text (so DECIMAL
/// digits like `9.00` and big numbers survive) and object keys in order.
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn parse(s: &'a [u8]) -> Result<Json, Fault> {
        let mut p = Parser { s, i: 0 };
        let v = p.value(0)?;
        p.ws();
        if p.i != s.len() {
            return Err(Fault::bad("trailing characters after JSON value"));
        }
        Ok(v)
    }

    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// A validated JSON string token, quotes included.
    fn string_token(&mut self) -> Result<&'a str, Fault> {
        let start = self.i;
        self.i += 1;
        loop {
            match self.s.get(self.i) {
                Some(b'\\') => self.i += 2,
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(_) => self.i += 1,
                None => return Err(Fault::bad("unterminated JSON string")),
            }
        }
        let tok = self.s.get(start..self.i).unwrap_or(&[]);
        serde_json::from_slice::<serde::de::IgnoredAny>(tok)
            .map_err(|e| Fault::bad(format!("bad JSON string: {e}")))?;
        std::str::from_utf8(tok).map_err(|_| Fault::bad("JSON text is not UTF-8"))
    }

    fn value(&mut self, depth: usize) -> Result<Json, Fault> {
        if depth > MAX_DEPTH {
            return Err(Fault::bad("JSON nesting too deep"));
        }
        self.ws();
        match self.s.get(self.i) {
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                if self.eat(b']') {
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    if self.eat(b']') {
                        return Ok(Json::Array(items));
                    }
                    if !self.eat(b',') {
                        return Err(Fault::bad("expected , or ] in JSON array"));
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut entries: Vec<(String, Json)> = Vec::new();
                if self.eat(b'}') {
                    return Ok(Json::Object(entries));
                }
                loop {
                    self.ws();
                    if self.s.get(self.i) != Some(&b'"') {
                        return Err(Fault::bad("expected a key in JSON object"));
                    }
                    let raw = self.string_token()?;
                    let key: String = serde_json::from_str(raw)
                        .map_err(|e| Fault::bad(format!("bad JSON key: {e}")))?;
                    if !self.eat(b':') {
                        return Err(Fault::bad("expected : in JSON object"));
                    }
                    let v = self.value(depth + 1)?;
                    if let Some(slot) = entries.iter_mut().find(|(k, _)| *k == key) {
                        slot.1 = v;
                    } else {
                        entries.push((key, v));
                    }
                    if self.eat(b'}') {
                        return Ok(Json::Object(entries));
                    }
                    if !self.eat(b',') {
                        return Err(Fault::bad("expected , or } in JSON object"));
                    }
                }
            }
            Some(b'"') => Ok(Json::Raw(self.string_token()?.to_string())),
            Some(_) => {
                let start = self.i;
                while let Some(c) = self.s.get(self.i) {
                    if matches!(c, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.i += 1;
                }
                let tok = self.s.get(start..self.i).unwrap_or(&[]);
                serde_json::from_slice::<serde::de::IgnoredAny>(tok)
                    .map_err(|e| Fault::bad(format!("bad JSON scalar: {e}")))?;
                let tok = std::str::from_utf8(tok).map_err(|_| Fault::bad("not UTF-8"))?;
                Ok(Json::Raw(tok.to_string()))
            }
            None => Err(Fault::bad("unexpected end of JSON text")),
        }
    }
}

/// MySQL's object key order: shorter keys first, then by bytes.
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    (a.len(), a.as_bytes()).cmp(&(b.len(), b.as_bytes()))
}

/// One step of a MySQL JSON path: `.key`, `[n]` or `[last]`-style index.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Parse the simple paths MySQL writes into JSON diffs: `$`, `.key`,
/// `."quoted key"`, `[n]`.
fn parse_path(path: &str) -> Result<Vec<Step>, Fault> {
    let bad = || Fault::bad(format!("unsupported JSON diff path {path:?}"));
    let mut rest = path.trim().strip_prefix('$').ok_or_else(bad)?;
    let mut steps = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(steps);
        }
        if let Some(r) = rest.strip_prefix('.') {
            let r = r.trim_start();
            if r.starts_with('"') {
                // A JSON string literal; find its end honouring escapes.
                let mut de = serde_json::Deserializer::from_str(r).into_iter::<String>();
                let key = de.next().ok_or_else(bad)?.map_err(|_| bad())?;
                let used = de.byte_offset();
                steps.push(Step::Key(key));
                rest = r.get(used..).ok_or_else(bad)?;
            } else {
                let end = r.find(['.', '[', ' ']).unwrap_or(r.len());
                let (key, tail) = r.split_at(end);
                if key.is_empty() {
                    return Err(bad());
                }
                steps.push(Step::Key(key.to_string()));
                rest = tail;
            }
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(bad)?;
            let (idx, tail) = r.split_at(end);
            let idx: usize = idx.trim().parse().map_err(|_| bad())?;
            steps.push(Step::Index(idx));
            rest = tail.get(1..).unwrap_or("");
        } else {
            return Err(bad());
        }
    }
}

fn apply_one(doc: &mut Json, path: &[Step], op: u8, value: Option<Json>) -> Result<(), Fault> {
    let Some((last, parents)) = path.split_last() else {
        // `$` itself: only REPLACE makes sense.
        return match (op, value) {
            (0, Some(v)) => {
                *doc = v;
                Ok(())
            }
            _ => Err(Fault::bad("JSON diff cannot insert or remove the root")),
        };
    };
    let mut cur = doc;
    for step in parents {
        cur = match (step, cur) {
            (Step::Key(k), Json::Object(o)) => o
                .iter_mut()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v)
                .ok_or_else(|| Fault::bad(format!("JSON diff path: no key {k:?}")))?,
            (Step::Index(i), Json::Array(a)) => a
                .get_mut(*i)
                .ok_or_else(|| Fault::bad(format!("JSON diff path: no index {i}")))?,
            (s, _) => {
                return Err(Fault::bad(format!(
                    "JSON diff path step {s:?} does not match"
                )))
            }
        };
    }
    match (op, last, cur, value) {
        // REPLACE
        (0, Step::Key(k), Json::Object(o), Some(v)) => {
            let slot = o
                .iter_mut()
                .find(|(key, _)| key == k)
                .ok_or_else(|| Fault::bad(format!("JSON diff REPLACE: no key {k:?}")))?;
            slot.1 = v;
        }
        (0, Step::Index(i), Json::Array(a), Some(v)) => {
            *a.get_mut(*i)
                .ok_or_else(|| Fault::bad(format!("JSON diff REPLACE: no index {i}")))? = v;
        }
        // INSERT
        (1, Step::Key(k), Json::Object(o), Some(v)) => {
            if let Some(slot) = o.iter_mut().find(|(key, _)| key == k) {
                slot.1 = v;
            } else {
                // Keep MySQL's stored order, as a full after-image would show.
                let at = o
                    .iter()
                    .position(|(key, _)| key_order(key, k).is_gt())
                    .unwrap_or(o.len());
                o.insert(at, (k.clone(), v));
            }
        }
        (1, Step::Index(i), Json::Array(a), Some(v)) => {
            let at = (*i).min(a.len());
            a.insert(at, v);
        }
        // REMOVE
        (2, Step::Key(k), Json::Object(o), None) => {
            o.retain(|(key, _)| key != k);
        }
        (2, Step::Index(i), Json::Array(a), None) => {
            if *i < a.len() {
                a.remove(*i);
            }
        }
        (op, step, _, _) => {
            return Err(Fault::bad(format!(
                "JSON diff operation {op} at {step:?} does not apply to the document"
            )))
        }
    }
    Ok(())
}

/// Length-encoded integer (MySQL protocol) at the start of `data`.
fn lenenc(data: &[u8]) -> Result<(u64, usize), Fault> {
    let first = *data.first().ok_or(Fault::Short { have: 0, need: 1 })?;
    let rest = data.get(1..).unwrap_or(&[]);
    match first {
        0..=0xfa => Ok((u64::from(first), 1)),
        0xfc => Ok((le_uint(rest, 2)?, 3)),
        0xfd => Ok((le_uint(rest, 3)?, 4)),
        0xfe => Ok((le_uint(rest, 8)?, 9)),
        x => Err(Fault::bad(format!(
            "bad length-encoded integer prefix {x:#04x}"
        ))),
    }
}

fn apply_inner(before: &[u8], diff_input: &[u8], out: &mut Vec<u8>) -> Result<usize, Fault> {
    let len = le_uint(diff_input, 4)? as usize;
    let total = 4usize
        .checked_add(len)
        .ok_or_else(|| Fault::bad("length overflows"))?;
    let mut diffs = diff_input.get(4..total).ok_or(Fault::Short {
        have: diff_input.len(),
        need: total,
    })?;
    let mut doc = Parser::parse(before)?;
    while !diffs.is_empty() {
        let (&op, rest) = diffs
            .split_first()
            .ok_or_else(|| Fault::bad("empty diff"))?;
        if op > 2 {
            return Err(Fault::bad(format!("unknown JSON diff operation {op}")));
        }
        let (plen, n) = lenenc(rest)?;
        let path = slice(rest, n, plen as usize)?;
        let path =
            std::str::from_utf8(path).map_err(|_| Fault::bad("JSON diff path is not UTF-8"))?;
        let mut used = 1 + n + plen as usize;
        let value = if op != 2 {
            let after_path = diffs.get(used..).unwrap_or(&[]);
            let (vlen, m) = lenenc(after_path)?;
            let vbytes = slice(after_path, m, vlen as usize)?;
            let mut text = Vec::new();
            write_jsonb(vbytes, &mut text)?;
            used += m + vlen as usize;
            Some(Parser::parse(&text)?)
        } else {
            None
        };
        apply_one(&mut doc, &parse_path(path)?, op, value)?;
        diffs = diffs.get(used..).unwrap_or(&[]);
    }
    doc.write(out);
    Ok(total)
}

/// For MySQL PARTIAL_UPDATE_ROWS (binlog_row_value_options=PARTIAL_JSON):
/// `diff_input` starts at the JSON column's 4-byte length prefix, followed
/// by the diff list (operation byte, length-encoded path, and for REPLACE /
/// INSERT a length-encoded binary JSON value). The diffs are applied to
/// `before_json` (the before-image as JSON text, as decoded earlier) and
/// the after-image JSON text is appended to `out`. Returns the number of
/// input bytes consumed.
pub(crate) fn apply_json_diff(
    before_json: &[u8],
    diff_input: &[u8],
    out: &mut Vec<u8>,
) -> Result<usize, DecodeError> {
    let mark = out.len();
    apply_inner(before_json, diff_input, out).map_err(|f| {
        out.truncate(mark);
        match f {
            Fault::Short { have, need } => DecodeError::Truncated {
                column: "JSON (partial update)".into(),
                have,
                need,
            },
            Fault::Bad(detail) => DecodeError::Corrupt {
                column: "JSON (partial update)".into(),
                detail,
            },
        }
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Test-side JSON model for the encoder.
    #[derive(Debug, Clone)]
    pub(crate) enum J {
        Null,
        Bool(bool),
        I(i64),
        U(u64),
        D(f64),
        S(String),
        A(Vec<J>),
        O(Vec<(String, J)>),
        Opaque(u8, Vec<u8>),
    }

    fn varlen(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    /// Encode as MySQL would (json_binary.cc serialize_*): (type, bytes).
    pub(crate) fn enc(v: &J, large: bool) -> (u8, Vec<u8>) {
        match v {
            J::Null => (LITERAL, vec![0]),
            J::Bool(true) => (LITERAL, vec![1]),
            J::Bool(false) => (LITERAL, vec![2]),
            J::I(i) if i16::try_from(*i).is_ok() => (INT16, (*i as i16).to_le_bytes().to_vec()),
            J::I(i) if i32::try_from(*i).is_ok() => (INT32, (*i as i32).to_le_bytes().to_vec()),
            J::I(i) => (INT64, i.to_le_bytes().to_vec()),
            J::U(u) if *u <= 0xffff => (UINT16, (*u as u16).to_le_bytes().to_vec()),
            J::U(u) if *u <= 0xffff_ffff => (UINT32, (*u as u32).to_le_bytes().to_vec()),
            J::U(u) => (UINT64, u.to_le_bytes().to_vec()),
            J::D(d) => (DOUBLE, d.to_le_bytes().to_vec()),
            J::S(s) => {
                let mut o = Vec::new();
                varlen(s.len(), &mut o);
                o.extend_from_slice(s.as_bytes());
                (STRING, o)
            }
            J::Opaque(t, b) => {
                let mut o = vec![*t];
                varlen(b.len(), &mut o);
                o.extend_from_slice(b);
                (OPAQUE, o)
            }
            J::A(items) => container(None, items, large),
            J::O(entries) => {
                let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
                let vals: Vec<J> = entries.iter().map(|(_, v)| v.clone()).collect();
                container(Some(&keys), &vals, large)
            }
        }
    }

    fn container(keys: Option<&[&str]>, vals: &[J], large: bool) -> (u8, Vec<u8>) {
        let w = if large { 4 } else { 2 };
        let put = |o: &mut Vec<u8>, v: usize, n: usize| o.extend_from_slice(&v.to_le_bytes()[..n]);
        let n = vals.len();
        let key_entry = if keys.is_some() { w + 2 } else { 0 };
        let header = 2 * w + n * (key_entry + 1 + w);
        let mut tail = Vec::new();
        let mut key_entries = Vec::new();
        if let Some(keys) = keys {
            for k in keys {
                put(&mut key_entries, header + tail.len(), w);
                put(&mut key_entries, k.len(), 2);
                tail.extend_from_slice(k.as_bytes());
            }
        }
        let mut value_entries = Vec::new();
        for v in vals {
            let (t, bytes) = enc(v, large);
            value_entries.push(t);
            let inline = match t {
                LITERAL | INT16 | UINT16 => true,
                INT32 | UINT32 => large,
                _ => false,
            };
            if inline {
                let mut slot = bytes.clone();
                slot.resize(w, 0);
                value_entries.extend_from_slice(&slot);
            } else {
                put(&mut value_entries, header + tail.len(), w);
                tail.extend_from_slice(&bytes);
            }
        }
        let mut o = Vec::new();
        put(&mut o, n, w);
        put(&mut o, header + tail.len(), w);
        o.extend(key_entries);
        o.extend(value_entries);
        o.extend(tail);
        let t = match (keys.is_some(), large) {
            (true, false) => SMALL_OBJECT,
            (true, true) => LARGE_OBJECT,
            (false, false) => SMALL_ARRAY,
            (false, true) => LARGE_ARRAY,
        };
        (t, o)
    }

    pub(crate) fn doc(v: &J, large: bool) -> Vec<u8> {
        let (t, mut b) = enc(v, large);
        b.insert(0, t);
        b
    }

    fn show(bytes: &[u8]) -> Result<String, Fault> {
        let mut out = Vec::new();
        write_jsonb(bytes, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn o(entries: &[(&str, J)]) -> J {
        J::O(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    fn packed_le(v: i64) -> Vec<u8> {
        v.to_le_bytes().to_vec()
    }

    #[test]
    fn scalars_and_nesting() {
        let v = o(&[
            ("a", J::I(1)),
            (
                "b",
                J::A(vec![
                    J::Null,
                    J::Bool(true),
                    J::Bool(false),
                    J::I(-70000),
                    J::U(u64::MAX),
                ]),
            ),
            (
                "cc",
                o(&[("x", J::S("é\"\\\n😀".into())), ("y", J::D(1.5))]),
            ),
            ("ddd", J::I(i64::MIN)),
            ("e", J::D(0.1)),
            ("f", J::U(70000)),
            ("g", J::I(-5)),
        ]);
        let want = r#"{"a":1,"b":[null,true,false,-70000,18446744073709551615],"cc":{"x":"é\"\\\n😀","y":1.5},"ddd":-9223372036854775808,"e":0.1,"f":70000,"g":-5}"#;
        assert_eq!(show(&doc(&v, false)).unwrap(), want);
        assert_eq!(show(&doc(&v, true)).unwrap(), want);
        serde_json::from_str::<serde_json::Value>(want).unwrap();
    }

    #[test]
    fn top_level_scalars() {
        assert_eq!(show(&doc(&J::S("hi".into()), false)).unwrap(), "\"hi\"");
        assert_eq!(show(&doc(&J::Null, false)).unwrap(), "null");
        assert_eq!(show(&doc(&J::I(42), false)).unwrap(), "42");
        assert_eq!(show(&doc(&J::A(vec![]), false)).unwrap(), "[]");
        assert_eq!(show(&doc(&J::O(vec![]), false)).unwrap(), "{}");
        // Empty payload: JSON null.
        assert_eq!(show(&[]).unwrap(), "null");
        // A 200-byte string needs a 2-byte varlen length.
        let long = "x".repeat(200);
        assert_eq!(
            show(&doc(&J::S(long.clone()), false)).unwrap(),
            format!("\"{long}\"")
        );
    }

    /// The eight values of the corpus's json-opaque.binlog (MySQL 9.0.1).
    #[test]
    fn opaque_values_like_corpus() {
        use crate::source::decimal::tests::encode as dec;
        use crate::source::temporal::tests::{datetime_packed, time_packed};
        let cases: Vec<(J, &str)> = vec![
            (
                o(&[("a", J::Opaque(15, b"U".to_vec()))]),
                r#"{"a":"base64:type15:VQ=="}"#,
            ),
            (
                o(&[(
                    "b",
                    J::Opaque(10, packed_le(datetime_packed(2012, 3, 18, 0, 0, 0, 0))),
                )]),
                r#"{"b":"2012-03-18"}"#,
            ),
            (
                o(&[(
                    "c",
                    J::Opaque(12, packed_le(datetime_packed(2012, 3, 18, 11, 30, 45, 0))),
                )]),
                r#"{"c":"2012-03-18 11:30:45.000000"}"#,
            ),
            (
                o(&[(
                    "c",
                    J::Opaque(11, packed_le(time_packed(false, 87, 31, 46, 654_321))),
                )]),
                r#"{"c":"87:31:46.654321"}"#,
            ),
            (
                o(&[(
                    "d",
                    J::Opaque(246, [&[6u8, 3][..], &dec("123.456", 6, 3)].concat()),
                )]),
                r#"{"d":123.456}"#,
            ),
            (
                o(&[(
                    "e",
                    J::Opaque(246, [&[3u8, 2][..], &dec("9.00", 3, 2)].concat()),
                )]),
                r#"{"e":9.00}"#,
            ),
            (
                o(&[(
                    "e",
                    J::A(vec![J::I(0), J::I(1), J::Bool(true), J::Bool(false)]),
                )]),
                r#"{"e":[0,1,true,false]}"#,
            ),
            (o(&[("e", J::Null)]), r#"{"e":null}"#),
            (
                J::Opaque(11, packed_le(time_packed(true, 1, 2, 3, 500_000))),
                r#""-01:02:03.500000""#,
            ),
            (
                J::Opaque(7, packed_le(0)),
                r#""0000-00-00 00:00:00.000000""#,
            ),
            (J::Opaque(252, vec![0, 255]), r#""base64:type252:AP8=""#),
        ];
        for (v, want) in cases {
            assert_eq!(show(&doc(&v, false)).unwrap(), want);
        }
    }

    #[test]
    fn corrupt_documents() {
        // unknown type
        assert!(matches!(show(&[0x0d, 0]), Err(Fault::Bad(_))));
        // container size larger than data
        assert!(show(&[SMALL_ARRAY, 1, 0, 200, 0]).is_err());
        // value offset pointing into the header
        assert!(show(&[SMALL_ARRAY, 1, 0, 7, 0, STRING, 0, 0]).is_err());
        // invalid UTF-8 string
        assert!(show(&[STRING, 1, 0xff]).is_err());
        // Deep nesting beyond the limit.
        let mut v = J::Null;
        for _ in 0..200 {
            v = J::A(vec![v]);
        }
        assert!(show(&doc(&v, false)).is_err());
        let mut v = J::Null;
        for _ in 0..100 {
            v = J::A(vec![v]);
        }
        assert!(show(&doc(&v, false)).is_ok());
    }

    #[test]
    fn shared_offsets_cannot_explode() {
        // An array of 2 entries that both point at the same inner array,
        // nested: a DAG that would print 2^depth leaves.
        let mut body: Vec<u8> = vec![LITERAL, 0];
        let mut t = LITERAL;
        for _ in 0..60 {
            let header = 4 + 2 * 3;
            let mut c = vec![2, 0];
            c.extend_from_slice(&((header + body.len()) as u16).to_le_bytes());
            for _ in 0..2 {
                c.push(t);
                if t == LITERAL {
                    c.extend_from_slice(&[0, 0]);
                } else {
                    c.extend_from_slice(&(header as u16).to_le_bytes());
                }
            }
            c.extend_from_slice(&body);
            body = c;
            t = SMALL_ARRAY;
            if body.len() > 60000 {
                break;
            }
        }
        let mut d = vec![SMALL_ARRAY];
        d.extend_from_slice(&body);
        assert!(show(&d).is_err());
    }

    fn diff(op: u8, path: &str, value: Option<&J>) -> Vec<u8> {
        let mut d = vec![op, path.len() as u8];
        d.extend_from_slice(path.as_bytes());
        if let Some(v) = value {
            let b = doc(v, false);
            d.push(b.len() as u8);
            d.extend_from_slice(&b);
        }
        d
    }

    fn apply(before: &str, diffs: &[Vec<u8>]) -> Result<String, DecodeError> {
        let body: Vec<u8> = diffs.concat();
        let mut input = (body.len() as u32).to_le_bytes().to_vec();
        input.extend_from_slice(&body);
        input.push(0xee); // next column: must not be consumed
        let mut out = Vec::new();
        let n = apply_json_diff(before.as_bytes(), &input, &mut out)?;
        assert_eq!(n, input.len() - 1);
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn json_diffs() {
        let before = r#"{"b":1,"a":[1,2,3],"name":"x"}"#;
        assert_eq!(
            apply(before, &[diff(0, "$.name", Some(&J::S("y".into())))]).unwrap(),
            r#"{"b":1,"a":[1,2,3],"name":"y"}"#
        );
        assert_eq!(
            apply(
                before,
                &[diff(1, "$.a[1]", Some(&J::I(9))), diff(2, "$.b", None)]
            )
            .unwrap(),
            r#"{"a":[1,9,2,3],"name":"x"}"#
        );
        assert_eq!(
            apply(
                before,
                &[diff(1, "$.\"new key\"", Some(&o(&[("z", J::Null)])))]
            )
            .unwrap(),
            r#"{"b":1,"a":[1,2,3],"name":"x","new key":{"z":null}}"#
        );
        assert_eq!(
            apply(
                before,
                &[diff(0, "$.a[2]", Some(&J::D(2.5))), diff(2, "$.a[0]", None)]
            )
            .unwrap(),
            r#"{"b":1,"a":[2,2.5],"name":"x"}"#
        );
        assert_eq!(apply(before, &[diff(0, "$", Some(&J::I(1)))]).unwrap(), "1");
        assert!(apply(before, &[diff(0, "$.nope", Some(&J::I(1)))]).is_err());
        assert!(apply(before, &[diff(7, "$.b", None)]).is_err());
        assert!(apply("not json", &[diff(2, "$.b", None)]).is_err());
    }

    #[test]
    fn json_diffs_keep_order_and_digits() {
        // New keys go where MySQL stores them (length, then bytes).
        let sorted = r#"{"a":1,"bb":2,"name":"x"}"#;
        let d = [
            diff(1, "$.c", Some(&J::I(3))),
            diff(1, "$.zz", Some(&J::I(4))),
        ];
        assert_eq!(
            apply(sorted, &d).unwrap(),
            r#"{"a":1,"c":3,"bb":2,"zz":4,"name":"x"}"#
        );
        // Numbers and strings keep their exact text.
        let exact = r#"{"d":9.00,"big":123456789012345678901234567890.5,"s":"\u00e9\n"}"#;
        assert_eq!(
            apply(exact, &[diff(0, "$.s", Some(&J::S("t".into())))]).unwrap(),
            r#"{"d":9.00,"big":123456789012345678901234567890.5,"s":"t"}"#
        );
        let dec = crate::source::decimal::tests::encode("12.30", 4, 2);
        let dec_value = J::Opaque(246, [&[4u8, 2][..], &dec].concat());
        assert_eq!(
            apply(exact, &[diff(0, "$.d", Some(&dec_value))]).unwrap(),
            r#"{"d":12.30,"big":123456789012345678901234567890.5,"s":"\u00e9\n"}"#
        );
        assert!(apply("{\"a\":1} x", &[]).is_err());
        assert!(apply("[1,]", &[]).is_err());
        assert_eq!(
            apply(" [ 1 , {\"k\" : [ ] } ] ", &[]).unwrap(),
            r#"[1,{"k":[]}]"#
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes: Vec<u8>) {
            let _ = show(&bytes);
            let mut out = Vec::new();
            let _ = apply_json_diff(b"{}", &bytes, &mut out);
        }

        #[test]
        fn truncated_docs_error(cut in 0usize..200) {
            let v = o(&[("k", J::A(vec![J::S("abc".into()), J::I(1 << 40), J::D(2.5)]))]);
            let d = doc(&v, false);
            if cut < d.len() {
                prop_assert!(show(&d[..cut]).is_err() || cut == 0);
            }
        }
    }
}
