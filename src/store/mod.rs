//! pikachu's durable local state: one SQLite database, `<state_dir>/pikachu.db`,
//! opened with `journal_mode=WAL` and `synchronous=FULL` so that a write
//! that returned is on disk (fsync) and survives a crash or power loss.
//! Operators can inspect it with `sqlite3 data/pikachu.db`.
//!
//! Tables:
//! - `dead_letters`: changes whose delivery failed after all retries
//!   (see [`DeadLetter`]); managed with `pikachu dlq`.
//! - `checkpoint`: one row, the binlog position up to which every change is
//!   settled, and the identity of the server it belongs to (see
//!   [`Checkpoint`]); managed with `pikachu position`.
//! - `xa_prepared`, `xa_rows`: the rows of prepared XA transactions until
//!   their outcome (see [`xa`]).
//!
//! Writers ([`Store::open`]: `pikachu run`, `position set|reset`,
//! `dlq replay|purge`, `replay`) create and migrate the database; readers
//! ([`Store::open_read_only`]: `dlq list|show`, `position show`, the
//! monitor's count) never write, so they work next to a running process
//! and on a read-only filesystem. The [`lock`] on the state directory keeps
//! a second `pikachu run` out. Errors name the file, what is wrong with it
//! (read-only, not a database or corrupt, disk full) and what to do.
//! - `schema_history`: the definitions of the followed tables, each with the
//!   binlog position it is valid from (see [`SchemaVersionRow`] and
//!   `source::history`); forgotten when the position is set or reset.
//! - `snapshots`, `snapshot_progress`: snapshot requests and, per table, the
//!   last settled chunk (see [`snapshot`]).
//!
//! The schema is versioned with SQLite's `PRAGMA user_version`: each entry
//! of [`MIGRATIONS`] is applied once, in order; the missing ones together
//! in one `BEGIN IMMEDIATE` transaction (see `Store::migrate`), so that
//! processes opening a new database at once never apply one twice, and
//! readers see the schema before or after an upgrade, never half of it. To
//! add a table (e.g. a `checkpoint` next to `dead_letters`), append a
//! migration; never edit one that has shipped.
//!
//! All calls block (disk I/O, fsync): from async code, run them on
//! `tokio::task::spawn_blocking` or a dedicated thread.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior, MAIN_DB};

pub(crate) mod backlog;
mod checkpoint;
mod control;
pub(crate) use control::TaskStatus;
mod diagnose;
pub(crate) mod lock;
mod schema_history;
pub(crate) mod snapshot;
pub(crate) mod xa;
pub(crate) use checkpoint::Checkpoint;
pub(crate) use lock::LockError;
pub use lock::StateLock;
pub(crate) use schema_history::SchemaVersionRow;
pub use snapshot::{Advance, SnapshotKind, SnapshotRequest};

/// File name of the database inside `state_dir`.
pub(crate) const DB_FILE: &str = "pikachu.db";

