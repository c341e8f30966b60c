//! Snapshots in the running pipeline (docs/snapshot.md): a reader beside
//! the binlog reader takes up the requests in the state store, reads each
//! table in chunks on its own connection and hands every chunk to the loop,
//! one at a time; the loop keeps the chunk's watermark window over the
//! stream and emits the chunk's rows as `read` jobs at the high watermark,
//! in the stream's sequence, so ordered delivery puts a read before every
//! later change of its row. A chunk's progress is saved once its reads are
//! settled, so a restart continues after the last settled chunk.
//!
//! The protocol, per chunk:
//! 1. the reader asks the loop to open a window on the table
//!    ([`Request::Open`]) and waits for the answer: from then on, the loop
//!    notes every change of the table with its position (the stream may pass
//!    the low watermark while the chunk's SELECT runs);
//! 2. the reader reads the chunk (low watermark, SELECT, high watermark)
//!    and hands it over ([`Request::Chunk`]);
//! 3. when the stream reaches the high watermark (a transaction end at or
//!    past it, or the binlog reader idle past it with everything taken in),
//!    the loop settles the window, submits the rows that had no change in
//!    the window, queues the chunk's progress until those reads are settled
//!    and answers ([`ChunkOutcome`]); or asks for the chunk again.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SnapshotMode, TaskConfig};
use crate::metrics::Metrics;
use crate::snapshot::chunk::prepare_session;
use crate::snapshot::plan::estimate_rows;
use crate::snapshot::{
    plan_table, read_chunk, BinlogPos, Chunk, Cursor, SnapshotError, TablePlan, Window,
};
use crate::source::connect::{self, Flavour, ServerInfo};
use crate::source::value::DecodeOptions;
use crate::store::snapshot::{
    Advance, SnapshotKind, SnapshotRequest, SnapshotRow, SnapshotState, TableProgress,
};
use crate::store::Store;

/// How often the reader looks for new requests when it has none.
const POLL: Duration = Duration::from_millis(500);
/// Attempts at a chunk whose connection is lost before the snapshot fails.
const RECONNECTS: u32 = 8;

/// What the snapshot reader asks of the loop.
pub(super) enum Request {
    /// Start noting the changes of this table for the next chunk's window;
    /// answered once the loop does.
    Open {
        /// The window (no watermarks yet).
        window: Box<Window>,
        /// Answered when it is open.
        ack: oneshot::Sender<()>,
    },
    /// A chunk read: emit it at its high watermark.
    Chunk {
        /// The chunk and what its reads need.
        read: Box<ChunkRead>,
        /// What became of it.
        reply: oneshot::Sender<ChunkOutcome>,
    },
    /// Every chunk of the snapshot is emitted: mark it done once its reads
    /// are settled; answered then.
    Finish {
        /// The snapshot.
        snapshot_id: i64,
        /// Answered when it is recorded as done.
        reply: oneshot::Sender<()>,
    },
}

/// One chunk handed to the loop.
pub(super) struct ChunkRead {
    /// The snapshot's id.
    pub snapshot_id: i64,
    /// The task's index.
    pub task: usize,
    /// The task's id (for progress and metrics).
    pub task_id: String,
    /// How the table is read.
    pub plan: Arc<TablePlan>,
    /// The rows and watermarks.
    pub chunk: Chunk,
    /// The chunk's number in its table.
    pub number: u64,
    /// The server's estimate of the table's rows.
    pub rows_estimated: u64,
    /// When it was read, seconds since the epoch.
    pub read_at: i64,
}

/// What the loop did with a chunk.
#[derive(Debug)]
pub(super) enum ChunkOutcome {
    /// Its rows were submitted (`rows`; `dropped` had newer changes).
    Emitted {
        /// Rows submitted.
        rows: usize,
        /// Rows dropped by the window.
        dropped: usize,
    },
    /// The window could not tell which rows are safe: read it again.
    Reread(String),
}

