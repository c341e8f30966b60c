//! The webhook body of one change, in the Go pikachu's format plus added
//! fields: `primary_id`, `event`, `table`, `data` (insert/delete) or
//! `old_data` + `new_data` (update), `timestamp`; then `id`, `task_id`,
//! `database` and `source` {file, pos, gtid, row}.
//!
//! Bodies are written straight from the row images' JSON fragments into one
//! byte buffer; nothing is re-parsed.

use super::{time, Change, ChangeKind, RowImage, Table};

/// Writes `s` as a JSON string literal.
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    write_escaped(out, s);
    out.push(b'"');
}

/// The body of a JSON string (no quotes): `"`, `\\` and control characters escaped.
pub(crate) fn write_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len());
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Skip 8 bytes at a time while none of them needs escaping (most
        // text has nothing to escape).
        let end = (i + 8).min(bytes.len());
        if !needs_escape(padded_word(&bytes[i..end])) {
            i = end;
            continue;
        }
        for (j, &b) in bytes.iter().enumerate().take(end).skip(i) {
            let short: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0x00..=0x1f => b"",
                _ => continue,
            };
            out.extend_from_slice(&bytes[start..j]);
            if short.is_empty() {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            } else {
                out.extend_from_slice(short);
            }
            start = j + 1;
        }
        i = end;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// True when `bytes` is ASCII with nothing to escape in a JSON string:
/// such text is valid UTF-8 in every ASCII-compatible charset and can be
/// copied as is (checked 8 bytes at a time).
pub(crate) fn is_plain_ascii(bytes: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    bytes.chunks(8).all(|chunk| {
        let w = padded_word(chunk);
        w & HIGH == 0 && !needs_escape(w)
    })
}

/// Up to 8 bytes as one word, a short chunk padded with 'A' (a byte that
/// is ASCII and needs no escaping). A full chunk is one load; a short one
/// is copied byte by byte (no `memcpy` call).
fn padded_word(chunk: &[u8]) -> u64 {
    let mut word = [b'A'; 8];
    if chunk.len() == 8 {
        word.copy_from_slice(chunk);
    } else {
        for (w, &b) in word.iter_mut().zip(chunk) {
            *w = b;
        }
    }
    u64::from_le_bytes(word)
}

/// Whether any of the 8 bytes in `w` is a quote, a backslash or a control character
/// (below 0x20): the classic "has a zero byte" / "has a byte less than n"
/// word tricks, exact for "is there any".
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let below_0x20 = w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0;
    below_0x20 || has_zero(w ^ (ONES * u64::from(b'"'))) || has_zero(w ^ (ONES * u64::from(b'\\')))
}

/// Writes a row image as a JSON object `{"col":value,...}` (absent columns omitted).
pub fn write_row(out: &mut Vec<u8>, table: &Table, image: &RowImage) {
    out.push(b'{');
    let mut first = true;
    for (i, value) in image.iter() {
        let Some(col) = table.columns.get(i) else {
            continue;
        };
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(col.json_key());
        out.extend_from_slice(value);
    }
    out.push(b'}');
}

/// Writes the `primary_id` value: the key's value for a one-column key, an
/// object column→value for a composite key, `null` without a key.
pub(crate) fn write_primary_id(out: &mut Vec<u8>, table: &Table, image: &RowImage) {
    write_key_with(out, table, |i| image.get(i));
}

/// Writes the `primary_id` of `change`: each key column's value from
/// [`Change::key_value`], so that under `binlog_row_image=MINIMAL` (an
/// update's new image lacks the key columns it did not change, which the
/// old image has) the key is still there.
pub(crate) fn write_change_primary_id(out: &mut Vec<u8>, change: &Change) {
    write_key_with(out, &change.table, |i| change.key_value(i));
}

/// The `primary_id` forms, with column `i`'s JSON from `value(i)`.
fn write_key_with<'a>(out: &mut Vec<u8>, table: &Table, value: impl Fn(usize) -> Option<&'a [u8]>) {
    match table.primary_key.as_slice() {
        [] => out.extend_from_slice(b"null"),
        [one] => match value(*one) {
            Some(v) => out.extend_from_slice(v),
            None => out.extend_from_slice(b"null"),
        },
        many => {
            out.push(b'{');
            for (n, &i) in many.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                match table.columns.get(i) {
                    Some(col) => out.extend_from_slice(col.json_key()),
                    None => out.extend_from_slice(b"\"?\":"),
                }
                out.extend_from_slice(value(i).unwrap_or(b"null"));
            }
            out.push(b'}');
        }
    }
}

