//! Configuration: the YAML file of the Go pikachu (read unchanged) plus our extensions.
//!
//! This file owns the public types and the entry points [`load`] / [`from_str`].
//! Parsing into a spanned tree is in `node`, typed decoding in `decode`,
//! cross-field checks in `validate`, Go durations in `duration`, `${VAR}`
//! interpolation in `env`. A [`Config`] handed out is fully validated.

mod decode;
pub(crate) mod duration;
pub(crate) mod env;
mod error;
mod node;
pub(crate) mod suggest;
mod validate;
mod values;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::ConfigError;
pub(crate) use error::Diagnostic;
pub(crate) use values::{parse_mysql_gtid_set, SERVER_FIXED_PATHS};
pub use values::{signing_key, SecretError};

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub database: DatabaseConfig,
    pub log: LogConfig,
    pub server: ServerConfig,
    pub dispatcher: DispatcherConfig,
    /// Tasks of the main file, then of the tasks file; `callback_url` already joined with `callback_host`.
    pub tasks: Vec<TaskConfig>,
    /// Key `state_dir`, default `./data`.
    pub state_dir: PathBuf,
    /// Key `start`, default `latest`.
    pub start: StartPosition,
    pub checkpoint: CheckpointConfig,
    /// Key `shutdown_timeout` (the Go `dispatcher.shutdown_timeout` is accepted too), default 30s.
    pub shutdown_timeout: Duration,
    /// Key `callback_host`, as written (validated to be an http(s) URL).
    pub callback_host: Option<String>,
    /// Key `snapshot`: how snapshots read.
    pub snapshot: SnapshotConfig,
}

impl Config {
    /// A task's table as (database, table): its `database`, else the
    /// connection's.
    pub(crate) fn task_table(&self, task: &TaskConfig) -> (String, String) {
        let db = task.database.as_ref().unwrap_or(&self.database.database);
        (db.clone(), task.table_name.clone())
    }
}

/// Rows per chunk when the config does not say (`snapshot.chunk_size`).
pub(crate) const DEFAULT_CHUNK_SIZE: usize = 4096;

/// Key `snapshot` (top level): how snapshots and backfills read tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// Rows per chunk (`snapshot.chunk_size`, 1..=100000), default 4096.
    pub chunk_size: usize,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

/// A task's `snapshot`: whether it starts with the rows that exist already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotMode {
    /// Only changes made from the start position on (the Go tool's behaviour).
    #[default]
    Never,
    /// Read the table's existing rows once (on the task's first start), while the stream flows.
    Initial,
}

impl SnapshotMode {
    pub const ALL: [(&'static str, SnapshotMode); 2] = [
        ("never", SnapshotMode::Never),
        ("initial", SnapshotMode::Initial),
    ];
}

/// A string that never shows up in logs: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret value; use only where it is needed (connecting, signing).
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// TLS towards MySQL/MariaDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    Disabled,
    #[default]
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

impl TlsMode {
    pub const ALL: [(&'static str, TlsMode); 5] = [
        ("disabled", TlsMode::Disabled),
        ("preferred", TlsMode::Preferred),
        ("required", TlsMode::Required),
        ("verify_ca", TlsMode::VerifyCa),
        ("verify_identity", TlsMode::VerifyIdentity),
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// May be empty.
    pub password: Secret,
    /// Default schema for tasks whose `table_name` has no `db.` prefix.
    pub database: String,
    pub server_id: u32,
    pub charset: Option<String>,
    /// Key `tls`, default `preferred`.
    pub tls: TlsMode,
    pub tls_ca: Option<PathBuf>,
    /// Default 10s.
    pub connect_timeout: Duration,
    /// Replication heartbeat period, default 10s.
    pub heartbeat: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Default `info`.
    pub level: LogLevel,
    /// Default `text`.
    pub format: LogFormat,
    /// Log to this file instead of stderr.
    pub file: Option<PathBuf>,
}

/// Log level; `fatal` and `panic` (Go levels) are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
    Fatal,
    Panic,
}

impl LogLevel {
    pub const ALL: [(&'static str, LogLevel); 6] = [
        ("debug", LogLevel::Debug),
        ("info", LogLevel::Info),
        ("warn", LogLevel::Warn),
        ("error", LogLevel::Error),
        ("fatal", LogLevel::Fatal),
        ("panic", LogLevel::Panic),
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    pub const ALL: [(&'static str, LogFormat); 2] =
        [("text", LogFormat::Text), ("json", LogFormat::Json)];
}

/// The health/metrics HTTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Default false.
    pub enabled: bool,
    /// Default `0.0.0.0`.
    pub bind: String,
    /// Default 8080.
    pub port: u16,
    /// Default `/health`.
    pub path: String,
    /// How long the binlog connection may be down before health says DOWN
    /// (reconnects shorter than this stay UP). Default 30s.
    pub down_after: Duration,
    /// How long delivery may make no progress (changes queued, none
    /// delivered or dead-lettered) before health says DOWN. Default 5m.
    pub stall_after: Duration,
}

/// Webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatcherConfig {
    /// Default 16.
    pub worker_count: usize,
    /// Default 10000.
    pub queue_size: usize,
    /// Per-request timeout, default 30s.
    pub timeout: Duration,
    /// Default 3.
    pub max_retries: u32,
    /// Default 1s.
    pub retry_base_delay: Duration,
    /// Default 60s.
    pub retry_max_delay: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskConfig {
    pub task_id: String,
    pub name: String,
    /// Schema from a `db.table` `table_name`; `None` means `database.database`.
    pub database: Option<String>,
    /// Table name without the `db.` prefix.
    pub table_name: String,
    /// Deduplicated, in the order written.
    pub events: Vec<EventKind>,
    /// Absolute http(s) URL (joined with `callback_host` when written relative).
    pub callback_url: String,
    /// Signing secret for the webhook.
    pub secret: Option<Secret>,
    /// Extra HTTP headers, in the order written.
    pub headers: Vec<(String, String)>,
    pub batch: Option<BatchConfig>,
    /// Default `dead_letter`.
    pub on_failure: OnFailure,
    /// Key `snapshot`, default `never`.
    pub snapshot: SnapshotMode,
    /// How the task's deliveries are limited and protected.
    pub limits: TaskLimits,
}

/// A task's own limits (issue 13): how many requests at once and per
/// second, when its endpoint counts as down, and how big its backlog grows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskLimits {
    /// Key `max_in_flight`: most requests of the task at once; default
    /// `dispatcher.worker_count`.
    pub max_in_flight: Option<usize>,
    /// Key `rate_limit`: most requests per second; default unlimited.
    pub rate_limit: Option<u32>,
    /// Key `breaker`.
    pub breaker: BreakerConfig,
    /// Key `backlog`.
    pub backlog: BacklogConfig,
    /// Key `dead_letter_on`: HTTP statuses that dead-letter a change at once
    /// (no retries); default none.
    pub dead_letter_on: Vec<u16>,
}

/// A task's circuit breaker: after `failures` attempts in a row failed, the
/// task sends nothing for `cooldown` (doubling up to `max_cooldown` while
/// its probes fail); attempts that fail while it is open do not count
/// against a change's retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Default 5; 0 turns the breaker off.
    pub failures: u32,
    /// Default 1s.
    pub cooldown: Duration,
    /// Default 60s.
    pub max_cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(60),
        }
    }
}

/// A task's durable backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogConfig {
    /// Default 1 GiB of payloads.
    pub max_bytes: u64,
    /// Default `block`.
    pub when_full: WhenFull,
}

