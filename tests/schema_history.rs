//! The schema history against real MariaDB servers without column names in
//! the binlog (`binlog_row_metadata` MINIMAL and NO_LOG): pikachu is
//! stopped, the table is altered, and on catch-up every change still gets
//! the columns of its own time; what pikachu cannot know stops it with a
//! clear error instead of a wrong delivery; a crash right after a DDL
//! leaves a consistent history. Also: with FULL metadata nothing changes,
//! and a statement-format DML on a watched table is a WARN.

mod support;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use support::pikachu::{config_yaml, Pikachu, TaskSpec};
use support::{MariaDb, Receiver, ServerOptions};

const WAIT: Duration = Duration::from_secs(30);

/// One MINIMAL server for this file (each test has its own database).
fn minimal() -> &'static MariaDb {
    static DB: OnceLock<MariaDb> = OnceLock::new();
    DB.get_or_init(|| MariaDb::start(ServerOptions::with_args(["--binlog-row-metadata=MINIMAL"])))
}

/// A watched table `users` in a fresh database, a receiver, a config and a
/// folder kept across restarts.
struct Setup {
    db: &'static MariaDb,
    name: String,
    receiver: Receiver,
    yaml: String,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(db: &'static MariaDb, prefix: &str, create: &str) -> Setup {
        let name = db.fresh_database(prefix);
        db.exec_in(&name, create);
        let receiver = Receiver::start();
        let start = db.master_status();
        let mut yaml = config_yaml(
            db,
            &name,
            &start,
            &[TaskSpec::new(
                "users",
                "users",
                &["insert", "update", "delete"],
                &receiver.url("/users"),
            )],
        );
        // No periodic checkpoint: a SIGKILL resumes from the start.
        yaml.push_str("checkpoint:\n  interval: \"1h\"\n");
        Setup {
            db,
            name,
            receiver,
            yaml,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn start(&self) -> Pikachu {
        Pikachu::start_in(self.dir.path(), &self.yaml, &[])
    }

    /// Runs pikachu until its stream is open, then stops it (SIGTERM).
    fn run_and_stop(&self) {
        let p = self.start();
        p.wait_log("binlog stream opened", WAIT);
        let status = p.terminate();
        assert!(status.success(), "{status}");
    }

    fn sql(&self, sql: &str) {
        self.db.exec_in(&self.name, sql);
    }

    /// The `data` of the first `n` deliveries, by `id`, duplicates removed.
    fn rows(&self, n: usize) -> Vec<Value> {
        self.receiver.wait_until(WAIT, |r| distinct_ids(r) >= n);
        let mut rows: Vec<Value> = self
            .receiver
            .json_bodies()
            .into_iter()
            .map(|b| b["data"].clone())
            .collect();
        rows.sort_by_key(|d| d["id"].as_i64());
        rows.dedup();
        rows
    }
}

fn distinct_ids(r: &[support::Received]) -> usize {
    let mut ids: Vec<i64> = r
        .iter()
        .filter(|x| x.succeeded())
        .filter_map(|x| x.json()["data"]["id"].as_i64())
        .collect();
    ids.sort();
    ids.dedup();
    ids.len()
}

/// (a): drop a column and add one of the same type at the same place.
fn drop_and_add_while_stopped(db: &'static MariaDb, prefix: &str) {
    let s = Setup::new(
        db,
        prefix,
        "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(64), n INT)",
    );
    s.run_and_stop();
    s.sql(
        "INSERT INTO users VALUES (1, 'ann@example.com', 10);
         ALTER TABLE users DROP COLUMN email;
         ALTER TABLE users ADD COLUMN secret_col VARCHAR(64) AFTER id;
         INSERT INTO users VALUES (2, 'hush', 20);",
    );
    let mut p = s.start();
    let rows = s.rows(2);
    assert_eq!(
        rows,
        vec![
            json!({"id": 1, "email": "ann@example.com", "n": 10}),
            json!({"id": 2, "secret_col": "hush", "n": 20}),
        ]
    );
    p.assert_alive();
    assert!(p.terminate().success());
}

#[test]
fn minimal_metadata_catch_up_after_drop_and_add_uses_the_old_names() {
    drop_and_add_while_stopped(minimal(), "sh_min_drop_add");
}

#[test]
fn no_log_metadata_catch_up_after_drop_and_add_uses_the_old_names() {
    static DB: OnceLock<MariaDb> = OnceLock::new();
    let db = DB
        .get_or_init(|| MariaDb::start(ServerOptions::with_args(["--binlog-row-metadata=NO_LOG"])));
    assert_eq!(db.variable("binlog_row_metadata"), "NO_LOG");
    drop_and_add_while_stopped(db, "sh_nolog_drop_add");
}

#[test]
fn full_metadata_catch_up_after_drop_and_add_is_unchanged() {
    drop_and_add_while_stopped(MariaDb::shared(), "sh_full_drop_add");
}

/// (b): a type change, then a change of name and type, between inserts.
#[test]
fn type_changes_while_stopped_decode_each_row_with_its_type() {
    let s = Setup::new(
        minimal(),
        "sh_types",
        "CREATE TABLE users (id INT PRIMARY KEY, n INT)",
    );
    s.run_and_stop();
    s.sql(
        "INSERT INTO users VALUES (1, 5);
         ALTER TABLE users MODIFY COLUMN n VARCHAR(20);
         INSERT INTO users VALUES (2, '0020');
         ALTER TABLE users CHANGE n m BIGINT UNSIGNED;
         INSERT INTO users VALUES (3, 18446744073709551615);",
    );
    let mut p = s.start();
    assert_eq!(
        s.rows(3),
        vec![
            json!({"id": 1, "n": 5}),
            json!({"id": 2, "n": "0020"}),
            json!({"id": 3, "m": 18446744073709551615u64}),
        ]
    );
    p.assert_alive();
}

/// (c): an online-schema-change swap (CREATE … LIKE, ALTER the copy,
/// RENAME TABLE both) and back with ALTER … RENAME.
#[test]
fn renames_while_stopped_follow_the_table_that_gets_the_name() {
    let s = Setup::new(
        minimal(),
        "sh_rename",
        "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(64), n INT)",
    );
    s.run_and_stop();
    s.sql(
        "INSERT INTO users VALUES (1, 'ann@example.com', 10);
         CREATE TABLE users_new LIKE users;
         ALTER TABLE users_new DROP COLUMN email, ADD COLUMN secret_col VARCHAR(64) AFTER id;
         RENAME TABLE users TO users_old, users_new TO users;
         INSERT INTO users VALUES (2, 'hush', 20);
         ALTER TABLE users RENAME TO users_gone;
         ALTER TABLE users_old RENAME TO users;
         INSERT INTO users VALUES (3, 'bob@example.com', 30);",
    );
    let mut p = s.start();
    assert_eq!(
        s.rows(3),
        vec![
            json!({"id": 1, "email": "ann@example.com", "n": 10}),
            json!({"id": 2, "secret_col": "hush", "n": 20}),
            json!({"id": 3, "email": "bob@example.com", "n": 30}),
        ]
    );
    p.assert_alive();
}

/// The line of the log that says why pikachu stopped.
fn error_line(log: &str) -> String {
    log.lines()
        .rev()
        .find(|l| l.contains("cannot tell which columns"))
        .unwrap_or_else(|| panic!("no error line in the log:\n{log}"))
        .to_string()
}

fn assert_stops_and_delivers_nothing_wrong(s: &Setup, allowed: &[Value]) -> String {
    let p = s.start();
    let log_path = s.dir.path().join("pikachu.log");
    let status = p.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "{}", read(&log_path));
    for body in s.receiver.json_bodies() {
        assert!(
            allowed.contains(&body["data"]),
            "delivered {body}, expected only {allowed:?}"
        );
    }
    error_line(&read(&log_path))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// (d): a DDL the parser cannot apply, followed by one it can: the rows in
/// between have no knowable definition.
#[test]
fn a_ddl_that_cannot_be_applied_stops_with_a_clear_error() {
    let s = Setup::new(
        minimal(),
        "sh_unparsed",
        "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(64), n INT)",
    );
    s.run_and_stop();
    s.sql(
        "INSERT INTO users VALUES (1, 'ann@example.com', 10);
         ALTER TABLE users ADD COLUMN IF NOT EXISTS z INT;
         INSERT INTO users VALUES (2, 'x', 20, 200);
         ALTER TABLE users ADD COLUMN w INT;
         INSERT INTO users VALUES (3, 'y', 30, 300, 3000);",
    );
    let line = assert_stops_and_delivers_nothing_wrong(
        &s,
        &[json!({"id": 1, "email": "ann@example.com", "n": 10})],
    );
    for needle in [
        &format!("`{}`.`users`", s.name),
        "ALTER TABLE statement at mysql-bin.",
        "could not be parsed",
        "binlog_row_metadata=FULL",
        "pikachu position set mysql-bin.",
    ] {
        assert!(line.contains(needle), "{needle:?} not in: {line}");
    }
}

/// (d): a definition that disagrees with information_schema (a DDL kept
/// out of the binlog with sql_log_bin=0).
#[test]
fn a_definition_that_disagrees_with_information_schema_stops_with_a_clear_error() {
    let s = Setup::new(
        minimal(),
        "sh_hidden",
        "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(64), n INT)",
    );
    s.run_and_stop();
    s.sql(
        "INSERT INTO users VALUES (1, 'ann@example.com', 10);
         SET SESSION sql_log_bin = 0;
         ALTER TABLE users DROP COLUMN email, ADD COLUMN secret_col VARCHAR(64) AFTER id;
         SET SESSION sql_log_bin = 1;
         INSERT INTO users VALUES (2, 'hush', 20);",
    );
    let line = assert_stops_and_delivers_nothing_wrong(&s, &[]);
    for needle in [
        &format!("`{}`.`users`", s.name),
        "information_schema",
        "secret_col",
        "sql_log_bin=0",
        "binlog_row_metadata=FULL",
        "pikachu position set",
    ] {
        assert!(line.contains(needle), "{needle:?} not in: {line}");
    }
}

/// (e): SIGKILL right after a DDL was processed (and its new definition
/// saved), before any checkpoint: the restart re-reads the DDL and finds it
/// applied; the rows before it keep the old names.
#[test]
fn sigkill_right_after_a_ddl_leaves_a_consistent_history() {
    let s = Setup::new(
        minimal(),
        "sh_kill",
        "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(64), n INT)",
    );
    let p = s.start();
    p.wait_log("binlog stream opened", WAIT);
    s.sql("INSERT INTO users VALUES (1, 'ann@example.com', 10)");
    assert_eq!(s.rows(1).len(), 1);
    s.sql("ALTER TABLE users DROP COLUMN email");
    p.wait_log("schema history saved", WAIT);
    p.kill();
    s.sql("INSERT INTO users VALUES (2, 20)");

    let store = pikachu::store::Store::open_existing(&s.dir.path().join("data"))
        .expect("open store")
        .expect("a store");
    let versions: Vec<_> = store
        .schema_versions()
        .expect("versions")
        .into_iter()
        .filter(|v| v.db == s.name && v.table == "users")
        .collect();
    drop(store);
    assert_eq!(versions.len(), 2, "{versions:#?}");
    assert!(versions[1].definition.contains("\"n\"") && !versions[1].definition.contains("email"));

    let mut p = s.start();
    assert_eq!(
        s.rows(2),
        vec![
            json!({"id": 1, "email": "ann@example.com", "n": 10}),
            json!({"id": 2, "n": 20}),
        ]
    );
    p.assert_alive();
    assert!(p.terminate().success());
    let store = pikachu::store::Store::open_existing(&s.dir.path().join("data"))
        .expect("open store")
        .expect("a store");
    let after: Vec<_> = store
        .schema_versions()
        .expect("versions")
        .into_iter()
        .filter(|v| v.db == s.name && v.table == "users")
        .collect();
    assert_eq!(after, versions, "the DDL was not applied a second time");
}

/// Statement-format DML on a watched table: a WARN naming the table; the
/// row-format changes around it are delivered, nothing else.
#[test]
fn a_statement_format_insert_on_a_watched_table_is_a_warning() {
    let s = Setup::new(
        MariaDb::shared(),
        "sh_stmt",
        "CREATE TABLE users (id INT PRIMARY KEY, n INT); CREATE TABLE other (id INT PRIMARY KEY)",
    );
    let p = s.start();
    p.wait_log("binlog stream opened", WAIT);
    s.sql(
        "INSERT INTO users VALUES (1, 10);
         SET SESSION binlog_format = 'STATEMENT';
         INSERT INTO users VALUES (2, 20);
         INSERT INTO other VALUES (7);
         SET SESSION binlog_format = 'ROW';
         INSERT INTO users VALUES (3, 30);",
    );
    assert_eq!(
        s.rows(2),
        vec![json!({"id": 1, "n": 10}), json!({"id": 3, "n": 30})]
    );
    let table = format!("{}.users", s.name);
    p.wait_log(
        &format!("INSERT on {table} is in the binlog as a statement"),
        WAIT,
    );
    s.receiver
        .assert_no_more_requests(Duration::from_millis(300));
    assert_eq!(s.receiver.json_bodies().len(), 2);
    let log = p.log();
    let warns: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    assert_eq!(
        warns
            .iter()
            .filter(|l| l.contains("as a statement"))
            .count(),
        1,
        "one warning per statement:\n{log}"
    );
    let w = warns
        .iter()
        .find(|l| l.contains("as a statement"))
        .expect("warning");
    assert!(
        w.contains("binlog_format=ROW") && w.contains("position="),
        "{w}"
    );
    assert!(!warns.iter().any(|l| l.contains(".other")), "{log}");
}

/// `pikachu replay --output stdout` of `s`'s table from `from`, logging at
/// INFO: (exit code, the payloads' `data`, stderr).
fn replay_data(s: &Setup, from: &(String, u64)) -> (Option<i32>, Vec<Value>, String) {
    let cfg = s.dir.path().join("replay.yaml");
    std::fs::write(&cfg, &s.yaml).expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pikachu"))
        .args(["replay", "-config"])
        .arg(&cfg)
        .args([
            "--from",
            &format!("{}:{}", from.0, from.1),
            "--output",
            "stdout",
        ])
        .env("RUST_LOG", "info")
        .output()
        .expect("run pikachu replay");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    lines.pop(); // the summary
    let data = lines.into_iter().map(|p| p["data"].clone()).collect();
    (
        out.status.code(),
        data,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const LOOK_AHEAD: &str = "reading the binlog ahead";

/// With FULL metadata every rows event names its columns, so a replay from
/// a past position reads the binlog once, DDLs of the table in the range
/// included: the check of the definitions against the binlog waits for rows
/// without names.
#[test]
fn full_metadata_replay_from_a_past_position_reads_the_binlog_once() {
    let s = Setup::new(
        MariaDb::shared(),
        "sh_full_once",
        "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(64), n INT)",
    );
    let from = s.db.master_status();
    s.sql(
        "INSERT INTO users VALUES (1, 'ann@example.com', 10);
         ALTER TABLE users DROP COLUMN email;
         INSERT INTO users VALUES (2, 20);
         DROP TABLE users;
         CREATE TABLE users (id INT PRIMARY KEY, secret_col VARCHAR(64), n INT);
         INSERT INTO users VALUES (3, 'hush', 30);",
    );
    let (code, data, stderr) = replay_data(&s, &from);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        data,
        vec![
            json!({"id": 1, "email": "ann@example.com", "n": 10}),
            json!({"id": 2, "n": 20}),
            json!({"id": 3, "secret_col": "hush", "n": 30}),
        ]
    );
    assert!(
        !stderr.contains(LOOK_AHEAD),
        "read the binlog twice:\n{stderr}"
    );
}

/// The server switched between FULL and MINIMAL while pikachu was away:
/// a DDL of the table (under FULL), then rows without names. A replay (no
/// stored history) checks the definitions at the first row without names;
/// the run (stored history) gives every row the columns of its own time.
#[test]
fn metadata_switched_while_away_checks_the_definitions_when_needed() {
    static DB: OnceLock<MariaDb> = OnceLock::new();
    let db = DB.get_or_init(|| {
        MariaDb::start(ServerOptions::with_args(["--binlog-row-metadata=MINIMAL"]))
    });
    let s = Setup::new(
        db,
        "sh_switch",
        "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(64), n INT)",
    );
    s.run_and_stop();
    let from = s.db.master_status();
    s.db.exec("SET GLOBAL binlog_row_metadata = FULL");
    s.sql("INSERT INTO users VALUES (1, 'ann@example.com', 10)");
    s.sql("ALTER TABLE users DROP COLUMN email");
    s.db.exec("SET GLOBAL binlog_row_metadata = MINIMAL");
    s.sql("INSERT INTO users VALUES (2, 20)");
    let mut want = vec![
        json!({"id": 1, "email": "ann@example.com", "n": 10}),
        json!({"id": 2, "n": 20}),
    ];
    let (code, data, stderr) = replay_data(&s, &from);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(data, want, "{stderr}");
    assert!(stderr.contains(LOOK_AHEAD), "{stderr}");

    s.sql(
        "ALTER TABLE users ADD COLUMN secret_col VARCHAR(64) AFTER id;
         INSERT INTO users VALUES (3, 'hush', 30);",
    );
    want.push(json!({"id": 3, "secret_col": "hush", "n": 30}));
    let mut p = s.start();
    assert_eq!(s.rows(3), want);
    p.assert_alive();
    assert!(p.terminate().success());
}
