//! The delivery engine: a bounded queue of jobs, scheduled so that jobs of
//! the same ordering key go out one at a time in submission (binlog) order
//! and different keys go out in parallel over `worker_count` workers; failed
//! attempts retried with backoff; exhausted jobs written to the dead-letter
//! store; and a low watermark of settled sequence numbers for the checkpoint.
//!
//! One scheduler task owns all the state (no locks on the hot path). HTTP
//! attempts, retry timers and dead-letter writes run as tasks of a `JoinSet`
//! and report back to it.
//!
//! - **Queue**: `queue_size` jobs at most are in the engine (waiting,
//!   in flight, backing off, being dead-lettered). [`Dispatcher::submit`]
//!   waits for room: that wait is the backpressure that makes the binlog
//!   reader wait. Nothing is dropped.
//! - **Order**: each key has a FIFO of units; a unit starts only when it is
//!   at the head of the FIFO of each of its keys (1 key, or 2 for a
//!   primary-key change), and leaves the FIFOs when settled.
//! - **Workers**: at most `worker_count` HTTP attempts in flight. A unit
//!   waiting for its retry holds no worker. Tasks take turns (round robin).
//!   With several tasks, one task never holds all the workers (one per
//!   other task is kept free, up to half of them), and a task whose last
//!   attempt failed holds at most half: a failing or hanging endpoint cannot
//!   starve the other tasks.
//! - **Batching** (per task): up to `max_events` jobs in one JSON array,
//!   flushed when full or `max_wait` after the first; one batch in flight
//!   per task, which keeps the task's order.
//! - **Settled** = delivered (2xx) or durably dead-lettered. The watermark
//!   is the smallest unsettled seq, or the next seq when all are settled.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, Semaphore, TryAcquireError};
use tokio::task::JoinSet;

use super::http::{self, AttemptError, Target};
use super::keys::OrderingKeys;
use crate::backoff;
use crate::config::{BreakerConfig, DispatcherConfig, OnFailure, TaskConfig};
use crate::store::{self, DeadLetter, Store};

/// Attempts between error-level reminders for a task with `on_failure: block`.
const BLOCK_ERROR_EVERY: u32 = 10;
/// How often a paused engine looks whether it was resumed.
const PAUSE_CHECK: Duration = Duration::from_millis(200);
/// Wait before trying again to write a dead letter that could not be written.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(1);

/// One change for one task, ready to send.
#[derive(Debug, Clone)]
pub struct Job {
    /// Index of the task in the config's task list.
    pub task: usize,
    pub keys: OrderingKeys,
    /// The change id (`webhook-id`).
    pub id: Arc<str>,
    /// The rendered payload (JSON object).
    pub body: Bytes,
    /// Strictly increasing in binlog order, assigned by the submitter.
    pub seq: u64,
}

/// Counters of the engine (read them with `Ordering::Relaxed`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Jobs accepted by `submit`.
    pub submitted: AtomicU64,
    /// Changes delivered with a 2xx answer.
    pub delivered: AtomicU64,
    /// HTTP requests made (attempts, batches count once).
    pub requests: AtomicU64,
    /// Attempts that failed (connection error, timeout, non-2xx).
    pub failed_attempts: AtomicU64,
    /// Retries scheduled.
    pub retries: AtomicU64,
    /// Changes written to the dead-letter store.
    pub dead_lettered: AtomicU64,
    /// HTTP attempts in progress.
    pub in_flight: AtomicU64,
    /// Jobs in the engine, not yet settled (the queue depth).
    pub queued: AtomicU64,
    /// Times `submit` had to wait because the queue was full.
    pub submit_waits: AtomicU64,
    /// Told of per-task outcomes, when one is set (the metrics, set by the
    /// pipeline before the first job).
    pub observer: std::sync::OnceLock<Arc<dyn Observer>>,
    /// Each task's figures, when its engine runs in a lane (`pikachu run`).
    pub tasks: std::sync::OnceLock<Vec<Arc<super::TaskFigures>>>,
}

