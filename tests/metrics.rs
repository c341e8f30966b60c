//! `GET /metrics` of the real binary against a real MariaDB and receiver:
//! the exposition passes the reference OpenMetrics parser and the
//! `prometheus-parse` crate, and the counters move with a workload.

mod ops;
mod support;

use std::time::Duration;

use ops::{free_port, get, poll, server_yaml, validate_openmetrics, Scrape};
use support::pikachu::{config_yaml, Pikachu, TaskSpec};
use support::{MariaDb, Receiver, ServerOptions};

const WAIT: Duration = Duration::from_secs(30);

fn scrape(pikachu: &mut Pikachu, port: u16) -> Scrape {
    pikachu.assert_alive();
    let a = get(port, "/metrics").expect("GET /metrics");
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.headers
            .to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{}",
        a.headers
    );
    Scrape::parse(&a.body)
}

/// Polls `/metrics` until `ok`.
fn scrape_until(
    pikachu: &mut Pikachu,
    port: u16,
    what: &str,
    ok: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let a = poll(pikachu, port, "/metrics", WAIT, what, |a| {
        a.status == 200 && ok(&Scrape::parse(&a.body))
    });
    Scrape::parse(&a.body)
}

#[test]
fn counters_move_with_a_workload() {
    let db = MariaDb::shared();
    let name = db.fresh_database("metrics");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let receiver = Receiver::start();
    let port = free_port();
    let start = db.master_status();
    let mut yaml = config_yaml(
        db,
        &name,
        &start,
        &[TaskSpec::new(
            "mtask",
            "t",
            &["insert", "update", "delete"],
            &receiver.url("/t"),
        )],
    );
    yaml.push_str(&server_yaml(port, ""));
    let mut pikachu = Pikachu::start(&yaml);
    poll(&mut pikachu, port, "/ready", WAIT, "ready", |a| {
        a.status == 200
    });

    let before = scrape(&mut pikachu, port);
    validate_openmetrics(&before.text);
    let task = [("task", "mtask")];
    let delivered = [("task", "mtask"), ("outcome", "delivered")];
    assert_eq!(
        before.value("pikachu_deliveries_total", &delivered),
        Some(0.0)
    );
    assert_eq!(before.value("pikachu_binlog_connected", &[]), Some(1.0));
    assert_eq!(before.value("pikachu_healthy", &[]), Some(1.0));
    let bytes_before = before
        .value("pikachu_binlog_bytes_read_total", &[])
        .expect("bytes read");

    // 20 inserts in one transaction, 5 updates in another.
    let n = 20;
    db.exec_in(
        &name,
        &format!("INSERT INTO t SELECT seq, seq FROM seq_1_to_{n}"),
    );
    db.exec_in(&name, "UPDATE t SET v = v + 1 WHERE id <= 5");
    receiver.wait_for(n + 5, WAIT);
    let after = scrape_until(&mut pikachu, port, "25 deliveries", |s| {
        s.value("pikachu_deliveries_total", &delivered) == Some(25.0)
            && s.value("pikachu_queue_depth", &[]) == Some(0.0)
    });
    let families = validate_openmetrics(&after.text);
    for (family, kind) in [
        ("pikachu_changes_read", "counter"),
        ("pikachu_deliveries", "counter"),
        ("pikachu_http_requests", "counter"),
        ("pikachu_http_request_failures", "counter"),
        ("pikachu_retries", "counter"),
        ("pikachu_dead_letters", "counter"),
        ("pikachu_dead_letters_stored", "gauge"),
        ("pikachu_delivery_latency_seconds", "histogram"),
        ("pikachu_queue_depth", "gauge"),
        ("pikachu_deliveries_in_flight", "gauge"),
        ("pikachu_replication_lag_seconds", "gauge"),
        ("pikachu_binlog_bytes_read", "counter"),
        ("pikachu_binlog_connected", "gauge"),
        ("pikachu_binlog_reconnects", "counter"),
        ("pikachu_healthy", "gauge"),
        ("pikachu_build_info", "gauge"),
    ] {
        assert!(
            families.iter().any(|(n, t)| n == family && t == kind),
            "no {kind} {family} in {families:?}"
        );
    }
    // The shared server never purges binlogs: no retention or headroom
    // figure (families without samples are left out of the exposition).
    assert!(
        !families
            .iter()
            .any(|(n, _)| n.starts_with("pikachu_binlog_retention")),
        "{families:?}"
    );
    let change = |event: &str| {
        after.value(
            "pikachu_changes_read_total",
            &[("database", &name), ("table", "t"), ("event", event)],
        )
    };
    assert_eq!(change("insert"), Some(n as f64), "{}", after.text);
    assert_eq!(change("update"), Some(5.0));
    assert_eq!(change("delete"), Some(0.0));
    assert_eq!(
        after.value(
            "pikachu_deliveries_total",
            &[("task", "mtask"), ("outcome", "dead_lettered")]
        ),
        Some(0.0)
    );
    assert_eq!(
        after.value("pikachu_http_requests_total", &task),
        Some(25.0)
    );
    assert_eq!(
        after.value("pikachu_http_request_failures_total", &task),
        Some(0.0)
    );
    assert_eq!(after.value("pikachu_retries_total", &task), Some(0.0));
    // The latency histogram saw every delivery; buckets are cumulative.
    assert_eq!(
        after.value("pikachu_delivery_latency_seconds_count", &task),
        Some(25.0)
    );
    let buckets = after
        .buckets("pikachu_delivery_latency_seconds", &task)
        .expect("latency buckets");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last().map(|b| b.1), Some(25.0), "{buckets:?}");
    let bytes_after = after
        .value("pikachu_binlog_bytes_read_total", &[])
        .expect("bytes read");
    assert!(
        bytes_after > bytes_before,
        "binlog bytes read did not grow: {bytes_before} → {bytes_after}"
    );
    assert_eq!(after.value("pikachu_deliveries_in_flight", &[]), Some(0.0));

    // Lag: a change stamped 1000 s in the past is read 1000 s late, but a
    // server heartbeat (1 s in the test config) tells the reader it has
    // read everything, and an idle server shows no lag.
    db.exec_in(
        &name,
        "SET TIMESTAMP = UNIX_TIMESTAMP() - 1000; INSERT INTO t VALUES (1000, 0)",
    );
    receiver.wait_for(n + 6, WAIT);
    scrape_until(&mut pikachu, port, "lag back to 0 when idle", |s| {
        s.value("pikachu_replication_lag_seconds", &[]) == Some(0.0)
    });
    let health = get(port, "/health").expect("health").json();
    assert_eq!(health["lag_seconds"], 0, "{health}");
    assert_eq!(pikachu.terminate().code(), Some(0));
}

