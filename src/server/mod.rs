//! The HTTP server for operators: `GET {server.path}` (health in the Go
//! pikachu's JSON shape, 503 when down), `/live`, `/ready` and `/metrics`
//! (Prometheus). [`monitor`] keeps the figures that need sampling (delivery
//! progress, stored dead letters, binlog retention headroom).
//!
//! Health is DOWN (HTTP 503) when any of these holds:
//! - the pipeline is not running (starting, stopping, or failed);
//! - the binlog connection has been down for longer than
//!   `server.down_after` (default 30 s; shorter reconnects stay UP);
//! - delivery is stalled: changes are queued and none was delivered or
//!   dead-lettered for longer than `server.stall_after` (default 5 min);
//! - another replica keeps taking `database.server_id` (3 disconnects
//!   within a minute; see [`ReaderStatus::server_id_clash`]).

pub(crate) mod monitor;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::Settled;
use crate::config::Config;
use crate::deliver::Stats;
use crate::metrics::{Checkpoint, Metrics, Snapshot};
use crate::source::reader::ReaderStatus;

/// Paths the server always serves besides `server.path`.
pub(crate) use crate::config::SERVER_FIXED_PATHS as FIXED_PATHS;

/// Live state shared by the pipeline (writers) and the server (reader).
#[derive(Debug)]
pub(crate) struct Health {
    pub monitor_running: AtomicBool,
    pub dispatcher_running: AtomicBool,
    /// Used until the reader's own status is attached (`source`).
    pub connected: AtomicBool,
    /// Binlog timestamp of the last change seen, seconds since the epoch (0 = none).
    pub last_event_time: AtomicI64,
    /// Dead letters in the store when the pipeline started (this run's
    /// are in the delivery engine's stats).
    pub dead_letters_before: AtomicU64,
    /// Dead letters in the store as last counted by the monitor (-1: not yet).
    pub dead_letters_stored: AtomicI64,
    /// The settled position and the saved checkpoint, as the pipeline's
    /// commit tracker publishes them.
    settled: watch::Receiver<Settled>,
    /// The binlog reader's own state (connection, reconnects), once it runs.
    pub source: OnceLock<Arc<ReaderStatus>>,
    /// The delivery engine's counters, once it runs.
    pub delivery: OnceLock<Arc<Stats>>,
    pub metrics: Arc<Metrics>,
    down_after: Duration,
    stall_after: Duration,
    stall: Mutex<Stall>,
}

#[derive(Debug, Default)]
struct Stall {
    last_settled: u64,
    since: Option<Instant>,
}

impl Default for Health {
    fn default() -> Self {
        Health::new(
            Arc::new(Metrics::default()),
            Duration::from_secs(30),
            Duration::from_secs(300),
        )
    }
}

impl Health {
    pub fn new(metrics: Arc<Metrics>, down_after: Duration, stall_after: Duration) -> Health {
        Health {
            monitor_running: AtomicBool::new(false),
            dispatcher_running: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            last_event_time: AtomicI64::new(0),
            dead_letters_before: AtomicU64::new(0),
            dead_letters_stored: AtomicI64::new(-1),
            // Nothing published until the pipeline's tracker is attached
            // (`Health::for_config`).
            settled: watch::channel(Settled::default()).1,
            source: OnceLock::new(),
            delivery: OnceLock::new(),
            metrics,
            down_after,
            stall_after,
            stall: Mutex::new(Stall::default()),
        }
    }

    /// Health and metrics for `config` (its tasks, `server.down_after`,
    /// `server.stall_after`), reading the settled position from `settled`.
    pub(crate) fn for_config(config: &Config, settled: watch::Receiver<Settled>) -> Health {
        let ids: Vec<&str> = config.tasks.iter().map(|t| t.task_id.as_str()).collect();
        Health {
            settled,
            ..Health::new(
                Arc::new(Metrics::new(&ids)),
                config.server.down_after,
                config.server.stall_after,
            )
        }
    }

