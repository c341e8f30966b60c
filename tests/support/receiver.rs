//! A real HTTP webhook receiver for tests: axum on 127.0.0.1 (a free port),
//! on its own tokio runtime, so sync and async tests can use it alike.
//!
//! It answers every request (any method, any path) with 200 unless told
//! otherwise; the order of precedence for the next request is: a queued
//! [`Receiver::fail_next`] / [`Receiver::hang_next`] plan, then
//! [`Receiver::set_status`], then 200. [`Receiver::set_delay`] delays the
//! answer (not the recording of the arrival). [`Receiver::set_redirect`]
//! answers every request with a 3xx and a `Location`.
//!
//! [`Receiver::start_tls`] serves https with a self-signed certificate for
//! `127.0.0.1` ([`Receiver::cert_pem`]); TLS handshakes the client gave up
//! on are counted ([`Receiver::failed_handshakes`]).

use std::collections::VecDeque;
use std::net::TcpListener as StdTcpListener;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// The URL path, without the query string.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// Header names are lowercase; in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the request (with its body) had arrived.
    pub at: Instant,
    /// The status the receiver answered with; `None` while it is being held
    /// (delay, hang) or if it was never answered.
    pub status: Option<u16>,
    seq: u64,
}

impl Received {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body of {} {} is not JSON ({e}): {}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn succeeded(&self) -> bool {
        matches!(self.status, Some(s) if (200..300).contains(&s))
    }
}

type DelayFn = Arc<dyn Fn(&Received) -> Duration + Send + Sync>;

#[derive(Clone, Copy, Debug)]
enum Plan {
    Answer {
        status: u16,
        retry_after: Option<u64>,
    },
    Hang,
}

#[derive(Default)]
struct State_ {
    requests: Vec<Received>,
    next_seq: u64,
    queue: VecDeque<Plan>,
    status: Option<u16>,
    delay: Option<DelayFn>,
    /// `Location` of every answer while set (with [`Receiver::set_redirect`]).
    location: Option<String>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State_>,
    changed: Condvar,
    /// TLS handshakes that failed (the client rejected the certificate).
    failed_handshakes: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// See the module docs.
pub struct Receiver {
    port: u16,
    shared: Arc<Shared>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    /// The certificate (PEM) and TLS config when serving https.
    tls: Option<(String, Arc<rustls::ServerConfig>)>,
}

impl Receiver {
    /// Starts a receiver on a free port of 127.0.0.1.
    pub fn start() -> Receiver {
        let listener = StdTcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let shared = Arc::new(Shared::default());
        let runtime = serve(listener, shared.clone(), None);
        Receiver {
            port,
            shared,
            runtime: Mutex::new(Some(runtime)),
            tls: None,
        }
    }

