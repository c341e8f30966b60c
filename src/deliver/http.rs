//! One HTTP attempt: the shared client, each task's prepared target (URL,
//! headers, signing key), Standard Webhooks signing, and how an answer is
//! classified (2xx = delivered; anything else is a failure to retry).
//!
//! Redirects are never followed: a 3xx is a failed attempt whose error
//! names the `Location`. Following one would send the change (with its
//! signature) to another origin, or, for a 301/302/303, turn the POST into
//! a GET without a body whose 2xx would count the change as delivered.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::config::signing_key;

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use sha2::Sha256;

use crate::config::{DispatcherConfig, TaskConfig};

/// `pikachu/<version>`.
pub(crate) const USER_AGENT: &str = concat!("pikachu/", env!("CARGO_PKG_VERSION"));

/// Why delivery cannot start: the HTTP client or a task's target (URL,
/// headers, secret) cannot be built. Messages name the task and the
/// setting, never a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// reqwest refused the client's settings (or found no TLS backend).
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    /// The task's `callback_url` does not parse.
    #[error("task {task}: callback_url {url:?} is not a valid URL: {detail}")]
    Url {
        /// The task's id.
        task: String,
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A header name of the task is not a valid HTTP header name.
    #[error("task {task}: {name:?} is not a valid header name")]
    HeaderName {
        /// The task's id.
        task: String,
        /// The header name as configured.
        name: String,
    },
    /// A header value of the task is not a valid HTTP header value (the
    /// value is not shown: headers carry credentials).
    #[error("task {task}: the value of header {name} is not a valid header value")]
    HeaderValue {
        /// The task's id.
        task: String,
        /// The header's name.
        name: String,
    },
    /// The task's secret cannot be turned into a signing key.
    #[error("task {task}: secret: {detail}")]
    Secret {
        /// The task's id.
        task: String,
        /// What is wrong with it (never the value).
        detail: crate::config::SecretError,
    },
}

/// Builds the shared HTTP client (every webhook request of `run`,
/// `dlq replay` and `replay` goes through one): rustls on ring, HTTP/1.1
/// keep-alive and HTTP/2 (ALPN, for https), `timeout` per attempt, an idle
/// pool big enough for `worker_count` parallel deliveries, and redirects
/// not followed (see the module docs).
pub fn http_client(cfg: &DispatcherConfig) -> Result<reqwest::Client, SetupError> {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(cfg.timeout)
        .user_agent(USER_AGENT)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(cfg.worker_count.max(1))
        .tcp_nodelay(true)
        .build()
        .map_err(SetupError::Client)
}

/// Where and how one task's webhooks are sent, prepared once.
#[derive(Debug, Clone)]
pub struct Target {
    pub task_id: String,
    pub url: reqwest::Url,
    /// `Content-Type` and the task's own headers.
    pub headers: HeaderMap,
    /// HMAC key when the task has a `secret`.
    signing_key: Option<Vec<u8>>,
}

