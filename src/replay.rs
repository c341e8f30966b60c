//! `pikachu replay`: reads a range of the live server's binlog through the
//! normal path (the binlog reader, the XA hold, the pipeline's [`FanOut`])
//! for the configured tasks, into one of the pipeline's sinks: the webhook
//! engine, stdout or nowhere ([`Output`] picks it),
//! and ends with one JSON summary line. It never writes the checkpoint.
//!
//! The range ends at `--to` (a `file:pos` or a GTID), or at the end of the
//! binlog when the replay started. A `--to` inside a transaction ends at that
//! transaction's end: a transaction is replayed whole or not at all.
//!
//! XA transactions: the rows of a prepared XA are replayed at its `XA
//! COMMIT` when both are in the range (held meanwhile in a scratch SQLite
//! file, see [`XaHold::scratch`]); a rolled-back XA's never. A PREPARE
//! whose outcome is past the range, and an outcome whose PREPARE is before
//! it, are reported (a WARN line each, and the summary's `xa` object):
//! their rows are not replayed.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::Conn;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::deliver::Dispatcher;
use crate::event::{Change, ChangeKind, Commit};
use crate::pipeline::{FanOut, NullSink, Sink, WebhookSink, WriteSink};
use crate::route::Router;
use crate::source::binlogs;
use crate::source::connect::{self, Flavour, ServerInfo};
use crate::source::position::{self, FilePos, StartAt};
use crate::source::reader::{self, ReaderOptions, SourceEvent, XaEvent};
use crate::source::value::DecodeOptions;
use crate::store::Store;
use crate::xa::{GroupEnd, Outcome, Release, XaHold};

/// Which sink the payloads go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// POST to the tasks' webhooks, as `pikachu run` does.
    Webhook,
    /// One payload per line on stdout.
    Stdout,
    /// Rendered, then dropped: only counted (the benchmark).
    Null,
}

impl std::str::FromStr for Output {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "webhook" => Ok(Output::Webhook),
            "stdout" => Ok(Output::Stdout),
            "null" => Ok(Output::Null),
            _ => Err(format!(
                "unknown output `{s}`; expected webhook, stdout or null"
            )),
        }
    }
}

/// A range bound: a file position or a GTID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bound {
    FilePos(FilePos),
    /// MariaDB `domain-server-seq` (a comma list for `--from`), MySQL `uuid[:tag]:gno`.
    Gtid(String),
}

fn is_maria_gtid(s: &str) -> bool {
    let p: Vec<&str> = s.split('-').collect();
    p.len() == 3
        && p.iter()
            .all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
}

fn is_mysql_gtid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 37
        && b[36] == b':'
        && s[..36].bytes().enumerate().all(|(i, c)| {
            matches!(i, 8 | 13 | 18 | 23) == (c == b'-') && (c == b'-' || c.is_ascii_hexdigit())
        })
}

/// Why a `--from`/`--to` text is not a position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundError {
    /// `FILE:POS` with a position inside the file's magic header.
    #[error("`{text}`: position {pos} is before the first event (positions start at 4)")]
    BeforeFirstEvent {
        /// The text as given (trimmed).
        text: String,
        /// The position in it.
        pos: u64,
    },
    /// Neither `FILE:POS` nor a GTID.
    #[error("`{0}` is not a binlog position: expected FILE:POS (e.g. mysql-bin.000003:1234), a MariaDB GTID (0-1-100) or a MySQL GTID (uuid:gno)")]
    Syntax(String),
}

