//! Typed decoding of the spanned YAML tree: key paths, types, ranges, enums,
//! defaults, unknown keys (with hints) and the Go pikachu's keys we ignore.
//!
//! Cross-field checks that need the whole config (URL joining, duplicate
//! task ids, "no tasks") are in `validate`, fed by the [`Draft`] built here.

use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::duration::{format_duration, parse_duration};
use super::env;
use super::node::{Doc, Node};
use super::suggest;
use super::{
    BatchConfig, BreakerConfig, CheckpointConfig, ConfigError, DatabaseConfig, Diagnostic,
    DispatcherConfig, EventKind, LogConfig, LogFormat, LogLevel, OnFailure, Secret, ServerConfig,
    SnapshotConfig, SnapshotMode, StartPosition, TaskConfig, TaskLimits, TlsMode, WhenFull,
};

type R<T> = Result<T, ConfigError>;

// Allowed ranges of the numeric and duration settings (README, "Configuration
// reference"). Wide enough for any real deployment; a value outside is a
// typo or a unit mix-up, and would otherwise overflow timers or allocate
// without bound.
const MS: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_WORKERS: i128 = 10_000;
const MAX_QUEUE: i128 = 1_000_000;
const MAX_RETRIES: i128 = 1_000;
const MAX_BATCH_EVENTS: i128 = 10_000;
/// Rows per snapshot chunk: a chunk is held in memory until its high
/// watermark, so this bounds the snapshot's memory.
const MAX_CHUNK_SIZE: i128 = 100_000;

/// Keys of the Go pikachu (tiyee/pikachu `internal/types/types.go`) that do
/// nothing here: accepted with a warning. `(key, hint)`.
const GO_TOP: &[(&str, &str)] = &[(
    "monitor",
    "; its event queue does not exist here (see `dispatcher.queue_size`)",
)];
const GO_DATABASE: &[(&str, &str)] = &[(
    "read_timeout",
    "; the replication heartbeat is `database.heartbeat`",
)];
const GO_LOG: &[(&str, &str)] = &[
    ("directory", "; use `log.file` and external rotation"),
    ("max_size", "; use `log.file` and external rotation"),
    ("max_backups", "; use `log.file` and external rotation"),
    ("max_age", "; use `log.file` and external rotation"),
];
const GO_DISPATCHER: &[(&str, &str)] = &[
    ("max_connections", ""),
    ("max_idle_conns", ""),
    ("idle_conn_timeout", ""),
    (
        "batch_size",
        "; batching is per task here (`tasks[].batch`)",
    ),
    (
        "batch_timeout",
        "; batching is per task here (`tasks[].batch`)",
    ),
];

/// A source position with its snippet, kept for checks made after decoding.
#[derive(Debug, Clone)]
pub(crate) struct Spot {
    origin: String,
    line: u64,
    column: u64,
    snippet: String,
}

impl Spot {
    fn new(doc: Doc<'_>, loc: &Location) -> Spot {
        let d = doc.diag(loc, None, String::new());
        Spot {
            origin: d.origin,
            line: d.line,
            column: d.column,
            snippet: d.snippet,
        }
    }

    pub(crate) fn diag(&self, key: &str, message: String) -> Diagnostic {
        Diagnostic {
            origin: self.origin.clone(),
            line: self.line,
            column: self.column,
            key: Some(key.to_owned()),
            message,
            snippet: self.snippet.clone(),
        }
    }

    /// `file:line:col`, for mentioning a second place in a message.
    pub(crate) fn at(&self) -> String {
        format!("{}:{}:{}", self.origin, self.line, self.column)
    }
}

/// A value with the location it came from.
#[derive(Debug, Clone)]
pub(crate) struct Located<T> {
    pub value: T,
    pub spot: Spot,
    pub path: String,
}

/// A task before cross-task checks; `config.callback_url` is as written.
#[derive(Debug, Clone)]
pub(crate) struct DraftTask {
    pub config: TaskConfig,
    pub path: String,
    pub task_id: Spot,
    pub callback_url: Spot,
}

/// Everything decoded, before cross-field validation.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub database: DatabaseConfig,
    pub log: LogConfig,
    pub server: ServerConfig,
    pub dispatcher: DispatcherConfig,
    pub state_dir: PathBuf,
    pub start: StartPosition,
    pub checkpoint: CheckpointConfig,
    pub shutdown_timeout: Duration,
    pub callback_host: Option<Located<String>>,
    pub snapshot: SnapshotConfig,
    pub tasks: Vec<DraftTask>,
    /// Where "no tasks" is reported: the `tasks` key, else the top of the main file.
    pub tasks_spot: Spot,
}

