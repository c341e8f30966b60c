//! Column value decoder: turns one binlog row-image value into JSON text.
//!
//! Owns the per-column resolution ([`ColumnKind::resolve`], done once per
//! TABLE_MAP), the per-value entry point [`decode_value`], the error type
//! [`DecodeError`] (from the leaf module `bytes`, with the byte and JSON
//! helpers that the sibling decoders `charset`, `decimal`, `temporal`,
//! `jsonb` and `geometry` share).
//! The JSON contract is documented in `docs/types.md`.

use super::charset::{self, Charset};
use super::{decimal, geometry, jsonb, temporal};

pub(crate) use super::bytes::DecodeError;
pub(crate) use super::bytes::{
    be_uint, le_uint, length_prefixed, take_array, write_base64, write_escaped, write_f32,
    write_f64, write_i64, write_u64, Fault,
};

/// Everything known about one column, from TABLE_MAP type+metadata and
/// optional metadata (binlog_row_metadata=FULL) or information_schema.
#[derive(Debug, Clone, Default)]
pub struct ColumnInfo<'a> {
    /// Column type byte from TABLE_MAP (MYSQL_TYPE_*; 0xfe STRING may really
    /// be ENUM/SET: the real type is in meta byte 0).
    pub binlog_type: u8,
    /// That column's metadata bytes from TABLE_MAP (0..=2 bytes).
    pub meta: &'a [u8],
    pub unsigned: bool,
    /// Collation id for string columns; `None` = unknown (utf8mb4 is
    /// assumed; binary collation 63 = bytes).
    pub collation: Option<u16>,
    pub enum_labels: Option<Vec<String>>,
    pub set_labels: Option<Vec<String>>,
    /// MariaDB JSON columns look like LONGTEXT: their text is emitted as a
    /// JSON value when it is valid JSON, else as a string.
    pub is_json: bool,
    /// Schema says BINARY/VARBINARY/BLOB → base64.
    pub is_binary: bool,
}

/// How the bytes of a string-like column are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextMode {
    /// Character data in this charset → JSON string.
    Text(Charset),
    /// Binary data (collation 63) → base64 JSON string.
    Binary,
    /// MariaDB JSON (a LONGTEXT with a JSON check) → the JSON value itself.
    JsonText(Charset),
}

/// SQL flavour of a length-prefixed string column, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrType {
    Char,
    Varchar,
    Blob,
}

/// A column resolved once from its TABLE_MAP entry; cheap to match on per value.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnKind {
    /// TINYINT, SMALLINT, MEDIUMINT, INT, BIGINT: `bytes` is 1, 2, 3, 4 or 8.
    Int {
        bytes: u8,
        unsigned: bool,
    },
    Float,
    Double,
    /// NEWDECIMAL(precision, scale).
    Decimal {
        precision: u8,
        scale: u8,
    },
    /// BIT(bits), stored big-endian in `bytes` bytes.
    Bit {
        bits: u8,
        bytes: u8,
    },
    Year,
    /// DATE / NEWDATE (3 bytes).
    Date,
    /// Pre-5.6 TIME (3-byte integer HHMMSS).
    Time,
    Time2 {
        fsp: u8,
    },
    /// Pre-5.6 DATETIME (8-byte integer YYYYMMDDhhmmss).
    DateTime,
    DateTime2 {
        fsp: u8,
    },
    /// Pre-5.6 TIMESTAMP (4-byte little-endian seconds).
    Timestamp,
    Timestamp2 {
        fsp: u8,
    },
    /// CHAR/VARCHAR/TEXT/BINARY/VARBINARY/BLOB: a `len_bytes` little-endian
    /// length, then the bytes.
    Str {
        len_bytes: u8,
        mode: TextMode,
        sql: StrType,
        /// BINARY(n): the server strips trailing 0x00 bytes in the binlog;
        /// they are put back up to this many bytes so the value equals what
        /// SELECT returns. 0 for every other string type.
        pad_to: u16,
    },
    /// ENUM stored in `pack_len` (1 or 2) bytes; labels JSON-escaped.
    Enum {
        pack_len: u8,
        labels: Option<Box<[String]>>,
    },
    /// SET stored in `pack_len` (1..=8) bytes; labels JSON-escaped.
    Set {
        pack_len: u8,
        labels: Option<Box<[String]>>,
    },
    /// MySQL binary JSON.
    Json {
        len_bytes: u8,
    },
    Geometry {
        len_bytes: u8,
    },
    /// MySQL 9 VECTOR: little-endian f32 values.
    Vector {
        len_bytes: u8,
    },
}

/// Output options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeOptions {
    /// DECIMAL as an unquoted JSON number instead of a string.
    pub decimal_as_number: bool,
}

/// Name of a MYSQL_TYPE_* byte, for messages.
pub fn type_name(t: u8) -> &'static str {
    match t {
        0x00 => "DECIMAL",
        0x01 => "TINY",
        0x02 => "SHORT",
        0x03 => "LONG",
        0x04 => "FLOAT",
        0x05 => "DOUBLE",
        0x06 => "NULL",
        0x07 => "TIMESTAMP",
        0x08 => "LONGLONG",
        0x09 => "INT24",
        0x0a => "DATE",
        0x0b => "TIME",
        0x0c => "DATETIME",
        0x0d => "YEAR",
        0x0e => "NEWDATE",
        0x0f => "VARCHAR",
        0x10 => "BIT",
        0x11 => "TIMESTAMP2",
        0x12 => "DATETIME2",
        0x13 => "TIME2",
        0x14 => "TYPED_ARRAY",
        0xf2 => "VECTOR",
        0xf3 => "INVALID",
        0xf4 => "BOOL",
        0xf5 => "JSON",
        0xf6 => "NEWDECIMAL",
        0xf7 => "ENUM",
        0xf8 => "SET",
        0xf9 => "TINY_BLOB",
        0xfa => "MEDIUM_BLOB",
        0xfb => "LONG_BLOB",
        0xfc => "BLOB",
        0xfd => "VAR_STRING",
        0xfe => "STRING",
        0xff => "GEOMETRY",
        _ => "unknown",
    }
}

