//! The binlog history a checkpoint belongs to: a first start is crash-safe
//! from its first moment (the resolved `start` is saved before the stream
//! opens), change ids stay unique when the server's binlog is reset (GTIDs
//! and file names restart), and a checkpoint is never resumed on a reset or
//! recreated server as if nothing had happened.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::pikachu::{config_yaml, Pikachu, TaskSpec};
use support::{MariaDb, Receiver, ServerOptions};

/// A config reading table `t` of `name` with `start: latest` (no fixed
/// position) and a long checkpoint interval, so nothing but the first start
/// itself can have saved a checkpoint.
fn latest_yaml(db: &MariaDb, name: &str, url: &str) -> String {
    let y = config_yaml(
        db,
        name,
        &("unused".into(), 4),
        &[TaskSpec::new(
            "t",
            "t",
            &["insert", "update", "delete"],
            url,
        )],
    );
    let start = y.find("start:\n").expect("start block");
    let end = y[start..].find("tasks:\n").expect("tasks") + start;
    format!(
        "{}start: latest\ncheckpoint:\n  interval: \"1h\"\n{}",
        &y[..start],
        &y[end..]
    )
}

fn ids(r: &Receiver) -> Vec<String> {
    r.received()
        .iter()
        .filter(|r| r.succeeded())
        .filter_map(|r| r.header("webhook-id").map(str::to_string))
        .collect()
}

/// Row ids (`data.id`) delivered with a 2xx.
fn row_ids(r: &Receiver) -> HashSet<i64> {
    r.received()
        .iter()
        .filter(|r| r.succeeded())
        .filter_map(|r| r.json()["data"]["id"].as_i64())
        .collect()
}

/// Waits until the server has been up for `secs` seconds, so that a binlog
/// file it creates from now on has another creation time (to the second)
/// than the ones it created at start.
fn wait_uptime(db: &MariaDb, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up: u64 = db
            .query_value(
                "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'UPTIME'",
            )
            .parse()
            .expect("uptime");
        if up >= secs {
            return;
        }
        assert!(Instant::now() < deadline, "uptime stuck at {up}");
        std::thread::sleep(Duration::from_millis(100)); // poll interval
    }
}

#[test]
fn a_crash_in_the_first_seconds_of_the_first_start_loses_nothing() {
    let db = MariaDb::shared();
    let name = db.fresh_database("firstrun");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let receiver = Receiver::start();
    // Nothing gets delivered: the changes are all still unsettled at the kill.
    receiver.set_status(Some(503));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = latest_yaml(db, &name, &receiver.url("/t"));
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    p.wait_log("binlog stream opened", Duration::from_secs(30));
    let first_log = p.log();
    for i in 1..=30 {
        db.exec_in(&name, &format!("INSERT INTO t VALUES ({i}, 0)"));
    }
    receiver.wait_for_requests(1, Duration::from_secs(30));
    // Well within the first checkpoint interval (1 h): only the first start
    // can have saved a position.
    p.kill();
    receiver.set_status(None);
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    p.wait_log("resuming from the checkpoint", Duration::from_secs(30));
    // Delivery runs keys in parallel: wait for all of them, up to a deadline.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = row_ids(&receiver);
        let missing: Vec<i64> = (1..=30).filter(|i| !got.contains(i)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rows written after the first start resolved `latest` were lost: {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(20)); // poll interval
    }
    assert!(
        first_log.contains("WARN") && first_log.contains("no state directory"),
        "a first start says so: {first_log}"
    );
}