/// A chunk's or a snapshot's progress, recorded once the jobs before
/// `upto` are settled.
pub(super) enum Progress {
    /// A chunk's reads.
    Chunk {
        /// Settled when the sink's watermark reaches it.
        upto: u64,
        /// The snapshot.
        snapshot_id: i64,
        /// The task.
        task_id: String,
        /// Database.
        db: String,
        /// Table.
        table: String,
        /// The chunk's last key (JSON).
        last_key: Option<String>,
        /// Rows submitted.
        rows: u64,
        /// The estimate.
        rows_estimated: u64,
        /// It was the table's last chunk.
        table_done: bool,
    },
    /// The snapshot's end.
    Finish {
        /// Settled when the sink's watermark reaches it.
        upto: u64,
        /// The snapshot.
        snapshot_id: i64,
        /// Answered once recorded.
        reply: oneshot::Sender<()>,
    },
}

impl Progress {
    fn upto(&self) -> u64 {
        match self {
            Progress::Chunk { upto, .. } | Progress::Finish { upto, .. } => *upto,
        }
    }
}

/// The loop's side: the requests, the open window, the chunk waiting for
/// its high watermark, and the progress waiting for settlement.
pub(super) struct Snapshots {
    /// From the snapshot reader; `None` once it is gone (or never ran).
    pub requests: Option<mpsc::Receiver<Request>>,
    /// The open window.
    pub window: Option<Window>,
    /// The chunk waiting for its high watermark.
    pub waiting: Option<(Box<ChunkRead>, oneshot::Sender<ChunkOutcome>)>,
    /// Progress waiting for settlement, in sequence order.
    pub progress: VecDeque<Progress>,
    /// The stream's last transaction end taken in while a window is open.
    pub last_commit: Option<BinlogPos>,
    /// The state store (progress).
    pub store: Arc<Mutex<Store>>,
    /// Snapshot figures.
    pub metrics: Arc<Metrics>,
}

impl Snapshots {
    /// The loop's side without a reader (nothing to snapshot).
    pub fn idle(store: Arc<Mutex<Store>>, metrics: Arc<Metrics>) -> Snapshots {
        Snapshots {
            requests: None,
            window: None,
            waiting: None,
            progress: VecDeque::new(),
            last_commit: None,
            store,
            metrics,
        }
    }