impl Bound {
    /// Parses `file:pos`, a MariaDB GTID (list) or a MySQL GTID.
    pub fn parse(s: &str) -> Result<Bound, BoundError> {
        let s = s.trim();
        if !s.is_empty() && s.split(',').all(|g| is_maria_gtid(g.trim())) {
            return Ok(Bound::Gtid(s.to_string()));
        }
        if is_mysql_gtid(s) {
            let gno = s.rsplit(':').next().unwrap_or("");
            if gno.parse::<u64>().is_ok() {
                return Ok(Bound::Gtid(s.to_string()));
            }
        }
        match FilePos::parse(s) {
            Some(p) if p.pos >= 4 => Ok(Bound::FilePos(p)),
            Some(p) => Err(BoundError::BeforeFirstEvent {
                text: s.to_string(),
                pos: p.pos,
            }),
            None => Err(BoundError::Syntax(s.to_string())),
        }
    }
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bound::FilePos(p) => write!(f, "{p}"),
            Bound::Gtid(g) => write!(f, "{g}"),
        }
    }
}

/// A failed replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The request is wrong (a bad `--from`/`--to`): fix the command line.
    #[error("{0}")]
    Usage(String),
    /// The replay could not run or finish (server, store, output).
    #[error("{0}")]
    Runtime(String),
}

fn runtime(message: impl Into<String>) -> ReplayError {
    ReplayError::Runtime(message.into())
}

fn usage(message: impl Into<String>) -> ReplayError {
    ReplayError::Usage(message.into())
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct Request {
    pub from: String,
    pub to: Option<String>,
    pub output: Output,
    /// Replica id for the binlog connection; random when not given, so
    /// that a replay never displaces a running pikachu with the configured id.
    pub server_id: Option<u32>,
}

/// Counts of one replay.
#[derive(Debug, Default)]
pub struct Summary {
    pub changes: u64,
    pub payloads: u64,
    pub failed: u64,
    /// Payload bytes rendered (one payload per change and task, before batching).
    pub bytes: u64,
    /// Counted per change: hashed with foldhash (SipHash was 3% of a replay).
    by_table: HashMap<(Arc<str>, Arc<str>), [u64; 3], foldhash::fast::RandomState>,
    pub seconds: f64,
    pub stopped_at: Option<String>,
    pub xa: XaSummary,
}

/// What a replay did with XA transactions.
#[derive(Debug, Default)]
pub struct XaSummary {
    /// XA PREPAREs read in the range.
    pub prepared: u64,
    /// Prepared in the range and committed in it: rows replayed at the commit.
    pub committed: u64,
    /// Rolled back in the range: rows not replayed.
    pub rolled_back: u64,
    /// Prepared in the range with no outcome in it (xids): rows not replayed.
    pub prepared_without_outcome: Vec<String>,
    /// An outcome in the range whose PREPARE is before it (xids): rows unknown.
    pub outcome_without_prepare: Vec<String>,
}

impl Summary {
    fn count(&mut self, c: &Change) {
        self.changes += 1;
        let i = match c.kind {
            ChangeKind::Insert => 0,
            ChangeKind::Update => 1,
            ChangeKind::Delete => 2,
        };
        let key = (c.table.database.clone(), c.table.name.clone());
        self.by_table.entry(key).or_default()[i] += 1;
    }

    /// The summary line: `{"summary":{…}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut by_table = serde_json::Map::new();
        let mut keys: Vec<_> = self.by_table.keys().collect();
        keys.sort();
        for k in keys {
            let n = self.by_table[k];
            by_table.insert(
                format!("{}.{}", k.0, k.1),
                serde_json::json!({"insert": n[0], "update": n[1], "delete": n[2]}),
            );
        }
        let per_sec = if self.seconds > 0.0 {
            (self.changes as f64 / self.seconds * 10.0).round() / 10.0
        } else {
            0.0
        };
        serde_json::json!({"summary": {
            "changes": self.changes,
            "payloads": self.payloads,
            "failed": self.failed,
            "payload_bytes": self.bytes,
            "by_table": by_table,
            "seconds": (self.seconds * 1000.0).round() / 1000.0,
            "changes_per_sec": per_sec,
            "stopped_at": self.stopped_at,
            "xa": {
                "prepared": self.xa.prepared,
                "committed": self.xa.committed,
                "rolled_back": self.xa.rolled_back,
                "prepared_without_outcome": self.xa.prepared_without_outcome,
                "outcome_without_prepare": self.xa.outcome_without_prepare,
            },
        }})
    }
}

