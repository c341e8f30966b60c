//! The database password and the webhook secrets never show up in pikachu's
//! output: runs the real binary with a known password and task secret (a
//! run with changes at `log.level: debug`, as JSON into a `log.file` and as
//! text on stderr, a run with a wrong password, `pikachu check` runs) and
//! greps everything it wrote: stdout, stderr and the log files. Also checks
//! the shape of `log.file`: a dated file of one JSON object per line. And
//! other accounts' passwords, in DDL statements pikachu reads from the
//! binlog (`CREATE USER … IDENTIFIED BY`, `GRANT … IDENTIFIED BY`, `SET
//! PASSWORD`, …), never show up either, at info or at debug level.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::{MariaDb, Receiver};

const PASSWORD: &str = "Pw-Zq8r-5ecret-d41d8cd9";
const WRONG_PASSWORD: &str = "Wr0ng-Pw-8f00b204e980";
/// base64 of `PikachuTestSecret-e9800998ecf8`.
const SECRET_B64: &str = "UGlrYWNodVRlc3RTZWNyZXQtZTk4MDA5OThlY2Y4";
const SECRET_RAW: &str = "PikachuTestSecret-e9800998ecf8";
const USER: &str = "pf_secret_user";

fn secret() -> String {
    format!("whsec_{SECRET_B64}")
}

/// Every string that must not appear anywhere.
fn forbidden() -> Vec<String> {
    vec![
        PASSWORD.to_string(),
        WRONG_PASSWORD.to_string(),
        secret(),
        SECRET_B64.to_string(),
        SECRET_RAW.to_string(),
    ]
}

fn setup_user(db: &MariaDb) {
    // Once per process: the tests run in parallel on the shared server.
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        db.exec(&format!(
            "DROP USER IF EXISTS '{USER}'@'%'; CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}';
             GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{USER}'@'%';"
        ))
    });
}

#[derive(Clone)]
struct Run<'a> {
    db: &'a MariaDb,
    database: String,
    password: &'a str,
    format: &'a str,
    level: &'a str,
    log_file: Option<PathBuf>,
    start: (String, u64),
    url: String,
}

impl Run<'_> {
    fn yaml(&self) -> String {
        let mut y = format!(
            "database:\n  host: \"127.0.0.1\"\n  port: {}\n  user: \"{USER}\"\n  password: \"{}\"\n  database: \"{}\"\n  server_id: {}\n  heartbeat: \"1s\"\n  tls: \"disabled\"\n\
             log:\n  level: \"{}\"\n  format: \"{}\"\n",
            self.db.port,
            self.password,
            self.database,
            support::pikachu::unique_server_id(),
            self.level,
            self.format,
        );
        if let Some(f) = &self.log_file {
            y.push_str(&format!("  file: \"{}\"\n", f.display()));
        }
        y.push_str(&format!(
            "dispatcher:\n  retry_base_delay: \"50ms\"\n  retry_max_delay: \"200ms\"\n  timeout: \"5s\"\n\
             start:\n  file: \"{}\"\n  pos: {}\n\
             tasks:\n- task_id: \"watch\"\n  name: \"watch\"\n  table_name: \"users\"\n  events: [\"insert\", \"update\", \"delete\"]\n  callback_url: \"{}\"\n  secret: \"{}\"\n",
            self.start.0,
            self.start.1,
            self.url,
            secret()
        ));
        y
    }
}

/// A pikachu process with stdout and stderr in files of `dir`.
struct Proc {
    child: Child,
    dir: PathBuf,
}

impl Proc {
    fn spawn(dir: &Path, args: &[&str], yaml: &str) -> Proc {
        let cfg = dir.join("config.yaml");
        std::fs::write(&cfg, yaml).expect("write config");
        let out = std::fs::File::create(dir.join("stdout")).expect("stdout file");
        let err = std::fs::File::create(dir.join("stderr")).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_pikachu"))
            .args(args)
            .arg("-config")
            .arg(&cfg)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn pikachu");
        Proc {
            child,
            dir: dir.to_path_buf(),
        }
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pikachu did not exit in {timeout:?}; stderr:\n{}",
                read(&self.dir.join("stderr"))
            );
            std::thread::sleep(Duration::from_millis(20)); // poll interval
        }
    }

    fn terminate(&mut self) -> ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.wait(Duration::from_secs(30))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Everything pikachu wrote in `dir` (stdout, stderr, log files), by file.
