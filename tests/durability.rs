//! Durability: pikachu resumes where it stopped (the checkpoint in
//! `./data/pikachu.db`), survives being killed at random moments without
//! losing a change, shuts down gracefully on SIGTERM, waits out a receiver
//! outage, refuses a purged position and a checkpoint of another server, and
//! resumes by GTID on another server of the same MariaDB replication
//! topology.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use support::pikachu::{config_yaml, Pikachu, TaskSpec};
use support::{MariaDb, Received, Receiver, ServerOptions};

/// The config of these tests: `extra_dispatcher` lines go under
/// `dispatcher:`, `extra_top` before `tasks:`.
fn yaml(
    db: &MariaDb,
    name: &str,
    start: &(String, u64),
    tasks: &[TaskSpec],
    extra_dispatcher: &str,
    extra_top: &str,
) -> String {
    config_yaml(db, name, start, tasks)
        .replace("dispatcher:\n", &format!("dispatcher:\n{extra_dispatcher}"))
        .replace("tasks:\n", &format!("{extra_top}tasks:\n"))
}

fn ids_of(got: &[Received]) -> Vec<String> {
    got.iter()
        .map(|r| r.header("webhook-id").unwrap_or_default().to_string())
        .collect()
}

/// Distinct changes among the requests answered 2xx.
fn distinct(got: &[Received]) -> usize {
    got.iter()
        .filter(|r| r.succeeded())
        .filter_map(|r| r.header("webhook-id"))
        .collect::<HashSet<_>>()
        .len()
}

