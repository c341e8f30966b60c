//! The rows of prepared XA transactions, kept until their outcome
//! (`xa_prepared`: one row per transaction; `xa_rows`: its changes in
//! binlog order, each in the binary form of [`crate::event::codec`]).
//!
//! A transaction is `open` while its rows are being written (a large XA
//! is written in chunks as it is read) and `prepared` once its XA PREPARE
//! was read; `open` ones are left by a stop in the middle of an XA's
//! event group, which is read again after a restart, and are discarded
//! at start. A prepared one is deleted once its outcome's position is
//! settled, in the same SQLite transaction that saves a checkpoint at or
//! past it ([`Store::save_checkpoint_settling_xa`]): a crash between the
//! two cannot lose the rows or keep them forever.

use rusqlite::params;

use super::{unix_millis, Checkpoint, Store, StoreError};

/// A prepared XA transaction held in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldXa {
    /// Its row id (`xa_prepared.id`).
    pub id: i64,
    /// The canonical xid (`X'…',X'…',formatID`).
    pub xid: String,
    /// Where its XA PREPARE was read (while `open`: where its group began).
    pub file: String,
    pub pos: u64,
    /// The GTID of its event group, when the server has GTIDs.
    pub gtid: Option<String>,
    /// How many changes are stored.
    pub rows: u64,
}

/// Where an XA transaction was read, for [`Store::xa_create`] and [`Store::xa_prepare`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct XaPlace<'a> {
    pub xid: &'a str,
    pub file: &'a str,
    pub pos: u64,
    pub gtid: Option<&'a str>,
}

impl Store {
    /// Opens (creating) a scratch database at `path` for holding XA rows
    /// during a replay: not fsync'd, as nothing in it outlives the replay.
    pub(crate) fn open_scratch(path: &std::path::Path) -> Result<Store, StoreError> {
        let s = Store::open_file(path)?;
        s.conn
            .execute_batch("PRAGMA synchronous=OFF")
            .map_err(s.err("cannot set synchronous=OFF"))?;
        Ok(s)
    }

    /// An error mapper that does not borrow the store (for use with a
    /// transaction open on it).
    fn mapper(&self, what: &str) -> impl Fn(rusqlite::Error) -> StoreError {
        let (what, path) = (what.to_string(), self.path.display().to_string());
        move |source| StoreError {
            what: what.clone(),
            path: path.clone(),
            source: Box::new(source),
        }
    }