fn all_output(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != "config.yaml") {
                out.push((p.clone(), read(&p)));
            }
        }
    }
    out
}

fn assert_no_secrets(dir: &Path) -> usize {
    let files = all_output(dir);
    let mut bytes = 0;
    for (path, text) in &files {
        bytes += text.len();
        for f in forbidden() {
            assert!(
                !text.contains(&f),
                "{} contains the secret {f:?}:\n{text}",
                path.display()
            );
        }
    }
    bytes
}

/// A run with changes reaching the webhook; returns its folder.
fn run_with_changes(
    db: &MariaDb,
    format: &str,
    to_file: bool,
    rows: std::ops::Range<u32>,
    database: &str,
) -> tempfile::TempDir {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = Run {
        db,
        database: database.to_string(),
        password: PASSWORD,
        format,
        level: "debug",
        log_file: to_file.then(|| dir.path().join("logs").join("pikachu.log")),
        start: db.master_status(),
        url: receiver.url("/hook"),
    };
    let mut p = Proc::spawn(dir.path(), &[], &run.yaml());
    let n = rows.len();
    for i in rows {
        db.exec_in(
            database,
            &format!(
                "INSERT INTO users VALUES ({i}, 'n{i}'); UPDATE users SET name = 'm{i}' WHERE id = {i}; DELETE FROM users WHERE id = {i};"
            ),
        );
    }
    receiver.wait_for(3 * n, Duration::from_secs(30));
    let status = p.terminate();
    assert!(
        status.success(),
        "pikachu exited with {status}; stderr:\n{}",
        read(&dir.path().join("stderr"))
    );
    dir
}

fn database(db: &MariaDb) -> String {
    let name = db.fresh_database("secrets");
    db.exec_in(
        &name,
        "CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(64))",
    );
    name
}

#[test]
fn a_run_with_changes_logs_no_secret_in_json_file_or_text_stderr() {
    let db = MariaDb::shared();
    setup_user(db);
    let name = database(db);

    let dir = run_with_changes(db, "json", true, 1..3, &name);
    let logs: Vec<(PathBuf, String)> = all_output(dir.path())
        .into_iter()
        .filter(|(p, _)| p.starts_with(dir.path().join("logs")))
        .collect();
    assert_eq!(logs.len(), 1, "one log file: {logs:?}");
    let (path, text) = &logs[0];
    // pikachu.YYYY-MM-DD.log
    let fname = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    assert!(
        fname.len() == "pikachu.2025-01-31.log".len()
            && fname.starts_with("pikachu.20")
            && fname.ends_with(".log"),
        "{fname}"
    );
    assert!(
        read(&dir.path().join("stderr")).is_empty(),
        "with log.file nothing goes to stderr: {}",
        read(&dir.path().join("stderr"))
    );
    let mut lines = 0;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for key in ["timestamp", "level", "message"] {
            assert!(v.get(key).is_some(), "no {key} in {line}");
        }
        lines += 1;
    }
    assert!(lines >= 3, "{text}");
    assert!(
        text.contains("\"level\":\"DEBUG\""),
        "debug lines expected at log.level debug:\n{text}"
    );
    assert!(assert_no_secrets(dir.path()) > 0);

    let dir = run_with_changes(db, "text", false, 10..12, &name);
    let stderr = read(&dir.path().join("stderr"));
    assert!(stderr.contains("DEBUG"), "{stderr}");
    assert_no_secrets(dir.path());
}

