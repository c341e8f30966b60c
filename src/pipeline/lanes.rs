//! The sink of `pikachu run`: one lane per task, so that a dead, hanging or
//! slow endpoint never holds back the binlog or the other tasks.
//!
//! A lane is a task of its own with its own delivery engine (its own
//! `queue_size` and workers) and its own durable backlog on disk
//! (`store::backlog`). Jobs reach it over a short channel:
//!
//! - **In memory** (the healthy path, no disk): a job goes to the lane's
//!   engine while it has room. When it is full, the lane waits for room,
//!   and the binlog reader with it, as a single engine always did, but
//!   only for `SPILL_AFTER`.
//! - **Spilling**: when a job has waited that long, the lane copies every
//!   change its engine still holds to its backlog, then appends every new
//!   job there, in order; appended in batches, each one transaction with
//!   one fsync. A change is settled for the checkpoint once it is
//!   delivered, dead-lettered or durably in the backlog, so the checkpoint
//!   and the other tasks go on.
//! - **Draining**: while spilling, whenever the engine has room, the lane
//!   reads the backlog's oldest rows into it; a row is deleted once the
//!   engine settles it. The engine keeps each row's order as always, so
//!   per-row order holds across memory and disk. When every row is
//!   delivered and the engine is empty, the lane is back in memory.
//! - **Restart**: a lane whose backlog has rows starts spilling: the
//!   backlog goes out before the newer changes. What was in memory and not
//!   in the backlog is read again from the checkpoint, as before (at least
//!   once). Rows appended by an earlier run are delivered before rows of
//!   this run start (ordering keys are only compared within one run).
//!
//! The sink's watermark is the smallest sequence number any lane has not
//! settled (a job still in a lane's channel counts as not settled).

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::fanout::Rendered;
use super::sink::{Settlement, Sink, SinkError};
use crate::config::{DispatcherConfig, TaskConfig, WhenFull};
use crate::deliver::{Dispatcher, Job, OrderingKeys, SetupError, Stats, SubmitError, TaskFigures};
use crate::store::backlog::{Backlog, Extent, NewRow, Row};
use crate::store::{DeadLetter, Store, StoreError};

/// How long a job may wait for room in its lane's engine before the lane
/// spills to its backlog.
pub(crate) const SPILL_AFTER: Duration = Duration::from_millis(250);
/// Jobs between the fan-out and a lane.
const CHANNEL: usize = 256;
/// Most spilled jobs waiting for their write; the lane takes no more.
const MAX_BUFFER: usize = 8192;
/// Most rows one backlog read brings into the engine.
const READ_BATCH: usize = 1024;
/// Wait before trying a failed backlog write or read again.
const RETRY: Duration = Duration::from_secs(1);

/// What a lane tells the sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Mark {
    /// The smallest seq the lane holds unsettled.
    unsettled: Option<u64>,
    /// The last seq it took from its channel.
    seen: Option<u64>,
}

/// The lanes' marks, and a counter bumped whenever one moves.
#[derive(Debug)]
struct Marks {
    /// One per task.
    marks: Mutex<Vec<Mark>>,
    /// Bumped on every change of a mark.
    version: watch::Sender<u64>,
}

impl Marks {
    /// Stores a lane's mark; wakes the sink only when what the lane holds
    /// unsettled moved (taking a job never lets the watermark pass it).
    fn set(&self, lane: usize, mark: Mark) {
        let Ok(mut m) = self.marks.lock() else {
            return;
        };
        let moved = m[lane].unsettled != mark.unsettled;
        m[lane] = mark;
        drop(m);
        if moved {
            self.version.send_modify(|v| *v += 1);
        }
    }
}

/// A message to a lane.
enum LaneMsg {
    Job(Job),
    Close(Duration),
}

/// What a lane left when it stopped.
#[derive(Debug, Clone, Copy, Default)]
struct LaneReport {
    /// Jobs neither settled nor in the backlog.
    unsettled: u64,
}

/// The sink's end of a lane.
struct LaneEnd {
    /// Jobs in.
    tx: mpsc::Sender<LaneMsg>,
    /// Seqs sent, not yet seen by the lane as far as the sink knows.
    sent: VecDeque<u64>,
    /// The lane's task.
    join: Option<JoinHandle<LaneReport>>,
}

/// One lane per task; see the module comment.
pub(crate) struct LaneSink {
    /// By task index.
    lanes: Vec<LaneEnd>,
    /// What the lanes settled.
    marks: Arc<Marks>,
    /// Moves when a mark does.
    version: watch::Receiver<u64>,
    /// The seq after the last one sent.
    next: u64,
    /// The engines' counters (shared by all).
    stats: Arc<Stats>,
}