#[test]
fn sigterm_mid_stream_then_restart_sends_nothing_acknowledged_twice() {
    let db = MariaDb::shared();
    let name = db.fresh_database("shutdown");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let receiver = Receiver::start();
    receiver.set_delay(|_| Duration::from_millis(1));
    let start = db.master_status();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = yaml(
        db,
        &name,
        &start,
        &[TaskSpec::new("t", "t", &["insert"], &receiver.url("/t"))],
        "",
        "",
    );
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    // Transactions of 20 rows; the second half is written while pikachu is down.
    let txs = |from: i64, to: i64| -> String {
        (from..to)
            .map(|t| {
                let rows: Vec<String> = (1..=20).map(|i| format!("({}, 0)", t * 20 + i)).collect();
                format!("INSERT INTO t VALUES {};\n", rows.join(","))
            })
            .collect()
    };
    db.exec_in(&name, &txs(0, 25));
    receiver.wait_for(200, Duration::from_secs(30));
    let status = p.terminate();
    assert!(status.success(), "graceful stop exits 0, got {status}");
    let acknowledged: HashSet<String> = ids_of(&receiver.received()).into_iter().collect();
    assert!(acknowledged.len() >= 200);
    db.exec_in(&name, &txs(25, 50));
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    p.wait_log("resuming from the checkpoint", Duration::from_secs(30));
    receiver.wait_until(Duration::from_secs(60), |r| distinct(r) >= 1000);
    let all = ids_of(&receiver.received());
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &all {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    for id in &acknowledged {
        assert_eq!(
            counts.get(id.as_str()),
            Some(&1),
            "{id} was acknowledged before SIGTERM and sent again"
        );
    }
    assert_eq!(counts.len(), 1000, "every change arrived");
    let log = p.log();
    assert!(log.contains("checkpoint saved"), "{log}");
    assert!(log.contains("resuming from the checkpoint"), "{log}");
}

/// One change the workload made: (event, key, value).
type Expected = (&'static str, i64, i64);

/// A deterministic mixed workload over 500 keys: `n_tx` transactions of 10
/// single-row statements; returns the SQL in chunks and the expected
/// changes per key in order.
fn workload(n_tx: usize, seed: u64) -> (Vec<String>, HashMap<i64, Vec<Expected>>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut present: HashSet<i64> = HashSet::new();
    let mut per_key: HashMap<i64, Vec<Expected>> = HashMap::new();
    let mut chunks = Vec::new();
    let mut sql = String::new();
    let mut v = 0i64;
    for t in 0..n_tx {
        sql.push_str("BEGIN;\n");
        for _ in 0..10 {
            v += 1;
            let k = rng.i64(1..=500);
            let (ev, stmt) = if !present.contains(&k) {
                present.insert(k);
                ("insert", format!("INSERT INTO t VALUES ({k}, {v});\n"))
            } else if rng.u8(0..10) < 7 {
                ("update", format!("UPDATE t SET v = {v} WHERE id = {k};\n"))
            } else {
                present.remove(&k);
                ("delete", format!("DELETE FROM t WHERE id = {k};\n"))
            };
            // A delete carries the deleted row's last value, not v.
            let val = if ev == "delete" {
                per_key
                    .get(&k)
                    .and_then(|s| s.last())
                    .map(|e| e.2)
                    .unwrap_or(0)
            } else {
                v
            };
            per_key.entry(k).or_default().push((ev, k, val));
            sql.push_str(&stmt);
        }
        sql.push_str("COMMIT;\n");
        if (t + 1) % 200 == 0 {
            chunks.push(std::mem::take(&mut sql));
        }
    }
    if !sql.is_empty() {
        chunks.push(sql);
    }
    (chunks, per_key)
}

/// `yaml` with `start: latest` instead of a fixed position.
fn start_latest(yaml: &str) -> String {
    let start = yaml.find("start:\n").expect("start block");
    let end = yaml[start..].find("tasks:\n").expect("tasks") + start;
    format!("{}start: latest\n{}", &yaml[..start], &yaml[end..])
}

/// Waits until `needle` is in the log at least `n` times (the log is
/// appended to by every process started in the same folder).
fn wait_log_count(p: &Pikachu, needle: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while p.log().matches(needle).count() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "pikachu log never showed {needle:?} {n} times; log:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(5)); // poll interval
    }
}

/// (event, key, value) of a payload.
fn expected_of(b: &serde_json::Value) -> Expected {
    let ev = match b["event"].as_str() {
        Some("insert") => "insert",
        Some("update") => "update",
        Some("delete") => "delete",
        other => panic!("event {other:?}"),
    };
    let row = if ev == "update" {
        &b["new_data"]
    } else {
        &b["data"]
    };
    let k = row["id"].as_i64().expect("id");
    (ev, k, row["v"].as_i64().expect("v"))
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_keeps_per_key_order() {
    let seed = std::env::var("PIKACHU_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("crash test seed {seed} (set PIKACHU_CRASH_SEED to repeat)");
    let db = MariaDb::start(ServerOptions::default());
    let name = db.fresh_database("crash");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let receiver = Receiver::start();
    // Task `d` gets every delete and can never deliver one: each becomes a
    // dead letter, so kills land in dead-letter writes too.
    let refuser = Receiver::start();
    refuser.set_status(Some(500));
    let dir = tempfile::tempdir().expect("tempdir");
    const QUEUE: usize = 500;
    // `start: latest` (the first start resolves it) and a checkpoint save
    // every 10 ms: kills land in the very first start and in checkpoint writes.
    let cfg = start_latest(&yaml(
        &db,
        &name,
        &("unused".into(), 4),
        &[
            TaskSpec::new(
                "t",
                "t",
                &["insert", "update", "delete"],
                &receiver.url("/t"),
            ),
            TaskSpec {
                // Without the circuit breaker, which would hold the deletes
                // (an endpoint that never answers 2xx looks down).
                extra: "  breaker:\n    failures: 0\n".into(),
                ..TaskSpec::new("d", "t", &["delete"], &refuser.url("/d"))
            },
        ],
        &format!("  queue_size: {QUEUE}\n  max_retries: 1\n"),
        "checkpoint:\n  interval: \"10ms\"\n",
    ));
    let (chunks, per_key) = workload(2000, seed);
    let total: usize = per_key.values().map(Vec::len).sum();
    assert_eq!(total, 20_000);
    let deletes: usize = per_key
        .values()
        .flatten()
        .filter(|e| e.0 == "delete")
        .count();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut kill_at: Vec<usize> = (0..5).map(|_| rng.usize(500..18_000)).collect();
    kill_at.sort_unstable();

    // Kill 1: during the very first start-up, before anything is written.
    let milestones = ["connected to", "no checkpoint yet", "binlog stream opened"];
    let milestone = milestones[rng.usize(..milestones.len())];
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    wait_log_count(&p, milestone, 1);
    p.kill();
    let first_start = std::time::Instant::now();
    let mut p = Pikachu::start_in(dir.path(), &cfg, &[]);
    let opened = p.log().matches("binlog stream opened").count() + 1;
    wait_log_count(&p, "binlog stream opened", opened);
    let early = rng.usize(1..200);
    let mut first_kill_after = Duration::ZERO;
    p = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for c in &chunks {
                db.exec_in(&name, c);
            }
        });
        // Kill 2: in the first second of streaming, before (with luck) any
        // periodic checkpoint of a settled change.
        receiver.wait_for_requests(early, Duration::from_secs(60));
        p.kill();
        first_kill_after = first_start.elapsed();
        p = Pikachu::start_in(dir.path(), &cfg, &[]);
        for &at in &kill_at {
            // A cheap condition (it runs under the receiver's lock on every
            // request): answered requests, duplicates included.
            receiver.wait_for(at, Duration::from_secs(120));
            p.kill();
            p = Pikachu::start_in(dir.path(), &cfg, &[]);
        }
        writer.join().expect("workload");
        p
    });
    // Cheap first (count), then the distinct changes, polled with a deadline.
    receiver.wait_for(total, Duration::from_secs(180));
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let got = loop {
        let got = receiver.received();
        if distinct(&got) >= total {
            break got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {total} changes arrived",
            distinct(&got)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    p.assert_alive();
    // First deliveries in arrival order, per key.
    let mut seen = HashSet::new();
    let mut first: HashMap<i64, Vec<Expected>> = HashMap::new();
    for r in &got {
        let id = r.header("webhook-id").unwrap_or_default().to_string();
        if !seen.insert(id) {
            continue;
        }
        let e = expected_of(&r.json());
        first.entry(e.1).or_default().push(e);
    }
    for (k, want) in &per_key {
        assert_eq!(
            first.get(k),
            Some(want),
            "key {k}: lost, extra or reordered changes"
        );
    }
    // Every delete is a dead letter of task `d`, once.
    let dead = |p: &Pikachu| -> Vec<Expected> {
        let store = pikachu::store::Store::open_existing(&p.dir.path().join("data"))
            .expect("state store")
            .expect("exists");
        let filter = pikachu::store::Filter {
            task_id: Some("d".into()),
            id: None,
        };
        store
            .dead_letters(&filter)
            .expect("dead letters")
            .iter()
            .map(|d| expected_of(&serde_json::from_slice(&d.body).expect("JSON body")))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let letters = loop {
        let letters = dead(&p);
        if letters.len() >= deletes {
            break letters;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {deletes} deletes were dead-lettered",
            letters.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut want_dead: Vec<Expected> = per_key
        .values()
        .flatten()
        .filter(|e| e.0 == "delete")
        .copied()
        .collect();
    let mut got_dead = letters.clone();
    want_dead.sort_unstable();
    got_dead.sort_unstable();
    assert_eq!(got_dead, want_dead, "dead letters: lost or extra deletes");
    let duplicates = got.len() - seen.len();
    eprintln!(
        "crash test: {} changes, {} dead letters, kills: at start-up ({milestone}), {:?} after the first start ({early} requests), then at {:?} requests; {} deliveries, {} duplicates",
        total,
        letters.len(),
        first_kill_after,
        kill_at,
        got.len(),
        duplicates
    );
    // What can come twice after a crash: what was queued or in flight (two
    // bounded queues) plus what settled after the last checkpoint save.
    let kills = kill_at.len() + 2;
    assert!(
        duplicates <= kills * (2 * QUEUE + 2_000),
        "{duplicates} duplicates is more than what could have been in flight"
    );
}

#[test]
fn receiver_down_for_a_while_then_back_loses_nothing() {
    let db = MariaDb::shared();
    let name = db.fresh_database("outage");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY)");
    let receiver = Receiver::start();
    let start = db.master_status();
    let mut task = TaskSpec::new("t", "t", &["insert"], &receiver.url("/t"));
    task.extra = "  on_failure: \"block\"\n".into();
    let cfg = yaml(db, &name, &start, &[task], "", "");
    let mut p = Pikachu::start(&cfg);
    receiver.stop();
    db.exec_in(&name, "INSERT INTO t SELECT seq FROM seq_1_to_100");
    // pikachu keeps retrying while the receiver is down.
    p.wait_log("retry", Duration::from_secs(30));
    receiver.start_again();
    receiver.wait_until(Duration::from_secs(60), |r| distinct(r) >= 100);
    p.assert_alive();
    let ids: HashSet<i64> = receiver
        .received()
        .iter()
        .map(|r| r.json()["data"]["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, (1..=100).collect::<HashSet<i64>>());
}

#[test]
fn a_purged_checkpoint_position_is_a_clear_error() {
    let db = MariaDb::start(ServerOptions::default());
    let name = db.fresh_database("purged");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY)");
    let receiver = Receiver::start();
    let start = db.master_status();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = yaml(
        &db,
        &name,
        &start,
        &[TaskSpec::new("t", "t", &["insert"], &receiver.url("/t"))],
        "",
        "",
    );
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    db.exec_in(&name, "INSERT INTO t VALUES (1)");
    receiver.wait_for(1, Duration::from_secs(30));
    assert!(p.terminate().success());
    db.exec("FLUSH BINARY LOGS");
    db.exec_in(&name, "INSERT INTO t VALUES (2)");
    db.exec("FLUSH BINARY LOGS");
    let newest = db.master_status().0;
    // A dump thread that has not noticed its client left keeps its file in
    // use, and PURGE skips files in use: retry until the file is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        db.exec(&format!("PURGE BINARY LOGS TO '{newest}'"));
        let logs = db.query("SHOW BINARY LOGS");
        if !logs
            .iter()
            .any(|r| r[0].as_deref() == Some(start.0.as_str()))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "could not purge {}: {logs:?}",
            start.0
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // `pikachu check` says so before a start does.
    let check = std::process::Command::new(Pikachu::bin())
        .args(["check", "-config"])
        .arg(dir.path().join("config.yaml"))
        .current_dir(dir.path())
        .output()
        .expect("check");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL checkpoint") && l.contains("no longer on the server")),
        "{stdout}"
    );
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    let status = p_wait(p);
    assert_eq!(status.0.code(), Some(1), "{}", status.1);
    let log = status.1;
    assert!(log.contains("is no longer on the server"), "{log}");
    assert!(
        log.contains(&start.0),
        "names the position it needed: {log}"
    );
    assert!(
        log.contains(&format!("{newest}:4")),
        "names the oldest position: {log}"
    );
    let last = log
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        last.contains("position set earliest"),
        "says what to do: {last}"
    );
    assert!(!last.contains(":0 "), "names no position 0: {last}");
}

fn p_wait(p: Pikachu) -> (std::process::ExitStatus, String) {
    let dir = p.dir.path().to_path_buf();
    let status = p.wait_exit(Duration::from_secs(60));
    let log = std::fs::read_to_string(dir.join("pikachu.log")).unwrap_or_default();
    (status, log)
}

#[test]
fn a_checkpoint_of_another_server_is_refused() {
    let a = MariaDb::start(ServerOptions::default());
    let b = MariaDb::start(ServerOptions::with_args(["--server-id=2"]));
    let name = a.fresh_database("other");
    b.exec(&format!("CREATE DATABASE `{name}`"));
    for db in [&a, &b] {
        db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY)");
    }
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let task = || [TaskSpec::new("t", "t", &["insert"], &receiver.url("/t"))];
    let cfg_a = yaml(&a, &name, &a.master_status(), &task(), "", "");
    let p = Pikachu::start_in(dir.path(), &cfg_a, &[]);
    a.exec_in(&name, "INSERT INTO t VALUES (1)");
    receiver.wait_for(1, Duration::from_secs(30));
    assert!(p.terminate().success());
    let cfg_b = yaml(&b, &name, &b.master_status(), &task(), "", "");
    let (status, log) = p_wait(Pikachu::start_in(dir.path(), &cfg_b, &[]));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("belongs to mariadb server_id 1"), "{log}");
    assert!(log.contains("is mariadb server_id 2"), "{log}");
    assert!(log.contains("pikachu position reset"), "{log}");
    // --reset-position starts over from `start`.
    let p = Pikachu::start_in(dir.path(), &cfg_b, &["--reset-position"]);
    b.exec_in(&name, "INSERT INTO t VALUES (2)");
    receiver.wait_for(2, Duration::from_secs(30));
    assert!(p.terminate().success());
}