/// Decodes the main document and the optional tasks document.
pub(crate) fn decode(
    main: Doc<'_>,
    tasks_doc: Option<Doc<'_>>,
    warnings: &mut Vec<String>,
) -> R<Draft> {
    let root_node = main.parse()?;
    let root = Val::root(main, &root_node);
    if matches!(root.node.value, Node::Null) {
        return Err(root.err(
            ConfigError::Missing,
            "the file is empty; it needs at least `database:` and `tasks:`".to_owned(),
        ));
    }
    let top = top_fields(&root, warnings)?;

    let database = database(top.require("database")?, warnings)?;
    let log = log_or_default(&top, warnings)?;
    let server = match top.get("server") {
        Some(v) => server(v, warnings)?,
        None => default_server(),
    };
    let (dispatcher, go_shutdown) = match top.get("dispatcher") {
        Some(v) => dispatcher(v, warnings)?,
        None => (default_dispatcher(), None),
    };
    let shutdown_timeout = shutdown_timeout(&top, go_shutdown, warnings)?;
    let state_dir = match top.get("state_dir") {
        Some(v) => PathBuf::from(v.non_empty_string()?),
        None => PathBuf::from("./data"),
    };
    let start = match top.get("start") {
        Some(v) => start(v)?,
        None => StartPosition::Latest,
    };
    let checkpoint = checkpoint_or_default(&top, warnings)?;
    let snapshot = snapshot_or_default(&top, warnings)?;
    let callback_host = callback_host(&top)?;

    let tasks_spot = match top.key_loc("tasks") {
        Some(loc) => Spot::new(main, loc),
        None => Spot::new(main, &root.node.referenced),
    };
    let tasks = all_tasks(&top, tasks_doc, warnings)?;
    sort_by_line(warnings, main.origin);

    Ok(Draft {
        database,
        log,
        server,
        dispatcher,
        state_dir,
        start,
        checkpoint,
        shutdown_timeout,
        callback_host,
        snapshot,
        tasks,
        tasks_spot,
    })
}

/// The top-level keys of the main document (unknown keys rejected, the Go tool's warned about).
fn top_fields<'a>(root: &Val<'a>, warnings: &mut Vec<String>) -> R<Fields<'a>> {
    root.fields(
        &[
            "database",
            "log",
            "server",
            "dispatcher",
            "tasks",
            "callback_host",
            "state_dir",
            "start",
            "checkpoint",
            "shutdown_timeout",
            "snapshot",
        ],
        GO_TOP,
        warnings,
    )
}

/// The `log` section, or the default log settings when it is absent.
fn log_or_default(top: &Fields<'_>, warnings: &mut Vec<String>) -> R<LogConfig> {
    Ok(match top.get("log") {
        Some(v) => log(v, warnings)?,
        None => LogConfig {
            level: LogLevel::default(),
            format: LogFormat::default(),
            file: None,
        },
    })
}

/// `shutdown_timeout`, else the Go `dispatcher.shutdown_timeout`, else 30 s (warns when both are set).
fn shutdown_timeout(
    top: &Fields<'_>,
    go_shutdown: Option<Located<Duration>>,
    warnings: &mut Vec<String>,
) -> R<Duration> {
    Ok(match (top.get("shutdown_timeout"), go_shutdown) {
        (Some(v), go) => {
            if let Some(go) = go {
                warnings.push(format!(
                    "{}:{}: `dispatcher.shutdown_timeout` is overridden by `shutdown_timeout`",
                    go.spot.origin, go.spot.line
                ));
            }
            v.duration_in(Duration::ZERO, HOUR)?
        }
        (None, Some(go)) => go.value,
        (None, None) => Duration::from_secs(30),
    })
}

/// The `checkpoint` section, or a 1 s checkpoint interval when it is absent.
fn checkpoint_or_default(top: &Fields<'_>, warnings: &mut Vec<String>) -> R<CheckpointConfig> {
    Ok(match top.get("checkpoint") {
        Some(v) => {
            let f = v.fields(&["interval"], &[], warnings)?;
            CheckpointConfig {
                interval: f.duration_in_or("interval", MS, HOUR, Duration::from_secs(1))?,
            }
        }
        None => CheckpointConfig {
            interval: Duration::from_secs(1),
        },
    })
}

/// The `snapshot` section, or the default snapshot settings when it is absent.
fn snapshot_or_default(top: &Fields<'_>, warnings: &mut Vec<String>) -> R<SnapshotConfig> {
    Ok(match top.get("snapshot") {
        Some(v) => {
            let f = v.fields(&["chunk_size"], &[], warnings)?;
            let mut s = SnapshotConfig::default();
            if let Some(v) = f.get("chunk_size") {
                s.chunk_size = v.count_in(MAX_CHUNK_SIZE)?;
            }
            s
        }
        None => SnapshotConfig::default(),
    })
}

/// `callback_host` with where it was written, if given.
fn callback_host(top: &Fields<'_>) -> R<Option<Located<String>>> {
    Ok(match top.get("callback_host") {
        Some(v) => Some(Located {
            value: v.string()?,
            spot: v.spot(),
            path: v.path.clone(),
        }),
        None => None,
    })
}

