//! A SELECT's values (binary protocol, `character_set_results = NULL`,
//! `time_zone = '+00:00'`) rendered by the binlog path's decoder: each
//! value is put in the form the binlog carries it in (integers little
//! endian, DECIMAL in `decimal2bin`, ENUM/SET as their number, strings with
//! their length prefix, …) and given to [`decode_value`], or for temporal
//! values to the renderers `decode_value` ends in. So a `read` of a row has
//! the same JSON text, byte for byte, as the `insert` of that row, for
//! every type of docs/types.md, with the same options.

use mysql_async::Value;

use crate::source::value::{decode_value, write_str_payload, ColumnKind, DecodeOptions};
use crate::source::{decimal, temporal};

/// Appends the JSON text of non-NULL `value` of a column of `kind` to `out`;
/// on error `out` is left as it was.
pub fn render(
    kind: &ColumnKind,
    value: &Value,
    out: &mut Vec<u8>,
    opts: &DecodeOptions,
) -> Result<(), String> {
    let mark = out.len();
    let r = render_inner(kind, value, out, opts);
    if r.is_err() {
        out.truncate(mark);
    }
    r
}

fn unexpected(kind: &ColumnKind, value: &Value) -> String {
    format!(
        "the server sent {} for a {} column",
        match value {
            Value::NULL => "NULL",
            Value::Bytes(_) => "bytes",
            Value::Int(_) => "a signed integer",
            Value::UInt(_) => "an unsigned integer",
            Value::Float(_) => "a FLOAT",
            Value::Double(_) => "a DOUBLE",
            Value::Date(..) => "a date",
            Value::Time(..) => "a time",
        },
        kind.describe()
    )
}

/// An integer value as 8 bytes little endian (two's complement); the
/// column's `n` low bytes are what the binlog has.
fn int_bytes(kind: &ColumnKind, value: &Value) -> Result<[u8; 8], String> {
    let raw: u64 = match value {
        Value::Int(i) => *i as u64,
        Value::UInt(u) => *u,
        // Integer expressions may come as text (ENUM+0 on some servers).
        Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| {
                s.parse::<u64>()
                    .ok()
                    .or_else(|| s.parse::<i64>().ok().map(|i| i as u64))
            })
            .ok_or_else(|| unexpected(kind, value))?,
        _ => return Err(unexpected(kind, value)),
    };
    Ok(raw.to_le_bytes())
}