/// Per-task delivery outcomes, for whoever counts them (the metrics): the
/// engine knows nothing of who listens.
pub trait Observer: std::fmt::Debug + Send + Sync {
    /// An HTTP attempt of task number `task` ended (`ok`: 2xx).
    fn attempt(&self, task: usize, ok: bool);
    /// `n` changes of task number `task` delivered, `latency` after submission.
    fn delivered(&self, task: usize, n: u64, latency: Duration);
    /// `n` changes of task number `task` stored as dead letters.
    fn dead_lettered(&self, task: usize, n: u64);
    /// A retry of task number `task` was scheduled.
    fn retry(&self, task: usize);
}

/// Why `submit` did not take a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the dispatcher is shutting down")]
    ShuttingDown,
    #[error("job for task number {0}, which does not exist")]
    UnknownTask(usize),
}

/// What [`Dispatcher::shutdown`] left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Jobs not settled (not delivered, not dead-lettered): they will be read
    /// again from the binlog after a restart, since the watermark stays
    /// below them.
    pub unsettled: u64,
    /// The final watermark.
    pub watermark: u64,
}

/// Handle to the running engine.
pub struct Dispatcher {
    tx: mpsc::UnboundedSender<Msg>,
    queue: Arc<Semaphore>,
    watermark: watch::Receiver<u64>,
    stats: Arc<Stats>,
    tasks: usize,
    engine: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

enum Msg {
    Job(Job),
    Shutdown {
        grace: Duration,
        reply: oneshot::Sender<ShutdownReport>,
    },
}

enum Event {
    Done {
        unit: u64,
        result: Result<u16, AttemptError>,
    },
    RetryDue(u64),
    DeadLettered {
        unit: u64,
        result: Result<i64, String>,
    },
    DeadLetterRetry(u64),
}

impl Dispatcher {
    /// Starts the engine (on the current tokio runtime) for `tasks`; dead
    /// letters go to `store`. Errors on a task whose URL, headers or secret
    /// cannot be used.
    pub fn start(
        cfg: &DispatcherConfig,
        tasks: &[TaskConfig],
        store: Arc<Mutex<Store>>,
    ) -> Result<Dispatcher, http::SetupError> {
        Self::start_counting(cfg, tasks, store, Arc::new(Stats::default()), None)
    }

    /// Same as [`Dispatcher::start`], counting into `stats` (which several
    /// engines may share: one per task, counted together). With `only`,
    /// the engine gets jobs of that task alone, and all its workers may
    /// serve it.
    pub(crate) fn start_counting(
        cfg: &DispatcherConfig,
        tasks: &[TaskConfig],
        store: Arc<Mutex<Store>>,
        stats: Arc<Stats>,
        only: Option<Arc<super::TaskFigures>>,
    ) -> Result<Dispatcher, http::SetupError> {
        let client = http::http_client(cfg)?;
        let mut states = Vec::with_capacity(tasks.len());
        for t in tasks {
            states.push(TaskState {
                target: Arc::new(Target::new(t)?),
                on_failure: t.on_failure,
                ready: VecDeque::new(),
                in_flight: 0,
                consecutive_failures: 0,
                batch: t.batch.map(|b| Batcher {
                    max_events: b.max_events.max(1),
                    max_wait: b.max_wait,
                    pending: VecDeque::new(),
                    first_at: None,
                    busy: false,
                }),
                max_in_flight: t.limits.max_in_flight.unwrap_or(usize::MAX).max(1),
                pace: t.limits.rate_limit.map(|r| {
                    (
                        Duration::from_secs_f64(1.0 / f64::from(r.max(1))),
                        Instant::now(),
                    )
                }),
                breaker: Breaker {
                    // It trips no later than a change's last retry: a task
                    // with one request at a time (a batch, little traffic)
                    // would otherwise dead-letter in an outage first.
                    trip_at: match t.limits.breaker.failures {
                        0 => 0,
                        n => n.min(cfg.max_retries.saturating_add(1)),
                    },
                    cfg: t.limits.breaker,
                    state: BreakerState::Closed,
                    cooldown: t.limits.breaker.cooldown,
                },
                dead_letter_on: t.limits.dead_letter_on.clone(),
            });
        }
        let workers = cfg.worker_count.max(1);
        let queue_size = cfg.queue_size.max(1);
        let queue = Arc::new(Semaphore::new(queue_size));
        let (tx, rx) = mpsc::unbounded_channel();
        let (wm_tx, wm_rx) = watch::channel(0u64);
        let engine = Engine {
            cfg: cfg.clone(),
            client,
            store,
            stats: stats.clone(),
            queue: queue.clone(),
            tasks: states,
            units: HashMap::new(),
            keys: HashMap::new(),
            rr: 0,
            free_workers: workers,
            task_cap: match &only {
                Some(_) => workers,
                None => workers - (tasks.len().saturating_sub(1)).min(workers / 2),
            },
            failing_cap: (workers / 2).max(1),
            unsettled: BTreeSet::new(),
            next_seq: 0,
            watermark: wm_tx,
            joins: JoinSet::new(),
            shutdown: None,
            figures: only,
        };
        let handle = tokio::spawn(engine.run(rx));
        Ok(Dispatcher {
            tx,
            queue,
            watermark: wm_rx,
            stats,
            tasks: tasks.len(),
            engine: Mutex::new(Some(handle)),
        })
    }

