//! Private `mariadbd` servers for integration tests.
//!
//! Every server is a `mariadbd` child of the test process, on a free port of
//! 127.0.0.1, with its own folder `pikachu-mariadb-<pid>-<n>/` (`data/`,
//! `mysqld.sock`, `error.log`) under `$PIKACHU_TEST_SERVER_DIR`, else
//! `/dev/shm`, else the system temp dir.
//! It writes a ROW binlog (`mysql-bin.*` in `data/`) with full row images
//! and full metadata, server_id 1, and has the same accounts as
//! `scripts/mariadb.sh`: `pikachu`/`pikachu` with exactly SELECT,
//! REPLICATION SLAVE, REPLICATION CLIENT (which MariaDB shows as BINLOG
//! MONITOR) ON *.*, and root without a password (socket and 127.0.0.1).
//!
//! Speed: `mariadb-install-db` runs once per machine into a template datadir
//! under `CARGO_TARGET_TMPDIR` (guarded by a file lock, keyed by the server
//! version); each server copies that template (~26 MB, 200 files) and starts in
//! ~0.1 s.
//!
//! No leaks: every `mariadbd` is spawned from one long-lived thread with
//! `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the test process however
//! that ends; on a normal exit an `atexit` hook also kills the servers still
//! running (the [`MariaDb::shared`] one) and removes their folders; dedicated
//! servers are killed and removed on `Drop`; folders left by killed test
//! processes are removed by the next test process.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The replication user every server has.
pub const USER: &str = "pikachu";
/// Its password.
pub const PASSWORD: &str = "pikachu";

/// Binlog settings every server gets before [`ServerOptions::extra_args`].
pub const DEFAULT_BINLOG_ARGS: &[&str] = &[
    "--log-bin=mysql-bin",
    "--binlog-format=ROW",
    "--binlog-row-image=FULL",
    "--binlog-row-metadata=FULL",
    "--server-id=1",
];

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(5);
const PORT_ATTEMPTS: usize = 5;
const MISSING: &str =
    "mariadbd not found: run scripts/mariadb.sh install (or apt-get install mariadb-server)";

/// Bump when the template's SQL or initialisation flags change.
const TEMPLATE_REVISION: &str = "2";

/// Runs inside `mariadb-install-db` (bootstrap mode: the grant tables must be
/// loaded with FLUSH PRIVILEGES before accounts can be managed). The last
/// lines drop the `root@<hostname>` accounts install-db makes, which
/// `--skip-name-resolve` would warn about at every start.
const TEMPLATE_SQL: &str = "\
FLUSH PRIVILEGES;
CREATE USER IF NOT EXISTS 'pikachu'@'%' IDENTIFIED BY 'pikachu';
GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'pikachu'@'%';
CREATE USER IF NOT EXISTS 'pikachu'@'localhost' IDENTIFIED BY 'pikachu';
GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'pikachu'@'localhost';
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS pikachu_demo;
DELETE FROM mysql.global_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1', '%');
DELETE FROM mysql.proxies_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1', '%');
";

/// InnoDB settings used both at initialisation and at start (a different
/// redo log size would make every start resize the log).
const INNODB_ARGS: &[&str] = &["--innodb-log-file-size=8M"];

/// Settings of every test server that are not about the binlog. Placed
/// before the binlog defaults and the extra args, so both can override them.
const BASE_ARGS: &[&str] = &[
    "--skip-name-resolve",
    "--innodb-buffer-pool-size=64M",
    // libaio contexts are a machine-wide limit; many parallel servers could
    // exhaust them.
    "--innodb-use-native-aio=0",
    // Test data need not survive a power cut.
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-doublewrite=0",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
    "--max-connections=500",
];

/// How to start a dedicated server.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// Appended to the command line after [`DEFAULT_BINLOG_ARGS`] (the last
    /// one wins), e.g. `--binlog-checksum=NONE`, `--log-bin-compress=ON`,
    /// `--binlog-row-metadata=MINIMAL`, `--skip-log-bin`.
    pub extra_args: Vec<String>,
}

impl ServerOptions {
    pub fn with_args<I, S>(args: I) -> ServerOptions
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ServerOptions {
            extra_args: args.into_iter().map(Into::into).collect(),
        }
    }
}

/// A running `mariadbd` owned by this test process.
pub struct MariaDb {
    /// TCP port on 127.0.0.1 (kept across [`MariaDb::restart`]).
    pub port: u16,
    /// The server's folder: `data/`, `mysqld.sock`, `error.log`, ...
    pub dir: PathBuf,
    args: Vec<String>,
    child: Mutex<Option<Child>>,
}

