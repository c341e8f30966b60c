//! Unit tests of loading: the Go seed example and its defaults, extensions, warnings.

use std::path::PathBuf;
use std::time::Duration;

use super::*;

const SEED: &str = r#"database:
  host: "localhost"
  port: 3306
  user: "root"
  password: "password"
  database: "test_db"
  server_id: 100

log:
  level: "info"  # debug, info, warn, error, fatal, panic
  format: "text" # text, json

server:
  enabled: true  # health server
  port: 8080
  path: "/health"

tasks:
- task_id: "user_monitor"
  name: "用户表变更监控"
  table_name: "users"
  events: ["insert", "update", "delete"]
  callback_url: "https://api.example.com/webhook/user"

- task_id: "order_monitor"
  name: "订单表变更监控"
  table_name: "orders"
  events: ["insert", "update"]
  callback_url: "https://api.example.com/webhook/order"
"#;

const MINIMAL_DB: &str = "database:\n  host: h\n  port: 3306\n  user: u\n  password: \"\"\n  database: d\n  server_id: 7\n";

fn ok(text: &str) -> Loaded {
    from_str(text, "config.yaml", None).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn seed_example_loads_with_documented_defaults() {
    let loaded = ok(SEED);
    assert_eq!(loaded.warnings, Vec::<String>::new());
    let c = loaded.config;
    assert_eq!(
        c.database,
        DatabaseConfig {
            host: "localhost".into(),
            port: 3306,
            user: "root".into(),
            password: Secret::new("password"),
            database: "test_db".into(),
            server_id: 100,
            charset: None,
            tls: TlsMode::Preferred,
            tls_ca: None,
            connect_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(10),
        }
    );
    assert_eq!(
        c.log,
        LogConfig {
            level: LogLevel::Info,
            format: LogFormat::Text,
            file: None
        }
    );
    assert_eq!(
        c.server,
        ServerConfig {
            enabled: true,
            bind: "0.0.0.0".into(),
            port: 8080,
            path: "/health".into(),
            down_after: Duration::from_secs(30),
            stall_after: Duration::from_secs(300),
        }
    );
    assert_eq!(
        c.dispatcher,
        DispatcherConfig {
            worker_count: 16,
            queue_size: 10_000,
            timeout: Duration::from_secs(30),
            max_retries: 3,
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(60),
        }
    );
    assert_eq!(c.state_dir, PathBuf::from("./data"));
    assert_eq!(c.start, StartPosition::Latest);
    assert_eq!(c.checkpoint.interval, Duration::from_secs(1));
    assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(c.callback_host, None);
    assert_eq!(c.tasks.len(), 2);
    let t = &c.tasks[0];
    assert_eq!(t.task_id, "user_monitor");
    assert_eq!(t.name, "用户表变更监控");
    assert_eq!(t.database, None);
    assert_eq!(t.table_name, "users");
    assert_eq!(
        t.events,
        vec![EventKind::Insert, EventKind::Update, EventKind::Delete]
    );
    assert_eq!(t.callback_url, "https://api.example.com/webhook/user");
    assert_eq!(t.secret, None);
    assert!(t.headers.is_empty());
    assert_eq!(t.batch, None);
    assert_eq!(t.on_failure, OnFailure::DeadLetter);
    assert_eq!(
        c.tasks[1].events,
        vec![EventKind::Insert, EventKind::Update]
    );
}

#[test]
fn omitted_sections_take_defaults() {
    let text = format!(
        "{MINIMAL_DB}tasks:\n- task_id: a\n  name: n\n  table_name: t\n  events: [delete]\n  callback_url: http://x/y\n"
    );
    let c = ok(&text).config;
    assert!(!c.server.enabled);
    assert_eq!(c.server.port, 8080);
    assert_eq!(c.server.path, "/health");
    assert_eq!(c.log.level, LogLevel::Info);
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.database.password.expose(), "");
}

