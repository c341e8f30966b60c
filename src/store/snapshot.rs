//! Snapshot requests and their progress (migration 6): `pikachu snapshot
//! start` writes a request, the running process (or the next start) takes
//! it up, and each settled chunk advances the progress of its table (the
//! last key emitted and settled, rows done, rows estimated) in one
//! transaction, so that after a crash the snapshot continues after the last
//! settled chunk. `status` reads it all, read-only.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{unix_millis, Store, StoreError};

/// The state of a snapshot request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotState {
    /// Requested, not taken up yet.
    Pending,
    /// Being read.
    Running,
    /// Every table read and settled.
    Done,
    /// Cancelled by `pikachu snapshot cancel`.
    Cancelled,
    /// Stopped by an error (in `error`).
    Failed,
}

impl SnapshotState {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotState::Pending => "pending",
            SnapshotState::Running => "running",
            SnapshotState::Done => "done",
            SnapshotState::Cancelled => "cancelled",
            SnapshotState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> SnapshotState {
        match s {
            "pending" => SnapshotState::Pending,
            "running" => SnapshotState::Running,
            "done" => SnapshotState::Done,
            "cancelled" => SnapshotState::Cancelled,
            _ => SnapshotState::Failed,
        }
    }

    /// Pending or running.
    pub(crate) fn is_active(self) -> bool {
        matches!(self, SnapshotState::Pending | SnapshotState::Running)
    }
}

/// Why a snapshot was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// `snapshot: initial` on the task.
    Initial,
    /// `pikachu snapshot start`.
    Backfill,
}

impl SnapshotKind {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Initial => "initial",
            SnapshotKind::Backfill => "backfill",
        }
    }
}

/// A new request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// The task.
    pub task_id: String,
    /// `db.table`; `None`: every table of the task.
    pub table: Option<String>,
    /// A `--where` condition.
    pub condition: Option<String>,
    /// Initial or backfill.
    pub kind: SnapshotKind,
}

/// The progress of one table of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableProgress {
    /// Database.
    pub db: String,
    /// Table.
    pub table: String,
    /// The key of the last settled chunk's last row (JSON, see
    /// `snapshot::Cursor`); `None`: nothing settled yet.
    pub last_key: Option<String>,
    /// Rows emitted and settled.
    pub rows_done: u64,
    /// The server's estimate of the table's rows.
    pub rows_estimated: u64,
    /// Every chunk of the table settled.
    pub done: bool,
    /// Chunks settled (the next chunk's number).
    pub chunks: u64,
    /// Unix milliseconds of the last advance.
    pub updated_at: i64,
}

/// A stored snapshot request with its progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    /// The snapshot's id (goes into the reads' ids and `source`).
    pub id: i64,
    /// The task.
    pub task_id: String,
    /// `db.table`, or `None` for every table of the task.
    pub table: Option<String>,
    /// The `--where` condition.
    pub condition: Option<String>,
    /// `initial` or `backfill`.
    pub kind: String,
    /// Its state.
    pub state: SnapshotState,
    /// What stopped it (state `failed`).
    pub error: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
    /// Per table, by database and table name.
    pub progress: Vec<TableProgress>,
}

/// One chunk settled: what [`Store::advance_snapshot`] records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advance<'a> {
    /// The snapshot.
    pub snapshot_id: i64,
    /// Database.
    pub db: &'a str,
    /// Table.
    pub table: &'a str,
    /// The chunk's last key (JSON); `None` for an empty chunk.
    pub last_key: Option<&'a str>,
    /// Rows the chunk emitted.
    pub rows: u64,
    /// The current estimate of the table's rows.
    pub rows_estimated: u64,
    /// It was the table's last chunk.
    pub table_done: bool,
}

const SELECT_SNAPSHOTS: &str =
    "SELECT id, task_id, tbl, condition, kind, state, error, created_at, updated_at
     FROM snapshots";

fn row_to_snapshot(r: &rusqlite::Row<'_>) -> rusqlite::Result<SnapshotRow> {
    Ok(SnapshotRow {
        id: r.get(0)?,
        task_id: r.get(1)?,
        table: r.get(2)?,
        condition: r.get(3)?,
        kind: r.get(4)?,
        state: SnapshotState::parse(&r.get::<_, String>(5)?),
        error: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        progress: Vec::new(),
    })
}

impl Store {
    /// Records a request, unless the same one (task, table, condition) is
    /// pending or running already: then that one's id. Returns the id and
    /// whether it is new.
    pub fn request_snapshot(&mut self, req: &SnapshotRequest) -> Result<(i64, bool), StoreError> {
        let now = unix_millis(std::time::SystemTime::now());
        let fail = self.err("cannot record the snapshot request");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate);
        let result = tx.and_then(|tx| {
            let existing: Option<i64> = tx
                .query_row(
                    "SELECT id FROM snapshots WHERE task_id = ?1 AND tbl IS ?2 AND condition IS ?3
                       AND state IN ('pending', 'running') ORDER BY id LIMIT 1",
                    params![req.task_id, req.table, req.condition],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = existing {
                return Ok((id, false));
            }
            tx.execute(
                "INSERT INTO snapshots (task_id, tbl, condition, kind, state, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5)",
                params![req.task_id, req.table, req.condition, req.kind.as_str(), now],
            )?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok((id, true))
        });
        result.map_err(fail)
    }

