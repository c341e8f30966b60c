//! Every task on its own: a task whose endpoint hangs or refuses
//! connections spills its changes to its durable backlog
//! (`./data/backlog/`), while the binlog, the checkpoint and the other
//! task go on; when the endpoint is back it gets every change, in per-row
//! order, also across a SIGKILL. Real MariaDB, real pikachu process, real
//! HTTP receivers.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::isolation::{
    backlog_rows, checkpoint, dead_letter_ids, dead_letters, distinct_ids, ids, wait_until,
    Versions,
};
use support::pikachu::{config_yaml, Pikachu, TaskSpec};
use support::{MariaDb, Receiver};

/// The workload: 3,000 rows, then two update rounds over all of them.
const W: Versions = Versions {
    first: 1,
    rows: 3000,
    rounds: 2,
};
/// A second workload on other rows.
const W2: Versions = Versions {
    first: 100_000,
    ..W
};
/// Changes of one workload.
const TOTAL: usize = (W.rows * (W.rounds + 1)) as usize;

/// Two tasks on the same table: `a` (on_failure: block, so that a long
/// outage never dead-letters; breaker cool-downs of at most 2 s) and `b`;
/// small engine queues so that a stuck task fills its own quickly.
fn config(db: &MariaDb, name: &str, start: &(String, u64), a: &Receiver, b: &Receiver) -> String {
    let mut ta = TaskSpec::new("a", "t", &["insert", "update"], &a.url("/a"));
    // A short breaker cap: A's recovery is seen within 2 s, however long
    // the outage lasted (the default cap is 60 s).
    ta.extra = "  on_failure: \"block\"\n  breaker:\n    max_cooldown: \"2s\"\n".into();
    let tb = TaskSpec::new("b", "t", &["insert", "update"], &b.url("/b"));
    config_yaml(db, name, start, &[ta, tb]).replace(
        "dispatcher:\n",
        "dispatcher:\n  queue_size: 200\n  worker_count: 8\n",
    )
}

#[test]
fn a_hanging_endpoint_holds_back_neither_the_binlog_nor_the_other_task() {
    // A accepts and never answers (until it is reset).
    isolated("isolate_hang", |a| a.hang_next(10_000_000), |a| a.reset());
}

#[test]
fn a_refusing_endpoint_holds_back_neither_the_binlog_nor_the_other_task() {
    isolated("isolate_refuse", |a| a.stop(), |a| a.start_again());
}

#[test]
fn an_endpoint_answering_500_holds_back_neither_the_binlog_nor_the_other_task() {
    isolated(
        "isolate_500",
        |a| a.set_status(Some(500)),
        |a| a.set_status(None),
    );
}

/// A's endpoint is out (`outage`) while the workload is written; B gets
/// everything, the checkpoint reaches the end, A's changes are on disk;
/// then A is back (`recover`) and gets every change in per-row order.
fn isolated(prefix: &str, outage: impl Fn(&Receiver), recover: impl Fn(&Receiver)) {
    let db = MariaDb::shared();
    let name = db.fresh_database(prefix);
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let ra = Receiver::start();
    let rb = Receiver::start();
    outage(&ra);
    let start = db.master_status();
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Pikachu::start_in(dir.path(), &config(db, &name, &start, &ra, &rb), &[]);
    W.write(db, &name, "t");
    let end = db.master_status();
    // B gets everything although A holds 200 changes in memory at most.
    let got_b = rb.wait_for(TOTAL, Duration::from_secs(120));
    assert_eq!(distinct_ids(&got_b), TOTAL);
    W.assert_order(&got_b);
    // The checkpoint reaches the end of the workload: A's changes are
    // settled by being in its backlog.
    wait_until(
        Duration::from_secs(30),
        "the checkpoint to reach the end",
        || checkpoint(dir.path()).is_some_and(|c| c >= end),
    );
    assert!(
        backlog_rows(dir.path()) >= (TOTAL - 400) as i64,
        "A's backlog holds its changes: {} rows",
        backlog_rows(dir.path())
    );
    assert!(
        p.log().contains("its changes go to its backlog"),
        "{}",
        p.log()
    );
    // `pikachu task list` shows the running tasks: B's rate, A's backlog
    // and last error.
    wait_until(Duration::from_secs(30), "task list's live figures", || {
        let (code, out, _) = task_cli(dir.path(), &["list"]);
        let (a, b) = list_lines(&out);
        code == 0
            && a.contains("running (pid")
            && a.contains("last error")
            && !a.contains("backlog 0 changes")
            && rate_of(b) > 0.0
    });
    // A is back: it gets every change, in per-row order, from the backlog.
    recover(&ra);
    wait_until(Duration::from_secs(120), "every change at A", || {
        distinct_ids(&ra.received()) >= TOTAL
    });
    W.assert_order(&ra.received());
    wait_until(Duration::from_secs(30), "the backlog to empty", || {
        backlog_rows(dir.path()) == 0
    });
    wait_until(Duration::from_secs(30), "the lane to catch up", || {
        p.log().contains("the task caught up")
    });
}