#[test]
fn extensions_are_decoded() {
    let text = format!(
        r#"{MINIMAL_DB}  tls: verify_identity
  tls_ca: /etc/ca.pem
  charset: utf8mb4
  connect_timeout: 1m30s
  heartbeat: 500ms
log: {{level: fatal, format: json, file: /var/log/p.log}}
server: {{bind: 127.0.0.1, port: 9090}}
dispatcher:
  worker_count: 4
  queue_size: 10
  timeout: 2s
  max_retries: 0
  retry_base_delay: 100ms
  retry_max_delay: 1.5h
state_dir: /var/lib/pikachu
start: {{file: mysql-bin.000003, pos: 4}}
checkpoint: {{interval: 250ms}}
shutdown_timeout: 5s
callback_host: "http://api:9000/"
tasks:
- task_id: a
  name: n
  table_name: shop.orders
  events: [update, insert, update]
  callback_url: /hook/user
  secret: s3cr3t
  headers:
    X-Zeta: "1"
    Authorization: Bearer t
  batch: {{max_events: 50}}
  on_failure: block
"#
    );
    let c = ok(&text).config;
    assert_eq!(c.database.tls, TlsMode::VerifyIdentity);
    assert_eq!(c.database.tls_ca, Some(PathBuf::from("/etc/ca.pem")));
    assert_eq!(c.database.charset.as_deref(), Some("utf8mb4"));
    assert_eq!(c.database.connect_timeout, Duration::from_secs(90));
    assert_eq!(c.database.heartbeat, Duration::from_millis(500));
    assert_eq!(c.log.level, LogLevel::Fatal);
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.file, Some(PathBuf::from("/var/log/p.log")));
    assert_eq!((c.server.bind.as_str(), c.server.port), ("127.0.0.1", 9090));
    assert_eq!(c.dispatcher.worker_count, 4);
    assert_eq!(c.dispatcher.max_retries, 0);
    assert_eq!(c.dispatcher.retry_max_delay, Duration::from_secs(5400));
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/pikachu"));
    assert_eq!(
        c.start,
        StartPosition::FilePos {
            file: "mysql-bin.000003".into(),
            pos: 4
        }
    );
    assert_eq!(c.checkpoint.interval, Duration::from_millis(250));
    assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
    let t = &c.tasks[0];
    assert_eq!(t.database.as_deref(), Some("shop"));
    assert_eq!(t.table_name, "orders");
    assert_eq!(t.events, vec![EventKind::Update, EventKind::Insert]);
    assert_eq!(t.callback_url, "http://api:9000/hook/user");
    assert_eq!(t.secret.as_ref().map(Secret::expose), Some("s3cr3t"));
    assert_eq!(
        t.headers,
        vec![
            ("X-Zeta".to_owned(), "1".to_owned()),
            ("Authorization".to_owned(), "Bearer t".to_owned())
        ]
    );
    assert_eq!(
        t.batch,
        Some(BatchConfig {
            max_events: 50,
            max_wait: Duration::from_secs(1)
        })
    );
    assert_eq!(t.on_failure, OnFailure::Block);
}

#[test]
fn start_positions() {
    let base = format!(
        "{MINIMAL_DB}tasks:\n- {{task_id: a, name: n, table_name: t, events: [insert], callback_url: 'http://x'}}\n"
    );
    let start = |s: &str| ok(&format!("{base}start: {s}\n")).config.start;
    assert_eq!(start("latest"), StartPosition::Latest);
    assert_eq!(start("earliest"), StartPosition::Earliest);
    assert_eq!(
        start("{gtid: 0-1-100}"),
        StartPosition::Gtid("0-1-100".into())
    );
    // Either flavour's form, as the config does not know the server's.
    for gtid in [
        "0-1-100, 1-2-3",
        "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7-9",
        "3e11fa47-71ca-11e1-9e33-c80aa9429562:1,3E11FA47-71CA-11E1-9E33-C80AA9429563:1-100",
    ] {
        assert_eq!(
            start(&format!("{{gtid: \"{gtid}\"}}")),
            StartPosition::Gtid(gtid.into())
        );
    }
    assert_eq!(
        start("{file: mysql-bin.000001}"),
        StartPosition::FilePos {
            file: "mysql-bin.000001".into(),
            pos: 4
        }
    );
}

#[test]
fn callback_host_joining() {
    let text = |host: &str, url: &str| {
        format!("{MINIMAL_DB}callback_host: \"{host}\"\ntasks:\n- {{task_id: a, name: n, table_name: t, events: [insert], callback_url: \"{url}\"}}\n")
    };
    let url = |host: &str, u: &str| ok(&text(host, u)).config.tasks[0].callback_url.clone();
    assert_eq!(
        url("http://api:9000", "/hook/user"),
        "http://api:9000/hook/user"
    );
    assert_eq!(
        url("http://api:9000/", "/hook/user"),
        "http://api:9000/hook/user"
    );
    assert_eq!(
        url("http://api:9000", "hook/user"),
        "http://api:9000/hook/user"
    );
    assert_eq!(url("http://api:9000", "https://other/x"), "https://other/x");
}

#[test]
fn env_interpolation_in_values() {
    let pass = "PIKACHU_CFG_UNIT_ENV_PASS";
    let port = "PIKACHU_CFG_UNIT_ENV_PORT";
    std::env::set_var(pass, "from env: #not yaml");
    std::env::set_var(port, "3307");
    let text = format!(
        "database:\n  host: ${{{missing}:-db.local}}\n  port: ${{{port}}}\n  user: u\n  password: \"${{{pass}}}\"\n  database: d\n  server_id: 7\ntasks:\n- {{task_id: a, name: 'cost $$5', table_name: t, events: [insert], callback_url: 'http://x'}}\n",
        missing = "PIKACHU_CFG_UNIT_ENV_SURELY_UNSET"
    );
    let c = ok(&text).config;
    assert_eq!(c.database.host, "db.local");
    assert_eq!(c.database.port, 3307);
    assert_eq!(c.database.password.expose(), "from env: #not yaml");
    assert_eq!(c.tasks[0].name, "cost $5");
}