    /// Hands a job to the engine; waits while the queue is full.
    pub async fn submit(&self, job: Job) -> Result<(), SubmitError> {
        if job.task >= self.tasks {
            return Err(SubmitError::UnknownTask(job.task));
        }
        match self.queue.try_acquire() {
            Ok(p) => p.forget(),
            Err(TryAcquireError::NoPermits) => {
                self.stats.submit_waits.fetch_add(1, Ordering::Relaxed);
                self.queue
                    .acquire()
                    .await
                    .map_err(|_| SubmitError::ShuttingDown)?
                    .forget();
            }
            Err(TryAcquireError::Closed) => return Err(SubmitError::ShuttingDown),
        }
        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.tx
            .send(Msg::Job(job))
            .map_err(|_| SubmitError::ShuttingDown)
    }

    /// Jobs [`Dispatcher::submit`] takes now without waiting.
    pub(crate) fn room(&self) -> usize {
        self.queue.available_permits()
    }

    /// Waits until the queue has room for a job (or the engine stops).
    pub(crate) async fn wait_room(&self) {
        let _ = self.queue.acquire().await;
    }

    /// The low watermark: the smallest seq not yet settled, or the next
    /// seq when everything submitted is settled. Never decreases.
    pub fn watermark(&self) -> watch::Receiver<u64> {
        self.watermark.clone()
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Stops taking jobs, keeps delivering what it has for up to `grace`
    /// (until everything is settled), then stops the rest. Idempotent.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        self.queue.close();
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send(Msg::Shutdown { grace, reply }).is_ok();
        let report = if sent { rx.await.ok() } else { None };
        let handle = self.engine.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = handle.await;
        }
        report.unwrap_or_else(|| ShutdownReport {
            unsettled: self.stats.queued.load(Ordering::Relaxed),
            watermark: *self.watermark.borrow(),
        })
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        if let Ok(mut h) = self.engine.lock() {
            if let Some(h) = h.take() {
                h.abort();
            }
        }
    }
}

struct Unit {
    task: usize,
    /// Members of a batch (empty for a single job, whose seq is the unit id).
    batch: Vec<u64>,
    keys: Option<OrderingKeys>,
    /// Number of its keys where it is not yet at the head.
    blocked: usize,
    id: Arc<str>,
    body: Bytes,
    attempts: u32,
    /// Attempts that do not count against `max_retries` (they failed while
    /// the task's breaker was open or tripping).
    free_attempts: u32,
    first_attempt: Option<SystemTime>,
    last_attempt: Option<SystemTime>,
    last_error: String,
    last_status: Option<u16>,
    /// When its (first) job reached the engine, for the latency metric.
    queued_at: Instant,
}

impl Unit {
    fn members(&self) -> usize {
        self.batch.len().max(1)
    }
}

struct Batcher {
    max_events: usize,
    max_wait: Duration,
    pending: VecDeque<Job>,
    first_at: Option<Instant>,
    /// A batch of this task is in flight, backing off or being dead-lettered.
    busy: bool,
}