    /// Deletes the transactions still `open` (their group is read again).
    pub(crate) fn xa_discard_open(&mut self) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM xa_prepared WHERE state = 'open'", [])
            .map_err(self.err("cannot discard unfinished XA rows"))
    }

    /// Starts an `open` transaction; returns its id.
    pub(crate) fn xa_create(&mut self, at: XaPlace<'_>) -> Result<i64, StoreError> {
        self.conn
            .query_row(
                "INSERT INTO xa_prepared (xid, state, file, pos, gtid, rows, created_at)
                 VALUES (?1, 'open', ?2, ?3, ?4, 0, ?5) RETURNING id",
                params![
                    at.xid,
                    at.file,
                    at.pos as i64,
                    at.gtid,
                    unix_millis(std::time::SystemTime::now())
                ],
                |r| r.get(0),
            )
            .map_err(self.err("cannot store the rows of an XA transaction"))
    }

    /// Appends `rows` (encoded changes, numbered from `first`) to transaction `id`.
    pub(crate) fn xa_append(
        &mut self,
        id: i64,
        first: u64,
        rows: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        let e = self.mapper("cannot store the rows of an XA transaction");
        let tx = self.conn.transaction().map_err(&e)?;
        append(&tx, id, first, rows).map_err(&e)?;
        tx.commit().map_err(&e)
    }

    /// Marks transaction `id` (created now when `None`) prepared at `at`,
    /// with `rows` appended (numbered from `first`), durably, in one SQLite
    /// transaction. Other prepared copies of the same xid whose id is not in
    /// `keep` are an earlier reading of this same PREPARE (before a restart
    /// that read it again) and are deleted. Returns the id.
    pub(crate) fn xa_prepare(
        &mut self,
        id: Option<i64>,
        at: XaPlace<'_>,
        first: u64,
        rows: &[Vec<u8>],
        keep: &dyn Fn(i64) -> bool,
    ) -> Result<i64, StoreError> {
        let e = self.mapper("cannot store the rows of a prepared XA transaction");
        let now = unix_millis(std::time::SystemTime::now());
        let tx = self.conn.transaction().map_err(&e)?;
        let result = (|| -> rusqlite::Result<i64> {
            let id = match id {
                Some(id) => id,
                None => tx.query_row(
                    "INSERT INTO xa_prepared (xid, state, file, pos, gtid, rows, created_at)
                     VALUES (?1, 'open', ?2, ?3, ?4, 0, ?5) RETURNING id",
                    params![at.xid, at.file, at.pos as i64, at.gtid, now],
                    |r| r.get(0),
                )?,
            };
            append(&tx, id, first, rows)?;
            let others: Vec<i64> = tx
                .prepare(
                    "SELECT id FROM xa_prepared WHERE xid = ?1 AND state = 'prepared' AND id <> ?2",
                )?
                .query_map(params![at.xid, id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for other in others.into_iter().filter(|o| !keep(*o)) {
                tx.execute("DELETE FROM xa_prepared WHERE id = ?1", [other])?;
            }
            tx.execute(
                "UPDATE xa_prepared SET state = 'prepared', file = ?2, pos = ?3, gtid = ?4 WHERE id = ?1",
                params![id, at.file, at.pos as i64, at.gtid],
            )?;
            Ok(id)
        })();
        let id = result.map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(id)
    }

    /// The oldest prepared transaction with this xid that `skip` does not
    /// exclude (those whose outcome was already read).
    pub(crate) fn xa_find(
        &self,
        xid: &str,
        skip: &dyn Fn(i64) -> bool,
    ) -> Result<Option<HeldXa>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, xid, file, pos, gtid, rows FROM xa_prepared
                 WHERE xid = ?1 AND state = 'prepared' ORDER BY id",
            )
            .map_err(self.err("cannot look up a prepared XA transaction"))?;
        let found = stmt
            .query_map([xid], row_to_held)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(self.err("cannot look up a prepared XA transaction"))?;
        Ok(found.into_iter().find(|h| !skip(h.id)))
    }

    /// Every prepared transaction held, oldest first.
    pub(crate) fn xa_held(&self) -> Result<Vec<HeldXa>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, xid, file, pos, gtid, rows FROM xa_prepared
                 WHERE state = 'prepared' ORDER BY id",
            )
            .map_err(self.err("cannot list the prepared XA transactions"))?;
        stmt.query_map([], row_to_held)
            .and_then(|rows| rows.collect())
            .map_err(self.err("cannot list the prepared XA transactions"))
    }

    /// Up to `limit` rows of transaction `id`, numbered from `from`, in order.
    pub(crate) fn xa_rows(
        &self,
        id: i64,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT n, change FROM xa_rows WHERE xa_id = ?1 AND n >= ?2 ORDER BY n LIMIT ?3",
            )
            .map_err(self.err("cannot read the rows of an XA transaction"))?;
        stmt.query_map(params![id, from as i64, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
        })
        .and_then(|rows| rows.collect())
        .map_err(self.err("cannot read the rows of an XA transaction"))
    }

    /// Deletes transactions (and their rows).
    pub(crate) fn xa_delete(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        let e = self.mapper("cannot delete the rows of an XA transaction");
        let tx = self.conn.transaction().map_err(&e)?;
        for id in ids {
            tx.execute("DELETE FROM xa_prepared WHERE id = ?1", [id])
                .map_err(&e)?;
        }
        tx.commit().map_err(&e)
    }

    /// Saves the checkpoint and deletes the XA transactions `settled` (whose
    /// outcome it is at or past) in one SQLite transaction.
    pub(crate) fn save_checkpoint_settling_xa(
        &mut self,
        c: &Checkpoint,
        settled: &[i64],
    ) -> Result<(), StoreError> {
        if settled.is_empty() {
            return self.save_checkpoint(c);
        }
        let what = "cannot write the checkpoint";
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(self.err(what))?;
        let result = self.save_checkpoint(c).and_then(|()| {
            for id in settled {
                self.conn
                    .execute("DELETE FROM xa_prepared WHERE id = ?1", [id])
                    .map_err(self.err("cannot delete the rows of an XA transaction"))?;
            }
            Ok(())
        });
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = self.conn.execute_batch(end).map_err(self.err(what));
        result.and(ended)
    }
}