/// Schema migrations; `user_version` = number applied.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: dead letters.
    "CREATE TABLE dead_letters (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id          TEXT    NOT NULL,
        change_id        TEXT    NOT NULL,
        url              TEXT    NOT NULL,
        body             BLOB    NOT NULL,
        events           INTEGER NOT NULL DEFAULT 1,
        last_status      INTEGER,
        last_error       TEXT    NOT NULL,
        attempts         INTEGER NOT NULL,
        first_attempt_at INTEGER NOT NULL,
        last_attempt_at  INTEGER NOT NULL,
        seq              INTEGER NOT NULL,
        created_at       INTEGER NOT NULL,
        UNIQUE (task_id, change_id)
    );
    CREATE INDEX dead_letters_task ON dead_letters (task_id, id);",
    // 2: the checkpoint: one row, the position up to which every change is settled.
    "CREATE TABLE checkpoint (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        file        TEXT    NOT NULL,
        pos         INTEGER NOT NULL,
        gtid        TEXT,
        gtid_state  TEXT,
        flavour     TEXT    NOT NULL,
        server_id   INTEGER NOT NULL,
        server_uuid TEXT,
        updated_at  INTEGER NOT NULL
    );",
    // 3: which binlog history the checkpoint belongs to: the history
    // marker that goes into change ids, and the creation time of the
    // checkpoint's file (see source::binlogs).
    "ALTER TABLE checkpoint ADD COLUMN history INTEGER;
     ALTER TABLE checkpoint ADD COLUMN file_created INTEGER;",
    // 4: the rows of prepared XA transactions, held until their outcome.
    "CREATE TABLE xa_prepared (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        xid         TEXT    NOT NULL,
        state       TEXT    NOT NULL CHECK (state IN ('open', 'prepared')),
        file        TEXT    NOT NULL,
        pos         INTEGER NOT NULL,
        gtid        TEXT,
        rows        INTEGER NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE INDEX xa_prepared_xid ON xa_prepared (xid);
    CREATE TABLE xa_rows (
        xa_id  INTEGER NOT NULL REFERENCES xa_prepared (id) ON DELETE CASCADE,
        n      INTEGER NOT NULL,
        change BLOB    NOT NULL,
        PRIMARY KEY (xa_id, n)
    ) WITHOUT ROWID;",
    // 5: the schema history: a table's definition from a binlog position on.
    "CREATE TABLE schema_history (
        db          TEXT    NOT NULL,
        tbl         TEXT    NOT NULL,
        file        TEXT    NOT NULL,
        pos         INTEGER NOT NULL,
        definition  TEXT    NOT NULL,
        server      TEXT    NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (db, tbl, file, pos)
    );",
    // 6: snapshot requests (`pikachu snapshot start`, `snapshot: initial`)
    // and, per snapshot and table, the progress of the settled chunks.
    "CREATE TABLE snapshots (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id     TEXT    NOT NULL,
        tbl         TEXT,
        condition   TEXT,
        kind        TEXT    NOT NULL CHECK (kind IN ('initial', 'backfill')),
        state       TEXT    NOT NULL
                    CHECK (state IN ('pending', 'running', 'done', 'cancelled', 'failed')),
        error       TEXT,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    CREATE INDEX snapshots_task ON snapshots (task_id, state);
    CREATE TABLE snapshot_progress (
        snapshot_id    INTEGER NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
        db             TEXT    NOT NULL,
        tbl            TEXT    NOT NULL,
        last_key       TEXT,
        rows_done      INTEGER NOT NULL DEFAULT 0,
        rows_estimated INTEGER NOT NULL DEFAULT 0,
        done           INTEGER NOT NULL DEFAULT 0,
        updated_at     INTEGER NOT NULL,
        PRIMARY KEY (snapshot_id, db, tbl)
    ) WITHOUT ROWID;",
    // 7: the number of settled chunks per snapshot and table (the next
    // chunk's number in the reads' `source.chunk` after a restart).
    "ALTER TABLE snapshot_progress ADD COLUMN chunks INTEGER NOT NULL DEFAULT 0;",
    // 8: tasks paused with `pikachu task pause` (a running pikachu reads it
    // every second).
    "CREATE TABLE task_control (
        task_id    TEXT    PRIMARY KEY,
        paused     INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 9: what a running pikachu says about each task, written every second
    // (`pikachu task list` reads it; `updated_at` tells whether it is live).
    "CREATE TABLE task_status (
        task_id        TEXT    PRIMARY KEY,
        state          TEXT    NOT NULL,
        delivered      INTEGER NOT NULL,
        rate           REAL    NOT NULL,
        queued         INTEGER NOT NULL,
        last_error     TEXT,
        last_error_at  INTEGER,
        pid            INTEGER NOT NULL,
        updated_at     INTEGER NOT NULL
    ) WITHOUT ROWID;",
];

/// A store error, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what} ({path}): {source}{}", diagnose::hint(.source.as_ref(), .path))]
pub struct StoreError {
    /// What was being done (`cannot record a dead letter`).
    pub what: String,
    /// The database file.
    pub path: String,
    /// The SQLite or I/O error; what it means for the operator is appended
    /// to the message (`diagnose::hint`).
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// One change (or one batch of changes) whose delivery failed after all retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The dead letter's own id (what `pikachu dlq` commands take).
    pub id: i64,
    pub task_id: String,
    /// The change id (`webhook-id`); for a batch, the batch's id.
    pub change_id: String,
    /// The callback URL at the time of the failure.
    pub url: String,
    /// The request body, exactly as sent.
    pub body: Vec<u8>,
    /// Number of changes in `body` (1, or the batch size).
    pub events: u32,
    /// HTTP status of the last attempt, when it got one.
    pub last_status: Option<u16>,
    /// What went wrong the last time (`HTTP 500`, `timed out after 30s`, ...).
    pub last_error: String,
    pub attempts: u32,
    /// Unix milliseconds.
    pub first_attempt_at: i64,
    /// Unix milliseconds.
    pub last_attempt_at: i64,
    /// The engine's sequence number (process-local; for diagnostics only).
    pub seq: u64,
    /// Unix milliseconds when it was recorded.
    pub created_at: i64,
}