/// Where the replay stops.
enum Stop {
    /// At the first transaction end at or past this position.
    FilePos(FilePos),
    /// After the transaction with this MariaDB GTID (same domain, seq ≥).
    Maria { domain: u64, seq: u64 },
    /// After the transaction with this MySQL GTID (same uuid[:tag], gno ≥).
    MySql { source: String, gno: u64 },
}

impl Stop {
    fn from_bound(b: &Bound) -> Result<Stop, ReplayError> {
        Ok(match b {
            Bound::FilePos(p) => Stop::FilePos(p.clone()),
            Bound::Gtid(g) if is_maria_gtid(g) => {
                let p: Vec<u64> = g.split('-').filter_map(|x| x.parse().ok()).collect();
                Stop::Maria {
                    domain: p[0],
                    seq: p[2],
                }
            }
            Bound::Gtid(g) if is_mysql_gtid(g) => {
                let (source, gno) = g.rsplit_once(':').unwrap_or((g, "0"));
                Stop::MySql {
                    source: source.to_string(),
                    gno: gno.parse().unwrap_or(0),
                }
            }
            Bound::Gtid(g) => {
                return Err(usage(format!(
                    "--to `{g}`: a single GTID is needed, not a list"
                )))
            }
        })
    }

    /// Whether a transaction whose first event (a change, an XA boundary)
    /// ends at `file:pos` begins past the range (file positions only: a
    /// GTID range ends at its commit).
    fn before(&self, file: &str, pos: u64) -> bool {
        match self {
            Stop::FilePos(p) => (file, pos) >= (p.file.as_str(), p.pos),
            _ => false,
        }
    }

    fn reached(&self, c: &Commit) -> bool {
        match self {
            Stop::FilePos(p) => (&*c.file, c.pos) >= (p.file.as_str(), p.pos),
            Stop::Maria { domain, seq } => c.gtid.as_deref().is_some_and(|g| {
                let p: Vec<u64> = g.split('-').filter_map(|x| x.parse().ok()).collect();
                p.len() == 3 && p[0] == *domain && p[2] >= *seq
            }),
            Stop::MySql { source, gno } => c.gtid.as_deref().is_some_and(|g| {
                g.rsplit_once(':')
                    .is_some_and(|(s, n)| s == source && n.parse::<u64>().is_ok_and(|n| n >= *gno))
            }),
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::FilePos(p) => write!(f, "{p}"),
            Stop::Maria { domain, seq } => write!(f, "{domain}-?-{seq}"),
            Stop::MySql { source, gno } => write!(f, "{source}:{gno}"),
        }
    }
}

/// Checks that the server still has `p`: the file is listed and the
/// position is inside it.
async fn check_position(conn: &mut Conn, p: &FilePos) -> Result<(), ReplayError> {
    let files: Vec<(String, u64)> = binlogs::list(conn)
        .await
        .map_err(|e| runtime(e.to_string()))?
        .into_iter()
        .map(|f| (f.name, f.size))
        .collect();
    match files.iter().find(|(n, _)| *n == p.file) {
        Some((_, size)) if p.pos <= *size => Ok(()),
        Some((_, size)) => Err(runtime(format!(
            "--from {p}: the binlog file {} has only {size} bytes",
            p.file
        ))),
        None => Err(runtime(format!(
            "--from {p}: the server has no binlog file `{}` (it has {})",
            p.file,
            match (files.first(), files.last()) {
                (Some(a), Some(b)) => format!("{} … {}", a.0, b.0),
                _ => "none".to_string(),
            }
        ))),
    }
}

/// Whether every binlog dump thread on the server has sent all it has
/// (used to end a range that holds no transaction end).
async fn dump_threads_idle(conn: &mut Conn) -> bool {
    let sql = "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
               WHERE COMMAND LIKE 'Binlog Dump%' AND STATE NOT LIKE '%has sent all binlog%'";
    match connect::query_row(conn, sql).await {
        Ok(Some(r)) => r.first().cloned().flatten().as_deref() == Some("0"),
        _ => false,
    }
}