/// The deterministic id of a change for a task: the same change has the same
/// id after a restart or a replay. `<history>/<where>@<task_id>`: the binlog
/// history marker (the creation time of the oldest binlog file of the
/// history the checkpoint follows; it changes when the server's binlog is
/// reset, which restarts GTIDs and file names), then the GTID and the row's
/// index in its transaction when the server has GTIDs (stable across a
/// failover), else file:position of the rows event and the row's index in it.
pub fn change_id(change: &Change, task_id: &str, history: u32) -> String {
    // Written by hand: `format!` was 8% of a catch-up read's instructions.
    let s = &change.source;
    let mut n = itoa::Buffer::new();
    let mut id = String::with_capacity(60 + task_id.len());
    id.push_str(n.format(history));
    id.push('/');
    match &s.gtid {
        Some(gtid) => {
            id.push_str(gtid);
            id.push('#');
            id.push_str(n.format(s.row_in_trx));
        }
        None => {
            id.push_str(&s.file);
            id.push(':');
            id.push_str(n.format(s.pos));
            id.push('#');
            id.push_str(n.format(s.row));
        }
    }
    id.push('@');
    id.push_str(task_id);
    id
}

/// Renders the webhook body of `change` for task `task_id`.
pub fn render(out: &mut Vec<u8>, change: &Change, task_id: &str, id: &str) {
    let table = &change.table;
    out.extend_from_slice(b"{\"primary_id\":");
    write_change_primary_id(out, change);
    out.extend_from_slice(b",\"event\":\"");
    out.extend_from_slice(change.kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"table\":");
    write_json_str(out, &table.name);
    match change.kind {
        ChangeKind::Update => {
            out.extend_from_slice(b",\"old_data\":");
            write_image_or_null(out, table, change.before.as_ref());
            out.extend_from_slice(b",\"new_data\":");
            write_image_or_null(out, table, change.after.as_ref());
        }
        ChangeKind::Insert | ChangeKind::Delete => {
            out.extend_from_slice(b",\"data\":");
            write_image_or_null(out, table, change.key_image());
        }
    }
    out.extend_from_slice(b",\"timestamp\":\"");
    time::write_rfc3339(out, i64::from(change.timestamp));
    out.extend_from_slice(b"\",\"id\":");
    write_json_str(out, id);
    out.extend_from_slice(b",\"task_id\":");
    write_json_str(out, task_id);
    out.extend_from_slice(b",\"database\":");
    write_json_str(out, &table.database);
    out.extend_from_slice(b",\"source\":{\"file\":");
    write_json_str(out, &change.source.file);
    out.extend_from_slice(b",\"pos\":");
    out.extend_from_slice(itoa::Buffer::new().format(change.source.pos).as_bytes());
    if let Some(gtid) = &change.source.gtid {
        out.extend_from_slice(b",\"gtid\":");
        write_json_str(out, gtid);
    }
    out.extend_from_slice(b",\"row\":");
    out.extend_from_slice(itoa::Buffer::new().format(change.source.row).as_bytes());
    out.extend_from_slice(b"}}");
}