/// Which dead letters a command applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub task_id: Option<String>,
    /// A dead-letter id (all digits) or a change id.
    pub id: Option<String>,
}

/// The open database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// Unix milliseconds of `t`.
pub(crate) fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}

impl Store {
    /// `<state_dir>/pikachu.db`.
    pub(crate) fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join(DB_FILE)
    }

    /// Opens for writing (creating `state_dir` and the database if needed)
    /// and migrates. Fails, saying why and how to fix it, when the database
    /// cannot be written (read-only file or filesystem, permissions), is not
    /// a SQLite database, or is corrupt.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let path = Self::path_in(state_dir);
        std::fs::create_dir_all(state_dir).map_err(|e| StoreError {
            what: format!("cannot create the state directory {}", state_dir.display()),
            path: path.display().to_string(),
            source: Box::new(e),
        })?;
        Self::open_file(&path).map_err(|e| diagnose::refine(e, state_dir))
    }

    /// Opens for writing, and migrates, only if the database exists.
    pub fn open_existing(state_dir: &Path) -> Result<Option<Store>, StoreError> {
        let path = Self::path_in(state_dir);
        if !path.exists() {
            return Ok(None);
        }
        Self::open_file(&path)
            .map(Some)
            .map_err(|e| diagnose::refine(e, state_dir))
    }

    /// Opens for reading only (`dlq list`, `position show`, the monitor's
    /// count): never creates, migrates or writes anything, so it is safe
    /// next to a running `pikachu run` and on a read-only filesystem.
    /// `None` when there is no database yet, or one whose first migration
    /// has not been applied (a first start in progress). A schema older
    /// than this pikachu's is refused (the next writer upgrades it), as is
    /// a newer one.
    pub(crate) fn open_read_only(state_dir: &Path) -> Result<Option<Store>, StoreError> {
        let path = Self::path_in(state_dir);
        if !path.exists() {
            return Ok(None);
        }
        let conn = match Self::connect_read_only(&path, false) {
            // A WAL database needs its `-shm` file: on a read-only
            // filesystem nobody can have it open for writing, so reading it
            // as immutable is safe.
            Err(e) if diagnose::is_cannot_open(&e) && diagnose::read_only_fs(state_dir) => {
                Self::connect_read_only(&path, true)?
            }
            other => other.map_err(|e| diagnose::refine(e, state_dir))?,
        };
        let store = Store {
            conn,
            path: path.clone(),
        };
        let version = store.schema_version()? as usize;
        if version == 0 {
            return Ok(None);
        }
        store.check_not_newer(version)?;
        if version < MIGRATIONS.len() {
            return Err(StoreError {
                what: format!(
                    "the state database has schema version {version}, older than this pikachu's {}: \
                     it is upgraded by the next `pikachu run` (this command only reads, and does not upgrade it)",
                    MIGRATIONS.len()
                ),
                path: path.display().to_string(),
                source: "schema too old to read".into(),
            });
        }
        Ok(Some(store))
    }

    fn connect_read_only(path: &Path, immutable: bool) -> Result<Connection, StoreError> {
        let shown = path.display().to_string();
        let err = |source: rusqlite::Error| StoreError {
            what: "cannot open the state database".into(),
            path: shown.clone(),
            source: Box::new(source),
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = if immutable {
            Connection::open_with_flags(diagnose::immutable_uri(path), flags)
        } else {
            Connection::open_with_flags(path, flags)
        }
        .map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        // The first read opens the WAL index: fail here, not in a query.
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, u32>(0))
            .map_err(err)?;
        Ok(conn)
    }

    /// Opens for writing (creating if needed) the database file at `path`
    /// and migrates.
    pub(crate) fn open_file(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let err = |source: rusqlite::Error| StoreError {
            what: "cannot open the state database".into(),
            path: shown.clone(),
            source: Box::new(source),
        };
        let conn = Connection::open(path).map_err(err)?;
        // Another process (`pikachu dlq` next to `pikachu run`, or a first
        // start racing the monitor) may hold the write lock for a moment.
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        // SQLite falls back to read-only when the file is not writable:
        // refuse now, before anything is delivered whose settlement could
        // not be recorded.
        if conn.is_readonly(MAIN_DB).map_err(err)? {
            return Err(StoreError {
                what: "cannot open the state database for writing".into(),
                path: shown,
                source: Box::new(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
                    Some("SQLite could open it only for reading".into()),
                )),
            });
        }
        let mode = switch_to_wal(&conn).map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %shown, mode, "state database is not in WAL mode");
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
            .map_err(err)?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StoreError {
        let what = what.into();
        let path = self.path.display().to_string();
        move |source| StoreError {
            what,
            path,
            source: Box::new(source),
        }
    }

    /// The schema version (number of migrations applied).
    pub(crate) fn schema_version(&self) -> Result<u32, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get::<_, u32>(0))
            .map_err(self.err("cannot read the schema version"))
    }

    fn check_not_newer(&self, version: usize) -> Result<(), StoreError> {
        if version <= MIGRATIONS.len() {
            return Ok(());
        }
        Err(StoreError {
            what: format!(
                "the state database has schema version {version}, newer than this pikachu knows ({}); use a newer pikachu",
                MIGRATIONS.len()
            ),
            path: self.path.display().to_string(),
            source: "schema too new".into(),
        })
    }

    /// Applies the missing migrations in one `BEGIN IMMEDIATE` transaction,
    /// with the version read inside it: of several processes opening a
    /// fresh database at once, one migrates and the others then find it
    /// done; a reader sees the schema before or after, never half of it.
    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.display().to_string();
        let failed = |what: String| {
            let path = path.clone();
            move |source: rusqlite::Error| StoreError {
                what,
                path,
                source: Box::new(source),
            }
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed("cannot start a migration".into()))?;
        let current =
            tx.query_row("PRAGMA user_version", [], |r| r.get::<_, u32>(0))
                .map_err(failed("cannot read the schema version".into()))? as usize;
        if current >= MIGRATIONS.len() {
            drop(tx);
            return self.check_not_newer(current);
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
            let version = i + 1;
            tx.execute_batch(sql)
                .and_then(|()| tx.execute_batch(&format!("PRAGMA user_version = {version}")))
                .map_err(failed(format!("cannot apply schema migration {version}")))?;
        }
        tx.commit().map_err(failed(format!(
            "cannot apply schema migrations {}..{}",
            current + 1,
            MIGRATIONS.len()
        )))
    }

    /// Records a dead letter; returns its id. The same (task, change id)
    /// recorded again (a change re-read after a restart) updates the existing
    /// row: attempts add up, the last status/error/time are the new ones.
    /// Durable when it returns (synchronous=FULL).
    pub fn insert_dead_letter(&mut self, d: &DeadLetter) -> Result<i64, StoreError> {
        let sql = "INSERT INTO dead_letters
              (task_id, change_id, url, body, events, last_status, last_error, attempts,
               first_attempt_at, last_attempt_at, seq, created_at)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
            ON CONFLICT (task_id, change_id) DO UPDATE SET
              url = excluded.url, body = excluded.body, events = excluded.events,
              last_status = excluded.last_status, last_error = excluded.last_error,
              attempts = attempts + excluded.attempts,
              last_attempt_at = excluded.last_attempt_at, seq = excluded.seq
            RETURNING id";
        self.conn
            .query_row(
                sql,
                params![
                    d.task_id,
                    d.change_id,
                    d.url,
                    d.body,
                    d.events,
                    d.last_status,
                    d.last_error,
                    d.attempts,
                    d.first_attempt_at,
                    d.last_attempt_at,
                    d.seq as i64,
                    d.created_at,
                ],
                |r| r.get(0),
            )
            .map_err(self.err("cannot record a dead letter"))
    }

    /// Dead letters matching `filter`, oldest first (the order they were recorded).
    pub fn dead_letters(&self, filter: &Filter) -> Result<Vec<DeadLetter>, StoreError> {
        let (num_id, change_id) = split_id(filter.id.as_deref());
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, task_id, change_id, url, body, events, last_status, last_error,
                        attempts, first_attempt_at, last_attempt_at, seq, created_at
                 FROM dead_letters
                 WHERE (?1 IS NULL OR task_id = ?1) AND (?2 IS NULL OR id = ?2)
                   AND (?3 IS NULL OR change_id = ?3)
                 ORDER BY id",
            )
            .map_err(self.err("cannot read dead letters"))?;
        let rows = stmt
            .query_map(
                params![filter.task_id, num_id, change_id],
                row_to_dead_letter,
            )
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.err("cannot read dead letters"))?;
        Ok(rows)
    }

    /// One dead letter by its id.
    pub fn dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        self.conn
            .query_row(
                "SELECT id, task_id, change_id, url, body, events, last_status, last_error,
                        attempts, first_attempt_at, last_attempt_at, seq, created_at
                 FROM dead_letters WHERE id = ?1",
                [id],
                row_to_dead_letter,
            )
            .optional()
            .map_err(self.err("cannot read a dead letter"))
    }

    /// Deletes one dead letter; false if it was not there.
    pub(crate) fn delete_dead_letter(&mut self, id: i64) -> Result<bool, StoreError> {
        self.conn
            .execute("DELETE FROM dead_letters WHERE id = ?1", [id])
            .map(|n| n > 0)
            .map_err(self.err("cannot delete a dead letter"))
    }

    /// Deletes the dead letters matching `filter`; returns how many.
    pub(crate) fn purge_dead_letters(&mut self, filter: &Filter) -> Result<usize, StoreError> {
        let (num_id, change_id) = split_id(filter.id.as_deref());
        self.conn
            .execute(
                "DELETE FROM dead_letters
                 WHERE (?1 IS NULL OR task_id = ?1) AND (?2 IS NULL OR id = ?2)
                   AND (?3 IS NULL OR change_id = ?3)",
                params![filter.task_id, num_id, change_id],
            )
            .map_err(self.err("cannot delete dead letters"))
    }

    /// How many dead letters are stored.
    pub(crate) fn count_dead_letters(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM dead_letters", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(self.err("cannot count dead letters"))
    }
}

