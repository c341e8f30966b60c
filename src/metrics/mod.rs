//! Prometheus metrics (`GET /metrics`, OpenMetrics text format).
//!
//! Counters the pipeline bumps itself (changes read, deliveries, attempts,
//! latency) are handles created up front (per task) or cached per table, so
//! the hot path does an atomic add, not a label lookup with allocations.
//! Figures the reader and the delivery engine keep anyway (bytes read,
//! reconnects, queue depth, lag) are copied from them at scrape time.
//! The table of names and meanings is in README.md ("Metrics").

pub(crate) mod retention;
mod snapshot;

pub use retention::{first_event_time, server_binlogs};
pub(crate) use snapshot::SnapshotFigures;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::event::Change;

/// Upper bounds of the delivery latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    database: String,
    table: String,
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    task: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    task: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabels {
    file: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;
/// database → table → counter per event kind (insert, update, delete).
type ChangeCache = HashMap<Arc<str>, HashMap<Arc<str>, [Counter; 3]>>;

/// The handles of one task, by task index.
#[derive(Debug)]
struct TaskMetrics {
    delivered: Counter,
    dead_lettered: Counter,
    dead_letters: Counter,
    requests: Counter,
    failures: Counter,
    retries: Counter,
    latency: Histogram,
}

/// The last checkpoint written, for the `checkpoint_*` gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub file: String,
    pub pos: u64,
    /// When it was written, seconds since the epoch.
    pub saved_at: i64,
}

/// What [`retention::headroom`] found, for the gauges.
#[derive(Debug, Clone, PartialEq)]
pub enum Headroom {
    /// Binlogs are never purged automatically: no figure.
    Unlimited,
    /// Not known (yet): no figure.
    Unknown,
    /// Seconds until the server may purge `file` (negative: it may already).
    Seconds { file: String, secs: f64 },
}

/// Figures copied into the registry at scrape time.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub binlog_bytes_read: u64,
    pub reconnects: u64,
    pub connected: bool,
    pub lag_seconds: Option<i64>,
    pub queue_depth: u64,
    pub in_flight: u64,
    pub dead_letters_stored: Option<u64>,
    pub healthy: bool,
    /// The last checkpoint saved (as the commit tracker published it).
    pub checkpoint: Option<Checkpoint>,
    /// Each task's backlog and state (`pikachu run`).
    pub tasks: Vec<TaskSnapshot>,
}

/// All of pikachu's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    changes_read: Family<ChangeLabels, Counter>,
    change_cache: Mutex<ChangeCache>,
    tasks: Vec<TaskMetrics>,
    binlog_bytes_read: Counter,
    reconnects: Counter,
    connected: Gauge,
    lag: Gauge,
    queue_depth: Gauge,
    in_flight: Gauge,
    dead_letters_stored: Gauge,
    healthy: Gauge,
    /// The file the `checkpoint_*` gauges are labelled with now.
    checkpoint_file: Mutex<Option<String>>,
    checkpoint_position: Family<FileLabels, Gauge>,
    checkpoint_file_index: Family<FileLabels, Gauge>,
    checkpoint_age: Family<FileLabels, FloatGauge>,
    retention: Family<Vec<(String, String)>, FloatGauge>,
    headroom: Family<FileLabels, FloatGauge>,
    /// What the snapshots report.
    pub snapshots: SnapshotFigures,
    /// Each task's backlog and state.
    lanes: LaneFamilies,
}

/// The per-task backlog and state gauges.
struct LaneFamilies {
    changes: Family<TaskLabels, Gauge>,
    bytes: Family<TaskLabels, Gauge>,
    oldest: Family<TaskLabels, FloatGauge>,
    state: Family<StateLabels, Gauge>,
}

