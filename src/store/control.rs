//! Which tasks are paused (`pikachu task pause|resume`): a row per task in
//! the state store, read by a running pikachu every second; and what a
//! running pikachu says about each task (`task_status`), written every
//! second for `pikachu task list`.

use rusqlite::params;

use super::{unix_millis, Store, StoreError};

impl Store {
    /// Pauses or resumes `task_id`; returns whether that changed anything.
    pub(crate) fn set_paused(&mut self, task_id: &str, paused: bool) -> Result<bool, StoreError> {
        let now = unix_millis(std::time::SystemTime::now());
        let was = self.paused_tasks()?.iter().any(|t| t == task_id);
        self.conn
            .execute(
                "INSERT INTO task_control (task_id, paused, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (task_id) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at",
                params![task_id, paused, now],
            )
            .map_err(self.err("cannot record the task's pause"))?;
        Ok(was != paused)
    }

    /// The paused tasks.
    pub(crate) fn paused_tasks(&self) -> Result<Vec<String>, StoreError> {
        let fail = || self.err("cannot read the paused tasks");
        let mut st = self
            .conn
            .prepare_cached("SELECT task_id FROM task_control WHERE paused = 1 ORDER BY task_id")
            .map_err(fail())?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|r| r.collect::<Result<Vec<_>, _>>())
            .map_err(fail())?;
        Ok(rows)
    }
}

/// What a running pikachu last said about one task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskStatus {
    /// The task's id.
    pub task_id: String,
    /// `active`, `paused`, `breaker_open` or `backlog_full`.
    pub state: String,
    /// Changes delivered since that pikachu started.
    pub delivered: u64,
    /// Changes delivered per second over the last ~10 s.
    pub rate: f64,
    /// Changes in its engine, not yet settled.
    pub queued: u64,
    /// Its last failed attempt, and when (Unix ms).
    pub last_error: Option<(String, i64)>,
    /// The process that wrote it.
    pub pid: u32,
    /// When it was written (Unix ms).
    pub updated_at: i64,
}

impl Store {
    /// Records what a running pikachu says about its tasks (one transaction).
    pub(crate) fn save_task_status(&mut self, all: &[TaskStatus]) -> Result<(), StoreError> {
        let path = self.path.display().to_string();
        let fail = |source: rusqlite::Error| StoreError {
            what: "cannot record the tasks' status".into(),
            path: path.clone(),
            source: Box::new(source),
        };
        let tx = self.conn.transaction().map_err(fail)?;
        for t in all {
            let (error, error_at) = match &t.last_error {
                Some((e, at)) => (Some(e.as_str()), Some(*at)),
                None => (None, None),
            };
            tx.execute(
                "INSERT OR REPLACE INTO task_status (task_id, state, delivered, rate, queued,
                 last_error, last_error_at, pid, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    t.task_id,
                    t.state,
                    t.delivered as i64,
                    t.rate,
                    t.queued as i64,
                    error,
                    error_at,
                    t.pid,
                    t.updated_at
                ],
            )
            .map_err(fail)?;
        }
        tx.commit().map_err(fail)
    }

    /// What running pikachus last said about their tasks.
    pub(crate) fn task_status(&self) -> Result<Vec<TaskStatus>, StoreError> {
        let fail = || self.err("cannot read the tasks' status");
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT task_id, state, delivered, rate, queued, last_error, last_error_at, pid,
                 updated_at FROM task_status ORDER BY task_id",
            )
            .map_err(fail())?;
        let rows = st
            .query_map([], |r| {
                let error: Option<String> = r.get(5)?;
                let error_at: Option<i64> = r.get(6)?;
                Ok(TaskStatus {
                    task_id: r.get(0)?,
                    state: r.get(1)?,
                    delivered: r.get::<_, i64>(2)?.max(0) as u64,
                    rate: r.get(3)?,
                    queued: r.get::<_, i64>(4)?.max(0) as u64,
                    last_error: error.zip(error_at),
                    pid: r.get(7)?,
                    updated_at: r.get(8)?,
                })
            })
            .and_then(|r| r.collect::<Result<Vec<_>, _>>())
            .map_err(fail())?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_resume_round_trip() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = Store::open(dir.path()).expect("open");
        assert!(s.paused_tasks().expect("read").is_empty());
        assert!(s.set_paused("a", true).expect("pause"));
        assert!(!s.set_paused("a", true).expect("again"), "already paused");
        assert_eq!(s.paused_tasks().expect("read"), ["a"]);
        assert!(s.set_paused("a", false).expect("resume"));
        assert!(s.paused_tasks().expect("read").is_empty());
    }

    #[test]
    fn task_status_round_trip() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = Store::open(dir.path()).expect("open");
        let mut a = TaskStatus {
            task_id: "a".into(),
            state: "breaker_open".into(),
            delivered: 7,
            rate: 1.5,
            queued: 3,
            last_error: Some(("HTTP 500".into(), 42)),
            pid: 9,
            updated_at: 100,
        };
        s.save_task_status(std::slice::from_ref(&a)).expect("save");
        a.delivered = 8;
        a.last_error = None;
        s.save_task_status(std::slice::from_ref(&a)).expect("again");
        assert_eq!(s.task_status().expect("read"), [a]);
    }
}
