//! The row loop: splits a rows event (WRITE/UPDATE/DELETE, v1 and v2, and
//! MariaDB's zlib-compressed variants) into row images, and decodes each
//! present, non-NULL column with the decoder the table map resolved for it,
//! writing JSON straight into the image's buffer.

use std::borrow::Cow;
use std::io::Read;

use super::jsonb;
use super::table_map::TableDecoder;
use super::value::{decode_value, ColumnKind, DecodeOptions};
use crate::event::{ChangeKind, RowImage};

/// The fixed part of a rows event.
#[derive(Debug)]
pub struct RowsHeader<'a> {
    pub table_id: u64,
    /// The event's flags (end of statement, ...): parsed so that the rest
    /// of the header is found; nothing needs them yet.
    #[allow(dead_code)]
    pub flags: u16,
    pub column_count: usize,
    /// Columns present in the before image (or the only image).
    pub present: &'a [u8],
    /// Columns present in the after image (updates only).
    pub present_after: Option<&'a [u8]>,
    /// The row data (decompressed for MariaDB compressed events).
    pub rows: Cow<'a, [u8]>,
}

/// Largest decompressed size we accept for one event (a corrupt length
/// must not make us allocate without bound).
const MAX_UNCOMPRESSED: usize = 1 << 30;

/// Decompresses a MariaDB compressed block: one header byte
/// (`0x80 | algorithm << 4 | length-bytes`), the uncompressed length
/// big-endian in that many bytes, then zlib data.
pub(crate) fn mariadb_uncompress(block: &[u8]) -> Result<Vec<u8>, String> {
    let Some(&h) = block.first() else {
        return Err("compressed block is empty".into());
    };
    if h & 0x80 == 0 {
        return Err(format!("compressed block has a bad header byte {h:#04x}"));
    }
    let alg = (h & 0x70) >> 4;
    if alg != 0 {
        return Err(format!(
            "compression algorithm {alg} is not known (only zlib, 0)"
        ));
    }
    let lenlen = usize::from(h & 0x07);
    if !(1..=4).contains(&lenlen) {
        return Err(format!("compressed block has a bad length size {lenlen}"));
    }
    let len_bytes = block
        .get(1..1 + lenlen)
        .ok_or("compressed block truncated in its length")?;
    let len = len_bytes
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    if len > MAX_UNCOMPRESSED {
        return Err(format!("compressed block claims {len} bytes uncompressed"));
    }
    let mut out = Vec::with_capacity(len);
    flate2::read::ZlibDecoder::new(&block[1 + lenlen..])
        .take(len as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("zlib data is corrupt: {e}"))?;
    if out.len() != len {
        return Err(format!(
            "zlib data decompressed to {} bytes, the header says {len}",
            out.len()
        ));
    }
    Ok(out)
}

fn take<'a>(buf: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
    if buf.len() < n {
        return Err(format!(
            "rows event truncated in {what}: need {n} bytes, {} left",
            buf.len()
        ));
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

fn le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// Reads a length-encoded integer.
pub fn lenenc(buf: &mut &[u8]) -> Result<u64, String> {
    let first = take(buf, 1, "a length")?[0];
    Ok(match first {
        0..=0xfa => u64::from(first),
        0xfc => le(take(buf, 2, "a length")?),
        0xfd => le(take(buf, 3, "a length")?),
        0xfe => le(take(buf, 8, "a length")?),
        _ => return Err(format!("bad length prefix {first:#04x}")),
    })
}

/// Parses the fixed part of a rows event body (post-header and bitmaps).
///
/// `table_id_len` is 6, or 4 for very old servers; `v2` for event types 30–32
/// and 39 (and MariaDB compressed events written as v2); `compressed` for
/// MariaDB's compressed rows events, whose row data is a compressed block.
pub(crate) fn parse_header(
    body: &[u8],
    table_id_len: usize,
    v2: bool,
    compressed: bool,
    kind: ChangeKind,
) -> Result<RowsHeader<'_>, String> {
    let mut buf = body;
    let table_id = le(take(&mut buf, table_id_len, "the table id")?);
    let flags = le(take(&mut buf, 2, "the flags")?) as u16;
    if v2 {
        let extra_len = le(take(&mut buf, 2, "the extra-data length")?) as usize;
        take(&mut buf, extra_len.saturating_sub(2), "the extra data")?;
    }
    let column_count = lenenc(&mut buf)? as usize;
    let bitmap_len = column_count.div_ceil(8);
    let present = take(&mut buf, bitmap_len, "the columns bitmap")?;
    let present_after = if kind == ChangeKind::Update {
        Some(take(
            &mut buf,
            bitmap_len,
            "the after-image columns bitmap",
        )?)
    } else {
        None
    };
    let rows = if compressed {
        Cow::Owned(mariadb_uncompress(buf)?)
    } else {
        Cow::Borrowed(buf)
    };
    Ok(RowsHeader {
        table_id,
        flags,
        column_count,
        present,
        present_after,
        rows,
    })
}