impl LaneSink {
    /// Starts a lane (engine and backlog) per task. Backlogs live in
    /// `state_dir/backlog/`.
    pub(crate) fn start(
        cfg: &DispatcherConfig,
        tasks: &[TaskConfig],
        store: Arc<Mutex<Store>>,
        state_dir: &std::path::Path,
    ) -> Result<LaneSink, LanesError> {
        let stats = Arc::new(Stats::default());
        let (version, version_rx) = watch::channel(0);
        let marks = Arc::new(Marks {
            marks: Mutex::new(vec![Mark::default(); tasks.len()]),
            version,
        });
        let epoch = crate::store::unix_millis(std::time::SystemTime::now());
        let mut lanes = Vec::with_capacity(tasks.len());
        let figures: Vec<Arc<TaskFigures>> = tasks
            .iter()
            .map(|t| Arc::new(TaskFigures::new(&t.task_id)))
            .collect();
        let _ = stats.tasks.set(figures.clone());
        for (i, t) in tasks.iter().enumerate() {
            let engine = Dispatcher::start_counting(
                cfg,
                tasks,
                store.clone(),
                stats.clone(),
                Some(figures[i].clone()),
            )?;
            let backlog = Backlog::open(state_dir, &t.task_id)?;
            let extent = backlog.extent()?;
            let (tx, rx) = mpsc::channel(CHANNEL);
            let mut lane = Lane::new(i, t, engine, backlog, epoch, marks.clone());
            lane.store = Some((store.clone(), stats.clone()));
            lane.figures = figures[i].clone();
            lane.resume(extent);
            let join = tokio::spawn(lane.run(rx));
            lanes.push(LaneEnd {
                tx,
                sent: VecDeque::new(),
                join: Some(join),
            });
        }
        tokio::spawn(watch_pauses(store.clone(), figures.clone()));
        Ok(LaneSink {
            lanes,
            marks,
            version: version_rx,
            next: 0,
            stats,
        })
    }

    /// The engines' counters.
    pub(crate) fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    fn watermark(&self) -> u64 {
        let Ok(marks) = self.marks.marks.lock() else {
            return 0;
        };
        let mut w = self.next;
        for (end, mark) in self.lanes.iter().zip(marks.iter()) {
            if let Some(u) = mark.unsettled {
                w = w.min(u);
            }
            let seen = mark.seen;
            let first_unseen = end.sent.iter().find(|&&s| seen.is_none_or(|v| s > v));
            if let Some(&s) = first_unseen {
                w = w.min(s);
            }
        }
        w
    }
}

