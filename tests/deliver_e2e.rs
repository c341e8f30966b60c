//! Delivery end to end: real MariaDB, the real `pikachu` binary, real
//! receivers. Backpressure (nothing missing with a tiny queue and a slow
//! receiver), per-row order with primary-key changes under parallel
//! workers, and dead letters replayed with `pikachu dlq replay`.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use support::pikachu::{config_yaml, Pikachu, TaskSpec};
use support::{MariaDb, Receiver};

fn with_dispatcher(yaml: String, settings: &str) -> String {
    yaml.replacen("dispatcher:\n", &format!("dispatcher:\n{settings}"), 1)
}

#[test]
fn a_full_queue_slows_the_reader_and_nothing_is_missing() {
    let db = MariaDb::shared();
    let name = db.fresh_database("bp");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let r = Receiver::start();
    r.set_delay(|_| Duration::from_millis(2));
    let start = db.master_status();
    let yaml = with_dispatcher(
        config_yaml(
            db,
            &name,
            &start,
            &[TaskSpec::new("t", "t", &["insert", "update"], &r.url("/h"))],
        ),
        "  queue_size: 2\n  worker_count: 2\n",
    );
    let mut p = Pikachu::start(&yaml);
    let values: Vec<String> = (1..=300).map(|i| format!("({i}, 0)")).collect();
    db.exec_in(
        &name,
        &format!(
            "INSERT INTO t VALUES {}; UPDATE t SET v = 1;",
            values.join(",")
        ),
    );
    let got = r.wait_for(600, Duration::from_secs(60));
    p.assert_alive();
    assert_eq!(got.len(), 600, "exactly once each");
    let mut per_row: HashMap<i64, Vec<String>> = HashMap::new();
    for q in &got {
        let b = q.json();
        per_row
            .entry(b["primary_id"].as_i64().expect("id"))
            .or_default()
            .push(b["event"].as_str().expect("event").to_string());
    }
    assert_eq!(per_row.len(), 300);
    for (id, evs) in per_row {
        assert_eq!(evs, vec!["insert", "update"], "row {id}");
    }
}

#[test]
fn primary_key_changes_keep_per_row_order_under_parallel_workers() {
    let db = MariaDb::shared();
    let name = db.fresh_database("pk");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let r = Receiver::start();
    r.set_delay(|_| Duration::from_micros(fastrand::u64(0..8000)));
    let start = db.master_status();
    let yaml = config_yaml(
        db,
        &name,
        &start,
        &[TaskSpec::new(
            "t",
            "t",
            &["insert", "update", "delete"],
            &r.url("/h"),
        )],
    );
    let mut p = Pikachu::start(&yaml);
    let values: Vec<String> = (1..=40).map(|i| format!("({i}, 0)")).collect();
    db.exec_in(
        &name,
        &format!(
            "INSERT INTO t VALUES {};
             UPDATE t SET id = id + 1000;
             UPDATE t SET v = 1 WHERE id > 1000;
             DELETE FROM t WHERE id > 1000;
             INSERT INTO t VALUES (1, 9);",
            values.join(",")
        ),
    );
    let got = r.wait_for(161, Duration::from_secs(60));
    p.assert_alive();
    assert_eq!(got.len(), 161);
    // Step of each row's history by arrival: insert(i) → move(i → i+1000)
    // → update(i+1000) → delete(i+1000); and a new row 1 after the move of 1.
    let step = |b: &serde_json::Value| -> (i64, u8) {
        let id = b["primary_id"].as_i64().expect("id");
        match b["event"].as_str().expect("event") {
            "insert" if b["data"]["v"] == 9 => (1, 4),
            "insert" => (id, 0),
            "update" if b["old_data"]["id"] != b["new_data"]["id"] => (id - 1000, 1),
            "update" => (id - 1000, 2),
            "delete" => (id - 1000, 3),
            other => panic!("unexpected event {other}"),
        }
    };
    let mut per_row: HashMap<i64, Vec<u8>> = HashMap::new();
    for q in &got {
        let (row, s) = step(&q.json());
        per_row.entry(row).or_default().push(s);
    }
    assert_eq!(per_row.len(), 40);
    for (row, mut steps) in per_row {
        if row == 1 {
            // The new row 1 shares key 1 with the move of the old row 1, so
            // it comes after it; it is not ordered against row 1001's later
            // changes (another row).
            let new_at = steps.iter().position(|&s| s == 4).expect("new row 1");
            let move_at = steps.iter().position(|&s| s == 1).expect("move of 1");
            assert!(
                new_at > move_at,
                "new row 1 overtook the move of the old row 1: {steps:?}"
            );
            steps.remove(new_at);
        }
        assert_eq!(steps, vec![0, 1, 2, 3], "row {row} out of order");
    }
}

#[test]
fn retries_exhausted_become_a_dead_letter_that_dlq_replay_delivers() {
    let db = MariaDb::shared();
    let name = db.fresh_database("dlq");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let r = Receiver::start();
    r.set_status(Some(500));
    let start = db.master_status();
    let yaml = with_dispatcher(
        config_yaml(
            db,
            &name,
            &start,
            &[TaskSpec {
                // Retries run out only without the circuit breaker (with
                // it, an endpoint that never answers 2xx looks down).
                extra: "  breaker:\n    failures: 0\n".into(),
                ..TaskSpec::new("t", "t", &["insert"], &r.url("/h"))
            }],
        ),
        "  max_retries: 2\n",
    );
    let mut p = Pikachu::start(&yaml);
    db.exec_in(&name, "INSERT INTO t VALUES (1, 1)");
    let db_file = p.dir.path().join("data").join("pikachu.db");
    let deadline = Instant::now() + Duration::from_secs(30);
    let letters = loop {
        if db_file.exists() {
            let conn = rusqlite::Connection::open(&db_file).expect("open");
            let rows: Vec<(String, String, i64)> = conn
                .prepare("SELECT task_id, change_id, attempts FROM dead_letters")
                .and_then(|mut s| {
                    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect()
                })
                .unwrap_or_default();
            if !rows.is_empty() {
                break rows;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no dead letter; log:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(20)); // poll interval
    };
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].0, "t");
    assert_eq!(letters[0].2, 3);
    p.wait_log("dead letter", Duration::from_secs(5));
    assert_eq!(r.all_requests().len(), 3);
    p.assert_alive();

    // The receiver is fixed; replay while pikachu runs.
    r.set_status(None);
    let out = Command::new(Pikachu::bin())
        .args(["dlq", "replay", "-config", "config.yaml"])
        .current_dir(p.dir.path())
        .output()
        .expect("dlq replay");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got = r.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("webhook-id"), Some(letters[0].1.as_str()));
    assert_eq!(got[0].json()["data"], serde_json::json!({"id": 1, "v": 1}));
    let conn = rusqlite::Connection::open(&db_file).expect("open");
    let left: i64 = conn
        .query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))
        .expect("count");
    assert_eq!(left, 0);
}