fn decode(
    kind: &ColumnKind,
    bytes: &[u8],
    out: &mut Vec<u8>,
    opts: &DecodeOptions,
) -> Result<(), String> {
    decode_value(kind, bytes, out, opts)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `bytes` with a `len_bytes` little-endian length prefix.
fn length_prefixed(bytes: &[u8], len_bytes: u8) -> Result<Vec<u8>, String> {
    let lb = usize::from(len_bytes);
    let len = bytes.len() as u64;
    if lb < 8 && len >> (8 * lb) != 0 {
        return Err(format!(
            "a value of {len} bytes is longer than a {lb}-byte length allows"
        ));
    }
    let mut v = Vec::with_capacity(lb + bytes.len());
    v.extend_from_slice(&len.to_le_bytes()[..lb]);
    v.extend_from_slice(bytes);
    Ok(v)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// TIME_to_longlong_datetime_packed.
fn datetime_packed(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> i64 {
    let ymd = ((i64::from(y) * 13 + i64::from(mo)) << 5) | i64::from(d);
    let hms = (i64::from(h) << 12) | (i64::from(mi) << 6) | i64::from(s);
    (((ymd << 17) | hms) << 24) + i64::from(us)
}

fn render_temporal(
    kind: &ColumnKind,
    value: &Value,
    out: &mut Vec<u8>,
    opts: &DecodeOptions,
) -> Result<(), String> {
    let fsp_of = |k: &ColumnKind| match k {
        ColumnKind::Time2 { fsp }
        | ColumnKind::DateTime2 { fsp }
        | ColumnKind::Timestamp2 { fsp } => *fsp,
        _ => 0,
    };
    let fsp = fsp_of(kind);
    let bad = |f: crate::source::value::Fault| format!("{} value: {f:?}", kind.describe());
    match (kind, value) {
        (ColumnKind::Date, Value::Date(y, m, d, ..)) => {
            let v = u32::from(*d) | (u32::from(*m) << 5) | (u32::from(*y) << 9);
            decode(kind, &v.to_le_bytes()[..3], out, opts)
        }
        (
            ColumnKind::DateTime | ColumnKind::DateTime2 { .. },
            Value::Date(y, mo, d, h, mi, s, us),
        ) => {
            let packed = datetime_packed(*y, *mo, *d, *h, *mi, *s, *us);
            temporal::write_datetime_packed(out, packed, fsp, false).map_err(bad)
        }
        (
            ColumnKind::Timestamp | ColumnKind::Timestamp2 { .. },
            Value::Date(y, mo, d, h, mi, s, us),
        ) => {
            // time_zone is '+00:00': the value is the stored UTC instant.
            let secs = if (*y, *mo, *d) == (0, 0, 0) {
                0
            } else {
                days_from_civil(i64::from(*y), i64::from(*mo), i64::from(*d)) * 86_400
                    + i64::from(*h) * 3600
                    + i64::from(*mi) * 60
                    + i64::from(*s)
            };
            let secs =
                u64::try_from(secs).map_err(|_| format!("TIMESTAMP before 1970: {y}-{mo}-{d}"))?;
            if *us > 999_999 {
                return Err(format!("TIMESTAMP fraction {us} ≥ 1 s"));
            }
            temporal::write_unix(out, secs, *us, fsp);
            Ok(())
        }
        (ColumnKind::Time | ColumnKind::Time2 { .. }, Value::Time(neg, days, h, m, s, us)) => {
            let hours = i64::from(*days) * 24 + i64::from(*h);
            let hms = (hours << 12) | (i64::from(*m) << 6) | i64::from(*s);
            let v = (hms << 24) + i64::from(*us);
            temporal::write_time_packed(out, if *neg { -v } else { v }, fsp).map_err(bad)
        }
        _ => Err(unexpected(kind, value)),
    }
}

fn render_inner(
    kind: &ColumnKind,
    value: &Value,
    out: &mut Vec<u8>,
    opts: &DecodeOptions,
) -> Result<(), String> {
    match kind {
        ColumnKind::Int { bytes, .. } => {
            let le = int_bytes(kind, value)?;
            decode(kind, &le[..usize::from(*bytes).min(8)], out, opts)
        }
        ColumnKind::Float => match value {
            Value::Float(f) => decode(kind, &f.to_le_bytes(), out, opts),
            _ => Err(unexpected(kind, value)),
        },
        ColumnKind::Double => match value {
            Value::Double(f) => decode(kind, &f.to_le_bytes(), out, opts),
            _ => Err(unexpected(kind, value)),
        },
        ColumnKind::Decimal { precision, scale } => match value {
            Value::Bytes(b) => {
                let text = std::str::from_utf8(b).map_err(|_| unexpected(kind, value))?;
                let bin = decimal::encode_text(text, *precision, *scale)?;
                decode(kind, &bin, out, opts)
            }
            _ => Err(unexpected(kind, value)),
        },
        ColumnKind::Bit { bytes, .. } => {
            let n = usize::from(*bytes);
            let be: Vec<u8> = match value {
                Value::Bytes(b) if b.len() <= n => {
                    let mut v = vec![0u8; n - b.len()];
                    v.extend_from_slice(b);
                    v
                }
                Value::Int(_) | Value::UInt(_) => {
                    let mut be = int_bytes(kind, value)?;
                    be.reverse();
                    be[8 - n.min(8)..].to_vec()
                }
                _ => return Err(unexpected(kind, value)),
            };
            decode(kind, &be, out, opts)
        }
        ColumnKind::Year => {
            let y = match value {
                Value::Int(i) => *i,
                Value::UInt(u) => i64::try_from(*u).unwrap_or(-1),
                _ => return Err(unexpected(kind, value)),
            };
            let byte = match y {
                0 => 0u8,
                1901..=2155 => (y - 1900) as u8,
                _ => return Err(format!("YEAR {y} is out of range")),
            };
            decode(kind, &[byte], out, opts)
        }
        ColumnKind::Date
        | ColumnKind::Time
        | ColumnKind::Time2 { .. }
        | ColumnKind::DateTime
        | ColumnKind::DateTime2 { .. }
        | ColumnKind::Timestamp
        | ColumnKind::Timestamp2 { .. } => render_temporal(kind, value, out, opts),
        // Strings without the copy a length prefix would take.
        ColumnKind::Str {
            mode,
            pad_to,
            len_bytes,
            ..
        } => match value {
            Value::Bytes(b) => {
                let lb = u32::from(*len_bytes);
                if lb < 8 && (b.len() as u64) >> (8 * lb) != 0 {
                    return Err(format!(
                        "a value of {} bytes is longer than a {lb}-byte length allows",
                        b.len()
                    ));
                }
                write_str_payload(*mode, *pad_to, b, out);
                Ok(())
            }
            _ => Err(unexpected(kind, value)),
        },
        ColumnKind::Json { len_bytes }
        | ColumnKind::Geometry { len_bytes }
        | ColumnKind::Vector { len_bytes } => match value {
            Value::Bytes(b) => decode(kind, &length_prefixed(b, *len_bytes)?, out, opts),
            _ => Err(unexpected(kind, value)),
        },
        ColumnKind::Enum { pack_len, .. } | ColumnKind::Set { pack_len, .. } => {
            let le = int_bytes(kind, value)?;
            decode(kind, &le[..usize::from(*pack_len).min(8)], out, opts)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::value::{StrType, TextMode};

    fn r(kind: ColumnKind, v: Value) -> String {
        let mut out = Vec::new();
        render(&kind, &v, &mut out, &DecodeOptions::default()).expect("renders");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2038, 1, 19), 24_855);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn values_render_like_the_binlog() {
        let int = |bytes, unsigned| ColumnKind::Int { bytes, unsigned };
        assert_eq!(r(int(3, false), Value::Int(-5)), "-5");
        assert_eq!(
            r(int(8, true), Value::UInt(u64::MAX)),
            "18446744073709551615"
        );
        assert_eq!(r(int(1, true), Value::Int(255)), "255");
        assert_eq!(r(ColumnKind::Float, Value::Float(1.1)), "1.1");
        assert_eq!(
            r(
                ColumnKind::Decimal {
                    precision: 10,
                    scale: 2
                },
                Value::Bytes(b"-0.01".to_vec())
            ),
            "\"-0.01\""
        );
        assert_eq!(
            r(
                ColumnKind::Bit { bits: 9, bytes: 2 },
                Value::Bytes(vec![1, 2])
            ),
            "258"
        );
        assert_eq!(r(ColumnKind::Year, Value::Int(0)), "0");
        assert_eq!(r(ColumnKind::Year, Value::Int(2155)), "2155");
        assert_eq!(
            r(ColumnKind::Date, Value::Date(2024, 2, 29, 0, 0, 0, 0)),
            "\"2024-02-29\""
        );
        assert_eq!(
            r(ColumnKind::Date, Value::Date(0, 0, 0, 0, 0, 0, 0)),
            "\"0000-00-00\""
        );
        assert_eq!(
            r(
                ColumnKind::DateTime2 { fsp: 6 },
                Value::Date(2024, 2, 29, 23, 59, 59, 123_456)
            ),
            "\"2024-02-29 23:59:59.123456\""
        );
        assert_eq!(
            r(
                ColumnKind::Timestamp2 { fsp: 3 },
                Value::Date(2038, 1, 19, 3, 14, 7, 999_000)
            ),
            "\"2038-01-19T03:14:07.999Z\""
        );
        assert_eq!(
            r(
                ColumnKind::Timestamp2 { fsp: 0 },
                Value::Date(0, 0, 0, 0, 0, 0, 0)
            ),
            "\"0000-00-00 00:00:00\""
        );
        assert_eq!(
            r(
                ColumnKind::Time2 { fsp: 0 },
                Value::Time(true, 34, 22, 59, 59, 0)
            ),
            "\"-838:59:59\""
        );
        assert_eq!(
            r(
                ColumnKind::Time2 { fsp: 6 },
                Value::Time(true, 0, 0, 0, 1, 500_000)
            ),
            "\"-00:00:01.500000\""
        );
        let bin4 = ColumnKind::Str {
            len_bytes: 1,
            mode: TextMode::Binary,
            sql: StrType::Char,
            pad_to: 4,
        };
        assert_eq!(r(bin4, Value::Bytes(b"a".to_vec())), "\"YQAAAA==\"");
        let latin1 = ColumnKind::Str {
            len_bytes: 1,
            mode: TextMode::Text(crate::source::charset::charset_for_collation(8)),
            sql: StrType::Varchar,
            pad_to: 0,
        };
        assert_eq!(r(latin1, Value::Bytes(b"caf\xe9".to_vec())), "\"café\"");
        let en = ColumnKind::Enum {
            pack_len: 1,
            labels: Some(vec!["a".to_string(), "b".to_string()].into_boxed_slice()),
        };
        assert_eq!(r(en, Value::Int(2)), "\"b\"");
    }

    #[test]
    fn wrong_wire_types_are_errors_and_leave_nothing() {
        let mut out = b"x".to_vec();
        let err = render(
            &ColumnKind::Date,
            &Value::Int(3),
            &mut out,
            &DecodeOptions::default(),
        )
        .expect_err("an int is no date");
        assert!(err.contains("DATE"), "{err}");
        assert_eq!(out, b"x");
        let short = ColumnKind::Str {
            len_bytes: 1,
            mode: TextMode::Binary,
            sql: StrType::Varchar,
            pad_to: 0,
        };
        assert!(render(
            &short,
            &Value::Bytes(vec![0; 300]),
            &mut out,
            &DecodeOptions::default()
        )
        .is_err());
    }
}