    /// Starts an https receiver on a free port of 127.0.0.1, with a new
    /// self-signed certificate for `127.0.0.1` and `localhost`.
    pub fn start_tls() -> Receiver {
        super::install_crypto_provider();
        let cert = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])
        .expect("self-signed certificate");
        let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
            .expect("private key");
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .expect("TLS server config");
        let tls = Arc::new(config);
        let listener = StdTcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let shared = Arc::new(Shared::default());
        let runtime = serve(listener, shared.clone(), Some(tls.clone()));
        Receiver {
            port,
            shared,
            runtime: Mutex::new(Some(runtime)),
            tls: Some((cert.cert.pem(), tls)),
        }
    }

    /// The self-signed certificate (PEM) of a [`Receiver::start_tls`] receiver.
    pub fn cert_pem(&self) -> &str {
        &self.tls.as_ref().expect("not a TLS receiver").0
    }

    /// TLS handshakes that failed so far (the client refused the certificate).
    pub fn failed_handshakes(&self) -> u64 {
        self.shared
            .failed_handshakes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT{path}` (`https://` for a TLS receiver;
    /// `path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    /// The requests answered with a 2xx status, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.succeeded())
            .cloned()
            .collect()
    }

    /// Every request, in arrival order, whatever its answer (or none yet).
    pub fn all_requests(&self) -> Vec<Received> {
        self.shared.lock().requests.clone()
    }

    /// Waits until at least `n` requests were answered 2xx and returns them
    /// (all of them, not just `n`); panics after `timeout` listing what came.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until(timeout, |reqs| {
            reqs.iter().filter(|r| r.succeeded()).count() >= n
        });
        self.received()
    }

    /// Waits until at least `n` requests arrived, whatever their answer.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until(timeout, |reqs| reqs.len() >= n);
        self.all_requests()
    }

    /// Asserts that no request arrives for `duration` (beyond those so far).
    pub fn assert_no_more_requests(&self, duration: Duration) {
        let before = self.shared.lock().requests.len();
        let deadline = Instant::now() + duration;
        let mut state = self.shared.lock();
        while state.requests.len() == before {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        panic!(
            "expected no more requests, got:\n{}",
            describe(&state.requests[before..])
        );
    }

    /// The bodies of [`Receiver::received`] as JSON.
    pub fn json_bodies(&self) -> Vec<serde_json::Value> {
        self.received().iter().map(Received::json).collect()
    }

    /// Answers the next `n` requests with `status`.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.plan(
            n,
            Plan::Answer {
                status,
                retry_after: None,
            },
        );
    }

    /// Answers the next `n` requests with `status` and `Retry-After: secs`.
    pub fn fail_next_with_retry_after(&self, n: usize, status: u16, retry_after_secs: u64) {
        self.plan(
            n,
            Plan::Answer {
                status,
                retry_after: Some(retry_after_secs),
            },
        );
    }

    /// Never answers the next `n` requests (held until the client gives up,
    /// or the receiver stops).
    pub fn hang_next(&self, n: usize) {
        self.plan(n, Plan::Hang);
    }

    /// Answers every request with `status` until cleared with `None`
    /// (queued plans still come first).
    pub fn set_status(&self, status: Option<u16>) {
        self.shared.lock().status = status;
    }

    /// Delays each answer by `f(request)`.
    pub fn set_delay(&self, f: impl Fn(&Received) -> Duration + Send + Sync + 'static) {
        self.shared.lock().delay = Some(Arc::new(f));
    }

    /// Answers every request with `status` (a 3xx) and `Location: location`
    /// until [`Receiver::reset`] (queued plans still come first).
    pub fn set_redirect(&self, status: u16, location: &str) {
        let mut state = self.shared.lock();
        state.status = Some(status);
        state.location = Some(location.to_string());
    }

    pub fn clear_delay(&self) {
        self.shared.lock().delay = None;
    }

    /// Forgets recorded requests and all plans, status and delay.
    pub fn reset(&self) {
        let mut state = self.shared.lock();
        let next_seq = state.next_seq;
        *state = State_::default();
        state.next_seq = next_seq;
    }

    /// Takes the receiver down: the port refuses connections and open
    /// connections (and held requests) are closed.
    pub fn stop(&self) {
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(runtime) = runtime {
            // Shut down on a plain thread: it blocks, which an async test's
            // runtime thread must not do through tokio.
            thread::spawn(move || runtime.shutdown_timeout(Duration::from_secs(10)))
                .join()
                .expect("receiver shutdown panicked");
        }
    }

    /// Brings a stopped receiver back on the same port.
    pub fn start_again(&self) {
        let mut runtime = self.runtime.lock().unwrap_or_else(|e| e.into_inner());
        assert!(runtime.is_none(), "start_again: the receiver is running");
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match StdTcpListener::bind(("127.0.0.1", self.port)) {
                Ok(listener) => break listener,
                Err(_) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(20)); // poll interval
                }
                Err(e) => panic!("receiver: binding port {} again: {e}", self.port),
            }
        };
        let tls = self.tls.as_ref().map(|(_, c)| c.clone());
        *runtime = Some(serve(listener, self.shared.clone(), tls));
    }

    fn plan(&self, n: usize, plan: Plan) {
        let mut state = self.shared.lock();
        state.queue.extend(std::iter::repeat_n(plan, n));
    }

    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&[Received]) -> bool) {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !done(&state.requests) {
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "receiver on port {}: condition not met within {timeout:?}; requests so far:\n{}",
                    self.port,
                    describe(&state.requests)
                );
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn describe(requests: &[Received]) -> String {
    if requests.is_empty() {
        return "  (none)".to_owned();
    }
    requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut body = r.body_text();
            if body.len() > 300 {
                let mut cut = 300;
                while !body.is_char_boundary(cut) {
                    cut -= 1;
                }
                body.truncate(cut);
                body.push('…');
            }
            let status = r.status.map_or("-".to_owned(), |s| s.to_string());
            format!("  #{i} {} {} -> {status}: {body}", r.method, r.path)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn serve(
    listener: StdTcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> tokio::runtime::Runtime {
    listener
        .set_nonblocking(true)
        .expect("set_nonblocking on the receiver's listener");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("webhook-receiver")
        .enable_all()
        .build()
        .expect("building the receiver's runtime");
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(listener).expect("receiver listener")
    };
    let app = Router::new().fallback(handle).with_state(shared.clone());
    match tls {
        None => {
            runtime.spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
        }
        Some(config) => {
            let listener = TlsListener {
                tcp: listener,
                acceptor: tokio_rustls::TlsAcceptor::from(config),
                shared,
            };
            runtime.spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
        }
    }
    runtime
}

/// Accepts TCP connections and completes their TLS handshake; a failed
/// handshake is counted and the next connection accepted.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, addr),
                Err(_) => {
                    self.shared
                        .failed_handshakes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.shared.changed.notify_all();
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes.to_vec(),
        Err(e) => {
            return Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(Body::from(format!("reading body: {e}")))
                .expect("response");
        }
    };
    let received = Received {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        at: Instant::now(),
        status: None,
        seq: 0,
    };

    let (seq, plan, delay, location) = {
        let mut state = shared.lock();
        let mut received = received;
        received.seq = state.next_seq;
        state.next_seq += 1;
        let plan = state.queue.pop_front().unwrap_or(Plan::Answer {
            status: state.status.unwrap_or(200),
            retry_after: None,
        });
        let delay = state.delay.clone().map(|f| f(&received));
        let seq = received.seq;
        state.requests.push(received);
        (seq, plan, delay, state.location.clone())
    };
    shared.changed.notify_all();

    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let (status, retry_after) = match plan {
        Plan::Hang => std::future::pending::<(u16, Option<u64>)>().await,
        Plan::Answer {
            status,
            retry_after,
        } => (status, retry_after),
    };

    {
        let mut state = shared.lock();
        if let Some(r) = state.requests.iter_mut().rev().find(|r| r.seq == seq) {
            r.status = Some(status);
        }
    }
    shared.changed.notify_all();

    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::builder()
        .status(code)
        .header("content-type", "text/plain")
        .body(Body::from(if code.is_success() { "ok" } else { "error" }))
        .expect("response");
    if let Some(location) = location.filter(|_| code.is_redirection()) {
        response.headers_mut().insert(
            "location",
            HeaderValue::from_str(&location).expect("location"),
        );
    }
    if let Some(secs) = retry_after {
        response.headers_mut().insert(
            "retry-after",
            HeaderValue::from_str(&secs.to_string()).expect("retry-after"),
        );
    }
    response
}