fn write_image_or_null(out: &mut Vec<u8>, table: &Table, image: Option<&RowImage>) {
    match image {
        Some(img) => write_row(out, table, img),
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ascii() {
        assert!(is_plain_ascii(b""));
        assert!(is_plain_ascii(b"user42@example.com and more text"));
        for bad in [
            &b"a\"b"[..],
            b"0123456789\\",
            b"tab\there",
            b"caf\xc3\xa9",
            b"\x7f\x80",
            b"\x00",
        ] {
            assert!(!is_plain_ascii(bad), "{bad:?}");
        }
        assert!(is_plain_ascii(b"\x7f"), "DEL needs no escape in JSON");
    }

    proptest::proptest! {
        /// The word-at-a-time escaper writes what serde_json writes, for any
        /// text (control characters, quotes and backslashes at any offset).
        #[test]
        fn escaping_matches_serde_json(s in "[\\x00-\\x7f\"\\\\é€😀]{0,40}") {
            let mut ours = Vec::new();
            write_json_str(&mut ours, &s);
            let theirs = serde_json::to_string(&s).expect("serialize");
            proptest::prop_assert_eq!(String::from_utf8(ours).expect("utf8"), theirs);
        }
    }
    use crate::event::{Column, SourcePosition};
    use std::sync::Arc;

    fn table(pk: Vec<usize>) -> Arc<Table> {
        Arc::new(Table {
            database: "shop".into(),
            name: "users".into(),
            columns: vec![Column::new("id"), Column::new("name"), Column::new("org")],
            primary_key: pk,
        })
    }

    fn image(vals: &[&str]) -> RowImage {
        let mut r = RowImage::default();
        for v in vals {
            r.push_json(v.as_bytes());
        }
        r
    }

    fn change(kind: ChangeKind, pk: Vec<usize>, gtid: Option<&str>) -> Change {
        let (before, after) = match kind {
            ChangeKind::Insert => (None, Some(image(&["1", "\"a\"", "7"]))),
            ChangeKind::Update => (
                Some(image(&["1", "\"a\"", "7"])),
                Some(image(&["1", "\"b\"", "7"])),
            ),
            ChangeKind::Delete => (Some(image(&["1", "\"b\"", "7"])), None),
        };
        Change {
            kind,
            table: table(pk),
            before,
            after,
            source: SourcePosition {
                file: "mysql-bin.000001".into(),
                pos: 1234,
                gtid: gtid.map(Into::into),
                row: 2,
                row_in_trx: 5,
            },
            timestamp: 1_672_574_400,
        }
    }

    fn render_value(c: &Change) -> serde_json::Value {
        let id = change_id(c, "t1", 1_700_000_000);
        let mut out = Vec::new();
        render(&mut out, c, "t1", &id);
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn insert_body_has_seed_fields_and_extras() {
        let v = render_value(&change(ChangeKind::Insert, vec![0], None));
        assert_eq!(
            v,
            serde_json::json!({
                "primary_id": 1, "event": "insert", "table": "users",
                "data": {"id": 1, "name": "a", "org": 7},
                "timestamp": "2023-01-01T12:00:00Z",
                "id": "1700000000/mysql-bin.000001:1234#2@t1", "task_id": "t1", "database": "shop",
                "source": {"file": "mysql-bin.000001", "pos": 1234, "row": 2}
            })
        );
    }

    #[test]
    fn update_and_delete_shapes() {
        let v = render_value(&change(ChangeKind::Update, vec![0], Some("0-1-9")));
        assert_eq!(v["old_data"]["name"], "a");
        assert_eq!(v["new_data"]["name"], "b");
        assert!(v.get("data").is_none());
        assert_eq!(v["id"], "1700000000/0-1-9#5@t1");
        assert_eq!(v["source"]["gtid"], "0-1-9");
        let v = render_value(&change(ChangeKind::Delete, vec![0], None));
        assert_eq!(v["data"]["name"], "b");
        assert!(v.get("old_data").is_none());
    }

    #[test]
    fn primary_id_forms() {
        let v = render_value(&change(ChangeKind::Insert, vec![], None));
        assert!(v["primary_id"].is_null());
        let v = render_value(&change(ChangeKind::Insert, vec![2, 0], None));
        assert_eq!(v["primary_id"], serde_json::json!({"org": 7, "id": 1}));
    }

    /// binlog_row_image=MINIMAL: the new image of an update has only the
    /// changed columns, the old one only the key.
    #[test]
    fn primary_id_falls_back_to_the_old_image() {
        let partial = |vals: &[Option<&str>]| {
            let mut r = RowImage::default();
            for v in vals {
                match v {
                    Some(v) => r.push_json(v.as_bytes()),
                    None => r.push_absent(),
                }
            }
            r
        };
        let mut c = change(ChangeKind::Update, vec![0], None);
        c.before = Some(partial(&[Some("1"), None, None]));
        c.after = Some(partial(&[None, Some("\"b\""), None]));
        assert_eq!(render_value(&c)["primary_id"], 1);
        // Composite key, one column changed: the new value and the old one.
        let mut c = change(ChangeKind::Update, vec![0, 2], None);
        c.before = Some(partial(&[Some("1"), None, Some("7")]));
        c.after = Some(partial(&[Some("3"), None, None]));
        assert_eq!(
            render_value(&c)["primary_id"],
            serde_json::json!({"id": 3, "org": 7})
        );
        // A key column in neither image stays null.
        c.before = Some(partial(&[Some("1"), None, None]));
        assert_eq!(
            render_value(&c)["primary_id"],
            serde_json::json!({"id": 3, "org": null})
        );
    }

    #[test]
    fn json_strings_escape_control_characters() {
        let mut out = Vec::new();
        write_json_str(&mut out, "a\"b\\c\n\u{1}é😀");
        let back: String = serde_json::from_slice(&out).expect("valid");
        assert_eq!(back, "a\"b\\c\n\u{1}é😀");
    }
}
