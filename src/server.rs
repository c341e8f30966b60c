//! The HTTP server for operators: `GET {server.path}` (health in the Go
//! pikachu's JSON shape, 503 when down), `/live` and `/ready`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

/// Live state shared by the pipeline (writers) and the server (reader).
#[derive(Debug, Default)]
pub struct Health {
    pub monitor_running: AtomicBool,
    pub dispatcher_running: AtomicBool,
    pub connected: AtomicBool,
    pub queue_size: AtomicU64,
    /// Binlog timestamp of the last change seen, seconds since the epoch (0 = none).
    pub last_event_time: AtomicI64,
    pub dead_letters: AtomicU64,
    pub position: Mutex<Option<String>>,
    /// The binlog reader's own state (connection, reconnects), once it runs.
    pub source: std::sync::OnceLock<Arc<crate::source::reader::ReaderStatus>>,
}

impl Health {
    pub fn set_position(&self, pos: String) {
        if let Ok(mut p) = self.position.lock() {
            *p = Some(pos);
        }
    }

    fn is_connected(&self) -> bool {
        match self.source.get() {
            Some(s) => s.connected.load(Ordering::Relaxed),
            None => self.connected.load(Ordering::Relaxed),
        }
    }

    fn is_up(&self) -> bool {
        self.monitor_running.load(Ordering::Relaxed)
            && self.dispatcher_running.load(Ordering::Relaxed)
            && self.is_connected()
    }

    /// The health document.
    pub fn json(&self) -> serde_json::Value {
        let last = self.last_event_time.load(Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        serde_json::json!({
            "status": if self.is_up() { "UP" } else { "DOWN" },
            "monitor_running": self.monitor_running.load(Ordering::Relaxed),
            "dispatcher_running": self.dispatcher_running.load(Ordering::Relaxed),
            "event_queue_size": self.queue_size.load(Ordering::Relaxed),
            "last_event_time": if last > 0 { serde_json::Value::String(crate::event::time::rfc3339(last)) } else { serde_json::Value::Null },
            "lag_seconds": if last > 0 { serde_json::json!((now - last).max(0)) } else { serde_json::Value::Null },
            "position": self.position.lock().ok().and_then(|p| p.clone()),
            "connected": self.is_connected(),
            "dead_letters": self.dead_letters.load(Ordering::Relaxed),
        })
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
    (StatusCode::OK, "ok")
}

async fn ready(State(h): State<Arc<Health>>) -> impl IntoResponse {
    if h.is_up() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Binds the server; returns the bound address and a future that serves until `cancel`.
pub async fn bind(
    bind: &str,
    port: u16,
    path: &str,
    health_state: Arc<Health>,
    cancel: CancellationToken,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()>), String> {
    let app = Router::new()
        .route(path, get(health))
        .route("/live", get(live))
        .route("/ready", get(ready))
        .with_state(health_state);
    let listener = tokio::net::TcpListener::bind((bind, port))
        .await
        .map_err(|e| format!("cannot listen on {bind}:{port} for the health server: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("health server address: {e}"))?;
    let fut = async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
    };
    Ok((addr, fut))
}