struct TaskState {
    target: Arc<Target>,
    on_failure: OnFailure,
    /// Units that may start, waiting for a worker.
    ready: VecDeque<u64>,
    in_flight: usize,
    consecutive_failures: u32,
    batch: Option<Batcher>,
    /// `max_in_flight`: most attempts of the task at once.
    max_in_flight: usize,
    /// `rate_limit`: the time between two starts, and the earliest next one.
    pace: Option<(Duration, Instant)>,
    /// The circuit breaker.
    breaker: Breaker,
    /// Statuses that dead-letter at once.
    dead_letter_on: Vec<u16>,
}

/// A task's circuit breaker (see `config::BreakerConfig`).
struct Breaker {
    cfg: BreakerConfig,
    /// Failed attempts in a row that open it: `failures`, or fewer when a
    /// change has fewer attempts (`max_retries + 1`); 0: never.
    trip_at: u32,
    state: BreakerState,
    /// The current cool-down (doubles while probes fail).
    cooldown: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakerState {
    /// Sending.
    Closed,
    /// Sending nothing until then.
    Open { until: Instant },
    /// One probe may go (`started`: it went).
    Probing { started: bool },
}

impl Breaker {
    /// Takes a failed attempt (the task's `failures` in a row so far);
    /// returns whether it counts against the change's retries: not when it
    /// trips the breaker, fails a probe, or ends while the breaker is open.
    fn counts(&mut self, failures: u32, task_id: &str) -> bool {
        let now = Instant::now();
        match self.state {
            BreakerState::Closed if self.trip_at == 0 || failures < self.trip_at => true,
            BreakerState::Closed => {
                self.state = BreakerState::Open {
                    until: now + self.cooldown,
                };
                tracing::warn!(task_id, failures, cooldown_ms = self.cooldown.as_millis() as u64, "circuit breaker open: the task's endpoint failed every attempt of late; it gets one probe per cool-down, and its changes wait (their retries are not used up)");
                false
            }
            BreakerState::Probing { .. } => {
                self.cooldown = (self.cooldown * 2).min(self.cfg.max_cooldown);
                self.state = BreakerState::Open {
                    until: now + self.cooldown,
                };
                tracing::debug!(
                    task_id,
                    cooldown_ms = self.cooldown.as_millis() as u64,
                    "circuit breaker probe failed; open again"
                );
                false
            }
            BreakerState::Open { .. } => false,
        }
    }
}

impl TaskState {
    /// Whether an attempt of this task may start now (breaker and pace).
    fn may_start(&mut self, now: Instant) -> bool {
        match self.breaker.state {
            BreakerState::Closed => {}
            BreakerState::Open { until } if now >= until => {
                self.breaker.state = BreakerState::Probing { started: false };
            }
            BreakerState::Open { .. } | BreakerState::Probing { started: true } => return false,
            BreakerState::Probing { started: false } => {}
        }
        self.pace.is_none_or(|(_, next)| now >= next)
    }

    /// An attempt starts: the probe is out, the pace moves on.
    fn started(&mut self, now: Instant) {
        if let BreakerState::Probing { started } = &mut self.breaker.state {
            *started = true;
        }
        if let Some((every, next)) = &mut self.pace {
            *next = (*next).max(now) + *every;
        }
    }

