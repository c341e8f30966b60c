//! Running the real `pikachu` binary from tests: config files, process
//! lifetime (killed on drop), and its captured output.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::MariaDb;

/// One task of a generated config.
pub struct TaskSpec {
    pub task_id: String,
    pub table: String,
    pub events: Vec<String>,
    pub url: String,
    pub extra: String,
}

impl TaskSpec {
    pub fn new(task_id: &str, table: &str, events: &[&str], url: &str) -> TaskSpec {
        TaskSpec {
            task_id: task_id.into(),
            table: table.into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            url: url.into(),
            extra: String::new(),
        }
    }
}

/// A server_id unique within this test process (and unlikely to clash across processes).
pub fn unique_server_id() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    1000 + (std::process::id() % 100_000) * 100 + N.fetch_add(1, Ordering::Relaxed) % 100
}

impl MariaDb {
    /// `SHOW MASTER STATUS`: (file, position).
    pub fn master_status(&self) -> (String, u64) {
        let rows = self.query("SHOW MASTER STATUS");
        let row = rows.into_iter().next().expect("binlog is on");
        let file = row[0].clone().expect("file");
        let pos = row[1].clone().expect("pos").parse().expect("numeric pos");
        (file, pos)
    }
}

/// A config reading `database` on `db` from `start` (file, pos), with `tasks`.
pub fn config_yaml(
    db: &MariaDb,
    database: &str,
    start: &(String, u64),
    tasks: &[TaskSpec],
) -> String {
    let mut y = format!(
        "database:\n  host: \"127.0.0.1\"\n  port: {}\n  user: \"pikachu\"\n  password: \"pikachu\"\n  database: \"{database}\"\n  server_id: {}\n  heartbeat: \"1s\"\n\
         log:\n  level: \"debug\"\n  format: \"text\"\n\
         dispatcher:\n  retry_base_delay: \"50ms\"\n  retry_max_delay: \"200ms\"\n  timeout: \"5s\"\n\
         start:\n  file: \"{}\"\n  pos: {}\n\
         tasks:\n",
        db.port,
        unique_server_id(),
        start.0,
        start.1
    );
    for t in tasks {
        let events: Vec<String> = t.events.iter().map(|e| format!("\"{e}\"")).collect();
        y.push_str(&format!(
            "- task_id: \"{}\"\n  name: \"{}\"\n  table_name: \"{}\"\n  events: [{}]\n  callback_url: \"{}\"\n{}",
            t.task_id,
            t.task_id,
            t.table,
            events.join(", "),
            t.url,
            t.extra
        ));
    }
    y
}

/// A running `pikachu` process, killed on drop.
pub struct Pikachu {
    child: Child,
    pub dir: RunDir,
}

/// The folder a `pikachu` process runs in (its config, log and `./data`
/// state): a temp dir of its own, or one a test keeps across restarts.
pub struct RunDir {
    _tmp: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl RunDir {
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Pikachu {
    /// The binary under test: this build's, or `$PIKACHU_TEST_BIN` (e.g. a
    /// previous main's build, to see a new test fail on the old code).
    pub fn bin() -> PathBuf {
        match std::env::var_os("PIKACHU_TEST_BIN") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(env!("CARGO_BIN_EXE_pikachu")),
        }
    }

    /// Writes `yaml` to a temp dir and runs `pikachu -config <file>` there.
    pub fn start(yaml: &str) -> Pikachu {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().to_path_buf();
        Self::spawn(
            RunDir {
                _tmp: Some(tmp),
                path,
            },
            yaml,
            &[],
        )
    }

    /// Runs `pikachu -config <file> [args]` in `dir`, which the test keeps
    /// (so a restart finds the same `./data` state). The log is appended to.
    pub fn start_in(dir: &std::path::Path, yaml: &str, args: &[&str]) -> Pikachu {
        Self::spawn(
            RunDir {
                _tmp: None,
                path: dir.to_path_buf(),
            },
            yaml,
            args,
        )
    }

    fn spawn(dir: RunDir, yaml: &str, args: &[&str]) -> Pikachu {
        let cfg = dir.path().join("config.yaml");
        std::fs::write(&cfg, yaml).expect("write config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("pikachu.log"))
            .expect("log file");
        let child = Command::new(Self::bin())
            .arg("-config")
            .arg(&cfg)
            .args(args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn pikachu");
        Pikachu { child, dir }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// SIGKILL, like a crash; waits for the process to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself (e.g. on a fatal error).
    pub fn wait_exit(mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pikachu did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pikachu.log")).unwrap_or_default()
    }

    /// Panics with the log if the process has exited.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("pikachu exited early ({status}); its log:\n{}", self.log());
        }
    }

    /// Waits until the log contains `needle`, or panics with the log.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("pikachu log never showed {needle:?}; log:\n{}", self.log());
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pikachu did not stop on SIGTERM; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pikachu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- pikachu log ---\n{}", self.log());
        }
    }
}