/// The tasks of the main document's `tasks` key, then those of the tasks document.
fn all_tasks(
    top: &Fields<'_>,
    tasks_doc: Option<Doc<'_>>,
    warnings: &mut Vec<String>,
) -> R<Vec<DraftTask>> {
    let mut tasks = match top.get("tasks") {
        Some(v) => task_list(v, warnings)?,
        None => Vec::new(),
    };
    if let Some(doc) = tasks_doc {
        tasks.extend(tasks_file(doc, warnings)?);
    }
    Ok(tasks)
}

/// Sorts the warnings by their line in the file `origin` (those without one last).
fn sort_by_line(warnings: &mut [String], origin: &str) {
    // Report the main file's remarks in line order (sections are decoded out of order).
    let line_of = |w: &String| {
        w.strip_prefix(origin)
            .and_then(|rest| rest.strip_prefix(':'))
            .and_then(|rest| rest.split(':').next())
            .and_then(|line| line.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    warnings.sort_by_key(line_of);
}

fn database(v: Val<'_>, warnings: &mut Vec<String>) -> R<DatabaseConfig> {
    let f = v.fields(
        &[
            "host",
            "port",
            "user",
            "password",
            "database",
            "server_id",
            "charset",
            "tls",
            "tls_ca",
            "connect_timeout",
            "heartbeat",
        ],
        GO_DATABASE,
        warnings,
    )?;
    let host = f.require("host")?.non_empty_string()?;
    let port = f.require("port")?.port()?;
    let user = f.require("user")?.non_empty_string()?;
    let password = match f.require_key("password")? {
        v if matches!(v.node.value, Node::Null) => String::new(),
        v => v.string().map_err(without_snippet)?,
    };
    let database = f.require("database")?.non_empty_string()?;
    let server_id = f.require("server_id")?.int_in_hint(
        1,
        u32::MAX.into(),
        "; pick an id unique among the server's replicas (e.g. 100)",
    )?;
    let charset = f.get("charset").map(|v| v.non_empty_string()).transpose()?;
    let tls = match f.get("tls") {
        Some(v) => v.choice(&TlsMode::ALL, "TLS mode")?,
        None => TlsMode::default(),
    };
    let tls_ca = f
        .get("tls_ca")
        .map(|v| v.non_empty_string().map(PathBuf::from))
        .transpose()?;
    Ok(DatabaseConfig {
        host,
        port,
        user,
        password: Secret::new(password),
        database,
        server_id: u32::try_from(server_id).unwrap_or(u32::MAX),
        charset,
        tls,
        tls_ca,
        connect_timeout: f.duration_in_or("connect_timeout", MS, HOUR, Duration::from_secs(10))?,
        heartbeat: f.duration_in_or("heartbeat", MS, HOUR, Duration::from_secs(10))?,
    })
}

fn log(v: Val<'_>, warnings: &mut Vec<String>) -> R<LogConfig> {
    let f = v.fields(&["level", "format", "file"], GO_LOG, warnings)?;
    Ok(LogConfig {
        level: match f.get("level") {
            Some(v) => v.choice(&LogLevel::ALL, "log level")?,
            None => LogLevel::default(),
        },
        format: match f.get("format") {
            Some(v) => v.choice(&LogFormat::ALL, "log format")?,
            None => LogFormat::default(),
        },
        file: f
            .get("file")
            .map(|v| v.non_empty_string().map(PathBuf::from))
            .transpose()?,
    })
}

fn default_server() -> ServerConfig {
    ServerConfig {
        enabled: false,
        bind: "0.0.0.0".to_owned(),
        port: 8080,
        path: "/health".to_owned(),
        down_after: Duration::from_secs(30),
        stall_after: Duration::from_secs(300),
    }
}

fn server(v: Val<'_>, warnings: &mut Vec<String>) -> R<ServerConfig> {
    let f = v.fields(
        &[
            "enabled",
            "bind",
            "port",
            "path",
            "down_after",
            "stall_after",
        ],
        &[],
        warnings,
    )?;
    let mut server = default_server();
    if let Some(v) = f.get("enabled") {
        server.enabled = v.boolean()?;
    }
    if let Some(v) = f.get("bind") {
        let bind = v.non_empty_string()?;
        if bind.chars().any(char::is_whitespace) {
            return Err(v.err(
                ConfigError::Invalid,
                format!("invalid bind address `{bind}`"),
            ));
        }
        server.bind = bind;
    }
    if let Some(v) = f.get("port") {
        server.port = v.port()?;
    }
    if let Some(v) = f.get("path") {
        server.path = health_path(&v)?;
    }
    server.down_after = f.duration_in_or("down_after", MS, DAY, server.down_after)?;
    server.stall_after = f.duration_in_or("stall_after", MS, WEEK, server.stall_after)?;
    Ok(server)
}

/// `server.path`: a plain path (the health server routes it as written, so
/// no `{capture}`, `*` or `:` patterns) that is not one of the fixed paths.
fn health_path(v: &Val<'_>) -> R<String> {
    let path = v.string()?;
    let plain = |c: char| c.is_ascii_alphanumeric() || "-._~/".contains(c);
    if !path.starts_with('/') || !path.chars().all(plain) {
        return Err(v.err(
            ConfigError::Invalid,
            format!(
                "invalid path `{}`; it must start with `/` and contain only letters, digits and `-._~/`, e.g. /health",
                path.escape_debug()
            ),
        ));
    }
    if super::SERVER_FIXED_PATHS.contains(&path.as_str()) {
        return Err(v.err(
            ConfigError::Invalid,
            format!(
                "`{path}` is taken: the server always serves {} itself; choose another health path, e.g. /health",
                super::SERVER_FIXED_PATHS.join(", ")
            ),
        ));
    }
    Ok(path)
}

fn default_dispatcher() -> DispatcherConfig {
    DispatcherConfig {
        worker_count: 16,
        queue_size: 10_000,
        timeout: Duration::from_secs(30),
        max_retries: 3,
        retry_base_delay: Duration::from_secs(1),
        retry_max_delay: Duration::from_secs(60),
    }
}

/// The dispatcher section and the Go `dispatcher.shutdown_timeout`, if given.
fn dispatcher(
    v: Val<'_>,
    warnings: &mut Vec<String>,
) -> R<(DispatcherConfig, Option<Located<Duration>>)> {
    let f = v.fields(
        &[
            "worker_count",
            "queue_size",
            "timeout",
            "max_retries",
            "retry_base_delay",
            "retry_max_delay",
            "shutdown_timeout",
        ],
        GO_DISPATCHER,
        warnings,
    )?;
    let mut d = default_dispatcher();
    if let Some(v) = f.get("worker_count") {
        d.worker_count = v.count_in(MAX_WORKERS)?;
    }
    if let Some(v) = f.get("queue_size") {
        d.queue_size = v.count_in(MAX_QUEUE)?;
    }
    d.timeout = f.duration_in_or("timeout", MS, HOUR, d.timeout)?;
    if let Some(v) = f.get("max_retries") {
        d.max_retries = u32::try_from(v.int_in(0, MAX_RETRIES)?).unwrap_or(u32::MAX);
    }
    d.retry_base_delay = f.duration_in_or("retry_base_delay", MS, HOUR, d.retry_base_delay)?;
    let max_delay = f.get("retry_max_delay");
    if let Some(v) = &max_delay {
        d.retry_max_delay = v.duration_in(MS, DAY)?;
    }
    if d.retry_max_delay < d.retry_base_delay {
        let message = format!(
            "retry_max_delay ({:?}) must not be smaller than retry_base_delay ({:?})",
            d.retry_max_delay, d.retry_base_delay
        );
        let at = match max_delay.or_else(|| f.get("retry_base_delay")) {
            Some(v) => v,
            None => v.clone(),
        };
        return Err(at.err(ConfigError::Invalid, message));
    }
    let go_shutdown = match f.get("shutdown_timeout") {
        Some(v) => Some(Located {
            value: v.duration_in(Duration::ZERO, HOUR)?,
            spot: v.spot(),
            path: v.path.clone(),
        }),
        None => None,
    };
    Ok((d, go_shutdown))
}

fn start(v: Val<'_>) -> R<StartPosition> {
    const WORDS: [(&str, bool); 2] = [("latest", true), ("earliest", false)];
    match &v.node.value {
        Node::Map(_) => {
            let mut ignored = Vec::new();
            let f = v.fields(&["file", "pos", "gtid"], &[], &mut ignored)?;
            if let Some(gtid) = f.get("gtid") {
                if let Some(other) = f.get("file").or_else(|| f.get("pos")) {
                    return Err(other.err(
                        ConfigError::Invalid,
                        "give either `gtid` or `file`/`pos`, not both".to_owned(),
                    ));
                }
                return Ok(StartPosition::Gtid(gtid_set(&gtid)?));
            }
            let file = f.require("file")?.non_empty_string()?;
            let pos = match f.get("pos") {
                // Binlog event headers hold positions in 32 bits.
                Some(v) => u64::try_from(v.int_in(4, u32::MAX.into())?).unwrap_or(4),
                None => 4,
            };
            Ok(StartPosition::FilePos { file, pos })
        }
        Node::Str(_) => match v.choice(&WORDS, "start position") {
            Ok(true) => Ok(StartPosition::Latest),
            Ok(false) => Ok(StartPosition::Earliest),
            Err(e) => Err(e),
        },
        _ => Err(v.wrong_type("`latest`, `earliest`, `{file: ..., pos: ...}` or `{gtid: ...}`")),
    }
}

/// `start.gtid`: a MariaDB GTID position (`domain-server-seq`, comma
/// separated) or a MySQL GTID set (`uuid:interval[:interval…]`, comma
/// separated). The config does not know the server's flavour: either form
/// is accepted here, the reader checks it against the server.
fn gtid_set(v: &Val<'_>) -> R<String> {
    let text = v.non_empty_string()?;
    let mariadb = text.split(',').all(|part| {
        let mut it = part.trim().split('-');
        let ok = (
            it.next().map(str::parse::<u32>),
            it.next().map(str::parse::<u32>),
            it.next().map(str::parse::<u64>),
        );
        matches!(ok, (Some(Ok(_)), Some(Ok(_)), Some(Ok(_)))) && it.next().is_none()
    });
    let mysql = || {
        text.split(',').all(|part| !part.trim().is_empty())
            && super::parse_mysql_gtid_set(&text).is_ok_and(|s| !s.is_empty())
    };
    if mariadb || mysql() {
        return Ok(text);
    }
    Err(v.err(
        ConfigError::Invalid,
        format!(
            "`{}` is not a GTID position; write MariaDB's domain-server-sequence (e.g. \"0-1-100\", several separated by commas) or a MySQL GTID set (e.g. \"3E11FA47-71CA-11E1-9E33-C80AA9429562:1-100\", i.e. uuid:1-100)",
            text.escape_debug()
        ),
    ))
}

fn task_list(v: Val<'_>, warnings: &mut Vec<String>) -> R<Vec<DraftTask>> {
    v.seq()?
        .into_iter()
        .map(|item| task(item, warnings))
        .collect()
}

fn tasks_file(doc: Doc<'_>, warnings: &mut Vec<String>) -> R<Vec<DraftTask>> {
    let root_node = doc.parse()?;
    let root = Val::root(doc, &root_node);
    match &root.node.value {
        Node::Null => Ok(Vec::new()),
        Node::Seq(_) => task_list(root.child_path("tasks"), warnings),
        Node::Map(_) => {
            let f = root.fields(&["tasks"], &[], warnings)?;
            match f.get("tasks") {
                Some(v) => task_list(v, warnings),
                None => Ok(Vec::new()),
            }
        }
        _ => Err(root.wrong_type("a list of tasks or a mapping with `tasks:`")),
    }
}

/// A task's `max_in_flight`, `rate_limit`, `breaker`, `backlog` and
/// `dead_letter_on`.
fn limits(f: &Fields<'_>, warnings: &mut Vec<String>) -> R<TaskLimits> {
    let mut limits = TaskLimits::default();
    if let Some(v) = f.get("max_in_flight") {
        limits.max_in_flight = Some(v.count_in(MAX_WORKERS)?);
    }
    if let Some(v) = f.get("rate_limit") {
        limits.rate_limit = Some(v.int_in_hint(1, 1_000_000, " (requests per second)")? as u32);
    }
    if let Some(v) = f.get("breaker") {
        let b = v.fields(&["failures", "cooldown", "max_cooldown"], &[], warnings)?;
        let d = BreakerConfig::default();
        let failures = match b.get("failures") {
            Some(v) => v.int_in_hint(0, 1000, " (0 turns the breaker off)")? as u32,
            None => d.failures,
        };
        let cooldown = b.duration_in_or("cooldown", Duration::from_millis(10), HOUR, d.cooldown)?;
        let max_cooldown = b.duration_in_or(
            "max_cooldown",
            Duration::from_millis(10),
            HOUR,
            d.max_cooldown,
        )?;
        limits.breaker = BreakerConfig {
            failures,
            cooldown,
            max_cooldown: max_cooldown.max(cooldown),
        };
    }
    if let Some(v) = f.get("backlog") {
        let b = v.fields(&["max_bytes", "when_full"], &[], warnings)?;
        if let Some(m) = b.get("max_bytes") {
            limits.backlog.max_bytes =
                m.int_in_hint(1 << 20, 1 << 50, " (bytes of payloads; at least 1 MiB)")? as u64;
        }
        if let Some(w) = b.get("when_full") {
            limits.backlog.when_full = w.choice(&WhenFull::ALL, "backlog.when_full mode")?;
        }
    }
    if let Some(v) = f.get("dead_letter_on") {
        for item in v.seq()? {
            let code = item.int_in_hint(400, 599, " (an HTTP status of an error answer)")? as u16;
            if !limits.dead_letter_on.contains(&code) {
                limits.dead_letter_on.push(code);
            }
        }
    }
    Ok(limits)
}

fn task(v: Val<'_>, warnings: &mut Vec<String>) -> R<DraftTask> {
    let f = v.fields(
        &[
            "task_id",
            "name",
            "table_name",
            "events",
            "callback_url",
            "secret",
            "headers",
            "batch",
            "on_failure",
            "snapshot",
            "max_in_flight",
            "rate_limit",
            "breaker",
            "backlog",
            "dead_letter_on",
        ],
        &[],
        warnings,
    )?;
    let limits = limits(&f, warnings)?;
    let id_val = f.require("task_id")?;
    let task_id = id_val.non_empty_string()?;
    let name = f.require("name")?.string()?;

    let table_val = f.require("table_name")?;
    let table = table_val.non_empty_string()?;
    let (database, table_name) = match table.split_once('.') {
        Some((db, t)) if !db.is_empty() && !t.is_empty() => (Some(db.to_owned()), t.to_owned()),
        Some(_) => {
            return Err(table_val.err(
                ConfigError::Invalid,
                format!("invalid table name `{table}`; write `table` or `database.table`"),
            ))
        }
        None => (None, table),
    };

    let events_val = f.require("events")?;
    let items = events_val.seq()?;
    if items.is_empty() {
        return Err(events_val.err(
            ConfigError::Invalid,
            "must list at least one of insert, update, delete".to_owned(),
        ));
    }
    let table_of_events: Vec<(&str, EventKind)> =
        EventKind::ALL.iter().map(|k| (k.as_str(), *k)).collect();
    let mut events = Vec::new();
    for item in items {
        let kind = item.choice(&table_of_events, "event")?;
        if !events.contains(&kind) {
            events.push(kind);
        }
    }

    let url_val = f.require("callback_url")?;
    let callback_url = url_val.non_empty_string()?.trim().to_owned();

    let secret = f.get("secret").map(|v| secret(&v)).transpose()?;
    let headers = match f.get("headers") {
        Some(v) => headers(v)?,
        None => Vec::new(),
    };
    let batch = match f.get("batch") {
        Some(v) => {
            let b = v.fields(&["max_events", "max_wait"], &[], warnings)?;
            Some(BatchConfig {
                max_events: b.require("max_events")?.count_in(MAX_BATCH_EVENTS)?,
                max_wait: b.duration_in_or(
                    "max_wait",
                    Duration::ZERO,
                    HOUR,
                    Duration::from_secs(1),
                )?,
            })
        }
        None => None,
    };
    let on_failure = match f.get("on_failure") {
        Some(v) => v.choice(&OnFailure::ALL, "on_failure mode")?,
        None => OnFailure::default(),
    };
    let snapshot = match f.get("snapshot") {
        Some(v) => v.choice(&SnapshotMode::ALL, "snapshot mode")?,
        None => SnapshotMode::default(),
    };
    Ok(DraftTask {
        config: TaskConfig {
            task_id,
            name,
            database,
            table_name,
            events,
            callback_url,
            secret,
            headers,
            batch,
            on_failure,
            snapshot,
            limits,
        },
        path: v.path.clone(),
        task_id: id_val.spot(),
        callback_url: url_val.spot(),
    })
}

/// A task's `secret`: a `whsec_` secret must carry base64 (the key is
/// derived as delivery derives it); the value is never shown.
fn secret(v: &Val<'_>) -> R<Secret> {
    let text = v.non_empty_string().map_err(without_snippet)?;
    if let Err(problem) = super::signing_key(&text) {
        let message = if text.starts_with("whsec_") {
            "a `whsec_` secret must be followed by its key in base64 (A-Z, a-z, 0-9, +, /), \
             as Standard Webhooks writes it; without the `whsec_` prefix the text itself is the key"
                .to_owned()
        } else {
            problem.to_string()
        };
        return Err(without_snippet(v.err(ConfigError::Invalid, message)));
    }
    Ok(Secret::new(text))
}

/// `e` without its source excerpt: for errors on a secret's line, which
/// would show the secret.
fn without_snippet(mut e: ConfigError) -> ConfigError {
    match &mut e {
        ConfigError::Read { .. } => {}
        ConfigError::Syntax(d)
        | ConfigError::Missing(d)
        | ConfigError::WrongType(d)
        | ConfigError::UnknownKey(d)
        | ConfigError::Env(d)
        | ConfigError::Invalid(d) => d.snippet.clear(),
    }
    e
}

fn headers(v: Val<'_>) -> R<Vec<(String, String)>> {
    let Node::Map(entries) = &v.node.value else {
        return Err(v.wrong_type("a mapping of header names to values"));
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for (key, value) in entries {
        let name = key.value.clone();
        let path = format!("{}.{}", v.path, name);
        let is_token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || !name.chars().all(is_token) {
            return Err(ConfigError::Invalid(v.doc.diag(
                &key.referenced,
                Some(&path),
                format!("invalid HTTP header name `{name}`"),
            )));
        }
        let val = Val {
            doc: v.doc,
            node: value,
            path,
        };
        let text = if matches!(value.value, Node::Null) {
            String::new()
        } else {
            val.string()?
        };
        if text.contains(['\r', '\n']) {
            return Err(val.err(
                ConfigError::Invalid,
                "a header value must not contain line breaks".to_owned(),
            ));
        }
        out.push((name, text));
    }
    Ok(out)
}

/// A node, its document and its key path.
#[derive(Clone)]
struct Val<'a> {
    doc: Doc<'a>,
    node: &'a Spanned<Node>,
    path: String,
}

impl<'a> Val<'a> {
    fn root(doc: Doc<'a>, node: &'a Spanned<Node>) -> Val<'a> {
        Val {
            doc,
            node,
            path: String::new(),
        }
    }

    fn child_path(&self, name: &str) -> Val<'a> {
        Val {
            doc: self.doc,
            node: self.node,
            path: join(&self.path, name),
        }
    }

    fn spot(&self) -> Spot {
        Spot::new(self.doc, &self.node.referenced)
    }

    fn err(&self, kind: fn(Diagnostic) -> ConfigError, message: String) -> ConfigError {
        let key = (!self.path.is_empty()).then_some(self.path.as_str());
        kind(self.doc.diag(&self.node.referenced, key, message))
    }

    fn describe(&self) -> String {
        match &self.node.value {
            Node::Str(s) => format!("the string \"{}\"", s.escape_debug()),
            Node::Int(_) | Node::Float(_) | Node::Bool(_) => {
                let raw = self.doc.raw(self.node).unwrap_or("?");
                format!("{} `{raw}`", self.node.value.kind())
            }
            other => other.kind().to_owned(),
        }
    }

    fn wrong_type(&self, expected: &str) -> ConfigError {
        self.err(
            ConfigError::WrongType,
            format!("expected {expected}, found {}", self.describe()),
        )
    }

    fn interpolate(&self, text: &str) -> R<String> {
        env::interpolate(text).map_err(|e| self.err(ConfigError::Env, e.to_string()))
    }

    /// A string; numbers and booleans are taken as written (as the Go tool does).
    fn string(&self) -> R<String> {
        match &self.node.value {
            Node::Str(s) => self.interpolate(s),
            Node::Int(_) | Node::Float(_) | Node::Bool(_) => match self.doc.raw(self.node) {
                Some(raw) => Ok(raw.to_owned()),
                None => Err(self.wrong_type("a string")),
            },
            _ => Err(self.wrong_type("a string")),
        }
    }

    fn non_empty_string(&self) -> R<String> {
        let s = self.string()?;
        if s.trim().is_empty() {
            return Err(self.err(ConfigError::Invalid, "must not be empty".to_owned()));
        }
        Ok(s)
    }

    /// An integer in `min..=max`; a string (e.g. from `${PORT}`) is parsed.
    fn int_in(&self, min: i128, max: i128) -> R<i128> {
        self.int_in_hint(min, max, "")
    }

    /// [`Self::int_in`], with `hint` appended to an out-of-range message.
    fn int_in_hint(&self, min: i128, max: i128, hint: &str) -> R<i128> {
        let value = match &self.node.value {
            Node::Int(i) => *i,
            Node::Str(s) => {
                let text = self.interpolate(s)?;
                match text.trim().parse::<i128>() {
                    Ok(i) => i,
                    Err(_) if text != *s => {
                        return Err(self.err(
                            ConfigError::WrongType,
                            format!(
                                "expected an integer, got \"{}\" after substitution",
                                text.escape_debug()
                            ),
                        ))
                    }
                    Err(_) => return Err(self.wrong_type("an integer")),
                }
            }
            _ => return Err(self.wrong_type("an integer")),
        };
        if value < min || value > max {
            return Err(self.err(
                ConfigError::Invalid,
                format!("must be between {min} and {max}, got {value}{hint}"),
            ));
        }
        Ok(value)
    }

    fn port(&self) -> R<u16> {
        let v = self.int_in(1, u16::MAX.into())?;
        Ok(u16::try_from(v).unwrap_or(u16::MAX))
    }

    /// A count from 1 to `max`.
    fn count_in(&self, max: i128) -> R<usize> {
        let v = self.int_in(1, max)?;
        Ok(usize::try_from(v).unwrap_or(1))
    }

    fn boolean(&self) -> R<bool> {
        match &self.node.value {
            Node::Bool(b) => Ok(*b),
            Node::Str(s) => match self.interpolate(s)?.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(self.wrong_type("`true` or `false`")),
            },
            _ => Err(self.wrong_type("`true` or `false`")),
        }
    }

    /// A Go duration string such as `"30s"`.
    fn duration(&self) -> R<Duration> {
        match &self.node.value {
            Node::Str(s) => {
                let text = self.interpolate(s)?;
                parse_duration(&text).map_err(|e| self.err(ConfigError::Invalid, e.to_string()))
            }
            Node::Int(_) | Node::Float(_) => {
                let raw = self.doc.raw(self.node).unwrap_or("30");
                Err(self.err(
                    ConfigError::WrongType,
                    format!(
                        "expected a duration with a unit, found the number `{raw}`; write e.g. \"{raw}s\" (units: ns, us, ms, s, m, h)"
                    ),
                ))
            }
            _ => Err(self.wrong_type("a duration such as \"30s\"")),
        }
    }

    /// A duration in `min..=max`.
    fn duration_in(&self, min: Duration, max: Duration) -> R<Duration> {
        let d = self.duration()?;
        if d < min || d > max {
            let written = match &self.node.value {
                Node::Str(s) => self.interpolate(s)?,
                _ => format_duration(d),
            };
            return Err(self.err(
                ConfigError::Invalid,
                format!(
                    "must be between {} and {}, got {}",
                    format_duration(min),
                    format_duration(max),
                    written.trim()
                ),
            ));
        }
        Ok(d)
    }

    /// One of the names in `table`, exactly as written there.
    fn choice<T: Copy>(&self, table: &[(&str, T)], what: &str) -> R<T> {
        let Node::Str(_) = &self.node.value else {
            return Err(self.wrong_type(&format!("a {what} (a string)")));
        };
        let text = self.string()?;
        if let Some((_, value)) = table.iter().find(|(name, _)| *name == text) {
            return Ok(*value);
        }
        let names: Vec<&str> = table.iter().map(|(name, _)| *name).collect();
        Err(self.err(
            ConfigError::Invalid,
            format!(
                "unknown {what} `{text}`; expected one of {}{}",
                names.join(", "),
                suggest::hint(&text, names.iter().copied())
            ),
        ))
    }

    fn seq(&self) -> R<Vec<Val<'a>>> {
        let Node::Seq(items) = &self.node.value else {
            return Err(self.wrong_type("a list"));
        };
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, node)| Val {
                doc: self.doc,
                node,
                path: format!("{}[{i}]", self.path),
            })
            .collect())
    }

    /// The mapping's fields; unknown keys are rejected (with a hint) and the
    /// Go tool's keys in `go_only` produce a warning.
    fn fields(
        &self,
        known: &[&str],
        go_only: &[(&str, &str)],
        warnings: &mut Vec<String>,
    ) -> R<Fields<'a>> {
        let Node::Map(entries) = &self.node.value else {
            return Err(self.wrong_type("a mapping"));
        };
        for (key, _) in entries {
            let name = key.value.as_str();
            if known.contains(&name) {
                continue;
            }
            let path = join(&self.path, name);
            if let Some((_, hint)) = go_only.iter().find(|(go, _)| *go == name) {
                let d = self.doc.diag(&key.referenced, None, String::new());
                warnings.push(format!(
                    "{}:{}: `{path}` is a setting of the Go pikachu and has no effect here{hint}",
                    d.origin, d.line
                ));
                continue;
            }
            let candidates = known.iter().copied().chain(go_only.iter().map(|(k, _)| *k));
            return Err(ConfigError::UnknownKey(self.doc.diag(
                &key.referenced,
                Some(&path),
                format!("unknown key `{name}`{}", suggest::hint(name, candidates)),
            )));
        }
        Ok(Fields {
            map: self.clone(),
            entries,
        })
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The entries of a mapping whose keys were checked.
struct Fields<'a> {
    map: Val<'a>,
    entries: &'a [(Spanned<String>, Spanned<Node>)],
}