    /// When this task may start an attempt that it may not start now.
    fn wakes_at(&self) -> Option<Instant> {
        if self.ready.is_empty() {
            return None;
        }
        let breaker = match self.breaker.state {
            BreakerState::Open { until } => Some(until),
            _ => None,
        };
        let pace = self.pace.map(|(_, next)| next);
        breaker.max(pace)
    }
}

struct Engine {
    cfg: DispatcherConfig,
    client: reqwest::Client,
    store: Arc<Mutex<Store>>,
    stats: Arc<Stats>,
    queue: Arc<Semaphore>,
    tasks: Vec<TaskState>,
    /// Units by id (a single job's seq; a batch's first seq).
    units: HashMap<u64, Unit>,
    /// Ordering key → FIFO of unit ids.
    keys: HashMap<u64, VecDeque<u64>>,
    rr: usize,
    free_workers: usize,
    /// Most attempts one task may have in flight.
    task_cap: usize,
    /// Same, for a task whose last attempt failed.
    failing_cap: usize,
    unsettled: BTreeSet<u64>,
    next_seq: u64,
    watermark: watch::Sender<u64>,
    joins: JoinSet<Event>,
    shutdown: Option<(Instant, oneshot::Sender<ShutdownReport>)>,
    /// The figures of the one task of a lane's engine.
    figures: Option<Arc<super::TaskFigures>>,
}

impl Engine {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut rx_open = true;
        loop {
            self.dispatch();
            if let Some((deadline, _)) = &self.shutdown {
                if self.unsettled.is_empty() || Instant::now() >= *deadline {
                    break;
                }
            }
            if !rx_open && self.shutdown.is_none() {
                // The handle is gone without a shutdown: stop now.
                break;
            }
            let flush_at = self.next_batch_deadline();
            let stop_at = self.shutdown.as_ref().map(|(d, _)| *d);
            tokio::select! {
                biased;
                Some(done) = self.joins.join_next(), if !self.joins.is_empty() => match done {
                    Ok(ev) => self.on_event(ev),
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => tracing::error!(error = %e, "a delivery task failed; its job stays unsettled"),
                },
                msg = rx.recv(), if rx_open => match msg {
                    Some(msg) => {
                        self.on_msg(msg);
                        // Take what else is waiting before scheduling.
                        for msg in std::iter::from_fn(|| rx.try_recv().ok()).take(1024) {
                            self.on_msg(msg);
                        }
                    }
                    None => rx_open = false,
                },
                _ = sleep_until_opt(flush_at), if flush_at.is_some() => {}
                _ = sleep_until_opt(stop_at), if stop_at.is_some() => {}
            }
        }
        self.joins.abort_all();
        let report = ShutdownReport {
            unsettled: self.unsettled.len() as u64,
            watermark: *self.watermark.borrow(),
        };
        if report.unsettled > 0 {
            tracing::warn!(
                unsettled = report.unsettled,
                "delivery stopped with changes not yet delivered; they will be read again after a restart"
            );
        }
        if let Some((_, reply)) = self.shutdown.take() {
            let _ = reply.send(report);
        }
    }

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Job(job) => self.add(job),
            Msg::Shutdown { grace, reply } => {
                let deadline = Instant::now() + grace;
                match &mut self.shutdown {
                    Some((d, _)) => *d = (*d).min(deadline),
                    None => self.shutdown = Some((deadline, reply)),
                }
            }
        }
    }

    fn add(&mut self, job: Job) {
        debug_assert!(job.seq >= self.next_seq, "seq must increase");
        self.next_seq = self.next_seq.max(job.seq + 1);
        self.unsettled.insert(job.seq);
        if let Some(f) = &self.figures {
            f.queued.fetch_add(1, Ordering::Relaxed);
        }
        let task = &mut self.tasks[job.task];
        if let Some(b) = &mut task.batch {
            if b.pending.is_empty() {
                b.first_at = Some(Instant::now());
            }
            b.pending.push_back(job);
            return;
        }
        let id = job.seq;
        let mut blocked = 0;
        for k in job.keys.iter() {
            let q = self.keys.entry(k).or_default();
            if !q.is_empty() {
                blocked += 1;
            }
            q.push_back(id);
        }
        if blocked == 0 {
            task.ready.push_back(id);
        }
        self.units.insert(
            id,
            Unit {
                task: job.task,
                batch: Vec::new(),
                keys: Some(job.keys),
                blocked,
                id: job.id,
                body: job.body,
                attempts: 0,
                free_attempts: 0,
                first_attempt: None,
                last_attempt: None,
                last_error: String::new(),
                last_status: None,
                queued_at: Instant::now(),
            },
        );
    }

    /// Forms due batches and starts ready units while workers are free.
    fn dispatch(&mut self) {
        let stopping = self.shutdown.is_some();
        let mut now = None;
        for t in 0..self.tasks.len() {
            let Some(b) = &mut self.tasks[t].batch else {
                continue;
            };
            if b.busy || b.pending.is_empty() {
                continue;
            }
            let now = *now.get_or_insert_with(Instant::now);
            let due = b.pending.len() >= b.max_events
                || stopping
                || b.first_at.is_some_and(|f| now >= f + b.max_wait);
            if due {
                self.form_batch(t, now);
            }
        }
        let n = self.tasks.len();
        let now = Instant::now();
        if self.paused() {
            return;
        }
        while self.free_workers > 0 {
            let mut picked = None;
            for i in 0..n {
                let t = (self.rr + i) % n;
                let ts = &mut self.tasks[t];
                if ts.ready.is_empty() {
                    continue;
                }
                let cap = if ts.consecutive_failures > 0 {
                    self.failing_cap.min(self.task_cap)
                } else {
                    self.task_cap
                };
                if ts.in_flight >= cap.min(ts.max_in_flight) || !ts.may_start(now) {
                    continue;
                }
                picked = Some(t);
                break;
            }
            let Some(t) = picked else { break };
            self.rr = (t + 1) % n;
            if let Some(unit) = self.tasks[t].ready.pop_front() {
                self.tasks[t].started(now);
                self.start(unit);
            }
        }
    }

    fn form_batch(&mut self, t: usize, now: Instant) {
        let Some(b) = &mut self.tasks[t].batch else {
            return;
        };
        let n = b.pending.len().min(b.max_events);
        let queued_at = b.first_at.unwrap_or(now);
        let jobs: Vec<Job> = b.pending.drain(..n).collect();
        b.first_at = if b.pending.is_empty() {
            None
        } else {
            Some(now)
        };
        b.busy = true;
        let size: usize = jobs.iter().map(|j| j.body.len() + 1).sum::<usize>() + 2;
        let mut body = Vec::with_capacity(size);
        body.push(b'[');
        for (i, j) in jobs.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&j.body);
        }
        body.push(b']');
        let first = &jobs[0];
        let last = &jobs[jobs.len() - 1];
        let id = batch_id(&first.id, &last.id);
        let unit_id = first.seq;
        self.units.insert(
            unit_id,
            Unit {
                task: t,
                batch: jobs.iter().map(|j| j.seq).collect(),
                keys: None,
                blocked: 0,
                id: id.into(),
                body: Bytes::from(body),
                attempts: 0,
                free_attempts: 0,
                first_attempt: None,
                last_attempt: None,
                last_error: String::new(),
                last_status: None,
                queued_at,
            },
        );
        self.tasks[t].ready.push_back(unit_id);
    }

    /// The lane's task is paused (`pikachu task pause`).
    fn paused(&self) -> bool {
        self.figures
            .as_ref()
            .is_some_and(|f| f.paused.load(Ordering::Relaxed))
    }

    /// The next batch to flush, or task to wake (breaker, pace; a paused
    /// task looks again every `PAUSE_CHECK`).
    fn next_batch_deadline(&self) -> Option<Instant> {
        if self.paused() {
            return Some(Instant::now() + PAUSE_CHECK);
        }
        let batches = self
            .tasks
            .iter()
            .filter_map(|t| t.batch.as_ref())
            .filter(|b| !b.busy && !b.pending.is_empty())
            .filter_map(|b| b.first_at.map(|f| f + b.max_wait));
        let tasks = self.tasks.iter().filter_map(TaskState::wakes_at);
        batches.chain(tasks).min()
    }

    fn start(&mut self, unit_id: u64) {
        let Some(unit) = self.units.get_mut(&unit_id) else {
            return;
        };
        let now = SystemTime::now();
        unit.attempts += 1;
        unit.first_attempt.get_or_insert(now);
        unit.last_attempt = Some(now);
        let task = &mut self.tasks[unit.task];
        task.in_flight += 1;
        self.free_workers -= 1;
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let client = self.client.clone();
        let target = task.target.clone();
        let id = unit.id.clone();
        let body = unit.body.clone();
        let timeout = self.cfg.timeout;
        self.joins.spawn(async move {
            let result = http::attempt(&client, &target, &id, body, timeout).await;
            Event::Done {
                unit: unit_id,
                result,
            }
        });
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Done { unit, result } => self.on_done(unit, result),
            Event::RetryDue(unit) => {
                if let Some(u) = self.units.get(&unit) {
                    // Its keys are held: let it go before newer ready units.
                    self.tasks[u.task].ready.push_front(unit);
                }
            }
            Event::DeadLettered { unit, result } => match result {
                Ok(row) => {
                    if let Some(u) = self.units.get(&unit) {
                        let n = u.members() as u64;
                        self.stats.dead_lettered.fetch_add(n, Ordering::Relaxed);
                        if let Some(m) = self.stats.observer.get() {
                            m.dead_lettered(u.task, n);
                        }
                        let t = &self.tasks[u.task];
                        tracing::error!(
                            task_id = %t.target.task_id, id = %u.id, attempts = u.attempts,
                            error = %u.last_error, dead_letter = row, events = n,
                            "webhook delivery failed after all retries; recorded as dead letter {row} (see `pikachu dlq`)"
                        );
                    }
                    self.settle(unit);
                }
                Err(e) => {
                    if let Some(u) = self.units.get(&unit) {
                        let t = &self.tasks[u.task];
                        tracing::error!(
                            task_id = %t.target.task_id, id = %u.id, error = %e,
                            "cannot write the dead letter; holding the change and trying again"
                        );
                    }
                    self.joins.spawn(async move {
                        tokio::time::sleep(DEAD_LETTER_RETRY).await;
                        Event::DeadLetterRetry(unit)
                    });
                }
            },
            Event::DeadLetterRetry(unit) => self.dead_letter(unit),
        }
    }

    fn on_done(&mut self, unit_id: u64, result: Result<u16, AttemptError>) {
        self.free_workers += 1;
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        let Some(unit) = self.units.get_mut(&unit_id) else {
            return;
        };
        let task = &mut self.tasks[unit.task];
        task.in_flight -= 1;
        let metrics = self.stats.observer.get();
        if let Some(m) = metrics {
            m.attempt(unit.task, result.is_ok());
        }
        match result {
            Ok(status) => {
                task.consecutive_failures = 0;
                if task.breaker.state != BreakerState::Closed {
                    tracing::info!(task_id = %task.target.task_id, "the endpoint answers again: circuit breaker closed, the task sends again");
                }
                task.breaker.state = BreakerState::Closed;
                task.breaker.cooldown = task.breaker.cfg.cooldown;
                if let Some(f) = &self.figures {
                    f.breaker_open.store(false, Ordering::Relaxed);
                }
                let n = unit.members() as u64;
                self.stats.delivered.fetch_add(n, Ordering::Relaxed);
                if let Some(f) = &self.figures {
                    f.delivered.fetch_add(n, Ordering::Relaxed);
                }
                if let Some(m) = metrics {
                    m.delivered(unit.task, n, unit.queued_at.elapsed());
                }
                tracing::debug!(task_id = %task.target.task_id, id = %unit.id, attempts = unit.attempts, status, events = n, "delivered");
                self.settle(unit_id);
            }
            Err(e) => {
                self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                let at_once = e.status.is_some_and(|s| task.dead_letter_on.contains(&s));
                if let Some(f) = &self.figures {
                    f.failed(&e.message);
                }
                unit.last_error = e.message;
                unit.last_status = e.status;
                if at_once {
                    // The endpoint answered, deliberately: dead-letter now.
                    self.dead_letter(unit_id);
                    return;
                }
                // Only what says the endpoint is unavailable (no answer, a
                // 5xx or 429) counts for the breaker; a 3xx or 4xx is a
                // deliberate answer of an endpoint that is up, and a
                // rejected certificate does not get better by waiting.
                let counts = if e.outage {
                    task.consecutive_failures = task.consecutive_failures.saturating_add(1);
                    task.breaker
                        .counts(task.consecutive_failures, &task.target.task_id)
                } else {
                    task.consecutive_failures = 0;
                    true
                };
                if let Some(f) = &self.figures {
                    let open = task.breaker.state != BreakerState::Closed;
                    f.breaker_open.store(open, Ordering::Relaxed);
                }
                if !counts {
                    // Not this change's fault: it waits for the breaker,
                    // without using a retry, behind the other ready units
                    // (so that probes try different changes: one bad
                    // change cannot keep the breaker open).
                    unit.free_attempts += 1;
                    task.ready.push_back(unit_id);
                    return;
                }
                let retries_done = unit.attempts - 1 - unit.free_attempts;
                let block = task.on_failure == OnFailure::Block;
                if retries_done >= self.cfg.max_retries && !block {
                    self.dead_letter(unit_id);
                    return;
                }
                let delay = match e.retry_after {
                    Some(ra) => ra.min(self.cfg.retry_max_delay),
                    None => backoff::full_jitter(
                        self.cfg.retry_base_delay,
                        self.cfg.retry_max_delay,
                        retries_done,
                        backoff::rand01(),
                    ),
                };
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = metrics {
                    m.retry(unit.task);
                }
                let retry_in_ms = delay.as_millis() as u64;
                if block
                    && retries_done >= self.cfg.max_retries
                    && unit.attempts % BLOCK_ERROR_EVERY == 0
                {
                    tracing::error!(
                        task_id = %task.target.task_id, id = %unit.id, attempt = unit.attempts,
                        error = %unit.last_error, retry_in_ms,
                        "webhook delivery still failing; on_failure: block holds this row's later changes until it succeeds"
                    );
                } else {
                    tracing::warn!(
                        task_id = %task.target.task_id, id = %unit.id, attempt = unit.attempts,
                        error = %unit.last_error, retry_in_ms,
                        "webhook delivery failed, retrying"
                    );
                }
                self.joins.spawn(async move {
                    tokio::time::sleep(delay).await;
                    Event::RetryDue(unit_id)
                });
            }
        }
    }

    fn dead_letter(&mut self, unit_id: u64) {
        let Some(u) = self.units.get(&unit_id) else {
            return;
        };
        let t = &self.tasks[u.task];
        let now = store::unix_millis(SystemTime::now());
        let record = DeadLetter {
            id: 0,
            task_id: t.target.task_id.clone(),
            change_id: u.id.to_string(),
            url: t.target.url.to_string(),
            body: u.body.to_vec(),
            events: u.members() as u32,
            last_status: u.last_status,
            last_error: u.last_error.clone(),
            attempts: u.attempts,
            first_attempt_at: u.first_attempt.map_or(now, store::unix_millis),
            last_attempt_at: u.last_attempt.map_or(now, store::unix_millis),
            seq: u.batch.first().copied().unwrap_or(unit_id),
            created_at: now,
        };
        let store = self.store.clone();
        self.joins.spawn(async move {
            let result = tokio::task::spawn_blocking(move || {
                let mut s = store
                    .lock()
                    .map_err(|_| "the store lock is poisoned".to_string())?;
                s.insert_dead_letter(&record).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(format!("the dead-letter writer failed: {e}")));
            Event::DeadLettered {
                unit: unit_id,
                result,
            }
        });
    }

    fn settle(&mut self, unit_id: u64) {
        let Some(unit) = self.units.remove(&unit_id) else {
            return;
        };
        let n = unit.members();
        if unit.batch.is_empty() {
            self.unsettled.remove(&unit_id);
        } else {
            for s in &unit.batch {
                self.unsettled.remove(s);
            }
        }
        self.stats.queued.fetch_sub(n as u64, Ordering::Relaxed);
        if let Some(f) = &self.figures {
            f.queued.fetch_sub(n as u64, Ordering::Relaxed);
        }
        self.queue.add_permits(n);
        if let Some(keys) = unit.keys {
            for k in keys.iter() {
                let Some(q) = self.keys.get_mut(&k) else {
                    continue;
                };
                debug_assert_eq!(q.front(), Some(&unit_id));
                q.pop_front();
                let Some(next) = q.front().copied() else {
                    self.keys.remove(&k);
                    continue;
                };
                let Some(nu) = self.units.get_mut(&next) else {
                    continue;
                };
                nu.blocked -= 1;
                if nu.blocked == 0 {
                    self.tasks[nu.task].ready.push_back(next);
                }
            }
        }
        if let Some(b) = &mut self.tasks[unit.task].batch {
            if !unit.batch.is_empty() {
                b.busy = false;
                if !b.pending.is_empty() && b.first_at.is_none() {
                    b.first_at = Some(Instant::now());
                }
            }
        }
        let w = self.unsettled.first().copied().unwrap_or(self.next_seq);
        self.watermark.send_if_modified(|v| {
            if *v < w {
                *v = w;
                true
            } else {
                false
            }
        });
    }
}

/// The `webhook-id` of a batch: derived from its first and last change ids
/// (the id itself for a batch of one).
pub(crate) fn batch_id(first: &str, last: &str) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}..{last}")
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
