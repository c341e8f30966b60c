//! Wires the pipeline for `pikachu run`: connect and check the server, open
//! the binlog stream at the start position, route each change to the tasks
//! that want it, deliver, and stop cleanly when cancelled.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::checkpoint;
use crate::config::Config;
use crate::deliver::{self, Dispatcher, Job};
use crate::event::payload;
use crate::route::Router;
use crate::server::Health;
use crate::source::connect::{self, ServerInfo};
use crate::source::reader::{self, Commit, ReaderOptions, SourceEvent};
use crate::source::value::DecodeOptions;
use crate::source::SourceError;
use crate::store::Store;

/// Errors that stop `pikachu run`.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}")]
    Setup(String),
    /// Preflight checks failed: the lines of the message.
    #[error("{}", .0.join("\n"))]
    Preflight(Vec<String>),
}

impl AppError {
    /// The message as lines to print (one, except for several preflight failures).
    pub fn lines(&self) -> Vec<String> {
        match self {
            AppError::Preflight(lines) => lines.clone(),
            other => vec![other.to_string()],
        }
    }
}

/// Binlog positions of transactions whose changes are not all settled yet.
///
/// Every job gets a sequence number (strictly increasing in binlog order);
/// at each commit the app records the next unused number. The delivery
/// engine's watermark is the smallest unsettled number (or the next unused
/// one when all are settled), so a commit is settled (all its changes, and
/// all before it, delivered or dead-lettered) once its recorded number is
/// <= the watermark. [`CommitTracker::settled_commit`] is the position a
/// checkpoint may be saved at.
#[derive(Debug, Default)]
pub struct CommitTracker {
    pending: VecDeque<(u64, Commit)>,
    settled: Option<Commit>,
}

impl CommitTracker {
    /// Records a commit read when the next job's seq was `next_seq`.
    pub fn record(&mut self, next_seq: u64, commit: Commit) {
        // Commits with no job in between settle together: keep the last.
        if let Some(back) = self.pending.back_mut() {
            if back.0 == next_seq {
                back.1 = commit;
                return;
            }
        }
        self.pending.push_back((next_seq, commit));
    }

    /// Moves the settled commit forward to the last one whose seq <=
    /// `watermark`; true if it moved.
    pub fn advance(&mut self, watermark: u64) -> bool {
        let mut moved = false;
        while self.pending.front().is_some_and(|(s, _)| *s <= watermark) {
            if let Some((_, c)) = self.pending.pop_front() {
                self.settled = Some(c);
                moved = true;
            }
        }
        moved
    }

    /// The latest commit all of whose changes (and all earlier ones) are settled.
    pub fn settled_commit(&self) -> Option<&Commit> {
        self.settled.as_ref()
    }

