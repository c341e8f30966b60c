//! The snapshot figures: rows read and settled per task and table, the
//! server's estimate, and the snapshots running, for `/metrics`
//! (`pikachu_snapshot_rows_total`, `pikachu_snapshot_rows_estimated`,
//! `pikachu_snapshot_running`) and `/health` (`snapshots`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    task: String,
    table: String,
}

/// A snapshot being read, as `/health` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct RunningSnapshot {
    /// The snapshot's id.
    pub id: i64,
    /// Its task.
    pub task: String,
    /// The table being read (`db.table`).
    pub table: String,
    /// Rows of that table read and settled so far.
    pub rows_done: u64,
    /// The server's estimate of the table's rows.
    pub rows_estimated: u64,
}

/// The snapshot figures (see the module).
#[derive(Debug)]
pub(crate) struct SnapshotFigures {
    /// Rows settled, by task and table.
    rows: Family<TableLabels, Counter>,
    /// The estimate, by task and table.
    estimated: Family<TableLabels, Gauge>,
    /// Snapshots running.
    running: Gauge,
    /// The running snapshots by id.
    board: Mutex<BTreeMap<i64, RunningSnapshot>>,
}

impl SnapshotFigures {
    /// Registers the figures in `reg`.
    pub(super) fn register(reg: &mut Registry) -> SnapshotFigures {
        let rows = Family::<TableLabels, Counter>::default();
        reg.register(
            "snapshot_rows",
            "Rows read by snapshots and settled (delivered or dead-lettered), by task and table (db.table)",
            rows.clone(),
        );
        let estimated = Family::<TableLabels, Gauge>::default();
        reg.register(
            "snapshot_rows_estimated",
            "The server's estimate of the rows of a table being snapshotted (information_schema.TABLES), by task and table",
            estimated.clone(),
        );
        let running = Gauge::default();
        reg.register("snapshot_running", "Snapshots being read", running.clone());
        SnapshotFigures {
            rows,
            estimated,
            running,
            board: Mutex::new(BTreeMap::new()),
        }
    }

    /// Snapshot `id` of `task` starts (or resumes) reading `table` (`db.table`),
    /// `rows_done` of an estimated `rows_estimated` settled already.
    pub(crate) fn table_started(
        &self,
        id: i64,
        task: &str,
        table: &str,
        rows_done: u64,
        rows_estimated: u64,
    ) {
        let labels = TableLabels {
            task: task.to_string(),
            table: table.to_string(),
        };
        self.estimated
            .get_or_create(&labels)
            .set(i64::try_from(rows_estimated).unwrap_or(i64::MAX));
        let _ = self.rows.get_or_create(&labels);
        if let Ok(mut board) = self.board.lock() {
            board.insert(
                id,
                RunningSnapshot {
                    id,
                    task: task.to_string(),
                    table: table.to_string(),
                    rows_done,
                    rows_estimated,
                },
            );
            self.running.set(board.len() as i64);
        }
    }

    /// `rows` more rows of snapshot `id`'s `table` of `task` are settled.
    pub(crate) fn rows_settled(&self, id: i64, task: &str, table: &str, rows: u64) {
        self.rows
            .get_or_create(&TableLabels {
                task: task.to_string(),
                table: table.to_string(),
            })
            .inc_by(rows);
        if let Ok(mut board) = self.board.lock() {
            if let Some(s) = board.get_mut(&id).filter(|s| s.table == table) {
                s.rows_done += rows;
            }
        }
    }

    /// Snapshot `id` ended (done, failed or cancelled).
    pub(crate) fn finished(&self, id: i64) {
        if let Ok(mut board) = self.board.lock() {
            board.remove(&id);
            self.running.set(board.len() as i64);
        }
    }

    /// The snapshots running, by id.
    pub fn running(&self) -> Vec<RunningSnapshot> {
        self.board
            .lock()
            .map(|b| b.values().cloned().collect())
            .unwrap_or_default()
    }
}
