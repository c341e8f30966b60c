//! A task's durable backlog: the changes a task could not take in memory,
//! in binlog order, in their own SQLite file (`<state_dir>/backlog/<task>.db`)
//! so that one task's backlog never slows the state store or another task.
//!
//! Rows are appended in batches, one transaction each, with
//! `synchronous=FULL`: when [`Backlog::append`] returns, the rows survive a
//! crash or a power loss, and the changes count as settled for the
//! checkpoint. Rows are read back in rowid order (the order they were
//! appended) and deleted once delivered or dead-lettered.
//!
//! Why SQLite and not a segment-file log: the state store is SQLite
//! already (one dependency, one set of failure messages), a transaction of
//! a few thousand rows costs one fsync, and reading a task's oldest rows
//! and deleting them one by one (delivery is out of order across rows) is
//! what a B-tree does; a segment log would need its own index and
//! compaction for that. Spill and drain rates are in docs/benchmarks.md.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};

use super::{unix_millis, StoreError};

/// Folder of the backlog files, inside the state directory.
pub(crate) const BACKLOG_DIR: &str = "backlog";

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS rows (
        -- AUTOINCREMENT: a rowid is never used twice, also once the backlog
        -- was emptied (readers keep a cursor over them).
        rowid      INTEGER PRIMARY KEY AUTOINCREMENT,
        change_id  TEXT    NOT NULL,
        key1       INTEGER NOT NULL,
        key2       INTEGER,
        body       BLOB    NOT NULL,
        epoch      INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );";

/// One change to append.
#[derive(Debug, Clone)]
pub(crate) struct NewRow {
    /// The change id (`webhook-id`).
    pub change_id: std::sync::Arc<str>,
    /// The ordering keys (the second one of a key-changing update).
    pub keys: (u64, Option<u64>),
    /// The payload.
    pub body: bytes::Bytes,
}

/// One change read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    /// Its place in the backlog (increasing in append order).
    pub rowid: i64,
    /// The change id (`webhook-id`).
    pub change_id: String,
    /// The ordering keys.
    pub keys: (u64, Option<u64>),
    /// The payload.
    pub body: Vec<u8>,
    /// Which run of pikachu appended it (its start time, Unix ms): keys of
    /// rows from different runs are not compared (see `pipeline::lanes`).
    pub epoch: i64,
}

/// What is in a backlog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Extent {
    /// Rows.
    pub rows: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// When the oldest row was appended (Unix ms), if there is one.
    pub oldest: Option<i64>,
    /// The last rowid (0 when empty).
    pub last_rowid: i64,
}

/// An open backlog file.
#[derive(Debug)]
pub(crate) struct Backlog {
    /// The connection.
    conn: Connection,
    /// The file, for messages.
    path: PathBuf,
}

/// The backlog file of a task: its id with every character that is not a
/// letter, digit, `-` or `_` replaced, and a hash of the id so that two ids
/// that differ only there get different files.
pub(crate) fn file_of(state_dir: &Path, task_id: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let safe: String = task_id
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    task_id.hash(&mut h);
    let tag = h.finish() as u32;
    state_dir
        .join(BACKLOG_DIR)
        .join(format!("{safe}-{tag:08x}.db"))
}