#[test]
fn a_wrong_password_run_and_check_runs_show_no_secret() {
    let db = MariaDb::shared();
    setup_user(db);
    let name = database(db);
    let base = Run {
        db,
        database: name.clone(),
        password: WRONG_PASSWORD,
        format: "text",
        level: "debug",
        log_file: None,
        start: db.master_status(),
        url: "http://127.0.0.1:9/hook".into(),
    };

    // pikachu run with a wrong password: exits 1, says access denied.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = Proc::spawn(dir.path(), &[], &base.yaml());
    let status = p.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1));
    let stderr = read(&dir.path().join("stderr"));
    assert!(stderr.contains("refused user 'pf_secret_user'"), "{stderr}");
    assert_no_secrets(dir.path());

    // pikachu check with the wrong password, then with the right one.
    for (password, code) in [(WRONG_PASSWORD, 1), (PASSWORD, 0)] {
        let run = Run {
            password,
            ..base.clone()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = Proc::spawn(dir.path(), &["check"], &run.yaml());
        let status = p.wait(Duration::from_secs(30));
        let stdout = read(&dir.path().join("stdout"));
        assert_eq!(status.code(), Some(code), "{stdout}");
        assert!(stdout.contains("pf_secret_user"), "{stdout}");
        assert_no_secrets(dir.path());
    }
}

/// Passwords of other accounts that statements in the binlog carry.
const DDL_SECRETS: [&str; 4] = [
    "hunter2-create",
    "hunter2-alter",
    "hunter2-grant",
    "hunter2-set",
];

/// A run (at `level`, text to stderr and JSON to `log.file`) during which
/// accounts are created and changed with passwords and the watched table
/// is altered; returns the folder with everything pikachu wrote.
fn run_with_account_ddl(db: &MariaDb, level: &str, database: &str, tag: &str) -> tempfile::TempDir {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = Run {
        db,
        database: database.to_string(),
        password: PASSWORD,
        format: "json",
        level,
        log_file: Some(dir.path().join("logs").join("pikachu.log")),
        start: db.master_status(),
        url: receiver.url("/hook"),
    };
    let mut p = Proc::spawn(dir.path(), &[], &run.yaml());
    let (u1, u2) = (format!("pf_ddl_a_{tag}"), format!("pf_ddl_b_{tag}"));
    let [create, alter, grant, set] = DDL_SECRETS;
    db.exec(&format!(
        "CREATE USER '{u1}'@'%' IDENTIFIED BY '{create}';
         ALTER USER '{u1}'@'%' IDENTIFIED BY '{alter}';
         CREATE USER '{u2}'@'%';
         GRANT SELECT ON *.* TO '{u2}'@'%' IDENTIFIED BY '{grant}';
         SET PASSWORD FOR '{u1}'@'%' = PASSWORD('{set}');
         DROP USER '{u1}'@'%', '{u2}'@'%';"
    ));
    db.exec_in(
        database,
        "ALTER TABLE users ADD COLUMN extra INT; INSERT INTO users VALUES (1, 'n', 5);",
    );
    receiver.wait_for(1, Duration::from_secs(30));
    let status = p.terminate();
    assert!(
        status.success(),
        "pikachu exited with {status}; stderr:\n{}",
        read(&dir.path().join("stderr"))
    );
    dir
}

#[test]
fn passwords_in_account_statements_of_the_binlog_are_never_logged() {
    let db = MariaDb::shared();
    setup_user(db);
    for level in ["info", "debug"] {
        let name = database(db);
        let dir = run_with_account_ddl(db, level, &name, level);
        let files = all_output(dir.path());
        let all: String = files.iter().map(|(_, t)| t.as_str()).collect();
        for secret in DDL_SECRETS {
            assert!(
                !all.contains(secret),
                "level {level}: a password of a statement in the binlog was logged:\n{all}"
            );
        }
        assert!(!all.contains("hunter2"), "level {level}:\n{all}");
        // The DDL of the watched table: its kind and table, at info.
        let ddl_line = all
            .lines()
            .find(|l| {
                l.contains(&format!("\"DDL ALTER TABLE {name}.users\""))
                    && l.contains("\"level\":\"INFO\"")
            })
            .unwrap_or_else(|| panic!("level {level}: no DDL line at INFO:\n{all}"));
        assert!(
            !ddl_line.contains("ADD COLUMN"),
            "no statement text at info: {ddl_line}"
        );
        if level == "debug" {
            assert!(
                all.contains("IDENTIFIED BY '***'"),
                "masked text at debug:\n{all}"
            );
        } else {
            assert!(
                !all.contains("IDENTIFIED"),
                "no statement text at info:\n{all}"
            );
        }
        assert_no_secrets(dir.path());
    }
}
