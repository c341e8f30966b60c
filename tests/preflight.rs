//! Preflight against real MariaDB servers: each failure the checks know,
//! with the exact message the operator sees, the all-ok case, database TLS
//! (required / verify_ca / verify_identity / preferred fallback) with
//! certificates made here, and `pikachu check` exit codes.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pikachu::preflight::{self, Finding, Mode, Report, Status};
use support::{MariaDb, ServerOptions};

/// What a test config says; `yaml()` renders it.
#[derive(Clone)]
struct Cfg {
    host: String,
    port: u16,
    user: String,
    password: String,
    database: String,
    server_id: u32,
    tls: &'static str,
    tls_ca: Option<PathBuf>,
    tables: Vec<String>,
}

impl Cfg {
    fn new(db: &MariaDb, database: &str, tables: &[&str]) -> Cfg {
        Cfg {
            host: "127.0.0.1".into(),
            port: db.port,
            user: support::mariadb::USER.into(),
            password: support::mariadb::PASSWORD.into(),
            database: database.into(),
            server_id: 4242,
            // The test servers have no TLS; `preferred` would add a WARN.
            tls: "disabled",
            tls_ca: None,
            tables: tables.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn user(mut self, user: &str, password: &str) -> Cfg {
        self.user = user.into();
        self.password = password.into();
        self
    }

    fn yaml(&self) -> String {
        let mut y = format!(
            "database:\n  host: \"{}\"\n  port: {}\n  user: \"{}\"\n  password: \"{}\"\n  database: \"{}\"\n  server_id: {}\n  connect_timeout: \"5s\"\n  tls: \"{}\"\n",
            self.host, self.port, self.user, self.password, self.database, self.server_id, self.tls
        );
        if let Some(ca) = &self.tls_ca {
            y.push_str(&format!("  tls_ca: \"{}\"\n", ca.display()));
        }
        y.push_str("tasks:\n");
        for (i, t) in self.tables.iter().enumerate() {
            y.push_str(&format!(
                "- task_id: \"t{i}\"\n  name: \"t{i}\"\n  table_name: \"{t}\"\n  events: [\"insert\"]\n  callback_url: \"http://127.0.0.1:9/hook\"\n"
            ));
        }
        y
    }

    fn check(&self) -> Report {
        let loaded = pikachu::config::from_str(&self.yaml(), "test.yaml", None)
            .unwrap_or_else(|e| panic!("config: {e}\n{}", self.yaml()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(preflight::run(&loaded.config, Mode::Check))
    }
}

fn all(report: &Report) -> String {
    report.lines().join("\n")
}

/// The single finding of `check`, with `status`.
fn only<'a>(report: &'a Report, check: &str, status: Status) -> &'a Finding {
    let found = report.of(check);
    assert_eq!(
        found.len(),
        1,
        "expected one `{check}` finding; report:\n{}",
        all(report)
    );
    assert_eq!(
        found[0].status,
        status,
        "`{check}` finding; report:\n{}",
        all(report)
    );
    found[0]
}

fn assert_msg(report: &Report, check: &str, status: Status, expected: &str) {
    let f = only(report, check, status);
    assert_eq!(f.message, expected, "report:\n{}", all(report));
}

fn assert_contains(report: &Report, check: &str, status: Status, parts: &[&str]) {
    let f = only(report, check, status);
    for p in parts {
        assert!(
            f.message.contains(p),
            "`{check}` message lacks {p:?}: {}\nreport:\n{}",
            f.message,
            all(report)
        );
    }
}

/// A database with one table `users`, on `db`.
fn database_with_users(db: &MariaDb, prefix: &str) -> String {
    let name = db.fresh_database(prefix);
    db.exec_in(&name, "CREATE TABLE users (id INT PRIMARY KEY, name TEXT)");
    name
}

/// Creates (or re-creates) `user`@`%` with password `pw` and runs `grants`
/// (with `{u}` standing for the account).
fn make_user(db: &MariaDb, user: &str, pw: &str, grants: &[&str]) {
    let account = format!("'{user}'@'%'");
    let mut sql =
        format!("DROP USER IF EXISTS {account}; CREATE USER {account} IDENTIFIED BY '{pw}';");
    for g in grants {
        sql.push_str(&g.replace("{u}", &account));
        sql.push(';');
    }
    db.exec(&sql);
}

// ---------------------------------------------------------------- all ok

#[test]
fn all_checks_pass_on_a_well_configured_server() {
    let db = MariaDb::shared();
    let name = database_with_users(db, "pf_ok");
    let report = Cfg::new(db, &name, &["users"]).check();
    assert!(report.passed(), "{}", all(&report));
    assert_eq!(report.warnings().count(), 0, "{}", all(&report));
    let connect = only(&report, "connect", Status::Ok);
    assert!(
        connect.message.starts_with(&format!(
            "connected to 127.0.0.1:{} as 'pikachu' without TLS (database.tls: disabled): MariaDB 1",
            db.port
        )),
        "{}",
        connect.message
    );
    assert!(
        connect.message.ends_with(", server_id 1"),
        "{}",
        connect.message
    );
    assert_msg(
        &report,
        "privileges",
        Status::Ok,
        "user 'pikachu'@'%' has SELECT, REPLICATION SLAVE, REPLICATION CLIENT",
    );
    assert_msg(&report, "log_bin", Status::Ok, "binary log is on");
    assert_msg(&report, "binlog_format", Status::Ok, "binlog_format is ROW");
    assert_msg(
        &report,
        "binlog_row_image",
        Status::Ok,
        "binlog_row_image is FULL",
    );
    assert_msg(
        &report,
        "binlog_row_metadata",
        Status::Ok,
        "binlog_row_metadata is FULL",
    );
    assert_contains(
        &report,
        "server_id",
        Status::Ok,
        &["server_id 4242 is not the server's own (1)"],
    );
    assert_msg(
        &report,
        "tables",
        Status::Ok,
        &format!("1 configured table exists: `{name}`.`users`"),
    );
    assert_msg(
        &report,
        "retention",
        Status::Ok,
        "binlog retention: no automatic purge (binlog files are kept until purged by hand)",
    );
    let server = report.server.as_ref().expect("server info");
    assert_eq!(server.flavour, pikachu::source::connect::Flavour::MariaDb);
    assert_eq!(server.server_id, 1);
}

// ---------------------------------------------------------------- privileges

#[test]
fn a_user_lacking_each_privilege_in_turn_is_told_the_grant() {
    let db = MariaDb::shared();
    let name = database_with_users(db, "pf_priv");
    let all_three = ["SELECT", "REPLICATION SLAVE", "REPLICATION CLIENT"];
    for (i, missing) in all_three.iter().enumerate() {
        let user = format!("pf_lack{i}");
        let have: Vec<&str> = all_three.iter().copied().filter(|p| p != missing).collect();
        let grant = format!("GRANT {} ON *.* TO {{u}}", have.join(", "));
        make_user(db, &user, "pw", &[&grant]);
        let report = Cfg::new(db, &name, &["users"]).user(&user, "pw").check();
        assert_msg(
            &report,
            "privileges",
            Status::Fail,
            &format!(
                "user '{user}'@'%' lacks the privilege {missing}: run `GRANT {missing} ON *.* TO '{user}'@'%';`"
            ),
        );
        assert!(!report.passed());
    }
    make_user(db, "pf_lack_all", "pw", &[]);
    let report = Cfg::new(db, &name, &["users"])
        .user("pf_lack_all", "pw")
        .check();
    assert_msg(
        &report,
        "privileges",
        Status::Fail,
        "user 'pf_lack_all'@'%' lacks the privileges SELECT, REPLICATION SLAVE, REPLICATION CLIENT: run `GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'pf_lack_all'@'%';`",
    );
}

#[test]
fn select_on_the_configured_database_only_is_enough() {
    let db = MariaDb::shared();
    let name = database_with_users(db, "pf_dbsel");
    let grants = [
        format!("GRANT SELECT ON `{name}`.* TO {{u}}"),
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO {u}".to_string(),
    ];
    let grants: Vec<&str> = grants.iter().map(String::as_str).collect();
    make_user(db, "pf_dbsel", "pw", &grants);
    let report = Cfg::new(db, &name, &["users"])
        .user("pf_dbsel", "pw")
        .check();
    only(&report, "privileges", Status::Ok);

    // SELECT on another database does not count.
    make_user(
        db,
        "pf_othersel",
        "pw",
        &[
            "GRANT SELECT ON `some_other_db`.* TO {u}",
            "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO {u}",
        ],
    );
    let report = Cfg::new(db, &name, &["users"])
        .user("pf_othersel", "pw")
        .check();
    assert_msg(
        &report,
        "privileges",
        Status::Fail,
        "user 'pf_othersel'@'%' lacks the privilege SELECT: run `GRANT SELECT ON *.* TO 'pf_othersel'@'%';`",
    );
}

#[test]
fn all_privileges_counts() {
    let db = MariaDb::shared();
    let name = database_with_users(db, "pf_all");
    make_user(
        db,
        "pf_allpriv",
        "pw",
        &["GRANT ALL PRIVILEGES ON *.* TO {u}"],
    );
    let report = Cfg::new(db, &name, &["users"])
        .user("pf_allpriv", "pw")
        .check();
    assert_msg(
        &report,
        "privileges",
        Status::Ok,
        "user 'pf_allpriv'@'%' has SELECT, REPLICATION SLAVE, REPLICATION CLIENT",
    );
    // pf_allpriv may list the replicas: the server_id check sees them.
    assert_contains(
        &report,
        "server_id",
        Status::Ok,
        &["nor that of a connected replica"],
    );
}

#[test]
fn privileges_through_a_default_role_count_and_an_inactive_role_is_named() {
    let db = MariaDb::shared();
    let name = database_with_users(db, "pf_role");
    // Nested: pf_role_outer gives replication and pf_role_inner (SELECT).
    db.exec(
        "DROP ROLE IF EXISTS pf_role_outer; DROP ROLE IF EXISTS pf_role_inner;
         CREATE ROLE pf_role_inner; GRANT SELECT ON *.* TO pf_role_inner;
         CREATE ROLE pf_role_outer; GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO pf_role_outer;
         GRANT pf_role_inner TO pf_role_outer;",
    );
    make_user(
        db,
        "pf_roleuser",
        "pw",
        &[
            "GRANT pf_role_outer TO {u}",
            "SET DEFAULT ROLE pf_role_outer FOR {u}",
        ],
    );
    let report = Cfg::new(db, &name, &["users"])
        .user("pf_roleuser", "pw")
        .check();
    assert_msg(
        &report,
        "privileges",
        Status::Ok,
        "user 'pf_roleuser'@'%' has SELECT, REPLICATION SLAVE, REPLICATION CLIENT",
    );

    // The same role granted but not active at login gives nothing.
    make_user(db, "pf_roleoff", "pw", &["GRANT pf_role_outer TO {u}"]);
    let report = Cfg::new(db, &name, &["users"])
        .user("pf_roleoff", "pw")
        .check();
    assert_msg(
        &report,
        "privileges",
        Status::Fail,
        "user 'pf_roleoff'@'%' lacks the privileges SELECT, REPLICATION SLAVE, REPLICATION CLIENT: run `GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'pf_roleoff'@'%';` (or, if the role `pf_role_outer` has them: it is granted but not active at login; run `SET DEFAULT ROLE `pf_role_outer` FOR 'pf_roleoff'@'%';`)",
    );
}

// ---------------------------------------------------------------- binlog settings

fn dedicated(args: &[&str]) -> (MariaDb, String) {
    let db = MariaDb::start(ServerOptions::with_args(args.iter().copied()));
    let name = database_with_users(&db, "pf_ded");
    (db, name)
}

#[test]
fn binlog_format_statement_fails_with_the_fix() {
    let (db, name) = dedicated(&["--binlog-format=STATEMENT"]);
    let report = Cfg::new(&db, &name, &["users"]).check();
    assert_msg(
        &report,
        "binlog_format",
        Status::Fail,
        "binlog_format is STATEMENT, but pikachu needs ROW (only row events carry the changed rows): run `SET GLOBAL binlog_format = 'ROW';` and add `binlog_format=ROW` under [mysqld] in my.cnf (SET GLOBAL applies to new sessions)",
    );
    assert!(!report.passed());
    assert_eq!(report.failures().count(), 1, "{}", all(&report));
}

#[test]
fn row_image_minimal_warns() {
    let (db, name) = dedicated(&["--binlog-row-image=MINIMAL"]);
    let report = Cfg::new(&db, &name, &["users"]).check();
    assert_msg(
        &report,
        "binlog_row_image",
        Status::Warn,
        "binlog_row_image is MINIMAL: updates and deletes carry only the key and the changed columns, so old_data and new_data lack the other columns; for whole rows run `SET GLOBAL binlog_row_image = 'FULL';` and add `binlog_row_image=FULL` under [mysqld] in my.cnf (SET GLOBAL applies to new sessions)",
    );
    assert!(report.passed(), "a WARN is not a failure: {}", all(&report));
}

#[test]
fn row_metadata_minimal_warns_with_the_reason() {
    let (db, name) = dedicated(&["--binlog-row-metadata=MINIMAL"]);
    let report = Cfg::new(&db, &name, &["users"]).check();
    assert_msg(
        &report,
        "binlog_row_metadata",
        Status::Warn,
        "binlog_row_metadata is MINIMAL: column names are not in the binlog, so pikachu follows each table's definition through the DDL statements it reads (its schema history), and stops when it cannot know the definition a change was written with (a DDL it cannot parse, or one not in the binlog); run `SET GLOBAL binlog_row_metadata = 'FULL';` and add `binlog_row_metadata=FULL` under [mysqld] in my.cnf (SET GLOBAL applies to new sessions)",
    );
    assert!(report.passed(), "{}", all(&report));
}

#[test]
fn binlog_off_fails_with_the_my_cnf_line() {
    let (db, name) = dedicated(&["--skip-log-bin"]);
    let report = Cfg::new(&db, &name, &["users"]).check();
    assert_msg(
        &report,
        "log_bin",
        Status::Fail,
        "binary logging is off on the server, so there are no changes to read: add `log-bin=mysql-bin` under [mysqld] in my.cnf and restart the server",
    );
    assert!(report.of("retention").is_empty(), "{}", all(&report));
}

#[test]
fn short_binlog_retention_warns_and_a_long_one_is_reported() {
    let (db, name) = dedicated(&["--binlog-expire-logs-seconds=7200"]);
    let report = Cfg::new(&db, &name, &["users"]).check();
    assert_msg(
        &report,
        "retention",
        Status::Warn,
        "binlog retention is only 2 hours: if pikachu is stopped or behind for longer, the server purges the binlog it must resume from and those changes are lost; run `SET GLOBAL binlog_expire_logs_seconds = 604800;` and add `binlog_expire_logs_seconds=604800` under [mysqld] in my.cnf (7 days)",
    );
    db.exec("SET GLOBAL binlog_expire_logs_seconds = 604800");
    let report = Cfg::new(&db, &name, &["users"]).check();
    assert_msg(&report, "retention", Status::Ok, "binlog retention 7 days");
}

// ---------------------------------------------------------------- tables

#[test]
fn a_missing_table_gets_a_did_you_mean() {
    let db = MariaDb::shared();
    let name = database_with_users(db, "pf_tbl");
    let other = db.fresh_database("pf_tbl_other");
    db.exec_in(&other, "CREATE TABLE orders (id INT PRIMARY KEY)");
    db.exec_in(&name, "CREATE VIEW users_view AS SELECT id FROM users");
    let report = Cfg::new(
        db,
        &name,
        &[
            "users",
            "usres",
            "orders",
            "users_view",
            "pf_no_such_db_x.users",
        ],
    )
    .check();
    let tables = report.of("tables");
    let msgs: Vec<(Status, &str)> = tables
        .iter()
        .map(|f| (f.status, f.message.as_str()))
        .collect();
    assert_eq!(
        msgs,
        vec![
            (
                Status::Ok,
                format!("1 configured table exists: `{name}`.`users`").as_str()
            ),
            (
                Status::Fail,
                format!("table `{name}`.`usres` (task t1) does not exist (did you mean `users`?): fix table_name, or create the table").as_str()
            ),
            (
                Status::Fail,
                format!("table `{name}`.`orders` (task t2) does not exist (there is `{other}`.`orders`: write table_name: {other}.orders): fix table_name, or create the table").as_str()
            ),
            (
                Status::Fail,
                format!("`{name}`.`users_view` (task t3) is a view: views have no row changes in the binlog; set table_name to the table the view reads").as_str()
            ),
            (
                Status::Fail,
                "table `pf_no_such_db_x`.`users` (task t4) does not exist: there is no database `pf_no_such_db_x` (fix the db. prefix of table_name)"
            ),
        ]
    );
}

// ---------------------------------------------------------------- server_id

#[test]
fn server_id_equal_to_the_servers_fails() {
    let db = MariaDb::shared();
    let name = database_with_users(db, "pf_sid");
    let mut cfg = Cfg::new(db, &name, &["users"]);
    cfg.server_id = 1;
    let report = cfg.check();
    assert_msg(
        &report,
        "server_id",
        Status::Fail,
        "database.server_id 1 is the server's own server_id: set database.server_id to another number, unique among the server and its replicas (e.g. 1001)",
    );
}

#[test]
fn server_id_of_a_connected_replica_fails() {
    let db = MariaDb::shared();
    let name = database_with_users(db, "pf_rep");
    let replica_id = 777_001;
    // A replica registered with `replica_id`, streaming the binlog.
    let url = db.root_url();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let replica = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).expect("url"))
                .await
                .expect("replica connects");
            let stream = conn
                .get_binlog_stream(mysql_async::BinlogStreamRequest::new(replica_id))
                .await
                .expect("binlog stream");
            // Hold the stream until told to stop.
            tokio::task::spawn_blocking(move || stop_rx.recv())
                .await
                .ok();
            drop(stream);
        });
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !db
        .query("SHOW SLAVE HOSTS")
        .iter()
        .any(|r| r[0].as_deref() == Some("777001"))
    {
        assert!(Instant::now() < deadline, "the replica never registered");
        std::thread::sleep(Duration::from_millis(20)); // poll interval
    }
    make_user(
        db,
        "pf_replview",
        "pw",
        &["GRANT ALL PRIVILEGES ON *.* TO {u}"],
    );
    let mut cfg = Cfg::new(db, &name, &["users"]).user("pf_replview", "pw");
    cfg.server_id = replica_id;
    let report = cfg.check();
    let _ = stop_tx.send(());
    let _ = replica.join();
    assert_msg(
        &report,
        "server_id",
        Status::Fail,
        "database.server_id 777001 is already used by a replica connected to the server (from 127.0.0.1): two replicas with one id disconnect each other over and over; set database.server_id to an unused number (e.g. 778001). If that replica is an earlier pikachu that just stopped, the server drops it within a minute",
    );
}