/// What a replay reads, decided before it reads.
struct Plan {
    /// The connection for questions to the server while reading.
    conn: Conn,
    /// The server read from.
    info: ServerInfo,
    /// Where the range begins.
    start: StartAt,
    /// Where it ends.
    stop: Stop,
    /// The binlog history marker, for change ids.
    history: crate::source::binlogs::History,
}

/// Runs a replay. Payloads (for `Output::Stdout`) go to `out`; the summary
/// line is written by the caller.
pub async fn run(
    config: &Config,
    req: &Request,
    out: &mut (dyn Write + Send),
) -> Result<Summary, ReplayError> {
    let plan = match plan(config, req).await? {
        Ok(plan) => plan,
        Err(empty_at) => {
            return Ok(Summary {
                stopped_at: Some(empty_at),
                ..Summary::default()
            })
        }
    };
    let summary = match req.output {
        // Through the normal delivery engine (ordered per row, retries,
        // dead letters in the state store); the checkpoint is never touched.
        Output::Webhook => {
            let store = Store::open(&config.state_dir).map_err(|e| runtime(e.to_string()))?;
            let dispatcher = Dispatcher::start(
                &config.dispatcher,
                &config.tasks,
                Arc::new(std::sync::Mutex::new(store)),
            )
            .map_err(|e| runtime(e.to_string()))?;
            replay_into(config, req, plan, WebhookSink::new(dispatcher)).await
        }
        Output::Stdout => replay_into(config, req, plan, WriteSink::new(&mut *out)).await,
        Output::Null => replay_into(config, req, plan, NullSink::default()).await,
    };
    let _ = out.flush();
    summary
}

/// Parses the range and asks the server where it is; `Err(start)` when
/// the range is empty (it ends where it begins).
async fn plan(config: &Config, req: &Request) -> Result<Result<Plan, String>, ReplayError> {
    let from = Bound::parse(&req.from).map_err(|e| usage(format!("--from {e}")))?;
    let to = match &req.to {
        Some(t) => Some(Bound::parse(t).map_err(|e| usage(format!("--to {e}")))?),
        None => None,
    };
    let mut conn = connect::connect(&config.database)
        .await
        .map_err(|e| runtime(e.to_string()))?;
    let info: ServerInfo = connect::server_info(&mut conn)
        .await
        .map_err(|e| runtime(e.to_string()))?;
    let start = match &from {
        Bound::FilePos(p) => {
            check_position(&mut conn, p).await?;
            StartAt::FilePos(p.clone())
        }
        Bound::Gtid(g) => {
            if info.flavour == Flavour::MySql || !g.split(',').all(|x| is_maria_gtid(x.trim())) {
                return Err(usage(format!(
                    "--from {g}: starting from a GTID is supported for MariaDB GTIDs only; use FILE:POS"
                )));
            }
            StartAt::Gtid(g.clone())
        }
    };
    let history = crate::checkpoint::history_for_replay(config, &mut conn, &info)
        .await
        .map_err(|e| runtime(e.to_string()))?;
    // Without --to: the end of the binlog now.
    let end = position::latest(&mut conn, &info)
        .await
        .map_err(|e| runtime(e.to_string()))?;
    let stop = match &to {
        Some(b) => Stop::from_bound(b)?,
        None => Stop::FilePos(end.clone()),
    };
    if let (StartAt::FilePos(f), Stop::FilePos(t)) = (&start, &stop) {
        if (f.file.as_str(), f.pos) >= (t.file.as_str(), t.pos) {
            return Ok(Err(f.to_string()));
        }
    }
    Ok(Ok(Plan {
        conn,
        info,
        start,
        stop,
        history,
    }))
}

