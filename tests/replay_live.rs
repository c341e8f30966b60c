//! `pikachu replay` against a real MariaDB, through the real binary: each
//! output (stdout, null, webhook), `--to` inside a transaction, a range
//! across a binlog rotation, an empty range and bad `--from` values.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::pikachu::{config_yaml, TaskSpec};
use support::{MariaDb, Receiver, ServerOptions};

struct Run {
    code: Option<i32>,
    /// Payload lines (all stdout lines but the last).
    payloads: Vec<Value>,
    /// Bytes of the payload lines, without their newlines.
    payload_bytes: usize,
    summary: Value,
    stderr: String,
}

fn replay(yaml: &str, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, yaml).expect("config");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_pikachu"))
        .arg("replay")
        .arg("-config")
        .arg(&cfg)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pikachu replay");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "replay took {:?}",
        started.elapsed()
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let summary = lines.pop().unwrap_or(Value::Null);
    let payload_bytes =
        stdout.lines().map(str::len).sum::<usize>() - stdout.lines().last().map_or(0, str::len);
    Run {
        code: out.status.code(),
        payloads: lines,
        payload_bytes,
        summary,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn task(table: &str, url: &str) -> TaskSpec {
    TaskSpec::new(
        &format!("t_{table}"),
        table,
        &["insert", "update", "delete"],
        url,
    )
}

fn pos(p: &(String, u64)) -> String {
    format!("{}:{}", p.0, p.1)
}

/// Positions of the events of the current binlog file, as `SHOW BINLOG EVENTS` lists them.
fn events(db: &MariaDb, file: &str) -> Vec<(u64, String, u64)> {
    db.query(&format!("SHOW BINLOG EVENTS IN '{file}'"))
        .into_iter()
        .map(|r| {
            (
                r[1].clone().unwrap_or_default().parse().unwrap_or(0),
                r[2].clone().unwrap_or_default(),
                r[4].clone().unwrap_or_default().parse().unwrap_or(0),
            )
        })
        .collect()
}

const CHANGES: &str = "SET TIMESTAMP = 1672574400;
     BEGIN;
     INSERT INTO t VALUES (1, 'a'), (2, 'b');
     INSERT INTO t VALUES (3, 'c');
     COMMIT;
     UPDATE t SET v = 'bb' WHERE id = 2;
     DELETE FROM t WHERE id = 3;
     INSERT INTO other VALUES (1);";

#[test]
fn stdout_null_and_webhook_outputs() {
    let db = MariaDb::shared();
    let name = db.fresh_database("replay");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))");
    db.exec_in(&name, "CREATE TABLE other (id INT PRIMARY KEY)");
    let start = db.master_status();
    db.exec_in(&name, CHANGES);
    let receiver = Receiver::start();
    let yaml = config_yaml(db, &name, &start, &[task("t", &receiver.url("/t"))]);

    // stdout: one payload per line, as webhook bodies, then the summary.
    let r = replay(&yaml, &["--from", &pos(&start), "--output", "stdout"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let kinds: Vec<(&str, Value)> = r
        .payloads
        .iter()
        .map(|p| (p["event"].as_str().unwrap_or(""), p["primary_id"].clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("insert", json!(1)),
            ("insert", json!(2)),
            ("insert", json!(3)),
            ("update", json!(2)),
            ("delete", json!(3)),
        ]
    );
    assert_eq!(r.payloads[0]["data"], json!({"id": 1, "v": "a"}));
    assert_eq!(r.payloads[3]["new_data"], json!({"id": 2, "v": "bb"}));
    assert_eq!(r.payloads[0]["task_id"], "t_t");
    assert_eq!(r.payloads[0]["database"], name.as_str());
    let s = &r.summary["summary"];
    assert_eq!(s["changes"], 5, "{}", r.summary);
    let key = format!("{name}.t");
    assert_eq!(
        s["by_table"],
        json!({key.as_str(): {"insert": 3, "update": 1, "delete": 1}})
    );
    assert!(s["seconds"].is_number() && s["changes_per_sec"].is_number());

    assert_eq!(s["payload_bytes"], r.payload_bytes, "{}", r.summary);

    // null: only the summary, but every payload rendered (the benchmark
    // measures decoding and encoding): the same bytes as stdout's.
    let n = replay(&yaml, &["--from", &pos(&start), "--output", "null"]);
    assert_eq!(n.code, Some(0), "{}", n.stderr);
    assert!(n.payloads.is_empty());
    assert_eq!(n.summary["summary"]["changes"], 5);
    assert_eq!(n.summary["summary"]["payload_bytes"], r.payload_bytes);
    assert_eq!(n.summary["summary"]["by_table"], s["by_table"]);

    // webhook: the same bodies, POSTed.
    let w = replay(&yaml, &["--from", &pos(&start), "--output", "webhook"]);
    assert_eq!(w.code, Some(0), "{}", w.stderr);
    assert!(w.payloads.is_empty());
    let got = receiver.wait_for(5, Duration::from_secs(10));
    // The delivery engine sends different rows in parallel: compare by id
    // (per-row order is the engine's own tests' business).
    let by_id = |v: &[Value]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        v
    };
    let bodies: Vec<Value> = got.iter().map(|g| g.json()).collect();
    assert_eq!(by_id(&bodies), by_id(&r.payloads));
    receiver.assert_no_more_requests(Duration::from_millis(300));
    // No checkpoint was written.
    assert!(!std::path::Path::new("data").join("checkpoint").exists());
}