impl MariaDb {
    /// One server per test binary, started on first use, default options.
    /// Don't stop or restart it (other tests use it): use [`MariaDb::start`]
    /// for outage tests.
    pub fn shared() -> &'static MariaDb {
        static SHARED: OnceLock<MariaDb> = OnceLock::new();
        SHARED.get_or_init(|| MariaDb::start(ServerOptions::default()))
    }

    /// Starts a dedicated server; it is killed and its folder removed on Drop.
    pub fn start(opts: ServerOptions) -> MariaDb {
        let tools = tools();
        let template = template_datadir();
        sweep_stale_dirs();
        let dir = new_server_dir();
        let data = dir.join("data");
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let _ = fs::remove_dir_all(&data);
            copy_dir(template, &data).unwrap_or_else(|e| {
                panic!("copying {} to {}: {e}", template.display(), data.display())
            });
            let port = free_port();
            let args = server_args(&dir, port, &opts);
            match launch(tools, &dir, &args) {
                Ok(child) => {
                    return MariaDb {
                        port,
                        dir,
                        args,
                        child: Mutex::new(Some(child)),
                    }
                }
                Err(Launch::PortInUse(msg)) => last_error = msg,
                Err(Launch::Failed(msg)) => {
                    let _ = fs::remove_dir_all(&dir);
                    panic!("{msg}")
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!("mariadbd could not get a free port in {PORT_ATTEMPTS} attempts: {last_error}")
    }

    /// Stops the server cleanly (SIGTERM, waits up to 30 s, then SIGKILL).
    /// The port and the data stay for [`MariaDb::restart`].
    pub fn stop(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(child) = child.take() {
            terminate(child, libc::SIGTERM, STOP_TIMEOUT);
        }
    }

    /// Kills the server with SIGKILL (a crash: no clean shutdown).
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(child) = child.take() {
            terminate(child, libc::SIGKILL, STOP_TIMEOUT);
        }
    }

    /// Stops the server (if running) and starts it again on the same port
    /// with the same datadir and options.
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    /// Starts a stopped (or killed) server again on the same port and datadir.
    pub fn start_again(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        // A server that died by itself may be started again too.
        if let Some(c) = child.as_mut() {
            if let Ok(Some(_)) = c.try_wait() {
                unregister(c.id());
                *child = None;
            }
        }
        assert!(child.is_none(), "start_again: the server is running");
        // The port was ours a moment ago; someone may hold it briefly.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match launch(tools(), &self.dir, &self.args) {
                Ok(c) => {
                    *child = Some(c);
                    return;
                }
                Err(Launch::PortInUse(_)) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(50)); // poll interval
                }
                Err(Launch::PortInUse(msg)) | Err(Launch::Failed(msg)) => {
                    panic!("restarting mariadbd on port {}: {msg}", self.port)
                }
            }
        }
    }

    /// Stops the server and starts it again on the same port with a fresh
    /// datadir (a copy of the template), as a server recreated from scratch:
    /// same server_id, empty binlog, no tables.
    pub fn recreate(&self) {
        self.stop();
        let data = self.dir.join("data");
        let _ = fs::remove_dir_all(&data);
        copy_dir(template_datadir(), &data)
            .unwrap_or_else(|e| panic!("copying the template to {}: {e}", data.display()));
        self.start_again();
    }

    /// Whether the server process is running (started and not stopped).
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.as_ref().map(Child::id)
    }

    /// `mysql://root@127.0.0.1:PORT/?prefer_socket=false` (root has no
    /// password).
    ///
    /// `prefer_socket=false`: mysql_async's default `prefer_socket=true`
    /// silently moves a connection to 127.0.0.1 onto the server's unix
    /// socket (it asks `@@socket`), which would log in as
    /// `pikachu@localhost` and make stopping TCP traffic meaningless.
    pub fn root_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/?prefer_socket=false", self.port)
    }

    /// `mysql://pikachu:pikachu@127.0.0.1:PORT/?prefer_socket=false`.
    pub fn user_url(&self) -> String {
        self.user_url_for("")
    }

    /// `mysql://pikachu:pikachu@127.0.0.1:PORT/DB?prefer_socket=false`.
    pub fn user_url_for(&self, db: &str) -> String {
        format!(
            "mysql://{USER}:{PASSWORD}@127.0.0.1:{}/{db}?prefer_socket=false",
            self.port
        )
    }

    /// The unix socket (root may log in there without a password).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("mysqld.sock")
    }

    /// Where `mysql-bin.NNNNNN` and `mysql-bin.index` are.
    pub fn binlog_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    /// The last `lines` lines of the server's error log.
    pub fn error_log_tail(&self, lines: usize) -> String {
        tail(&self.error_log(), lines)
    }

    /// Runs SQL (one or more statements; `DELIMITER` works) as root with the
    /// `mariadb` client on the socket. Panics with the SQL and the server's
    /// error on failure.
    pub fn exec(&self, sql: &str) {
        self.client(None, sql);
    }

    /// [`MariaDb::exec`] with `db` as the default database.
    pub fn exec_in(&self, db: &str, sql: &str) {
        self.client(Some(db), sql);
    }

    /// Runs one query as root (over TCP with mysql_async, on a helper thread,
    /// so it works in sync and async tests alike) and returns the rows as
    /// text (`None` for NULL).
    pub fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let url = self.root_url();
        let sql_owned = sql.to_owned();
        let result = thread::spawn(move || -> Result<Vec<Vec<Option<String>>>, String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                use mysql_async::prelude::Queryable;
                let opts = mysql_async::Opts::from_url(&url).map_err(|e| e.to_string())?;
                let mut conn = mysql_async::Conn::new(opts)
                    .await
                    .map_err(|e| e.to_string())?;
                let rows: Vec<mysql_async::Row> =
                    conn.query(sql_owned).await.map_err(|e| e.to_string())?;
                let _ = conn.disconnect().await;
                Ok(rows.into_iter().map(row_to_text).collect())
            })
        })
        .join()
        .expect("query thread panicked");
        result.unwrap_or_else(|e| panic!("query failed on port {}: {e}\nSQL: {sql}", self.port))
    }

    /// The first column of the first row of `sql`; panics if there is no
    /// row or the value is NULL.
    pub fn query_value(&self, sql: &str) -> String {
        let rows = self.query(sql);
        let row = rows
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("query returned no rows: {sql}"));
        row.into_iter()
            .next()
            .flatten()
            .unwrap_or_else(|| panic!("query returned NULL or no column: {sql}"))
    }

    /// The value of a server variable (`SELECT @@name`).
    pub fn variable(&self, name: &str) -> String {
        self.query_value(&format!("SELECT @@{name}"))
    }

    /// Creates a database with a name unique to this process and call
    /// (`<prefix>_<pid>_<n>`) and returns the name.
    pub fn fresh_database(&self, prefix: &str) -> String {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut prefix: String = prefix
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        prefix.truncate(40);
        let name = format!("{prefix}_{}_{n}", std::process::id());
        self.exec(&format!("CREATE DATABASE `{name}`"));
        name
    }

    fn client(&self, db: Option<&str>, sql: &str) {
        let tools = tools();
        let mut cmd = Command::new(&tools.client);
        cmd.arg("--no-defaults")
            .arg("--protocol=socket")
            .arg(format!("--socket={}", self.socket().display()))
            .arg("--user=root")
            .arg("--default-character-set=utf8mb4")
            .arg("--batch");
        if let Some(db) = db {
            cmd.arg(format!("--database={db}"));
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", tools.client.display()));
        let mut stdin = child.stdin.take().expect("stdin");
        let input = sql.to_owned();
        let writer = thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let output = child
            .wait_with_output()
            .expect("waiting for mariadb client");
        let _ = writer.join();
        if !output.status.success() {
            panic!(
                "SQL failed on port {} ({}):\n{}\nSQL:\n{sql}",
                self.port,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(child) = child.take() {
            terminate(child, libc::SIGKILL, STOP_TIMEOUT);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn row_to_text(row: mysql_async::Row) -> Vec<Option<String>> {
    row.unwrap()
        .into_iter()
        .map(|v| match v {
            mysql_async::Value::NULL => None,
            mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            other => Some(other.as_sql(true).trim_matches('\'').to_owned()),
        })
        .collect()
}

// ---------------------------------------------------------------- tools

struct Tools {
    mariadbd: PathBuf,
    install_db: PathBuf,
    client: PathBuf,
    version: String,
}

fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let mariadbd = find_program("mariadbd").unwrap_or_else(|| panic!("{MISSING}"));
        let install_db = find_program("mariadb-install-db").unwrap_or_else(|| panic!("{MISSING}"));
        let client = find_program("mariadb").unwrap_or_else(|| {
            panic!("mariadb (client) not found: run scripts/mariadb.sh install (or apt-get install mariadb-client)")
        });
        let out = Command::new(&mariadbd)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("running {} --version: {e}", mariadbd.display()));
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Tools {
            mariadbd,
            install_db,
            client,
            version,
        }
    })
}

fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"]
        .iter()
        .map(PathBuf::from)
        .collect();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

// ---------------------------------------------------------------- template

/// Initialises (once per machine and server version) the template datadir.
fn template_datadir() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(build_template)
}