#[test]
fn change_ids_stay_unique_across_reset_master_and_the_reset_is_not_mistaken_for_a_purge() {
    let db = MariaDb::start(ServerOptions::default());
    let name = db.fresh_database("reset");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = latest_yaml(&db, &name, &receiver.url("/t"));
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    p.wait_log("binlog stream opened", Duration::from_secs(30));
    for i in 1..=20 {
        db.exec_in(&name, &format!("INSERT INTO t VALUES ({i}, 0)"));
    }
    receiver.wait_until(Duration::from_secs(60), |r| {
        r.iter().filter(|r| r.succeeded()).count() >= 20
    });
    assert!(p.terminate().success());
    let before: HashSet<String> = ids(&receiver).into_iter().collect();
    assert_eq!(before.len(), 20);

    wait_uptime(&db, 2);
    db.exec("RESET MASTER");
    // The same GTIDs (0-1-1…) and the same file name come again.
    for i in 21..=40 {
        db.exec_in(&name, &format!("INSERT INTO t VALUES ({i}, 0)"));
    }
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    let status = p.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(dir.path().join("pikachu.log")).expect("log");
    let last = log
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .expect("error line");
    assert!(last.contains("binary logs were reset"), "{last}");
    assert!(last.contains("position set earliest"), "{last}");
    assert!(
        !last.contains(":0 "),
        "no position 0 in the message: {last}"
    );
    assert!(!last.contains("position set latest"), "{last}");

    let out = std::process::Command::new(Pikachu::bin())
        .args(["position", "set", "earliest", "-config"])
        .arg(dir.path().join("config.yaml"))
        .current_dir(dir.path())
        .output()
        .expect("position set");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    receiver.wait_until(Duration::from_secs(60), |r| {
        r.iter().filter(|r| r.succeeded()).count() >= 40
    });
    drop(p);
    let all = ids(&receiver);
    let after: HashSet<String> = all[20..].iter().cloned().collect();
    assert_eq!(after.len(), 20);
    let collisions: Vec<&String> = after.intersection(&before).collect();
    assert!(
        collisions.is_empty(),
        "ids of new changes repeat ids of earlier ones: {collisions:?}"
    );
    let rows = row_ids(&receiver);
    assert_eq!(rows, (1..=40).collect::<HashSet<i64>>());

    // The same changes read by a pikachu with a fresh state from the start
    // of the new history get the same ids (deterministic without state).
    let second = Receiver::start();
    let dir2 = tempfile::tempdir().expect("tempdir");
    let cfg2 =
        latest_yaml(&db, &name, &second.url("/t")).replace("start: latest", "start: earliest");
    let _p2 = Pikachu::start_in(dir2.path(), &cfg2, &[]);
    second.wait_until(Duration::from_secs(60), |r| {
        r.iter().filter(|r| r.succeeded()).count() >= 20
    });
    let again: HashSet<String> = ids(&second).into_iter().collect();
    assert_eq!(again, after, "a fresh pikachu derives the same ids");
}

#[test]
fn a_recreated_server_is_not_taken_for_the_one_the_checkpoint_came_from() {
    let db = MariaDb::start(ServerOptions::default());
    let schema = "CREATE TABLE t (id INT PRIMARY KEY, v INT)";
    let name = "recreated";
    db.exec(&format!("CREATE DATABASE {name}"));
    db.exec_in(name, schema);
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = latest_yaml(&db, name, &receiver.url("/t"));
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    p.wait_log("binlog stream opened", Duration::from_secs(30));
    for i in 1..=5 {
        db.exec_in(name, &format!("INSERT INTO t VALUES ({i}, 0)"));
    }
    receiver.wait_until(Duration::from_secs(60), |r| {
        r.iter().filter(|r| r.succeeded()).count() >= 5
    });
    assert!(p.terminate().success());

    // The same server id, an empty binlog, and the same statements again:
    // the saved position falls on an event boundary of the new binlog.
    wait_uptime(&db, 2);
    db.recreate();
    db.exec(&format!("CREATE DATABASE {name}"));
    db.exec_in(name, schema);
    for i in 1..=5 {
        db.exec_in(name, &format!("INSERT INTO t VALUES ({i}, 0)"));
    }
    for i in 6..=10 {
        db.exec_in(name, &format!("INSERT INTO t VALUES ({i}, 0)"));
    }
    let check = std::process::Command::new(Pikachu::bin())
        .args(["check", "-config"])
        .arg(dir.path().join("config.yaml"))
        .current_dir(dir.path())
        .output()
        .expect("check");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "check fails: {stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL checkpoint") && l.contains("recreated")),
        "{stdout}"
    );

    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    let status = p.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(dir.path().join("pikachu.log")).expect("log");
    let last = log
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .expect("error line");
    assert!(last.contains("the server was recreated"), "{last}");
    assert!(last.contains("position set earliest"), "{last}");
    assert_eq!(
        receiver.received().iter().filter(|r| r.succeeded()).count(),
        5,
        "nothing of the new server was delivered as a continuation of the old one"
    );
}

#[test]
fn a_reset_while_pikachu_reads_stops_it_with_the_way_on() {
    let db = MariaDb::start(ServerOptions::default());
    let name = db.fresh_database("livereset");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = latest_yaml(&db, &name, &receiver.url("/t"));
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    p.wait_log("binlog stream opened", Duration::from_secs(30));
    db.exec_in(&name, "INSERT INTO t VALUES (1, 0)");
    receiver.wait_for(1, Duration::from_secs(30));
    db.exec("RESET MASTER");
    db.exec_in(&name, "INSERT INTO t VALUES (2, 0)");
    let status = p.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(dir.path().join("pikachu.log")).expect("log");
    let last = log
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .expect("error line");
    assert!(last.contains("binary logs were reset"), "{last}");
    assert!(last.contains("position set earliest"), "{last}");
    // The new history's change was not taken for a continuation of the old one.
    assert_eq!(receiver.received().len(), 1);
}