impl Target {
    /// Prepares `task`'s target; errors name the task and the bad setting
    /// (never the secret's value).
    pub fn new(task: &TaskConfig) -> Result<Target, SetupError> {
        let url = reqwest::Url::parse(&task.callback_url).map_err(|e| SetupError::Url {
            task: task.task_id.clone(),
            url: task.callback_url.clone(),
            detail: e.to_string(),
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (k, v) in &task.headers {
            let name =
                HeaderName::from_bytes(k.as_bytes()).map_err(|_| SetupError::HeaderName {
                    task: task.task_id.clone(),
                    name: k.clone(),
                })?;
            let mut value = HeaderValue::from_str(v).map_err(|_| SetupError::HeaderValue {
                task: task.task_id.clone(),
                name: k.clone(),
            })?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        let signing_key = match &task.secret {
            Some(secret) => {
                Some(
                    signing_key(secret.expose()).map_err(|detail| SetupError::Secret {
                        task: task.task_id.clone(),
                        detail,
                    })?,
                )
            }
            None => None,
        };
        Ok(Target {
            task_id: task.task_id.clone(),
            url,
            headers,
            signing_key,
        })
    }
}

/// The `webhook-signature` value: `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`.
pub(crate) fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(itoa::Buffer::new().format(timestamp).as_bytes());
    mac.update(b".");
    mac.update(body);
    let sig = mac.finalize().into_bytes();
    let mut out = String::with_capacity(48);
    out.push_str("v1,");
    base64::engine::general_purpose::STANDARD.encode_string(sig, &mut out);
    out
}

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// `HTTP 503`, `timed out after 30s`, `connection failed: ...`.
    pub message: String,
    /// `Retry-After` (seconds) of a 429 or 503 answer.
    pub retry_after: Option<Duration>,
    /// The failure says the endpoint is unavailable (no connection, a
    /// timeout, a 5xx or 429), what the circuit breaker counts; not a
    /// deliberate answer (3xx, 4xx) or a rejected TLS certificate, which
    /// waiting does not fix.
    pub outage: bool,
}

/// Whether an answer with `status` says the endpoint is unavailable.
fn outage_status(status: u16) -> bool {
    status >= 500 || status == 429
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Sends `body` once to `target` with `id` as `webhook-id`; Ok(status) on 2xx.
pub async fn attempt(
    client: &reqwest::Client,
    target: &Target,
    id: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<u16, AttemptError> {
    let timestamp = unix_now();
    let mut headers = target.headers.clone();
    let hv = |s: &str| HeaderValue::from_str(s);
    match hv(id) {
        Ok(v) => {
            headers.insert("webhook-id", v);
        }
        Err(_) => {
            return Err(AttemptError {
                status: None,
                message: format!("change id {id:?} is not a valid header value"),
                retry_after: None,
                outage: false,
            })
        }
    }
    headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
    if let Some(key) = &target.signing_key {
        let sig = sign(key, id, timestamp, &body);
        if let Ok(v) = hv(&sig) {
            headers.insert("webhook-signature", v);
        }
    }
    let sent = client
        .post(target.url.clone())
        .headers(headers)
        .body(body)
        .send()
        .await;
    let mut resp = match sent {
        Ok(resp) => resp,
        Err(e) => return Err(request_error(&e, timeout)),
    };
    let status = resp.status().as_u16();
    let redirect = resp.status().is_redirection().then(|| {
        redirect_message(
            status,
            resp.headers()
                .get(reqwest::header::LOCATION)
                .map(HeaderValue::as_bytes),
        )
    });
    let retry_after = if status == 429 || status == 503 {
        resp.headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after)
    } else {
        None
    };
    // Read (and drop) the answer so the connection can be reused; a large
    // answer is cut off (the connection is then closed, which is fine).
    let mut read = 0usize;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                if read > 64 * 1024 {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                if (200..300).contains(&status) {
                    // The status is what counts: the receiver said 2xx.
                    break;
                }
                return Err(AttemptError {
                    status: Some(status),
                    message: format!("HTTP {status} ({})", request_error(&e, timeout).message),
                    retry_after,
                    outage: outage_status(status),
                });
            }
        }
    }
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(AttemptError {
            status: Some(status),
            message: redirect.unwrap_or_else(|| format!("HTTP {status}")),
            retry_after,
            outage: outage_status(status),
        })
    }
}

/// The most of a `Location` shown in an error.
const LOCATION_SHOWN: usize = 300;

/// `HTTP 302 redirect to <Location> (not followed: …)`.
fn redirect_message(status: u16, location: Option<&[u8]>) -> String {
    let to = match location {
        None => "without a Location".to_string(),
        Some(raw) => {
            let text = String::from_utf8_lossy(raw);
            let mut shown: String = text
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .take(LOCATION_SHOWN)
                .collect();
            if text.chars().count() > LOCATION_SHOWN {
                shown.push('…');
            }
            format!("to {shown}")
        }
    };
    format!(
        "HTTP {status} redirect {to} (not followed: pikachu never follows redirects; set the task's callback_url to the URL that answers 2xx)"
    )
}

fn request_error(e: &reqwest::Error, timeout: Duration) -> AttemptError {
    let tls_rejected = !e.is_timeout() && find_rustls_error(e).is_some();
    let message = if e.is_timeout() {
        format!("timed out after {timeout:?}")
    } else if let Some(tls) = find_rustls_error(e) {
        let url = e.url().map(|u| u.as_str()).unwrap_or("the callback URL");
        format!("TLS handshake with {url} failed: {}", tls_explanation(tls))
    } else if e.is_connect() {
        format!("connection failed: {}", error_chain(e))
    } else {
        format!("request failed: {}", error_chain(e))
    };
    AttemptError {
        status: None,
        message,
        retry_after: None,
        outage: !tls_rejected,
    }
}

/// The TLS error behind `e`, if any. An `io::Error` does not list the
/// error it wraps among its sources, so each one is unwrapped too.
fn find_rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            let inner: &(dyn std::error::Error + 'static) = inner;
            if let Some(tls) = find_rustls_error(inner) {
                return Some(tls);
            }
        }
        cur = err.source();
    }
    None
}