#[test]
fn sigkill_with_a_backlog_on_disk_loses_nothing_and_sends_b_nothing_twice() {
    let db = MariaDb::shared();
    let name = db.fresh_database("isolate_kill");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let ra = Receiver::start();
    let rb = Receiver::start();
    // A refuses connections.
    ra.stop();
    let start = db.master_status();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(db, &name, &start, &ra, &rb);
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    W.write(db, &name, "t");
    let end = db.master_status();
    rb.wait_for(TOTAL, Duration::from_secs(120));
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoint(dir.path()).is_none_or(|c| c < end) {
        assert!(
            Instant::now() < deadline,
            "the checkpoint stays at {:?}, not {end:?}; backlog rows {}; log:\n{}",
            checkpoint(dir.path()),
            backlog_rows(dir.path()),
            p.log()
        );
        std::thread::sleep(Duration::from_millis(50)); // poll interval
    }
    let on_disk = backlog_rows(dir.path());
    assert!(on_disk >= (TOTAL - 400) as i64, "backlog rows: {on_disk}");
    p.kill();
    let b_before = rb.received().len();
    ra.start_again();
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    wait_until(Duration::from_secs(120), "every change at A", || {
        distinct_ids(&ra.received()) >= TOTAL
    });
    W.assert_order(&ra.received());
    // B had everything settled before the kill: nothing again.
    rb.assert_no_more_requests(Duration::from_secs(2));
    assert_eq!(rb.received().len(), b_before);
    wait_until(Duration::from_secs(30), "the backlog to empty", || {
        backlog_rows(dir.path()) == 0
    });
    drop(p);
}

/// The config with `backlog:` for task `a` (1 MiB, the smallest allowed).
fn config_full(
    db: &MariaDb,
    name: &str,
    start: &(String, u64),
    a: &Receiver,
    b: &Receiver,
    when: &str,
) -> String {
    config(db, name, start, a, b).replace(
        "  on_failure: \"block\"\n",
        &format!(
            "  on_failure: \"block\"\n  backlog:\n    max_bytes: 1048576\n    when_full: \"{when}\"\n"
        ),
    )
}

#[test]
fn a_full_backlog_with_block_holds_the_reader_until_the_task_delivers() {
    let db = MariaDb::shared();
    let name = db.fresh_database("isolate_full_block");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let ra = Receiver::start();
    let rb = Receiver::start();
    ra.stop();
    let start = db.master_status();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_full(db, &name, &start, &ra, &rb, "block");
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    W.write(db, &name, "t");
    // ~300-byte payloads: 1 MiB holds about a third of the workload.
    wait_until(Duration::from_secs(60), "the full-backlog warning", || {
        p.log().contains("the task's backlog is full")
    });
    // What was on its way to B still arrives; then B is held too.
    let mut held = rb.received().len();
    let mut still_since = Instant::now();
    wait_until(
        Duration::from_secs(30),
        "B to be held with the reader",
        || {
            let now = rb.received().len();
            if now != held {
                (held, still_since) = (now, Instant::now());
            }
            still_since.elapsed() >= Duration::from_secs(1)
        },
    );
    assert!(held < TOTAL, "B is held with the reader: {held} of {TOTAL}");
    assert_eq!(dead_letters(dir.path()), 0, "block dead-letters nothing");
    // A is back: the backlog drains, the reader goes on, both get it all.
    ra.start_again();
    wait_until(Duration::from_secs(120), "every change at B", || {
        distinct_ids(&rb.received()) >= TOTAL
    });
    wait_until(Duration::from_secs(120), "every change at A", || {
        distinct_ids(&ra.received()) >= TOTAL
    });
    W.assert_order(&ra.received());
    W.assert_order(&rb.received());
}

#[test]
fn a_full_backlog_with_dead_letter_lets_the_reader_go_on() {
    let db = MariaDb::shared();
    let name = db.fresh_database("isolate_full_dl");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let ra = Receiver::start();
    let rb = Receiver::start();
    ra.stop();
    let start = db.master_status();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_full(db, &name, &start, &ra, &rb, "dead_letter");
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    W.write(db, &name, "t");
    rb.wait_for(TOTAL, Duration::from_secs(120));
    wait_until(
        Duration::from_secs(30),
        "dead letters of the full backlog",
        || dead_letters(dir.path()) > 0,
    );
    assert!(p
        .log()
        .contains("its new changes go to the dead-letter store"));
    let dead = dead_letters(dir.path()) as usize;
    let on_disk = backlog_rows(dir.path()) as usize;
    assert!(
        on_disk < TOTAL && dead < TOTAL,
        "backlog {on_disk}, dead letters {dead}"
    );
    // A is back: it gets what its backlog held; with the dead letters that
    // is every change. Changes still on their way to A's lane when the
    // counts above were read may be dead-lettered later: the dead letters
    // are read again at the end.
    ra.start_again();
    wait_until(Duration::from_secs(60), "the backlog to empty", || {
        backlog_rows(dir.path()) == 0
    });
    let settled = || (ids(&ra.received()), dead_letter_ids(dir.path()));
    wait_until(Duration::from_secs(30), "A's changes", || {
        let (got, dead) = settled();
        got.union(&dead).count() >= TOTAL
    });
    let (got, dead) = settled();
    let both: Vec<_> = got.intersection(&dead).take(5).collect();
    assert!(both.is_empty(), "delivered and dead-lettered: {both:?}");
    assert_eq!(
        got.len() + dead.len(),
        TOTAL,
        "each change delivered or dead-lettered, once"
    );
}

