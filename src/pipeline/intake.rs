//! The loop of `pikachu run`: the reader's events, in binlog order, through
//! the XA hold and the fan-out into the sink; each transaction end recorded
//! in the [`CommitTracker`], settled by the sink's watermark and saved by
//! the checkpoint saver every `checkpoint.interval`. A stop request lets
//! the open transaction end (within the shutdown grace period).

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::fanout::{FanOut, ReadMeta, Rendered};
use super::sink::Sink;
use super::snapshots::{self, ChunkOutcome, ChunkRead, Progress, Request, Snapshots};
use super::PipelineError;
use crate::checkpoint::{self, CheckpointError, CommitTracker};
use crate::config::Config;
use crate::event::{Change, ChangeKind, Commit, SourcePosition};
use crate::server::Health;
use crate::snapshot::{BinlogPos, Settled};
use crate::source::reader::{Events, ReaderStatus, SourceEvent, XaEvent};
use crate::xa::{GroupEnd, Outcome, Release, XaHold};

/// Far enough in the future to stand for "no deadline".
const NO_DEADLINE: Duration = Duration::from_secs(86_400);
/// How often a chunk waiting for its high watermark checks whether an idle
/// stream has passed it (no transaction end comes to say so).
const IDLE_CHECK: Duration = Duration::from_millis(10);

/// Whether to go on reading.
pub(super) enum Flow {
    Go,
    /// Stop reading (a stop request's grace period ran out, delivery is
    /// gone, or the open transaction ended while stopping).
    Stop,
}

/// Turns the reader's events into jobs, in binlog order: holds the rows of
/// XA transactions until their outcome ([`XaHold`]), fans each change out
/// to the sink, and records each transaction end in the [`CommitTracker`].
pub(super) struct Intake<'a, S> {
    /// The configuration (tasks, grace periods).
    pub config: &'a Config,
    /// Health and metrics, written as changes are read.
    pub health: &'a Health,
    /// The stop request.
    pub cancel: &'a CancellationToken,
    /// Change → jobs.
    pub fan_out: FanOut,
    /// Where the jobs go.
    pub sink: S,
    /// Rows of XA transactions until their outcome.
    pub hold: XaHold,
    /// Transaction ends read, and the settled one.
    pub commits: CommitTracker,
    /// Held XA transactions whose outcome was read in the open event group:
    /// deleted from the store once that group's commit is settled.
    pub finished: Vec<i64>,
    /// Inside an event group. On a stop request, reading goes on to its end
    /// (so that what was delivered is covered by the checkpoint and not
    /// sent again after a restart), within the shutdown grace period.
    pub in_trx: bool,
    /// Set on a stop request: the end of the grace period.
    pub draining: Option<Instant>,
    /// Snapshot chunks: the open window, the chunk waiting for its high
    /// watermark, the progress waiting for settlement.
    pub snaps: Snapshots,
    /// The binlog reader's state (how far it has sent, for an idle stream).
    pub reader: std::sync::Arc<ReaderStatus>,
}

/// What one turn of the loop got.
enum Turn {
    /// A source event to take in.
    Event(SourceEvent),
    /// Nothing to take in; loop again.
    Again,
    /// Stop reading.
    Stop,
    /// Stop reading: the checkpoint could not be saved.
    Failed(PipelineError),
    /// A request of the snapshot reader.
    Snapshot(Request),
    /// An idle stream may have passed the waiting chunk's high watermark.
    IdleCheck,
}

