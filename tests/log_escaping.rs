//! Server and user text cannot forge log lines: a table COMMENT, a column
//! name and a table name carrying a newline, ANSI escapes and a fake log
//! line go through pikachu (DDL text logged at debug, `pikachu check` lines, the
//! one-line error on stderr) and come out escaped, in the text format on
//! stderr and in the JSON format in `log.file`.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::pikachu::{config_yaml, Pikachu, TaskSpec};
use support::{MariaDb, Receiver};

/// A fake log line, as pikachu's text format writes them.
const FORGED: &str = "2020-01-01T00:00:00.000000Z  INFO forged: pikachu was told to stop";

/// A newline, an ANSI "red" escape, the fake line, an ANSI reset.
fn evil() -> String {
    format!("x\n\x1b[31m{FORGED}\x1b[0m")
}

/// The same in a column name (at most 64 characters).
const EVIL_COLUMN: &str = "c\n\x1b[31mINFO forged column\x1b[0m";

/// `text` has no raw escape or control character other than line ends, and
/// no line that starts with the forged text (or with what precedes it).
fn assert_not_forged(what: &str, text: &str) {
    assert!(
        !text.contains('\x1b'),
        "{what} has a raw ESC byte:\n{text:?}"
    );
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{what} has a raw control character:\n{text:?}"
    );
    for line in text.lines() {
        assert!(
            !line.starts_with(FORGED)
                && !line.starts_with("INFO forged")
                && !line.starts_with("[31m"),
            "{what} has a forged line {line:?}:\n{text}"
        );
    }
}

/// The DDL of `table` in `database` with the evil text in a COMMENT and a
/// column name, then one row (so the test knows the DDL was read).
fn evil_ddl(db: &MariaDb, database: &str) {
    let evil = evil();
    db.exec_in(
        database,
        &format!(
            "ALTER TABLE t COMMENT = '{evil}';
             ALTER TABLE t ADD COLUMN `{EVIL_COLUMN}` INT;
             INSERT INTO t (id) VALUES (1);"
        ),
    );
}

fn fresh(db: &MariaDb) -> String {
    let name = db.fresh_database("log_escaping");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY)");
    name
}

#[test]
fn ddl_text_is_escaped_in_the_text_log_on_stderr() {
    let db = MariaDb::shared();
    let database = fresh(db);
    let receiver = Receiver::start();
    let yaml = config_yaml(
        db,
        &database,
        &db.master_status(),
        &[TaskSpec::new("t", "t", &["insert"], &receiver.url("/t"))],
    );
    let p = Pikachu::start(&yaml);
    p.wait_log("binlog stream opened", Duration::from_secs(30));
    evil_ddl(db, &database);
    receiver.wait_for(1, Duration::from_secs(30));
    p.wait_log("DDL text", Duration::from_secs(10));
    let log = p.log();
    let status = p.terminate();
    assert!(status.success(), "{log}");
    assert_not_forged("stderr", &log);
    // The DDL was logged, escaped, on a line of its own (this test's: the
    // other tests on the shared server write to the same binlog).
    let ddl: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("DDL text") && l.contains(&database))
        .collect();
    // Each of the two DDLs, logged when the schema history reads the
    // binlog ahead and again when the stream reads it.
    assert!(ddl.len() >= 2, "{log}");
    assert!(ddl[0].contains("\\n\\u{1b}[31m2020-01-01"), "{}", ddl[0]);
}

#[test]
fn ddl_text_is_escaped_in_the_json_log_file() {
    let db = MariaDb::shared();
    let database = fresh(db);
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let log_file = dir.path().join("logs").join("pikachu.log");
    let yaml = config_yaml(
        db,
        &database,
        &db.master_status(),
        &[TaskSpec::new("t", "t", &["insert"], &receiver.url("/t"))],
    )
    .replace(
        "  format: \"text\"\n",
        &format!("  format: \"json\"\n  file: \"{}\"\n", log_file.display()),
    );
    let p = Pikachu::start(&yaml);
    let logs = dir.path().join("logs");
    wait_file_contains(&logs, "binlog stream opened");
    evil_ddl(db, &database);
    receiver.wait_for(1, Duration::from_secs(30));
    wait_file_contains(&logs, "DDL text");
    let stderr = p.log();
    let status = p.terminate();
    assert!(status.success(), "{stderr}");
    assert_not_forged("stderr", &stderr);
    let text = read_dir_text(&logs);
    assert_not_forged("log.file", &text);
    let mut ddl = 0;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["message"] == "DDL text" && v["schema"] == database {
            let query = v["statement"].as_str().unwrap_or_default();
            if query.contains("forged") {
                // The text itself, whole (JSON escaping keeps it intact).
                assert!(
                    query.contains(&evil()) || query.contains(EVIL_COLUMN),
                    "{query:?}"
                );
                ddl += 1;
            }
        }
    }
    assert!(ddl >= 2, "{text}");
}

#[test]
fn a_table_name_is_escaped_in_check_lines_and_the_error_line() {
    let db = MariaDb::shared();
    let database = fresh(db);
    // YAML double quotes: \n and \x1b are the newline and ESC.
    let yaml_evil = format!("t\\n\\x1b[31m{FORGED}\\x1b[0m");
    let yaml = config_yaml(
        db,
        &database,
        &db.master_status(),
        &[TaskSpec::new(
            "t",
            &yaml_evil,
            &["insert"],
            "http://127.0.0.1:9/",
        )],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, &yaml).expect("write config");

    let out = Command::new(Pikachu::bin())
        .args(["check", "-config"])
        .arg(&cfg)
        .current_dir(dir.path())
        .output()
        .expect("run pikachu check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_not_forged("check stdout", &stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL ") && l.contains("\\n\\u{1b}[31m2020-01-01")),
        "{stdout}"
    );

    let out = Command::new(Pikachu::bin())
        .arg("-config")
        .arg(&cfg)
        .current_dir(dir.path())
        .output()
        .expect("run pikachu");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_not_forged("stderr", &stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("\\u{1b}[31m2020-01-01"), "{stderr}");
}

fn read_dir_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        text.push_str(&String::from_utf8_lossy(&bytes));
    }
    text
}

/// Polls the files of `dir` until one contains `needle` (the log file is
/// written by a background thread).
fn wait_file_contains(dir: &Path, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if read_dir_text(dir).contains(needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20)); // poll interval
    }
    panic!(
        "{needle:?} never appeared in {}:\n{}",
        dir.display(),
        read_dir_text(dir)
    );
}
