//! Wires the pipeline for `pikachu run`: connect and check the server, open
//! the binlog stream at the start position, route each change to the tasks
//! that want it, deliver, and stop cleanly when cancelled.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::deliver::{self, Outcome};
use crate::event::payload;
use crate::route::Router;
use crate::server::Health;
use crate::source::connect::{self, ServerInfo};
use crate::source::position;
use crate::source::reader::{self, ReaderOptions, SourceEvent};
use crate::source::value::DecodeOptions;
use crate::source::SourceError;

/// Errors that stop `pikachu run`.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}")]
    Setup(String),
}

/// Runs the pipeline until `cancel` or a fatal error.
pub async fn run(
    config: Config,
    health: Arc<Health>,
    cancel: CancellationToken,
) -> Result<(), AppError> {
    let config = Arc::new(config);
    crate::preflight::at_start(&config)
        .await
        .map_err(AppError::Setup)?;
    let mut conn = connect::connect(&config.database).await?;
    let info: ServerInfo = connect::server_info(&mut conn).await?;
    tracing::info!(flavour = info.flavour.as_str(), version = %info.version, server_id = info.server_id, "connected to {}", connect::addr(&config.database));
    let start = position::resolve(&mut conn, &info, &config.start).await?;
    drop(conn);
    tracing::info!(position = %start, "starting from {:?}", config.start);

    let router = Arc::new(Router::new(&config.tasks, &config.database.database));
    let filter_router = router.clone();
    let opts = ReaderOptions {
        db: config.database.clone(),
        heartbeat: config.database.heartbeat,
        decode: DecodeOptions::default(),
        filter: Arc::new(move |db: &str, table: &str| filter_router.wants_table(db, table)),
    };
    let (tx, mut rx) = mpsc::channel::<SourceEvent>(config.dispatcher.queue_size.max(1));
    let reader_cancel = cancel.child_token();
    let reader_status = Arc::new(reader::ReaderStatus::default());
    let _ = health.source.set(reader_status.clone());
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

    let client = deliver::http_client(config.dispatcher.timeout).map_err(AppError::Setup)?;
    let mut body = Vec::with_capacity(1024);
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => break,
            ev = rx.recv() => ev,
        };
        let Some(ev) = ev else { break };
        match ev {
            SourceEvent::Change(change) => {
                health
                    .last_event_time
                    .store(i64::from(change.timestamp), Ordering::Relaxed);
                for task_idx in router.tasks_for(&change) {
                    let task = &config.tasks[task_idx];
                    let id = payload::change_id(&change, &task.task_id);
                    body.clear();
                    payload::render(&mut body, &change, &task.task_id, &id);
                    let outcome = deliver::deliver_with_retries(
                        &client,
                        &config.dispatcher,
                        task,
                        &id,
                        i64::from(change.timestamp),
                        &body,
                    )
                    .await;
                    match outcome {
                        Outcome::Delivered { attempts } => {
                            tracing::debug!(task_id = %task.task_id, id = %id, attempts, "delivered");
                        }
                        Outcome::Failed {
                            attempts,
                            last_error,
                        } => {
                            health.dead_letters.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(task_id = %task.task_id, id = %id, attempts, error = %last_error, payload = %String::from_utf8_lossy(&body), "webhook delivery failed after all retries");
                        }
                    }
                }
            }
            SourceEvent::Commit(c) => {
                health.set_position(format!("{}:{}", c.file, c.pos));
            }
        }
    }
    reader_cancel.cancel();
    health.monitor_running.store(false, Ordering::Relaxed);
    health.dispatcher_running.store(false, Ordering::Relaxed);
    match reader.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(join) => Err(AppError::Setup(format!(
            "the binlog reader stopped unexpectedly: {join}"
        ))),
    }
}
