//! Ordering keys: changes with the same key are delivered one at a time, in
//! binlog order; different keys go out in parallel.
//!
//! A key is a 64-bit hash of (task index, database, table, primary-key JSON
//! text of the row image). Two rows that happen to share a hash are merely
//! serialized together: a collision costs parallelism, never order.
//!
//! - A table without a primary key has one key per (task, table): all its
//!   changes are delivered one at a time, in binlog order (nothing else
//!   identifies "the same row").
//! - An UPDATE that changes the primary key has two keys, the old row's and
//!   the new row's, and waits for the earlier changes of both.
//! - When the new image lacks a key column (binlog_row_image=MINIMAL leaves
//!   unchanged columns out), the key did not change: one key.

use std::hash::{Hash, Hasher};

use crate::event::{Change, ChangeKind, RowImage, Table};

/// One key, or two for an UPDATE that changes the primary key (old, new).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderingKeys {
    first: u64,
    second: Option<u64>,
}

impl OrderingKeys {
    pub fn one(key: u64) -> Self {
        OrderingKeys {
            first: key,
            second: None,
        }
    }

    /// Two keys; one when they are equal.
    pub fn two(a: u64, b: u64) -> Self {
        OrderingKeys {
            first: a,
            second: (a != b).then_some(b),
        }
    }

    pub fn len(&self) -> usize {
        1 + usize::from(self.second.is_some())
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> {
        std::iter::once(self.first).chain(self.second)
    }
}

fn hasher(task: usize, table: &Table) -> std::collections::hash_map::DefaultHasher {
    // DefaultHasher::new() has fixed keys: the same input gives the same key
    // within a process, which is all ordering needs.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    task.hash(&mut h);
    table.database.hash(&mut h);
    table.name.hash(&mut h);
    h
}

/// The key of a row image, or None when the image lacks a key column.
fn image_key(task: usize, table: &Table, image: &RowImage, scratch: &mut Vec<u8>) -> Option<u64> {
    if table.primary_key.iter().any(|&i| image.get(i).is_none()) {
        return None;
    }
    scratch.clear();
    crate::event::payload::write_primary_id(scratch, table, image);
    let mut h = hasher(task, table);
    scratch.hash(&mut h);
    Some(h.finish())
}

/// The key of a table without a primary key (or a row without key values).
pub(crate) fn table_key(task: usize, table: &Table) -> u64 {
    let mut h = hasher(task, table);
    b"\0no-primary-key".hash(&mut h);
    h.finish()
}

/// The ordering key(s) of `change` for task number `task`.
pub fn ordering_keys(task: usize, change: &Change, scratch: &mut Vec<u8>) -> OrderingKeys {
    let table = &*change.table;
    if table.primary_key.is_empty() {
        return OrderingKeys::one(table_key(task, table));
    }
    let before = change
        .before
        .as_ref()
        .and_then(|img| image_key(task, table, img, scratch));
    let after = change
        .after
        .as_ref()
        .and_then(|img| image_key(task, table, img, scratch));
    match (change.kind, before, after) {
        (ChangeKind::Update, Some(b), Some(a)) => OrderingKeys::two(b, a),
        (_, Some(k), _) | (_, None, Some(k)) => OrderingKeys::one(k),
        (_, None, None) => OrderingKeys::one(table_key(task, table)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Column, SourcePosition};
    use std::sync::Arc;

    fn table(pk: Vec<usize>) -> Arc<Table> {
        Arc::new(Table {
            database: "db".into(),
            name: "t".into(),
            columns: vec![Column::new("id"), Column::new("v")],
            primary_key: pk,
        })
    }

    fn img(vals: &[Option<&str>]) -> RowImage {
        let mut r = RowImage::default();
        for v in vals {
            match v {
                Some(v) => r.push_json(v.as_bytes()),
                None => r.push_absent(),
            }
        }
        r
    }

    fn change(
        kind: ChangeKind,
        t: &Arc<Table>,
        before: Option<RowImage>,
        after: Option<RowImage>,
    ) -> Change {
        Change {
            kind,
            table: t.clone(),
            before,
            after,
            source: SourcePosition {
                file: "f".into(),
                pos: 4,
                gtid: None,
                row: 0,
                row_in_trx: 0,
            },
            timestamp: 0,
        }
    }

    #[test]
    fn same_row_same_key_across_kinds() {
        let t = table(vec![0]);
        let s = &mut Vec::new();
        let ins = ordering_keys(
            0,
            &change(
                ChangeKind::Insert,
                &t,
                None,
                Some(img(&[Some("1"), Some("2")])),
            ),
            s,
        );
        let upd = ordering_keys(
            0,
            &change(
                ChangeKind::Update,
                &t,
                Some(img(&[Some("1"), Some("2")])),
                Some(img(&[Some("1"), Some("3")])),
            ),
            s,
        );
        let del = ordering_keys(
            0,
            &change(
                ChangeKind::Delete,
                &t,
                Some(img(&[Some("1"), Some("3")])),
                None,
            ),
            s,
        );
        assert_eq!(ins, upd);
        assert_eq!(ins, del);
        assert_eq!(ins.len(), 1);
        // Another row, another task: other keys.
        let other = ordering_keys(
            0,
            &change(
                ChangeKind::Insert,
                &t,
                None,
                Some(img(&[Some("2"), Some("2")])),
            ),
            s,
        );
        assert_ne!(ins, other);
        let task1 = ordering_keys(
            1,
            &change(
                ChangeKind::Insert,
                &t,
                None,
                Some(img(&[Some("1"), Some("2")])),
            ),
            s,
        );
        assert_ne!(ins, task1);
    }

    #[test]
    fn key_change_has_both_keys() {
        let t = table(vec![0]);
        let s = &mut Vec::new();
        let k1 = ordering_keys(
            0,
            &change(ChangeKind::Insert, &t, None, Some(img(&[Some("1"), None]))),
            s,
        );
        let k2 = ordering_keys(
            0,
            &change(ChangeKind::Insert, &t, None, Some(img(&[Some("2"), None]))),
            s,
        );
        let moved = ordering_keys(
            0,
            &change(
                ChangeKind::Update,
                &t,
                Some(img(&[Some("1"), None])),
                Some(img(&[Some("2"), None])),
            ),
            s,
        );
        assert_eq!(moved.len(), 2);
        let keys: Vec<u64> = moved.iter().collect();
        assert_eq!(
            keys,
            vec![k1.iter().next().unwrap(), k2.iter().next().unwrap()]
        );
        // MINIMAL image: the key column absent from the new image = unchanged.
        let minimal = ordering_keys(
            0,
            &change(
                ChangeKind::Update,
                &t,
                Some(img(&[Some("1"), None])),
                Some(img(&[None, Some("9")])),
            ),
            s,
        );
        assert_eq!(minimal, k1);
    }

    #[test]
    fn table_without_key_is_one_key() {
        let t = table(vec![]);
        let s = &mut Vec::new();
        let a = ordering_keys(
            0,
            &change(ChangeKind::Insert, &t, None, Some(img(&[Some("1"), None]))),
            s,
        );
        let b = ordering_keys(
            0,
            &change(ChangeKind::Insert, &t, None, Some(img(&[Some("2"), None]))),
            s,
        );
        assert_eq!(a, b);
    }
}