// ---------------------------------------------------------------- connecting

#[test]
fn a_wrong_password_is_told_apart() {
    let db = MariaDb::shared();
    let name = database_with_users(db, "pf_pw");
    let report = Cfg::new(db, &name, &["users"])
        .user("pikachu", "not-the-password")
        .check();
    assert_eq!(report.findings.len(), 1, "{}", all(&report));
    assert_msg(
        &report,
        "connect",
        Status::Fail,
        &format!(
            "the database at 127.0.0.1:{} refused user 'pikachu': Access denied for user 'pikachu'@'127.0.0.1' (using password: YES) (check database.user and database.password)",
            db.port
        ),
    );
}

fn unused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn a_wrong_port_is_connection_refused() {
    let db = MariaDb::shared();
    let mut cfg = Cfg::new(db, "x", &["users"]);
    cfg.port = unused_port();
    let report = cfg.check();
    assert_msg(
        &report,
        "connect",
        Status::Fail,
        &format!(
            "cannot connect to the database at 127.0.0.1:{}: connection refused (is the server running, and listening on this port?)",
            cfg.port
        ),
    );
}

#[test]
fn an_unknown_host_is_a_name_resolution_error() {
    let db = MariaDb::shared();
    let mut cfg = Cfg::new(db, "x", &["users"]);
    cfg.host = "pikachu-no-such-host.invalid".into();
    let report = cfg.check();
    assert_contains(
        &report,
        "connect",
        Status::Fail,
        &[
            "cannot connect to the database at pikachu-no-such-host.invalid:",
            "cannot resolve host 'pikachu-no-such-host.invalid'",
            "check database.host",
        ],
    );
}