impl LaneFamilies {
    fn register(reg: &mut Registry) -> LaneFamilies {
        let f = LaneFamilies {
            changes: Family::default(),
            bytes: Family::default(),
            oldest: Family::default(),
            state: Family::default(),
        };
        reg.register(
            "task_backlog_changes",
            "Changes in the task's durable backlog (state_dir/backlog), waiting or being delivered",
            f.changes.clone(),
        );
        reg.register_with_unit(
            "task_backlog",
            "Payload bytes in the task's durable backlog (limit: backlog.max_bytes)",
            Unit::Bytes,
            f.bytes.clone(),
        );
        reg.register_with_unit(
            "task_backlog_oldest",
            "Age of the oldest change in the task's backlog not yet taken back into memory; 0 without a backlog",
            Unit::Seconds,
            f.oldest.clone(),
        );
        reg.register(
            "task_state",
            "1 for the task's state (active, breaker_open, backlog_full), 0 for the others",
            f.state.clone(),
        );
        f
    }

    fn set(&self, tasks: &[TaskSnapshot]) {
        for t in tasks {
            let l = TaskLabels {
                task: t.task.clone(),
            };
            self.changes
                .get_or_create(&l)
                .set(gauge_value(t.backlog_changes));
            self.bytes
                .get_or_create(&l)
                .set(gauge_value(t.backlog_bytes));
            self.oldest.get_or_create(&l).set(t.backlog_oldest_seconds);
            for s in crate::deliver::TaskStateName::ALL {
                let labels = StateLabels {
                    task: t.task.clone(),
                    state: s.as_str(),
                };
                self.state
                    .get_or_create(&labels)
                    .set(i64::from(t.state == s.as_str()));
            }
        }
    }
}

/// A task's figures at scrape time.
#[derive(Debug, Default, Clone)]
pub struct TaskSnapshot {
    pub task: String,
    pub state: &'static str,
    pub backlog_changes: u64,
    pub backlog_bytes: u64,
    pub backlog_oldest_seconds: f64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new::<&str>(&[])
    }
}

/// The per-task families (settlements, attempts, failures, retries, dead
/// letters, latency), registered once, and each task's handles into them.
fn register_tasks<S: AsRef<str>>(reg: &mut Registry, task_ids: &[S]) -> Vec<TaskMetrics> {
    let deliveries = Family::<OutcomeLabels, Counter>::default();
    reg.register(
        "deliveries",
        "Changes settled, by task and outcome: delivered (2xx) or dead_lettered (failed after all retries, stored)",
        deliveries.clone(),
    );
    let requests = Family::<TaskLabels, Counter>::default();
    reg.register(
        "http_requests",
        "Webhook HTTP attempts, by task (a batch is one request)",
        requests.clone(),
    );
    let failures = Family::<TaskLabels, Counter>::default();
    reg.register(
        "http_request_failures",
        "Webhook HTTP attempts that failed (connection error, timeout, non-2xx), by task",
        failures.clone(),
    );
    let retries = Family::<TaskLabels, Counter>::default();
    reg.register(
        "retries",
        "Webhook retries scheduled, by task",
        retries.clone(),
    );
    let dead_letters = Family::<TaskLabels, Counter>::default();
    reg.register(
        "dead_letters",
        "Changes written to the dead-letter store, by task",
        dead_letters.clone(),
    );
    let latency = Family::<TaskLabels, Histogram>::new_with_constructor(
        (|| Histogram::new(LATENCY_BUCKETS)) as fn() -> Histogram,
    );
    reg.register_with_unit(
        "delivery_latency",
        "Time from a change's submission to the delivery engine to its 2xx answer (retries and waits for the row's earlier changes included), by task",
        Unit::Seconds,
        latency.clone(),
    );
    task_ids
        .iter()
        .map(|id| {
            let task = id.as_ref().to_string();
            let t = TaskLabels { task: task.clone() };
            let outcome = |outcome| OutcomeLabels {
                task: task.clone(),
                outcome,
            };
            TaskMetrics {
                delivered: deliveries.get_or_create_owned(&outcome("delivered")),
                dead_lettered: deliveries.get_or_create_owned(&outcome("dead_lettered")),
                dead_letters: dead_letters.get_or_create_owned(&t),
                requests: requests.get_or_create_owned(&t),
                failures: failures.get_or_create_owned(&t),
                retries: retries.get_or_create_owned(&t),
                latency: latency.get_or_create_owned(&t),
            }
        })
        .collect()
}