impl<'a> Fields<'a> {
    fn entry(&self, key: &str) -> Option<&'a (Spanned<String>, Spanned<Node>)> {
        self.entries.iter().find(|(k, _)| k.value == key)
    }

    fn key_loc(&self, key: &str) -> Option<&'a Location> {
        self.entry(key).map(|(k, _)| &k.referenced)
    }

    /// The value of `key`, even when it is null.
    fn present(&self, key: &str) -> Option<Val<'a>> {
        self.entry(key).map(|(_, node)| Val {
            doc: self.map.doc,
            node,
            path: join(&self.map.path, key),
        })
    }

    /// The value of `key`; absent and null are both `None`.
    fn get(&self, key: &str) -> Option<Val<'a>> {
        self.present(key)
            .filter(|v| !matches!(v.node.value, Node::Null))
    }

    /// Like [`Self::present`] but an absent key is an error.
    fn require_key(&self, key: &str) -> R<Val<'a>> {
        self.present(key)
            .ok_or_else(|| self.missing(key, "required key is missing"))
    }

    /// A required key with a non-null value.
    fn require(&self, key: &str) -> R<Val<'a>> {
        let v = self.require_key(key)?;
        if matches!(v.node.value, Node::Null) {
            return Err(v.err(ConfigError::Missing, "required key has no value".to_owned()));
        }
        Ok(v)
    }

    fn missing(&self, key: &str, message: &str) -> ConfigError {
        let path = join(&self.map.path, key);
        let here = if self.map.path.is_empty() {
            String::new()
        } else {
            format!(" (in `{}`, which starts here)", self.map.path)
        };
        ConfigError::Missing(self.map.doc.diag(
            &self.map.node.referenced,
            Some(&path),
            format!("{message}{here}"),
        ))
    }

    /// The duration at `key` in `min..=max`, `default` when absent.
    fn duration_in_or(
        &self,
        key: &str,
        min: Duration,
        max: Duration,
        default: Duration,
    ) -> R<Duration> {
        match self.get(key) {
            Some(v) => v.duration_in(min, max),
            None => Ok(default),
        }
    }
}