    /// Commits read but not settled yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs the pipeline until `cancel` or a fatal error.
pub async fn run(
    config: Config,
    health: Arc<Health>,
    cancel: CancellationToken,
    reset_position: bool,
) -> Result<(), AppError> {
    let config = Arc::new(config);
    crate::preflight::at_start(&config)
        .await
        .map_err(AppError::Preflight)?;
    let mut store = Store::open(&config.state_dir).map_err(|e| AppError::Setup(e.to_string()))?;
    if reset_position
        && store
            .clear_checkpoint()
            .map_err(|e| AppError::Setup(e.to_string()))?
    {
        tracing::warn!(state = %store.path().display(), "checkpoint forgotten (--reset-position): starting from `start` in the config");
    }
    let saved = store
        .checkpoint()
        .map_err(|e| AppError::Setup(e.to_string()))?;
    let mut conn = connect::connect(&config.database).await?;
    let info: ServerInfo = connect::server_info(&mut conn).await?;
    tracing::info!(flavour = info.flavour.as_str(), version = %info.version, server_id = info.server_id, "connected to {}", connect::addr(&config.database));
    let start = checkpoint::decide_start(&config, &mut conn, &info, saved)
        .await
        .map_err(|e| match e {
            checkpoint::CheckpointError::Source(s) => AppError::Source(s),
            other => AppError::Setup(other.to_string()),
        })?;
    drop(conn);
    tracing::info!(position = %start.at, "{}", start.reason);
    let start = start.at;

    let router = Arc::new(Router::new(&config.tasks, &config.database.database));
    let filter_router = router.clone();
    let opts = ReaderOptions {
        db: config.database.clone(),
        heartbeat: config.database.heartbeat,
        decode: DecodeOptions::default(),
        filter: Arc::new(move |db: &str, table: &str| filter_router.wants_table(db, table)),
    };
    let (tx, mut rx) = reader::channel(config.dispatcher.queue_size.max(1));
    let reader_cancel = cancel.child_token();
    let reader_status = Arc::new(reader::ReaderStatus::default());
    let _ = health.source.set(reader_status.clone());
    let info_for_checkpoint = info.clone();
    let reader = tokio::spawn(reader::run_with_reconnect(
        info,
        opts,
        start,
        tx,
        reader_cancel.clone(),
        reader_status,
    ));
    health.monitor_running.store(true, Ordering::Relaxed);
    health.connected.store(true, Ordering::Relaxed);
    health.dispatcher_running.store(true, Ordering::Relaxed);

    let dead_letters_before = store
        .count_dead_letters()
        .map_err(|e| AppError::Setup(e.to_string()))?;
    if dead_letters_before > 0 {
        tracing::warn!(count = dead_letters_before, path = %store.path().display(), "there are dead letters from earlier runs (see `pikachu dlq list`)");
    }
    health
        .dead_letters
        .store(dead_letters_before, Ordering::Relaxed);
    let store = Arc::new(Mutex::new(store));
    let mut saver = checkpoint::Saver::new(store.clone(), info_for_checkpoint);
    let dispatcher =
        Dispatcher::start(&config.dispatcher, &config.tasks, store).map_err(AppError::Setup)?;
    let stats = dispatcher.stats();
    health.attach_delivery(stats.clone());
    let mut watermark = dispatcher.watermark();
    let mut commits = CommitTracker::default();
    let refresh_health = |commits: &CommitTracker| {
        health
            .queue_size
            .store(stats.queued.load(Ordering::Relaxed), Ordering::Relaxed);
        health.dead_letters.store(
            dead_letters_before + stats.dead_lettered.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        if let Some(c) = commits.settled_commit() {
            health.set_position(format!("{}:{}", c.file, c.pos));
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checkpoint_tick = tokio::time::interval(config.checkpoint.interval);
    checkpoint_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fatal: Option<AppError> = None;
    // Sequence number of the next job: strictly increasing in binlog order.
    let mut seq: u64 = 0;
    let mut scratch = Vec::with_capacity(64);
    let mut body_hint = 512usize;
    // On a stop request, finish reading the open transaction (so that what
    // was delivered is covered by the checkpoint and not sent again after a
    // restart), within the shutdown grace period.
    let mut in_trx = false;
    let mut draining: Option<tokio::time::Instant> = None;
    'run: loop {
        let drain_deadline =
            draining.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
        let ev = tokio::select! {
            _ = cancel.cancelled(), if draining.is_none() => {
                if !in_trx {
                    break;
                }
                tracing::info!("stopping at the end of the open transaction");
                draining = Some(tokio::time::Instant::now() + config.shutdown_timeout);
                continue;
            }
            _ = tokio::time::sleep_until(drain_deadline), if draining.is_some() => {
                tracing::warn!("the open transaction did not end within the shutdown grace period; its changes delivered so far will be sent again after a restart");
                break;
            }
            changed = watermark.changed() => {
                if changed.is_err() {
                    break;
                }
                let w = *watermark.borrow_and_update();
                if commits.advance(w) {
                    refresh_health(&commits);
                }
                continue;
            }
            _ = tick.tick() => {
                refresh_health(&commits);
                continue;
            }
            _ = checkpoint_tick.tick() => {
                if let Some(c) = commits.settled_commit() {
                    match saver.save(c).await {
                        // Saved, or already saved: the checkpoint is current as of now.
                        Ok(_) => health.metrics.set_checkpoint(&c.file, c.pos, unix_now()),
                        Err(e) => {
                            fatal = Some(AppError::Setup(format!("cannot save the checkpoint: {e}")));
                            break;
                        }
                    }
                }
                continue;
            }
            ev = rx.recv() => ev,
        };
        let Some(ev) = ev else { break };
        match ev {
            SourceEvent::Change(change) => {
                in_trx = true;
                health.metrics.change_read(&change);
                health
                    .last_event_time
                    .store(i64::from(change.timestamp), Ordering::Relaxed);
                for task_idx in router.tasks_for(&change) {
                    let task = &config.tasks[task_idx];
                    let id = payload::change_id(&change, &task.task_id);
                    let mut body = Vec::with_capacity(body_hint);
                    payload::render(&mut body, &change, &task.task_id, &id);
                    body_hint = body_hint.max(body.len() + 64);
                    let job = Job {
                        task: task_idx,
                        keys: deliver::ordering_keys(task_idx, &change, &mut scratch),
                        id,
                        body: body.into(),
                        seq,
                    };
                    seq += 1;
                    // Waits while the delivery queue is full: the reader
                    // channel fills up and the binlog reader waits too.
                    let submit = dispatcher.submit(job);
                    tokio::pin!(submit);
                    let submitted = loop {
                        let deadline = draining.unwrap_or_else(|| {
                            tokio::time::Instant::now() + Duration::from_secs(86_400)
                        });
                        tokio::select! {
                            r = &mut submit => break r,
                            _ = cancel.cancelled(), if draining.is_none() => {
                                draining = Some(tokio::time::Instant::now() + config.shutdown_timeout);
                            }
                            _ = tokio::time::sleep_until(deadline), if draining.is_some() => {
                                tracing::warn!("delivery did not make room within the shutdown grace period; stopping");
                                break 'run;
                            }
                        }
                    };
                    if let Err(e) = submitted {
                        tracing::error!(error = %e, "cannot hand a change to delivery");
                        break 'run;
                    }
                }
            }
            SourceEvent::Commit(c) => {
                in_trx = false;
                commits.record(seq, c);
                if commits.advance(*watermark.borrow()) {
                    refresh_health(&commits);
                }
                if draining.is_some() {
                    break;
                }
            }
        }
    }
    reader_cancel.cancel();
    health.monitor_running.store(false, Ordering::Relaxed);
    let report = dispatcher.shutdown(config.shutdown_timeout).await;
    commits.advance(report.watermark);
    refresh_health(&commits);
    health.dispatcher_running.store(false, Ordering::Relaxed);
    match commits.settled_commit() {
        Some(c) => {
            if let Err(e) = saver.save(c).await {
                tracing::error!("cannot save the final checkpoint: {e}");
                fatal.get_or_insert(AppError::Setup(format!("cannot save the checkpoint: {e}")));
            }
            tracing::info!(position = %format!("{}:{}", c.file, c.pos), unsettled = report.unsettled, "delivery stopped; checkpoint saved: every change up to this position is settled")
        }
        None => tracing::info!(unsettled = report.unsettled, "delivery stopped"),
    }
    if let Some(e) = fatal {
        let _ = reader.await;
        return Err(e);
    }
    match reader.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(join) => Err(AppError::Setup(format!(
            "the binlog reader stopped unexpectedly: {join}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(pos: u64) -> Commit {
        Commit {
            file: "mysql-bin.000001".into(),
            pos,
            gtid: None,
            gtid_state: None,
            timestamp: 0,
        }
    }

    #[test]
    fn commit_settles_when_its_changes_are_settled() {
        let mut t = CommitTracker::default();
        // trx A: jobs 0, 1; trx B: no job; trx C: job 2.
        t.record(2, commit(100));
        t.record(2, commit(200));
        t.record(3, commit(300));
        assert_eq!(t.pending(), 2);
        assert!(!t.advance(0));
        assert!(!t.advance(1));
        assert!(t.settled_commit().is_none());
        assert!(t.advance(2));
        assert_eq!(t.settled_commit().map(|c| c.pos), Some(200));
        assert!(!t.advance(2));
        assert!(t.advance(3));
        assert_eq!(t.settled_commit().map(|c| c.pos), Some(300));
        assert_eq!(t.pending(), 0);
    }
}