fn bad_meta(info: &ColumnInfo, detail: impl Into<String>) -> DecodeError {
    DecodeError::BadMetadata {
        type_byte: info.binlog_type,
        name: type_name(info.binlog_type),
        meta: info.meta.to_vec(),
        detail: detail.into(),
    }
}

fn meta_byte(info: &ColumnInfo, i: usize) -> Result<u8, DecodeError> {
    info.meta
        .get(i)
        .copied()
        .ok_or_else(|| bad_meta(info, format!("need {} metadata bytes", i + 1)))
}

fn fsp_meta(info: &ColumnInfo) -> Result<u8, DecodeError> {
    let fsp = meta_byte(info, 0)?;
    if fsp > 6 {
        return Err(bad_meta(info, format!("fractional precision {fsp} > 6")));
    }
    Ok(fsp)
}

fn len_bytes_meta(info: &ColumnInfo) -> Result<u8, DecodeError> {
    let n = meta_byte(info, 0)?;
    if !(1..=4).contains(&n) {
        return Err(bad_meta(
            info,
            format!("length-prefix size {n} not in 1..=4"),
        ));
    }
    Ok(n)
}

fn text_mode(info: &ColumnInfo) -> TextMode {
    if info.is_binary || info.collation == Some(charset::BINARY_COLLATION) {
        return TextMode::Binary;
    }
    let cs = match info.collation {
        Some(id) => charset::charset_for_collation(id),
        None => Charset::Utf8mb4,
    };
    if info.is_json {
        TextMode::JsonText(cs)
    } else {
        TextMode::Text(cs)
    }
}

/// ENUM/SET labels as JSON string bodies (escaped, without quotes): escaped
/// once here instead of once per value.
fn labels(v: &Option<Vec<String>>) -> Option<Box<[String]>> {
    v.as_ref().map(|l| {
        l.iter()
            .map(|label| {
                let mut body = Vec::with_capacity(label.len());
                write_escaped(&mut body, label);
                String::from_utf8(body).unwrap_or_else(|_| label.clone())
            })
            .collect()
    })
}

/// Resolves a BIT column: its width in bits (1..=64) from meta bytes 0-1.
fn resolve_bit(info: &ColumnInfo) -> Result<ColumnKind, DecodeError> {
    let rem = meta_byte(info, 0)?;
    let whole = meta_byte(info, 1)?;
    let bits = u16::from(whole) * 8 + u16::from(rem);
    if rem > 7 || bits == 0 || bits > 64 {
        return Err(bad_meta(info, format!("BIT width {bits} not in 1..=64")));
    }
    Ok(ColumnKind::Bit {
        bits: bits as u8,
        bytes: bits.div_ceil(8) as u8,
    })
}

/// Resolves a NEWDECIMAL column: its precision and scale from meta bytes 0-1.
fn resolve_decimal(info: &ColumnInfo) -> Result<ColumnKind, DecodeError> {
    let precision = meta_byte(info, 0)?;
    let scale = meta_byte(info, 1)?;
    if precision == 0 || scale > precision || usize::from(precision) > decimal::MAX_PRECISION {
        return Err(bad_meta(
            info,
            format!("DECIMAL({precision},{scale}) is not a valid precision/scale"),
        ));
    }
    Ok(ColumnKind::Decimal { precision, scale })
}

/// Resolves a VARCHAR/VAR_STRING column: a 1- or 2-byte length prefix by its maximum length.
fn resolve_varchar(info: &ColumnInfo) -> Result<ColumnKind, DecodeError> {
    let max = u16::from_le_bytes([meta_byte(info, 0)?, meta_byte(info, 1)?]);
    Ok(ColumnKind::Str {
        len_bytes: if max < 256 { 1 } else { 2 },
        mode: text_mode(info),
        sql: StrType::Varchar,
        pad_to: 0,
    })
}

/// Resolves a STRING/ENUM/SET column by the real type in its metadata: CHAR, ENUM or SET.
fn resolve_string(info: &ColumnInfo) -> Result<ColumnKind, DecodeError> {
    let (real_type, length) = string_real_type(info)?;
    match real_type {
        0xf7 => {
            if !(1..=2).contains(&length) {
                return Err(bad_meta(info, format!("ENUM pack length {length}")));
            }
            Ok(ColumnKind::Enum {
                pack_len: length as u8,
                labels: labels(&info.enum_labels),
            })
        }
        0xf8 => {
            if !(1..=8).contains(&length) {
                return Err(bad_meta(info, format!("SET pack length {length}")));
            }
            Ok(ColumnKind::Set {
                pack_len: length as u8,
                labels: labels(&info.set_labels),
            })
        }
        0xfe => {
            let mode = text_mode(info);
            Ok(ColumnKind::Str {
                len_bytes: if length < 256 { 1 } else { 2 },
                pad_to: if mode == TextMode::Binary { length } else { 0 },
                mode,
                sql: StrType::Char,
            })
        }
        other => Err(bad_meta(
            info,
            format!(
                "real type {other:#04x} ({}) is not CHAR, ENUM or SET",
                type_name(other)
            ),
        )),
    }
}

