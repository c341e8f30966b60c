//! The watermark window, as pure logic (DBLog): a chunk was read between
//! the low watermark L and the high watermark H. Every change of the table
//! the stream carries in (L, H] is newer than (or as new as) what the chunk
//! may hold for its row, so every chunk row whose key such a change touches
//! (an insert's, a delete's, an update's old and new key) is dropped; the
//! others are emitted when the stream reaches H, before any later change.
//!
//! A change at exactly L is already in the chunk's state (L is the position
//! the snapshot corresponds to, or precedes), so it does not count; one at
//! exactly H does. A change whose key cannot be read (a key column absent
//! from its image, or a definition without the key's columns) makes the
//! window unable to tell which rows are safe: the chunk is read again
//! instead of guessing ([`Settled::Reread`]).

use std::collections::HashSet;

use crate::event::{Change, RowImage};
use crate::source::binlogs::file_number;

/// A binlog position, ordered across files by the file's sequence number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BinlogPos {
    /// The file's sequence number (`mysql-bin.000042` → 42).
    pub seq: u64,
    /// The offset in the file.
    pub pos: u64,
}

impl BinlogPos {
    /// The position `pos` of file `file`; a name without a numeric
    /// extension counts as file 0.
    pub fn new(file: &str, pos: u64) -> BinlogPos {
        BinlogPos {
            seq: file_number(file).unwrap_or(0),
            pos,
        }
    }
}

/// A row's key as the JSON text of its key columns, in key order, joined by
/// NUL (a byte JSON text never contains). The snapshot and the stream
/// render values with the same decoder, so the same row has the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey(pub Vec<u8>);

impl RowKey {
    /// The key of `image` for key column indexes `key`; `None` when one is
    /// absent from the image.
    pub fn of_image(image: &RowImage, key: &[usize]) -> Option<RowKey> {
        let mut out = Vec::new();
        for (n, &i) in key.iter().enumerate() {
            if n > 0 {
                out.push(0);
            }
            out.extend_from_slice(image.get(i)?);
        }
        Some(RowKey(out))
    }
}

/// What became of a chunk at the high watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled<R> {
    /// Emit these rows (in key order) now; `dropped` rows had newer changes.
    Emit {
        /// The rows to emit.
        rows: Vec<R>,
        /// How many were dropped.
        dropped: usize,
    },
    /// The window could not tell which rows are safe: read the chunk again.
    Reread {
        /// Why, for the log.
        reason: String,
    },
}

/// The changes the stream carried for one chunk's table between its watermarks.
#[derive(Debug, Clone)]
pub struct Window {
    db: String,
    table: String,
    key_names: Vec<String>,
    low: BinlogPos,
    high: BinlogPos,
    touched: HashSet<RowKey>,
    unknown: Option<String>,
}

impl Window {
    /// A window over (low, high] for `db`.`table`, whose paging key is the
    /// columns `key_names` (in key order).
    pub fn new(
        db: &str,
        table: &str,
        key_names: Vec<String>,
        low: BinlogPos,
        high: BinlogPos,
    ) -> Window {
        Window {
            db: db.to_string(),
            table: table.to_string(),
            key_names,
            low,
            high,
            touched: HashSet::new(),
            unknown: None,
        }
    }

    /// Whether a change at `pos` falls in the window.
    pub fn contains(&self, pos: &BinlogPos) -> bool {
        self.low < *pos && *pos <= self.high
    }

    /// Whether the stream, at `pos`, has passed the high watermark: the
    /// chunk can be settled and emitted.
    pub fn is_reached(&self, pos: &BinlogPos) -> bool {
        *pos >= self.high
    }

    /// Takes note of one change of the stream (any table, any position:
    /// only this table's changes inside the window count).
    pub fn observe(&mut self, change: &Change) {
        if *change.table.database != *self.db || *change.table.name != *self.table {
            return;
        }
        let pos = BinlogPos::new(&change.source.file, change.source.pos);
        if !self.contains(&pos) {
            return;
        }
        let idx: Option<Vec<usize>> = self
            .key_names
            .iter()
            .map(|k| change.table.columns.iter().position(|c| &c.name == k))
            .collect();
        let Some(idx) = idx else {
            self.unknown = Some(format!(
                "a change at {}:{} has no column of the key ({}) of `{}`.`{}`",
                change.source.file,
                change.source.pos,
                self.key_names.join(", "),
                self.db,
                self.table
            ));
            return;
        };
        let before = change.before.as_ref();
        // An after image without a key column (binlog_row_image=MINIMAL: the
        // update did not change it) has the before image's value there.
        let after = change.after.as_ref().map(|a| {
            let mut out = Vec::new();
            for (n, &i) in idx.iter().enumerate() {
                if n > 0 {
                    out.push(0);
                }
                out.extend_from_slice(a.get(i).or_else(|| before.and_then(|b| b.get(i)))?);
            }
            Some(RowKey(out))
        });
        let keys = [before.map(|b| RowKey::of_image(b, &idx)), after];
        for k in keys.into_iter().flatten() {
            match k {
                Some(k) => {
                    self.touched.insert(k);
                }
                None => {
                    self.unknown = Some(format!(
                        "a change at {}:{} of `{}`.`{}` lacks a key column in its row image",
                        change.source.file, change.source.pos, self.db, self.table
                    ))
                }
            }
        }
    }

