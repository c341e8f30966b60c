//! A tiny webhook receiver that prints every request it gets, used by the
//! quick start (`pikachu demo-receiver`) to show changes arriving.

use std::io::Write;

use axum::body::Bytes;
use axum::http::{HeaderMap, Uri};
use axum::routing::post;
use axum::Router;

async fn print_hook(uri: Uri, headers: HeaderMap, body: Bytes) -> &'static str {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let pretty = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "POST {uri}  webhook-id: {id}\n{pretty}\n");
    let _ = out.flush();
    "ok"
}

/// Why the demo receiver stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The listen address cannot be bound.
    #[error("cannot listen on {listen}: {source}")]
    Listen {
        /// The address asked for.
        listen: String,
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("demo receiver: {0}")]
    Serve(#[source] std::io::Error),
}

/// Serves until the process is stopped.
pub async fn run(listen: &str) -> Result<(), DemoError> {
    let app = Router::new()
        .route("/", post(print_hook))
        .route("/{*path}", post(print_hook));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| DemoError::Listen {
            listen: listen.to_string(),
            source,
        })?;
    eprintln!("demo receiver listening on http://{listen}/ (Ctrl-C to stop)");
    axum::serve(listener, app).await.map_err(DemoError::Serve)
}