/// The real type and length of a STRING/ENUM/SET column, from meta bytes 0-1.
fn string_real_type(info: &ColumnInfo) -> Result<(u8, u16), DecodeError> {
    let byte0 = meta_byte(info, 0)?;
    let byte1 = meta_byte(info, 1)?;
    // See MySQL log_event.cc: a long CHAR() field (bug #37426)
    // keeps two length bits, inverted, in bits 4-5 of byte 0.
    Ok(if byte0 == 0 {
        (info.binlog_type, u16::from(byte1))
    } else if byte0 & 0x30 != 0x30 {
        (
            byte0 | 0x30,
            u16::from(byte1) | (u16::from((byte0 & 0x30) ^ 0x30) << 4),
        )
    } else {
        (byte0, u16::from(byte1))
    })
}

impl ColumnKind {
    /// Resolve a column's TABLE_MAP type and metadata (plus schema facts)
    /// once, so that per-value decoding does no metadata parsing.
    pub fn resolve(info: &ColumnInfo) -> Result<ColumnKind, DecodeError> {
        let unsigned = info.unsigned;
        let kind = match info.binlog_type {
            0x01 => ColumnKind::Int { bytes: 1, unsigned },
            0x02 => ColumnKind::Int { bytes: 2, unsigned },
            0x09 => ColumnKind::Int { bytes: 3, unsigned },
            0x03 => ColumnKind::Int { bytes: 4, unsigned },
            0x08 => ColumnKind::Int { bytes: 8, unsigned },
            0x04 => ColumnKind::Float,
            0x05 => ColumnKind::Double,
            0x0d => ColumnKind::Year,
            0x0a | 0x0e => ColumnKind::Date,
            0x0b => ColumnKind::Time,
            0x0c => ColumnKind::DateTime,
            0x07 => ColumnKind::Timestamp,
            0x11 => ColumnKind::Timestamp2 {
                fsp: fsp_meta(info)?,
            },
            0x12 => ColumnKind::DateTime2 {
                fsp: fsp_meta(info)?,
            },
            0x13 => ColumnKind::Time2 {
                fsp: fsp_meta(info)?,
            },
            0x10 => resolve_bit(info)?,
            0xf6 => resolve_decimal(info)?,
            0x0f | 0xfd => resolve_varchar(info)?,
            0xf9..=0xfc => ColumnKind::Str {
                len_bytes: len_bytes_meta(info)?,
                mode: text_mode(info),
                sql: StrType::Blob,
                pad_to: 0,
            },
            0xfe | 0xf7 | 0xf8 => resolve_string(info)?,
            0xf5 => ColumnKind::Json {
                len_bytes: len_bytes_meta(info)?,
            },
            0xff => ColumnKind::Geometry {
                len_bytes: len_bytes_meta(info)?,
            },
            0xf2 => ColumnKind::Vector {
                len_bytes: len_bytes_meta(info)?,
            },
            t => {
                return Err(DecodeError::Unsupported {
                    type_byte: t,
                    name: type_name(t),
                })
            }
        };
        Ok(kind)
    }

    /// A readable SQL-ish name of the column type, for error messages.
    pub fn describe(&self) -> String {
        match self {
            ColumnKind::Int { bytes, unsigned } => {
                let name = match bytes {
                    1 => "TINYINT",
                    2 => "SMALLINT",
                    3 => "MEDIUMINT",
                    4 => "INT",
                    _ => "BIGINT",
                };
                if *unsigned {
                    format!("{name} UNSIGNED")
                } else {
                    name.to_string()
                }
            }
            ColumnKind::Float => "FLOAT".into(),
            ColumnKind::Double => "DOUBLE".into(),
            ColumnKind::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
            ColumnKind::Bit { bits, .. } => format!("BIT({bits})"),
            ColumnKind::Year => "YEAR".into(),
            ColumnKind::Date => "DATE".into(),
            ColumnKind::Time => "TIME (pre-5.6 format)".into(),
            ColumnKind::Time2 { fsp } => format!("TIME({fsp})"),
            ColumnKind::DateTime => "DATETIME (pre-5.6 format)".into(),
            ColumnKind::DateTime2 { fsp } => format!("DATETIME({fsp})"),
            ColumnKind::Timestamp => "TIMESTAMP (pre-5.6 format)".into(),
            ColumnKind::Timestamp2 { fsp } => format!("TIMESTAMP({fsp})"),
            ColumnKind::Str {
                len_bytes,
                mode,
                sql,
                ..
            } => {
                let name = match (sql, mode) {
                    (StrType::Char, TextMode::Binary) => "BINARY",
                    (StrType::Char, _) => "CHAR",
                    (StrType::Varchar, TextMode::Binary) => "VARBINARY",
                    (StrType::Varchar, _) => "VARCHAR",
                    (StrType::Blob, TextMode::Binary) => "BLOB",
                    (StrType::Blob, TextMode::JsonText(_)) => "JSON (MariaDB text)",
                    (StrType::Blob, _) => "TEXT",
                };
                format!("{name} ({len_bytes}-byte length)")
            }
            ColumnKind::Enum { .. } => "ENUM".into(),
            ColumnKind::Set { .. } => "SET".into(),
            ColumnKind::Json { .. } => "JSON".into(),
            ColumnKind::Geometry { .. } => "GEOMETRY".into(),
            ColumnKind::Vector { .. } => "VECTOR".into(),
        }
    }
}

// --------------------------------------------------------------- decode ---

/// Decode one present, non-NULL value of a column of kind `kind` from the
/// start of `input`, append its JSON text to `out`, and return how many
/// input bytes it occupied. On error `out` is left as it was.
pub fn decode_value(
    kind: &ColumnKind,
    input: &[u8],
    out: &mut Vec<u8>,
    opts: &DecodeOptions,
) -> Result<usize, DecodeError> {
    let mark = out.len();
    decode_inner(kind, input, out, opts).map_err(|f| {
        out.truncate(mark);
        f.at(kind.describe())
    })
}