// ---------------------------------------------------------------- TLS

struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    fn other_ca(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }
    fn cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("server-key.pem")
    }
}

fn make_ca(cn: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let cert = params.self_signed(&key).expect("self-signed CA");
    (cert, rcgen::Issuer::new(params, key))
}

/// A CA and a server certificate it signed, for the name `localhost` only.
fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, issuer) = make_ca("pikachu test CA");
        let (other, _) = make_ca("some other CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        let certs = Certs { dir };
        std::fs::write(certs.ca(), ca.pem()).expect("write");
        std::fs::write(certs.other_ca(), other.pem()).expect("write");
        std::fs::write(certs.cert(), cert.pem()).expect("write");
        std::fs::write(certs.key(), key.serialize_pem()).expect("write");
        certs
    })
}

/// One server with TLS for all TLS tests of this process.
fn tls_server() -> &'static (MariaDb, String) {
    static SERVER: OnceLock<(MariaDb, String)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let c = certs();
        let args = [
            format!("--ssl-cert={}", c.cert().display()),
            format!("--ssl-key={}", c.key().display()),
            format!("--ssl-ca={}", c.ca().display()),
        ];
        let db = MariaDb::start(ServerOptions::with_args(args));
        let name = database_with_users(&db, "pf_tls");
        (db, name)
    })
}

