//! XA transactions against a real MariaDB, through the real binary: the
//! rows of a prepared XA are delivered at its `XA COMMIT` (exactly once,
//! with the ids of the PREPARE's rows), never after an `XA ROLLBACK`, and
//! survive a restart of pikachu (SIGTERM or SIGKILL) between PREPARE and
//! COMMIT in the state store; XA on unwatched tables and `XA COMMIT … ONE
//! PHASE` pass; per-row order follows the outcome's place in the binlog;
//! `pikachu binlog decode` shows the XA events and counts them.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::pikachu::{config_yaml, Pikachu, TaskSpec};
use support::{MariaDb, Received, Receiver, ServerOptions};

const WAIT: Duration = Duration::from_secs(30);

/// A config with a 100 ms checkpoint interval.
fn yaml(db: &MariaDb, name: &str, start: &(String, u64), tasks: &[TaskSpec]) -> String {
    config_yaml(db, name, start, tasks)
        .replace("tasks:\n", "checkpoint:\n  interval: \"100ms\"\ntasks:\n")
}

fn task(table: &str, url: &str) -> TaskSpec {
    TaskSpec::new(table, table, &["insert", "update", "delete"], url)
}

/// `XA START xid; body; XA END xid; XA PREPARE xid` (the prepared XA
/// outlives the client's session: MariaDB 10.5+).
fn prepare(db: &MariaDb, name: &str, xid: &str, body: &str) {
    db.exec_in(
        name,
        &format!("XA START '{xid}'; {body}; XA END '{xid}'; XA PREPARE '{xid}';"),
    );
}

/// The row image of a delivered change (`new_data` for updates).
fn row(r: &Received) -> Value {
    let b = r.json();
    if b["event"] == "update" {
        b["new_data"].clone()
    } else {
        b["data"].clone()
    }
}