    /// The settled position and the saved checkpoint, now.
    pub fn settled(&self) -> Settled {
        self.settled.borrow().clone()
    }

    /// The settled position (`file:pos`): every change before it is settled.
    pub fn position(&self) -> Option<String> {
        let s = self.settled.borrow();
        s.position.as_ref().map(|c| format!("{}:{}", c.file, c.pos))
    }

    fn is_connected(&self) -> bool {
        match self.source.get() {
            Some(s) => s.connected.load(Ordering::Relaxed),
            None => self.connected.load(Ordering::Relaxed),
        }
    }

    fn running(&self) -> bool {
        self.monitor_running.load(Ordering::Relaxed)
            && self.dispatcher_running.load(Ordering::Relaxed)
    }

    fn queue_size(&self) -> u64 {
        match self.delivery.get() {
            Some(s) => s.queued.load(Ordering::Relaxed),
            None => 0,
        }
    }

    /// Samples delivery progress for the stall rule (the monitor calls it
    /// every second).
    pub(crate) fn sample_delivery(&self) {
        let Some(stats) = self.delivery.get() else {
            return;
        };
        let settled =
            stats.delivered.load(Ordering::Relaxed) + stats.dead_lettered.load(Ordering::Relaxed);
        let queued = stats.queued.load(Ordering::Relaxed);
        if let Ok(mut st) = self.stall.lock() {
            if queued == 0 || settled != st.last_settled {
                st.last_settled = settled;
                st.since = None;
            } else if st.since.is_none() {
                st.since = Some(Instant::now());
            }
        }
    }

    /// Why health is DOWN; `None` when UP.
    pub(crate) fn down_reason(&self) -> Option<String> {
        if !self.running() {
            return Some("the pipeline is not running".into());
        }
        if let Some(s) = self.source.get() {
            if let Some(reason) = s.server_id_clash.lock().ok().and_then(|r| r.clone()) {
                return Some(reason);
            }
            if let Some(d) = s.disconnected_for() {
                if d > self.down_after {
                    let last = s.last_error.lock().ok().and_then(|e| e.clone());
                    return Some(match last {
                        Some(e) => format!(
                            "no binlog connection for {} s (last error: {e})",
                            d.as_secs()
                        ),
                        None => format!("no binlog connection for {} s", d.as_secs()),
                    });
                }
            }
        } else if !self.connected.load(Ordering::Relaxed) {
            return Some("no binlog connection".into());
        }
        let stalled = self
            .stall
            .lock()
            .ok()
            .and_then(|s| s.since)
            .map(|s| s.elapsed());
        // Changes of paused tasks wait by request: not a stall.
        let paused_queued: u64 = self
            .delivery
            .get()
            .and_then(|s| s.tasks.get())
            .map_or(0, |t| {
                t.iter()
                    .filter(|f| f.paused.load(Ordering::Relaxed))
                    .map(|f| f.queued.load(Ordering::Relaxed))
                    .sum()
            });
        if let Some(d) = stalled.filter(|_| self.queue_size() > paused_queued) {
            if d > self.stall_after {
                return Some(format!(
                    "delivery stalled: {} changes queued and none settled for {} s",
                    self.queue_size(),
                    d.as_secs()
                ));
            }
        }
        let blocked = self
            .delivery
            .get()
            .and_then(|s| s.tasks.get())
            .and_then(|t| {
                t.iter()
                    .find(|f| f.full_blocks.load(Ordering::Relaxed))
                    .map(|f| f.task_id.clone())
            });
        if let Some(task) = blocked {
            return Some(format!(
                "task {task}: its backlog is full (backlog.max_bytes) and reading the binlog waits for it (backlog.when_full: block)"
            ));
        }
        None
    }

    fn is_up(&self) -> bool {
        self.down_reason().is_none()
    }

    /// Ready: the pipeline runs and the binlog stream is connected now.
    pub(crate) fn is_ready(&self) -> bool {
        self.running() && self.is_connected()
    }