/// Reads the range into `sink`, then waits for the sink to settle
/// everything (every change delivered or dead-lettered).
async fn replay_into<S: Sink>(
    config: &Config,
    req: &Request,
    plan: Plan,
    sink: S,
) -> Result<Summary, ReplayError> {
    let Plan {
        mut conn,
        info,
        start,
        stop,
        history,
    } = plan;
    let began = Instant::now();
    let router = Arc::new(Router::new(&config.tasks, &config.database.database));
    let filter_router = router.clone();
    let mut db = config.database.clone();
    db.server_id = req
        .server_id
        .unwrap_or_else(|| 0x8000_0000 | (fastrand::u32(..) >> 1));
    let opts = ReaderOptions {
        db,
        heartbeat: Duration::from_secs(1),
        decode: DecodeOptions::default(),
        filter: Arc::new(move |d: &str, t: &str| filter_router.wants_table(d, t)),
        expect_file: None,
        tables: router.tables(),
        // Read-only: a replay never changes what the live run keeps.
        history_store: None,
    };
    let (tx, mut rx) = reader::channel(4096);
    let cancel = CancellationToken::new();
    let reader = tokio::spawn(reader::run(info, opts, start, tx, cancel.clone()));
    let mut emit = Emit {
        fan_out: FanOut::new(router, &config.tasks, history),
        sink,
        summary: Summary::default(),
    };
    let scratch_db = std::env::temp_dir().join(format!(
        "pikachu-replay-xa-{}-{:016x}.db",
        std::process::id(),
        fastrand::u64(..)
    ));
    let mut hold = XaHold::scratch(scratch_db);
    let reader_done = read_range(&mut rx, &mut conn, &stop, &mut hold, &mut emit).await?;
    for h in hold.held().await.map_err(xa_error)? {
        tracing::warn!(xid = %h.xid, rows = h.rows, "replay: the XA transaction {} prepared at {}:{} has no XA COMMIT or XA ROLLBACK in the range: its {} rows were not replayed (extend --to past its outcome to include them)", h.xid, h.file, h.pos, h.rows);
        emit.summary.xa.prepared_without_outcome.push(h.xid);
    }
    drop(hold);
    cancel.cancel();
    drop(rx);
    // Wait for every change to be settled (delivered or dead-lettered).
    let settlement = emit.sink.close(Duration::from_secs(24 * 3600)).await;
    let mut summary = emit.summary;
    summary.failed = settlement.dead_lettered + settlement.unsettled;
    let result = reader.await;
    if reader_done {
        match result {
            Ok(Err(e)) => return Err(runtime(e.to_string())),
            Err(e) => return Err(runtime(format!("the binlog reader stopped: {e}"))),
            Ok(Ok(())) => {}
        }
    }
    summary.seconds = began.elapsed().as_secs_f64();
    Ok(summary)
}

/// Reads events until the range ends; true when it ended because the
/// reader stopped (its result then matters).
async fn read_range<S: Sink>(
    rx: &mut reader::Events,
    conn: &mut Conn,
    stop: &Stop,
    hold: &mut XaHold,
    emit: &mut Emit<S>,
) -> Result<bool, ReplayError> {
    let mut in_trx = false;
    let mut last_commit: Option<String> = None;
    let mut finished = Vec::new();
    loop {
        let ev = match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => return Ok(true),
            Err(_) => {
                // Nothing for a while: a range without a transaction end
                // past `to` ends when the server has sent everything.
                if dump_threads_idle(conn).await && rx.is_empty() {
                    tracing::info!("replay: reached the end of the binlog");
                    return Ok(false);
                }
                continue;
            }
        };
        if !in_trx && begins_past(&ev, stop) {
            // A transaction that begins at or past `--to` (the range
            // ended with a file, say): not part of the range.
            emit.summary.stopped_at = Some(last_commit.unwrap_or_else(|| stop.to_string()));
            return Ok(false);
        }
        match ev {
            SourceEvent::Change(change) => {
                in_trx = true;
                if let Some(change) = hold.hold(change).await.map_err(xa_error)? {
                    emit.change(&change).await?;
                }
            }
            SourceEvent::Xa(x) => {
                in_trx = true;
                on_xa(x, hold, emit, &mut finished).await?;
            }
            SourceEvent::Commit(c) => {
                in_trx = false;
                if let GroupEnd::Committed(release) = hold.end_group().await.map_err(xa_error)? {
                    emit.release(release).await?;
                }
                hold.forget(std::mem::take(&mut finished))
                    .await
                    .map_err(xa_error)?;
                let at = format!("{}:{}", c.file, c.pos);
                if stop.reached(&c) {
                    emit.summary.stopped_at = Some(at);
                    return Ok(false);
                }
                last_commit = Some(at);
            }
        }
    }
}