fn template_root() -> PathBuf {
    match option_env!("CARGO_TARGET_TMPDIR") {
        Some(dir) => PathBuf::from(dir).join("mariadb-template"),
        None => std::env::temp_dir().join("pikachu-mariadb-template"),
    }
}

fn build_template() -> PathBuf {
    let tools = tools();
    let root = template_root();
    fs::create_dir_all(&root).unwrap_or_else(|e| panic!("creating {}: {e}", root.display()));

    let mut hasher = DefaultHasher::new();
    (
        TEMPLATE_REVISION,
        TEMPLATE_SQL,
        INNODB_ARGS,
        &tools.version,
        is_root(),
    )
        .hash(&mut hasher);
    let key = format!("{:016x}", hasher.finish());
    let dir = root.join(&key);
    let data = dir.join("data");
    let ready = dir.join("ready");

    // Parallel test processes: one builds, the others wait for the lock.
    let lock_path = root.join("lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", lock_path.display()));
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        panic!(
            "locking {}: {}",
            lock_path.display(),
            io::Error::last_os_error()
        );
    }
    if ready.exists() {
        return data;
    }

    // Templates of other server versions (or harness revisions) and
    // half-built ones: gone.
    if let Ok(entries) = fs::read_dir(&root) {
        for entry in entries.flatten() {
            if entry.file_name() != "lock" && entry.path().is_dir() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let tmp = root.join(format!("{key}.tmp-{}", std::process::id()));
    fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("creating {}: {e}", tmp.display()));
    let sql = tmp.join("setup.sql");
    fs::write(&sql, TEMPLATE_SQL).expect("writing setup.sql");
    let log_path = tmp.join("install.log");
    let log = fs::File::create(&log_path).expect("creating install.log");
    let mut cmd = Command::new(&tools.install_db);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", tmp.join("data").display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg("--skip-name-resolve")
        .arg(format!("--extra-file={}", sql.display()))
        .args(INNODB_ARGS);
    if is_root() {
        cmd.arg("--user=root");
    }
    let status = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", tools.install_db.display()));
    if !status.success() {
        panic!(
            "mariadb-install-db failed ({status}); last lines of {}:\n{}",
            log_path.display(),
            tail(&log_path, 30)
        );
    }
    fs::rename(&tmp, &dir)
        .unwrap_or_else(|e| panic!("renaming {} to {}: {e}", tmp.display(), dir.display()));
    fs::write(&ready, &tools.version).expect("writing template marker");
    data
    // `lock` is released here.
}

fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- server folders

const DIR_PREFIX: &str = "pikachu-mariadb-";

/// Where server folders go: `$PIKACHU_TEST_SERVER_DIR`, else `/dev/shm`
/// (tmpfs: copying the template there takes ~20 ms instead of ~150 ms on
/// disk), else the system temp dir.
fn server_base_dirs() -> Vec<PathBuf> {
    let mut bases = Vec::new();
    if let Some(dir) = std::env::var_os("PIKACHU_TEST_SERVER_DIR") {
        bases.push(PathBuf::from(dir));
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && unsafe { libc::access(c"/dev/shm".as_ptr(), libc::W_OK) } == 0 {
        bases.push(shm.to_owned());
    }
    let tmp = std::env::temp_dir();
    // A unix socket path must fit in 108 bytes.
    if tmp.as_os_str().len() <= 60 {
        bases.push(tmp);
    }
    bases.push(PathBuf::from("/tmp"));
    bases
}

fn new_server_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{DIR_PREFIX}{}-{n}", std::process::id());
    let mut errors = Vec::new();
    for base in server_base_dirs() {
        let dir = base.join(&name);
        let _ = fs::remove_dir_all(&dir);
        match fs::create_dir_all(&dir) {
            Ok(()) => return dir,
            Err(e) => errors.push(format!("{}: {e}", dir.display())),
        }
    }
    panic!("cannot create a server folder: {}", errors.join("; "))
}

/// Removes server folders of test processes that no longer exist.
fn sweep_stale_dirs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for base in server_base_dirs() {
            let Ok(entries) = fs::read_dir(&base) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
                    continue;
                };
                let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                    continue;
                };
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
    });
}

// ---------------------------------------------------------------- processes

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

