//! `pikachu dlq list|show|replay|purge`: dead letters made by the real
//! engine against a failing receiver, then handled with the real binary.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pikachu::deliver::{Dispatcher, Job, OrderingKeys};
use pikachu::store::Store;
use support::Receiver;

fn write_config(dir: &Path, url: &str) -> PathBuf {
    let yaml = format!(
        "database:\n  host: \"127.0.0.1\"\n  port: 1\n  user: \"u\"\n  password: \"\"\n  database: \"shop\"\n  server_id: 5\n\
         state_dir: \"{}\"\n\
         dispatcher:\n  max_retries: 1\n  retry_base_delay: \"10ms\"\n  retry_max_delay: \"20ms\"\n  timeout: \"5s\"\n\
         tasks:\n- task_id: \"orders\"\n  name: \"orders\"\n  table_name: \"orders\"\n  events: [\"insert\"]\n  callback_url: \"{url}\"\n  secret: \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
         \x20 breaker:\n    failures: 0\n",
        dir.join("state").display()
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).expect("write config");
    path
}

fn dlq(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pikachu"))
        .arg("dlq")
        .args(args)
        .arg("-config")
        .arg(config)
        .output()
        .expect("run pikachu dlq")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn count_rows(state: &Path) -> i64 {
    let conn = rusqlite::Connection::open(state.join("pikachu.db")).expect("db");
    conn.query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))
        .expect("count")
}

/// Three changes dead-lettered by the engine (receiver answering 500).
fn make_dead_letters(config: &Path, r: &Receiver) {
    let loaded = pikachu::config::load(config, None).expect("config");
    let cfg = loaded.config;
    r.set_status(Some(500));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = Store::open(&cfg.state_dir).expect("store");
        let d = Dispatcher::start(&cfg.dispatcher, &cfg.tasks, Arc::new(Mutex::new(store)))
            .expect("dispatcher");
        for seq in 0..3u64 {
            d.submit(Job {
                task: 0,
                // One row: recorded (and replayed) in binlog order.
                keys: OrderingKeys::one(1),
                id: format!("0-1-{seq}#0@orders").into(),
                body: format!(r#"{{"primary_id":1,"v":{seq}}}"#)
                    .into_bytes()
                    .into(),
                seq,
            })
            .await
            .expect("submit");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while d
            .stats()
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed)
            < 3
        {
            assert!(Instant::now() < deadline, "3 dead letters expected");
            tokio::time::sleep(Duration::from_millis(5)).await; // poll interval
        }
        let report = d.shutdown(Duration::from_secs(1)).await;
        assert_eq!(report.unsettled, 0);
    });
    r.set_status(None);
    r.reset();
}

