//! Helpers of the task-isolation tests: a workload of versioned rows, the
//! per-row order check, and readers of a pikachu's state folder (its
//! backlogs, checkpoint and dead letters).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use super::{MariaDb, Received};

/// Polls `f` every 50 ms until it holds; panics after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50)); // poll interval
    }
}

/// Rows `first..first + rows` of table `t (id, v, ...)`, each written as
/// version 0 (the insert) and then versions `1..=rounds` (updates of `v`).
#[derive(Clone, Copy, Debug)]
pub struct Versions {
    /// The first row id.
    pub first: i64,
    /// How many rows.
    pub rows: i64,
    /// Update rounds after the insert.
    pub rounds: i64,
}

impl Versions {
    /// Changes the workload writes: one insert and `rounds` updates per row.
    pub fn changes(&self) -> usize {
        (self.rows * (self.rounds + 1)) as usize
    }

    /// Inserts every row (100 per statement), then updates all of them
    /// once per round, one statement per round.
    pub fn write(&self, db: &MariaDb, database: &str, table: &str) {
        let mut sql = String::new();
        let mut id = self.first;
        while id < self.first + self.rows {
            let end = (id + 100).min(self.first + self.rows);
            let rows: Vec<String> = (id..end).map(|i| format!("({i}, 0)")).collect();
            sql.push_str(&format!(
                "INSERT INTO {table} (id, v) VALUES {};\n",
                rows.join(",")
            ));
            id = end;
        }
        db.exec_in(database, &sql);
        for round in 1..=self.rounds {
            db.exec_in(
                database,
                &format!(
                    "UPDATE {table} SET v = {round} WHERE id >= {} AND id < {}",
                    self.first,
                    self.first + self.rows
                ),
            );
        }
    }

    /// Every row of this workload got every version, in order (a version
    /// may come again, never an older one after a newer); changes of other
    /// rows in `got` are ignored.
    pub fn assert_order(&self, got: &[Received]) {
        let mut seen: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        let range = self.first..self.first + self.rows;
        for (id, v) in versions(got)
            .into_iter()
            .filter(|(id, _)| range.contains(id))
        {
            seen.entry(id).or_default().push(v);
        }
        for id in self.first..self.first + self.rows {
            let vs = seen
                .get(&id)
                .unwrap_or_else(|| panic!("row {id}: nothing arrived"));
            assert!(
                vs.windows(2).all(|w| w[0] <= w[1]),
                "row {id}: versions out of order: {vs:?}"
            );
            let distinct: HashSet<i64> = vs.iter().copied().collect();
            assert_eq!(distinct.len() as i64, self.rounds + 1, "row {id}: {vs:?}");
        }
    }
}

/// The row of a change's body: `new_data` of an update, else `data`.
pub fn row_of(body: &serde_json::Value) -> &serde_json::Value {
    if body["event"] == "update" {
        &body["new_data"]
    } else {
        &body["data"]
    }
}

/// (id, v) of every change received, in arrival order.
pub fn versions(got: &[Received]) -> Vec<(i64, i64)> {
    got.iter()
        .map(|r| {
            let b = r.json();
            let row = row_of(&b);
            (
                row["id"].as_i64().expect("id"),
                row["v"].as_i64().expect("v"),
            )
        })
        .collect()
}

/// The distinct `webhook-id`s received.
pub fn ids(got: &[Received]) -> HashSet<String> {
    got.iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect()
}

/// How many distinct changes were received.
pub fn distinct_ids(got: &[Received]) -> usize {
    ids(got).len()
}

/// Rows in the backlog files of `dir`'s state (`dir/data/backlog/*.db`).
pub fn backlog_rows(dir: &Path) -> i64 {
    let Ok(entries) = std::fs::read_dir(dir.join("data/backlog")) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "db"))
        .map(|e| {
            rusqlite::Connection::open(e.path())
                .and_then(|c| c.query_row("SELECT count(*) FROM rows", [], |r| r.get::<_, i64>(0)))
                .unwrap_or(0)
        })
        .sum()
}

/// The saved checkpoint (file, pos); it compares as positions do (the
/// file names have a fixed-width number). The server is shared with other
/// tests: the checkpoint may pass the end of a test's workload.
pub fn checkpoint(dir: &Path) -> Option<(String, u64)> {
    let c = rusqlite::Connection::open(dir.join("data/pikachu.db")).ok()?;
    c.query_row("SELECT file, pos FROM checkpoint", [], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })
    .ok()
}

/// Rows in the dead-letter store of `dir`'s state.
pub fn dead_letters(dir: &Path) -> i64 {
    rusqlite::Connection::open(dir.join("data/pikachu.db"))
        .and_then(|c| c.query_row("SELECT count(*) FROM dead_letters", [], |r| r.get(0)))
        .unwrap_or(0)
}

/// The change ids in the dead-letter store of `dir`'s state.
pub fn dead_letter_ids(dir: &Path) -> HashSet<String> {
    let Ok(c) = rusqlite::Connection::open(dir.join("data/pikachu.db")) else {
        return HashSet::new();
    };
    let Ok(mut q) = c.prepare("SELECT change_id FROM dead_letters") else {
        return HashSet::new();
    };
    q.query_map([], |r| r.get::<_, String>(0))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}
