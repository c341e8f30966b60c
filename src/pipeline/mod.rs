//! The pipeline of `pikachu run`, from the state lock to the last saved
//! checkpoint, in stages:
//!
//! 1. **start** ([`start`]): preflight checks, the state store, the
//!    connection and the start position (saved before the stream opens);
//! 2. **reader**: the binlog reader task, reconnecting, feeding a bounded
//!    channel;
//! 3. **the loop** ([`intake`]): each event through the XA hold and the
//!    [`FanOut`] (route, render, id, seq: shared with `pikachu replay`)
//!    into a [`Sink`] (the webhook engine), each transaction end recorded
//!    in the [`CommitTracker`] and settled by the sink's watermark (the
//!    tracker publishes the settled position that health, metrics and the
//!    monitor read);
//! 4. **drain**: the sink settles what it holds within the shutdown grace
//!    period and the final checkpoint is saved.
//!
//! The health server and the monitor run around all of it: they start
//! before the pipeline (health says DOWN while it starts) and stop after it
//! (DOWN while deliveries drain).

mod fanout;
mod intake;
mod lanes;
mod sink;
mod snapshots;
mod start;

pub(crate) use fanout::FanOut;
pub(crate) use sink::{NullSink, Sink, WebhookSink, WriteSink};

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{self, CheckpointError, CommitTracker};
use crate::config::Config;
use crate::route::Router;
use crate::server::Health;
use crate::source::reader::{self, ReaderOptions};
use crate::source::value::DecodeOptions;
use crate::source::SourceError;
use crate::store::{LockError, StateLock, Store};
use crate::xa::{XaError, XaHold};
use lanes::LaneSink;

use intake::Intake;
use start::{Started, StoreHistory};

/// How long the health server may take to finish its requests at the end.
const SERVER_GRACE: Duration = Duration::from_secs(5);