#[test]
fn secret_is_not_printed() {
    let s = Secret::new("hunter2");
    assert_eq!(format!("{s} {s:?}"), "*** ***");
    let c = ok(SEED).config;
    assert!(!format!("{c:?}").contains("password\""), "{c:?}");
    assert!(!format!("{:?}", c.database).contains("\"password\""));
}

#[test]
fn numbers_in_string_settings_are_kept_as_written() {
    let text = SEED.replace("password: \"password\"", "password: 0123456");
    assert_eq!(ok(&text).config.database.password.expose(), "0123456");
    let text = SEED.replace("password: \"password\"", "password:");
    assert_eq!(ok(&text).config.database.password.expose(), "");
}

#[test]
fn go_only_keys_warn() {
    let text = format!(
        "{SEED}monitor:\n  event_queue_size: 10000\ndispatcher:\n  max_connections: 100\n  shutdown_timeout: 12s\nlog_x: 1\n"
    );
    // `log_x` is unknown: error, not a warning.
    assert!(from_str(&text, "config.yaml", None).is_err());
    let text = text.replace("log_x: 1\n", "");
    let loaded = ok(&text);
    assert_eq!(loaded.config.shutdown_timeout, Duration::from_secs(12));
    assert_eq!(
        loaded.warnings,
        vec![
            "config.yaml:30: `monitor` is a setting of the Go pikachu and has no effect here; its event queue does not exist here (see `dispatcher.queue_size`)".to_owned(),
            "config.yaml:33: `dispatcher.max_connections` is a setting of the Go pikachu and has no effect here".to_owned(),
        ]
    );
}

#[test]
fn go_production_example_loads() {
    // Shape of the Go tool's config.prod.yaml plus tasks.yaml.
    let main = r#"database:
  connect_timeout: 10s
  read_timeout: 30s
  host: "prod-db.example.com"
  port: 3306
  user: "pikachu_prod"
  password: "secure_password_here"
  database: "production_db"
  server_id: 1001
log:
  directory: "logs"
  max_size: 100
  max_backups: 5
  max_age: 7
  level: "warn"
  format: "json"
server:
  enabled: true
  port: 8080
  path: "/health"
dispatcher:
  shutdown_timeout: 30s
  worker_count: 10
  queue_size: 500
  timeout: 60s
  max_retries: 5
  retry_base_delay: 30s
  retry_max_delay: 60s
  max_connections: 100
  max_idle_conns: 20
  idle_conn_timeout: 90s
monitor:
  event_queue_size: 5000
  event_queue_timeout: 10s
callback_host: "https://api.example.com"
"#;
    let tasks = "tasks:\n  - task_id: \"user_monitor\"\n    name: \"u\"\n    table_name: \"users\"\n    events: [\"insert\"]\n    callback_url: \"/webhook/user\"\n";
    let loaded = from_str(main, "config.prod.yaml", Some((tasks, "tasks.yaml")))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.warnings.len(), 9, "{:#?}", loaded.warnings);
    assert!(loaded.warnings[0].starts_with("config.prod.yaml:3: `database.read_timeout`"));
    assert_eq!(
        loaded.config.tasks[0].callback_url,
        "https://api.example.com/webhook/user"
    );
    assert_eq!(loaded.config.log.level, LogLevel::Warn);
}

#[test]
fn tasks_file_forms_concatenate() {
    let list =
        "- {task_id: b, name: n, table_name: t, events: [insert], callback_url: 'http://x'}\n";
    let c = from_str(SEED, "config.yaml", Some((list, "tasks.yaml")))
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    let ids: Vec<&str> = c.tasks.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(ids, ["user_monitor", "order_monitor", "b"]);
    let mapping = format!("tasks:\n{list}");
    let c = from_str(MINIMAL_DB, "config.yaml", Some((&mapping, "tasks.yaml")))
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    assert_eq!(c.tasks.len(), 1);
}

#[test]
fn load_reads_files() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let main = dir.path().join("config.yaml");
    let tasks = dir.path().join("tasks.yaml");
    std::fs::write(&main, MINIMAL_DB).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        &tasks,
        "- {task_id: b, name: n, table_name: t, events: [insert], callback_url: 'http://x'}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let loaded = load(&main, Some(&tasks)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.config.tasks[0].task_id, "b");
    let missing = dir.path().join("nope.yaml");
    let err = load(&missing, None).map(|_| ()).unwrap_err();
    assert!(err.to_string().starts_with("cannot read "), "{err}");
    assert!(err.to_string().contains("nope.yaml"), "{err}");
}
