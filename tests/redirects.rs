//! Webhook redirects are never followed: a 301/302/307/308 answer is a
//! failed attempt (retried, then dead-lettered with the `Location` in the
//! error), and nothing (no body, no signature) reaches the redirect's
//! target. The same for `pikachu run`, `pikachu dlq replay` and
//! `pikachu replay --output webhook`. Real MariaDB, real binary, real
//! receivers.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::pikachu::{config_yaml, Pikachu, TaskSpec};
use support::{MariaDb, Receiver};

/// The redirect answers tested, each from its own receiver.
const REDIRECTS: [u16; 4] = [301, 302, 307, 308];

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One task per redirect status, all on table `t`, each to a receiver
/// answering that status with `Location: <target>/stolen/<status>`.
fn redirecting_tasks(target: &Receiver) -> (Vec<Receiver>, Vec<TaskSpec>) {
    let mut receivers = Vec::new();
    let mut tasks = Vec::new();
    for status in REDIRECTS {
        let r = Receiver::start();
        r.set_redirect(status, &target.url(&format!("/stolen/{status}")));
        let mut t = TaskSpec::new(&format!("r{status}"), "t", &["insert"], &r.url("/hook"));
        t.extra = format!("  secret: \"{SECRET}\"\n");
        tasks.push(t);
        receivers.push(r);
    }
    (receivers, tasks)
}

fn with_retries(yaml: String, max_retries: u32) -> String {
    yaml.replacen(
        "dispatcher:\n",
        &format!("dispatcher:\n  max_retries: {max_retries}\n"),
        1,
    )
}

/// (task, last_status, last_error, attempts) of the dead letters, by task.
fn dead_letters(state: &Path) -> Vec<(String, Option<u16>, String, u32)> {
    let Ok(conn) = rusqlite::Connection::open(state.join("pikachu.db")) else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(
        "SELECT task_id, last_status, last_error, attempts FROM dead_letters ORDER BY task_id",
    ) else {
        return Vec::new();
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .and_then(|rows| rows.collect())
        .unwrap_or_default()
}

fn wait_dead_letters(
    state: &Path,
    n: usize,
    timeout: Duration,
) -> Vec<(String, Option<u16>, String, u32)> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = dead_letters(state);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} dead letters, got {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50)); // poll interval
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_redirect_errors(letters: &[(String, Option<u16>, String, u32)], target: &Receiver) {
    assert_eq!(letters.len(), REDIRECTS.len(), "{letters:?}");
    for (task, status, error, _) in letters {
        let code: u16 = task[1..].parse().expect("task rNNN");
        assert_eq!(*status, Some(code), "{task}: {error}");
        let location = target.url(&format!("/stolen/{code}"));
        assert!(
            error.contains(&location) && error.contains("redirect"),
            "{task}: the error names the Location: {error}"
        );
    }
}

#[test]
fn run_never_follows_a_redirect_and_dead_letters_with_the_location() {
    let db = MariaDb::shared();
    let name = db.fresh_database("redirect");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let target = Receiver::start();
    let (receivers, tasks) = redirecting_tasks(&target);
    let start = db.master_status();
    let yaml = with_retries(config_yaml(db, &name, &start, &tasks), 2);
    let p = Pikachu::start(&yaml);
    db.exec_in(&name, "INSERT INTO t VALUES (1, 1)");

    let state = p.dir.path().join("data");
    let letters = wait_dead_letters(&state, REDIRECTS.len(), Duration::from_secs(60));
    assert_redirect_errors(&letters, &target);
    for (task, _, _, attempts) in &letters {
        assert_eq!(*attempts, 3, "{task}: the first attempt and 2 retries");
    }
    for (r, status) in receivers.iter().zip(REDIRECTS) {
        assert_eq!(r.all_requests().len(), 3, "attempts that got {status}");
    }
    assert!(
        target.all_requests().is_empty(),
        "nothing may reach the redirect target: {:?}",
        target
            .all_requests()
            .iter()
            .map(|q| (q.method.clone(), q.path.clone()))
            .collect::<Vec<_>>()
    );
    assert!(
        p.log().contains(&target.url("/stolen/307")),
        "the log names the Location"
    );
    let config = p.dir.path().join("config.yaml");

    // `dlq replay` does not follow them either.
    let o = Command::new(Pikachu::bin())
        .args(["dlq", "replay", "-config"])
        .arg(&config)
        .current_dir(p.dir.path())
        .output()
        .expect("dlq replay");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&target.url("/stolen/308")), "{}", text(&o));
    assert!(target.all_requests().is_empty(), "dlq replay followed");
    assert_eq!(dead_letters(&state).len(), REDIRECTS.len(), "none removed");
}

#[test]
fn replay_to_webhooks_never_follows_a_redirect() {
    let db = MariaDb::shared();
    let name = db.fresh_database("redirect_replay");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let target = Receiver::start();
    let (_receivers, tasks) = redirecting_tasks(&target);
    let start = db.master_status();
    db.exec_in(&name, "INSERT INTO t VALUES (1, 1)");
    let end = db.master_status();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        with_retries(config_yaml(db, &name, &start, &tasks), 1),
    )
    .expect("config");
    let o = Command::new(Pikachu::bin())
        .arg("replay")
        .arg("-config")
        .arg(&config)
        .args(["--output", "webhook", "--from"])
        .arg(format!("{}:{}", start.0, start.1))
        .arg("--to")
        .arg(format!("{}:{}", end.0, end.1))
        .current_dir(dir.path())
        .output()
        .expect("replay");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(
        summary.contains(&format!("\"failed\":{}", REDIRECTS.len())),
        "{}",
        text(&o)
    );
    assert!(target.all_requests().is_empty(), "replay followed");
    let letters = dead_letters(&dir.path().join("data"));
    assert_redirect_errors(&letters, &target);
}
