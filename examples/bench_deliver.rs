//! Delivery benchmark: drives the `Dispatcher` with synthetic jobs against a
//! minimal local HTTP/1.1 receiver (keep-alive, answers 200 at once, counts).
//!
//!   cargo run --release --example bench_deliver            # all modes
//!   cargo run --release --example bench_deliver -- single  # or: batched, latency
//!
//! - single:  200,000 changes, one per POST, 16 workers, 10,000 distinct keys.
//! - batched: 2,000,000 changes, batches of 100 (max_wait 10ms).
//! - latency: 1,000 changes/s for 10 s, one per POST; p50/p99 from submit to
//!   the receiver having read the request.
//!
//! Throughput = changes settled (2xx) / time from the first submit until the
//! watermark reached the last one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pikachu::config::{BatchConfig, DispatcherConfig, OnFailure, TaskConfig};
use pikachu::deliver::{Dispatcher, Job, OrderingKeys};
use pikachu::store::Store;
use tokio::io::AsyncWriteExt;

#[path = "common/http.rs"]
mod http;

struct Receiver {
    requests: AtomicU64,
    /// (submit nanos from the body's "t", arrival nanos), for latency mode.
    latencies: Mutex<Vec<u64>>,
    start: Instant,
}

/// The number after `"t":` in a body, if any.
fn submit_nanos(body: &[u8]) -> Option<u64> {
    let at = http::find(body, b"\"t\":")? + 4;
    let digits: Vec<u8> = body[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

async fn serve_conn(mut sock: tokio::net::TcpStream, rx: Arc<Receiver>, track: bool) {
    let _ = sock.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut tmp = vec![0u8; 64 * 1024];
    loop {
        let Some((head_end, len)) = http::read_request(&mut sock, &mut buf, &mut tmp).await else {
            return;
        };
        if track {
            if let Some(t) = submit_nanos(&buf[head_end..head_end + len]) {
                let now = rx.start.elapsed().as_nanos() as u64;
                rx.latencies
                    .lock()
                    .expect("lock")
                    .push(now.saturating_sub(t));
            }
        }
        buf.drain(..head_end + len);
        rx.requests.fetch_add(1, Ordering::Relaxed);
        if sock
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    }
}

fn start_receiver(track: bool) -> (String, Arc<Receiver>, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("receiver runtime");
    let rx = Arc::new(Receiver {
        requests: AtomicU64::new(0),
        latencies: Mutex::new(Vec::new()),
        start: Instant::now(),
    });
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    std_listener.set_nonblocking(true).expect("nonblocking");
    let listener = {
        let _guard = rt.enter();
        tokio::net::TcpListener::from_std(std_listener).expect("listener")
    };
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let rx2 = rx.clone();
    rt.spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve_conn(sock, rx2.clone(), track));
        }
    });
    (url, rx, rt)
}

fn task(url: &str, batch: Option<BatchConfig>) -> TaskConfig {
    TaskConfig {
        task_id: "bench".into(),
        name: "bench".into(),
        database: None,
        table_name: "t".into(),
        events: vec![],
        callback_url: url.into(),
        secret: Some(pikachu::config::Secret::new(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )),
        headers: vec![],
        batch,
        on_failure: OnFailure::DeadLetter,
        snapshot: Default::default(),
        limits: Default::default(),
    }
}

fn dispatcher_config() -> DispatcherConfig {
    DispatcherConfig {
        worker_count: 16,
        queue_size: 10_000,
        timeout: Duration::from_secs(30),
        max_retries: 3,
        retry_base_delay: Duration::from_secs(1),
        retry_max_delay: Duration::from_secs(60),
    }
}

/// A payload about the size of a small row change (~330 bytes).
fn body(seq: u64, t: Option<u64>) -> Vec<u8> {
    let t = t.map(|t| format!(",\"t\":{t}")).unwrap_or_default();
    format!(
        r#"{{"primary_id":{k},"event":"update","table":"users","old_data":{{"id":{k},"name":"John Doe","email":"john@example.com"}},"new_data":{{"id":{k},"name":"Jane Doe","email":"john@example.com"}},"timestamp":"2023-01-01T12:00:00Z","id":"0-1-{seq}#0@bench","task_id":"bench","database":"shop","source":{{"file":"mysql-bin.000003","pos":{seq},"gtid":"0-1-{seq}","row":0}}{t}}}"#,
        k = seq % 10_000
    )
    .into_bytes()
}

