//! The loop of `pikachu run`: the reader's events, in binlog order, through
//! the XA hold and the fan-out into the sink; each transaction end recorded
//! in the [`CommitTracker`], settled by the sink's watermark and saved by
//! the checkpoint saver every `checkpoint.interval`. A stop request lets
//! the open transaction end (within the shutdown grace period).

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::fanout::FanOut;
use super::sink::Sink;
use super::PipelineError;
use crate::checkpoint::{self, CheckpointError, CommitTracker};
use crate::config::Config;
use crate::event::Change;
use crate::event::Commit;
use crate::server::Health;
use crate::source::reader::{Events, SourceEvent, XaEvent};
use crate::xa::{GroupEnd, Outcome, Release, XaHold};

/// Far enough in the future to stand for "no deadline".
const NO_DEADLINE: Duration = Duration::from_secs(86_400);

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
            let ev = match self.turn(rx, saver, &mut checkpoint_tick).await {
                Turn::Event(ev) => ev,
                Turn::Again => continue,
                Turn::Stop => return None,
                Turn::Failed(e) => return Some(e),
            };
            let is_commit = matches!(ev, SourceEvent::Commit(_));
            let flow = self.on_event(ev).await;
            if is_commit {
                self.commits.advance(self.sink.settled());
            }
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
                self.commits.advance(w);
                Turn::Again
            }
            _ = checkpoint_tick.tick() => match self.save_settled(saver).await {
                Ok(_) => Turn::Again,
                Err(e) => Turn::Failed(PipelineError::Setup(format!("cannot save the checkpoint: {e}"))),
            },
            ev = rx.recv() => match ev {
                Some(ev) => Turn::Event(ev),
                None => Turn::Stop,
            },
        }
    }

    /// Saves the settled position (if any) and, in the same store
    /// transaction, deletes the held XA transactions whose outcome it
    /// covers. Returns the commit saved.
    pub async fn save_settled(
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
                self.in_trx = true;
                self.health.metrics.change_read(&change);
                self.health
                    .last_event_time
                    .store(i64::from(change.timestamp), Ordering::Relaxed);
                match self.hold.hold(change).await? {
                    Some(change) => self.submit(&change).await,
                    None => Ok(Flow::Go),
                }
            }
            SourceEvent::Xa(x) => {
                self.in_trx = true;
                self.on_xa(x).await
            }
            SourceEvent::Commit(c) => {
                self.in_trx = false;
                if let GroupEnd::Committed(release) = self.hold.end_group().await? {
                    if let Flow::Stop = self.release(release).await? {
                        return Ok(Flow::Stop);
                    }
                }
                let finished = std::mem::take(&mut self.finished);
                self.commits
                    .record_with_xa(self.fan_out.next_seq(), c, finished);
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
                    return self.release(release).await;
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

    /// Submits released XA rows, in order.
    async fn release(&mut self, mut release: Release) -> Result<Flow, PipelineError> {
        while let Some(chunk) = release.next_chunk().await? {
            for change in &chunk {
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
            let send = sink.send(job);
            tokio::pin!(send);
            let sent = loop {
                let deadline = draining.unwrap_or_else(|| Instant::now() + NO_DEADLINE);
                tokio::select! {
                    r = &mut send => break r,
                    _ = cancel.cancelled(), if draining.is_none() => {
                        *draining = Some(Instant::now() + config.shutdown_timeout);
                    }
                    _ = tokio::time::sleep_until(deadline), if draining.is_some() => {
                        tracing::warn!("delivery did not make room within the shutdown grace period; stopping");
                        return Ok(Flow::Stop);
                    }
                }
            };
            if let Err(e) = sent {
                tracing::error!(error = %e, "cannot hand a change to delivery");
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Go)
    }
}