/// The lines of tasks `a` and `b` in `pikachu task list`'s output.
fn list_lines(out: &str) -> (&str, &str) {
    let of = |t: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(t))
            .unwrap_or("")
    };
    (of("a"), of("b"))
}

/// The `N changes/s` of a `task list` line (0 when absent).
fn rate_of(line: &str) -> f64 {
    line.split(" changes/s")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0)
}

/// `pikachu task ARGS -config dir/config.yaml` in `dir`: (exit code, stdout, stderr).
fn task_cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(Pikachu::bin())
        .arg("task")
        .args(args)
        .arg("-config")
        .arg(dir.join("config.yaml"))
        .current_dir(dir)
        .output()
        .expect("run pikachu task");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn pause_and_resume_against_a_running_and_a_stopped_pikachu() {
    let db = MariaDb::shared();
    let name = db.fresh_database("isolate_pause");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let ra = Receiver::start();
    let rb = Receiver::start();
    let start = db.master_status();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(db, &name, &start, &ra, &rb);
    std::fs::write(dir.path().join("config.yaml"), &cfg).expect("config");
    // Unknown task: a usage error that names the tasks.
    let (code, _, err) = task_cli(dir.path(), &["pause", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no task `nope`") && err.contains("a, b"),
        "{err}"
    );
    // Listed while nothing runs: not running, nothing in the backlogs.
    let (code, out, err) = task_cli(dir.path(), &["list"]);
    assert_eq!(code, 0, "{out}{err}");
    let (a, b) = list_lines(&out);
    assert!(
        a.contains("not running") && a.contains("backlog 0 changes"),
        "{out}"
    );
    assert!(b.contains("active") && b.contains("not running"), "{out}");
    // Paused while stopped: the start takes it up.
    let (code, out, err) = task_cli(dir.path(), &["pause", "a"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("task a paused"), "{out}");
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    wait_until(Duration::from_secs(30), "the pause to be taken up", || {
        p.log().contains("task paused")
    });
    W.write(db, &name, "t");
    rb.wait_for(TOTAL, Duration::from_secs(120));
    assert!(ra.all_requests().is_empty(), "a paused task sends nothing");
    wait_until(Duration::from_secs(30), "A's changes on disk", || {
        backlog_rows(dir.path()) >= (TOTAL - 400) as i64
    });
    let (code, out, _) = task_cli(dir.path(), &["list"]);
    assert_eq!(code, 0);
    let line_a = out
        .lines()
        .find(|l| l.starts_with("a "))
        .unwrap_or_default();
    assert!(line_a.contains("paused"), "{out}");
    assert!(!line_a.contains("backlog 0 changes"), "{out}");
    // Resumed while running: everything, in per-row order.
    let (code, out, err) = task_cli(dir.path(), &["resume", "a"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until(Duration::from_secs(120), "every change at A", || {
        distinct_ids(&ra.received()) >= TOTAL
    });
    W.assert_order(&ra.received());
    // Paused while running.
    let (code, _, _) = task_cli(dir.path(), &["pause", "a"]);
    assert_eq!(code, 0);
    wait_until(Duration::from_secs(30), "the second pause", || {
        p.log().matches("task paused").count() >= 2
    });
    let before = ra.all_requests().len();
    W2.write(db, &name, "t");
    rb.wait_for(2 * TOTAL, Duration::from_secs(120));
    assert_eq!(ra.all_requests().len(), before, "nothing sent while paused");
    let (code, _, _) = task_cli(dir.path(), &["resume", "a"]);
    assert_eq!(code, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while distinct_ids(&ra.received()) < 2 * TOTAL {
        assert!(
            Instant::now() < deadline,
            "the second batch at A: {} of {}; backlog {}; log:\n{}",
            distinct_ids(&ra.received()),
            2 * TOTAL,
            backlog_rows(dir.path()),
            p.log()
                .lines()
                .filter(|l| !l.contains("DEBUG"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50)); // poll interval
    }
    W2.assert_order(&ra.received());
}