    /// The next request; pending for ever without a reader.
    pub async fn next_request(&mut self) -> Option<Request> {
        match &mut self.requests {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    /// The high watermark of the chunk waiting for it.
    pub fn waiting_high(&self) -> Option<&BinlogPos> {
        self.waiting.as_ref()?;
        self.window.as_ref()?.high()
    }

    /// Records the progress whose reads the watermark `settled` covers.
    pub fn settle(&mut self, settled: u64) {
        while self.progress.front().is_some_and(|p| p.upto() <= settled) {
            if let Some(p) = self.progress.pop_front() {
                self.record(p);
            }
        }
    }

    fn record(&self, p: Progress) {
        let Ok(mut store) = self.store.lock() else {
            return;
        };
        match p {
            Progress::Chunk {
                snapshot_id,
                task_id,
                db,
                table,
                last_key,
                rows,
                rows_estimated,
                table_done,
                ..
            } => {
                let a = Advance {
                    snapshot_id,
                    db: &db,
                    table: &table,
                    last_key: last_key.as_deref(),
                    rows,
                    rows_estimated,
                    table_done,
                };
                match store.advance_snapshot(&a) {
                    Ok(true) => {
                        let name = format!("{db}.{table}");
                        self.metrics
                            .snapshots
                            .rows_settled(snapshot_id, &task_id, &name, rows);
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!(
                        snapshot = snapshot_id,
                        "{e}; the chunk is read again after a restart"
                    ),
                }
            }
            Progress::Finish {
                snapshot_id, reply, ..
            } => {
                match store.finish_snapshot(snapshot_id, None) {
                    Ok(true) => {
                        tracing::info!(
                            snapshot = snapshot_id,
                            "snapshot done: every row read and settled"
                        )
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!(snapshot = snapshot_id, "{e}"),
                }
                let _ = reply.send(());
            }
        }
    }
}

/// Whether the stream has passed `high` with everything before it taken
/// in, while idle: the binlog reader waited for the server with all it had
/// read before `sent_upto` sent, and the loop has nothing left to take in.
pub(super) fn idle_past(high: &BinlogPos, sent_upto: Option<(String, u64)>, empty: bool) -> bool {
    match sent_upto {
        Some((file, pos)) => empty && BinlogPos::new(&file, pos) >= *high,
        None => false,
    }
}

/// Records the initial snapshots the config asks for: a task with
/// `snapshot: initial` that has none yet (pending, running, done or
/// cancelled; a failed one is tried again) gets one for its tables.
pub(super) fn request_initial(config: &Config, store: &Mutex<Store>) -> Result<(), String> {
    let mut store = store
        .lock()
        .map_err(|_| "the state store is unusable".to_string())?;
    let existing = store.snapshots().map_err(|e| e.to_string())?;
    for task in config
        .tasks
        .iter()
        .filter(|t| t.snapshot == SnapshotMode::Initial)
    {
        let has = existing.iter().any(|s| {
            s.task_id == task.task_id
                && s.kind == SnapshotKind::Initial.as_str()
                && s.state != SnapshotState::Failed
        });
        if has {
            continue;
        }
        let (id, _) = store
            .request_snapshot(&SnapshotRequest {
                task_id: task.task_id.clone(),
                table: None,
                condition: None,
                kind: SnapshotKind::Initial,
            })
            .map_err(|e| e.to_string())?;
        tracing::info!(
            snapshot = id,
            task = %task.task_id,
            "initial snapshot requested (snapshot: initial): the task's rows that exist already are read while the stream goes on"
        );
    }
    Ok(())
}

/// How a table's reading ended.
enum TableEnd {
    /// Every chunk emitted.
    Done,
    /// The snapshot is no longer running (cancelled).
    Cancelled,
    /// The pipeline is stopping.
    Stopped,
}

/// The snapshot reader: takes up the requests in the state store, one
/// snapshot at a time, oldest first.
pub(super) struct Runner {
    /// The configuration (tasks, database, chunk size).
    pub config: Arc<Config>,
    /// The server.
    pub info: ServerInfo,
    /// The state store (requests, states).
    pub store: Arc<Mutex<Store>>,
    /// To the loop.
    pub to_intake: mpsc::Sender<Request>,
    /// Snapshot figures.
    pub metrics: Arc<Metrics>,
    /// The pipeline's stop.
    pub cancel: CancellationToken,
}

impl Runner {
    /// Runs until the pipeline stops.
    pub async fn run(self) {
        let mut warned = HashSet::new();
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
            match self.next_snapshot(&mut warned) {
                Some((row, task)) => {
                    if !self.run_snapshot(row, task).await {
                        return;
                    }
                }
                None => {
                    tokio::select! {
                        _ = self.cancel.cancelled() => return,
                        _ = tokio::time::sleep(POLL) => {}
                    }
                }
            }
        }
    }

    /// The oldest pending or running snapshot of a configured task.
    fn next_snapshot(&self, warned: &mut HashSet<i64>) -> Option<(SnapshotRow, usize)> {
        let rows = match self.store.lock().map(|s| s.snapshots()) {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                tracing::error!("{e}; snapshots wait");
                return None;
            }
            Err(_) => return None,
        };
        for row in rows.into_iter().filter(|r| r.state.is_active()) {
            match self
                .config
                .tasks
                .iter()
                .position(|t| t.task_id == row.task_id)
            {
                Some(task) => return Some((row, task)),
                None => {
                    if warned.insert(row.id) {
                        tracing::warn!(snapshot = row.id, task = %row.task_id, "snapshot waits: its task is not in the configuration this process runs (cancel it with `pikachu snapshot cancel --task {}`)", row.task_id);
                    }
                }
            }
        }
        None
    }

    /// Reads one snapshot to its end; false when the pipeline stops.
    async fn run_snapshot(&self, row: SnapshotRow, task: usize) -> bool {
        let id = row.id;
        let started = self
            .store
            .lock()
            .map(|mut s| s.start_snapshot(id))
            .map_err(|_| ());
        match started {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return true,
            Ok(Err(e)) => {
                tracing::error!(snapshot = id, "{e}");
                return wait_or_stop(&self.cancel, POLL).await;
            }
            Err(_) => return false,
        }
        let task_cfg = &self.config.tasks[task];
        tracing::info!(snapshot = id, task = %task_cfg.task_id, kind = %row.kind, condition = row.condition.as_deref().unwrap_or(""), "snapshot started");
        for (db, table) in tables_of(&self.config, task_cfg, &row) {
            let progress = row.progress.iter().find(|p| p.db == db && p.table == table);
            if progress.is_some_and(|p| p.done) {
                continue;
            }
            match self.run_table(&row, task, &db, &table, progress).await {
                Ok(TableEnd::Done) => {}
                Ok(TableEnd::Cancelled) => {
                    tracing::info!(snapshot = id, task = %task_cfg.task_id, "snapshot cancelled");
                    self.metrics.snapshots.finished(id);
                    return true;
                }
                Ok(TableEnd::Stopped) => return false,
                Err(e) => {
                    self.fail(id, &task_cfg.task_id, &e);
                    return true;
                }
            }
        }
        // Done once its reads are settled.
        let (reply, done) = oneshot::channel();
        if self
            .to_intake
            .send(Request::Finish {
                snapshot_id: id,
                reply,
            })
            .await
            .is_err()
        {
            return false;
        }
        let finished = tokio::select! {
            r = done => r.is_ok(),
            _ = self.cancel.cancelled() => false,
        };
        self.metrics.snapshots.finished(id);
        finished
    }

    /// Records the snapshot as failed with `e`'s message; the stream goes on.
    fn fail(&self, id: i64, task_id: &str, e: &SnapshotError) {
        let msg = e.to_string();
        tracing::error!(snapshot = id, task = %task_id, "snapshot failed: {msg}; the stream goes on (start it again with `pikachu snapshot start` once fixed)");
        if let Ok(mut store) = self.store.lock() {
            if let Err(e) = store.finish_snapshot(id, Some(&msg)) {
                tracing::error!(snapshot = id, "{e}");
            }
        }
        self.metrics.snapshots.finished(id);
    }

    /// A connection set up for snapshot reads of `db`.`table`.
    async fn session(&self, db: &str, table: &str) -> Result<mysql_async::Conn, SnapshotError> {
        let mut conn = connect::connect(&self.config.database).await?;
        prepare_session(&mut conn, db, table).await?;
        Ok(conn)
    }

    /// Reads one table in chunks, from where its progress says.
    async fn run_table(
        &self,
        row: &SnapshotRow,
        task: usize,
        db: &str,
        table: &str,
        progress: Option<&TableProgress>,
    ) -> Result<TableEnd, SnapshotError> {
        let mariadb = self.info.flavour == Flavour::MariaDb;
        let mut conn = self.session(db, table).await?;
        let cond = row.condition.as_deref();
        let mut plan = Arc::new(plan_table(&mut conn, mariadb, db, table, cond).await?);
        let estimated = estimate_rows(&mut conn, db, table).await?;
        let mut cursor = match progress.and_then(|p| p.last_key.as_deref()) {
            Some(k) => Some(Cursor::from_json(k).map_err(|detail| SnapshotError::Value {
                db: db.to_string(),
                table: table.to_string(),
                column: "(key)".into(),
                detail,
            })?),
            None => None,
        };
        let mut number = progress.map_or(0, |p| p.chunks);
        let before = progress.map_or(0, |p| p.rows_done);
        let name = format!("{db}.{table}");
        let task_id = self.config.tasks[task].task_id.clone();
        self.metrics
            .snapshots
            .table_started(row.id, &task_id, &name, before, estimated);
        tracing::info!(snapshot = row.id, task = %task_id, table = %name, rows_estimated = estimated, resumed_after_rows = before, "snapshot: reading table");
        let started = Instant::now();
        let (mut rows, mut dropped, mut failures) = (0u64, 0u64, 0u32);
        let opts = DecodeOptions::default();
        let limit = self.config.snapshot.chunk_size.max(1);
        loop {
            if self.cancel.is_cancelled() {
                return Ok(TableEnd::Stopped);
            }
            if !self.is_running(row.id) {
                return Ok(TableEnd::Cancelled);
            }
            let t0 = Instant::now();
            let window = Box::new(Window::open(db, table, plan.key_names()));
            let (ack, opened) = oneshot::channel();
            if self
                .to_intake
                .send(Request::Open { window, ack })
                .await
                .is_err()
                || opened.await.is_err()
            {
                return Ok(TableEnd::Stopped);
            }
            let t_open = t0.elapsed();
            let read_at = crate::metrics::unix_now();
            let chunk = match read_chunk(
                &mut conn,
                &self.info,
                &plan,
                cursor.as_ref(),
                limit,
                &opts,
            )
            .await
            {
                Ok(c) => c,
                Err(SnapshotError::Changed { detail, .. }) => {
                    tracing::info!(snapshot = row.id, table = %name, "snapshot: the table's definition changed ({detail}); planning it again");
                    plan = Arc::new(plan_table(&mut conn, mariadb, db, table, cond).await?);
                    continue;
                }
                Err(e) if e.is_transient() && failures < RECONNECTS => {
                    failures += 1;
                    tracing::warn!(snapshot = row.id, table = %name, attempt = failures, "{e}; reconnecting");
                    let wait = crate::backoff::full_jitter(
                        Duration::from_millis(200),
                        Duration::from_secs(5),
                        failures,
                        crate::backoff::rand01(),
                    );
                    if !wait_or_stop(&self.cancel, wait).await {
                        return Ok(TableEnd::Stopped);
                    }
                    match self.session(db, table).await {
                        Ok(c) => conn = c,
                        Err(e) if e.is_transient() => {}
                        Err(e) => return Err(e),
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            failures = 0;
            let t_read = t0.elapsed();
            let last = chunk.last.clone();
            let done = chunk.done;
            let read = Box::new(ChunkRead {
                snapshot_id: row.id,
                task,
                task_id: task_id.clone(),
                plan: plan.clone(),
                chunk,
                number,
                rows_estimated: estimated,
                read_at,
            });
            let (reply, outcome) = oneshot::channel();
            if self
                .to_intake
                .send(Request::Chunk { read, reply })
                .await
                .is_err()
            {
                return Ok(TableEnd::Stopped);
            }
            let outcome = tokio::select! {
                o = outcome => o,
                _ = self.cancel.cancelled() => return Ok(TableEnd::Stopped),
            };
            tracing::debug!(snapshot = row.id, table = %name, chunk = number, open_us = t_open.as_micros() as u64, read_us = (t_read - t_open).as_micros() as u64, emit_us = (t0.elapsed() - t_read).as_micros() as u64, "snapshot: chunk timings");
            match outcome {
                Ok(ChunkOutcome::Emitted {
                    rows: r,
                    dropped: d,
                }) => {
                    rows += r as u64;
                    dropped += d as u64;
                    number += 1;
                    if last.is_some() {
                        cursor = last;
                    }
                    if done {
                        break;
                    }
                }
                Ok(ChunkOutcome::Reread(reason)) => {
                    tracing::debug!(snapshot = row.id, table = %name, "snapshot: chunk read again: {reason}");
                }
                Err(_) => return Ok(TableEnd::Stopped),
            }
        }
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(snapshot = row.id, task = %task_id, table = %name, rows, dropped_for_newer_changes = dropped, secs = format!("{secs:.1}"), rows_per_sec = format!("{:.0}", rows as f64 / secs.max(1e-3)), "snapshot: table read");
        Ok(TableEnd::Done)
    }

    /// Whether snapshot `id` is still running (not cancelled).
    fn is_running(&self, id: i64) -> bool {
        let Ok(store) = self.store.lock() else {
            return false;
        };
        match store.snapshots() {
            Ok(rows) => rows
                .iter()
                .any(|r| r.id == id && r.state == SnapshotState::Running),
            // Unreadable: go on (a cancel is also seen by the progress).
            Err(_) => true,
        }
    }
}

/// The tables of a snapshot: the one it names, else the task's.
fn tables_of(config: &Config, task: &TaskConfig, row: &SnapshotRow) -> Vec<(String, String)> {
    match row.table.as_deref().and_then(|t| t.split_once('.')) {
        Some((db, t)) => vec![(db.to_string(), t.to_string())],
        None => vec![crate::snapshot::cli::task_table(config, task)],
    }
}

/// Waits `d`; false if the pipeline stops first.
async fn wait_or_stop(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_past_needs_everything_taken_in() {
        let h = BinlogPos::new("bin.000002", 400);
        assert!(idle_past(&h, Some(("bin.000002".into(), 400)), true));
        assert!(idle_past(&h, Some(("bin.000003".into(), 4)), true));
        assert!(!idle_past(&h, Some(("bin.000002".into(), 399)), true));
        assert!(
            !idle_past(&h, Some(("bin.000002".into(), 500)), false),
            "events still to take in"
        );
        assert!(!idle_past(&h, None, true));
    }
}
