//! A 1,000,000-row single transaction streams through pikachu with bounded
//! memory: the reader waits for delivery (bounded queues) instead of holding
//! the transaction. Prints the peak RSS it measured.

mod support;

use std::time::Duration;

use support::pikachu::{config_yaml, Pikachu, TaskSpec};
use support::{MariaDb, Receiver, ServerOptions};

#[test]
fn a_million_row_transaction_streams_with_bounded_memory() {
    const N: usize = 1_000_000;
    let db = MariaDb::start(ServerOptions::with_args(["--max-binlog-cache-size=4G"]));
    let name = db.fresh_database("big");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let receiver = Receiver::start();
    let start = db.master_status();
    let mut task = TaskSpec::new("t", "t", &["insert"], &receiver.url("/t"));
    task.extra = "  batch:\n    max_events: 2000\n    max_wait: \"50ms\"\n".into();
    let cfg = config_yaml(&db, &name, &start, &[task])
        .replace("dispatcher:\n", "dispatcher:\n  queue_size: 5000\n");
    let mut p = Pikachu::start(&cfg);
    db.exec_in(
        &name,
        &format!("INSERT INTO t SELECT seq, seq FROM seq_1_to_{N}"),
    );
    // Batches go out in order (one in flight per task): wait for the one
    // that ends with the last row (change ids end with the row's index in
    // its transaction), cheaply, by header.
    let last = format!("#{}@t", N - 1);
    receiver.wait_until(Duration::from_secs(900), |reqs| {
        reqs.iter()
            .any(|r| r.succeeded() && r.header("webhook-id").is_some_and(|h| h.ends_with(&last)))
    });
    p.assert_alive();
    let peak_kib = p.peak_rss_kib();
    eprintln!(
        "1,000,000-row transaction: pikachu peak RSS {} MiB",
        peak_kib / 1024
    );
    let got = receiver.received();
    let mut rows = 0usize;
    let mut batch_ids = std::collections::HashSet::new();
    for r in &got {
        if batch_ids.insert(r.header("webhook-id").unwrap_or_default().to_string()) {
            rows += r
                .body
                .windows(14)
                .filter(|w| *w == b"{\"primary_id\":")
                .count();
        }
    }
    assert_eq!(rows, N, "every row arrived");
    // Bounded: far below what holding the transaction would take (the
    // binlog of this transaction alone is ~20 MB, its JSON ~150 MB).
    assert!(peak_kib > 0, "could not read VmHWM");
    assert!(peak_kib < 128 * 1024, "peak RSS {} MiB", peak_kib / 1024);
}