/// Whether `ev` begins a transaction past the range's end.
fn begins_past(ev: &SourceEvent, stop: &Stop) -> bool {
    match ev {
        SourceEvent::Change(c) => stop.before(&c.source.file, c.source.pos),
        SourceEvent::Xa(x) => stop.before(&x.at().file, x.at().pos),
        SourceEvent::Commit(_) => false,
    }
}

fn xa_error(e: crate::xa::XaError) -> ReplayError {
    runtime(format!("holding XA rows in a scratch file: {e}"))
}

/// An XA boundary during a replay.
async fn on_xa<S: Sink>(
    x: XaEvent,
    hold: &mut XaHold,
    emit: &mut Emit<S>,
    finished: &mut Vec<i64>,
) -> Result<(), ReplayError> {
    match x {
        XaEvent::Start(at) => hold.start(&at),
        XaEvent::Prepare(at) => {
            emit.summary.xa.prepared += 1;
            hold.prepare(&at).await.map_err(xa_error)?;
        }
        XaEvent::Outcome { at, commit } => {
            match hold.outcome(&at, commit).await.map_err(xa_error)? {
                Outcome::Commit(held, release) => {
                    emit.summary.xa.committed += 1;
                    finished.push(held.id);
                    emit.release(release).await?;
                }
                Outcome::Rollback(held) => {
                    emit.summary.xa.rolled_back += 1;
                    finished.push(held.id);
                }
                Outcome::RolledBackOpen { .. } => emit.summary.xa.rolled_back += 1,
                Outcome::Unknown => {
                    let what = if commit { "XA COMMIT" } else { "XA ROLLBACK" };
                    tracing::warn!(xid = %at.xid, "replay: {what} {} at {}:{} is of a transaction prepared before the range: its rows are unknown to this replay and were not replayed (start the range before its XA PREPARE to include them)", at.xid, at.file, at.pos);
                    emit.summary
                        .xa
                        .outcome_without_prepare
                        .push(at.xid.to_string());
                }
            }
        }
    }
    Ok(())
}

/// Fans each change out into the sink, counting.
struct Emit<S> {
    /// Change → jobs, shared with `pikachu run`.
    fan_out: FanOut,
    /// Where the jobs go.
    sink: S,
    /// The counts so far.
    summary: Summary,
}

impl<S: Sink> Emit<S> {
    async fn change(&mut self, change: &Change) -> Result<(), ReplayError> {
        let mut routed = false;
        let mut jobs = self.fan_out.jobs(change);
        while let Some(job) = jobs.next() {
            routed = true;
            self.summary.payloads += 1;
            self.summary.bytes += job.body().len() as u64;
            self.sink
                .send(job)
                .await
                .map_err(|e| runtime(e.to_string()))?;
        }
        if routed {
            self.summary.count(change);
        }
        Ok(())
    }

    /// The released rows of a committed XA, in order.
    async fn release(&mut self, mut release: Release) -> Result<(), ReplayError> {
        while let Some(chunk) = release.next_chunk().await.map_err(xa_error)? {
            for change in &chunk {
                self.change(change).await?;
            }
        }
        Ok(())
    }
}
