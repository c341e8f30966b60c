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
use crate::event::Change;
use crate::route::Router;
use crate::server::Health;
use crate::source::connect::{self, ServerInfo};
use crate::source::reader::{self, Commit, ReaderOptions, SourceEvent, XaEvent};
use crate::source::schema_sync::{HistoryStore, StoredVersion};
use crate::source::value::DecodeOptions;
use crate::source::SourceError;
use crate::store::{SchemaVersionRow, Store};
use crate::xa::{GroupEnd, Outcome, Release, XaError, XaHold};

/// Errors that stop `pikachu run`.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Xa(#[from] XaError),
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
///
/// A commit may carry the store ids of held XA transactions whose outcome
/// its event group was: once it is settled they are
/// [`CommitTracker::settled_xa`], to be deleted with the next checkpoint.
#[derive(Debug, Default)]
pub struct CommitTracker {
    pending: VecDeque<(u64, Commit, Vec<i64>)>,
    settled: Option<Commit>,
    settled_xa: Vec<i64>,
}

impl CommitTracker {
    /// Records a commit read when the next job's seq was `next_seq`.
    pub fn record(&mut self, next_seq: u64, commit: Commit) {
        self.record_with_xa(next_seq, commit, Vec::new());
    }

    /// [`CommitTracker::record`], for a group that was the outcome of the
    /// held XA transactions `xa`.
    pub fn record_with_xa(&mut self, next_seq: u64, commit: Commit, xa: Vec<i64>) {
        // Commits with no job in between settle together: keep the last.
        if let Some(back) = self.pending.back_mut() {
            if back.0 == next_seq {
                back.1 = commit;
                back.2.extend(xa);
                return;
            }
        }
        self.pending.push_back((next_seq, commit, xa));
    }

    /// Moves the settled commit forward to the last one whose seq <=
    /// `watermark`; true if it moved.
    pub fn advance(&mut self, watermark: u64) -> bool {
        let mut moved = false;
        while self
            .pending
            .front()
            .is_some_and(|(s, _, _)| *s <= watermark)
        {
            if let Some((_, c, xa)) = self.pending.pop_front() {
                self.settled = Some(c);
                self.settled_xa.extend(xa);
                moved = true;
            }
        }
        moved
    }

    /// The latest commit all of whose changes (and all earlier ones) are settled.
    pub fn settled_commit(&self) -> Option<&Commit> {
        self.settled.as_ref()
    }

    /// Held XA transactions whose outcome is settled and not yet deleted.
    pub fn settled_xa(&self) -> &[i64] {
        &self.settled_xa
    }

    /// The first `n` of [`CommitTracker::settled_xa`] were deleted.
    pub fn forget_settled_xa(&mut self, n: usize) {
        self.settled_xa.drain(..n.min(self.settled_xa.len()));
    }

    /// Commits read but not settled yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// What the state directory held before this start, to tell a first start
/// from one whose state was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StateOnDisk {
    /// No state directory.
    NoDir,
    /// The directory, but no database in it.
    NoDatabase,
    /// A database (its checkpoint may still be missing: `position reset`).
    Database,
}

impl StateOnDisk {
    fn look(dir: &std::path::Path) -> StateOnDisk {
        if Store::path_in(dir).exists() {
            return StateOnDisk::Database;
        }
        // The state lock (taken before this) creates the directory and its
        // lock file: a directory with nothing else is a new one.
        let other = std::fs::read_dir(dir).map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name() != crate::store::lock::LOCK_FILE)
        });
        match other {
            Ok(true) => StateOnDisk::NoDatabase,
            _ => StateOnDisk::NoDir,
        }
    }

    /// Without a checkpoint, pikachu starts from `start` in the config,
    /// which for `latest` skips everything since an earlier run stopped:
    /// say so loudly unless the checkpoint was reset on purpose.
    fn warn_if_lost(self, dir: &std::path::Path, db: &std::path::Path) {
        let consequence = "pikachu starts from `start` in the config; if it read this server before with this config, every change since it stopped is skipped. To resume where it stopped, stop now and restore the state, or set the position with `pikachu position set FILE:POS -config …`";
        match self {
            StateOnDisk::NoDir => tracing::warn!(
                state_dir = %dir.display(),
                "no state directory: this is the first start with it (it is created now), or it was deleted or moved; {consequence}"
            ),
            StateOnDisk::NoDatabase => tracing::warn!(
                state = %db.display(),
                "the state directory exists but has no state database: it was deleted or moved; {consequence}"
            ),
            StateOnDisk::Database => tracing::info!(
                state = %db.display(),
                "no checkpoint in the state database (it was reset): starting from `start` in the config"
            ),
        }
    }
}