fn tls_cfg(mode: &'static str, ca: Option<&Path>) -> Cfg {
    let (db, name) = tls_server();
    let mut cfg = Cfg::new(db, name, &["users"]);
    cfg.tls = mode;
    cfg.tls_ca = ca.map(Path::to_path_buf);
    cfg
}

#[test]
fn tls_required_and_preferred_encrypt_without_verifying() {
    for mode in ["required", "preferred"] {
        let report = tls_cfg(mode, None).check();
        assert!(report.passed(), "{mode}: {}", all(&report));
        assert_eq!(report.warnings().count(), 0, "{mode}: {}", all(&report));
        assert_contains(
            &report,
            "connect",
            Status::Ok,
            &["with TLS (certificate not verified)"],
        );
    }
}

#[test]
fn tls_verify_ca_checks_the_chain_but_not_the_name() {
    // The certificate is for `localhost`; we dial 127.0.0.1.
    let report = tls_cfg("verify_ca", Some(&certs().ca())).check();
    assert!(report.passed(), "{}", all(&report));
    assert_contains(
        &report,
        "connect",
        Status::Ok,
        &["with TLS (certificate verified)"],
    );

    let report = tls_cfg("verify_ca", Some(&certs().other_ca())).check();
    assert_msg(
        &report,
        "connect",
        Status::Fail,
        &format!(
            "cannot connect to the database at 127.0.0.1:{}: the server's TLS certificate is not signed by a CA trusted here (database.tls_ca '{}'); or use database.tls: required to encrypt without verifying",
            tls_server().0.port,
            certs().other_ca().display()
        ),
    );
}