async fn throughput(n: u64, batch: Option<BatchConfig>) -> f64 {
    let (url, rx, rt) = start_receiver(false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Mutex::new(Store::open(dir.path()).expect("store")));
    let d =
        Dispatcher::start(&dispatcher_config(), &[task(&url, batch)], store).expect("dispatcher");
    let mut wm = d.watermark();
    let started = Instant::now();
    for seq in 0..n {
        let job = Job {
            task: 0,
            keys: OrderingKeys::one(seq % 10_000),
            id: format!("0-1-{seq}#0@bench").into(),
            body: body(seq, None).into(),
            seq,
        };
        d.submit(job).await.expect("submit");
    }
    while *wm.borrow_and_update() < n {
        wm.changed().await.expect("engine alive");
    }
    let secs = started.elapsed().as_secs_f64();
    let delivered = d.stats().delivered.load(Ordering::Relaxed);
    assert_eq!(delivered, n, "every change delivered");
    d.shutdown(Duration::from_secs(1)).await;
    let reqs = rx.requests.load(Ordering::Relaxed);
    rt.shutdown_background();
    let rate = n as f64 / secs;
    println!("  {n} changes in {reqs} requests, {secs:.2} s: {rate:.0} changes/s");
    rate
}

async fn latency(rate: u64, secs: u64) -> (f64, f64) {
    let (url, rx, rt) = start_receiver(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Mutex::new(Store::open(dir.path()).expect("store")));
    let d =
        Dispatcher::start(&dispatcher_config(), &[task(&url, None)], store).expect("dispatcher");
    let n = rate * secs;
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for seq in 0..n {
        tick.tick().await;
        let t = rx.start.elapsed().as_nanos() as u64;
        let job = Job {
            task: 0,
            keys: OrderingKeys::one(seq % 10_000),
            id: format!("0-1-{seq}#0@bench").into(),
            body: body(seq, Some(t)).into(),
            seq,
        };
        d.submit(job).await.expect("submit");
    }
    let mut wm = d.watermark();
    while *wm.borrow_and_update() < n {
        wm.changed().await.expect("engine alive");
    }
    d.shutdown(Duration::from_secs(1)).await;
    let mut l = rx.latencies.lock().expect("lock").clone();
    rt.shutdown_background();
    l.sort_unstable();
    let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)] as f64 / 1e6;
    let (p50, p99) = (pct(0.50), pct(0.99));
    println!(
        "  {} changes at {rate}/s: p50 {p50:.3} ms, p99 {p99:.3} ms, max {:.3} ms",
        l.len(),
        pct(1.0)
    );
    (p50, p99)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    pikachu::install_crypto_provider();
    let mode = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if mode == "all" || mode == "single" {
            println!("single (one change per POST, 16 workers, signed):");
            let mut v = Vec::new();
            for _ in 0..runs {
                v.push(throughput(200_000, None).await);
            }
            println!("single: median {:.0} changes/s over {runs} runs", median(v));
        }
        if mode == "all" || mode == "batched" {
            println!("batched (100 changes per POST, signed):");
            let mut v = Vec::new();
            let batch = BatchConfig {
                max_events: 100,
                max_wait: Duration::from_millis(10),
            };
            for _ in 0..runs {
                v.push(throughput(2_000_000, Some(batch)).await);
            }
            println!(
                "batched: median {:.0} changes/s over {runs} runs",
                median(v)
            );
        }
        if mode == "all" || mode == "latency" {
            println!("latency (1,000 changes/s, one per POST):");
            let mut p50s = Vec::new();
            let mut p99s = Vec::new();
            for _ in 0..runs {
                let (a, b) = latency(1_000, 10).await;
                p50s.push(a);
                p99s.push(b);
            }
            println!(
                "latency: median p50 {:.3} ms, median p99 {:.3} ms over {runs} runs",
                median(p50s),
                median(p99s)
            );
        }
    });
}