/// Errors that stop `pikachu run`.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The state directory is locked by another process, or cannot be.
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Xa(#[from] XaError),
    /// The health server cannot be started.
    #[error(transparent)]
    Server(#[from] crate::server::ServeError),
    /// The state store failed (the error says what was being done).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The start position could not be decided, or the checkpoint saved.
    #[error(transparent)]
    Checkpoint(CheckpointError),
    /// The state store's lock was poisoned by a panic elsewhere.
    #[error(
        "the state store lock is poisoned (a thread panicked while holding it); restart pikachu"
    )]
    Poisoned,
    /// The binlog reader's task ended without returning (it panicked).
    #[error("the binlog reader stopped unexpectedly: {0}")]
    ReaderStopped(#[source] tokio::task::JoinError),
    /// Delivery cannot start (the HTTP client, a task's URL, headers or
    /// secret).
    #[error(transparent)]
    Delivery(#[from] crate::deliver::SetupError),
    /// Preflight checks failed: the lines of the message.
    #[error("{}", .0.join("\n"))]
    Preflight(Vec<String>),
}

impl From<lanes::LanesError> for PipelineError {
    fn from(e: lanes::LanesError) -> PipelineError {
        match e {
            lanes::LanesError::Delivery(d) => PipelineError::Delivery(d),
            lanes::LanesError::Store(s) => PipelineError::Store(s),
        }
    }
}

impl From<CheckpointError> for PipelineError {
    /// A server error stays a source error (its exit code and message are
    /// the reader's); the rest is the checkpoint's.
    fn from(e: CheckpointError) -> PipelineError {
        match e {
            CheckpointError::Source(s) => PipelineError::Source(s),
            other => PipelineError::Checkpoint(other),
        }
    }
}

impl PipelineError {
    /// The message as lines to print (one, except for several preflight failures).
    pub fn lines(&self) -> Vec<String> {
        match self {
            PipelineError::Preflight(lines) => lines.clone(),
            other => vec![other.to_string()],
        }
    }
}

/// Runs `pikachu run` until `cancel` or a fatal error: takes the state
/// lock, starts the health server and the monitor, runs the pipeline and
/// stops them after it.
pub async fn run(
    config: Config,
    cancel: CancellationToken,
    reset_position: bool,
) -> Result<(), PipelineError> {
    // Held until the pipeline has stopped: one process per state directory.
    let _lock = StateLock::acquire(&config.state_dir, "pikachu run")?;
    // Health, metrics and the monitor read the settled position it publishes.
    let commits = CommitTracker::default();
    let health = Arc::new(Health::for_config(&config, commits.subscribe()));
    // The server and the monitor outlive the pipeline's stop (health says
    // DOWN while deliveries drain); they stop once it has returned.
    let server_cancel = CancellationToken::new();
    let monitor = crate::server::monitor::spawn(health.clone(), &config, server_cancel.clone());
    let server = match serve(&config, &health, &server_cancel).await {
        Ok(s) => s,
        Err(e) => {
            server_cancel.cancel();
            let _ = monitor.await;
            return Err(e);
        }
    };
    let result = pipeline(config, health, commits, cancel, reset_position).await;
    server_cancel.cancel();
    let _ = monitor.await;
    if let Some(server) = server {
        // Graceful: requests in progress finish; a stuck client cannot hold the exit.
        let _ = tokio::time::timeout(SERVER_GRACE, server).await;
    }
    result
}

/// Starts the health server when it is enabled.
async fn serve(
    config: &Config,
    health: &Arc<Health>,
    cancel: &CancellationToken,
) -> Result<Option<JoinHandle<()>>, PipelineError> {
    if !config.server.enabled {
        return Ok(None);
    }
    let s = &config.server;
    let (addr, serve) =
        crate::server::bind(&s.bind, s.port, &s.path, health.clone(), cancel.clone()).await?;
    tracing::info!(%addr, path = %s.path, "health server listening (also /live, /ready, /metrics)");
    Ok(Some(tokio::spawn(serve)))
}

/// The stages: start, reader, the loop, drain.
async fn pipeline(
    config: Config,
    health: Arc<Health>,
    commits: CommitTracker,
    cancel: CancellationToken,
    reset_position: bool,
) -> Result<(), PipelineError> {
    let config = Arc::new(config);
    let Started { store, info, start } = start::start(&config, reset_position).await?;
    let history = start.history;
    let router = Arc::new(Router::new(&config.tasks, &config.database.database));
    let dead_letters_before = store.count_dead_letters()?;
    let store = Arc::new(Mutex::new(store));
    let (tx, mut rx) = reader::channel(config.dispatcher.queue_size.max(1));
    let reader_cancel = cancel.child_token();
    let reader_status = Arc::new(reader::ReaderStatus::default());
    let _ = health.source.set(reader_status.clone());
    let opts = reader_options(&config, &router, start.expect_file.clone(), &store);
    let reader = tokio::spawn(reader::run_with_reconnect(
        info.clone(),
        opts,
        start.at,
        tx,
        reader_cancel.clone(),
        reader_status.clone(),
    ));
    snapshots::request_initial(&config, &store)?;
    let (to_intake, requests) = tokio::sync::mpsc::channel(1);
    let snapshot_reader = tokio::spawn(
        snapshots::Runner {
            config: config.clone(),
            info: info.clone(),
            store: store.clone(),
            to_intake,
            metrics: health.metrics.clone(),
            cancel: reader_cancel.clone(),
        }
        .run(),
    );
    let mut snaps = snapshots::Snapshots::idle(store.clone(), health.metrics.clone());
    snaps.requests = Some(requests);
    health.monitor_running.store(true, Ordering::Relaxed);
    health.connected.store(true, Ordering::Relaxed);
    health.dispatcher_running.store(true, Ordering::Relaxed);
    if dead_letters_before > 0 {
        let path = config.state_dir.join(crate::store::DB_FILE);
        tracing::warn!(count = dead_letters_before, path = %path.display(), "there are dead letters from earlier runs (see `pikachu dlq list`)");
    }
    health
        .dead_letters_before
        .store(dead_letters_before, Ordering::Relaxed);
    let hold = recover_xa(&store).await?;
    let mut saver = checkpoint::Saver::new(store.clone(), info, history);
    let sink = LaneSink::start(&config.dispatcher, &config.tasks, store, &config.state_dir)?;
    // Health reads the engine's counters; the metrics count its per-task
    // outcomes (the engine knows them only as an `Observer`).
    let stats = sink.stats();
    let _ = stats.observer.set(health.metrics.clone());
    let _ = health.delivery.set(stats);
    let mut intake = Intake {
        config: &config,
        health: &health,
        cancel: &cancel,
        fan_out: FanOut::new(router, &config.tasks, history),
        sink,
        hold,
        commits,
        finished: Vec::new(),
        in_trx: false,
        draining: None,
        snaps,
        reader: reader_status,
    };
    let fatal = intake.run(&mut rx, &mut saver).await;
    reader_cancel.cancel();
    let fatal = drain(&mut intake, &mut saver, fatal).await;
    // It stops at the cancel (within the chunk it reads, if any).
    let _ = tokio::time::timeout(SERVER_GRACE, snapshot_reader).await;
    finish(reader, fatal).await
}

/// The binlog reader's settings for `pikachu run`.
fn reader_options(
    config: &Config,
    router: &Arc<Router>,
    expect_file: Option<crate::source::binlogs::FileIdentity>,
    store: &Arc<Mutex<Store>>,
) -> ReaderOptions {
    let filter_router = router.clone();
    ReaderOptions {
        db: config.database.clone(),
        heartbeat: config.database.heartbeat,
        decode: DecodeOptions::default(),
        filter: Arc::new(move |db: &str, table: &str| filter_router.wants_table(db, table)),
        expect_file,
        tables: router.tables(),
        history_store: Some(Arc::new(StoreHistory(store.clone()))),
    }
}

/// The XA hold over the state store, with the prepared transactions an
/// earlier run left in it.
async fn recover_xa(store: &Arc<Mutex<Store>>) -> Result<XaHold, PipelineError> {
    let mut hold = XaHold::new(store.clone());
    let held = hold.recover().await?;
    if !held.is_empty() {
        tracing::info!(count = held.len(), "{} prepared XA transaction(s) held in the state store until their XA COMMIT or XA ROLLBACK: {}", held.len(), crate::xa::describe(&held));
    }
    Ok(hold)
}

/// Lets the sink settle what it holds, then saves the final checkpoint.
/// Returns the first fatal error (the loop's, else the save's).
async fn drain<S: Sink>(
    intake: &mut Intake<'_, S>,
    saver: &mut checkpoint::Saver,
    mut fatal: Option<PipelineError>,
) -> Option<PipelineError> {
    let health = intake.health;
    health.monitor_running.store(false, Ordering::Relaxed);
    let settlement = intake.sink.close(intake.config.shutdown_timeout).await;
    intake.advance(settlement.watermark);
    health.dispatcher_running.store(false, Ordering::Relaxed);
    let unsettled = settlement.unsettled;
    match intake.save_settled(saver).await {
        Ok(Some(c)) => {
            tracing::info!(position = %format!("{}:{}", c.file, c.pos), unsettled, "delivery stopped; checkpoint saved: every change up to this position is settled")
        }
        Ok(None) => tracing::info!(unsettled, "delivery stopped"),
        Err(e) => {
            tracing::error!("cannot save the final checkpoint: {e}");
            fatal.get_or_insert(PipelineError::from(e));
        }
    }
    fatal
}

/// Waits for the reader; the loop's fatal error comes first, then the
/// reader's own.
async fn finish(
    reader: JoinHandle<Result<(), SourceError>>,
    fatal: Option<PipelineError>,
) -> Result<(), PipelineError> {
    if let Some(e) = fatal {
        let _ = reader.await;
        return Err(e);
    }
    match reader.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(join) => Err(PipelineError::ReaderStopped(join)),
    }
}