/// The `v` values received so far, in arrival order.
fn values(receiver: &Receiver) -> Vec<String> {
    receiver
        .received()
        .iter()
        .map(|r| row(r)["v"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until a change with `v == value` was delivered. Cheap (the
/// condition runs under the receiver's lock at every request): looks only
/// at requests it has not seen answered, for the JSON text `"v":"value"`.
fn wait_value(receiver: &Receiver, value: &str) {
    let needle = format!("\"v\":{}", Value::from(value));
    let seen = std::sync::atomic::AtomicUsize::new(0);
    receiver.wait_until(WAIT, move |reqs| {
        use std::sync::atomic::Ordering::Relaxed;
        let from = seen.load(Relaxed).min(reqs.len());
        let mut done = from;
        for (i, r) in reqs.iter().enumerate().skip(from) {
            if r.succeeded() && r.body.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                return true;
            }
            if r.status.is_some() && done == i {
                done = i + 1;
            }
        }
        seen.store(done, Relaxed);
        false
    });
}

/// Polls the saved checkpoint in `run_dir/data/pikachu.db` until it is at
/// or past `at` (same file), or panics with the log.
fn wait_checkpoint(p: &Pikachu, at: &(String, u64)) {
    let path = p.dir.path().join("data").join("pikachu.db");
    let deadline = Instant::now() + WAIT;
    loop {
        let saved = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .and_then(|c| {
            c.query_row("SELECT file, pos FROM checkpoint WHERE id = 1", [], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
        });
        if let Ok((file, pos)) = saved {
            if file == at.0 && pos >= at.1 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the checkpoint never reached {}:{}; log:\n{}",
            at.0,
            at.1,
            p.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn prepared_then_committed_is_delivered_once_at_the_commit() {
    // A server of its own: the GTID of the PREPARE is read after it.
    let server = MariaDb::start(ServerOptions::default());
    let db = &server;
    let name = db.fresh_database("xa_commit");
    // No primary key: one change at a time in binlog order, so a change
    // delivered after a marker was submitted after it.
    db.exec_in(&name, "CREATE TABLE np (k INT, v VARCHAR(20))");
    let receiver = Receiver::start();
    let start = db.master_status();
    let mut p = Pikachu::start(&yaml(
        db,
        &name,
        &start,
        &[task("np", &receiver.url("/np"))],
    ));
    let xid = format!("{name}-a");
    prepare(
        db,
        &name,
        &xid,
        "INSERT INTO np VALUES (1, 'xa1'), (2, 'xa2'); UPDATE np SET v = 'xa1b' WHERE k = 1",
    );
    let prepare_gtid = db.query_value("SELECT @@gtid_binlog_pos");
    db.exec_in(&name, "INSERT INTO np VALUES (0, 'marker1')");
    wait_value(&receiver, "marker1");
    assert_eq!(
        values(&receiver),
        vec!["marker1"],
        "nothing of the XA before its COMMIT"
    );
    db.exec(&format!("XA COMMIT '{xid}'"));
    db.exec_in(&name, "INSERT INTO np VALUES (0, 'marker2')");
    wait_value(&receiver, "marker2");
    p.assert_alive();
    assert_eq!(
        values(&receiver),
        vec!["marker1", "xa1", "xa2", "xa1b", "marker2"],
        "the XA's rows once, at the COMMIT's place"
    );
    // Ids and source are the PREPARE's rows' own (deterministic).
    let got = receiver.received();
    let ids: Vec<&str> = got[1..4]
        .iter()
        .map(|r| r.header("webhook-id").unwrap_or_default())
        .collect();
    // `<history>/…`: the history marker of the rest of the stream.
    let history = got[0]
        .header("webhook-id")
        .and_then(|id| id.split_once('/'))
        .map(|(h, _)| h.to_string())
        .expect("history/…");
    let want: Vec<String> = (0..3)
        .map(|i| format!("{history}/{prepare_gtid}#{i}@np"))
        .collect();
    assert_eq!(ids, want);
    assert_eq!(got[1].json()["source"]["gtid"], Value::from(prepare_gtid));
}

#[test]
fn prepared_then_rolled_back_is_never_delivered() {
    let db = MariaDb::shared();
    let name = db.fresh_database("xa_rollback");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))");
    let receiver = Receiver::start();
    let start = db.master_status();
    let mut p = Pikachu::start(&yaml(db, &name, &start, &[task("t", &receiver.url("/t"))]));
    let xid = format!("{name}-r");
    prepare(db, &name, &xid, "INSERT INTO t VALUES (10, 'rolled back')");
    db.exec(&format!("XA ROLLBACK '{xid}'"));
    // The same row afterwards: were the XA's change delivered, it would
    // come first (per-row order).
    db.exec_in(&name, "INSERT INTO t VALUES (10, 'after')");
    wait_value(&receiver, "after");
    p.assert_alive();
    assert_eq!(values(&receiver), vec!["after"]);
}

#[test]
fn xa_on_an_unwatched_table_passes() {
    let db = MariaDb::shared();
    let name = db.fresh_database("xa_unwatched");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))");
    db.exec_in(&name, "CREATE TABLE other (id INT PRIMARY KEY)");
    let receiver = Receiver::start();
    let start = db.master_status();
    let mut p = Pikachu::start(&yaml(db, &name, &start, &[task("t", &receiver.url("/t"))]));
    prepare(
        db,
        &name,
        &format!("{name}-1"),
        "INSERT INTO other VALUES (1)",
    );
    db.exec(&format!("XA COMMIT '{name}-1'"));
    prepare(
        db,
        &name,
        &format!("{name}-2"),
        "INSERT INTO other VALUES (2)",
    );
    db.exec(&format!("XA ROLLBACK '{name}-2'"));
    db.exec_in(&name, "INSERT INTO t VALUES (1, 'watched')");
    wait_value(&receiver, "watched");
    p.assert_alive();
    assert_eq!(values(&receiver), vec!["watched"]);
}

#[test]
fn one_phase_commit_is_delivered_at_once_while_another_xa_is_prepared() {
    let db = MariaDb::shared();
    let name = db.fresh_database("xa_one_phase");
    db.exec_in(&name, "CREATE TABLE np (k INT, v VARCHAR(20))");
    let receiver = Receiver::start();
    let start = db.master_status();
    let mut p = Pikachu::start(&yaml(
        db,
        &name,
        &start,
        &[task("np", &receiver.url("/np"))],
    ));
    let (held, one) = (format!("{name}-held"), format!("{name}-one"));
    prepare(db, &name, &held, "INSERT INTO np VALUES (1, 'held')");
    db.exec_in(
        &name,
        &format!(
            "XA START '{one}'; INSERT INTO np VALUES (2, 'one phase'); XA END '{one}'; XA COMMIT '{one}' ONE PHASE;"
        ),
    );
    db.exec_in(&name, "INSERT INTO np VALUES (0, 'marker')");
    wait_value(&receiver, "marker");
    assert_eq!(values(&receiver), vec!["one phase", "marker"]);
    db.exec(&format!("XA COMMIT '{held}'"));
    wait_value(&receiver, "held");
    p.assert_alive();
    assert_eq!(values(&receiver), vec!["one phase", "marker", "held"]);
}

#[test]
fn per_row_order_follows_the_outcome() {
    let db = MariaDb::shared();
    let name = db.fresh_database("xa_order");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))");
    db.exec_in(
        &name,
        "INSERT INTO t VALUES (1, 'r1 start'), (2, 'r2 start')",
    );
    let receiver = Receiver::start();
    let start = db.master_status();
    let mut p = Pikachu::start(&yaml(db, &name, &start, &[task("t", &receiver.url("/t"))]));
    let (a, c) = (format!("{name}-a"), format!("{name}-c"));
    prepare(db, &name, &a, "UPDATE t SET v = 'r1 xa a' WHERE id = 1");
    db.exec_in(&name, "UPDATE t SET v = 'r2 normal 1' WHERE id = 2");
    prepare(
        db,
        &name,
        &c,
        "UPDATE t SET v = 'r2 xa c' WHERE id = 2; INSERT INTO t VALUES (3, 'r3 xa c')",
    );
    db.exec_in(&name, "INSERT INTO t VALUES (4, 'r4 normal')");
    db.exec(&format!("XA COMMIT '{c}'"));
    db.exec_in(
        &name,
        "UPDATE t SET v = 'r2 normal 2' WHERE id = 2; UPDATE t SET v = 'r3 normal' WHERE id = 3",
    );
    db.exec(&format!("XA COMMIT '{a}'"));
    db.exec_in(&name, "UPDATE t SET v = 'r1 normal' WHERE id = 1");
    receiver.wait_for(8, WAIT);
    wait_value(&receiver, "r1 normal");
    p.assert_alive();
    let mut per_row: HashMap<i64, Vec<String>> = HashMap::new();
    for r in receiver.received() {
        let img = row(&r);
        per_row
            .entry(img["id"].as_i64().expect("id"))
            .or_default()
            .push(img["v"].as_str().unwrap_or_default().to_string());
    }
    let want: HashMap<i64, Vec<String>> = [
        (1, vec!["r1 xa a", "r1 normal"]),
        (2, vec!["r2 normal 1", "r2 xa c", "r2 normal 2"]),
        (3, vec!["r3 xa c", "r3 normal"]),
        (4, vec!["r4 normal"]),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(per_row, want);
}

/// A restart between PREPARE and COMMIT, after the checkpoint moved past
/// the PREPARE: the rows come back from the state store.
fn restart_between_prepare_and_commit(kill: bool) {
    let db = MariaDb::shared();
    let name = db.fresh_database(if kill { "xa_kill" } else { "xa_term" });
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))");
    let receiver = Receiver::start();
    let start = db.master_status();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = yaml(db, &name, &start, &[task("t", &receiver.url("/t"))]);
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    // More rows than pikachu keeps in memory for an open XA.
    const N: usize = 2500;
    let xid = format!("{name}-x");
    prepare(
        db,
        &name,
        &xid,
        &format!("INSERT INTO t SELECT seq, 'xa' FROM seq_1_to_{N}"),
    );
    db.exec_in(&name, "INSERT INTO t VALUES (0, 'marker')");
    let after_marker = db.master_status();
    wait_value(&receiver, "marker");
    wait_checkpoint(&p, &after_marker);
    if kill {
        p.kill();
    } else {
        assert!(p.terminate().success(), "graceful stop exits 0");
    }
    assert_eq!(values(&receiver), vec!["marker"]);
    db.exec(&format!("XA COMMIT '{xid}'"));
    db.exec_in(&name, "UPDATE t SET v = 'after' WHERE id = 1");
    let mut p = Pikachu::start_in(dir.path(), &cfg, &[]);
    p.wait_log("resuming from the checkpoint", WAIT);
    // The marker, the XA's rows, the update.
    receiver.wait_for(1 + N + 1, WAIT);
    wait_value(&receiver, "after");
    p.assert_alive();
    let got = receiver.received();
    let mut ids: Vec<&str> = got
        .iter()
        .filter(|r| row(r)["v"] == "xa")
        .filter_map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(ids.len(), N, "every row of the XA, once");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), N, "distinct ids");
    // Row 1's XA insert came before its later update.
    let r1: Vec<String> = got
        .iter()
        .filter(|r| row(r)["id"] == 1)
        .map(|r| row(r)["v"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(r1, vec!["xa", "after"]);
    assert!(
        p.log().contains("prepared XA transaction"),
        "the restart says what it holds: {}",
        p.log()
    );
}

#[test]
fn sigterm_between_prepare_and_commit_loses_nothing() {
    restart_between_prepare_and_commit(false);
}

#[test]
fn sigkill_between_prepare_and_commit_loses_nothing() {
    restart_between_prepare_and_commit(true);
}

#[test]
fn binlog_decode_shows_and_counts_xa_transactions() {
    let db = MariaDb::start(ServerOptions::default());
    let name = db.fresh_database("xa_decode");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY)");
    db.exec("FLUSH BINARY LOGS");
    let file = db.master_status().0;
    prepare(&db, &name, "c", "INSERT INTO t VALUES (1)");
    db.exec("XA COMMIT 'c'");
    db.exec_in(
        &name,
        "XA START 'r','b',7; INSERT INTO t VALUES (2); XA END 'r','b',7; XA PREPARE 'r','b',7;",
    );
    db.exec("XA ROLLBACK 'r','b',7");
    prepare(&db, &name, "open", "INSERT INTO t VALUES (3)");
    let out = Command::new(env!("CARGO_BIN_EXE_pikachu"))
        .args(["binlog", "decode"])
        .arg(db.binlog_dir().join(&file))
        .output()
        .expect("run pikachu binlog decode");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let prepares: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "XA_PREPARE_LOG_EVENT")
        .collect();
    assert_eq!(prepares.len(), 3, "{lines:#?}");
    for p in &prepares {
        assert!(p.get("decoded").is_none(), "decoded: {p}");
        assert_eq!(p["one_phase"], false);
    }
    let xids: Vec<&Value> = prepares.iter().map(|p| &p["xid"]).collect();
    assert_eq!(xids, ["X'63',X'',1", "X'72',X'62',7", "X'6f70656e',X'',1"]);
    // The GTID events say which group is a prepared XA and which an outcome.
    let gtid_xa: Vec<(&Value, &Value)> = lines
        .iter()
        .filter(|l| l["type"] == "MARIADB_GTID_EVENT" && l.get("xa").is_some())
        .map(|l| (&l["xa"], &l["xid"]))
        .collect();
    assert_eq!(gtid_xa.len(), 5, "{lines:#?}");
    assert_eq!(gtid_xa[0].0, "prepared");
    assert_eq!(gtid_xa[1].0, "completed");
    // Outcomes: the statement, and what it did.
    let outcomes: Vec<(&Value, &Value)> = lines
        .iter()
        .filter_map(|l| Some((l.get("xa_outcome")?, &l["xid"])))
        .collect();
    assert_eq!(
        outcomes,
        [
            (&Value::from("commit"), &Value::from("X'63',X'',1")),
            (&Value::from("rollback"), &Value::from("X'72',X'62',7")),
        ]
    );
    assert!(
        stderr.contains(
            "XA transactions: 3 prepared, 1 committed, 1 rolled back, 1 prepared without an outcome in these files"
        ),
        "{stderr}"
    );
}