#[test]
fn to_inside_a_transaction_ends_at_its_commit() {
    let db = MariaDb::shared();
    let name = db.fresh_database("replay_to");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))");
    db.exec_in(&name, "CREATE TABLE other (id INT PRIMARY KEY)");
    let start = db.master_status();
    db.exec_in(&name, CHANGES);
    // The second rows event of the first transaction (`INSERT … (3, 'c')`):
    // --to its start position is inside the transaction.
    let evs = events(db, &start.0);
    let rows: Vec<&(u64, String, u64)> = evs
        .iter()
        .filter(|e| e.0 >= start.1 && e.1.starts_with("Write_rows"))
        .collect();
    assert!(rows.len() >= 2, "{evs:?}");
    let mid = format!("{}:{}", start.0, rows[1].0);
    let yaml = config_yaml(db, &name, &start, &[task("t", "http://127.0.0.1:9/")]);
    let r = replay(&yaml, &["--from", &pos(&start), "--to", &mid]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let ids: Vec<Value> = r.payloads.iter().map(|p| p["primary_id"].clone()).collect();
    // The whole first transaction (3 inserts), nothing after it.
    assert_eq!(ids, vec![json!(1), json!(2), json!(3)], "{}", r.summary);
    assert_eq!(r.summary["summary"]["changes"], 3);
}

