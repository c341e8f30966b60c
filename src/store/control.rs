//! Which tasks are paused (`pikachu task pause|resume`): a row per task in
//! the state store, read by a running pikachu every second.

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
}