impl Backlog {
    /// Opens (creating if needed) the backlog of `task_id`.
    pub(crate) fn open(state_dir: &Path, task_id: &str) -> Result<Backlog, StoreError> {
        let path = file_of(state_dir, task_id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError {
                what: format!("cannot create the backlog folder {}", dir.display()),
                path: path.display().to_string(),
                source: Box::new(e),
            })?;
        }
        let conn =
            Connection::open(&path).map_err(sql_err(&path, "cannot open the task's backlog"))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;",
        )
        .map_err(sql_err(&path, "cannot set up the task's backlog"))?;
        conn.execute_batch(SCHEMA)
            .map_err(sql_err(&path, "cannot create the task's backlog"))?;
        Ok(Backlog { conn, path })
    }

    /// Appends `rows` in one transaction; returns their rowids, in order.
    /// Durable when it returns.
    pub(crate) fn append(&mut self, rows: &[NewRow], epoch: i64) -> Result<Vec<i64>, StoreError> {
        let now = unix_millis(std::time::SystemTime::now());
        let tx = self
            .conn
            .transaction()
            .map_err(sql_err(&self.path, "cannot append to the task's backlog"))?;
        let mut ids = Vec::with_capacity(rows.len());
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO rows (change_id, key1, key2, body, epoch, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql_err(&self.path, "cannot append to the task's backlog"))?;
            for r in rows {
                st.execute(params![
                    &*r.change_id,
                    r.keys.0 as i64,
                    r.keys.1.map(|k| k as i64),
                    &r.body[..],
                    epoch,
                    now
                ])
                .map_err(sql_err(&self.path, "cannot append to the task's backlog"))?;
                ids.push(tx.last_insert_rowid());
            }
        }
        tx.commit()
            .map_err(sql_err(&self.path, "cannot append to the task's backlog"))?;
        Ok(ids)
    }

    /// Up to `limit` rows after `after`, in order.
    pub(crate) fn read(&self, after: i64, limit: usize) -> Result<Vec<Row>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT rowid, change_id, key1, key2, body, epoch FROM rows
                 WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            )
            .map_err(sql_err(&self.path, "cannot read the task's backlog"))?;
        let rows = st
            .query_map(params![after, limit as i64], |r| {
                Ok(Row {
                    rowid: r.get(0)?,
                    change_id: r.get(1)?,
                    keys: (
                        r.get::<_, i64>(2)? as u64,
                        r.get::<_, Option<i64>>(3)?.map(|k| k as u64),
                    ),
                    body: r.get(4)?,
                    epoch: r.get(5)?,
                })
            })
            .map_err(sql_err(&self.path, "cannot read the task's backlog"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(sql_err(&self.path, "cannot read the task's backlog"))
    }

    /// Deletes delivered (or dead-lettered) rows, in one transaction.
    pub(crate) fn delete(&mut self, rowids: &[i64]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction()
            .map_err(sql_err(&path, "cannot delete from the task's backlog"))?;
        {
            let mut st = tx
                .prepare_cached("DELETE FROM rows WHERE rowid = ?1")
                .map_err(sql_err(&path, "cannot delete from the task's backlog"))?;
            for id in rowids {
                st.execute([id])
                    .map_err(sql_err(&path, "cannot delete from the task's backlog"))?;
            }
        }
        tx.commit()
            .map_err(sql_err(&path, "cannot delete from the task's backlog"))
    }

    /// Rows, bytes and the oldest row's age.
    pub(crate) fn extent(&self) -> Result<Extent, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*), coalesce(sum(length(body)), 0), min(created_at),
                        coalesce(max(rowid), 0) FROM rows",
                [],
                |r| {
                    Ok(Extent {
                        rows: r.get::<_, i64>(0)? as u64,
                        bytes: r.get::<_, i64>(1)? as u64,
                        oldest: r.get(2)?,
                        last_rowid: r.get(3)?,
                    })
                },
            )
            .map_err(sql_err(&self.path, "cannot read the task's backlog"))
    }
}

/// A SQLite error of the backlog file at `path`, saying what was being done.
fn sql_err(path: &Path, what: &str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let what = what.to_string();
    let path = path.display().to_string();
    move |source| StoreError {
        what,
        path,
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, key: u64, body: &str) -> NewRow {
        NewRow {
            change_id: id.into(),
            keys: (key, None),
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    #[test]
    fn rows_come_back_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut b = Backlog::open(dir.path(), "orders/eu").expect("open");
        let ids = b
            .append(&[row("a", 1, "{\"n\":1}"), row("b", 2, "{\"n\":2}")], 7)
            .expect("append");
        let more = b.append(&[row("c", 1, "{\"n\":3}")], 7).expect("append");
        assert!(ids[0] < ids[1] && ids[1] < more[0]);
        drop(b);
        let mut b = Backlog::open(dir.path(), "orders/eu").expect("reopen");
        let all = b.read(0, 10).expect("read");
        let names: Vec<&str> = all.iter().map(|r| r.change_id.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(all[0].epoch, 7);
        assert_eq!(all[2].body, b"{\"n\":3}");
        assert_eq!(b.read(ids[0], 1).expect("read")[0].change_id, "b");
        let e = b.extent().expect("extent");
        assert_eq!((e.rows, e.bytes), (3, 21));
        b.delete(&[ids[1]]).expect("delete");
        let left: Vec<String> = b
            .read(0, 10)
            .expect("read")
            .into_iter()
            .map(|r| r.change_id)
            .collect();
        assert_eq!(left, ["a", "c"]);
    }

    #[test]
    fn rowids_keep_growing_after_the_backlog_was_emptied() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut b = Backlog::open(dir.path(), "t").expect("open");
        let first = b
            .append(&[row("a", 1, "{}"), row("b", 1, "{}")], 1)
            .expect("append");
        b.delete(&first).expect("delete");
        assert_eq!(b.extent().expect("extent").rows, 0);
        let next = b.append(&[row("c", 1, "{}")], 1).expect("append");
        assert!(next[0] > first[1], "{next:?} after {first:?}");
        assert_eq!(b.read(first[1], 10).expect("read").len(), 1);
    }

    #[test]
    fn task_ids_get_their_own_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = file_of(dir.path(), "a/b");
        let b = file_of(dir.path(), "a_b");
        assert_ne!(a, b);
        assert!(a.starts_with(dir.path().join(BACKLOG_DIR)));
        assert!(!a.file_name().expect("name").to_string_lossy().contains('/'));
    }
}