#[test]
fn dead_letters_are_listed_shown_replayed_and_purged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = Receiver::start();
    let config = write_config(dir.path(), &r.url("/hook"));
    let state = dir.path().join("state");

    // Nothing yet: empty list, exit 0, and no database created by looking.
    let o = dlq(&config, &["list"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(o.stdout.is_empty(), "{}", text(&o));
    assert!(!state.join("pikachu.db").exists());

    make_dead_letters(&config, &r);
    assert_eq!(count_rows(&state), 3);

    let o = dlq(&config, &["list"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "header + 3: {out}");
    assert!(lines[1].contains("orders") && lines[1].contains("0-1-0#0@orders"));
    assert!(lines[1].ends_with("HTTP 500"), "{}", lines[1]);
    assert!(
        lines[1].split('\t').nth(3) == Some("2"),
        "attempts: {}",
        lines[1]
    );
    let first_id = lines[1].split('\t').next().expect("id").to_string();

    let o = dlq(&config, &["show", &first_id]);
    assert!(o.status.success(), "{}", text(&o));
    let shown = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(shown.contains("change_id:     0-1-0#0@orders"), "{shown}");
    assert!(shown.contains(&r.url("/hook")), "{shown}");
    assert!(shown.contains(r#"{"primary_id":1,"v":0}"#), "{shown}");
    assert!(
        !shown.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "secret shown"
    );

    // Usage errors: exit 2, nothing deleted.
    let o = dlq(&config, &["purge"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--yes"));
    assert_eq!(count_rows(&state), 3);
    let o = dlq(&config, &["show", "999"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = dlq(&dir.path().join("missing.yaml"), &["list"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // The receiver still fails: replay stops at the first, keeps all.
    r.set_status(Some(500));
    let o = dlq(&config, &["replay"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("0 delivered, 1 failed, 2 left"),
        "{}",
        text(&o)
    );
    assert_eq!(count_rows(&state), 3);
    let ids: Vec<String> = r
        .all_requests()
        .iter()
        .map(|q| q.header("webhook-id").unwrap_or_default().to_string())
        .collect();
    assert!(ids.iter().all(|i| i == "0-1-0#0@orders"), "{ids:?}");
    r.set_status(None);
    r.reset();

    // One by change id.
    let o = dlq(&config, &["replay", "--id", "0-1-0#0@orders"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(count_rows(&state), 2);
    let got = r.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, br#"{"primary_id":1,"v":0}"#);
    assert_eq!(got[0].header("webhook-id"), Some("0-1-0#0@orders"));
    assert!(got[0]
        .header("webhook-signature")
        .is_some_and(|s| s.starts_with("v1,")));

    // The rest, in the order recorded.
    let o = dlq(&config, &["replay", "--task", "orders"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("2 delivered, 0 failed, 0 left"));
    let vs: Vec<i64> = r
        .json_bodies()
        .iter()
        .map(|b| b["v"].as_i64().expect("v"))
        .collect();
    assert_eq!(vs, vec![0, 1, 2]);
    assert_eq!(count_rows(&state), 0);

    // Purge.
    make_dead_letters(&config, &r);
    let o = dlq(&config, &["purge", "--id", &first_id]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("purged 0"),
        "ids are not reused: {}",
        text(&o)
    );
    let o = dlq(&config, &["purge", "--task", "orders", "--yes"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("purged 3"),
        "{}",
        text(&o)
    );
    assert_eq!(count_rows(&state), 0);
}

/// A config with two tasks, `orders` and `users`, each to its own URL.
fn write_two_task_config(dir: &Path, orders_url: &str, users_url: &str) -> PathBuf {
    let yaml = format!(
        "database:\n  host: \"127.0.0.1\"\n  port: 1\n  user: \"u\"\n  password: \"\"\n  database: \"shop\"\n  server_id: 5\n\
         state_dir: \"{}\"\n\
         dispatcher:\n  max_retries: 1\n  retry_base_delay: \"10ms\"\n  retry_max_delay: \"20ms\"\n  timeout: \"5s\"\n\
         tasks:\n\
         - task_id: \"orders\"\n  name: \"orders\"\n  table_name: \"orders\"\n  events: [\"insert\"]\n  callback_url: \"{orders_url}\"\n\
         - task_id: \"users\"\n  name: \"users\"\n  table_name: \"users\"\n  events: [\"insert\"]\n  callback_url: \"{users_url}\"\n",
        dir.join("state").display()
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).expect("write config");
    path
}

/// Dead letters recorded straight into the store: `per_task` of each task, oldest first.
fn record_dead_letters(state: &Path, tasks: &[&str], per_task: u64) {
    let mut store = Store::open(state).expect("store");
    for seq in 0..per_task {
        for task in tasks {
            store
                .insert_dead_letter(&pikachu::store::DeadLetter {
                    id: 0,
                    task_id: task.to_string(),
                    change_id: format!("0-1-{seq}#0@{task}"),
                    url: "http://127.0.0.1:9/old".into(),
                    body: format!(r#"{{"task":"{task}","v":{seq}}}"#).into_bytes(),
                    events: 1,
                    last_status: Some(500),
                    last_error: "HTTP 500".into(),
                    attempts: 2,
                    first_attempt_at: 1,
                    last_attempt_at: 2,
                    seq,
                    created_at: 3,
                })
                .expect("insert");
        }
    }
}

#[test]
fn replay_goes_on_with_the_other_tasks_when_one_still_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let failing = Receiver::start();
    failing.set_status(Some(503));
    let ok = Receiver::start();
    let config = write_two_task_config(dir.path(), &failing.url("/orders"), &ok.url("/users"));
    let state = dir.path().join("state");
    record_dead_letters(&state, &["orders", "users"], 3);

    let o = dlq(&config, &["replay"]);
    assert_eq!(o.status.code(), Some(1), "a failure exits 1: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    // `users` went on although `orders` (recorded first) still fails.
    let vs: Vec<i64> = ok
        .json_bodies()
        .iter()
        .map(|b| b["v"].as_i64().expect("v"))
        .collect();
    assert_eq!(vs, vec![0, 1, 2], "{out}");
    // `orders` stopped at its first (its later ones may be newer changes of that row).
    let tried: Vec<String> = failing
        .all_requests()
        .iter()
        .map(|q| q.header("webhook-id").unwrap_or_default().to_string())
        .collect();
    assert!(tried.iter().all(|i| i == "0-1-0#0@orders"), "{tried:?}");
    assert_eq!(tried.len(), 2, "the first attempt and 1 retry: {tried:?}");
    assert!(
        out.contains("task orders: 0 delivered, 1 failed, 2 left"),
        "{out}"
    );
    assert!(
        out.contains("task users: 3 delivered, 0 failed, 0 left"),
        "{out}"
    );
    assert!(
        out.contains("replayed: 3 delivered, 1 failed, 2 left"),
        "{out}"
    );
    assert_eq!(count_rows(&state), 3, "orders' three are kept");

    // Once the endpoint is back, the rest goes out, in order.
    failing.set_status(None);
    failing.reset();
    let o = dlq(&config, &["replay"]);
    assert!(o.status.success(), "{}", text(&o));
    let vs: Vec<i64> = failing
        .json_bodies()
        .iter()
        .map(|b| b["v"].as_i64().expect("v"))
        .collect();
    assert_eq!(vs, vec![0, 1, 2]);
    assert_eq!(count_rows(&state), 0);
}
