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
use crate::event::Change;
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
    /// Close every open window (the chunk read ahead is dropped: the chunk
    /// before it has to be read again, or the read ahead failed).
    Discard,
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

/// The loop's side: the requests, the open windows, the chunk waiting for
/// its high watermark, and the progress waiting for settlement.
///
/// At most two windows are open: the chunk handed over (the front, whose
/// rows wait for its high watermark) and the next one, which the reader
/// reads meanwhile. A chunk is handed over only once the one before it is
/// emitted, so the waiting chunk is always the front window's.
pub(super) struct Snapshots {
    /// From the snapshot reader; `None` once it is gone (or never ran).
    pub requests: Option<mpsc::Receiver<Request>>,
    /// The open windows, oldest first.
    pub windows: VecDeque<Window>,
    /// The chunk of the front window, waiting for its high watermark.
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
            windows: VecDeque::new(),
            waiting: None,
            progress: VecDeque::new(),
            last_commit: None,
            store,
            metrics,
        }
    }

    /// The next request; pending for ever without a reader.
    pub(crate) async fn next_request(&mut self) -> Option<Request> {
        match &mut self.requests {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    /// The high watermark of the chunk waiting for it.
    pub(crate) fn waiting_high(&self) -> Option<&BinlogPos> {
        self.waiting.as_ref()?;
        self.windows.front()?.high()
    }

    /// Opens a window behind those open: a transaction end seen before it
    /// still counts for the chunks already open, not for a first one.
    pub fn open(&mut self, window: Window) {
        if self.windows.is_empty() {
            self.last_commit = None;
        }
        self.windows.push_back(window);
    }

    /// Closes every window; a chunk still waiting is asked for again.
    pub(crate) fn discard(&mut self) {
        self.windows.clear();
        if let Some((_, reply)) = self.waiting.take() {
            let _ = reply.send(ChunkOutcome::Reread("its window was discarded".into()));
        }
    }

    /// Takes note of one change of the stream in every open window (at
    /// `at` instead of its own position when given: XA rows count where
    /// their XA COMMIT is).
    pub fn observe(&mut self, change: &Change, at: Option<&BinlogPos>) {
        for w in &mut self.windows {
            match at {
                Some(at) => w.observe_at(change, at.clone()),
                None => w.observe(change),
            }
        }
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
pub(super) fn request_initial(
    config: &Config,
    store: &Mutex<Store>,
) -> Result<(), super::PipelineError> {
    let mut store = store.lock().map_err(|_| super::PipelineError::Poisoned)?;
    let existing = store.snapshots()?;
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
        let (id, _) = store.request_snapshot(&SnapshotRequest {
            task_id: task.task_id.clone(),
            table: None,
            condition: None,
            kind: SnapshotKind::Initial,
        })?;
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

    /// Reads one table in chunks, from where its progress says. While the
    /// loop waits for chunk N's high watermark and emits it, the next chunk
    /// is read (its window opened before chunk N is handed over); it is
    /// handed over once chunk N is emitted, and dropped if chunk N has to
    /// be read again, so saved progress never skips a chunk.
    async fn run_table(
        &self,
        row: &SnapshotRow,
        task: usize,
        db: &str,
        table: &str,
        progress: Option<&TableProgress>,
    ) -> Result<TableEnd, SnapshotError> {
        let mut t = TableRun::start(self, row, task, db, table, progress).await?;
        let started = Instant::now();
        // The chunk read ahead (its window open in the loop), not handed over.
        let mut ahead: Option<Result<(Chunk, i64), SnapshotError>> = None;
        loop {
            if self.cancel.is_cancelled() {
                return Ok(TableEnd::Stopped);
            }
            if !self.is_running(row.id) {
                if ahead.is_some() && !t.discard().await {
                    return Ok(TableEnd::Stopped);
                }
                return Ok(TableEnd::Cancelled);
            }
            let t0 = Instant::now();
            let read = match ahead.take() {
                Some(read) => read,
                None => {
                    let Some(ack) = t.open().await else {
                        return Ok(TableEnd::Stopped);
                    };
                    if ack.await.is_err() {
                        return Ok(TableEnd::Stopped);
                    }
                    t.read(t.cursor.clone().as_ref()).await
                }
            };
            let (chunk, read_at) = match read {
                Ok(c) => c,
                Err(e) => {
                    if !t.discard().await || !t.recover(e).await? {
                        return Ok(TableEnd::Stopped);
                    }
                    continue;
                }
            };
            t.failures = 0;
            let (last, done) = (chunk.last.clone(), chunk.done);
            // The next chunk's window opens before this chunk is handed over.
            let ack = match done {
                true => None,
                false => match t.open().await {
                    Some(ack) => Some(ack),
                    None => return Ok(TableEnd::Stopped),
                },
            };
            let Some(outcome) = t.hand_over(chunk, read_at).await else {
                return Ok(TableEnd::Stopped);
            };
            let t_handed = t0.elapsed();
            if let Some(ack) = ack {
                if ack.await.is_err() {
                    return Ok(TableEnd::Stopped);
                }
                let after = last.clone().or_else(|| t.cursor.clone());
                ahead = Some(t.read(after.as_ref()).await);
            }
            let t_ahead = t0.elapsed();
            let outcome = tokio::select! {
                o = outcome => o,
                _ = self.cancel.cancelled() => return Ok(TableEnd::Stopped),
            };
            tracing::debug!(snapshot = row.id, table = %t.name, chunk = t.number, read_ahead_us = (t_ahead - t_handed).as_micros() as u64, wait_us = (t0.elapsed() - t_ahead).as_micros() as u64, "snapshot: chunk timings");
            match outcome {
                Ok(ChunkOutcome::Emitted { rows, dropped }) => {
                    t.emitted(rows, dropped, last);
                    if done {
                        break;
                    }
                }
                Ok(ChunkOutcome::Reread(reason)) => {
                    tracing::debug!(snapshot = row.id, table = %t.name, "snapshot: chunk read again: {reason}");
                    // The chunk read ahead starts after it: dropped, with
                    // every window still open.
                    ahead = None;
                    if !t.discard().await {
                        return Ok(TableEnd::Stopped);
                    }
                }
                Err(_) => return Ok(TableEnd::Stopped),
            }
        }
        t.finished(started);
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

/// One table being read: its connection, plan, cursor and counts.
struct TableRun<'a> {
    /// The snapshot reader.
    runner: &'a Runner,
    /// The snapshot.
    snapshot_id: i64,
    /// The snapshot's condition (`--where`).
    condition: Option<String>,
    /// The task's index.
    task: usize,
    /// The task's id.
    task_id: String,
    /// Database.
    db: String,
    /// Table.
    table: String,
    /// `db.table`, for messages and metrics.
    name: String,
    /// The snapshot connection.
    conn: mysql_async::Conn,
    /// How the table is read (planned again when its definition changes).
    plan: Arc<TablePlan>,
    /// The server's estimate of the table's rows.
    estimated: u64,
    /// The last key of the last chunk emitted.
    cursor: Option<Cursor>,
    /// The next chunk's number.
    number: u64,
    /// Rows submitted.
    rows: u64,
    /// Rows dropped for newer changes.
    dropped: u64,
    /// Connection failures in a row.
    failures: u32,
    /// Rows per chunk.
    limit: usize,
    /// How values are rendered.
    opts: DecodeOptions,
}

impl<'a> TableRun<'a> {
    /// Connects, plans the table and takes up its progress.
    async fn start(
        runner: &'a Runner,
        row: &SnapshotRow,
        task: usize,
        db: &str,
        table: &str,
        progress: Option<&TableProgress>,
    ) -> Result<TableRun<'a>, SnapshotError> {
        let mariadb = runner.info.flavour == Flavour::MariaDb;
        let mut conn = runner.session(db, table).await?;
        let cond = row.condition.as_deref();
        let plan = Arc::new(plan_table(&mut conn, mariadb, db, table, cond).await?);
        let estimated = estimate_rows(&mut conn, db, table).await?;
        let cursor = match progress.and_then(|p| p.last_key.as_deref()) {
            Some(k) => Some(Cursor::from_json(k).map_err(|detail| SnapshotError::Value {
                db: db.to_string(),
                table: table.to_string(),
                column: "(key)".into(),
                detail,
            })?),
            None => None,
        };
        let before = progress.map_or(0, |p| p.rows_done);
        let name = format!("{db}.{table}");
        let task_id = runner.config.tasks[task].task_id.clone();
        runner
            .metrics
            .snapshots
            .table_started(row.id, &task_id, &name, before, estimated);
        tracing::info!(snapshot = row.id, task = %task_id, table = %name, rows_estimated = estimated, resumed_after_rows = before, "snapshot: reading table");
        Ok(TableRun {
            runner,
            snapshot_id: row.id,
            condition: row.condition.clone(),
            task,
            task_id,
            db: db.to_string(),
            table: table.to_string(),
            name,
            conn,
            plan,
            estimated,
            cursor,
            number: progress.map_or(0, |p| p.chunks),
            rows: 0,
            dropped: 0,
            failures: 0,
            limit: runner.config.snapshot.chunk_size.max(1),
            opts: DecodeOptions::default(),
        })
    }

    /// Asks the loop to open a window for the next chunk; the receiver is
    /// answered once it is open. `None`: the pipeline is stopping.
    async fn open(&self) -> Option<oneshot::Receiver<()>> {
        let window = Box::new(Window::open(&self.db, &self.table, self.plan.key_names()));
        let (ack, opened) = oneshot::channel();
        let sent = self.runner.to_intake.send(Request::Open { window, ack });
        sent.await.ok().map(|_| opened)
    }

    /// Asks the loop to close its windows; false: the pipeline is stopping.
    async fn discard(&self) -> bool {
        self.runner.to_intake.send(Request::Discard).await.is_ok()
    }

    /// Reads the chunk after `after`, and when it was read.
    async fn read(&mut self, after: Option<&Cursor>) -> Result<(Chunk, i64), SnapshotError> {
        let read_at = crate::metrics::unix_now();
        let info = &self.runner.info;
        let chunk = read_chunk(
            &mut self.conn,
            info,
            &self.plan,
            after,
            self.limit,
            &self.opts,
        )
        .await?;
        Ok((chunk, read_at))
    }

    /// After a failed read: plans the table again if its definition
    /// changed, reconnects (with backoff) if the connection was lost.
    /// Ok(false): the pipeline is stopping; an error: the snapshot fails.
    async fn recover(&mut self, e: SnapshotError) -> Result<bool, SnapshotError> {
        let (id, name) = (self.snapshot_id, &self.name);
        match e {
            SnapshotError::Changed { detail, .. } => {
                tracing::info!(snapshot = id, table = %name, "snapshot: the table's definition changed ({detail}); planning it again");
                let mariadb = self.runner.info.flavour == Flavour::MariaDb;
                let cond = self.condition.as_deref();
                let plan = plan_table(&mut self.conn, mariadb, &self.db, &self.table, cond).await?;
                self.plan = Arc::new(plan);
                Ok(true)
            }
            e if e.is_transient() && self.failures < RECONNECTS => {
                self.failures += 1;
                tracing::warn!(snapshot = id, table = %name, attempt = self.failures, "{e}; reconnecting");
                let wait = crate::backoff::full_jitter(
                    Duration::from_millis(200),
                    Duration::from_secs(5),
                    self.failures,
                    crate::backoff::rand01(),
                );
                if !wait_or_stop(&self.runner.cancel, wait).await {
                    return Ok(false);
                }
                match self.runner.session(&self.db, &self.table).await {
                    Ok(c) => self.conn = c,
                    Err(e) if e.is_transient() => {}
                    Err(e) => return Err(e),
                }
                Ok(true)
            }
            e => Err(e),
        }
    }

    /// Hands a chunk read to the loop (its window is the front one); the
    /// receiver gets what became of it. `None`: the pipeline is stopping.
    async fn hand_over(
        &self,
        chunk: Chunk,
        read_at: i64,
    ) -> Option<oneshot::Receiver<ChunkOutcome>> {
        let read = Box::new(ChunkRead {
            snapshot_id: self.snapshot_id,
            task: self.task,
            task_id: self.task_id.clone(),
            plan: self.plan.clone(),
            chunk,
            number: self.number,
            rows_estimated: self.estimated,
            read_at,
        });
        let (reply, outcome) = oneshot::channel();
        let sent = self.runner.to_intake.send(Request::Chunk { read, reply });
        sent.await.ok().map(|_| outcome)
    }

    /// A chunk ending at `last` was emitted.
    fn emitted(&mut self, rows: usize, dropped: usize, last: Option<Cursor>) {
        self.rows += rows as u64;
        self.dropped += dropped as u64;
        self.number += 1;
        if last.is_some() {
            self.cursor = last;
        }
    }

    /// Every chunk emitted: says so.
    fn finished(&self, started: Instant) {
        let secs = started.elapsed().as_secs_f64();
        let rate = self.rows as f64 / secs.max(1e-3);
        tracing::info!(snapshot = self.snapshot_id, task = %self.task_id, table = %self.name, rows = self.rows, dropped_for_newer_changes = self.dropped, secs = format!("{secs:.1}"), rows_per_sec = format!("{rate:.0}"), "snapshot: table read");
    }
}

/// The tables of a snapshot: the one it names, else the task's.
fn tables_of(config: &Config, task: &TaskConfig, row: &SnapshotRow) -> Vec<(String, String)> {
    match row.table.as_deref().and_then(|t| t.split_once('.')) {
        Some((db, t)) => vec![(db.to_string(), t.to_string())],
        None => vec![config.task_table(task)],
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

    fn snapshots() -> (tempfile::TempDir, Snapshots) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let snaps = Snapshots::idle(
            Arc::new(Mutex::new(store)),
            Arc::new(Metrics::new::<&str>(&[])),
        );
        (dir, snaps)
    }

    fn update_of(id: &str, file: &str, pos: u64) -> Change {
        use crate::event::{ChangeKind, Column, RowImage, SourcePosition, Table};
        let table = Arc::new(Table {
            database: "d".into(),
            name: "t".into(),
            columns: vec![Column::new("id"), Column::new("v")],
            primary_key: vec![0],
        });
        let image = |v: &str| {
            let mut img = RowImage::default();
            img.push_json(id.as_bytes());
            img.push_json(v.as_bytes());
            img
        };
        Change {
            kind: ChangeKind::Update,
            table,
            before: Some(image("1")),
            after: Some(image("2")),
            source: SourcePosition {
                file: file.into(),
                pos,
                gtid: None,
                row: 0,
                row_in_trx: 0,
            },
            timestamp: 0,
        }
    }

    #[test]
    fn a_change_counts_for_every_open_window() {
        // Chunk N handed over (bounds known), chunk N+1 read ahead (open
        // since before N was handed over): a change in both windows must
        // drop its row from either chunk.
        let (_dir, mut s) = snapshots();
        let key = || vec!["id".to_string()];
        s.open(Window::open("d", "t", key()));
        s.open(Window::open("d", "t", key()));
        s.windows[0].set_bounds(BinlogPos::new("b.1", 100), BinlogPos::new("b.1", 300));
        s.observe(&update_of("6", "b.1", 90), None);
        s.observe(&update_of("7", "b.1", 200), None);
        s.windows[1].set_bounds(BinlogPos::new("b.1", 150), BinlogPos::new("b.1", 500));
        assert_eq!(s.windows[0].touched(), 1, "90 is before L = 100, 200 after");
        assert_eq!(s.windows[1].touched(), 1, "200 is after L = 150");
        // XA rows count where their XA COMMIT is.
        s.observe(
            &update_of("9", "b.1", 50),
            Some(&BinlogPos::new("b.1", 140)),
        );
        assert_eq!(s.windows[0].touched(), 2, "committed at 140, after L = 100");
        assert_eq!(
            s.windows[1].touched(),
            1,
            "committed at 140, before L = 150"
        );
    }

    #[test]
    fn a_second_window_keeps_the_last_commit_and_discard_closes_all() {
        let (_dir, mut s) = snapshots();
        let key = || vec!["id".to_string()];
        s.last_commit = Some(BinlogPos::new("b.1", 90));
        s.open(Window::open("d", "t", key()));
        assert_eq!(s.last_commit, None, "a first window starts afresh");
        s.last_commit = Some(BinlogPos::new("b.1", 95));
        s.open(Window::open("d", "t", key()));
        assert_eq!(s.last_commit, Some(BinlogPos::new("b.1", 95)));
        assert_eq!(s.windows.len(), 2);
        s.discard();
        assert!(s.windows.is_empty());
        assert!(s.waiting_high().is_none());
    }
}