/// `build_info`: a gauge of 1 labelled with the version.
fn register_build(reg: &mut Registry) {
    let build = Family::<VersionLabels, Gauge>::default();
    reg.register("build_info", "pikachu's version", build.clone());
    build
        .get_or_create(&VersionLabels {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
}

impl Metrics {
    /// Metrics for the tasks `task_ids` (in config order: the delivery
    /// engine names tasks by index).
    pub fn new<S: AsRef<str>>(task_ids: &[S]) -> Metrics {
        let mut reg = Registry::with_prefix("pikachu");
        let changes_read = Family::<ChangeLabels, Counter>::default();
        reg.register(
            "changes_read",
            "Row changes read from the binlog for the configured tables, by database, table and event",
            changes_read.clone(),
        );
        let dead_letters_stored = Gauge::default();
        reg.register(
            "dead_letters_stored",
            "Dead letters currently in the store (all runs; `pikachu dlq replay/purge` lower it)",
            dead_letters_stored.clone(),
        );
        let queue_depth = Gauge::default();
        reg.register(
            "queue_depth",
            "Changes in the delivery engine not yet settled (waiting, in flight, backing off)",
            queue_depth.clone(),
        );
        let in_flight = Gauge::default();
        reg.register(
            "deliveries_in_flight",
            "Webhook HTTP attempts in progress",
            in_flight.clone(),
        );
        let lag = Gauge::default();
        reg.register_with_unit(
            "replication_lag",
            "How far the binlog reader is behind the server: now minus the binlog time of the last event read; 0 when it has read everything (a server heartbeat came)",
            Unit::Seconds,
            lag.clone(),
        );
        let binlog_bytes_read = Counter::default();
        reg.register(
            "binlog_bytes_read",
            "Bytes of binlog events received from the server (event sizes, heartbeats included)",
            binlog_bytes_read.clone(),
        );
        let connected = Gauge::default();
        reg.register(
            "binlog_connected",
            "1 while the binlog stream is connected",
            connected.clone(),
        );
        let reconnects = Counter::default();
        reg.register(
            "binlog_reconnects",
            "Times the binlog reader reconnected after losing its connection",
            reconnects.clone(),
        );
        let healthy = Gauge::default();
        reg.register(
            "healthy",
            "1 when the health endpoint says UP, 0 when DOWN",
            healthy.clone(),
        );
        let checkpoint_position = Family::<FileLabels, Gauge>::default();
        reg.register(
            "checkpoint_position",
            "Byte position of the saved checkpoint in its binlog file (label file)",
            checkpoint_position.clone(),
        );
        let checkpoint_file_index = Family::<FileLabels, Gauge>::default();
        reg.register(
            "checkpoint_file_index",
            "Numeric suffix of the checkpoint's binlog file (mysql-bin.000042 → 42)",
            checkpoint_file_index.clone(),
        );
        let checkpoint_age = Family::<FileLabels, FloatGauge>::default();
        reg.register_with_unit(
            "checkpoint_age",
            "Seconds since the checkpoint was last written",
            Unit::Seconds,
            checkpoint_age.clone(),
        );
        let retention = Family::<Vec<(String, String)>, FloatGauge>::default();
        reg.register_with_unit(
            "binlog_retention",
            "The server's binlog retention (binlog_expire_logs_seconds or expire_logs_days); absent when binlogs are never purged automatically",
            Unit::Seconds,
            retention.clone(),
        );
        let headroom = Family::<FileLabels, FloatGauge>::default();
        reg.register_with_unit(
            "binlog_retention_headroom",
            "Seconds until the server may purge the binlog file pikachu must resume from (label file; negative: it may already); absent with unlimited retention or before it is known",
            Unit::Seconds,
            headroom.clone(),
        );
        let snapshots = SnapshotFigures::register(&mut reg);
        let lanes = LaneFamilies::register(&mut reg);
        register_build(&mut reg);

        let tasks = register_tasks(&mut reg, task_ids);
        Metrics {
            registry: reg,
            changes_read,
            change_cache: Mutex::new(HashMap::new()),
            tasks,
            binlog_bytes_read,
            reconnects,
            connected,
            lag,
            queue_depth,
            in_flight,
            dead_letters_stored,
            healthy,
            checkpoint_file: Mutex::new(None),
            checkpoint_position,
            checkpoint_file_index,
            checkpoint_age,
            retention,
            headroom,
            snapshots,
            lanes,
        }
    }

    /// A change read from the binlog (for a configured table).
    pub(crate) fn change_read(&self, change: &Change) {
        let idx = change.kind as usize;
        let Ok(mut cache) = self.change_cache.lock() else {
            return;
        };
        let db = &change.table.database;
        let table = &change.table.name;
        if let Some(c) = cache.get(&**db).and_then(|t| t.get(&**table)) {
            c[idx].inc();
            return;
        }
        let counter = |event| {
            self.changes_read.get_or_create_owned(&ChangeLabels {
                database: db.to_string(),
                table: table.to_string(),
                event,
            })
        };
        let counters = [counter("insert"), counter("update"), counter("delete")];
        counters[idx].inc();
        cache
            .entry(db.clone())
            .or_default()
            .insert(table.clone(), counters);
    }

    /// `n` changes of task number `task` delivered, `latency` after submission.
    pub fn delivered(&self, task: usize, n: u64, latency: Duration) {
        if let Some(t) = self.tasks.get(task) {
            t.delivered.inc_by(n);
            let secs = latency.as_secs_f64();
            for _ in 0..n {
                t.latency.observe(secs);
            }
        }
    }

    /// `n` changes of task number `task` stored as dead letters.
    pub fn dead_lettered(&self, task: usize, n: u64) {
        if let Some(t) = self.tasks.get(task) {
            t.dead_lettered.inc_by(n);
            t.dead_letters.inc_by(n);
        }
    }

    /// An HTTP attempt of task number `task` ended.
    pub fn attempt(&self, task: usize, ok: bool) {
        if let Some(t) = self.tasks.get(task) {
            t.requests.inc();
            if !ok {
                t.failures.inc();
            }
        }
    }

    /// A retry of task number `task` was scheduled.
    pub fn retry(&self, task: usize) {
        if let Some(t) = self.tasks.get(task) {
            t.retries.inc();
        }
    }

    /// Sets the `checkpoint_*` gauges to `c`, dropping the series of the
    /// file they were labelled with when it changed.
    fn set_checkpoint(&self, c: &Checkpoint) {
        if let Ok(mut last) = self.checkpoint_file.lock() {
            if last.as_deref() != Some(c.file.as_str()) {
                self.checkpoint_position.clear();
                self.checkpoint_file_index.clear();
                self.checkpoint_age.clear();
                *last = Some(c.file.clone());
            }
        }
        let file = FileLabels {
            file: c.file.clone(),
        };
        self.checkpoint_position
            .get_or_create(&file)
            .set(gauge_value(c.pos));
        self.checkpoint_file_index
            .get_or_create(&file)
            .set(file_index(&c.file).map_or(-1, gauge_value));
        self.checkpoint_age
            .get_or_create(&file)
            .set((unix_now_f64() - c.saved_at as f64).max(0.0));
    }

    /// The binlog retention in seconds (`None`: unlimited).
    pub(crate) fn set_retention(&self, secs: Option<f64>) {
        self.retention.clear();
        if let Some(s) = secs {
            self.retention.get_or_create(&Vec::new()).set(s);
        }
    }

    /// The retention headroom figure.
    pub(crate) fn set_headroom(&self, h: Headroom) {
        self.headroom.clear();
        if let Headroom::Seconds { file, secs } = &h {
            self.headroom
                .get_or_create(&FileLabels { file: file.clone() })
                .set(*secs);
        }
    }

    /// The metrics in the OpenMetrics text format, with `s` copied in first.
    pub fn encode(&self, s: &Snapshot) -> String {
        self.binlog_bytes_read
            .inner()
            .store(s.binlog_bytes_read, Ordering::Relaxed);
        self.reconnects
            .inner()
            .store(s.reconnects, Ordering::Relaxed);
        self.connected.set(i64::from(s.connected));
        self.lag.set(s.lag_seconds.unwrap_or(0));
        self.queue_depth.set(gauge_value(s.queue_depth));
        self.in_flight.set(gauge_value(s.in_flight));
        if let Some(n) = s.dead_letters_stored {
            self.dead_letters_stored.set(gauge_value(n));
        }
        self.healthy.set(i64::from(s.healthy));
        if let Some(c) = &s.checkpoint {
            self.set_checkpoint(c);
        }
        self.lanes.set(&s.tasks);
        let mut out = String::with_capacity(8 * 1024);
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The delivery engine's per-task outcomes, counted.
impl crate::deliver::Observer for Metrics {
    fn attempt(&self, task: usize, ok: bool) {
        Metrics::attempt(self, task, ok);
    }

    fn delivered(&self, task: usize, n: u64, latency: Duration) {
        Metrics::delivered(self, task, n, latency);
    }

    fn dead_lettered(&self, task: usize, n: u64) {
        Metrics::dead_lettered(self, task, n);
    }

    fn retry(&self, task: usize) {
        Metrics::retry(self, task);
    }
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The numeric suffix of a binlog file name (`mysql-bin.000042` → 42).
pub(crate) fn file_index(file: &str) -> Option<u64> {
    file.rsplit_once('.')?.1.parse().ok()
}

fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        let m = Metrics::new(&["a", "b"]);
        m.delivered(0, 2, Duration::from_millis(30));
        m.dead_lettered(1, 1);
        m.attempt(0, true);
        m.attempt(1, false);
        m.retry(1);
        m.set_retention(Some(86_400.0));
        m.set_headroom(Headroom::Seconds {
            file: "mysql-bin.000042".into(),
            secs: 3600.5,
        });
        let text = m.encode(&Snapshot {
            binlog_bytes_read: 99,
            checkpoint: Some(Checkpoint {
                file: "mysql-bin.000042".into(),
                pos: 1234,
                saved_at: unix_now(),
            }),
            ..Snapshot::default()
        });
        for line in [
            "pikachu_deliveries_total{task=\"a\",outcome=\"delivered\"} 2",
            "pikachu_deliveries_total{task=\"b\",outcome=\"dead_lettered\"} 1",
            "pikachu_dead_letters_total{task=\"b\"} 1",
            "pikachu_http_requests_total{task=\"b\"} 1",
            "pikachu_http_request_failures_total{task=\"b\"} 1",
            "pikachu_retries_total{task=\"b\"} 1",
            "pikachu_delivery_latency_seconds_count{task=\"a\"} 2",
            "pikachu_binlog_bytes_read_total 99",
            "pikachu_checkpoint_position{file=\"mysql-bin.000042\"} 1234",
            "pikachu_checkpoint_file_index{file=\"mysql-bin.000042\"} 42",
            "pikachu_binlog_retention_seconds 86400.0",
            "pikachu_binlog_retention_headroom_seconds{file=\"mysql-bin.000042\"} 3600.5",
            "# EOF",
        ] {
            assert!(text.contains(line), "no `{line}` in:\n{text}");
        }
        m.set_retention(None);
        m.set_headroom(Headroom::Unlimited);
        let text = m.encode(&Snapshot::default());
        assert!(
            !text.contains("pikachu_binlog_retention_seconds "),
            "{text}"
        );
        assert!(
            !text.contains("pikachu_binlog_retention_headroom_seconds{"),
            "{text}"
        );
    }

    #[test]
    fn file_index_is_the_suffix() {
        assert_eq!(file_index("mysql-bin.000042"), Some(42));
        assert_eq!(file_index("binlog.1"), Some(1));
        assert_eq!(file_index("weird"), None);
    }
}
