//! `pikachu snapshot start|status|cancel` as a user runs them: against the
//! state store, next to a running pikachu and without one; usage errors
//! (unknown task, table not in the task, a bad --where, a table without a
//! key) exit 2 with one clear line; `status --wait` follows progress and
//! ends with the snapshot.

mod support;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pikachu::store::Store;
use pikachu::store::{Advance, SnapshotKind, SnapshotRequest};
use support::pikachu::{config_yaml, Pikachu, TaskSpec};
use support::MariaDb;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn cli(dir: &Path, args: &[&str]) -> Out {
    let out = Command::new(Pikachu::bin())
        .args(["snapshot"])
        .args(args)
        .args(["-config", "config.yaml"])
        .current_dir(dir)
        .output()
        .expect("run pikachu");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A folder with a config of two tasks on `database` (tables `t` and `nokey`).
fn setup(db: &MariaDb, name: &str) -> (tempfile::TempDir, String) {
    db.exec_in(
        name,
        "CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 1), (2, 2);
         CREATE TABLE nokey (v INT);",
    );
    let yaml = config_yaml(
        db,
        name,
        &db.master_status(),
        &[
            TaskSpec::new("a", "t", &["insert"], "http://127.0.0.1:9/"),
            TaskSpec::new("nk", "nokey", &["insert"], "http://127.0.0.1:9/"),
        ],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("config.yaml"), &yaml).expect("config");
    (dir, yaml)
}

fn assert_usage_error(o: &Out, needle: &str) {
    assert_eq!(o.code, 2, "stdout {} stderr {}", o.stdout, o.stderr);
    let line = o.stderr.trim();
    assert!(line.starts_with("error: "), "{line}");
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(line.contains(needle), "{needle:?} not in {line}");
}

#[test]
fn start_status_cancel_without_a_running_pikachu() {
    let db = MariaDb::shared();
    let name = db.fresh_database("snapcli");
    let (dir, _) = setup(db, &name);
    let d = dir.path();

    assert_eq!(cli(d, &["status"]).stdout.trim(), "no snapshots");
    assert_usage_error(
        &cli(d, &["start", "--task", "zz"]),
        "unknown task `zz`; the config's tasks are: a, nk",
    );
    assert_usage_error(&cli(d, &["cancel", "--task", "zz"]), "unknown task `zz`");
    assert_usage_error(
        &cli(d, &["start", "--task", "a", "--table", "other.t"]),
        &format!("table `other.t` is not in task `a` (its table is `{name}.t`)"),
    );
    assert_usage_error(
        &cli(d, &["start", "--task", "a", "--where", "1) OR (1"]),
        "the --where condition `1) OR (1`",
    );
    assert_usage_error(
        &cli(d, &["start", "--task", "a", "--where", "nosuch > 1"]),
        "nosuch",
    );
    assert_usage_error(
        &cli(d, &["start", "--task", "nk"]),
        &format!("`{name}`.`nokey` has no primary key"),
    );
    // Nothing was recorded by the refused requests.
    assert_eq!(cli(d, &["status"]).stdout.trim(), "no snapshots");

    let o = cli(d, &["start", "--task", "a", "--where", "id > 1"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.starts_with("snapshot 1 requested: task a"),
        "{}",
        o.stdout
    );
    let o = cli(
        d,
        &["start", "--task", "a", "--table", "t", "--where", "id > 1"],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("already pending"), "{}", o.stdout);
    let o = cli(d, &["status"]);
    assert_eq!(
        o.stdout.trim(),
        format!("snapshot 1 task a ({name}.t where id > 1, backfill): pending")
    );
    let o = cli(d, &["cancel", "--task", "a"]);
    assert!(
        o.stdout.starts_with("cancelled 1 snapshot(s) of task a"),
        "{}",
        o.stdout
    );
    assert!(cli(d, &["status"]).stdout.contains("): cancelled"));
    assert!(cli(d, &["cancel", "--task", "a"])
        .stdout
        .contains("no pending or running"));
    let o = cli(d, &["status", "--wait"]);
    assert_eq!(
        (o.code, o.stdout.trim()),
        (0, "no pending or running snapshots")
    );
}

#[test]
fn start_works_next_to_a_running_pikachu() {
    let db = MariaDb::shared();
    let name = db.fresh_database("snapcli_run");
    let (dir, yaml) = setup(db, &name);
    let run = Pikachu::start_in(dir.path(), &yaml, &[]);
    run.wait_log("binlog stream opened", Duration::from_secs(30));
    let o = cli(dir.path(), &["start", "--task", "a"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.starts_with("snapshot 1 requested"), "{}", o.stdout);
    assert!(cli(dir.path(), &["status"])
        .stdout
        .contains(&format!("({name}.t, backfill): pending")));
    run.kill();
}

/// `status --wait`, not on a terminal: plain progress lines while the
/// snapshot runs, its end, exit 0 (here the store is advanced by the test,
/// as the running pikachu will).
#[test]
fn status_wait_follows_progress_until_the_end() {
    let db = MariaDb::shared();
    let name = db.fresh_database("snapcli_wait");
    let (dir, _) = setup(db, &name);
    let mut store = Store::open(&dir.path().join("data")).expect("store");
    let (id, _) = store
        .request_snapshot(&SnapshotRequest {
            task_id: "a".into(),
            table: Some(format!("{name}.t")),
            condition: None,
            kind: SnapshotKind::Backfill,
        })
        .expect("request");
    assert!(store.start_snapshot(id).expect("start"));
    let advance = |store: &mut Store, rows: u64, done: bool| {
        assert!(store
            .advance_snapshot(&Advance {
                snapshot_id: id,
                db: &name,
                table: "t",
                last_key: Some("[{\"int\":1}]"),
                rows,
                rows_estimated: 2,
                table_done: done,
            })
            .expect("advance"));
    };
    advance(&mut store, 1, false);
    let mut child = Command::new(Pikachu::bin())
        .args(["snapshot", "status", "--wait", "-config", "config.yaml"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    let wait_for = |needle: &str, lines: &mut Vec<String>| loop {
        if lines.iter().any(|l: &String| l.contains(needle)) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => panic!("no line with {needle:?}; got {lines:?}"),
        }
    };
    wait_for(
        &format!("snapshot {id} {name}.t: 1 / ~2 rows (50%)"),
        &mut lines,
    );
    advance(&mut store, 1, true);
    assert!(store.finish_snapshot(id, None).expect("finish"));
    wait_for(
        &format!("snapshot {id} task a ({name}.t, backfill): done"),
        &mut lines,
    );
    let status = child.wait().expect("exit");
    assert!(status.success(), "{status:?}; {lines:?}");
}