/// `PRAGMA journal_mode=WAL`; returns the mode now in effect. Switching a
/// new database needs an exclusive lock, and SQLite answers "database is
/// locked" at once, without waiting, when two connections want it at the
/// same moment: try again for up to the busy timeout.
fn switch_to_wal(conn: &Connection) -> rusqlite::Result<String> {
    const BUSY_FOR: Duration = Duration::from_secs(10);
    let deadline = std::time::Instant::now() + BUSY_FOR;
    loop {
        match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)) {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5 + fastrand::u64(0..20)));
                // back off
            }
            other => return other,
        }
    }
}

/// An `--id` is a dead-letter id when it is all digits, else a change id.
fn split_id(id: Option<&str>) -> (Option<i64>, Option<&str>) {
    match id {
        None => (None, None),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => (Some(n), None),
            _ => (None, Some(s)),
        },
    }
}

fn row_to_dead_letter(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        id: r.get(0)?,
        task_id: r.get(1)?,
        change_id: r.get(2)?,
        url: r.get(3)?,
        body: r.get(4)?,
        events: r.get(5)?,
        last_status: r.get(6)?,
        last_error: r.get(7)?,
        attempts: r.get(8)?,
        first_attempt_at: r.get(9)?,
        last_attempt_at: r.get(10)?,
        seq: r.get::<_, i64>(11)? as u64,
        created_at: r.get(12)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(task: &str, change: &str) -> DeadLetter {
        DeadLetter {
            id: 0,
            task_id: task.into(),
            change_id: change.into(),
            url: "http://127.0.0.1:1/x".into(),
            body: br#"{"a":1}"#.to_vec(),
            events: 1,
            last_status: Some(500),
            last_error: "HTTP 500".into(),
            attempts: 4,
            first_attempt_at: 1000,
            last_attempt_at: 2000,
            seq: 7,
            created_at: 3000,
        }
    }

    #[test]
    fn migrates_once_and_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(&dir.path().join("state")).expect("open");
        assert_eq!(
            s.schema_version().expect("version") as usize,
            MIGRATIONS.len()
        );
        let id = s.insert_dead_letter(&letter("t1", "c1")).expect("insert");
        let id2 = s.insert_dead_letter(&letter("t2", "c2")).expect("insert");
        assert!(id2 > id);
        drop(s);
        // Reopen: no migration re-applied, data kept.
        let mut s = Store::open(&dir.path().join("state")).expect("reopen");
        let all = s.dead_letters(&Filter::default()).expect("list");
        assert_eq!(all.len(), 2);
        let mut want = letter("t1", "c1");
        want.id = id;
        assert_eq!(all[0], want);
        // The same change again: one row, attempts added up.
        let again = s.insert_dead_letter(&letter("t1", "c1")).expect("insert");
        assert_eq!(again, id);
        assert_eq!(s.dead_letter(id).expect("get").expect("row").attempts, 8);
        assert_eq!(s.count_dead_letters().expect("count"), 2);
        // Filters: task, numeric id, change id.
        let f = |task: Option<&str>, id: Option<&str>| Filter {
            task_id: task.map(Into::into),
            id: id.map(Into::into),
        };
        assert_eq!(s.dead_letters(&f(Some("t2"), None)).expect("q").len(), 1);
        assert_eq!(s.dead_letters(&f(None, Some("c2"))).expect("q").len(), 1);
        assert_eq!(
            s.dead_letters(&f(None, Some(&id.to_string()))).expect("q")[0].change_id,
            "c1"
        );
        assert_eq!(
            s.purge_dead_letters(&f(Some("t2"), None)).expect("purge"),
            1
        );
        assert!(s.delete_dead_letter(id).expect("delete"));
        assert!(!s.delete_dead_letter(id).expect("delete"));
        assert_eq!(s.count_dead_letters().expect("count"), 0);
    }

    #[test]
    fn wal_and_full_sync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        let mode: String = s
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "wal");
        let sync: i64 = s
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("sync");
        assert_eq!(sync, 2, "FULL");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        s.conn
            .execute_batch("PRAGMA user_version = 99")
            .expect("bump");
        drop(s);
        let e = Store::open(dir.path()).expect_err("newer schema");
        assert!(e.to_string().contains("newer"), "{e}");
    }

    #[test]
    fn open_existing_does_not_create() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("nope");
        assert!(Store::open_existing(&state).expect("ok").is_none());
        assert!(!state.exists());
    }
}