/// Why the lanes cannot start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LanesError {
    /// A task's engine.
    #[error(transparent)]
    Delivery(#[from] SetupError),
    /// A task's backlog file.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Sink for LaneSink {
    async fn send(&mut self, job: Rendered<'_>) -> Result<(), SinkError> {
        let job = job.into_job();
        let Some(end) = self.lanes.get_mut(job.task) else {
            return Err(SubmitError::UnknownTask(job.task).into());
        };
        let seq = job.seq;
        // Forget what the lane has seen (the front is what matters).
        if let Ok(marks) = self.marks.marks.lock() {
            if let Some(seen) = marks[job.task].seen {
                while end.sent.front().is_some_and(|&s| s <= seen) {
                    end.sent.pop_front();
                }
            }
        }
        end.sent.push_back(seq);
        self.next = seq + 1;
        end.tx
            .send(LaneMsg::Job(job))
            .await
            .map_err(|_| SinkError::Delivery(SubmitError::ShuttingDown))
    }

    fn settled(&self) -> u64 {
        self.watermark()
    }

    async fn settled_changed(&mut self) -> Option<u64> {
        self.version.changed().await.ok()?;
        Some(self.watermark())
    }

    async fn close(&mut self, grace: Duration) -> Settlement {
        for end in &self.lanes {
            let _ = end.tx.send(LaneMsg::Close(grace)).await;
        }
        let mut unsettled = 0;
        for end in &mut self.lanes {
            if let Some(join) = end.join.take() {
                unsettled += join.await.map_or(0, |r| r.unsettled);
            }
        }
        Settlement {
            watermark: self.watermark(),
            unsettled,
            dead_lettered: self
                .stats
                .dead_lettered
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// Where a job in the lane's engine came from.
enum Origin {
    /// From the fan-out, with what it takes to copy it to the backlog.
    Live {
        seq: u64,
        id: Arc<str>,
        keys: OrderingKeys,
        body: Bytes,
        row: RowState,
    },
    /// Read back from the backlog.
    Drained { rowid: i64, bytes: u64 },
}

/// Whether a live job is in the backlog too.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RowState {
    No,
    Writing,
    At(i64),
}

/// A job on its way to the backlog.
struct Spill {
    /// The fan-out's seq (settled once written).
    seq: u64,
    /// The engine seq, for a copy of a job the engine holds.
    copy_of: Option<u64>,
    row: NewRow,
}

type Written = (Vec<Spill>, Result<Vec<i64>, StoreError>);
/// Deleted rows (rowid, bytes), and how it went.
type Deleted = (Vec<(i64, u64)>, Result<(), StoreError>);

/// What woke the lane.
enum Wake {
    Engine(bool),
    Written(Option<Written>),
    Read(Option<Result<Vec<Row>, StoreError>>),
    Deleted(Option<Deleted>),
    DeadLettered(Option<DeadLettered>),
    Room,
    Stalled,
    Retry,
    Msg(Option<LaneMsg>),
}

/// One task's lane; see the module comment.
struct Lane {
    /// The task's index.
    task: usize,
    /// The task's id, for messages.
    task_id: String,
    /// Its engine (engine seqs are the lane's own).
    engine: Dispatcher,
    /// The engine's watermark.
    engine_wm: watch::Receiver<u64>,
    /// Its backlog file (used from blocking threads).
    backlog: Arc<Mutex<Backlog>>,
    /// This run's mark on the rows it appends.
    epoch: i64,
    /// Where the lane tells the sink what it settled.
    marks: Arc<Marks>,
    /// The next engine seq.
    next_eseq: u64,
    /// The engine seq of `origins[0]`.
    base: u64,
    /// Jobs in the engine, by engine seq.
    origins: VecDeque<Origin>,
    /// Live origins not in the backlog.
    live_plain: usize,
    /// Every job goes to the backlog.
    spilling: bool,
    /// The job waiting for room in the engine, and since when.
    held: Option<(Job, Instant)>,
    /// Spills waiting for the next write.
    buffer: Vec<Spill>,
    /// The write in flight.
    writing: Option<JoinHandle<Written>>,
    /// Fan-out seqs written to the backlog but not yet durable.
    undurable: BTreeSet<u64>,
    /// Whether rows after `cursor` may be read (not while the copies of
    /// the engine's jobs are being written: they must be skipped).
    drain_ready: bool,
    /// The last rowid taken into the engine (or copied from it).
    cursor: i64,
    /// Rows on disk and not in the engine.
    disk_rows: u64,
    /// Payload bytes in the backlog.
    disk_bytes: u64,
    /// The read in flight.
    reading: Option<JoinHandle<Result<Vec<Row>, StoreError>>>,
    /// The epoch of the last row read.
    last_epoch: Option<i64>,
    /// Rows to delete (rowid, bytes).
    deletes: Vec<(i64, u64)>,
    /// The delete in flight.
    deleting: Option<JoinHandle<Deleted>>,
    /// The last seq taken from the channel.
    seen: Option<u64>,
    /// The mark last published.
    published: Mark,
    /// A failed write or read waits until then.
    retry_at: Option<Instant>,
    /// Set by `Close`: stop taking jobs, settle until then.
    closing: Option<Instant>,
    /// The backlog-full warning was logged for this episode.
    full_said: bool,
    /// `backlog.max_bytes` and `backlog.when_full`.
    max_bytes: u64,
    when_full: WhenFull,
    /// The callback URL, for dead letters of a full backlog.
    url: String,
    /// The state store and the engines' counters, for those dead letters.
    store: Option<(Arc<Mutex<Store>>, Arc<Stats>)>,
    /// Dead letters to write (a full backlog with `when_full: dead_letter`).
    to_dead_letter: Vec<Job>,
    /// The dead-letter write in flight.
    dead_lettering: Option<JoinHandle<DeadLettered>>,
    /// What health and metrics read.
    figures: Arc<TaskFigures>,
    /// (last rowid, append time in Unix ms) of the writes whose rows are
    /// not all taken into the engine yet: the backlog's age.
    appended: VecDeque<(i64, i64)>,
}

/// Seqs dead-lettered, and how it went.
type DeadLettered = (Vec<Job>, Result<(), StoreError>);

async fn join_opt<T: Send + 'static>(h: &mut Option<JoinHandle<T>>) -> Option<T> {
    let r = match h.as_mut() {
        Some(j) => j.await.ok(),
        None => std::future::pending().await,
    };
    *h = None;
    r
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Lane {
    fn new(
        task: usize,
        config: &TaskConfig,
        engine: Dispatcher,
        backlog: Backlog,
        epoch: i64,
        marks: Arc<Marks>,
    ) -> Lane {
        Lane {
            task,
            task_id: config.task_id.clone(),
            engine_wm: engine.watermark(),
            engine,
            backlog: Arc::new(Mutex::new(backlog)),
            epoch,
            marks,
            next_eseq: 0,
            base: 0,
            origins: VecDeque::new(),
            live_plain: 0,
            spilling: false,
            held: None,
            buffer: Vec::new(),
            writing: None,
            undurable: BTreeSet::new(),
            drain_ready: true,
            cursor: 0,
            disk_rows: 0,
            disk_bytes: 0,
            reading: None,
            last_epoch: None,
            deletes: Vec::new(),
            deleting: None,
            seen: None,
            published: Mark::default(),
            retry_at: None,
            closing: None,
            full_said: false,
            max_bytes: config.limits.backlog.max_bytes,
            when_full: config.limits.backlog.when_full,
            url: config.callback_url.clone(),
            store: None,
            to_dead_letter: Vec::new(),
            dead_lettering: None,
            figures: Arc::new(TaskFigures::new(&config.task_id)),
            appended: VecDeque::new(),
        }
    }

    /// A backlog left by an earlier run goes out first.
    fn resume(&mut self, extent: Extent) {
        let (rows, bytes) = (extent.rows, extent.bytes);
        self.disk_rows = rows;
        self.disk_bytes = bytes;
        if let Some(t) = extent.oldest {
            self.appended.push_back((extent.last_rowid, t));
        }
        if rows > 0 {
            self.spilling = true;
            tracing::info!(task_id = %self.task_id, rows, bytes, "the task has a backlog from an earlier run: it is delivered before newer changes");
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<LaneMsg>) -> LaneReport {
        let mut rx_open = true;
        loop {
            self.start_io();
            self.publish();
            if self.closing.is_some() && self.done_closing() {
                break;
            }
            let wake = self.wait(&mut rx, rx_open).await;
            match wake {
                Wake::Msg(None) => {
                    rx_open = false;
                    self.close(Duration::ZERO);
                }
                Wake::Msg(Some(LaneMsg::Close(grace))) => {
                    rx_open = false;
                    self.close(grace);
                }
                Wake::Msg(Some(LaneMsg::Job(job))) => self.take(job).await,
                Wake::Engine(ok) => {
                    if !ok {
                        break;
                    }
                    self.engine_settled();
                }
                Wake::Room => self.submit_held().await,
                Wake::Stalled => self.start_spilling("waited for room in memory"),
                Wake::Written(w) => self.written(w),
                Wake::Read(r) => self.read(r).await,
                Wake::Deleted(d) => self.deleted(d),
                Wake::DeadLettered(x) => self.dead_lettered(x),
                Wake::Retry => self.retry_at = None,
            }
        }
        self.finish().await
    }

    async fn wait(&mut self, rx: &mut mpsc::Receiver<LaneMsg>, rx_open: bool) -> Wake {
        let can_take = rx_open
            && self.closing.is_none()
            && self.held.is_none()
            && (!self.spilling || (self.buffer.len() < MAX_BUFFER && !self.full()));
        let waiting_room = self.held.is_some() && !self.spilling;
        let stall_at = self
            .held
            .as_ref()
            .filter(|_| !self.spilling)
            .map(|(_, since)| *since + SPILL_AFTER);
        // Wakes once at the end of the grace period.
        let closing_at = self.closing.filter(|d| Instant::now() < *d);
        tokio::select! {
            biased;
            r = self.engine_wm.changed() => Wake::Engine(r.is_ok()),
            w = join_opt(&mut self.writing), if self.writing.is_some() => Wake::Written(w),
            d = join_opt(&mut self.deleting), if self.deleting.is_some() => Wake::Deleted(d),
            x = join_opt(&mut self.dead_lettering), if self.dead_lettering.is_some() => Wake::DeadLettered(x),
            r = join_opt(&mut self.reading), if self.reading.is_some() => Wake::Read(r),
            _ = self.engine.wait_room(), if waiting_room => Wake::Room,
            _ = sleep_opt(stall_at), if stall_at.is_some() => Wake::Stalled,
            _ = sleep_opt(self.retry_at), if self.retry_at.is_some() => Wake::Retry,
            _ = sleep_opt(closing_at), if closing_at.is_some() => Wake::Retry,
            m = rx.recv(), if can_take => Wake::Msg(m),
        }
    }

    /// The backlog is at its size limit: the lane takes no more jobs (the
    /// binlog reader waits) until delivery makes room. Said once per episode.
    fn full(&mut self) -> bool {
        let full = self.disk_bytes >= self.max_bytes;
        if full && !self.full_said {
            match self.when_full {
                WhenFull::Block => {
                    tracing::warn!(task_id = %self.task_id, bytes = self.disk_bytes, max_bytes = self.max_bytes, "the task's backlog is full (backlog.max_bytes): the binlog reader waits until the task delivers some of it")
                }
                WhenFull::DeadLetter => {
                    tracing::warn!(task_id = %self.task_id, bytes = self.disk_bytes, max_bytes = self.max_bytes, "the task's backlog is full (backlog.max_bytes): its new changes go to the dead-letter store until it delivers some of it (backlog.when_full: dead_letter)")
                }
            }
        }
        self.full_said = full;
        full && self.when_full == WhenFull::Block
    }

    /// A job from the fan-out.
    async fn take(&mut self, job: Job) {
        self.seen = Some(job.seq);
        if self.spilling && self.disk_bytes >= self.max_bytes && self.store.is_some() {
            // `when_full: dead_letter` (with `block` no job is taken).
            self.undurable.insert(job.seq);
            self.to_dead_letter.push(job);
        } else if self.spilling {
            self.spill(job, None);
        } else if self.engine.room() > 0 && self.held.is_none() {
            self.submit_live(job).await;
        } else {
            self.held = Some((job, Instant::now()));
        }
    }

    async fn submit_held(&mut self) {
        if self.engine.room() == 0 {
            return;
        }
        if let Some((job, _)) = self.held.take() {
            self.submit_live(job).await;
        }
    }

    async fn submit_live(&mut self, job: Job) {
        self.origins.push_back(Origin::Live {
            seq: job.seq,
            id: job.id.clone(),
            keys: job.keys,
            body: job.body.clone(),
            row: RowState::No,
        });
        self.live_plain += 1;
        self.submit(job.id, job.keys, job.body).await;
    }

    async fn submit(&mut self, id: Arc<str>, keys: OrderingKeys, body: Bytes) {
        let seq = self.next_eseq;
        self.next_eseq += 1;
        let job = Job {
            task: self.task,
            keys,
            id,
            body,
            seq,
        };
        if let Err(e) = self.engine.submit(job).await {
            tracing::error!(task_id = %self.task_id, error = %e, "cannot hand a change to the task's delivery engine");
        }
    }

    fn spill(&mut self, job: Job, copy_of: Option<u64>) {
        self.undurable.insert(job.seq);
        self.buffer.push(Spill {
            seq: job.seq,
            copy_of,
            row: NewRow {
                change_id: job.id,
                keys: keys_of(job.keys),
                body: job.body,
            },
        });
    }

    /// From now on every job goes to the backlog; the jobs the engine holds
    /// are copied there first, so that they count as settled too.
    fn start_spilling(&mut self, why: &str) {
        if self.spilling {
            return;
        }
        self.spilling = true;
        let mut copies = 0;
        for i in 0..self.origins.len() {
            let eseq = self.base + i as u64;
            let Origin::Live {
                seq,
                id,
                keys,
                body,
                row,
            } = &mut self.origins[i]
            else {
                continue;
            };
            if *row != RowState::No {
                continue;
            }
            *row = RowState::Writing;
            let job = Job {
                task: self.task,
                keys: *keys,
                id: id.clone(),
                body: body.clone(),
                seq: *seq,
            };
            self.live_plain -= 1;
            copies += 1;
            self.spill(job, Some(eseq));
        }
        if copies > 0 {
            self.drain_ready = false;
        }
        if let Some((job, _)) = self.held.take() {
            self.spill(job, None);
        }
        tracing::warn!(task_id = %self.task_id, in_memory = copies, "the task cannot keep up ({why}): its changes go to its backlog on disk, in order, and are delivered from there; the binlog and the other tasks go on");
    }

    /// Starts the writes, reads and deletes that can start.
    fn start_io(&mut self) {
        let retry_wait = self.retry_at.is_some();
        if self.writing.is_none() && !self.buffer.is_empty() && !retry_wait {
            let spills = std::mem::take(&mut self.buffer);
            let backlog = self.backlog.clone();
            let epoch = self.epoch;
            self.writing = Some(tokio::task::spawn_blocking(move || {
                let rows: Vec<NewRow> = spills.iter().map(|s| s.row.clone()).collect();
                let r = match backlog.lock() {
                    Ok(mut b) => b.append(&rows, epoch),
                    Err(_) => Err(poisoned()),
                };
                (spills, r)
            }));
        }
        if self.dead_lettering.is_none() && !self.to_dead_letter.is_empty() {
            if let Some((store, _)) = &self.store {
                let jobs = std::mem::take(&mut self.to_dead_letter);
                let store = store.clone();
                let (task_id, url) = (self.task_id.clone(), self.url.clone());
                self.dead_lettering = Some(tokio::task::spawn_blocking(move || {
                    let r = write_dead_letters(&store, &task_id, &url, &jobs);
                    (jobs, r)
                }));
            }
        }
        if self.deleting.is_none() && !self.deletes.is_empty() {
            let rows = std::mem::take(&mut self.deletes);
            let backlog = self.backlog.clone();
            self.deleting = Some(tokio::task::spawn_blocking(move || {
                let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
                let r = match backlog.lock() {
                    Ok(mut b) => b.delete(&ids),
                    Err(_) => Err(poisoned()),
                };
                (rows, r)
            }));
        }
        let room = self.engine.room();
        let may_read = self.spilling
            && self.drain_ready
            && self.closing.is_none()
            && !retry_wait
            && self.reading.is_none()
            && self.disk_rows > 0
            && room > 0
            && (room >= READ_BATCH || self.origins.len() < room);
        if self.spilling && self.disk_rows > 0 && self.reading.is_none() && !may_read {
            tracing::trace!(task_id = %self.task_id, drain_ready = self.drain_ready, room, in_engine = self.origins.len(), disk_rows = self.disk_rows, "lane: not reading");
        }
        if may_read {
            let backlog = self.backlog.clone();
            let after = self.cursor;
            let limit = room.min(READ_BATCH);
            self.reading = Some(tokio::task::spawn_blocking(move || match backlog.lock() {
                Ok(b) => b.read(after, limit),
                Err(_) => Err(poisoned()),
            }));
        }
        if self.spilling
            && self.closing.is_none()
            && self.buffer.is_empty()
            && self.writing.is_none()
            && self.reading.is_none()
            && self.disk_rows == 0
            && self.origins.is_empty()
            && self.held.is_none()
        {
            self.spilling = false;
            self.last_epoch = None;
            tracing::info!(task_id = %self.task_id, "the task caught up: its backlog is delivered; its changes stay in memory again");
        }
    }

    fn written(&mut self, w: Option<Written>) {
        let Some((spills, result)) = w else {
            tracing::error!(task_id = %self.task_id, "the backlog writer stopped; the changes it held are read again after a restart");
            return;
        };
        match result {
            Ok(rowids) => {
                if let Some(&last) = rowids.last() {
                    let now = crate::store::unix_millis(std::time::SystemTime::now());
                    self.appended.push_back((last, now));
                }
                for (s, rowid) in spills.iter().zip(rowids) {
                    self.undurable.remove(&s.seq);
                    self.disk_bytes += s.row.body.len() as u64;
                    let Some(eseq) = s.copy_of else {
                        self.disk_rows += 1;
                        continue;
                    };
                    self.cursor = self.cursor.max(rowid);
                    self.drain_ready = true;
                    match self
                        .origins
                        .get_mut((eseq.wrapping_sub(self.base)) as usize)
                    {
                        Some(Origin::Live { row, .. }) if eseq >= self.base => {
                            *row = RowState::At(rowid)
                        }
                        _ => self.deletes.push((rowid, s.row.body.len() as u64)),
                    }
                }
            }
            Err(e) => {
                tracing::error!(task_id = %self.task_id, error = %e, "cannot write to the task's backlog; trying again in a second (the changes stay unsettled meanwhile)");
                let mut spills = spills;
                spills.append(&mut self.buffer);
                self.buffer = spills;
                self.retry_at = Some(Instant::now() + RETRY);
            }
        }
    }

    async fn read(&mut self, r: Option<Result<Vec<Row>, StoreError>>) {
        let rows = match r {
            Some(Ok(rows)) => rows,
            Some(Err(e)) => {
                tracing::error!(task_id = %self.task_id, error = %e, "cannot read the task's backlog; trying again in a second");
                self.retry_at = Some(Instant::now() + RETRY);
                return;
            }
            None => return,
        };
        for row in rows {
            if self.last_epoch.is_some_and(|e| e != row.epoch) && !self.origins.is_empty() {
                // Rows of another run: wait until the engine is empty.
                break;
            }
            self.last_epoch = Some(row.epoch);
            self.cursor = row.rowid;
            self.disk_rows = self.disk_rows.saturating_sub(1);
            let bytes = row.body.len() as u64;
            self.origins.push_back(Origin::Drained {
                rowid: row.rowid,
                bytes,
            });
            let keys = match row.keys {
                (a, Some(b)) => OrderingKeys::two(a, b),
                (a, None) => OrderingKeys::one(a),
            };
            self.submit(row.change_id.into(), keys, Bytes::from(row.body))
                .await;
        }
    }

    fn dead_lettered(&mut self, x: Option<DeadLettered>) {
        let Some((jobs, result)) = x else {
            return;
        };
        match result {
            Ok(()) => {
                for j in &jobs {
                    self.undurable.remove(&j.seq);
                }
                if let Some((_, stats)) = &self.store {
                    stats
                        .dead_lettered
                        .fetch_add(jobs.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::error!(task_id = %self.task_id, error = %e, "cannot write the dead letters of a full backlog; trying again in a second");
                let mut jobs = jobs;
                jobs.append(&mut self.to_dead_letter);
                self.to_dead_letter = jobs;
                self.retry_at = Some(Instant::now() + RETRY);
            }
        }
    }

    fn deleted(&mut self, d: Option<Deleted>) {
        let Some((rows, result)) = d else {
            return;
        };
        match result {
            Ok(()) => {
                let bytes: u64 = rows.iter().map(|r| r.1).sum();
                self.disk_bytes = self.disk_bytes.saturating_sub(bytes);
            }
            Err(e) => {
                // Delivered rows left behind are delivered again after a
                // restart (at least once); the next delete tries again.
                tracing::warn!(task_id = %self.task_id, error = %e, "cannot delete delivered rows from the task's backlog; trying again");
                let mut rows = rows;
                self.deletes.append(&mut rows);
            }
        }
    }

    /// The engine settled everything below its watermark.
    fn engine_settled(&mut self) {
        let w = *self.engine_wm.borrow_and_update();
        while self.base < w {
            let Some(o) = self.origins.pop_front() else {
                break;
            };
            self.base += 1;
            match o {
                Origin::Live { row, body, .. } => match row {
                    RowState::No => self.live_plain -= 1,
                    RowState::At(rowid) => self.deletes.push((rowid, body.len() as u64)),
                    // Deleted once its write says where it is.
                    RowState::Writing => {}
                },
                Origin::Drained { rowid, bytes } => self.deletes.push((rowid, bytes)),
            }
        }
    }

    fn publish(&mut self) {
        let mut unsettled = self.undurable.first().copied();
        if let Some((job, _)) = &self.held {
            unsettled = Some(unsettled.map_or(job.seq, |u| u.min(job.seq)));
        }
        if self.live_plain > 0 {
            let first = self.origins.iter().find_map(|o| match o {
                Origin::Live {
                    seq,
                    row: RowState::No,
                    ..
                } => Some(*seq),
                _ => None,
            });
            if let Some(s) = first {
                unsettled = Some(unsettled.map_or(s, |u| u.min(s)));
            }
        }
        self.show();
        let mark = Mark {
            unsettled,
            seen: self.seen,
        };
        if mark != self.published {
            self.published = mark;
            self.marks.set(self.task, mark);
        }
    }

    /// Updates the figures health and metrics read.
    fn show(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let f = &self.figures;
        f.spilling.store(self.spilling, Relaxed);
        f.backlog_changes.store(self.disk_rows, Relaxed);
        f.backlog_bytes.store(self.disk_bytes, Relaxed);
        let full = self.spilling && self.disk_bytes >= self.max_bytes;
        f.backlog_full.store(full, Relaxed);
        f.full_blocks
            .store(full && self.when_full == WhenFull::Block, Relaxed);
        while self
            .appended
            .front()
            .is_some_and(|&(last, _)| last <= self.cursor)
        {
            self.appended.pop_front();
        }
        if self.disk_rows == 0 {
            self.appended.clear();
        }
        let oldest = self.appended.front().map_or(0, |&(_, t)| t);
        f.backlog_oldest_ms.store(oldest, Relaxed);
    }

    /// Stop taking jobs. A job waiting for room, and (after the grace
    /// period) what the engine still holds, go to the backlog.
    fn close(&mut self, grace: Duration) {
        if self.closing.is_some() {
            return;
        }
        self.closing = Some(Instant::now() + grace);
        if self.held.is_some() {
            self.start_spilling("shutting down");
        }
    }

    fn done_closing(&mut self) -> bool {
        let Some(deadline) = self.closing else {
            return false;
        };
        if Instant::now() >= deadline && self.live_plain > 0 {
            self.start_spilling("shutting down with changes not yet delivered");
        }
        let settled = self.live_plain == 0 && self.held.is_none();
        let written = self.buffer.is_empty()
            && self.writing.is_none()
            && self.to_dead_letter.is_empty()
            && self.dead_lettering.is_none();
        let engine_done = self.origins.is_empty() || Instant::now() >= deadline;
        settled && written && engine_done && self.reading.is_none()
    }

    async fn finish(mut self) -> LaneReport {
        let report = self.engine.shutdown(Duration::ZERO).await;
        let _ = report;
        self.publish();
        if let Some(d) = self.deleting.take() {
            let _ = d.await;
        }
        if !self.deletes.is_empty() {
            let rows: Vec<i64> = self.deletes.iter().map(|r| r.0).collect();
            let backlog = self.backlog.clone();
            let _ = tokio::task::spawn_blocking(move || {
                backlog.lock().ok().map(|mut b| b.delete(&rows))
            })
            .await;
        }
        LaneReport {
            unsettled: (self.live_plain + usize::from(self.held.is_some()) + self.undurable.len())
                as u64,
        }
    }
}

/// How often the paused tasks are read from the state store.
const PAUSE_POLL: Duration = Duration::from_secs(1);

/// Reads the paused tasks (`pikachu task pause|resume`) every second and
/// tells their engines. Ends with the runtime.
async fn watch_pauses(store: Arc<Mutex<Store>>, figures: Vec<Arc<TaskFigures>>) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut rates = Rates::default();
    loop {
        let status = rates.status(&figures);
        let s = store.clone();
        let saved = tokio::task::spawn_blocking(move || {
            s.lock().ok().map(|mut s| s.save_task_status(&status))
        })
        .await;
        if let Ok(Some(Err(e))) = saved {
            tracing::debug!(error = %e, "cannot record the tasks' status for `pikachu task list`");
        }
        let s = store.clone();
        let paused = tokio::task::spawn_blocking(move || s.lock().ok().map(|s| s.paused_tasks()))
            .await
            .ok()
            .flatten();
        match paused {
            Some(Ok(paused)) => {
                for f in &figures {
                    let now = paused.contains(&f.task_id);
                    if f.paused.swap(now, Relaxed) != now {
                        said_paused(&f.task_id, now);
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the paused tasks; trying again")
            }
            None => {}
        }
        tokio::time::sleep(PAUSE_POLL).await;
    }
}

/// Each task's delivered count over the last ~10 s of status writes, for
/// its rate.
#[derive(Default)]
struct Rates {
    /// (when, delivered per task) of the last writes, oldest first.
    samples: std::collections::VecDeque<(std::time::Instant, Vec<u64>)>,
}

impl Rates {
    /// The tasks' status now, for `pikachu task list`.
    fn status(&mut self, figures: &[Arc<TaskFigures>]) -> Vec<crate::store::TaskStatus> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = std::time::Instant::now();
        let delivered: Vec<u64> = figures.iter().map(|f| f.delivered.load(Relaxed)).collect();
        self.samples.push_back((now, delivered.clone()));
        while self.samples.len() > 11 {
            self.samples.pop_front();
        }
        let (then, before) = &self.samples[0];
        let secs = now.duration_since(*then).as_secs_f64();
        let wall = crate::store::unix_millis(std::time::SystemTime::now());
        figures
            .iter()
            .zip(delivered.iter().zip(before))
            .map(|(f, (&d, &b))| crate::store::TaskStatus {
                task_id: f.task_id.clone(),
                state: f.state().as_str().to_string(),
                delivered: d,
                rate: if secs > 0.0 {
                    d.saturating_sub(b) as f64 / secs
                } else {
                    0.0
                },
                queued: f.queued.load(Relaxed),
                last_error: f.last_error().map(|e| (e.message, e.at_ms)),
                pid: std::process::id(),
                updated_at: wall,
            })
            .collect()
    }
}

fn said_paused(task_id: &str, paused: bool) {
    if paused {
        tracing::info!(
            task_id,
            "task paused (pikachu task pause): nothing is sent; its changes go to its backlog"
        );
    } else {
        tracing::info!(
            task_id,
            "task resumed: it delivers its backlog, then its new changes"
        );
    }
}

/// Dead letters of changes a full backlog could not take (no attempt made).
fn write_dead_letters(
    store: &Mutex<Store>,
    task_id: &str,
    url: &str,
    jobs: &[Job],
) -> Result<(), StoreError> {
    let mut s = store.lock().map_err(|_| poisoned())?;
    let now = crate::store::unix_millis(std::time::SystemTime::now());
    for j in jobs {
        s.insert_dead_letter(&DeadLetter {
            id: 0,
            task_id: task_id.to_string(),
            change_id: j.id.to_string(),
            url: url.to_string(),
            body: j.body.to_vec(),
            events: 1,
            last_status: None,
            last_error: "the task's backlog was full (backlog.max_bytes, when_full: dead_letter)"
                .into(),
            attempts: 0,
            first_attempt_at: now,
            last_attempt_at: now,
            seq: j.seq,
            created_at: now,
        })?;
    }
    Ok(())
}

fn keys_of(keys: OrderingKeys) -> (u64, Option<u64>) {
    let mut it = keys.iter();
    let first = it.next().unwrap_or(0);
    (first, it.next())
}

fn poisoned() -> StoreError {
    StoreError {
        what: "the task's backlog is unusable (a thread panicked while writing it)".into(),
        path: String::new(),
        source: "poisoned lock".into(),
    }
}