impl Default for BacklogConfig {
    fn default() -> Self {
        BacklogConfig {
            max_bytes: 1 << 30,
            when_full: WhenFull::Block,
        }
    }
}

/// What a task does with a change when its backlog is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Reading the binlog waits until the task delivers some of it.
    #[default]
    Block,
    /// The change is written to the dead-letter store.
    DeadLetter,
}

impl WhenFull {
    pub const ALL: [(&'static str, WhenFull); 2] = [
        ("block", WhenFull::Block),
        ("dead_letter", WhenFull::DeadLetter),
    ];
}

/// A row change kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Insert,
    Update,
    Delete,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [EventKind::Insert, EventKind::Update, EventKind::Delete];

    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Insert => "insert",
            EventKind::Update => "update",
            EventKind::Delete => "delete",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Deliver up to `max_events` changes in one request, waiting at most `max_wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// At least 1; required when `batch` is given.
    pub max_events: usize,
    /// Default 1s.
    pub max_wait: Duration,
}

/// What to do with a change whose delivery failed after all retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Record it in the dead-letter store and go on.
    #[default]
    DeadLetter,
    /// Stop the task's stream and keep retrying.
    Block,
}

impl OnFailure {
    pub const ALL: [(&'static str, OnFailure); 2] = [
        ("dead_letter", OnFailure::DeadLetter),
        ("block", OnFailure::Block),
    ];
}

/// Where to start reading the binlog when no checkpoint exists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StartPosition {
    /// The server's current position.
    #[default]
    Latest,
    /// The oldest binlog the server still has.
    Earliest,
    FilePos {
        file: String,
        pos: u64,
    },
    /// A GTID set (MySQL `uuid:1-100` or MariaDB `0-1-100`).
    Gtid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// How often positions are persisted, default 1s.
    pub interval: Duration,
}

/// A validated config and the non-fatal remarks about it (e.g. ignored Go settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Reads and validates `path`, plus tasks from `tasks_path` when given.
///
/// Errors name the file they come from (the path as given).
pub fn load(path: &Path, tasks_path: Option<&Path>) -> Result<Loaded, ConfigError> {
    let read = |p: &Path| {
        let bytes = std::fs::read(p).map_err(|source| ConfigError::Read {
            path: p.to_path_buf(),
            source,
        })?;
        String::from_utf8(bytes).map_err(|e| {
            ConfigError::Syntax(error::not_utf8(
                &p.display().to_string(),
                e.as_bytes(),
                e.utf8_error(),
            ))
        })
    };
    let text = read(path)?;
    let origin = path.display().to_string();
    match tasks_path {
        Some(tasks_path) => {
            let tasks_text = read(tasks_path)?;
            let tasks_origin = tasks_path.display().to_string();
            from_str(&text, &origin, Some((&tasks_text, &tasks_origin)))
        }
        None => from_str(&text, &origin, None),
    }
}

/// Parses and validates config text. `origin` names the text in messages;
/// `tasks_text` is `(text, origin)` of a separate tasks file (a list of tasks,
/// or a mapping with a `tasks:` key), whose tasks follow those of the main text.
pub fn from_str(
    text: &str,
    origin: &str,
    tasks_text: Option<(&str, &str)>,
) -> Result<Loaded, ConfigError> {
    let main = node::Doc { origin, text };
    let tasks_doc = tasks_text.map(|(text, origin)| node::Doc { origin, text });
    let mut warnings = Vec::new();
    let draft = decode::decode(main, tasks_doc, &mut warnings)?;
    let config = validate::finish(draft)?;
    Ok(Loaded { config, warnings })
}

#[cfg(test)]
mod tests;