#[test]
fn tls_verify_identity_checks_the_name() {
    let report = tls_cfg("verify_identity", Some(&certs().ca())).check();
    assert_msg(
        &report,
        "connect",
        Status::Fail,
        &format!(
            "cannot connect to the database at 127.0.0.1:{}: the server's TLS certificate is for localhost, not '127.0.0.1' (database.tls: verify_identity): connect with database.host set to a name in the certificate, or use tls: verify_ca",
            tls_server().0.port
        ),
    );
    let mut cfg = tls_cfg("verify_identity", Some(&certs().ca()));
    cfg.host = "localhost".into();
    let report = cfg.check();
    assert!(report.passed(), "{}", all(&report));
    assert_contains(
        &report,
        "connect",
        Status::Ok,
        &["with TLS (certificate verified)"],
    );
}

#[test]
fn tls_against_a_server_without_tls() {
    let db = MariaDb::shared();
    let name = database_with_users(db, "pf_notls");
    let mut cfg = Cfg::new(db, &name, &["users"]);
    cfg.tls = "required";
    let report = cfg.check();
    assert_msg(
        &report,
        "connect",
        Status::Fail,
        &format!(
            "cannot connect to the database at 127.0.0.1:{}: the server does not support TLS but database.tls is required: enable TLS on the server (ssl_cert and ssl_key under [mysqld] in my.cnf), or set database.tls: preferred",
            db.port
        ),
    );

    cfg.tls = "preferred";
    let report = cfg.check();
    assert!(report.passed(), "{}", all(&report));
    assert_contains(
        &report,
        "connect",
        Status::Ok,
        &["without TLS (the server does not support it)"],
    );
    assert_msg(
        &report,
        "tls",
        Status::Warn,
        &format!(
            "the connection to 127.0.0.1:{} is not encrypted: the server does not support TLS (database.tls: preferred); enable TLS on the server (ssl_cert and ssl_key under [mysqld] in my.cnf), or set database.tls: disabled to accept a plain connection",
            db.port
        ),
    );

    cfg.tls = "verify_ca";
    cfg.tls_ca = Some(PathBuf::from("/nonexistent/pikachu-ca.pem"));
    let report = cfg.check();
    assert_contains(
        &report,
        "connect",
        Status::Fail,
        &["cannot read database.tls_ca '/nonexistent/pikachu-ca.pem'"],
    );
}

