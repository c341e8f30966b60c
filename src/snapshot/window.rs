//! The watermark window, as pure logic (DBLog): a chunk was read between
//! the low watermark L and the high watermark H. Every change of the table
//! the stream carries in (L, H] is newer than (or as new as) what the chunk
//! may hold for its row, so every chunk row whose key such a change touches
//! (an insert's, a delete's, an update's old and new key) is dropped; the
//! others are emitted when the stream reaches H, before any later change.
//!
//! A change after H counts too when it is observed before the chunk is
//! emitted: the loop submits every change it observes, so such a change
//! (newer than the chunk's row) is delivered before the row and the row
//! would overwrite it. That happens when the stream is past H by the time
//! the chunk is handed over (the next chunk is read while the one before
//! waits for its H). Changes after H observed once the chunk is waiting
//! cannot be: the loop emits the chunk before the first event past H.
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
    pub(crate) fn of_image(image: &RowImage, key: &[usize]) -> Option<RowKey> {
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
///
/// In the running pipeline the window is opened ([`Window::open`]) before
/// the chunk's low watermark is taken, because the stream may pass L
/// while the chunk's SELECT runs: it records the keys the table's changes
/// touch from then on, with their positions, and keeps those after L once
/// the chunk's watermarks are known ([`Window::set_bounds`]).
#[derive(Debug, Clone)]
pub struct Window {
    /// The chunk's database.
    db: String,
    /// The chunk's table.
    table: String,
    /// The paging key's columns, in key order.
    key_names: Vec<String>,
    /// (L, H], once known.
    bounds: Option<(BinlogPos, BinlogPos)>,
    /// Keys touched after L.
    touched: HashSet<RowKey>,
    /// Before the bounds are known: every key touched, with its position.
    early: Vec<(BinlogPos, RowKey)>,
    /// Why the window cannot tell which rows are safe (a change after L
    /// whose key cannot be read).
    unknown: Option<String>,
    /// Before the bounds are known: such changes, with their positions.
    early_unknown: Vec<(BinlogPos, String)>,
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
        let mut w = Window::open(db, table, key_names);
        w.bounds = Some((low, high));
        w
    }

    /// A window whose watermarks are not known yet: it records what it
    /// observes until [`Window::set_bounds`].
    pub fn open(db: &str, table: &str, key_names: Vec<String>) -> Window {
        Window {
            db: db.to_string(),
            table: table.to_string(),
            key_names,
            bounds: None,
            touched: HashSet::new(),
            early: Vec::new(),
            unknown: None,
            early_unknown: Vec::new(),
        }
    }

    /// Sets the chunk's watermarks: of what was observed so far, the
    /// changes after `low` count.
    pub(crate) fn set_bounds(&mut self, low: BinlogPos, high: BinlogPos) {
        self.bounds = Some((low, high));
        for (pos, key) in std::mem::take(&mut self.early) {
            if self.counts(&pos) {
                self.touched.insert(key);
            }
        }
        for (pos, reason) in std::mem::take(&mut self.early_unknown) {
            if self.counts(&pos) {
                self.unknown = Some(reason);
            }
        }
    }

    /// Whether this window is over `db`.`table`.
    pub fn is_for(&self, db: &str, table: &str) -> bool {
        self.db == db && self.table == table
    }

    /// Whether a change at `pos` counts for the chunk: it is after the
    /// low watermark (false while the bounds are not known). Not only
    /// those up to the high watermark: every change observed is submitted
    /// before the chunk is emitted, and a change the loop takes in past H
    /// before the chunk is handed over (the next chunk is read while the
    /// one before waits, so the stream is often past H by then) is newer
    /// than the chunk's row and delivered before it.
    pub fn counts(&self, pos: &BinlogPos) -> bool {
        match &self.bounds {
            Some((low, _)) => low < pos,
            None => false,
        }
    }

    /// Whether the stream, at `pos`, has passed the high watermark: the
    /// chunk can be settled and emitted (false while it is not known).
    pub fn is_reached(&self, pos: &BinlogPos) -> bool {
        self.bounds.as_ref().is_some_and(|(_, high)| pos >= high)
    }

    /// The high watermark, once known.
    pub fn high(&self) -> Option<&BinlogPos> {
        self.bounds.as_ref().map(|(_, h)| h)
    }

    /// Takes note of one change of the stream at its own position (any
    /// table, any position: only this table's changes inside the window
    /// count).
    pub fn observe(&mut self, change: &Change) {
        let pos = BinlogPos::new(&change.source.file, change.source.pos);
        self.observe_at(change, pos);
    }

    /// Takes note of one change as if it stood at `pos` in the stream: the
    /// rows of an XA transaction count where its XA COMMIT is (where they
    /// became visible), not where it was prepared.
    pub(crate) fn observe_at(&mut self, change: &Change, pos: BinlogPos) {
        if *change.table.database != *self.db || *change.table.name != *self.table {
            return;
        }
        if self.bounds.is_some() && !self.counts(&pos) {
            return;
        }
        match self.keys_of(change) {
            Ok(keys) => {
                for k in keys {
                    match &self.bounds {
                        Some(_) => {
                            self.touched.insert(k);
                        }
                        None => self.early.push((pos.clone(), k)),
                    }
                }
            }
            Err(reason) => match &self.bounds {
                Some(_) => self.unknown = Some(reason),
                None => self.early_unknown.push((pos, reason)),
            },
        }
    }

    /// The keys a change touches (before and after image), or why they
    /// cannot be read.
    fn keys_of(&self, change: &Change) -> Result<Vec<RowKey>, String> {
        let idx: Option<Vec<usize>> = self
            .key_names
            .iter()
            .map(|k| change.table.columns.iter().position(|c| &c.name == k))
            .collect();
        let Some(idx) = idx else {
            return Err(format!(
                "a change at {}:{} has no column of the key ({}) of `{}`.`{}`",
                change.source.file,
                change.source.pos,
                self.key_names.join(", "),
                self.db,
                self.table
            ));
        };
        let lacks = || {
            format!(
                "a change at {}:{} of `{}`.`{}` lacks a key column in its row image",
                change.source.file, change.source.pos, self.db, self.table
            )
        };
        let before = change.before.as_ref();
        let mut keys = Vec::with_capacity(2);
        if let Some(b) = before {
            keys.push(RowKey::of_image(b, &idx).ok_or_else(lacks)?);
        }
        if let Some(a) = change.after.as_ref() {
            // An after image without a key column (binlog_row_image=MINIMAL:
            // the update did not change it) has the before image's value there.
            let mut out = Vec::new();
            for (n, &i) in idx.iter().enumerate() {
                if n > 0 {
                    out.push(0);
                }
                let v = a.get(i).or_else(|| before.and_then(|b| b.get(i)));
                out.extend_from_slice(v.ok_or_else(lacks)?);
            }
            keys.push(RowKey(out));
        }
        Ok(keys)
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
        // Key 3 at L: in the chunk's state. Key 4 after H: observed (so
        // submitted) before the chunk is emitted, newer than its row.
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
            vec![key(&["3"]), key(&["5"])]
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
    fn a_window_opened_before_its_watermarks_keeps_what_follows_the_low_one() {
        let t = table(&["id"], vec![0]);
        let mut w = Window::open("d", "t", vec!["id".into()]);
        let i = ChangeKind::Insert;
        assert!(!w.is_reached(&BinlogPos::new("bin.000009", 4)), "no H yet");
        // Seen while the chunk was read: one before L, one inside.
        w.observe(&change(&t, i, None, Some(&[Some("1")]), "bin.000001", 90));
        w.observe(&change(&t, i, None, Some(&[Some("2")]), "bin.000001", 150));
        // A key-less change before L does not matter either.
        w.observe(&change(&t, i, None, Some(&[None]), "bin.000001", 95));
        // Past H before the chunk is handed over (the loop ran ahead of
        // the reader): submitted before the chunk, so it counts.
        w.observe(&change(&t, i, None, Some(&[Some("5")]), "bin.000001", 250));
        w.set_bounds(
            BinlogPos::new("bin.000001", 100),
            BinlogPos::new("bin.000001", 200),
        );
        assert_eq!(w.high(), Some(&BinlogPos::new("bin.000001", 200)));
        // After the bounds: filtered as it comes (at or before L: not
        // counted); an XA row counts at its commit.
        w.observe(&change(&t, i, None, Some(&[Some("3")]), "bin.000001", 100));
        w.observe_at(
            &change(&t, i, None, Some(&[Some("4")]), "bin.000001", 50),
            BinlogPos::new("bin.000001", 180),
        );
        let rows = vec![
            key(&["1"]),
            key(&["2"]),
            key(&["3"]),
            key(&["4"]),
            key(&["5"]),
        ];
        assert_eq!(
            emitted(w.settle(rows, |r| r)),
            vec![key(&["1"]), key(&["3"])]
        );
        // A key-less change inside the window, seen early, still means: read again.
        let mut w = Window::open("d", "t", vec!["id".into()]);
        w.observe(&change(&t, i, None, Some(&[None]), "bin.000001", 150));
        w.set_bounds(
            BinlogPos::new("bin.000001", 100),
            BinlogPos::new("bin.000001", 200),
        );
        assert!(matches!(
            w.settle(vec![key(&["1"])], |r| r),
            Settled::Reread { .. }
        ));
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
