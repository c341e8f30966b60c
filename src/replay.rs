//! `pikachu replay`: reads a range of the live server's binlog through the
//! normal path (the binlog reader, [`Router`], [`payload::render`]) for the
//! configured tasks, writes the payloads to the webhooks, stdout or nowhere,
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
use crate::deliver::{self, Dispatcher, Job};
use crate::event::{payload, Change, ChangeKind};
use crate::route::Router;
use crate::source::connect::{self, query_rows, Flavour, ServerInfo};
use crate::source::position::{self, FilePos, StartAt};
use crate::source::reader::{self, Commit, ReaderOptions, SourceEvent, XaEvent};
use crate::source::value::DecodeOptions;
use crate::store::Store;
use crate::xa::{GroupEnd, Outcome, Release, XaHold};

/// Where payloads go.
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
pub enum Bound {
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

impl Bound {
    /// Parses `file:pos`, a MariaDB GTID (list) or a MySQL GTID.
    pub fn parse(s: &str) -> Result<Bound, String> {
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
            Some(p) => Err(format!(
                "`{s}`: position {} is before the first event (positions start at 4)",
                p.pos
            )),
            None => Err(format!(
                "`{s}` is not a binlog position: expected FILE:POS (e.g. mysql-bin.000003:1234), a MariaDB GTID (0-1-100) or a MySQL GTID (uuid:gno)"
            )),
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

/// A failed replay: the message and the process exit code (2 usage, 1 runtime).
#[derive(Debug)]
pub struct ReplayError {
    pub code: u8,
    pub message: String,
}

fn runtime(message: impl Into<String>) -> ReplayError {
    ReplayError {
        code: 1,
        message: message.into(),
    }
}

fn usage(message: impl Into<String>) -> ReplayError {
    ReplayError {
        code: 2,
        message: message.into(),
    }
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
    let rows = query_rows(conn, "SHOW BINARY LOGS")
        .await
        .map_err(|e| runtime(e.to_string()))?;
    let files: Vec<(String, u64)> = rows
        .iter()
        .filter_map(|r| {
            let name = r.first().cloned().flatten()?;
            let size = r.get(1).cloned().flatten()?.parse().ok()?;
            Some((name, size))
        })
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

/// Runs a replay. Payloads (for `Output::Stdout`) go to `out`; the summary
/// line is written by the caller.
pub async fn run(
    config: &Config,
    req: &Request,
    out: &mut (dyn Write + Send),
) -> Result<Summary, ReplayError> {
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
    let began = Instant::now();
    let mut summary = Summary::default();
    if let (StartAt::FilePos(f), Stop::FilePos(t)) = (&start, &stop) {
        if (f.file.as_str(), f.pos) >= (t.file.as_str(), t.pos) {
            summary.stopped_at = Some(f.to_string());
            return Ok(summary);
        }
    }

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
    // Webhook output goes through the normal delivery engine (ordered per
    // row, retries, dead letters in the state store); the checkpoint is
    // never touched.
    let dispatcher = match req.output {
        Output::Webhook => {
            let store = Store::open(&config.state_dir).map_err(|e| runtime(e.to_string()))?;
            Some(
                Dispatcher::start(
                    &config.dispatcher,
                    &config.tasks,
                    Arc::new(std::sync::Mutex::new(store)),
                )
                .map_err(runtime)?,
            )
        }
        _ => None,
    };
    let mut emit = Emit {
        config,
        router: &router,
        output: req.output,
        dispatcher: dispatcher.as_ref(),
        out: &mut *out,
        history,
        seq: 0,
        scratch: Vec::with_capacity(64),
        body: Vec::with_capacity(4096),
    };
    let scratch_db = std::env::temp_dir().join(format!(
        "pikachu-replay-xa-{}-{:016x}.db",
        std::process::id(),
        fastrand::u64(..)
    ));
    let mut hold = XaHold::scratch(scratch_db);
    let mut reader_done = false;
    let mut in_trx = false;
    let mut last_commit: Option<String> = None;
    let mut finished = Vec::new();
    loop {
        let ev = match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => {
                reader_done = true;
                break;
            }
            Err(_) => {
                // Nothing for a while: a range without a transaction end
                // past `to` ends when the server has sent everything.
                if dump_threads_idle(&mut conn).await && rx.is_empty() {
                    tracing::info!("replay: reached the end of the binlog");
                    break;
                }
                continue;
            }
        };
        let first = match &ev {
            SourceEvent::Change(c) => Some((c.source.file.clone(), c.source.pos)),
            SourceEvent::Xa(x) => Some((x.at().file.clone(), x.at().pos)),
            SourceEvent::Commit(_) => None,
        };
        if let (false, Some((file, pos))) = (in_trx, first) {
            if stop.before(&file, pos) {
                // A transaction that begins at or past `--to` (the range
                // ended with a file, say): not part of the range.
                summary.stopped_at = Some(last_commit.clone().unwrap_or_else(|| stop.to_string()));
                break;
            }
        }
        match ev {
            SourceEvent::Change(change) => {
                in_trx = true;
                if let Some(change) = hold.hold(change).await.map_err(xa_error)? {
                    emit.change(&change, &mut summary).await?;
                }
            }
            SourceEvent::Xa(x) => {
                in_trx = true;
                on_xa(x, &mut hold, &mut emit, &mut summary, &mut finished).await?;
            }
            SourceEvent::Commit(c) => {
                in_trx = false;
                if let GroupEnd::Committed(release) = hold.end_group().await.map_err(xa_error)? {
                    emit.release(release, &mut summary).await?;
                }
                hold.forget(std::mem::take(&mut finished))
                    .await
                    .map_err(xa_error)?;
                last_commit = Some(format!("{}:{}", c.file, c.pos));
                if stop.reached(&c) {
                    summary.stopped_at = Some(format!("{}:{}", c.file, c.pos));
                    break;
                }
            }
        }
    }
    for h in hold.held().await.map_err(xa_error)? {
        tracing::warn!(xid = %h.xid, rows = h.rows, "replay: the XA transaction {} prepared at {}:{} has no XA COMMIT or XA ROLLBACK in the range: its {} rows were not replayed (extend --to past its outcome to include them)", h.xid, h.file, h.pos, h.rows);
        summary.xa.prepared_without_outcome.push(h.xid);
    }
    drop(hold);
    cancel.cancel();
    drop(rx);
    if let Some(d) = dispatcher {
        // Wait for every change to be delivered or dead-lettered.
        let stats = d.stats();
        let report = d.shutdown(Duration::from_secs(24 * 3600)).await;
        summary.failed = stats
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed)
            + report.unsettled;
    }
    let result = reader.await;
    if reader_done {
        match result {
            Ok(Err(e)) => return Err(runtime(e.to_string())),
            Err(e) => return Err(runtime(format!("the binlog reader stopped: {e}"))),
            Ok(Ok(())) => {}
        }
    }
    let _ = out.flush();
    summary.seconds = began.elapsed().as_secs_f64();
    Ok(summary)
}

fn xa_error(e: crate::xa::XaError) -> ReplayError {
    runtime(format!("holding XA rows in a scratch file: {e}"))
}

/// An XA boundary during a replay.
async fn on_xa(
    x: XaEvent,
    hold: &mut XaHold,
    emit: &mut Emit<'_>,
    summary: &mut Summary,
    finished: &mut Vec<i64>,
) -> Result<(), ReplayError> {
    match x {
        XaEvent::Start(at) => hold.start(&at),
        XaEvent::Prepare(at) => {
            summary.xa.prepared += 1;
            hold.prepare(&at).await.map_err(xa_error)?;
        }
        XaEvent::Outcome { at, commit } => {
            match hold.outcome(&at, commit).await.map_err(xa_error)? {
                Outcome::Commit(held, release) => {
                    summary.xa.committed += 1;
                    finished.push(held.id);
                    emit.release(release, summary).await?;
                }
                Outcome::Rollback(held) => {
                    summary.xa.rolled_back += 1;
                    finished.push(held.id);
                }
                Outcome::RolledBackOpen { .. } => summary.xa.rolled_back += 1,
                Outcome::Unknown => {
                    let what = if commit { "XA COMMIT" } else { "XA ROLLBACK" };
                    tracing::warn!(xid = %at.xid, "replay: {what} {} at {}:{} is of a transaction prepared before the range: its rows are unknown to this replay and were not replayed (start the range before its XA PREPARE to include them)", at.xid, at.file, at.pos);
                    summary.xa.outcome_without_prepare.push(at.xid.to_string());
                }
            }
        }
    }
    Ok(())
}

/// Renders each change for its tasks and writes it out (stdout, the
/// delivery engine, or nowhere), counting.
struct Emit<'a> {
    config: &'a Config,
    router: &'a Router,
    output: Output,
    dispatcher: Option<&'a Dispatcher>,
    out: &'a mut (dyn Write + Send),
    /// The binlog history marker, for change ids.
    history: crate::source::binlogs::History,
    seq: u64,
    scratch: Vec<u8>,
    body: Vec<u8>,
}

impl Emit<'_> {
    async fn change(&mut self, change: &Change, summary: &mut Summary) -> Result<(), ReplayError> {
        let mut routed = false;
        for task_idx in self.router.tasks_for(change) {
            routed = true;
            summary.payloads += 1;
            let task = &self.config.tasks[task_idx];
            let id = payload::change_id(change, &task.task_id, self.history.0);
            self.body.clear();
            payload::render(&mut self.body, change, &task.task_id, &id);
            summary.bytes += self.body.len() as u64;
            if self.output == Output::Null {
                // Rendered like every other output, then dropped:
                // the benchmark measures decoding and encoding.
                continue;
            }
            match self.dispatcher {
                Some(d) => {
                    let job = Job {
                        task: task_idx,
                        keys: deliver::ordering_keys(task_idx, change, &mut self.scratch),
                        id,
                        body: self.body.clone().into(),
                        seq: self.seq,
                    };
                    self.seq += 1;
                    d.submit(job).await.map_err(|e| runtime(e.to_string()))?;
                }
                None => {
                    self.body.push(b'\n');
                    self.out
                        .write_all(&self.body)
                        .map_err(|e| runtime(format!("cannot write to stdout: {e}")))?;
                }
            }
        }
        if routed {
            summary.count(change);
        }
        Ok(())
    }

    /// The released rows of a committed XA, in order.
    async fn release(
        &mut self,
        mut release: Release,
        summary: &mut Summary,
    ) -> Result<(), ReplayError> {
        while let Some(chunk) = release.next_chunk().await.map_err(xa_error)? {
            for change in &chunk {
                self.change(change, summary).await?;
            }
        }
        Ok(())
    }
}
