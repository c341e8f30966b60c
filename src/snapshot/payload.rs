//! The webhook body of a `read` (one row of a snapshot) and its
//! deterministic id, for the pipeline to submit like a change.
//!
//! The body has the fields of an insert's (`primary_id`, `event`, `table`,
//! `data`, `timestamp`, `id`, `task_id`, `database`) with `"event":"read"`
//! and a `source` that names the snapshot and the chunk and the chunk's
//! high watermark (where the read stands in the stream's order). `data` is
//! written by the same [`write_row`] from the same JSON fragments an insert
//! of the row has (see `values`).

use crate::event::payload::{write_json_str, write_primary_id, write_row};
use crate::event::{time, RowImage, Table};

/// Where a read comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadSource<'a> {
    /// The snapshot's id in the state store.
    pub snapshot_id: i64,
    /// The chunk's number within its table (0, 1, …).
    pub chunk: u64,
    /// The chunk's high watermark: binlog file…
    pub file: &'a str,
    /// …and position.
    pub pos: u64,
}

/// The id of a read: `snapshot/<snapshot id>/<JSON array of database,
/// table and the row's key values>@<task>`, e.g.
/// `snapshot/3/["shop","orders",7]@orders_task`. The same row in the same
/// snapshot has the same id, whichever chunk (re)reads it; the JSON array
/// keeps `a.b`+`c` apart from `a`+`b.c`.
pub(crate) fn read_id(
    snapshot_id: i64,
    table: &Table,
    image: &RowImage,
    key: &[usize],
    task_id: &str,
) -> String {
    let mut id = Vec::with_capacity(48 + task_id.len());
    id.extend_from_slice(b"snapshot/");
    id.extend_from_slice(itoa::Buffer::new().format(snapshot_id).as_bytes());
    id.extend_from_slice(b"/[");
    write_json_str(&mut id, &table.database);
    id.push(b',');
    write_json_str(&mut id, &table.name);
    for &i in key {
        id.push(b',');
        id.extend_from_slice(image.get(i).unwrap_or(b"null"));
    }
    id.extend_from_slice(b"]@");
    id.extend_from_slice(task_id.as_bytes());
    String::from_utf8(id).unwrap_or_default()
}

/// Renders the body of a read of `image` for task `task_id`; `read_at` is
/// when the chunk was read (seconds since the epoch).
pub(crate) fn render_read(
    out: &mut Vec<u8>,
    table: &Table,
    image: &RowImage,
    task_id: &str,
    id: &str,
    source: &ReadSource<'_>,
    read_at: i64,
) {
    out.extend_from_slice(b"{\"primary_id\":");
    write_primary_id(out, table, image);
    out.extend_from_slice(b",\"event\":\"read\",\"table\":");
    write_json_str(out, &table.name);
    out.extend_from_slice(b",\"data\":");
    write_row(out, table, image);
    out.extend_from_slice(b",\"timestamp\":\"");
    time::write_rfc3339(out, read_at);
    out.extend_from_slice(b"\",\"id\":");
    write_json_str(out, id);
    out.extend_from_slice(b",\"task_id\":");
    write_json_str(out, task_id);
    out.extend_from_slice(b",\"database\":");
    write_json_str(out, &table.database);
    out.extend_from_slice(b",\"source\":{\"snapshot\":");
    out.extend_from_slice(itoa::Buffer::new().format(source.snapshot_id).as_bytes());
    out.extend_from_slice(b",\"chunk\":");
    out.extend_from_slice(itoa::Buffer::new().format(source.chunk).as_bytes());
    out.extend_from_slice(b",\"file\":");
    write_json_str(out, source.file);
    out.extend_from_slice(b",\"pos\":");
    out.extend_from_slice(itoa::Buffer::new().format(source.pos).as_bytes());
    out.extend_from_slice(b"}}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Column;

    fn table(db: &str, name: &str, pk: Vec<usize>) -> Table {
        Table {
            database: db.into(),
            name: name.into(),
            columns: vec![Column::new("id"), Column::new("name"), Column::new("org")],
            primary_key: pk,
        }
    }

    fn image(vals: &[&str]) -> RowImage {
        let mut r = RowImage::default();
        for v in vals {
            r.push_json(v.as_bytes());
        }
        r
    }

    #[test]
    fn a_read_is_an_insert_body_with_event_read_and_a_snapshot_source() {
        let t = table("shop", "users", vec![0]);
        let img = image(&["7", "\"Zoë \\\"Z\\\"\"", "null"]);
        let id = read_id(3, &t, &img, &[0], "user_task");
        assert_eq!(id, "snapshot/3/[\"shop\",\"users\",7]@user_task");
        let src = ReadSource {
            snapshot_id: 3,
            chunk: 12,
            file: "mysql-bin.000042",
            pos: 1234,
        };
        let mut body = Vec::new();
        render_read(&mut body, &t, &img, "user_task", &id, &src, 1_700_000_000);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v["event"], "read");
        assert_eq!(v["primary_id"], 7);
        assert_eq!(v["table"], "users");
        assert_eq!(v["database"], "shop");
        assert_eq!(v["task_id"], "user_task");
        assert_eq!(v["id"], id.as_str());
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(
            v["source"],
            serde_json::json!({"snapshot": 3, "chunk": 12, "file": "mysql-bin.000042", "pos": 1234})
        );
        // `data` is the very text an insert body has.
        let mut data = Vec::new();
        write_row(&mut data, &t, &img);
        let text = String::from_utf8(body).expect("utf8");
        assert!(
            text.contains(&format!(
                ",\"data\":{},",
                String::from_utf8(data).expect("utf8")
            )),
            "{text}"
        );
    }

    #[test]
    fn ids_are_deterministic_and_never_collide_across_names() {
        let img = image(&["1", "\"x\"", "2"]);
        let a = read_id(1, &table("a.b", "c", vec![]), &img, &[0], "t");
        let b = read_id(1, &table("a", "b.c", vec![]), &img, &[0], "t");
        assert_ne!(a, b);
        assert_eq!(a, read_id(1, &table("a.b", "c", vec![]), &img, &[0], "t"));
        assert_ne!(a, read_id(2, &table("a.b", "c", vec![]), &img, &[0], "t"));
        // A composite key, in key order.
        assert_eq!(
            read_id(1, &table("d", "t", vec![]), &img, &[2, 1], "t"),
            "snapshot/1/[\"d\",\"t\",2,\"x\"]@t"
        );
    }
}