#[inline]
fn bit(bitmap: &[u8], i: usize) -> bool {
    bitmap.get(i / 8).is_some_and(|b| b >> (i % 8) & 1 == 1)
}

/// How the rows of an event are laid out and shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RowsMode {
    /// PARTIAL_UPDATE_ROWS: the after image starts with value options and
    /// may hold JSON columns as diffs against the before image.
    pub partial_json: bool,
    /// A JSON diff whose before value is missing is written as
    /// `{"json_diff":[…]}` (offline printing) instead of being an error.
    pub show_json_diffs: bool,
}

/// For the after image of a partial update: which JSON columns are diffs.
struct PartialJson<'a> {
    /// One bit per JSON column of the table, in table order.
    bits: &'a [u8],
    before: Option<&'a RowImage>,
    show_diffs: bool,
}

/// Decodes one row image starting at `*buf`, advancing it.
fn read_image(
    buf: &mut &[u8],
    present: &[u8],
    dec: &TableDecoder,
    opts: &DecodeOptions,
    partial: Option<&PartialJson<'_>>,
    hint: &mut usize,
) -> Result<RowImage, String> {
    let n = dec.kinds.len();
    let n_present = (0..n).filter(|&i| bit(present, i)).count();
    let nulls = take(buf, n_present.div_ceil(8), "a NULL bitmap")?;
    // Sized like the previous image of the event: one allocation per image.
    let mut img = RowImage::with_capacity(n, *hint);
    let mut k = 0usize; // index among present columns
    let mut json_index = 0usize; // index among the table's JSON columns
    for (i, kind) in dec.kinds.iter().enumerate() {
        let is_diff = match (kind, partial) {
            (ColumnKind::Json { .. }, Some(p)) => {
                json_index += 1;
                bit(p.bits, json_index - 1)
            }
            _ => false,
        };
        if !bit(present, i) {
            img.push_absent();
            continue;
        }
        let is_null = bit(nulls, k);
        k += 1;
        if is_null {
            img.push_null();
            continue;
        }
        let name = || {
            dec.table
                .columns
                .get(i)
                .map(|c| c.name.as_str())
                .unwrap_or("?")
                .to_string()
        };
        let used = if let (true, Some(p), ColumnKind::Json { len_bytes }) = (is_diff, partial, kind)
        {
            let before = p.before.and_then(|b| b.get(i)).filter(|v| *v != b"null");
            match before {
                Some(before) => {
                    let before = before.to_vec();
                    jsonb::apply_json_diff(&before, buf, img.buf_mut())
                        .map_err(|e| format!("column `{}` (#{}): {e}", name(), i + 1))?
                }
                None if p.show_diffs => write_json_diffs(buf, *len_bytes, img.buf_mut(), opts)
                    .map_err(|e| format!("column `{}` (#{}): JSON diff: {e}", name(), i + 1))?,
                None => {
                    return Err(format!(
                        "column `{}` (#{}): partial JSON update without the column's before image; set binlog_row_image=FULL (or binlog_row_value_options='') on the server",
                        name(),
                        i + 1
                    ))
                }
            }
        } else {
            decode_value(kind, buf, img.buf_mut(), opts)
                .map_err(|e| format!("column `{}` (#{}): {e}", name(), i + 1))?
        };
        if used > buf.len() {
            return Err(format!(
                "decoder for column #{} consumed more than the event holds",
                i + 1
            ));
        }
        *buf = &buf[used..];
        img.end_value();
    }
    *hint = img.byte_len() + 32;
    Ok(img)
}