#[test]
fn dead_letters_are_counted_and_the_stored_gauge_follows_the_store() {
    let db = MariaDb::shared();
    let name = db.fresh_database("metrics_dlq");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY)");
    let receiver = Receiver::start();
    receiver.set_status(Some(500));
    let port = free_port();
    let start = db.master_status();
    let mut spec = TaskSpec::new("dtask", "t", &["insert"], &receiver.url("/t"));
    // Without the circuit breaker: the endpoint never answers 2xx, and the
    // change's retries must run out.
    spec.extra = "  on_failure: dead_letter\n  breaker:\n    failures: 0\n".into();
    let mut yaml = config_yaml(db, &name, &start, &[spec])
        .replace("dispatcher:\n", "dispatcher:\n  max_retries: 1\n");
    yaml.push_str(&server_yaml(port, ""));
    let mut pikachu = Pikachu::start(&yaml);
    poll(&mut pikachu, port, "/ready", WAIT, "ready", |a| {
        a.status == 200
    });
    db.exec_in(&name, "INSERT INTO t VALUES (1), (2)");
    let task = [("task", "dtask")];
    let s = scrape_until(&mut pikachu, port, "2 dead letters stored", |s| {
        s.value("pikachu_dead_letters_stored", &[]) == Some(2.0)
            && s.value(
                "pikachu_deliveries_total",
                &[("task", "dtask"), ("outcome", "dead_lettered")],
            ) == Some(2.0)
    });
    assert_eq!(s.value("pikachu_dead_letters_total", &task), Some(2.0));
    // 2 changes × (1 attempt + 1 retry), all failed.
    assert_eq!(s.value("pikachu_http_requests_total", &task), Some(4.0));
    assert_eq!(
        s.value("pikachu_http_request_failures_total", &task),
        Some(4.0)
    );
    assert_eq!(s.value("pikachu_retries_total", &task), Some(2.0));
    assert_eq!(
        s.value("pikachu_delivery_latency_seconds_count", &task),
        Some(0.0)
    );
    let h = get(port, "/health").expect("health").json();
    assert_eq!(h["dead_letters"], 2, "{h}");

    // Purged by the CLI while pikachu runs: the gauge and /health follow.
    let cfg = pikachu.dir.path().join("config.yaml");
    let out = std::process::Command::new(Pikachu::bin())
        .args(["dlq", "purge", "--yes", "-config"])
        .arg(&cfg)
        .current_dir(pikachu.dir.path())
        .output()
        .expect("pikachu dlq purge");
    assert!(out.status.success(), "{out:?}");
    let s = scrape_until(&mut pikachu, port, "stored gauge back to 0", |s| {
        s.value("pikachu_dead_letters_stored", &[]) == Some(0.0)
    });
    // The counter is a total: it does not go down.
    assert_eq!(s.value("pikachu_dead_letters_total", &task), Some(2.0));
    poll(&mut pikachu, port, "/health", WAIT, "dead_letters 0", |a| {
        a.json()["dead_letters"] == 0
    });
}