/// The schema history kept in the state store, for the reader.
struct StoreHistory(Arc<Mutex<Store>>);

impl HistoryStore for StoreHistory {
    fn load(&self) -> Result<Vec<StoredVersion>, String> {
        let store = self
            .0
            .lock()
            .map_err(|_| "the state store lock is poisoned")?;
        let rows = store.schema_versions().map_err(|e| e.to_string())?;
        Ok(rows
            .into_iter()
            .map(|r| StoredVersion {
                db: r.db,
                table: r.table,
                file: r.file,
                pos: r.pos,
                definition: r.definition,
                server: r.server,
            })
            .collect())
    }

    fn save(&self, versions: &[StoredVersion]) -> Result<(), String> {
        let rows: Vec<SchemaVersionRow> = versions
            .iter()
            .map(|v| SchemaVersionRow {
                db: v.db.clone(),
                table: v.table.clone(),
                file: v.file.clone(),
                pos: v.pos,
                definition: v.definition.clone(),
                server: v.server.clone(),
            })
            .collect();
        let mut store = self
            .0
            .lock()
            .map_err(|_| "the state store lock is poisoned")?;
        store.save_schema_versions(&rows).map_err(|e| e.to_string())
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
    let state_before = StateOnDisk::look(&config.state_dir);
    let mut store = Store::open(&config.state_dir).map_err(|e| AppError::Setup(e.to_string()))?;
    if reset_position
        && store
            .clear_checkpoint()
            .map_err(|e| AppError::Setup(e.to_string()))?
    {
        tracing::warn!(state = %store.path().display(), "checkpoint forgotten (--reset-position): starting from `start` in the config");
    }
    if reset_position {
        store
            .clear_schema_history()
            .map_err(|e| AppError::Setup(e.to_string()))?;
    }
    let saved = store
        .checkpoint()
        .map_err(|e| AppError::Setup(e.to_string()))?;
    if saved.is_none() && !reset_position {
        state_before.warn_if_lost(&config.state_dir, store.path());
    }
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
    tracing::info!(position = %start.at, history = %start.history, "{}", start.reason);
    if let Some(cp) = &start.save {
        // Before the stream opens: a crash from here on resumes at this
        // position, never at a `latest` resolved again later.
        store
            .save_checkpoint(cp)
            .map_err(|e| AppError::Setup(format!("cannot save the checkpoint: {e}")))?;
    }
    let history = start.history;
    let expect_file = start.expect_file.clone();
    let start = start.at;

    let router = Arc::new(Router::new(&config.tasks, &config.database.database));
    let filter_router = router.clone();
    let dead_letters_before = store
        .count_dead_letters()
        .map_err(|e| AppError::Setup(e.to_string()))?;
    let store = Arc::new(Mutex::new(store));
    let opts = ReaderOptions {
        db: config.database.clone(),
        heartbeat: config.database.heartbeat,
        decode: DecodeOptions::default(),
        filter: Arc::new(move |db: &str, table: &str| filter_router.wants_table(db, table)),
        expect_file,
        tables: router.tables(),
        history_store: Some(Arc::new(StoreHistory(store.clone()))),
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

    if dead_letters_before > 0 {
        let path = config.state_dir.join(crate::store::DB_FILE);
        tracing::warn!(count = dead_letters_before, path = %path.display(), "there are dead letters from earlier runs (see `pikachu dlq list`)");
    }
    health
        .dead_letters
        .store(dead_letters_before, Ordering::Relaxed);
    let mut hold = XaHold::new(store.clone());
    let held = hold.recover().await?;
    if !held.is_empty() {
        tracing::info!(count = held.len(), "{} prepared XA transaction(s) held in the state store until their XA COMMIT or XA ROLLBACK: {}", held.len(), crate::xa::describe(&held));
    }
    let mut saver = checkpoint::Saver::new(store.clone(), info_for_checkpoint, history);
    let dispatcher =
        Dispatcher::start(&config.dispatcher, &config.tasks, store).map_err(AppError::Setup)?;
    let stats = dispatcher.stats();
    health.attach_delivery(stats.clone());
    let mut watermark = dispatcher.watermark();
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
    let mut intake = Intake {
        config: &config,
        router: &router,
        dispatcher: &dispatcher,
        health: &health,
        cancel: &cancel,
        hold,
        commits: CommitTracker::default(),
        history,
        seq: 0,
        scratch: Vec::with_capacity(64),
        body_hint: 512,
        finished: Vec::new(),
        in_trx: false,
        draining: None,
    };
    loop {
        let drain_deadline = intake
            .draining
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
        let ev = tokio::select! {
            _ = cancel.cancelled(), if intake.draining.is_none() => {
                if !intake.in_trx {
                    break;
                }
                tracing::info!("stopping at the end of the open transaction");
                intake.draining = Some(tokio::time::Instant::now() + config.shutdown_timeout);
                continue;
            }
            _ = tokio::time::sleep_until(drain_deadline), if intake.draining.is_some() => {
                tracing::warn!("the open transaction did not end within the shutdown grace period; its changes delivered so far will be sent again after a restart");
                break;
            }
            changed = watermark.changed() => {
                if changed.is_err() {
                    break;
                }
                let w = *watermark.borrow_and_update();
                if intake.commits.advance(w) {
                    refresh_health(&intake.commits);
                }
                continue;
            }
            _ = tick.tick() => {
                refresh_health(&intake.commits);
                continue;
            }
            _ = checkpoint_tick.tick() => {
                if let Err(e) = save_settled(&mut saver, &mut intake).await {
                    fatal = Some(AppError::Setup(format!("cannot save the checkpoint: {e}")));
                    break;
                }
                continue;
            }
            ev = rx.recv() => ev,
        };
        let Some(ev) = ev else { break };
        let is_commit = matches!(ev, SourceEvent::Commit(_));
        let flow = intake.on_event(ev).await;
        if is_commit && intake.commits.advance(*watermark.borrow()) {
            refresh_health(&intake.commits);
        }
        match flow {
            Ok(Flow::Go) => {}
            Ok(Flow::Stop) => break,
            Err(e) => {
                fatal = Some(e);
                break;
            }
        }
    }
    reader_cancel.cancel();
    health.monitor_running.store(false, Ordering::Relaxed);
    let report = dispatcher.shutdown(config.shutdown_timeout).await;
    intake.commits.advance(report.watermark);
    refresh_health(&intake.commits);
    health.dispatcher_running.store(false, Ordering::Relaxed);
    match save_settled(&mut saver, &mut intake).await {
        Ok(Some(c)) => {
            tracing::info!(position = %format!("{}:{}", c.file, c.pos), unsettled = report.unsettled, "delivery stopped; checkpoint saved: every change up to this position is settled")
        }
        Ok(None) => tracing::info!(unsettled = report.unsettled, "delivery stopped"),
        Err(e) => {
            tracing::error!("cannot save the final checkpoint: {e}");
            fatal.get_or_insert(AppError::Setup(format!("cannot save the checkpoint: {e}")));
        }
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

/// Saves the settled position (if any) and, in the same store transaction,
/// deletes the held XA transactions whose outcome it covers. Returns the
/// commit saved.
async fn save_settled(
    saver: &mut checkpoint::Saver,
    intake: &mut Intake<'_>,
) -> Result<Option<Commit>, checkpoint::CheckpointError> {
    let Some(c) = intake.commits.settled_commit().cloned() else {
        return Ok(None);
    };
    let xa = intake.commits.settled_xa().to_vec();
    saver.save_settling(&c, &xa).await?;
    intake.commits.forget_settled_xa(xa.len());
    intake.hold.forgotten(&xa);
    // Saved, or already saved: the checkpoint is current as of now.
    intake
        .health
        .metrics
        .set_checkpoint(&c.file, c.pos, unix_now());
    Ok(Some(c))
}

/// Whether to go on reading.
enum Flow {
    Go,
    /// Stop reading (a stop request's grace period ran out, delivery is
    /// gone, or the open transaction ended while stopping).
    Stop,
}

/// Turns the reader's events into jobs, in binlog order: routes and renders
/// each change, holds the rows of XA transactions until their outcome
/// ([`XaHold`]), and records each transaction end in the [`CommitTracker`].
struct Intake<'a> {
    config: &'a Config,
    router: &'a Router,
    dispatcher: &'a Dispatcher,
    health: &'a Health,
    cancel: &'a CancellationToken,
    hold: XaHold,
    commits: CommitTracker,
    /// The binlog history marker, for change ids.
    history: crate::source::binlogs::History,
    /// Sequence number of the next job: strictly increasing in binlog order.
    seq: u64,
    scratch: Vec<u8>,
    body_hint: usize,
    /// Held XA transactions whose outcome was read in the open event group:
    /// deleted from the store once that group's commit is settled.
    finished: Vec<i64>,
    /// Inside an event group. On a stop request, reading goes on to its end
    /// (so that what was delivered is covered by the checkpoint and not
    /// sent again after a restart), within the shutdown grace period.
    in_trx: bool,
    /// Set on a stop request: the end of the grace period.
    draining: Option<tokio::time::Instant>,
}

impl Intake<'_> {
    async fn on_event(&mut self, ev: SourceEvent) -> Result<Flow, AppError> {
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
                self.commits.record_with_xa(self.seq, c, finished);
                Ok(match self.draining {
                    Some(_) => Flow::Stop,
                    None => Flow::Go,
                })
            }
        }
    }