/// What a TLS failure means and how to fix it.
fn tls_explanation(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let trust = "add the CA that signed it (for a self-signed certificate, the certificate itself) \
                 to this machine's trust store (e.g. a .crt file in /usr/local/share/ca-certificates/, \
                 then update-ca-certificates), or set SSL_CERT_FILE to a PEM file holding it and the \
                 other CAs pikachu needs (it replaces the system's)";
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => format!(
                "the server's certificate is not trusted here: a self-signed certificate, or one signed \
                 by a CA this machine does not trust ({e}); {trust}"
            ),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "the server's certificate is not valid for this host name ({e}); use a host name \
                 the certificate names in the task's callback_url"
            ),
            C::Expired | C::ExpiredContext { .. } => format!(
                "the server's certificate has expired ({e}); the receiver must renew it"
            ),
            C::NotValidYet | C::NotValidYetContext { .. } => format!(
                "the server's certificate is not valid yet ({e}); check this machine's clock"
            ),
            C::Revoked => format!("the server's certificate is revoked ({e})"),
            _ => format!("the server's certificate was rejected ({e})"),
        },
        other => format!("{other}"),
    }
}

/// `e` and its sources, `: `-joined, without repeats.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// Parses a `Retry-After` header: seconds, or an HTTP date (the wait until
/// then; zero for a date in the past).
pub fn retry_after(value: &str) -> Option<Duration> {
    retry_after_at(value, std::time::SystemTime::now())
}

fn retry_after_at(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(url: &str, headers: &[(&str, &str)], secret: Option<&str>) -> TaskConfig {
        TaskConfig {
            task_id: "orders".into(),
            name: "orders".into(),
            database: None,
            table_name: "orders".into(),
            events: crate::config::EventKind::ALL.to_vec(),
            callback_url: url.into(),
            secret: secret.map(crate::config::Secret::new),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            batch: None,
            on_failure: Default::default(),
            snapshot: Default::default(),
            limits: Default::default(),
        }
    }

    #[test]
    fn a_target_that_cannot_be_built_says_which_task_and_setting() {
        let err = |t: TaskConfig| Target::new(&t).expect_err("an error");
        let e = err(task("not a url", &[], None));
        assert!(matches!(e, SetupError::Url { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("task orders: callback_url \"not a url\" is not a valid URL: "),
            "{e}"
        );
        let e = err(task("http://h/x", &[("bad name", "v")], None));
        assert!(matches!(e, SetupError::HeaderName { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "task orders: \"bad name\" is not a valid header name"
        );
        // A header value may be a credential: the message names the header only.
        let e = err(task(
            "http://h/x",
            &[("Authorization", "Bearer tok\nen")],
            None,
        ));
        assert!(matches!(e, SetupError::HeaderValue { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "task orders: the value of header Authorization is not a valid header value"
        );
        assert!(!e.to_string().contains("tok"));
        let e = err(task("http://h/x", &[], Some("whsec_not*base64!")));
        assert!(matches!(e, SetupError::Secret { .. }), "{e:?}");
        assert!(e.to_string().starts_with("task orders: secret: "), "{e}");
        assert!(!e.to_string().contains("not*base64"), "{e}");
        assert!(Target::new(&task("http://h/x", &[("X-A", "1")], None)).is_ok());
    }

    #[test]
    fn standard_webhooks_spec_vector() {
        // The test vector of the Standard Webhooks specification.
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("key");
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn redirect_messages_name_the_location() {
        let m = redirect_message(307, Some(b"https://other.example/hook"));
        assert!(
            m.starts_with("HTTP 307 redirect to https://other.example/hook (not followed"),
            "{m}"
        );
        assert!(m.contains("callback_url"), "{m}");
        assert!(redirect_message(302, None).contains("without a Location"));
        let long = format!("http://x/{}\n", "a".repeat(400));
        let m = redirect_message(301, Some(long.as_bytes()));
        assert!(m.contains("aaa…"), "{m}");
        assert!(!m.contains('\n'), "{m}");
    }

    #[test]
    fn secrets() {
        assert_eq!(signing_key("plain").expect("plain"), b"plain".to_vec());
        assert_eq!(signing_key("whsec_aGk=").expect("b64"), b"hi".to_vec());
        assert_eq!(signing_key("whsec_aGk").expect("unpadded"), b"hi".to_vec());
        assert!(signing_key("whsec_!!").is_err());
        assert!(signing_key("").is_err());
        assert!(signing_key("whsec_").is_err());
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(retry_after(" 7 "), Some(Duration::from_secs(7)));
        // An HTTP date: the wait until then, none for a past one.
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").expect("date");
        assert_eq!(
            retry_after_at("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(retry_after("soon"), None);
    }
}
