//! Webhook delivery: POSTs each routed change to its task's callback URL,
//! retrying failures with backoff. (First slice: one change at a time, in
//! binlog order; the ordered worker pool replaces it.)

pub mod backoff;

use std::time::Duration;

use crate::config::{DispatcherConfig, TaskConfig};

/// Builds the shared HTTP client (rustls on ring, HTTP/1.1 and HTTP/2, keep-alive).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("pikachu/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Why one attempt failed.
#[derive(Debug)]
pub struct AttemptError {
    pub message: String,
    pub retry_after: Option<Duration>,
}

/// Posts one body once; Ok on a 2xx status.
pub async fn post_once(
    client: &reqwest::Client,
    task: &TaskConfig,
    id: &str,
    timestamp: i64,
    body: Vec<u8>,
) -> Result<u16, AttemptError> {
    let mut req = client
        .post(&task.callback_url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string());
    for (k, v) in &task.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    match req.body(body).send().await {
        Ok(resp) => {
            let status = resp.status();
            if status.is_success() {
                Ok(status.as_u16())
            } else {
                let retry_after = if status.as_u16() == 429 || status.as_u16() == 503 {
                    resp.headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(backoff::retry_after)
                } else {
                    None
                };
                Err(AttemptError {
                    message: format!("HTTP {}", status.as_u16()),
                    retry_after,
                })
            }
        }
        Err(e) => Err(AttemptError {
            message: if e.is_timeout() {
                "timed out".to_string()
            } else if e.is_connect() {
                format!("cannot connect: {e}")
            } else {
                e.to_string()
            },
            retry_after: None,
        }),
    }
}

/// Outcome of delivering one change.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered { attempts: u32 },
    Failed { attempts: u32, last_error: String },
}

/// Delivers one body with retries (`max_retries` after the first attempt).
pub async fn deliver_with_retries(
    client: &reqwest::Client,
    cfg: &DispatcherConfig,
    task: &TaskConfig,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Outcome {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match post_once(client, task, id, timestamp, body.to_vec()).await {
            Ok(_) => return Outcome::Delivered { attempts: attempt },
            Err(e) => {
                if attempt > cfg.max_retries {
                    return Outcome::Failed {
                        attempts: attempt,
                        last_error: e.message,
                    };
                }
                let delay = e.retry_after.unwrap_or_else(|| {
                    backoff::full_jitter(
                        cfg.retry_base_delay,
                        cfg.retry_max_delay,
                        attempt - 1,
                        backoff::rand01(),
                    )
                });
                tracing::warn!(task_id = %task.task_id, id, attempt, error = %e.message, retry_in_ms = delay.as_millis() as u64, "webhook delivery failed, retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}