    async fn on_xa(&mut self, x: XaEvent) -> Result<Flow, AppError> {
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
    async fn release(&mut self, mut release: Release) -> Result<Flow, AppError> {
        while let Some(chunk) = release.next_chunk().await? {
            for change in &chunk {
                if let Flow::Stop = self.submit(change).await? {
                    return Ok(Flow::Stop);
                }
            }
        }
        Ok(Flow::Go)
    }

    /// Routes `change`, renders a job per task and submits it.
    async fn submit(&mut self, change: &Change) -> Result<Flow, AppError> {
        let (router, dispatcher, config) = (self.router, self.dispatcher, self.config);
        for task_idx in router.tasks_for(change) {
            let task = &config.tasks[task_idx];
            let id = payload::change_id(change, &task.task_id, self.history.0);
            let mut body = Vec::with_capacity(self.body_hint);
            payload::render(&mut body, change, &task.task_id, &id);
            self.body_hint = self.body_hint.max(body.len() + 64);
            let job = Job {
                task: task_idx,
                keys: deliver::ordering_keys(task_idx, change, &mut self.scratch),
                id,
                body: body.into(),
                seq: self.seq,
            };
            self.seq += 1;
            // Waits while the delivery queue is full: the reader channel
            // fills up and the binlog reader waits too.
            let submit = dispatcher.submit(job);
            tokio::pin!(submit);
            let submitted = loop {
                let deadline = self
                    .draining
                    .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
                tokio::select! {
                    r = &mut submit => break r,
                    _ = self.cancel.cancelled(), if self.draining.is_none() => {
                        self.draining = Some(tokio::time::Instant::now() + config.shutdown_timeout);
                    }
                    _ = tokio::time::sleep_until(deadline), if self.draining.is_some() => {
                        tracing::warn!("delivery did not make room within the shutdown grace period; stopping");
                        return Ok(Flow::Stop);
                    }
                }
            };
            if let Err(e) = submitted {
                tracing::error!(error = %e, "cannot hand a change to delivery");
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Go)
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
            file_created: 0,
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

    #[test]
    fn xa_outcomes_settle_with_their_commit() {
        let mut t = CommitTracker::default();
        // Outcome of held XA 7 (its rows are jobs 0..2), then XA 8 rolled
        // back (no job: merged with the next commit), then XA 9.
        t.record_with_xa(2, commit(100), vec![7]);
        t.record_with_xa(3, commit(200), vec![8]);
        t.record_with_xa(3, commit(300), vec![9]);
        assert!(!t.advance(1));
        assert!(t.settled_xa().is_empty());
        assert!(t.advance(2));
        assert_eq!(t.settled_xa(), &[7]);
        assert!(t.advance(3));
        assert_eq!(t.settled_commit().map(|c| c.pos), Some(300));
        assert_eq!(t.settled_xa(), &[7, 8, 9]);
        t.forget_settled_xa(2);
        assert_eq!(t.settled_xa(), &[9]);
        t.forget_settled_xa(5);
        assert!(t.settled_xa().is_empty());
    }
}