/// Reads the binlog of `db` from `start` through pikachu's own reader (the
/// library, in-process) until `n` changes of `database`.`tables` arrived,
/// and returns their payloads (rendered for a task `t`) in order. Panics
/// with what arrived when `timeout` passes first, or on a reader error.
pub fn collect_payloads(
    db: &MariaDb,
    database: &str,
    tables: &[&str],
    start: &(String, u64),
    n: usize,
    timeout: Duration,
) -> Vec<serde_json::Value> {
    match try_collect_payloads(db, database, tables, start, n, timeout) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// As [`collect_payloads`], returning the reader's error instead of panicking.
pub fn try_collect_payloads(
    db: &MariaDb,
    database: &str,
    tables: &[&str],
    start: &(String, u64),
    n: usize,
    timeout: Duration,
) -> Result<Vec<serde_json::Value>, String> {
    let changes = try_collect_changes(db, database, tables, start, n, timeout)?;
    changes
        .iter()
        .map(|c| {
            let task = format!("task_{}", c.table.name);
            let id = pikachu::event::change_id(c, &task, 0);
            let mut body = Vec::new();
            pikachu::event::render(&mut body, c, &task, &id);
            serde_json::from_slice(&body).map_err(|e| format!("payload is not JSON: {e}"))
        })
        .collect()
}

/// The config of [`collect_payloads`]'s reader: `database` on `db` from
/// `start`, one task per table.
pub fn reader_config(
    db: &MariaDb,
    database: &str,
    tables: &[&str],
    start: &(String, u64),
) -> Result<pikachu::config::Config, String> {
    let specs: Vec<TaskSpec> = tables
        .iter()
        .map(|t| {
            TaskSpec::new(
                &format!("task_{t}"),
                t,
                &["insert", "update", "delete"],
                "http://127.0.0.1:9/",
            )
        })
        .collect();
    let yaml = config_yaml(db, database, start, &specs);
    Ok(pikachu::config::from_str(&yaml, "test.yaml", None)
        .map_err(|e| format!("config: {e}"))?
        .config)
}

/// As [`try_collect_payloads`], returning the changes themselves.
pub fn try_collect_changes(
    db: &MariaDb,
    database: &str,
    tables: &[&str],
    start: &(String, u64),
    n: usize,
    timeout: Duration,
) -> Result<Vec<pikachu::event::Change>, String> {
    use pikachu::source::{connect, position::StartAt, reader};
    let cfg = reader_config(db, database, tables, start)?;
    let wanted: Vec<(String, String)> = tables
        .iter()
        .map(|t| (database.to_string(), t.to_string()))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let mut conn = connect::connect(&cfg.database)
            .await
            .map_err(|e| e.to_string())?;
        let info = connect::server_info(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        drop(conn);
        let opts = reader::ReaderOptions {
            db: cfg.database.clone(),
            heartbeat: Duration::from_secs(1),
            decode: Default::default(),
            tables: wanted.clone(),
            filter: std::sync::Arc::new(move |d: &str, t: &str| {
                wanted.iter().any(|(wd, wt)| wd == d && wt == t)
            }),
            expect_file: None,
            history_store: None,
        };
        let start = StartAt::FilePos(pikachu::source::position::FilePos {
            file: start.0.clone(),
            pos: start.1,
        });
        let (tx, mut rx) = reader::channel(1024);
        let cancel = tokio_util::sync::CancellationToken::new();
        let handle = tokio::spawn(reader::run(info, opts, start, tx, cancel.clone()));
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while out.len() < n {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(reader::SourceEvent::Change(c))) => out.push(c),
                Ok(Some(reader::SourceEvent::Commit(_) | reader::SourceEvent::Xa(_))) => {}
                Ok(None) => break,
                Err(_) => break,
            }
        }
        cancel.cancel();
        drop(rx);
        let result = handle.await.map_err(|e| e.to_string())?;
        if out.len() < n {
            return Err(format!(
                "got {} of {n} changes (reader ended with {result:?}); got: {out:#?}",
                out.len()
            ));
        }
        Ok(out)
    })
}