fn append(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    first: u64,
    rows: &[Vec<u8>],
) -> rusqlite::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut ins =
        tx.prepare_cached("INSERT OR REPLACE INTO xa_rows (xa_id, n, change) VALUES (?1, ?2, ?3)")?;
    for (i, r) in rows.iter().enumerate() {
        ins.execute(params![id, (first + i as u64) as i64, r])?;
    }
    tx.execute(
        "UPDATE xa_prepared SET rows = ?2 WHERE id = ?1",
        params![id, (first + rows.len() as u64) as i64],
    )?;
    Ok(())
}

fn row_to_held(r: &rusqlite::Row<'_>) -> rusqlite::Result<HeldXa> {
    Ok(HeldXa {
        id: r.get(0)?,
        xid: r.get(1)?,
        file: r.get(2)?,
        pos: r.get::<_, i64>(3)? as u64,
        gtid: r.get(4)?,
        rows: r.get::<_, i64>(5)? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place<'a>(xid: &'a str, pos: u64) -> XaPlace<'a> {
        XaPlace {
            xid,
            file: "mysql-bin.000001",
            pos,
            gtid: Some("0-1-9"),
        }
    }

    fn checkpoint(pos: u64) -> Checkpoint {
        Checkpoint {
            file: "mysql-bin.000001".into(),
            pos,
            gtid: None,
            gtid_state: None,
            flavour: "mariadb".into(),
            server_id: 1,
            server_uuid: None,
            history: None,
            file_created: None,
            updated_at: 0,
        }
    }

    #[test]
    fn prepare_find_read_and_settle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(dir.path()).expect("open");
        // A large XA: a chunk while open, the rest at PREPARE.
        let id = s.xa_create(place("x", 100)).expect("create");
        s.xa_append(id, 0, &[b"r0".to_vec(), b"r1".to_vec()])
            .expect("append");
        assert!(
            s.xa_find("x", &|_| false).expect("find").is_none(),
            "open is not prepared"
        );
        let same = s
            .xa_prepare(Some(id), place("x", 200), 2, &[b"r2".to_vec()], &|_| false)
            .expect("prepare");
        assert_eq!(same, id);
        let held = s.xa_find("x", &|_| false).expect("find").expect("held");
        assert_eq!((held.pos, held.rows), (200, 3));
        let rows = s.xa_rows(id, 1, 10).expect("rows");
        assert_eq!(rows, vec![(1, b"r1".to_vec()), (2, b"r2".to_vec())]);
        assert!(s.xa_rows(id, 0, 1).expect("rows").len() == 1);
        // Read again after a restart: the old copy is replaced, unless kept.
        let again = s
            .xa_prepare(None, place("x", 200), 0, &[b"r0".to_vec()], &|_| false)
            .expect("again");
        assert_ne!(again, id);
        assert_eq!(s.xa_held().expect("held").len(), 1);
        let reused = s
            .xa_prepare(None, place("x", 900), 0, &[b"n".to_vec()], &|o| o == again)
            .expect("reuse");
        assert_eq!(s.xa_held().expect("held").len(), 2);
        assert_eq!(
            s.xa_find("x", &|i| i == again).expect("find").map(|h| h.id),
            Some(reused)
        );
        // Settled with a checkpoint: both in one transaction.
        s.save_checkpoint_settling_xa(&checkpoint(1000), &[again])
            .expect("settle");
        assert_eq!(s.checkpoint().expect("cp").map(|c| c.pos), Some(1000));
        assert_eq!(
            s.xa_held()
                .expect("held")
                .iter()
                .map(|h| h.id)
                .collect::<Vec<_>>(),
            vec![reused]
        );
        assert!(
            s.xa_rows(again, 0, 10).expect("rows").is_empty(),
            "rows cascade"
        );
        // Open ones are discarded at start; prepared ones stay.
        s.xa_create(place("y", 1)).expect("create");
        assert_eq!(s.xa_discard_open().expect("discard"), 1);
        s.xa_delete(&[reused]).expect("delete");
        assert!(s.xa_held().expect("held").is_empty());
    }
}