/// Writes a partial JSON value (length, then diffs) as
/// `{"json_diff":[{"op":"replace","path":"$.a","value":…},…]}`.
fn write_json_diffs(
    input: &[u8],
    len_bytes: u8,
    out: &mut Vec<u8>,
    opts: &DecodeOptions,
) -> Result<usize, String> {
    let mark = out.len();
    let r = (|| {
        let mut buf = input;
        let n = usize::from(len_bytes);
        let total = le(take(&mut buf, n, "the JSON diff length")?) as usize;
        let mut diffs = take(&mut buf, total, "the JSON diffs")?;
        out.extend_from_slice(b"{\"json_diff\":[");
        let mut first = true;
        while !diffs.is_empty() {
            let op = take(&mut diffs, 1, "a JSON diff operation")?[0];
            let op_name = match op {
                0 => "replace",
                1 => "insert",
                2 => "remove",
                _ => return Err(format!("unknown JSON diff operation {op}")),
            };
            let plen = lenenc(&mut diffs)? as usize;
            let path = take(&mut diffs, plen, "a JSON diff path")?;
            let path = std::str::from_utf8(path).map_err(|_| "JSON diff path is not UTF-8")?;
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(b"{\"op\":\"");
            out.extend_from_slice(op_name.as_bytes());
            out.extend_from_slice(b"\",\"path\":");
            crate::event::payload::write_json_str(out, path);
            if op != 2 {
                let vlen = lenenc(&mut diffs)? as usize;
                let v = take(&mut diffs, vlen, "a JSON diff value")?;
                let mut framed = (v.len() as u32).to_le_bytes().to_vec();
                framed.extend_from_slice(v);
                out.extend_from_slice(b",\"value\":");
                decode_value(&ColumnKind::Json { len_bytes: 4 }, &framed, out, opts)
                    .map_err(|e| e.to_string())?;
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        Ok(n + total)
    })();
    if r.is_err() {
        out.truncate(mark);
    }
    r
}

/// Decodes every row of a rows event, calling `f(before, after)` for each.
#[cfg(test)]
fn decode_rows(
    kind: ChangeKind,
    hdr: &RowsHeader<'_>,
    dec: &TableDecoder,
    opts: &DecodeOptions,
    f: impl FnMut(Option<RowImage>, Option<RowImage>),
) -> Result<(), String> {
    decode_rows_ext(kind, hdr, dec, opts, RowsMode::default(), f)
}

/// [`decode_rows`] for PARTIAL_UPDATE_ROWS and offline printing (`mode`).
pub(crate) fn decode_rows_ext(
    kind: ChangeKind,
    hdr: &RowsHeader<'_>,
    dec: &TableDecoder,
    opts: &DecodeOptions,
    mode: RowsMode,
    mut f: impl FnMut(Option<RowImage>, Option<RowImage>),
) -> Result<(), String> {
    if hdr.column_count != dec.kinds.len() {
        return Err(format!(
            "rows event has {} columns but the table map of `{}`.`{}` has {}; refusing to emit shifted columns",
            hdr.column_count,
            dec.table.database,
            dec.table.name,
            dec.kinds.len()
        ));
    }
    let json_columns = dec
        .kinds
        .iter()
        .filter(|k| matches!(k, ColumnKind::Json { .. }))
        .count();
    let mut buf: &[u8] = &hdr.rows;
    let mut hint = 256;
    while !buf.is_empty() {
        // A row that takes no bytes (no column present) would repeat
        // forever over the rest of a corrupt event.
        let left = buf.len();
        match kind {
            ChangeKind::Insert => {
                let after = read_image(&mut buf, hdr.present, dec, opts, None, &mut hint)?;
                f(None, Some(after));
            }
            ChangeKind::Delete => {
                let before = read_image(&mut buf, hdr.present, dec, opts, None, &mut hint)?;
                f(Some(before), None);
            }
            ChangeKind::Update => {
                let before = read_image(&mut buf, hdr.present, dec, opts, None, &mut hint)?;
                let after_bitmap = hdr.present_after.unwrap_or(hdr.present);
                let after = if mode.partial_json {
                    // Shared image (WL#2955): value options, then for
                    // PARTIAL_JSON_UPDATES one bit per JSON column.
                    let options = lenenc(&mut buf)?;
                    let bits: &[u8] = if options & 1 != 0 {
                        take(
                            &mut buf,
                            json_columns.div_ceil(8),
                            "the partial JSON bitmap",
                        )?
                    } else {
                        &[]
                    };
                    let p = PartialJson {
                        bits,
                        before: Some(&before),
                        show_diffs: mode.show_json_diffs,
                    };
                    read_image(&mut buf, after_bitmap, dec, opts, Some(&p), &mut hint)?
                } else {
                    read_image(&mut buf, after_bitmap, dec, opts, None, &mut hint)?
                };
                f(Some(before), Some(after));
            }
        }
        if buf.len() == left {
            return Err(format!(
                "rows event has {left} bytes left that hold no row (no column present): corrupt"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_forms() {
        let mut b: &[u8] = &[0x05];
        assert_eq!(lenenc(&mut b), Ok(5));
        let mut b: &[u8] = &[0xfc, 0x34, 0x12];
        assert_eq!(lenenc(&mut b), Ok(0x1234));
        let mut b: &[u8] = &[0xfd, 1, 2, 3];
        assert_eq!(lenenc(&mut b), Ok(0x030201));
        let mut b: &[u8] = &[0xfc, 1];
        assert!(lenenc(&mut b).is_err());
        let mut b: &[u8] = &[0xff];
        assert!(lenenc(&mut b).is_err());
    }

    #[test]
    fn header_v1_and_v2() {
        // table id 0x010203040506, flags 1, 2 columns, bitmap 0b11
        let body = [6, 5, 4, 3, 2, 1, 1, 0, 2, 0b11, 0xaa];
        let h = parse_header(&body, 6, false, false, ChangeKind::Insert).expect("parses");
        assert_eq!(h.table_id, 0x010203040506);
        assert_eq!(h.flags, 1);
        assert_eq!(h.column_count, 2);
        assert_eq!(h.present, &[0b11]);
        assert_eq!(&*h.rows, &[0xaa]);
        // v2 with 2 bytes of extra data beyond the length field, update: two bitmaps
        let body = [1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 9, 9, 3, 0b101, 0b111];
        let h = parse_header(&body, 6, true, false, ChangeKind::Update).expect("parses");
        assert_eq!(h.column_count, 3);
        assert_eq!(h.present, &[0b101]);
        assert_eq!(h.present_after, Some(&[0b111][..]));
        assert!(h.rows.is_empty());
        assert!(parse_header(&body[..5], 6, true, false, ChangeKind::Update).is_err());
    }

    fn compress(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(data).expect("compress");
        let z = z.finish().expect("compress");
        let mut out = vec![0x80 | 2, (data.len() >> 8) as u8, data.len() as u8];
        out.extend_from_slice(&z);
        out
    }

    #[test]
    fn mariadb_blocks() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(mariadb_uncompress(&compress(&data)), Ok(data.clone()));
        // Wrong length in the header.
        let mut bad = compress(&data);
        bad[2] ^= 1;
        assert!(mariadb_uncompress(&bad).is_err());
        // Corrupt zlib data.
        let mut bad = compress(&data);
        let n = bad.len();
        bad[n - 3] ^= 0xff;
        assert!(mariadb_uncompress(&bad).is_err());
        // Unknown algorithm, no header bit, truncated.
        assert!(mariadb_uncompress(&[0x90 | 1, 5]).is_err());
        assert!(mariadb_uncompress(&[0x01, 5]).is_err());
        assert!(mariadb_uncompress(&[0x82, 5]).is_err());
        assert!(mariadb_uncompress(&[]).is_err());
        // Compressed rows header: the bitmaps stay plain, the rows are a block.
        let mut body = vec![1, 0, 0, 0, 0, 0, 0, 0, 2, 0b11];
        body.extend_from_slice(&compress(&[7, 7, 7]));
        let h = parse_header(&body, 6, false, true, ChangeKind::Insert).expect("parses");
        assert_eq!(&*h.rows, &[7, 7, 7]);
    }

    /// PARTIAL_UPDATE_ROWS: a JSON diff applied to the before image, and
    /// shown as diffs (or refused) when the before image lacks the column.
    #[test]
    fn partial_json_update() {
        use crate::event::{Column, Table};
        use std::sync::Arc;
        let dec = TableDecoder {
            table: Arc::new(Table {
                database: "d".into(),
                name: "t".into(),
                columns: vec![Column::new("id"), Column::new("j")],
                primary_key: vec![0],
            }),
            kinds: vec![
                ColumnKind::Int {
                    bytes: 4,
                    unsigned: false,
                },
                ColumnKind::Json { len_bytes: 4 },
            ],
        };
        // {"a":1} in MySQL binary JSON (small object, inline int16).
        let obj = [0u8, 1, 0, 12, 0, 11, 0, 1, 0, 5, 1, 0, b'a'];
        let mut before = vec![0u8]; // NULL bitmap
        before.extend_from_slice(&1i32.to_le_bytes());
        before.extend_from_slice(&(obj.len() as u32).to_le_bytes());
        before.extend_from_slice(&obj);
        // REPLACE $.a with int16 2.
        let diff = [0u8, 3, b'$', b'.', b'a', 3, 5, 2, 0];
        let mut after = vec![1u8, 0b1, 0]; // value options, partial bit of the (only) JSON column, NULL bitmap
        after.extend_from_slice(&1i32.to_le_bytes());
        after.extend_from_slice(&(diff.len() as u32).to_le_bytes());
        after.extend_from_slice(&diff);
        let rows: Vec<u8> = [before.clone(), after.clone()].concat();
        let hdr = RowsHeader {
            table_id: 1,
            flags: 0,
            column_count: 2,
            present: &[0b11],
            present_after: Some(&[0b11]),
            rows: Cow::Owned(rows),
        };
        let mode = RowsMode {
            partial_json: true,
            show_json_diffs: false,
        };
        let mut got = Vec::new();
        decode_rows_ext(
            ChangeKind::Update,
            &hdr,
            &dec,
            &DecodeOptions::default(),
            mode,
            |b, a| got.push((b, a)),
        )
        .expect("decodes");
        let (b, a) = &got[0];
        assert_eq!(b.as_ref().and_then(|i| i.get(1)), Some(&br#"{"a":1}"#[..]));
        assert_eq!(a.as_ref().and_then(|i| i.get(1)), Some(&br#"{"a":2}"#[..]));
        // Before image without the JSON column (MINIMAL): an error live, diffs offline.
        let mut before_min = vec![0u8];
        before_min.extend_from_slice(&1i32.to_le_bytes());
        let rows: Vec<u8> = [before_min, after].concat();
        let hdr = RowsHeader {
            present: &[0b01],
            rows: Cow::Owned(rows),
            ..hdr
        };
        let err = decode_rows_ext(
            ChangeKind::Update,
            &hdr,
            &dec,
            &DecodeOptions::default(),
            mode,
            |_, _| {},
        )
        .unwrap_err();
        assert!(err.contains("binlog_row_image=FULL"), "{err}");
        let mut got = Vec::new();
        let show = RowsMode {
            show_json_diffs: true,
            ..mode
        };
        decode_rows_ext(
            ChangeKind::Update,
            &hdr,
            &dec,
            &DecodeOptions::default(),
            show,
            |_, a| got.push(a),
        )
        .expect("decodes");
        assert_eq!(
            got[0].as_ref().and_then(|i| i.get(1)),
            Some(&br#"{"json_diff":[{"op":"replace","path":"$.a","value":2}]}"#[..])
        );
    }

    /// A rows event whose rows take no bytes is corrupt, not an endless loop.
    #[test]
    fn rows_without_columns_are_corrupt() {
        let dec = TableDecoder {
            table: std::sync::Arc::new(crate::event::Table {
                database: "d".into(),
                name: "t".into(),
                columns: vec![],
                primary_key: vec![],
            }),
            kinds: vec![],
        };
        let hdr = RowsHeader {
            table_id: 1,
            flags: 0,
            column_count: 0,
            present: &[],
            present_after: None,
            rows: Cow::Borrowed(&[1, 2, 3]),
        };
        let r = decode_rows(
            ChangeKind::Insert,
            &hdr,
            &dec,
            &DecodeOptions::default(),
            |_, _| {},
        );
        assert!(r.unwrap_err().contains("corrupt"));
    }
}