/// The JSON of a string-like value's bytes (without their length prefix):
/// base64 (BINARY padded to `pad_to`), text in its charset, or MariaDB
/// JSON text. Shared with the snapshot, which has the bytes without a prefix.
pub(crate) fn write_str_payload(mode: TextMode, pad_to: u16, payload: &[u8], out: &mut Vec<u8>) {
    match mode {
        TextMode::Binary if payload.len() < usize::from(pad_to) => {
            let mut padded = payload.to_vec();
            padded.resize(usize::from(pad_to), 0);
            write_base64(out, &padded)
        }
        TextMode::Binary => write_base64(out, payload),
        TextMode::Text(cs) => charset::write_text(cs, payload, out),
        TextMode::JsonText(cs) => charset::write_json_text(cs, payload, out),
    }
}

fn decode_inner(
    kind: &ColumnKind,
    input: &[u8],
    out: &mut Vec<u8>,
    opts: &DecodeOptions,
) -> Result<usize, Fault> {
    match kind {
        ColumnKind::Int { bytes, unsigned } => write_int(input, *bytes, *unsigned, out),
        ColumnKind::Float => {
            let b = take_array::<4>(input)?;
            write_f32(out, f32::from_le_bytes(b));
            Ok(4)
        }
        ColumnKind::Double => {
            let b = take_array::<8>(input)?;
            write_f64(out, f64::from_le_bytes(b));
            Ok(8)
        }
        ColumnKind::Decimal { precision, scale } => {
            decimal::write_decimal(input, *precision, *scale, !opts.decimal_as_number, out)
        }
        ColumnKind::Bit { bytes, .. } => {
            let n = usize::from(*bytes);
            write_u64(out, be_uint(input, n)?);
            Ok(n)
        }
        ColumnKind::Year => {
            let [y] = take_array::<1>(input)?;
            write_u64(out, if y == 0 { 0 } else { 1900 + u64::from(y) });
            Ok(1)
        }
        ColumnKind::Date => temporal::write_date(input, out),
        ColumnKind::Time => temporal::write_time_v1(input, out),
        ColumnKind::Time2 { fsp } => temporal::write_time2(input, *fsp, out),
        ColumnKind::DateTime => temporal::write_datetime_v1(input, out),
        ColumnKind::DateTime2 { fsp } => temporal::write_datetime2(input, *fsp, out),
        ColumnKind::Timestamp => temporal::write_timestamp_v1(input, out),
        ColumnKind::Timestamp2 { fsp } => temporal::write_timestamp2(input, *fsp, out),
        ColumnKind::Str {
            len_bytes,
            mode,
            pad_to,
            ..
        } => {
            let (payload, used) = length_prefixed(input, *len_bytes)?;
            write_str_payload(*mode, *pad_to, payload, out);
            Ok(used)
        }
        ColumnKind::Enum { pack_len, labels } => {
            write_enum(input, *pack_len, labels.as_deref(), out)
        }
        ColumnKind::Set { pack_len, labels } => write_set(input, *pack_len, labels.as_deref(), out),
        ColumnKind::Json { len_bytes } => {
            let (payload, used) = length_prefixed(input, *len_bytes)?;
            jsonb::write_jsonb(payload, out)?;
            Ok(used)
        }
        ColumnKind::Geometry { len_bytes } => {
            let (payload, used) = length_prefixed(input, *len_bytes)?;
            geometry::write_geometry(payload, out)?;
            Ok(used)
        }
        ColumnKind::Vector { len_bytes } => {
            let (payload, used) = length_prefixed(input, *len_bytes)?;
            write_vector(payload, out)?;
            Ok(used)
        }
    }
}

/// Writes an integer of `bytes` little-endian bytes (sign-extended unless `unsigned`).
#[inline]
fn write_int(input: &[u8], bytes: u8, unsigned: bool, out: &mut Vec<u8>) -> Result<usize, Fault> {
    let n = usize::from(bytes);
    let raw = le_uint(input, n)?;
    if unsigned {
        write_u64(out, raw);
    } else {
        // Sign-extend from n bytes (MEDIUMINT is 3).
        let shift = 64 - 8 * n as u32;
        write_i64(out, ((raw << shift) as i64) >> shift);
    }
    Ok(n)
}

/// Writes an ENUM value: its label as a JSON string, or its index without labels.
#[inline]
fn write_enum(
    input: &[u8],
    pack_len: u8,
    labels: Option<&[String]>,
    out: &mut Vec<u8>,
) -> Result<usize, Fault> {
    let n = usize::from(pack_len);
    let idx = le_uint(input, n)?;
    match labels {
        None => write_u64(out, idx),
        Some(_) if idx == 0 => out.extend_from_slice(b"\"\""),
        Some(l) => {
            let label = usize::try_from(idx - 1)
                .ok()
                .and_then(|i| l.get(i))
                .ok_or_else(|| {
                    Fault::bad(format!("index {idx} out of range for {} labels", l.len()))
                })?;
            out.push(b'"');
            out.extend_from_slice(label.as_bytes());
            out.push(b'"');
        }
    }
    Ok(n)
}

/// Writes a SET value: its labels as one comma-separated JSON string, or its bitmask without labels.
#[inline]
fn write_set(
    input: &[u8],
    pack_len: u8,
    labels: Option<&[String]>,
    out: &mut Vec<u8>,
) -> Result<usize, Fault> {
    let n = usize::from(pack_len);
    let mask = le_uint(input, n)?;
    match labels {
        None => write_u64(out, mask),
        Some(l) => write_set_labels(mask, l, out)?,
    }
    Ok(n)
}