// ---------------------------------------------------------------- pikachu check

fn run_check(yaml: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_pikachu"))
        .arg("check")
        .arg("-config")
        .arg(&path)
        .output()
        .expect("run pikachu check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn pikachu_check_prints_the_list_and_exits_0_1_or_2() {
    let db = MariaDb::shared();
    let name = database_with_users(db, "pf_bin");

    let (code, out, err) = run_check(&Cfg::new(db, &name, &["users"]).yaml());
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ok   config "), "{out}");
    assert!(lines.iter().all(|l| l.starts_with("ok   ")), "{out}");
    assert!(lines.contains(&"ok   binlog_format is ROW"), "{out}");

    let (code, out, err) = run_check(&Cfg::new(db, &name, &["users", "usres"]).yaml());
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.lines().any(|l| l
            == format!("FAIL table `{name}`.`usres` (task t1) does not exist (did you mean `users`?): fix table_name, or create the table")),
        "{out}"
    );

    let mut cfg = Cfg::new(db, &name, &["users"]);
    cfg.port = unused_port();
    let (code, out, _) = run_check(&cfg.yaml());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL cannot connect to the database at 127.0.0.1:"),
        "{out}"
    );

    let (code, out, err) = run_check("database: [not a mapping]\n");
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.starts_with("error: "), "{err}");
}

/// Without SELECT the configured tables are invisible in information_schema:
/// `check` says what is missing once (the privilege, with the GRANT), not
/// also that the table or its database does not exist.
#[test]
fn a_user_without_select_gets_one_fail_with_the_grant() {
    let db = MariaDb::shared();
    let name = database_with_users(db, "pf_nosel");
    make_user(
        db,
        "pf_nosel",
        "pw",
        &["GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO {u}"],
    );
    let cfg = Cfg::new(db, &name, &["users"]).user("pf_nosel", "pw");
    let report = cfg.check();
    assert_msg(
        &report,
        "privileges",
        Status::Fail,
        "user 'pf_nosel'@'%' lacks the privilege SELECT: run `GRANT SELECT ON *.* TO 'pf_nosel'@'%';`",
    );
    assert_eq!(report.failures().count(), 1, "report:\n{}", all(&report));

    let (code, out, err) = run_check(&cfg.yaml());
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(
        fails,
        vec!["FAIL user 'pf_nosel'@'%' lacks the privilege SELECT: run `GRANT SELECT ON *.* TO 'pf_nosel'@'%';`"],
        "{out}"
    );
    assert!(!out.contains("does not exist"), "{out}");
}