#[cfg(test)]
mod race_tests {
    use super::*;

    /// Many first starts at once (`pikachu run`, its monitor's dead-letter
    /// count, `dlq`/`position` commands): every writer open migrates or
    /// finds it done, every reader open sees no state yet or the migrated
    /// one; none fails.
    #[test]
    fn concurrent_first_opens_never_fail() {
        const WRITERS: usize = 6;
        const READERS: usize = 2;
        for round in 0..30 {
            let dir = tempfile::tempdir().expect("tempdir");
            let state = dir.path().join("state");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(WRITERS + READERS));
            let writers: Vec<_> = (0..WRITERS)
                .map(|_| {
                    let (state, barrier) = (state.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        Store::open(&state).and_then(|s| s.schema_version())
                    })
                })
                .collect();
            let readers: Vec<_> = (0..READERS)
                .map(|_| {
                    let (state, barrier) = (state.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        // Until the writers are done: none yet, or all of it.
                        for _ in 0..50 {
                            if let Some(s) = Store::open_read_only(&state)? {
                                s.count_dead_letters()?;
                            }
                        }
                        Ok::<(), StoreError>(())
                    })
                })
                .collect();
            for h in writers {
                let v = h
                    .join()
                    .expect("thread")
                    .unwrap_or_else(|e| panic!("round {round}: writer: {e}"));
                assert_eq!(v as usize, MIGRATIONS.len());
            }
            for h in readers {
                h.join()
                    .expect("thread")
                    .unwrap_or_else(|e| panic!("round {round}: reader: {e}"));
            }
        }
    }

    #[test]
    fn a_reader_never_creates_migrates_or_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = Store::path_in(dir.path());
        // Nothing there: nothing created.
        assert!(Store::open_read_only(dir.path()).expect("none").is_none());
        assert!(!path.exists());
        // An empty (unmigrated) database: no state yet, left unmigrated.
        Connection::open(&path)
            .expect("create")
            .execute_batch("PRAGMA journal_mode=WAL")
            .expect("wal");
        assert!(Store::open_read_only(dir.path()).expect("none").is_none());
        let version = |p: &Path| -> u32 {
            Connection::open(p)
                .expect("open")
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .expect("version")
        };
        assert_eq!(version(&path), 0);
        // An older schema: refused with what to do, not upgraded.
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(MIGRATIONS[0]).expect("migration 1");
            conn.execute_batch("PRAGMA user_version = 1").expect("v1");
        }
        let e = Store::open_read_only(dir.path()).expect_err("older");
        assert!(e.to_string().contains("older than this pikachu"), "{e}");
        assert!(e.to_string().contains("pikachu run"), "{e}");
        assert_eq!(version(&path), 1);
        // Migrated: readable, and writing through it is refused.
        drop(Store::open(dir.path()).expect("writer migrates"));
        let mut r = Store::open_read_only(dir.path())
            .expect("ok")
            .expect("some");
        assert_eq!(r.count_dead_letters().expect("count"), 0);
        assert!(r.clear_checkpoint().is_err(), "a reader cannot write");
    }
}