    /// How many distinct keys the window's changes touched.
    pub fn touched(&self) -> usize {
        self.touched.len()
    }

    /// Settles the chunk's rows: drops those the window's changes touched.
    pub fn settle<R>(self, rows: Vec<R>, key: impl Fn(&R) -> &RowKey) -> Settled<R> {
        if let Some(reason) = self.unknown {
            return Settled::Reread { reason };
        }
        let before = rows.len();
        let rows: Vec<R> = rows
            .into_iter()
            .filter(|r| !self.touched.contains(key(r)))
            .collect();
        Settled::Emit {
            dropped: before - rows.len(),
            rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChangeKind, Column, SourcePosition, Table};
    use std::sync::Arc;

    fn table(cols: &[&str], key: Vec<usize>) -> Arc<Table> {
        Arc::new(Table {
            database: "d".into(),
            name: "t".into(),
            columns: cols.iter().map(|c| Column::new(*c)).collect(),
            primary_key: key,
        })
    }

    fn image(vals: &[Option<&str>]) -> RowImage {
        let mut img = RowImage::default();
        for v in vals {
            match v {
                Some(v) => img.push_json(v.as_bytes()),
                None => img.push_absent(),
            }
        }
        img
    }

    fn change(
        t: &Arc<Table>,
        kind: ChangeKind,
        before: Option<&[Option<&str>]>,
        after: Option<&[Option<&str>]>,
        file: &str,
        pos: u64,
    ) -> Change {
        Change {
            kind,
            table: t.clone(),
            before: before.map(image),
            after: after.map(image),
            source: SourcePosition {
                file: file.into(),
                pos,
                gtid: None,
                row: 0,
                row_in_trx: 0,
            },
            timestamp: 0,
        }
    }

    /// Chunk rows keyed by (a) or (a, b): the key text.
    fn key(parts: &[&str]) -> RowKey {
        RowKey(parts.join("\0").into_bytes())
    }

    fn window(names: &[&str]) -> Window {
        Window::new(
            "d",
            "t",
            names.iter().map(|s| s.to_string()).collect(),
            BinlogPos::new("bin.000001", 100),
            BinlogPos::new("bin.000002", 50),
        )
    }

    fn emitted(s: Settled<RowKey>) -> Vec<RowKey> {
        match s {
            Settled::Emit { rows, .. } => rows,
            Settled::Reread { reason } => panic!("reread: {reason}"),
        }
    }

    #[test]
    fn rows_changed_in_the_window_are_dropped() {
        let t = table(&["id", "v"], vec![0]);
        let mut w = window(&["id"]);
        let i = ChangeKind::Insert;
        w.observe(&change(
            &t,
            i,
            None,
            Some(&[Some("1"), Some("\"x\"")]),
            "bin.000001",
            150,
        ));
        w.observe(&change(
            &t,
            ChangeKind::Delete,
            Some(&[Some("2"), Some("null")]),
            None,
            "bin.000002",
            10,
        ));
        // Outside the window: before (at or below L) and after H.
        w.observe(&change(
            &t,
            i,
            None,
            Some(&[Some("3"), Some("1")]),
            "bin.000001",
            100,
        ));
        w.observe(&change(
            &t,
            i,
            None,
            Some(&[Some("4"), Some("1")]),
            "bin.000002",
            51,
        ));
        w.observe(&change(
            &t,
            i,
            None,
            Some(&[Some("4"), Some("1")]),
            "bin.000003",
            4,
        ));
        // Another table with the same key.
        let other = Arc::new(Table {
            name: "u".into(),
            ..(*t).clone()
        });
        w.observe(&change(
            &other,
            i,
            None,
            Some(&[Some("5"), Some("1")]),
            "bin.000001",
            200,
        ));
        let rows = vec![
            key(&["1"]),
            key(&["2"]),
            key(&["3"]),
            key(&["4"]),
            key(&["5"]),
        ];
        assert_eq!(
            emitted(w.settle(rows, |r| r)),
            vec![key(&["3"]), key(&["4"]), key(&["5"])]
        );
    }

    #[test]
    fn a_change_exactly_at_the_watermarks() {
        let t = table(&["id"], vec![0]);
        let mut w = window(&["id"]);
        let i = ChangeKind::Insert;
        w.observe(&change(&t, i, None, Some(&[Some("1")]), "bin.000001", 100)); // = L: in the chunk's state
        w.observe(&change(&t, i, None, Some(&[Some("2")]), "bin.000002", 50)); // = H: newer
        assert!(w.is_reached(&BinlogPos::new("bin.000002", 50)));
        assert!(!w.is_reached(&BinlogPos::new("bin.000002", 49)));
        assert!(w.is_reached(&BinlogPos::new("bin.000003", 4)));
        let rows = vec![key(&["1"]), key(&["2"])];
        assert_eq!(emitted(w.settle(rows, |r| r)), vec![key(&["1"])]);
    }

    #[test]
    fn an_update_that_changes_the_key_drops_both_keys() {
        let t = table(&["id", "v"], vec![0]);
        let mut w = window(&["id"]);
        w.observe(&change(
            &t,
            ChangeKind::Update,
            Some(&[Some("7"), Some("1")]),
            Some(&[Some("8"), Some("1")]),
            "bin.000001",
            300,
        ));
        assert_eq!(w.touched(), 2);
        let rows = vec![key(&["6"]), key(&["7"]), key(&["8"])];
        match w.settle(rows, |r| r) {
            Settled::Emit { rows, dropped } => {
                assert_eq!(rows, vec![key(&["6"])]);
                assert_eq!(dropped, 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn composite_keys_match_all_parts_by_name() {
        // The stream's table has the key columns in another place (and is
        // keyed by name, not position).
        let t = table(&["v", "b", "a"], vec![2, 1]);
        let mut w = window(&["a", "b"]);
        w.observe(&change(
            &t,
            ChangeKind::Update,
            Some(&[Some("0"), Some("\"x\""), Some("1")]),
            Some(&[Some("9"), Some("\"x\""), Some("1")]),
            "bin.000001",
            101,
        ));
        let rows = vec![
            key(&["1", "\"x\""]),
            key(&["1", "\"y\""]),
            key(&["\"x\"", "1"]),
        ];
        assert_eq!(
            emitted(w.settle(rows, |r| r)),
            vec![key(&["1", "\"y\""]), key(&["\"x\"", "1"])]
        );
    }

    #[test]
    fn an_unreadable_key_means_reading_the_chunk_again() {
        let t = table(&["id", "v"], vec![0]);
        // MINIMAL: the after image lacks the unchanged key; the before image has it.
        let mut w = window(&["id"]);
        w.observe(&change(
            &t,
            ChangeKind::Update,
            Some(&[Some("1"), None]),
            Some(&[None, Some("2")]),
            "bin.000001",
            200,
        ));
        assert_eq!(
            emitted(w.settle(vec![key(&["1"]), key(&["5"])], |r| r)),
            vec![key(&["5"])]
        );
        // A before image without the key column cannot be matched.
        let mut w = window(&["id"]);
        w.observe(&change(
            &t,
            ChangeKind::Delete,
            Some(&[None, Some("2")]),
            None,
            "bin.000001",
            200,
        ));
        assert!(matches!(
            w.settle(vec![key(&["5"])], |r| r),
            Settled::Reread { .. }
        ));
        let renamed = table(&["ident", "v"], vec![0]);
        let mut w = window(&["id"]);
        w.observe(&change(
            &renamed,
            ChangeKind::Insert,
            None,
            Some(&[Some("1"), Some("2")]),
            "bin.000001",
            200,
        ));
        match w.settle(vec![key(&["5"])], |r| r) {
            Settled::Reread { reason } => {
                assert!(reason.contains("no column of the key"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn positions_order_across_files() {
        assert!(BinlogPos::new("b.000002", 4) > BinlogPos::new("b.000001", 999_999));
        assert!(BinlogPos::new("b.000010", 4) > BinlogPos::new("b.000009", 4));
        assert_eq!(RowKey::of_image(&image(&[Some("1"), None]), &[1]), None);
    }
}