fn server_args(dir: &Path, port: u16, opts: &ServerOptions) -> Vec<String> {
    // Its own tmpdir: temporary tables in the shared /tmp were seen deleted
    // under a running server (`Error on delete of '/tmp/#sql-temptable-…'`).
    let _ = std::fs::create_dir_all(dir.join("tmp"));
    let mut args = vec![
        "--no-defaults".to_owned(),
        // Must come first: it resets the names of the other logs.
        "--log-basename=mysql".to_owned(),
        format!("--datadir={}", dir.join("data").display()),
        format!("--tmpdir={}", dir.join("tmp").display()),
        format!("--port={port}"),
        "--bind-address=127.0.0.1".to_owned(),
        format!("--socket={}", dir.join("mysqld.sock").display()),
        format!("--pid-file={}", dir.join("mysqld.pid").display()),
        format!("--log-error={}", dir.join("error.log").display()),
    ];
    if is_root() {
        args.push("--user=root".to_owned());
    }
    args.extend(INNODB_ARGS.iter().map(|s| s.to_string()));
    args.extend(BASE_ARGS.iter().map(|s| s.to_string()));
    args.extend(DEFAULT_BINLOG_ARGS.iter().map(|s| s.to_string()));
    args.extend(opts.extra_args.iter().cloned());
    args
}

enum Launch {
    PortInUse(String),
    Failed(String),
}

/// Starts mariadbd and waits until it answers on its socket.
fn launch(tools: &Tools, dir: &Path, args: &[String]) -> Result<Child, Launch> {
    let socket = dir.join("mysqld.sock");
    let error_log = dir.join("error.log");
    let _ = fs::remove_file(dir.join("mysqld.pid"));
    // Only this attempt's messages in the log, to tell a port clash apart.
    let log_start = fs::metadata(&error_log).map(|m| m.len()).unwrap_or(0);
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("mariadbd.out"))
        .expect("opening mariadbd.out");

    let mut cmd = Command::new(&tools.mariadbd);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("mariadbd.out"))
        .stderr(out);
    let mut child = spawn_tied_to_process(cmd)
        .map_err(|e| Launch::Failed(format!("spawning {}: {e}", tools.mariadbd.display())))?;
    register(child.id(), dir);

    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            unregister(child.id());
            let log = read_from(&error_log, log_start);
            let msg = format!(
                "mariadbd exited during start-up ({status}); last lines of {}:\n{}",
                error_log.display(),
                last_lines(&log, 30)
            );
            return Err(
                if log.contains("Address already in use") || log.contains("Bind on TCP/IP port") {
                    Launch::PortInUse(msg)
                } else {
                    Launch::Failed(msg)
                },
            );
        }
        if answers(&socket) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let pid = child.id();
            terminate(child, libc::SIGKILL, STOP_TIMEOUT);
            return Err(Launch::Failed(format!(
                "mariadbd (pid {pid}) did not answer within {START_TIMEOUT:?}; last lines of {}:\n{}",
                error_log.display(),
                tail(&error_log, 30)
            )));
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Whether a server answers with a protocol-10 handshake on `socket`. The
/// socket is private to this server, so this can't be fooled by another
/// server that took our TCP port.
fn answers(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && head[4] == 10
}

/// Signals `child` and waits for it (SIGKILL after `timeout`).
fn terminate(mut child: Child, signal: i32, timeout: Duration) {
    let pid = child.id();
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            Ok(None) => thread::sleep(POLL_INTERVAL),
        }
    }
    unregister(pid);
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` so that it gets SIGKILL when this process ends, however it
/// ends. PR_SET_PDEATHSIG fires when the spawning *thread* exits, so all
/// servers are spawned by one thread that lives as long as the process.
fn spawn_tied_to_process(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("mariadbd-spawner".into())
            .spawn(move || {
                // Never returns: `tx` lives in a static.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the mariadbd spawner thread");
        unsafe {
            libc::atexit(kill_servers_at_exit);
        }
        Mutex::new(tx)
    });

    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl.
            if libc::getppid() != parent {
                return Err(io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("mariadbd spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("mariadbd spawner thread is gone"))?
}

/// Servers running now: pid and folder.
static LIVE: Mutex<Vec<(u32, PathBuf)>> = Mutex::new(Vec::new());

fn register(pid: u32, dir: &Path) {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((pid, dir.to_owned()));
}

fn unregister(pid: u32) {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(p, _)| *p != pid);
}

/// On a normal exit (also after failed tests): kill the servers still
/// running, i.e. the shared one, and remove their folders.
extern "C" fn kill_servers_at_exit() {
    let live = match LIVE.try_lock() {
        Ok(live) => live,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    for (pid, dir) in live.iter() {
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
            libc::waitpid(*pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
        let _ = fs::remove_dir_all(dir);
    }
}

// ---------------------------------------------------------------- logs

fn read_from(path: &Path, offset: u64) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let start = (offset as usize).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => last_lines(&String::from_utf8_lossy(&bytes), lines),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