    /// Replication lag in seconds (see [`ReaderStatus::lag_seconds`]).
    pub fn lag_seconds(&self) -> Option<i64> {
        self.source.get().and_then(|s| s.lag_seconds())
    }

    fn dead_letters(&self) -> u64 {
        let stored = self.dead_letters_stored.load(Ordering::Relaxed);
        if stored >= 0 {
            stored as u64
        } else {
            let this_run = self
                .delivery
                .get()
                .map_or(0, |s| s.dead_lettered.load(Ordering::Relaxed));
            self.dead_letters_before.load(Ordering::Relaxed) + this_run
        }
    }

    /// The health document.
    pub fn json(&self) -> serde_json::Value {
        let last = self.last_event_time.load(Ordering::Relaxed);
        let reason = self.down_reason();
        let mut doc = serde_json::json!({
            "status": if reason.is_none() { "UP" } else { "DOWN" },
            "monitor_running": self.monitor_running.load(Ordering::Relaxed),
            "dispatcher_running": self.dispatcher_running.load(Ordering::Relaxed),
            "event_queue_size": self.queue_size(),
            "last_event_time": if last > 0 { serde_json::Value::String(crate::event::time::rfc3339(last)) } else { serde_json::Value::Null },
            "lag_seconds": self.lag_seconds(),
            "position": self.position(),
            "connected": self.is_connected(),
            "dead_letters": self.dead_letters(),
            "snapshots": self.metrics.snapshots.running(),
            "tasks": self.tasks().iter().map(|t| serde_json::json!({
                "task": t.task,
                "state": t.state,
                "backlog_changes": t.backlog_changes,
                "backlog_bytes": t.backlog_bytes,
                "backlog_oldest_seconds": t.backlog_oldest_seconds,
            })).collect::<Vec<_>>(),
        });
        if let (Some(r), Some(o)) = (reason, doc.as_object_mut()) {
            o.insert("reason".into(), r.into());
        }
        doc
    }

    /// The figures `/metrics` copies in at scrape time.
    pub fn snapshot(&self) -> Snapshot {
        let src = self.source.get();
        let stats = self.delivery.get();
        let stored = self.dead_letters_stored.load(Ordering::Relaxed);
        let checkpoint = self
            .settled
            .borrow()
            .saved
            .as_ref()
            .map(|(c, at)| Checkpoint {
                file: c.file.to_string(),
                pos: c.pos,
                saved_at: *at,
            });
        Snapshot {
            binlog_bytes_read: src.map_or(0, |s| s.bytes_read.load(Ordering::Relaxed)),
            reconnects: src.map_or(0, |s| s.reconnects.load(Ordering::Relaxed)),
            connected: self.is_connected(),
            lag_seconds: self.lag_seconds(),
            queue_depth: self.queue_size(),
            in_flight: stats.map_or(0, |s| s.in_flight.load(Ordering::Relaxed)),
            dead_letters_stored: (stored >= 0).then_some(stored as u64),
            healthy: self.is_up(),
            checkpoint,
            tasks: self.tasks(),
        }
    }

    /// Each task's state and backlog (empty before delivery starts).
    pub(crate) fn tasks(&self) -> Vec<crate::metrics::TaskSnapshot> {
        let now = crate::store::unix_millis(std::time::SystemTime::now());
        let Some(figures) = self.delivery.get().and_then(|s| s.tasks.get()) else {
            return Vec::new();
        };
        figures
            .iter()
            .map(|f| crate::metrics::TaskSnapshot {
                task: f.task_id.clone(),
                state: f.state().as_str(),
                backlog_changes: f.backlog_changes.load(Ordering::Relaxed),
                backlog_bytes: f.backlog_bytes.load(Ordering::Relaxed),
                backlog_oldest_seconds: f.backlog_oldest_seconds(now),
            })
            .collect()
    }
}

async fn health(State(h): State<Arc<Health>>) -> impl IntoResponse {
    let code = if h.is_up() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(h.json()))
}

async fn live() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