impl<S: Sink> Intake<'_, S> {
    /// Reads until the stream ends, a stop request (at the end of the
    /// open transaction) or a fatal error; returns that error.
    pub async fn run(
        &mut self,
        rx: &mut Events,
        saver: &mut checkpoint::Saver,
    ) -> Option<PipelineError> {
        let mut checkpoint_tick = tokio::time::interval(self.config.checkpoint.interval);
        checkpoint_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let flow = match self.turn(rx, saver, &mut checkpoint_tick).await {
                Turn::Event(ev) => {
                    let is_commit = matches!(ev, SourceEvent::Commit(_));
                    let flow = self.on_event(ev).await;
                    if is_commit {
                        self.advance(self.sink.settled());
                    }
                    flow
                }
                Turn::Snapshot(req) => self.on_snapshot(req, rx).await,
                Turn::IdleCheck => self.idle_check(rx).await,
                Turn::Again => continue,
                Turn::Stop => return None,
                Turn::Failed(e) => return Some(e),
            };
            match flow {
                Ok(Flow::Go) => {}
                Ok(Flow::Stop) => return None,
                Err(e) => return Some(e),
            }
        }
    }

    /// Waits for the next thing to do: a source event, a settlement, a
    /// checkpoint tick, or the stop request.
    async fn turn(
        &mut self,
        rx: &mut Events,
        saver: &mut checkpoint::Saver,
        checkpoint_tick: &mut tokio::time::Interval,
    ) -> Turn {
        let drain_deadline = self
            .draining
            .unwrap_or_else(|| Instant::now() + NO_DEADLINE);
        tokio::select! {
            _ = self.cancel.cancelled(), if self.draining.is_none() => {
                if !self.in_trx {
                    return Turn::Stop;
                }
                tracing::info!("stopping at the end of the open transaction");
                self.draining = Some(Instant::now() + self.config.shutdown_timeout);
                Turn::Again
            }
            _ = tokio::time::sleep_until(drain_deadline), if self.draining.is_some() => {
                tracing::warn!("the open transaction did not end within the shutdown grace period; its changes delivered so far will be sent again after a restart");
                Turn::Stop
            }
            settled = self.sink.settled_changed() => {
                let Some(w) = settled else { return Turn::Stop };
                self.advance(w);
                Turn::Again
            }
            req = self.snaps.next_request() => match req {
                Some(req) => Turn::Snapshot(req),
                None => {
                    self.snaps.requests = None;
                    Turn::Again
                }
            },
            _ = tokio::time::sleep(IDLE_CHECK), if self.snaps.waiting_high().is_some() => Turn::IdleCheck,
            _ = checkpoint_tick.tick() => match self.save_settled(saver).await {
                Ok(_) => Turn::Again,
                Err(e) => Turn::Failed(e.into()),
            },
            ev = rx.recv() => match ev {
                Some(ev) => Turn::Event(ev),
                None => Turn::Stop,
            },
        }
    }

    /// The sink's watermark moved to `w`: the commit tracker and the
    /// snapshots' progress follow.
    pub fn advance(&mut self, w: u64) {
        self.commits.advance(w);
        self.snaps.settle(w);
    }

    /// Saves the settled position (if any) and, in the same store
    /// transaction, deletes the held XA transactions whose outcome it
    /// covers. Returns the commit saved.
    pub(crate) async fn save_settled(
        &mut self,
        saver: &mut checkpoint::Saver,
    ) -> Result<Option<Commit>, CheckpointError> {
        let Some(c) = self.commits.settled_commit() else {
            return Ok(None);
        };
        let xa = self.commits.settled_xa().to_vec();
        saver.save_settling(&c, &xa).await?;
        self.commits.forget_settled_xa(xa.len());
        self.hold.forgotten(&xa);
        // Saved, or already saved: the checkpoint is current as of now.
        self.commits.saved(&c, crate::metrics::unix_now());
        Ok(Some(c))
    }

    async fn on_event(&mut self, ev: SourceEvent) -> Result<Flow, PipelineError> {
        match ev {
            SourceEvent::Change(change) => {
                if let Flow::Stop = self
                    .emit_if_passed(&change.source.file, change.source.pos)
                    .await?
                {
                    return Ok(Flow::Stop);
                }
                self.in_trx = true;
                self.health.metrics.change_read(&change);
                self.health
                    .last_event_time
                    .store(i64::from(change.timestamp), Ordering::Relaxed);
                match self.hold.hold(change).await? {
                    Some(change) => {
                        self.snaps.observe(&change, None);
                        self.submit(&change).await
                    }
                    None => Ok(Flow::Go),
                }
            }
            SourceEvent::Xa(x) => {
                if self.snaps.waiting_high().is_some() {
                    let (file, pos) = (x.at().file.clone(), x.at().pos);
                    if let Flow::Stop = self.emit_if_passed(&file, pos).await? {
                        return Ok(Flow::Stop);
                    }
                }
                self.in_trx = true;
                self.on_xa(x).await
            }
            SourceEvent::Commit(c) => {
                self.in_trx = false;
                let at = (!self.snaps.windows.is_empty()).then(|| BinlogPos::new(&c.file, c.pos));
                if let GroupEnd::Committed(release) = self.hold.end_group().await? {
                    if let Flow::Stop = self.release(release, at.clone()).await? {
                        return Ok(Flow::Stop);
                    }
                }
                let finished = std::mem::take(&mut self.finished);
                self.commits
                    .record_with_xa(self.fan_out.next_seq(), c, finished);
                if let Some(at) = at {
                    // Reads go after this transaction end, before what follows.
                    self.snaps.last_commit = Some(at.clone());
                    if self.snaps.waiting_high().is_some_and(|h| at >= *h) {
                        if let Flow::Stop = self.emit_chunk().await? {
                            return Ok(Flow::Stop);
                        }
                    }
                }
                Ok(match self.draining {
                    Some(_) => Flow::Stop,
                    None => Flow::Go,
                })
            }
        }
    }

    async fn on_xa(&mut self, x: XaEvent) -> Result<Flow, PipelineError> {
        match x {
            XaEvent::Start(at) => self.hold.start(&at),
            XaEvent::Prepare(at) => {
                let rows = self.hold.prepare(&at).await?;
                tracing::debug!(xid = %at.xid, rows, position = %format!("{}:{}", at.file, at.pos), "XA transaction prepared: its rows wait in the state store for its outcome");
            }
            XaEvent::Outcome { at, commit } => match self.hold.outcome(&at, commit).await? {
                Outcome::Commit(held, release) => {
                    tracing::debug!(xid = %at.xid, rows = held.rows, "XA COMMIT: delivering the prepared transaction's rows");
                    self.finished.push(held.id);
                    let at =
                        (!self.snaps.windows.is_empty()).then(|| BinlogPos::new(&at.file, at.pos));
                    return self.release(release, at).await;
                }
                Outcome::Rollback(held) => {
                    tracing::debug!(xid = %at.xid, rows = held.rows, "XA ROLLBACK: the prepared transaction's rows are dropped");
                    self.finished.push(held.id);
                }
                Outcome::RolledBackOpen { rows } => {
                    tracing::debug!(xid = %at.xid, rows, "XA ROLLBACK: the transaction's rows are dropped");
                }
                Outcome::Unknown => {
                    tracing::debug!(xid = %at.xid, commit, "XA outcome of a transaction without held rows (none of its rows are of watched tables)");
                }
            },
        }
        Ok(Flow::Go)
    }

    /// Submits released XA rows, in order. `at` is where they became
    /// visible (their XA COMMIT), for an open snapshot window.
    async fn release(
        &mut self,
        mut release: Release,
        at: Option<BinlogPos>,
    ) -> Result<Flow, PipelineError> {
        while let Some(chunk) = release.next_chunk().await? {
            for change in &chunk {
                if let Some(at) = &at {
                    self.snaps.observe(change, Some(at));
                }
                if let Flow::Stop = self.submit(change).await? {
                    return Ok(Flow::Stop);
                }
            }
        }
        Ok(Flow::Go)
    }

    /// Fans `change` out and hands each job to the sink. Waits while the
    /// sink is full: the reader channel fills up and the binlog reader
    /// waits too.
    async fn submit(&mut self, change: &Change) -> Result<Flow, PipelineError> {
        let Intake {
            config,
            cancel,
            fan_out,
            sink,
            draining,
            ..
        } = self;
        let mut jobs = fan_out.jobs(change);
        while let Some(job) = jobs.next() {
            if let Flow::Stop = send_job(sink, job, cancel, draining, config.shutdown_timeout).await
            {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Go)
    }

    /// A request of the snapshot reader.
    async fn on_snapshot(&mut self, req: Request, rx: &Events) -> Result<Flow, PipelineError> {
        match req {
            Request::Open { window, ack } => {
                self.snaps.open(*window);
                let _ = ack.send(());
                Ok(Flow::Go)
            }
            Request::Discard => {
                self.snaps.discard();
                Ok(Flow::Go)
            }
            Request::Chunk { read, reply } => {
                let Some(w) = self.snaps.windows.front_mut() else {
                    // Never opened (cannot happen with one reader): read it again.
                    let _ = reply.send(ChunkOutcome::Reread("no window was open".into()));
                    return Ok(Flow::Go);
                };
                if self.snaps.waiting.is_some() || w.high().is_some() {
                    // A chunk handed over before the one before it was
                    // emitted (cannot happen with one reader): read it again.
                    let _ = reply.send(ChunkOutcome::Reread("a chunk is waiting already".into()));
                    return Ok(Flow::Go);
                }
                let low = BinlogPos::new(&read.chunk.low.file, read.chunk.low.pos);
                let high = BinlogPos::new(&read.chunk.high.file, read.chunk.high.pos);
                w.set_bounds(low, high.clone());
                self.snaps.waiting = Some((read, reply));
                if self.snaps.last_commit.as_ref().is_some_and(|c| *c >= high) {
                    return self.emit_chunk().await;
                }
                // An idle stream may be past it already: no need to wait for a check.
                self.idle_check(rx).await
            }
            Request::Finish { snapshot_id, reply } => {
                self.snaps.progress.push_back(Progress::Finish {
                    upto: self.fan_out.next_seq(),
                    snapshot_id,
                    reply,
                });
                self.snaps.settle(self.sink.settled());
                Ok(Flow::Go)
            }
        }
    }

    /// An idle stream that passed the waiting chunk's high watermark (with
    /// everything before it taken in) emits the chunk.
    async fn idle_check(&mut self, rx: &Events) -> Result<Flow, PipelineError> {
        let Some(high) = self.snaps.waiting_high() else {
            return Ok(Flow::Go);
        };
        // In this order: what the reader had sent, then whether all of it is taken in.
        let sent = self.reader.sent_upto();
        if snapshots::idle_past(high, sent, rx.is_empty()) {
            return self.emit_chunk().await;
        }
        Ok(Flow::Go)
    }

    /// Emits the waiting chunk before an event at `file`:`pos` past its
    /// high watermark.
    async fn emit_if_passed(&mut self, file: &str, pos: u64) -> Result<Flow, PipelineError> {
        match self.snaps.waiting_high() {
            Some(h) if BinlogPos::new(file, pos) > *h => self.emit_chunk().await,
            _ => Ok(Flow::Go),
        }
    }

    /// Settles the waiting chunk's window and submits its rows as reads
    /// (here in the sequence: after everything up to the high watermark,
    /// before what follows), or asks for it again.
    async fn emit_chunk(&mut self) -> Result<Flow, PipelineError> {
        let Some((read, reply)) = self.snaps.waiting.take() else {
            return Ok(Flow::Go);
        };
        let Some(window) = self.snaps.windows.pop_front() else {
            let _ = reply.send(ChunkOutcome::Reread("no window was open".into()));
            return Ok(Flow::Go);
        };
        let ChunkRead {
            snapshot_id,
            task,
            task_id,
            plan,
            chunk,
            number,
            rows_estimated,
            read_at,
        } = *read;
        let (rows, dropped) = match window.settle(chunk.rows, |r| &r.key) {
            Settled::Reread { reason } => {
                let _ = reply.send(ChunkOutcome::Reread(reason));
                return Ok(Flow::Go);
            }
            Settled::Emit { rows, dropped } => (rows, dropped),
        };
        let n = rows.len();
        let file: std::sync::Arc<str> = chunk.high.file.as_str().into();
        let meta = ReadMeta {
            snapshot_id,
            chunk: number,
            key: &plan.key,
            read_at,
        };
        for row in rows {
            let change = Change {
                kind: ChangeKind::Insert,
                table: plan.event_table.clone(),
                before: None,
                after: Some(row.image),
                source: SourcePosition {
                    file: file.clone(),
                    pos: chunk.high.pos,
                    gtid: None,
                    row: 0,
                    row_in_trx: 0,
                },
                timestamp: u32::try_from(read_at).unwrap_or(0),
            };
            let Intake {
                config,
                cancel,
                fan_out,
                sink,
                draining,
                ..
            } = self;
            let job = fan_out.read_job(task, &change, &meta);
            if let Flow::Stop = send_job(sink, job, cancel, draining, config.shutdown_timeout).await
            {
                // Not recorded: read again after a restart.
                return Ok(Flow::Stop);
            }
        }
        self.snaps.progress.push_back(Progress::Chunk {
            upto: self.fan_out.next_seq(),
            snapshot_id,
            task_id,
            db: plan.db.clone(),
            table: plan.table.clone(),
            last_key: chunk.last.as_ref().map(|c| c.to_json()),
            rows: n as u64,
            rows_estimated,
            table_done: chunk.done,
        });
        let _ = reply.send(ChunkOutcome::Emitted { rows: n, dropped });
        self.snaps.settle(self.sink.settled());
        Ok(Flow::Go)
    }
}

/// Hands one job to the sink, waiting while it is full; a stop request
/// starts the grace period, after which it gives up (`Flow::Stop`).
async fn send_job<S: Sink>(
    sink: &mut S,
    job: Rendered<'_>,
    cancel: &CancellationToken,
    draining: &mut Option<Instant>,
    grace: Duration,
) -> Flow {
    let send = sink.send(job);
    tokio::pin!(send);
    let sent = loop {
        let deadline = draining.unwrap_or_else(|| Instant::now() + NO_DEADLINE);
        tokio::select! {
            r = &mut send => break r,
            _ = cancel.cancelled(), if draining.is_none() => {
                *draining = Some(Instant::now() + grace);
            }
            _ = tokio::time::sleep_until(deadline), if draining.is_some() => {
                tracing::warn!("delivery did not make room within the shutdown grace period; stopping");
                return Flow::Stop;
            }
        }
    };
    if let Err(e) = sent {
        tracing::error!(error = %e, "cannot hand a change to delivery");
        return Flow::Stop;
    }
    Flow::Go
}