#[test]
fn range_across_a_rotation() {
    let db = MariaDb::start(ServerOptions::default());
    let name = db.fresh_database("replay_rot");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))");
    let start = db.master_status();
    db.exec_in(&name, "INSERT INTO t VALUES (1, 'before')");
    db.exec("FLUSH BINARY LOGS");
    db.exec_in(&name, "INSERT INTO t VALUES (2, 'after')");
    let end = db.master_status();
    assert_ne!(start.0, end.0, "the binlog rotated");
    let yaml = config_yaml(&db, &name, &start, &[task("t", "http://127.0.0.1:9/")]);
    let r = replay(&yaml, &["--from", &pos(&start)]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let got: Vec<(Value, Value)> = r
        .payloads
        .iter()
        .map(|p| (p["data"]["v"].clone(), p["source"]["file"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (json!("before"), json!(start.0)),
            (json!("after"), json!(end.0))
        ]
    );
    assert_eq!(r.summary["summary"]["stopped_at"], json!(pos(&end)));
    // From the new file alone, up to its end.
    let second = (end.0.clone(), 4);
    let r = replay(&yaml, &["--from", &pos(&second), "--output", "null"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.summary["summary"]["changes"], 1);
    // --to the end of the first file (past its last commit, at its
    // rotate): the first file's change only, not the next file's first
    // transaction.
    let size = db
        .query("SHOW BINARY LOGS")
        .into_iter()
        .find(|r| r[0].as_deref() == Some(start.0.as_str()))
        .and_then(|r| r[1].clone())
        .expect("first file listed");
    let to = format!("{}:{size}", start.0);
    let r = replay(&yaml, &["--from", &pos(&start), "--to", &to]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let got: Vec<&Value> = r.payloads.iter().map(|p| &p["data"]["v"]).collect();
    assert_eq!(got, vec![&json!("before")], "{}", r.summary);
}

#[test]
fn empty_range_and_bad_from() {
    let db = MariaDb::shared();
    let name = db.fresh_database("replay_bad");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY)");
    let end = db.master_status();
    let yaml = config_yaml(db, &name, &end, &[task("t", "http://127.0.0.1:9/")]);
    // Nothing between --from and the end of the binlog.
    let r = replay(&yaml, &["--from", &pos(&end)]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.payloads.is_empty());
    assert_eq!(r.summary["summary"]["changes"], 0);
    // --to before --from: nothing either.
    let r = replay(
        &yaml,
        &["--from", &pos(&end), "--to", &format!("{}:4", end.0)],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.summary["summary"]["changes"], 0);

    // Malformed: exit 2, one clear line.
    for bad in ["nonsense", "mysql-bin.000001:abc", "file:2"] {
        let r = replay(&yaml, &["--from", bad]);
        assert_eq!(r.code, Some(2), "{bad}: {}", r.stderr);
        assert!(
            r.stderr.contains("--from") && r.stderr.starts_with("error: "),
            "{bad}: {}",
            r.stderr
        );
    }
    // Well-formed, but the server does not have it: exit 1.
    let r = replay(&yaml, &["--from", "nosuch-bin.000042:4"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("has no binlog file"), "{}", r.stderr);
    let r = replay(&yaml, &["--from", &format!("{}:999999999", end.0)]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("has only"), "{}", r.stderr);
}

#[test]
fn mariadb_gtid_from_and_to() {
    let db = MariaDb::start(ServerOptions::default());
    let name = db.fresh_database("replay_gtid");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY)");
    let before = db.query_value("SELECT @@gtid_binlog_pos");
    let start = db.master_status();
    for i in 1..=4 {
        db.exec_in(&name, &format!("INSERT INTO t VALUES ({i})"));
    }
    // The GTID of the third insert: the replay stops after it.
    let third = {
        let p: Vec<u64> = db
            .query_value("SELECT @@gtid_binlog_pos")
            .split('-')
            .map(|x| x.parse().expect("number"))
            .collect();
        format!("{}-{}-{}", p[0], p[1], p[2] - 1)
    };
    let yaml = config_yaml(&db, &name, &start, &[task("t", "http://127.0.0.1:9/")]);
    let r = replay(&yaml, &["--from", &before, "--to", &third]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let ids: Vec<Value> = r.payloads.iter().map(|p| p["primary_id"].clone()).collect();
    assert_eq!(ids, vec![json!(1), json!(2), json!(3)], "{}", r.summary);
    assert_eq!(r.payloads[2]["source"]["gtid"], json!(third));
}

#[test]
fn xa_transactions_in_a_range() {
    let db = MariaDb::shared();
    let name = db.fresh_database("replay_xa");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))");
    let xa = |xid: &str, body: &str| {
        db.exec_in(
            &name,
            &format!("XA START '{name}-{xid}'; {body}; XA END '{name}-{xid}'; XA PREPARE '{name}-{xid}';"),
        )
    };
    let outcome = |what: &str, xid: &str| db.exec(&format!("XA {what} '{name}-{xid}'"));
    xa("early", "INSERT INTO t VALUES (1, 'early')");
    let from = db.master_status();
    outcome("COMMIT", "early");
    xa("in", "INSERT INTO t VALUES (2, 'in')");
    db.exec_in(&name, "INSERT INTO t VALUES (3, 'normal')");
    outcome("COMMIT", "in");
    xa("rb", "INSERT INTO t VALUES (4, 'rb')");
    outcome("ROLLBACK", "rb");
    xa("late", "INSERT INTO t VALUES (5, 'late')");
    let to = db.master_status();
    outcome("COMMIT", "late");
    let yaml = config_yaml(db, &name, &from, &[task("t", "http://127.0.0.1:9/")]);
    let r = replay(&yaml, &["--from", &pos(&from), "--to", &pos(&to)]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // The committed XA's row at its COMMIT, after the normal one; nothing
    // of the rolled back, the unfinished or the earlier one.
    let got: Vec<&Value> = r.payloads.iter().map(|p| &p["data"]["v"]).collect();
    assert_eq!(got, vec!["normal", "in"], "{}", r.summary);
    let hex = |xid: &str| -> String {
        format!("{name}-{xid}")
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    assert_eq!(
        r.summary["summary"]["xa"],
        json!({
            "prepared": 3, "committed": 1, "rolled_back": 1,
            "prepared_without_outcome": [format!("X'{}',X'',1", hex("late"))],
            "outcome_without_prepare": [format!("X'{}',X'',1", hex("early"))],
        }),
        "{}",
        r.summary
    );
    assert!(
        r.stderr.contains("WARN")
            && r.stderr.contains(&hex("late"))
            && r.stderr.contains(&hex("early")),
        "{}",
        r.stderr
    );
    assert_eq!(r.summary["summary"]["changes"], 2);
}
