//! A broken state store (not a database / corrupt, on a read-only
//! filesystem, on a full disk) stops `pikachu run` with one line naming
//! the file, what is wrong and what to do, exit 1, before anything is
//! delivered; the commands that only read still work where they can; and
//! once fixed as the message says, nothing is lost. Real MariaDB, real
//! binary, real receiver (and a real tmpfs for read-only / full).

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::pikachu::{config_yaml, Pikachu, TaskSpec};
use support::{MariaDb, Receiver, TmpFs};

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

/// Starts `pikachu run` in `dir`, expects exit 1 and returns what it said.
fn run_fails(dir: &Path, yaml: &str) -> String {
    let log = dir.join("pikachu.log");
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    let p = Pikachu::start_in(dir, yaml, &[]);
    let status = p.wait_exit(Duration::from_secs(30));
    let said = std::fs::read_to_string(&log).unwrap_or_default()[before..].to_string();
    assert_eq!(status.code(), Some(1), "{said}");
    let line = said
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {said}"))
        .to_string();
    eprintln!("pikachu said: {line}");
    line
}

/// A table `t` in a fresh database, a receiver, and the config of one task
/// for it starting before the changes the test makes; `state_dir` if given.
fn setup(prefix: &str, state_dir: Option<&Path>) -> (&'static MariaDb, String, Receiver, String) {
    let db = MariaDb::shared();
    let name = db.fresh_database(prefix);
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let r = Receiver::start();
    let start = db.master_status();
    let mut yaml = config_yaml(
        db,
        &name,
        &start,
        &[TaskSpec::new("t", "t", &["insert"], &r.url("/t"))],
    );
    if let Some(dir) = state_dir {
        yaml = yaml.replace(
            "tasks:\n",
            &format!("state_dir: \"{}\"\ntasks:\n", dir.display()),
        );
    }
    (db, name, r, yaml)
}

fn ids(r: &Receiver) -> Vec<i64> {
    r.json_bodies()
        .iter()
        .map(|b| b["data"]["id"].as_i64().expect("id"))
        .collect()
}

#[test]
fn a_corrupt_store_stops_before_delivering_and_the_recovery_it_names_works() {
    let (db, name, r, yaml) = setup("corrupt", None);
    db.exec_in(&name, "INSERT INTO t VALUES (1, 1)");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("data");
    std::fs::create_dir_all(&state).expect("state dir");
    let db_file = state.join("pikachu.db");
    std::fs::write(&db_file, "this is not a SQLite database\n".repeat(200)).expect("garbage");

    let line = run_fails(dir.path(), &yaml);
    assert!(line.contains("data/pikachu.db"), "names the file: {line}");
    assert!(
        line.contains("not a SQLite database, or is corrupt"),
        "{line}"
    );
    assert!(line.contains("restore it from a backup"), "{line}");
    assert!(line.contains("pikachu position set"), "{line}");
    assert!(r.all_requests().is_empty(), "nothing delivered");
    // A reader says the same.
    let o = pikachu(dir.path(), &["dlq", "list"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("or is corrupt"),
        "{}",
        text(&o)
    );

    // Moved away as the message says: the next start begins afresh (from
    // `start`, here before the change) and nothing is lost.
    std::fs::rename(&db_file, state.join("pikachu.db.broken")).expect("mv");
    let mut p = Pikachu::start_in(dir.path(), &yaml, &[]);
    r.wait_for(1, Duration::from_secs(30));
    p.assert_alive();
    assert_eq!(ids(&r), vec![1]);
}

#[test]
fn a_read_only_state_dir_stops_run_readers_still_work_nothing_is_lost() {
    let Some(fs) = TmpFs::mount("4m") else {
        eprintln!("SKIPPED: mounting a tmpfs needs root with CAP_SYS_ADMIN");
        return;
    };
    let state = fs.path().join("state");
    let (db, name, r, yaml) = setup("readonly", Some(&state));
    let dir = tempfile::tempdir().expect("tempdir");
    // A first run delivers row 1 and saves its checkpoint.
    let p = Pikachu::start_in(dir.path(), &yaml, &[]);
    db.exec_in(&name, "INSERT INTO t VALUES (1, 1)");
    r.wait_for(1, Duration::from_secs(30));
    assert!(p.terminate().success());
    db.exec_in(&name, "INSERT INTO t VALUES (2, 2)");

    fs.set_read_only(true);
    let line = run_fails(dir.path(), &yaml);
    assert!(line.contains(&state.display().to_string()), "{line}");
    assert!(line.contains("Read-only file system"), "{line}");
    assert!(line.contains("writable"), "says what to do: {line}");
    assert_eq!(ids(&r), vec![1], "nothing delivered while read-only");
    // Reading works on a read-only filesystem.
    let o = pikachu(dir.path(), &["position", "show"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("mysql-bin."),
        "{}",
        text(&o)
    );
    let o = pikachu(dir.path(), &["dlq", "list"]);
    assert!(o.status.success(), "{}", text(&o));
    // Writing is refused, saying so.
    let o = pikachu(dir.path(), &["dlq", "purge", "--yes"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("read-only"),
        "{}",
        text(&o)
    );

    fs.set_read_only(false);
    let mut p = Pikachu::start_in(dir.path(), &yaml, &[]);
    r.wait_for(2, Duration::from_secs(30));
    p.assert_alive();
    assert_eq!(
        ids(&r),
        vec![1, 2],
        "resumed from the checkpoint: nothing lost"
    );
}

#[test]
fn a_full_disk_stops_run_with_disk_full_and_nothing_is_lost() {
    let Some(fs) = TmpFs::mount("2m") else {
        eprintln!("SKIPPED: mounting a tmpfs needs root with CAP_SYS_ADMIN");
        return;
    };
    let state = fs.path().join("state");
    let (db, name, r, yaml) = setup("diskfull", Some(&state));
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Pikachu::start_in(dir.path(), &yaml, &[]);
    db.exec_in(&name, "INSERT INTO t VALUES (1, 1)");
    r.wait_for(1, Duration::from_secs(30));
    assert!(p.terminate().success());
    db.exec_in(&name, "INSERT INTO t VALUES (2, 2)");

    fs.fill();
    let line = run_fails(dir.path(), &yaml);
    assert!(line.contains(&state.display().to_string()), "{line}");
    assert!(line.contains("disk is full"), "{line}");
    assert_eq!(ids(&r), vec![1], "nothing delivered while full");

    fs.unfill();
    let mut p = Pikachu::start_in(dir.path(), &yaml, &[]);
    r.wait_for(2, Duration::from_secs(30));
    p.assert_alive();
    assert_eq!(
        ids(&r),
        vec![1, 2],
        "resumed from the checkpoint: nothing lost"
    );
}