/// Writes the labels of the bits set in `mask` as one comma-separated JSON string.
#[inline]
fn write_set_labels(mask: u64, l: &[String], out: &mut Vec<u8>) -> Result<(), Fault> {
    if l.len() < 64 && mask >> l.len() != 0 {
        return Err(Fault::bad(format!(
            "bitmask {mask:#x} has bits beyond its {} labels",
            l.len()
        )));
    }
    out.push(b'"');
    let mut first = true;
    for (i, label) in l.iter().enumerate().take(64) {
        if mask & (1u64 << i) != 0 {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(b'"');
    Ok(())
}

/// Writes a VECTOR payload (little-endian 4-byte floats) as a JSON array.
#[inline]
fn write_vector(payload: &[u8], out: &mut Vec<u8>) -> Result<(), Fault> {
    if payload.len() % 4 != 0 {
        return Err(Fault::bad(format!(
            "{} bytes is not a whole number of 4-byte floats",
            payload.len()
        )));
    }
    out.push(b'[');
    for (i, c) in payload.chunks_exact(4).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if let Ok(a) = <[u8; 4]>::try_from(c) {
            write_f32(out, f32::from_le_bytes(a));
        }
    }
    out.push(b']');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::bytes::write_padded;
    use base64::Engine as _;

    #[test]
    fn padded_numbers() {
        let pad = |v: u64, w: usize| {
            let mut out = Vec::new();
            write_padded(&mut out, v, w);
            String::from_utf8(out).expect("ascii")
        };
        for (v, w) in [
            (0, 0),
            (0, 1),
            (7, 2),
            (42, 2),
            (123, 2),
            (5, 4),
            (2026, 4),
            (32767, 4),
            (99, 6),
            (999_999, 6),
            (u64::MAX, 8),
        ] {
            assert_eq!(pad(v, w), format!("{v:0w$}"), "{v} width {w}");
        }
    }

    use super::*;
    use proptest::prelude::*;

    fn info(t: u8, meta: &[u8]) -> ColumnInfo<'_> {
        ColumnInfo {
            binlog_type: t,
            meta,
            ..ColumnInfo::default()
        }
    }

    fn kind(i: &ColumnInfo) -> ColumnKind {
        ColumnKind::resolve(i).unwrap()
    }

    /// Decode and check the consumed length equals the input (plus a
    /// trailing sentinel byte that belongs to the next column).
    fn dec_opts(k: &ColumnKind, bytes: &[u8], opts: DecodeOptions) -> String {
        let mut input = bytes.to_vec();
        input.push(0xAB);
        let mut out = b"prefix:".to_vec();
        let n = decode_value(k, &input, &mut out, &opts).unwrap();
        assert_eq!(n, bytes.len(), "consumed for {k:?}");
        let s = String::from_utf8(out).unwrap();
        s.strip_prefix("prefix:").unwrap().to_string()
    }

    fn dec(k: &ColumnKind, bytes: &[u8]) -> String {
        dec_opts(k, bytes, DecodeOptions::default())
    }

    fn int(t: u8, unsigned: bool) -> ColumnKind {
        kind(&ColumnInfo {
            unsigned,
            ..info(t, &[])
        })
    }

    #[test]
    fn integers() {
        let cases: &[(u8, bool, &[u8], &str)] = &[
            (0x01, false, &[0x80], "-128"),
            (0x01, false, &[0x7f], "127"),
            (0x01, true, &[0xff], "255"),
            (0x01, false, &[0xff], "-1"),
            (0x02, false, &[0x00, 0x80], "-32768"),
            (0x02, true, &[0xff, 0xff], "65535"),
            (0x09, false, &[0xfb, 0xff, 0xff], "-5"),
            (0x09, false, &[0x00, 0x00, 0x80], "-8388608"),
            (0x09, false, &[0xff, 0xff, 0x7f], "8388607"),
            (0x09, true, &[0xff, 0xff, 0xff], "16777215"),
            (0x09, true, &[0xfb, 0xff, 0xff], "16777211"),
            (0x03, false, &[0, 0, 0, 0x80], "-2147483648"),
            (0x03, true, &[0xff; 4], "4294967295"),
            // corpus minimal_row_metadata: INT UNSIGNED 3230202323
            (0x03, true, &3_230_202_323u32.to_le_bytes(), "3230202323"),
            (
                0x08,
                false,
                &[0, 0, 0, 0, 0, 0, 0, 0x80],
                "-9223372036854775808",
            ),
            (
                0x08,
                false,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                "9223372036854775807",
            ),
            (0x08, true, &[0xff; 8], "18446744073709551615"),
        ];
        for (t, u, b, want) in cases {
            assert_eq!(dec(&int(*t, *u), b), *want, "type {t:#x} unsigned {u}");
        }
    }

    #[test]
    fn floats() {
        let f = kind(&info(0x04, &[4]));
        assert_eq!(dec(&f, &1.1f32.to_le_bytes()), "1.1");
        assert_eq!(dec(&f, &4.0f32.to_le_bytes()), "4.0");
        assert_eq!(dec(&f, &(-0.000123f32).to_le_bytes()), "-0.000123");
        assert_eq!(dec(&f, &f32::NAN.to_le_bytes()), "null");
        assert_eq!(dec(&f, &f32::INFINITY.to_le_bytes()), "null");
        let d = kind(&info(0x05, &[8]));
        assert_eq!(dec(&d, &0.1f64.to_le_bytes()), "0.1");
        assert_eq!(
            dec(&d, &123_456_789.098_765_43_f64.to_le_bytes()),
            "123456789.09876543"
        );
        assert_eq!(dec(&d, &f64::NEG_INFINITY.to_le_bytes()), "null");
        let big = dec(&d, &1e300f64.to_le_bytes());
        assert_eq!(big.parse::<f64>().unwrap(), 1e300);
        serde_json::from_str::<f64>(&big).unwrap();
        let small = dec(&f, &1e-40f32.to_le_bytes());
        assert_eq!(small.parse::<f32>().unwrap(), 1e-40f32);
        serde_json::from_str::<f64>(&small).unwrap();
    }

    #[test]
    fn decimals() {
        use crate::source::decimal::tests::encode;
        let k = kind(&info(0xf6, &[10, 2]));
        assert_eq!(dec(&k, &encode("12.5", 10, 2)), "\"12.50\"");
        assert_eq!(dec(&k, &encode("0", 10, 2)), "\"0.00\"");
        assert_eq!(
            dec_opts(
                &k,
                &encode("-12.5", 10, 2),
                DecodeOptions {
                    decimal_as_number: true
                }
            ),
            "-12.50"
        );
        let k = kind(&info(0xf6, &[10, 4]));
        assert_eq!(dec(&k, &[128, 0, 3, 0, 0]), "\"3.0000\"");
        assert!(ColumnKind::resolve(&info(0xf6, &[2, 3])).is_err());
        assert!(ColumnKind::resolve(&info(0xf6, &[10])).is_err());
        assert!(ColumnKind::resolve(&info(0xf6, &[0, 0])).is_err());
        // The error names the type and the shortfall.
        let mut out = Vec::new();
        let e = decode_value(
            &kind(&info(0xf6, &[10, 2])),
            &[0x80, 0, 0],
            &mut out,
            &DecodeOptions::default(),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "DECIMAL(10,2): 3 bytes left, need 5");
        assert!(out.is_empty());
    }

    #[test]
    fn bits_and_year() {
        let b64 = kind(&info(0x10, &[0, 8]));
        assert_eq!(dec(&b64, &[0xff; 8]), "18446744073709551615");
        // corpus mysql_type_bit: BIT(3) = 0b100, BIT(8) = 0b100000
        assert_eq!(dec(&kind(&info(0x10, &[3, 0])), &[0b100]), "4");
        assert_eq!(dec(&kind(&info(0x10, &[0, 1])), &[0b100000]), "32");
        // BIT(28) big-endian in 4 bytes: b'0111101101010101011110000111'
        let v: u32 = 0b0111101101010101011110000111;
        assert_eq!(
            dec(&kind(&info(0x10, &[4, 3])), &v.to_be_bytes()),
            v.to_string()
        );
        assert_eq!(dec(&kind(&info(0x10, &[1, 1])), &[0x01, 0x00]), "256");
        assert!(ColumnKind::resolve(&info(0x10, &[1, 8])).is_err());
        assert!(ColumnKind::resolve(&info(0x10, &[0])).is_err());
        let y = kind(&info(0x0d, &[]));
        assert_eq!(dec(&y, &[0]), "0");
        assert_eq!(dec(&y, &[255]), "2155");
        assert_eq!(dec(&y, &[89]), "1989");
    }

    #[test]
    fn temporal_kinds() {
        use crate::source::temporal::tests::*;
        let k = kind(&info(0x12, &[3]));
        assert_eq!(
            dec(
                &k,
                &datetime2_bin(datetime_packed(1988, 11, 27, 14, 12, 13, 345_000), 3)
            ),
            "\"1988-11-27 14:12:13.345\""
        );
        let k = kind(&info(0x13, &[2]));
        assert_eq!(
            dec(&k, &time2_bin(time_packed(false, 15, 22, 33, 670_000), 2)),
            "\"15:22:33.67\""
        );
        let k = kind(&info(0x11, &[3]));
        assert_eq!(
            dec(&k, &timestamp2_bin(498_057_743, 567_000, 3)),
            "\"1985-10-13T13:22:23.567Z\""
        );
        let k = kind(&info(0x0a, &[]));
        assert_eq!(dec(&k, &[0, 0, 0]), "\"0000-00-00\"");
        assert!(ColumnKind::resolve(&info(0x12, &[7])).is_err());
        assert!(ColumnKind::resolve(&info(0x13, &[])).is_err());
    }

    fn text_info(t: u8, meta: &[u8], collation: Option<u16>) -> ColumnInfo<'_> {
        ColumnInfo {
            collation,
            ..info(t, meta)
        }
    }

    fn lp(len_bytes: usize, payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_le_bytes()[..len_bytes].to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn strings() {
        // VARCHAR(100) utf8mb4 → 1-byte length; VARCHAR(300) → 2 bytes.
        let v1 = kind(&text_info(0x0f, &[100, 0], Some(255)));
        assert_eq!(dec(&v1, &lp(1, "😀 ok".as_bytes())), "\"😀 ok\"");
        let v2 = kind(&text_info(0x0f, &[0x2c, 0x01], Some(255)));
        let long = "0123456789".repeat(30);
        assert_eq!(dec(&v2, &lp(2, long.as_bytes())), format!("\"{long}\""));
        // latin1 café
        let l1 = kind(&text_info(0x0f, &[20, 0], Some(8)));
        assert_eq!(dec(&l1, &lp(1, b"caf\xe9")), "\"café\"");
        // invalid utf8 keeps its bytes
        assert_eq!(dec(&v1, &lp(1, b"a\xffb")), "{\"base64\":\"Yf9i\"}");
        // TEXT / BLOB with 1..4 length bytes
        for n in 1u8..=4 {
            let t = kind(&text_info(0xfc, &[n], None));
            assert_eq!(dec(&t, &lp(n as usize, b"x\"y")), "\"x\\\"y\"");
            let b = kind(&text_info(0xfc, &[n], Some(63)));
            assert_eq!(dec(&b, &lp(n as usize, &[0, 1, 2])), "\"AAEC\"");
        }
        // binary 0x00..=0xff round trip through base64
        let all: Vec<u8> = (0..=255u8).collect();
        let b = kind(&ColumnInfo {
            is_binary: true,
            ..text_info(0x0f, &[0, 1], None)
        });
        let got = dec(&b, &lp(2, &all));
        let b64: String = serde_json::from_str(&got).unwrap();
        let engine = &base64::engine::general_purpose::STANDARD;
        assert_eq!(engine.decode(b64).unwrap(), all);
        // CHAR(10) latin1: STRING meta [0xfe, 10]
        let c = kind(&text_info(0xfe, &[0xfe, 10], Some(8)));
        assert_eq!(dec(&c, &lp(1, b"ab")), "\"ab\"");
        // CHAR(100) utf8mb4 = 400 bytes: long CHAR meta (bug #37426).
        let c = kind(&text_info(0xfe, &[0xfe ^ 0x10, 0x90], Some(255)));
        assert_eq!(
            c,
            ColumnKind::Str {
                len_bytes: 2,
                mode: TextMode::Text(Charset::Utf8mb4),
                sql: StrType::Char,
                pad_to: 0,
            }
        );
        assert_eq!(dec(&c, &lp(2, b"S")), "\"S\"");
        // BINARY(4) keeps its 0x00 padding
        let bin = kind(&text_info(0xfe, &[0xfe, 4], Some(63)));
        assert_eq!(dec(&bin, &lp(1, &[b'a', 0, 0, 0])), "\"YQAAAA==\"");
        // ... also when the server stripped trailing zeros from the binlog
        assert_eq!(dec(&bin, &lp(1, b"a")), "\"YQAAAA==\"");
        assert_eq!(dec(&bin, &lp(1, b"")), "\"AAAAAA==\"");
        // VARBINARY is never padded
        let vb = kind(&text_info(0x0f, &[4, 0], Some(63)));
        assert_eq!(dec(&vb, &lp(1, b"")), "\"\"");
        // MariaDB JSON text
        let j = kind(&ColumnInfo {
            is_json: true,
            ..text_info(0xfc, &[4], Some(45))
        });
        assert_eq!(dec(&j, &lp(4, b"{\"foo\":1}")), "{\"foo\":1}");
        assert_eq!(dec(&j, &lp(4, b"{bad")), "\"{bad\"");
        // length prefix beyond input
        let mut out = Vec::new();
        let e = decode_value(&v1, &[5, b'a'], &mut out, &DecodeOptions::default()).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::Truncated {
                    have: 2,
                    need: 6,
                    ..
                }
            ),
            "{e}"
        );
    }

    fn labels(l: &[&str]) -> Option<Vec<String>> {
        Some(l.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn enums_and_sets() {
        let e = kind(&ColumnInfo {
            enum_labels: labels(&["var1", "variant2", "foo"]),
            ..info(0xfe, &[0xf7, 1])
        });
        assert_eq!(dec(&e, &[1]), "\"var1\"");
        assert_eq!(dec(&e, &[2]), "\"variant2\"");
        assert_eq!(dec(&e, &[0]), "\"\"");
        let mut out = Vec::new();
        assert!(decode_value(&e, &[4], &mut out, &DecodeOptions::default()).is_err());
        let e2 = kind(&info(0xfe, &[0xf7, 2]));
        assert_eq!(dec(&e2, &[0x2c, 0x01]), "300");
        let e3 = kind(&info(0xf7, &[0xf7, 1]));
        assert_eq!(dec(&e3, &[3]), "3");

        let s = kind(&ColumnInfo {
            set_labels: labels(&["one", "two", "three", "four"]),
            ..info(0xfe, &[0xf8, 1])
        });
        // corpus mysql-enum-string-set: 0b0101 and 0b1010
        assert_eq!(dec(&s, &[0b0101]), "\"one,three\"");
        assert_eq!(dec(&s, &[0b1010]), "\"two,four\"");
        assert_eq!(dec(&s, &[0]), "\"\"");
        assert!(decode_value(&s, &[0b10000], &mut out, &DecodeOptions::default()).is_err());
        let s8 = kind(&info(0xfe, &[0xf8, 8]));
        assert_eq!(dec(&s8, &[0xff; 8]), "18446744073709551615");
        let s64 = kind(&ColumnInfo {
            set_labels: Some((0..64).map(|i| format!("l{i}")).collect()),
            ..info(0xfe, &[0xf8, 8])
        });
        let all = dec(&s64, &[0xff; 8]);
        assert!(all.starts_with("\"l0,l1,") && all.ends_with(",l63\""));
        assert!(ColumnKind::resolve(&info(0xfe, &[0xf8, 9])).is_err());
        assert!(ColumnKind::resolve(&info(0xfe, &[0xf7, 3])).is_err());

        // Labels are escaped (once, when the table map is resolved).
        let q = kind(&ColumnInfo {
            enum_labels: labels(&["say \"hi\"", "back\\slash"]),
            ..info(0xfe, &[0xf7, 1])
        });
        assert_eq!(dec(&q, &[1]), r#""say \"hi\"""#);
        assert_eq!(dec(&q, &[2]), r#""back\\slash""#);
        let qs = kind(&ColumnInfo {
            set_labels: labels(&["a\"", "b\n"]),
            ..info(0xfe, &[0xf8, 1])
        });
        assert_eq!(dec(&qs, &[0b11]), r#""a\",b\n""#);
    }

    #[test]
    fn json_geometry_vector() {
        use crate::source::jsonb::tests::{doc, J};
        let j = kind(&info(0xf5, &[4]));
        let d = doc(
            &J::O(vec![("k".into(), J::A(vec![J::I(1), J::S("ü".into())]))]),
            false,
        );
        assert_eq!(dec(&j, &lp(4, &d)), "{\"k\":[1,\"ü\"]}");
        assert_eq!(dec(&j, &lp(4, &[])), "null");

        let g = kind(&info(0xff, &[4]));
        let mut wkb = vec![0, 0, 0, 0, 1, 1, 0, 0, 0];
        wkb.extend_from_slice(&1.0f64.to_le_bytes());
        wkb.extend_from_slice(&2.0f64.to_le_bytes());
        assert_eq!(dec(&g, &lp(4, &wkb)), "\"POINT(1 2)\"");

        // corpus vector.binlog rows
        let v = kind(&info(0xf2, &[4]));
        assert_eq!(
            dec(
                &v,
                &lp(4, &[205, 204, 140, 63, 205, 204, 12, 64, 51, 51, 83, 64])
            ),
            "[1.1,2.2,3.3]"
        );
        assert_eq!(
            dec(&v, &lp(4, &[0, 0, 128, 63, 0, 0, 128, 191, 0, 0, 0, 0])),
            "[1.0,-1.0,0.0]"
        );
        assert_eq!(dec(&v, &lp(4, &[])), "[]");
        let mut out = Vec::new();
        assert!(decode_value(&v, &lp(4, &[0, 0, 0]), &mut out, &DecodeOptions::default()).is_err());
    }

    #[test]
    fn unsupported_and_bad_meta() {
        for t in [0x00, 0x06, 0x14, 0xf3, 0xf4, 0x20] {
            let e = ColumnKind::resolve(&info(t, &[1, 1])).unwrap_err();
            assert!(
                matches!(e, DecodeError::Unsupported { type_byte, .. } if type_byte == t),
                "{e}"
            );
            assert!(e.to_string().contains(&format!("{t:#04x}")));
        }
        // Every type with metadata rejects short metadata instead of panicking.
        for t in [
            0x0f, 0xfd, 0xfc, 0xfe, 0xf7, 0xf8, 0xf5, 0xff, 0xf2, 0x10, 0xf6, 0x11, 0x12, 0x13,
        ] {
            assert!(ColumnKind::resolve(&info(t, &[])).is_err(), "type {t:#x}");
        }
        assert!(ColumnKind::resolve(&info(0xfc, &[5])).is_err());
        assert!(ColumnKind::resolve(&info(0xfe, &[0xfd, 5])).is_err());
    }

    /// Every resolvable kind fed random bytes: never panics, and on success
    /// never claims more bytes than it was given.
    #[test]
    fn all_kinds_on_truncations() {
        let kinds = sample_kinds();
        let data: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
        for k in &kinds {
            for n in 0..data.len() {
                let mut out = Vec::new();
                if let Ok(used) = decode_value(k, &data[..n], &mut out, &DecodeOptions::default()) {
                    assert!(used <= n);
                } else {
                    assert!(out.is_empty());
                }
            }
        }
    }

    fn sample_kinds() -> Vec<ColumnKind> {
        let metas: &[(u8, &[u8])] = &[
            (0x01, &[]),
            (0x02, &[]),
            (0x09, &[]),
            (0x03, &[]),
            (0x08, &[]),
            (0x04, &[4]),
            (0x05, &[8]),
            (0x0d, &[]),
            (0x0a, &[]),
            (0x0b, &[]),
            (0x0c, &[]),
            (0x07, &[]),
            (0x11, &[3]),
            (0x12, &[6]),
            (0x13, &[4]),
            (0x10, &[3, 2]),
            (0xf6, &[65, 30]),
            (0x0f, &[0, 1]),
            (0xfc, &[2]),
            (0xfe, &[0xfe, 20]),
            (0xfe, &[0xf7, 2]),
            (0xfe, &[0xf8, 3]),
            (0xf5, &[1]),
            (0xff, &[1]),
            (0xf2, &[1]),
        ];
        metas.iter().map(|(t, m)| kind(&info(*t, m))).collect()
    }

    proptest! {
        #[test]
        fn ints_roundtrip(v: i64, bytes in prop::sample::select(vec![1usize, 2, 3, 4, 8]), unsigned: bool) {
            let t = match bytes { 1 => 0x01, 2 => 0x02, 3 => 0x09, 4 => 0x03, _ => 0x08 };
            let k = int(t, unsigned);
            let le = v.to_le_bytes();
            let raw = &le[..bytes];
            let bits = 8 * bytes as u32;
            let want = if unsigned {
                let m = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
                ((v as u64) & m).to_string()
            } else {
                let shift = 64 - bits;
                ((v << shift) >> shift).to_string()
            };
            prop_assert_eq!(dec(&k, raw), want);
        }

        #[test]
        fn random_input_never_panics(data: Vec<u8>, which in 0usize..25) {
            let kinds = sample_kinds();
            let k = &kinds[which % kinds.len()];
            let mut out = Vec::new();
            if let Ok(used) = decode_value(k, &data, &mut out, &DecodeOptions::default()) {
                prop_assert!(used <= data.len());
            }
        }

        #[test]
        fn strings_are_valid_json(s: String, coll in prop::sample::select(vec![8u16, 33, 45, 255, 63, 28])) {
            let k = kind(&text_info(0xfc, &[2], Some(coll)));
            let out = dec(&k, &lp(2, s.as_bytes()));
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            if matches!(coll, 33 | 45 | 255) {
                prop_assert_eq!(v, serde_json::Value::String(s));
            }
        }
    }
}