async fn ready(State(h): State<Arc<Health>>) -> impl IntoResponse {
    if h.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(h): State<Arc<Health>>) -> impl IntoResponse {
    let body = h.metrics.encode(&h.snapshot());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// Why the health server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `server.path` is one of the fixed paths.
    #[error("server.path `{path}` is taken: the server also serves {}; choose another health path", FIXED_PATHS.join(", "))]
    PathTaken {
        /// The configured path.
        path: String,
    },
    /// The address cannot be listened on (in use, not allowed).
    #[error("cannot listen on {bind}:{port} for the health server: {source}")]
    Listen {
        /// `server.bind`.
        bind: String,
        /// `server.port`.
        port: u16,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bound address cannot be read back.
    #[error("health server address: {0}")]
    Address(std::io::Error),
}

/// Binds the server; returns the bound address and a future that serves
/// until `cancel`, then finishes the requests in progress and returns.
pub async fn bind(
    bind: &str,
    port: u16,
    path: &str,
    health_state: Arc<Health>,
    cancel: CancellationToken,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()>), ServeError> {
    if FIXED_PATHS.contains(&path) {
        return Err(ServeError::PathTaken {
            path: path.to_string(),
        });
    }
    let app = Router::new()
        .route(path, get(health))
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(health_state);
    let listener = tokio::net::TcpListener::bind((bind, port))
        .await
        .map_err(|source| ServeError::Listen {
            bind: bind.to_string(),
            port,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Address)?;
    let fut = async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "the health server failed");
        }
    };
    Ok((addr, fut))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(h: &Health) {
        h.monitor_running.store(true, Ordering::Relaxed);
        h.dispatcher_running.store(true, Ordering::Relaxed);
        h.connected.store(true, Ordering::Relaxed);
    }

    #[test]
    fn down_until_running() {
        let h = Health::default();
        assert!(!h.is_up());
        assert_eq!(h.json()["status"], "DOWN");
        assert_eq!(h.json()["reason"], "the pipeline is not running");
        running(&h);
        assert!(h.is_up());
        assert!(h.is_ready());
        let doc = h.json();
        assert_eq!(doc["status"], "UP");
        assert!(doc.get("reason").is_none());
        for key in [
            "monitor_running",
            "dispatcher_running",
            "event_queue_size",
            "last_event_time",
            "lag_seconds",
            "position",
            "connected",
            "dead_letters",
        ] {
            assert!(doc.get(key).is_some(), "{key} missing: {doc}");
        }
    }

    #[test]
    fn a_short_disconnection_stays_up() {
        let h = Health::new(
            Arc::new(Metrics::default()),
            Duration::from_millis(50),
            Duration::from_secs(300),
        );
        running(&h);
        let status = Arc::new(ReaderStatus::default());
        let _ = h.source.set(status.clone());
        // Never connected, but within the grace period: UP, not ready.
        assert!(h.is_up());
        assert!(!h.is_ready());
        let deadline = Instant::now() + Duration::from_secs(5);
        while h.is_up() && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(!h.is_up());
        assert!(h.json()["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("no binlog connection for"));
    }

    #[test]
    fn stalled_delivery_goes_down() {
        let h = Health::new(
            Arc::new(Metrics::default()),
            Duration::from_secs(30),
            Duration::from_millis(20),
        );
        running(&h);
        let stats = Arc::new(Stats::default());
        let _ = h.delivery.set(stats.clone());
        h.sample_delivery();
        assert!(h.is_up());
        stats.queued.store(3, Ordering::Relaxed);
        h.sample_delivery();
        let deadline = Instant::now() + Duration::from_secs(5);
        while h.is_up() && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(h.json()["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("delivery stalled"));
        // Progress brings it back.
        stats.delivered.store(1, Ordering::Relaxed);
        h.sample_delivery();
        assert!(h.is_up());
        // An empty queue is never stalled.
        stats.queued.store(0, Ordering::Relaxed);
        h.sample_delivery();
        assert!(h.is_up());
    }
}
