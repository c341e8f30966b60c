//! The change model: one row change (insert, update or delete) of one table,
//! with its row images already rendered as JSON fragments, the table's column
//! names and primary key, and where it came from in the binlog.
//!
//! The source produces [`Change`]s, and a [`Commit`] at each transaction
//! end; routing and delivery only read them.
//! The webhook body is rendered by [`payload`].

pub(crate) mod codec;
pub(crate) mod payload;
pub(crate) mod time;

pub use payload::{change_id, render, write_row};

use std::sync::Arc;

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Insert => "insert",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
        }
    }
}

/// One column's name, with its JSON object key rendered once (`"name":`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    json_key: Box<[u8]>,
}

impl Column {
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let mut key = Vec::with_capacity(name.len() + 3);
        payload::write_json_str(&mut key, &name);
        key.push(b':');
        Column {
            name,
            json_key: key.into_boxed_slice(),
        }
    }

    /// `"name":` as JSON text.
    pub(crate) fn json_key(&self) -> &[u8] {
        &self.json_key
    }
}

/// A table as the change saw it: names of its time (before/after an ALTER
/// each change carries its own), and the primary key's column indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub database: Arc<str>,
    pub name: Arc<str>,
    pub columns: Vec<Column>,
    /// Indexes into `columns`, in key order; empty when the table has no key.
    pub primary_key: Vec<usize>,
}

/// The values of one row image (before or after), as JSON text fragments,
/// one per column in table order. A column can be absent (binlog_row_image
/// MINIMAL/NOBLOB), which is not the same as NULL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowImage {
    buf: Vec<u8>,
    /// End offset in `buf` of each column's fragment; `ABSENT` when the
    /// column is not in this image.
    ends: Vec<u32>,
}

const ABSENT: u32 = u32::MAX;

impl RowImage {
    pub fn with_capacity(columns: usize, bytes: usize) -> Self {
        RowImage {
            buf: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(columns),
        }
    }

    /// The buffer to write the next column's JSON fragment into; call
    /// [`RowImage::end_value`] after writing it.
    pub(crate) fn buf_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Marks the end of the fragment just written to [`RowImage::buf_mut`].
    pub(crate) fn end_value(&mut self) {
        self.ends.push(self.buf.len() as u32);
    }

    pub(crate) fn push_null(&mut self) {
        self.buf.extend_from_slice(b"null");
        self.end_value();
    }

    pub(crate) fn push_absent(&mut self) {
        self.ends.push(ABSENT);
    }

    /// Appends a ready JSON fragment.
    pub fn push_json(&mut self, json: &[u8]) {
        self.buf.extend_from_slice(json);
        self.end_value();
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Bytes of JSON text in all fragments together.
    pub(crate) fn byte_len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// JSON text of column `i`, `None` when absent from this image.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        if end == ABSENT {
            return None;
        }
        let start = self.ends[..i]
            .iter()
            .rev()
            .find(|&&e| e != ABSENT)
            .copied()
            .unwrap_or(0);
        self.buf.get(start as usize..end as usize)
    }

    /// Iterates over `(column index, JSON text)` of the present columns.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &[u8])> + '_ {
        let mut start = 0usize;
        self.ends.iter().enumerate().filter_map(move |(i, &end)| {
            if end == ABSENT {
                return None;
            }
            let s = start;
            start = end as usize;
            Some((i, &self.buf[s..end as usize]))
        })
    }

    /// Truncates to `columns` columns (used to drop a row that failed to decode).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }
}

/// Where a change was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePosition {
    /// Binlog file name.
    pub file: Arc<str>,
    /// End position of the rows event in that file.
    pub pos: u64,
    /// GTID of the transaction, when the server has GTIDs.
    pub gtid: Option<Arc<str>>,
    /// Index of the row within its rows event.
    pub row: u32,
    /// Index of the row within its transaction (stable across servers of a
    /// GTID topology; used for ids).
    pub row_in_trx: u64,
}

/// One row change.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: ChangeKind,
    pub table: Arc<Table>,
    /// Old row (update, delete).
    pub before: Option<RowImage>,
    /// New row (insert, update).
    pub after: Option<RowImage>,
    pub source: SourcePosition,
    /// Event timestamp from the binlog header, seconds since the epoch.
    pub timestamp: u32,
}

impl Change {
    /// The row image that identifies the row: the new one, or for a delete the old one.
    pub(crate) fn key_image(&self) -> Option<&RowImage> {
        self.after.as_ref().or(self.before.as_ref())
    }

    /// JSON text of column `i` for identifying the row: from the new image
    /// (the old one for a delete), else from the other image. With
    /// `binlog_row_image=MINIMAL` an update's new image lacks the unchanged
    /// key columns; the old image has them (and the key did not change).
    pub(crate) fn key_value(&self, i: usize) -> Option<&[u8]> {
        let after = self.after.as_ref().and_then(|r| r.get(i));
        after.or_else(|| self.before.as_ref()?.get(i))
    }

    /// JSON text of the primary key value(s) in `image` (see [`payload`]).
    pub fn primary_key_json(&self, image: &RowImage, out: &mut Vec<u8>) {
        payload::write_primary_id(out, &self.table, image);
    }
}

/// The end of a transaction: where to resume so that it is not read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The binlog file of the transaction end.
    pub file: Arc<str>,
    /// The position just past the transaction end in `file`.
    pub pos: u64,
    /// The GTID of the transaction, when the server has GTIDs.
    pub gtid: Option<Arc<str>>,
    /// MariaDB: the server's GTID state after this transaction (the last
    /// GTID of every replication domain, `d-s-n,d-s-n`), as far as the stream
    /// told it; resuming with it works on any server of the topology.
    pub gtid_state: Option<Arc<str>>,
    /// Binlog timestamp of the transaction end, seconds since the epoch.
    pub timestamp: u32,
    /// Creation time of `file` (the binlog timestamp of its format
    /// description event); 0 when the stream did not show it.
    pub file_created: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_image_get_skips_absent_columns() {
        let mut r = RowImage::default();
        r.push_json(b"1");
        r.push_absent();
        r.push_json(b"\"x\"");
        r.push_null();
        assert_eq!(r.len(), 4);
        assert_eq!(r.get(0), Some(&b"1"[..]));
        assert_eq!(r.get(1), None);
        assert_eq!(r.get(2), Some(&b"\"x\""[..]));
        assert_eq!(r.get(3), Some(&b"null"[..]));
        assert_eq!(r.get(4), None);
        let all: Vec<_> = r.iter().collect();
        assert_eq!(
            all,
            vec![(0, &b"1"[..]), (2, &b"\"x\""[..]), (3, &b"null"[..])]
        );
    }

    #[test]
    fn column_key_is_escaped() {
        assert_eq!(Column::new("a\"b").json_key(), br#""a\"b":"#);
    }
}
