//! End-to-end latency: commit in MariaDB → binlog → pikachu (release binary)
//! → webhook receiver, at a steady rate. Each row carries the microsecond
//! time its INSERT was sent; the receiver subtracts it from its clock.
//!
//! Run with `scripts/bench-latency.sh` (starts the dev MariaDB on port 3407
//! with `scripts/mariadb.sh`, builds pikachu in release, runs this).
//! Settings: BENCH_RATE (changes/s, default 1000), BENCH_SECONDS (default 10),
//! PIKACHU_MARIADB_PORT (default 3407).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use mysql_async::prelude::Queryable;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

type Lat = Arc<Mutex<Vec<i64>>>;

async fn hook(State(lat): State<Lat>, body: Bytes) -> &'static str {
    let now = now_us();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
        if let Some(sent) = v["data"]["sent_us"].as_i64() {
            if let Ok(mut l) = lat.lock() {
                l.push(now - sent);
            }
        }
    }
    "ok"
}

fn pct(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rate: u64 = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let port: u16 = std::env::var("PIKACHU_MARIADB_PORT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3407);
    let bin = std::fs::canonicalize(
        std::env::var("PIKACHU_BIN").unwrap_or_else(|_| "target/release/pikachu".into()),
    )?;

    let lat: Lat = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/{*p}", post(hook))
        .with_state(lat.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let recv_port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let url = format!("mysql://bench:bench@127.0.0.1:{port}/pikachu_demo?prefer_socket=false");
    let mut conn = mysql_async::Conn::from_url(&url).await?;
    conn.query_drop("CREATE TABLE IF NOT EXISTS bench_lat (id BIGINT AUTO_INCREMENT PRIMARY KEY, sent_us BIGINT NOT NULL)").await?;

    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "database:\n  host: \"127.0.0.1\"\n  port: {port}\n  user: \"pikachu\"\n  password: \"pikachu\"\n  database: \"pikachu_demo\"\n  server_id: 4343\n  tls: \"disabled\"\n\
             log:\n  level: \"warn\"\n\
             start: \"latest\"\n\
             tasks:\n- task_id: \"lat\"\n  name: \"lat\"\n  table_name: \"bench_lat\"\n  events: [\"insert\"]\n  callback_url: \"http://127.0.0.1:{recv_port}/lat\"\n"
        ),
    )?;
    let mut child = std::process::Command::new(&bin)
        .arg("-config")
        .arg(&cfg)
        .current_dir(dir.path())
        .spawn()?;
    // Wait until pikachu streams: a probe row must arrive.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        conn.exec_drop("INSERT INTO bench_lat (sent_us) VALUES (?)", (now_us(),))
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !lat.lock().map(|l| l.is_empty()).unwrap_or(true) {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("pikachu did not deliver the probe row within 30 s".into());
        }
    }
    lat.lock().map(|mut l| l.clear()).ok();

    let n = rate * seconds;
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    for _ in 0..n {
        tick.tick().await;
        conn.exec_drop("INSERT INTO bench_lat (sent_us) VALUES (?)", (now_us(),))
            .await?;
    }
    let sending = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    while lat.lock().map(|l| (l.len() as u64) < n).unwrap_or(false) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut l = lat.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_unstable();
    let (rate, p50, p99, max) = (
        n as f64 / sending.as_secs_f64(),
        pct(&l, 0.50),
        pct(&l, 0.99),
        pct(&l, 1.0),
    );
    let received = l.len();
    println!(
        "e2e latency (commit sent → receiver), {received} of {n} changes at {rate:.0}/s: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"
    );
    // The same, for scripts/bench.sh.
    println!(
        "{{\"reader\":\"e2e-latency\",\"received\":{received},\"sent\":{n},\"rate\":{rate:.1},\"p50_ms\":{p50:.3},\"p99_ms\":{p99:.3},\"max_ms\":{max:.3}}}"
    );
    Ok(())
}