    /// Cancels the task's pending and running snapshots; returns how many.
    pub(crate) fn cancel_snapshots(&mut self, task_id: &str) -> Result<usize, StoreError> {
        let now = unix_millis(std::time::SystemTime::now());
        self.conn
            .execute(
                "UPDATE snapshots SET state = 'cancelled', updated_at = ?2
                 WHERE task_id = ?1 AND state IN ('pending', 'running')",
                params![task_id, now],
            )
            .map_err(self.err("cannot cancel the snapshot"))
    }

    /// Every snapshot (oldest first), with its tables' progress.
    pub fn snapshots(&self) -> Result<Vec<SnapshotRow>, StoreError> {
        let fail = || self.err("cannot read the snapshots");
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{SELECT_SNAPSHOTS} ORDER BY id"))
            .map_err(fail())?;
        let mut rows = stmt
            .query_map([], row_to_snapshot)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(fail())?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT db, tbl, last_key, rows_done, rows_estimated, done, updated_at, chunks
                 FROM snapshot_progress WHERE snapshot_id = ?1 ORDER BY db, tbl",
            )
            .map_err(fail())?;
        for s in &mut rows {
            s.progress = stmt
                .query_map([s.id], |r| {
                    Ok(TableProgress {
                        db: r.get(0)?,
                        table: r.get(1)?,
                        last_key: r.get(2)?,
                        rows_done: r.get::<_, i64>(3)? as u64,
                        rows_estimated: r.get::<_, i64>(4)? as u64,
                        done: r.get(5)?,
                        updated_at: r.get(6)?,
                        chunks: r.get::<_, i64>(7)? as u64,
                    })
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(fail())?;
        }
        Ok(rows)
    }

    /// Whether the task has had a snapshot of this kind completed.
    pub fn snapshot_done(&self, task_id: &str, kind: SnapshotKind) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM snapshots WHERE task_id = ?1 AND kind = ?2 AND state = 'done')",
                params![task_id, kind.as_str()],
                |r| r.get(0),
            )
            .map_err(self.err("cannot read the snapshots"))
    }

    /// Moves a pending (or, after a crash, running) snapshot to running;
    /// false when it is not active any more (cancelled meanwhile).
    pub fn start_snapshot(&mut self, id: i64) -> Result<bool, StoreError> {
        let now = unix_millis(std::time::SystemTime::now());
        self.conn
            .execute(
                "UPDATE snapshots SET state = 'running', updated_at = ?2
                 WHERE id = ?1 AND state IN ('pending', 'running')",
                params![id, now],
            )
            .map(|n| n == 1)
            .map_err(self.err("cannot start the snapshot"))
    }

    /// Records a settled chunk in one transaction: the table's last key,
    /// rows done (added), estimate, done flag. Returns false (and records
    /// nothing) when the snapshot is not running any more, so the reader
    /// stops at a cancel.
    pub fn advance_snapshot(&mut self, a: &Advance<'_>) -> Result<bool, StoreError> {
        let now = unix_millis(std::time::SystemTime::now());
        let fail = self.err("cannot record the snapshot's progress");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate);
        let result = tx.and_then(|tx| {
            let state: Option<String> = tx
                .query_row(
                    "SELECT state FROM snapshots WHERE id = ?1",
                    [a.snapshot_id],
                    |r| r.get(0),
                )
                .optional()?;
            if state.as_deref() != Some("running") {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO snapshot_progress
                   (snapshot_id, db, tbl, last_key, rows_done, rows_estimated, done, updated_at, chunks)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1)
                 ON CONFLICT (snapshot_id, db, tbl) DO UPDATE SET
                   last_key = COALESCE(excluded.last_key, last_key),
                   rows_done = rows_done + excluded.rows_done,
                   chunks = chunks + 1,
                   rows_estimated = excluded.rows_estimated,
                   done = excluded.done,
                   updated_at = excluded.updated_at",
                params![
                    a.snapshot_id,
                    a.db,
                    a.table,
                    a.last_key,
                    a.rows as i64,
                    a.rows_estimated as i64,
                    a.table_done,
                    now
                ],
            )?;
            tx.execute(
                "UPDATE snapshots SET updated_at = ?2 WHERE id = ?1",
                params![a.snapshot_id, now],
            )?;
            tx.commit()?;
            Ok(true)
        });
        result.map_err(fail)
    }

    /// Ends a running snapshot as done, or failed with `error`. A cancelled
    /// one stays cancelled. Returns whether it changed.
    pub fn finish_snapshot(&mut self, id: i64, error: Option<&str>) -> Result<bool, StoreError> {
        let now = unix_millis(std::time::SystemTime::now());
        let state = if error.is_some() { "failed" } else { "done" };
        self.conn
            .execute(
                "UPDATE snapshots SET state = ?2, error = ?3, updated_at = ?4
                 WHERE id = ?1 AND state = 'running'",
                params![id, state, error, now],
            )
            .map(|n| n == 1)
            .map_err(self.err("cannot finish the snapshot"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(task: &str, table: Option<&str>) -> SnapshotRequest {
        SnapshotRequest {
            task_id: task.into(),
            table: table.map(Into::into),
            condition: None,
            kind: SnapshotKind::Backfill,
        }
    }

    fn adv<'a>(id: i64, key: Option<&'a str>, rows: u64, done: bool) -> Advance<'a> {
        Advance {
            snapshot_id: id,
            db: "d",
            table: "t",
            last_key: key,
            rows,
            rows_estimated: 100,
            table_done: done,
        }
    }

    #[test]
    fn request_advance_finish() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(dir.path()).expect("open");
        let (id, new) = s.request_snapshot(&req("a", Some("d.t"))).expect("request");
        assert!(new);
        // The same request again: the same snapshot.
        assert_eq!(
            s.request_snapshot(&req("a", Some("d.t"))).expect("again"),
            (id, false)
        );
        let (other, new) = s
            .request_snapshot(&req("a", None))
            .expect("other table set");
        assert!(new && other != id);
        // Not running yet: progress is not recorded.
        assert!(!s
            .advance_snapshot(&adv(id, Some("[1]"), 10, false))
            .expect("advance"));
        assert!(s.start_snapshot(id).expect("start"));
        assert!(s
            .advance_snapshot(&adv(id, Some("[{\"int\":10}]"), 10, false))
            .expect("advance"));
        assert!(s
            .advance_snapshot(&adv(id, None, 0, true))
            .expect("last, empty chunk"));
        let all = s.snapshots().expect("list");
        let snap = all.iter().find(|r| r.id == id).expect("listed");
        assert_eq!(snap.state, SnapshotState::Running);
        assert_eq!(snap.progress.len(), 1);
        let p = &snap.progress[0];
        assert_eq!(
            p.last_key.as_deref(),
            Some("[{\"int\":10}]"),
            "an empty chunk keeps the key"
        );
        assert_eq!((p.rows_done, p.rows_estimated, p.done), (10, 100, true));
        assert!(!s.snapshot_done("a", SnapshotKind::Backfill).expect("done?"));
        assert!(s.finish_snapshot(id, None).expect("finish"));
        assert!(!s
            .finish_snapshot(id, Some("late"))
            .expect("finished already"));
        assert!(s.snapshot_done("a", SnapshotKind::Backfill).expect("done?"));
        // A finished request does not absorb a new one.
        assert!(s.request_snapshot(&req("a", Some("d.t"))).expect("again").1);
    }

    #[test]
    fn cancel_stops_progress_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = {
            let mut s = Store::open(dir.path()).expect("open");
            let (id, _) = s.request_snapshot(&req("a", None)).expect("request");
            assert!(s.start_snapshot(id).expect("start"));
            assert!(s
                .advance_snapshot(&adv(id, Some("[1]"), 5, false))
                .expect("advance"));
            assert_eq!(s.cancel_snapshots("a").expect("cancel"), 1);
            assert_eq!(s.cancel_snapshots("a").expect("cancel again"), 0);
            assert!(!s
                .advance_snapshot(&adv(id, Some("[2]"), 5, false))
                .expect("advance"));
            assert!(!s.start_snapshot(id).expect("restart"));
            assert!(!s.finish_snapshot(id, None).expect("finish"));
            id
        };
        let s = Store::open_read_only(dir.path())
            .expect("read")
            .expect("exists");
        let all = s.snapshots().expect("list");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].id, id);
        assert_eq!(all[0].state, SnapshotState::Cancelled);
        assert_eq!(all[0].progress[0].rows_done, 5);
        assert_eq!(all[0].progress[0].last_key.as_deref(), Some("[1]"));
    }

    #[test]
    fn a_failed_snapshot_keeps_its_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(dir.path()).expect("open");
        let (id, _) = s.request_snapshot(&req("a", None)).expect("request");
        assert!(s.start_snapshot(id).expect("start"));
        assert!(s
            .finish_snapshot(id, Some("table `d`.`t` does not exist"))
            .expect("fail"));
        let all = s.snapshots().expect("list");
        assert_eq!(all[0].state, SnapshotState::Failed);
        assert_eq!(
            all[0].error.as_deref(),
            Some("table `d`.`t` does not exist")
        );
    }
}