#[test]
fn resumes_by_gtid_on_a_replica_of_the_same_topology() {
    let a = MariaDb::start(ServerOptions::default());
    let b = MariaDb::start(ServerOptions::with_args([
        "--server-id=2",
        "--log-slave-updates=ON",
    ]));
    b.exec(&format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos; START SLAVE;",
        a.port
    ));
    let name = a.fresh_database("failover");
    a.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY)");
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let task = || [TaskSpec::new("t", "t", &["insert"], &receiver.url("/t"))];
    let cfg_a = yaml(&a, &name, &a.master_status(), &task(), "", "");
    let p = Pikachu::start_in(dir.path(), &cfg_a, &[]);
    a.exec_in(&name, "INSERT INTO t SELECT seq FROM seq_1_to_50");
    receiver.wait_for(50, Duration::from_secs(30));
    assert!(p.terminate().success());
    // More changes while pikachu is down; they reach the replica.
    a.exec_in(&name, "INSERT INTO t SELECT seq FROM seq_51_to_100");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = b.query(&format!("SELECT COUNT(*) FROM `{name}`.t"));
        if rows.first().and_then(|r| r[0].clone()).as_deref() == Some("100") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica did not catch up: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // pikachu now reads the replica (the primary "failed").
    let cfg_b = yaml(&b, &name, &b.master_status(), &task(), "", "");
    let mut p = Pikachu::start_in(dir.path(), &cfg_b, &[]);
    receiver.wait_until(Duration::from_secs(30), |r| distinct(r) >= 100);
    p.assert_alive();
    let got = receiver.received();
    assert_eq!(got.len(), 100, "nothing twice, nothing lost");
    let ids: HashSet<i64> = got
        .iter()
        .map(|r| r.json()["data"]["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, (1..=100).collect::<HashSet<i64>>());
    assert!(
        p.log().contains("on another server of the topology"),
        "{}",
        p.log()
    );
    // The same change has the same id on either server (GTID-based ids, in
    // the history marker the checkpoint carried over from the primary).
    let history = |r: &support::Received| {
        let id = r.header("webhook-id").unwrap_or_default().to_string();
        let (h, rest) = id.split_once('/').expect("history/…");
        assert!(rest.starts_with("0-1-"), "{id}");
        h.to_string()
    };
    assert_eq!(history(&got[60]), history(&got[0]));
}
