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
//! - `schema_history`: the definitions of the followed tables, each with the
//!   binlog position it is valid from (see [`SchemaVersionRow`] and
//!   `source::history`); forgotten when the position is set or reset.
//!
//! The schema is versioned with SQLite's `PRAGMA user_version`: each entry
//! of [`MIGRATIONS`] is applied once, in order, in its own transaction. To
//! add a table (e.g. a `checkpoint` next to `dead_letters`), append a
//! migration; never edit one that has shipped.
//!
//! All calls block (disk I/O, fsync): from async code, run them on
//! `tokio::task::spawn_blocking` or a dedicated thread.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

mod checkpoint;
mod schema_history;
pub use checkpoint::Checkpoint;
pub use schema_history::SchemaVersionRow;

/// File name of the database inside `state_dir`.
pub const DB_FILE: &str = "pikachu.db";

/// Schema migrations; `user_version` = number applied.
pub const MIGRATIONS: &[&str] = &[
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
    // 3: the schema history: a table's definition from a binlog position on.
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
];

/// A store error, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what} ({path}): {source}")]
pub struct StoreError {
    pub what: String,
    pub path: String,
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
pub fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}

impl Store {
    /// `<state_dir>/pikachu.db`.
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join(DB_FILE)
    }

    /// Opens (creating `state_dir` and the database if needed) and migrates.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let path = Self::path_in(state_dir);
        std::fs::create_dir_all(state_dir).map_err(|e| StoreError {
            what: format!("cannot create the state directory {}", state_dir.display()),
            path: path.display().to_string(),
            source: Box::new(e),
        })?;
        Self::open_file(&path)
    }

    /// Opens the database of `state_dir` only if it exists.
    pub fn open_existing(state_dir: &Path) -> Result<Option<Store>, StoreError> {
        let path = Self::path_in(state_dir);
        if !path.exists() {
            return Ok(None);
        }
        Self::open_file(&path).map(Some)
    }

    /// Opens (creating if needed) the database file at `path` and migrates.
    pub fn open_file(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let err = |what: &str| {
            let shown = shown.clone();
            let what = what.to_string();
            move |source: rusqlite::Error| StoreError {
                what,
                path: shown,
                source: Box::new(source),
            }
        };
        let conn = Connection::open(path).map_err(err("cannot open the state database"))?;
        // Another process (`pikachu dlq` next to `pikachu run`) may hold the
        // write lock for a moment.
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(err("cannot set busy_timeout"))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(err("cannot switch the state database to WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %shown, mode, "state database is not in WAL mode");
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
            .map_err(err("cannot set synchronous=FULL"))?;
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
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get::<_, u32>(0))
            .map_err(self.err("cannot read the schema version"))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let current = self.schema_version()? as usize;
        if current > MIGRATIONS.len() {
            return Err(StoreError {
                what: format!(
                    "the state database has schema version {current}, newer than this pikachu knows ({}); use a newer pikachu",
                    MIGRATIONS.len()
                ),
                path: self.path.display().to_string(),
                source: "schema too new".into(),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
            let version = i + 1;
            let path = self.path.display().to_string();
            let tx = self.conn.transaction().map_err(|source| StoreError {
                what: "cannot start a migration".into(),
                path: path.clone(),
                source: Box::new(source),
            })?;
            tx.execute_batch(sql)
                .and_then(|()| tx.execute_batch(&format!("PRAGMA user_version = {version}")))
                .and_then(|()| tx.commit())
                .map_err(|source| StoreError {
                    what: format!("cannot apply schema migration {version}"),
                    path,
                    source: Box::new(source),
                })?;
        }
        Ok(())
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
    pub fn delete_dead_letter(&mut self, id: i64) -> Result<bool, StoreError> {
        self.conn
            .execute("DELETE FROM dead_letters WHERE id = ?1", [id])
            .map(|n| n > 0)
            .map_err(self.err("cannot delete a dead letter"))
    }

    /// Deletes the dead letters matching `filter`; returns how many.
    pub fn purge_dead_letters(&mut self, filter: &Filter) -> Result<usize, StoreError> {
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
    pub fn count_dead_letters(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM dead_letters", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(self.err("cannot count dead letters"))
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