#[test]
fn retention_headroom_is_exported_and_warned_about() {
    // 30 minutes of retention: under an hour, so pikachu warns.
    let db = MariaDb::start(ServerOptions::with_args([
        "--binlog-expire-logs-seconds=1800",
    ]));
    let name = db.fresh_database("retention");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY)");
    let receiver = Receiver::start();
    let port = free_port();
    let start = db.master_status();
    let mut yaml = config_yaml(
        &db,
        &name,
        &start,
        &[TaskSpec::new("r", "t", &["insert"], &receiver.url("/t"))],
    );
    yaml.push_str(&server_yaml(port, ""));
    let mut pikachu = Pikachu::start(&yaml);
    db.exec_in(&name, "INSERT INTO t VALUES (1)");
    receiver.wait_for(1, WAIT);
    // The settled position is in the file being written: it cannot be
    // purged before it is rotated away and has aged a full retention.
    let file = db.master_status().0;
    let s = scrape_until(&mut pikachu, port, "headroom of the current file", |s| {
        s.value(
            "pikachu_binlog_retention_headroom_seconds",
            &[("file", &file)],
        )
        .is_some()
    });
    assert_eq!(
        s.value("pikachu_binlog_retention_seconds", &[]),
        Some(1800.0)
    );
    assert_eq!(
        s.value(
            "pikachu_binlog_retention_headroom_seconds",
            &[("file", &file)]
        ),
        Some(1800.0)
    );
    pikachu.wait_log("may be purged by the server in 30 minutes", WAIT);

    // A rotation, and the settled position moves to the new file, which
    // is then the needed one.
    db.exec("FLUSH BINARY LOGS");
    db.exec_in(&name, "INSERT INTO t VALUES (2)");
    receiver.wait_for(2, WAIT);
    let file2 = db.master_status().0;
    assert_ne!(file, file2);
    scrape_until(&mut pikachu, port, "headroom of the new file", |s| {
        s.value(
            "pikachu_binlog_retention_headroom_seconds",
            &[("file", &file2)],
        ) == Some(1800.0)
            && s.value(
                "pikachu_binlog_retention_headroom_seconds",
                &[("file", &file)],
            )
            .is_none()
    });
}

#[test]
fn first_event_time_of_a_binlog_file_is_its_creation() {
    support::install_crypto_provider();
    let db = MariaDb::shared();
    let before = unix_now();
    db.exec("FLUSH BINARY LOGS");
    let after = unix_now();
    let (file, _) = db.master_status();
    let yaml = config_yaml(db, "mysql", &db.master_status(), &[]);
    let cfg = pikachu::config::from_str(
        &format!(
            "{yaml}- task_id: x\n  name: x\n  table_name: user\n  events: [insert]\n  callback_url: http://127.0.0.1:9/\n"
        ),
        "test.yaml",
        None,
    )
    .expect("config")
    .config;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (t, binlogs) = rt.block_on(async {
        let t = pikachu::metrics::first_event_time(&cfg.database, &file)
            .await
            .expect("first event time");
        let b = pikachu::metrics::server_binlogs(&cfg.database)
            .await
            .expect("server binlogs");
        (t, b)
    });
    assert!(
        (before..=after).contains(&t),
        "{file} started at {t}, flushed between {before} and {after}"
    );
    assert_eq!(binlogs.files.last(), Some(&file));
    // The shared server keeps its binlogs forever (no expire setting).
    assert_eq!(binlogs.retention, None);
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}
