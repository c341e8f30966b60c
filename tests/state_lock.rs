//! One process at a time owns a state directory: a second `pikachu run` on
//! it exits 2 naming the first one's pid; commands that change the
//! checkpoint (`position set|reset`, `--reset-position`) are refused while
//! it runs; commands that only read (`dlq list|show`, `position show`) and
//! `dlq replay|purge` work next to it; and a lock left by a process killed
//! with SIGKILL does not block the next start. Real MariaDB, real binary.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::pikachu::{config_yaml, Pikachu, TaskSpec};
use support::{MariaDb, Receiver};

/// `pikachu ARGS -config config.yaml` in `dir`.
fn pikachu(dir: &Path, args: &[&str]) -> Output {
    Command::new(Pikachu::bin())
        .args(args)
        .args(["-config", "config.yaml"])
        .current_dir(dir)
        .output()
        .expect("run pikachu")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts `o` was refused because `pid` holds the state directory.
fn assert_refused(o: &Output, pid: u32) {
    assert_eq!(o.status.code(), Some(2), "{}", text(o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("pid {pid}, pikachu run")), "{err}");
    assert!(err.contains("in use by another pikachu process"), "{err}");
    assert!(err.contains("data"), "names the state dir: {err}");
}

#[test]
fn one_process_owns_the_state_dir_and_a_killed_ones_lock_does_not_block() {
    let db = MariaDb::shared();
    let name = db.fresh_database("lock");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let r = Receiver::start();
    let start = db.master_status();
    let yaml = config_yaml(
        db,
        &name,
        &start,
        &[TaskSpec::new("t", "t", &["insert"], &r.url("/t"))],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Pikachu::start_in(dir.path(), &yaml, &[]);
    db.exec_in(&name, "INSERT INTO t VALUES (1, 1)");
    r.wait_for(1, Duration::from_secs(30));

    // A second run: exit 2 within seconds, naming the first one's pid.
    let refused_run = |args: &[&str]| {
        let log = dir.path().join("pikachu.log");
        let before = std::fs::read_to_string(&log).unwrap_or_default().len();
        let second = Pikachu::start_in(dir.path(), &yaml, args);
        let status = second.wait_exit(Duration::from_secs(10));
        let said = std::fs::read_to_string(&log).unwrap_or_default()[before..].to_string();
        assert_eq!(status.code(), Some(2), "{args:?}: {said}");
        assert!(
            said.contains(&format!("pid {}, pikachu run", first.pid())),
            "{said}"
        );
        assert!(said.contains("in use by another pikachu process"), "{said}");
    };
    refused_run(&[]);
    refused_run(&["--reset-position"]);

    // Writing the checkpoint under a running process: refused.
    assert_refused(
        &pikachu(dir.path(), &["position", "set", "latest"]),
        first.pid(),
    );
    assert_refused(&pikachu(dir.path(), &["position", "reset"]), first.pid());

    // Reading, and dead-letter commands: fine.
    let o = pikachu(dir.path(), &["position", "show"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = pikachu(dir.path(), &["dlq", "list"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = pikachu(dir.path(), &["dlq", "replay"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = pikachu(dir.path(), &["dlq", "purge", "--yes"]);
    assert!(o.status.success(), "{}", text(&o));

    // Killed: the kernel drops its lock; the next start runs and delivers.
    first.kill();
    let mut next = Pikachu::start_in(dir.path(), &yaml, &[]);
    db.exec_in(&name, "INSERT INTO t VALUES (2, 2)");
    // (At least once: row 1 may come again first.)
    r.wait_until(Duration::from_secs(30), |got| {
        got.iter().any(|q| q.json()["data"]["id"] == 2)
    });
    next.assert_alive();
    // And it holds the lock in turn.
    assert_refused(&pikachu(dir.path(), &["position", "reset"]), next.pid());
    let status = next.terminate();
    assert!(status.success(), "{status}");
    // Once it stopped, the checkpoint may be changed.
    let o = pikachu(dir.path(), &["position", "reset"]);
    assert!(o.status.success(), "{}", text(&o));
}
