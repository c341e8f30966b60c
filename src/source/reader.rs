//! The live binlog reader: registers as a replica, streams events from a
//! start position, notices a silent server (heartbeats), looks up table
//! definitions the [`Decoder`] asks for, and sends what it decodes
//! downstream. A full channel makes the reader wait: nothing is dropped.
//!
//! Events from the network are checked before they are parsed, as the
//! offline reader checks files: the stream ([`checked`], a patch of
//! mysql_async, see `vendor/README.md`) runs [`check_raw_event`] on every
//! event's bytes and leaves TRANSACTION_PAYLOAD events to
//! [`payload_events`], which opens them as the offline reader does. A
//! corrupt event is a decode error naming its position, never a panic.

use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use mysql_common::binlog::events::{Event, FormatDescriptionEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::binlogs::{self, FileIdentity, Standing};
use super::connect::{self, Flavour, ServerInfo};
pub(crate) use super::decoder::XaAt;
pub use super::decoder::{Commit, XaEvent};
use super::decoder::{Decoder, DecoderOptions, Output};
use super::error::{At, SourceError};
use super::history::{HistPos, SchemaHistory};
pub use super::options::ReaderOptions;
use super::position::StartAt;
use super::schema_sync;
use crate::config::DatabaseConfig;
use crate::event::Change;

/// What the reader sends downstream.
#[derive(Debug)]
pub enum SourceEvent {
    /// One row change of a wanted table.
    Change(Change),
    /// A transaction ended at this position: every change before it has been sent.
    Commit(Commit),
    /// An XA transaction begins, is prepared, or has its outcome (see
    /// [`XaEvent`]); always before the `Commit` of its event group.
    Xa(XaEvent),
}

/// Most events in one batch. The reader sends what it decoded in batches
/// (one channel message for many rows: one wake-up instead of one per
/// row); a batch goes out when it is full or when the server has nothing
/// more to send at once, so batching never delays a change.
pub const BATCH: usize = 1024;

/// The sending half of the reader's channel: batches of events, in order.
#[derive(Clone)]
pub struct EventSender {
    tx: mpsc::Sender<Vec<SourceEvent>>,
    /// Most events per batch.
    batch: usize,
}

impl EventSender {
    /// Sends `batch` (leaving it empty). Waiting for room downstream is the
    /// backpressure; a stop request still gets through. False when the
    /// reader should stop (cancelled, or nobody receives any more).
    async fn send_batch(&self, batch: &mut Vec<SourceEvent>, cancel: &CancellationToken) -> bool {
        let full = std::mem::replace(batch, Vec::with_capacity(self.batch));
        tokio::select! {
            _ = cancel.cancelled() => false,
            sent = self.tx.send(full) => sent.is_ok(),
        }
    }
}

/// A channel for a reader that holds at most about `events` events (never
/// more than `max(events, 2)`): batches of up to [`BATCH`] events, or of
/// half of `events` when that is smaller, so a small `queue_size` stays
/// small. Returns its two halves.
pub fn channel(events: usize) -> (EventSender, Events) {
    let batch = (events / 2).clamp(1, BATCH);
    let (tx, rx) = mpsc::channel((events / batch).max(2));
    (
        EventSender { tx, batch },
        Events {
            rx,
            batch: Vec::new().into_iter(),
        },
    )
}

/// The receiving half of a reader's channel: one event at a time.
pub struct Events {
    rx: mpsc::Receiver<Vec<SourceEvent>>,
    batch: std::vec::IntoIter<SourceEvent>,
}

impl Events {
    /// The next event; `None` once the reader is gone and all is read.
    /// Cancel-safe (for `select!`): nothing is lost when the future is dropped.
    pub async fn recv(&mut self) -> Option<SourceEvent> {
        loop {
            if let Some(ev) = self.batch.next() {
                return Some(ev);
            }
            self.batch = self.rx.recv().await?.into_iter();
        }
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.batch.len() == 0 && self.rx.is_empty()
    }
}

/// Opens the binlog stream at `start`.
async fn open_stream(
    info: &ServerInfo,
    opts: &ReaderOptions,
    start: &StartAt,
) -> Result<(mysql_async::BinlogStream, String, Option<String>), SourceError> {
    let mut conn = connect::connect(&opts.db).await?;
    // MariaDB sends no GTID_LIST when a stream starts mid-file: ask for the
    // GTID state at the start position, so commits carry the full state.
    let gtid_seed = match (info.flavour, start) {
        (Flavour::MariaDb, StartAt::FilePos(p)) => {
            super::binlogs::gtid_pos(&mut conn, &p.file, p.pos).await
        }
        (Flavour::MariaDb, StartAt::Gtid(g)) => Some(g.clone()),
        _ => None,
    };
    let mut setup = vec![format!(
        "SET @master_heartbeat_period = {}",
        opts.heartbeat.as_nanos().max(1_000_000_000)
    )];
    if info.flavour == Flavour::MariaDb {
        // Without capability 4 MariaDB replaces GTID events by dummy BEGIN queries.
        setup.push("SET @mariadb_slave_capability = 4".into());
    }
    let (file, pos) = match start {
        StartAt::FilePos(p) => (p.file.clone(), p.pos),
        StartAt::Gtid(g) => {
            match info.flavour {
                Flavour::MariaDb => {
                    if !g
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '-' || c == ',' || c == ' ')
                    {
                        return Err(SourceError::Config(format!(
                            "`{g}` is not a MariaDB GTID position (expected domain-server-seq, e.g. 0-1-100)"
                        )));
                    }
                    setup.push(format!("SET @slave_connect_state = '{g}'"));
                    setup.push("SET @slave_gtid_strict_mode = 0".into());
                    setup.push("SET @slave_gtid_ignore_duplicates = 0".into());
                }
                Flavour::MySql => {
                    // Validated here; the request is built below.
                    super::position::parse_mysql_gtid_set(g).map_err(SourceError::Config)?;
                }
            }
            (String::new(), 4)
        }
    };
    for sql in &setup {
        conn.query_drop(sql.as_str())
            .await
            .map_err(|e| SourceError::query(sql, e))?;
    }
    let mut request = BinlogStreamRequest::new(opts.db.server_id)
        .with_filename(file.as_bytes())
        .with_pos(pos);
    if let (Flavour::MySql, StartAt::Gtid(g)) = (info.flavour, start) {
        // COM_BINLOG_DUMP_GTID: the server sends what is not in this set.
        let sids = super::position::parse_mysql_gtid_set(g).map_err(SourceError::Config)?;
        request = request.with_gtid().with_gtid_set(sids);
    }
    let stream = conn
        .get_binlog_stream(request)
        .await
        .map_err(|e| stream_error(e, opts.db.server_id, &file, pos))?;
    Ok((checked(stream), file, gtid_seed))
}

/// A corrupt event from the server, found by [`check_raw_event`] (carried
/// through mysql_async as the source of an `io::Error`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct CorruptEvent(pub String);

/// The live stream's check of each event's bytes before mysql_common parses
/// them: the offline reader's framing checks ([`super::file::check_event_frame`]).
pub(crate) fn check_raw_event(
    bytes: &[u8],
    fde: &FormatDescriptionEvent<'static>,
) -> std::io::Result<()> {
    super::file::check_event_frame(bytes, fde)
        .map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidData, CorruptEvent(m)))
}

/// `stream` as the reader reads it: every event checked by
/// [`check_raw_event`], TRANSACTION_PAYLOAD events not opened by the stream
/// (see [`payload_events`]).
pub fn checked(stream: BinlogStream) -> BinlogStream {
    stream
        .with_event_check(check_raw_event)
        .without_payload_decompression()
}

/// The inner events of `event` when it is a TRANSACTION_PAYLOAD (MySQL 8
/// binlog transaction compression), opened as the offline reader opens
/// them (header checked, size bounded, inner events framed); none for any
/// other event. A corrupt payload is a decode error at `file`:its end.
pub fn payload_events(event: &Event, file: &str) -> Result<Vec<Event>, SourceError> {
    if event.header().event_type_raw() != super::decoder::TRANSACTION_PAYLOAD {
        return Ok(Vec::new());
    }
    match super::file::open_payload(event, event.fde()) {
        Ok(p) => Ok(p.events.into_iter().map(|e| e.event).collect()),
        Err(message) => Err(SourceError::Decode {
            at: At {
                file: file.to_string(),
                pos: u64::from(event.header().log_pos()),
            },
            message,
        }),
    }
}

/// Reads the binlog from `start` until cancelled, the receiver is gone, or an error.
pub async fn run(
    info: ServerInfo,
    opts: ReaderOptions,
    start: StartAt,
    tx: EventSender,
    cancel: CancellationToken,
) -> Result<(), SourceError> {
    // One connection's worth, without reconnecting.
    let status = ReaderStatus::default();
    let mut progress = Progress::default();
    let mut failures = 0;
    let expect = opts.expect_file.clone();
    let mut history = schema_sync::init(&info, &opts, &start).await?;
    stream_from(
        &info,
        &opts,
        &start,
        expect,
        0,
        &tx,
        &cancel,
        &status,
        &mut progress,
        &mut failures,
        &mut history,
    )
    .await
}

/// What an error of the binlog stream means for pikachu; `file`:`pos` is
/// where the stream was (the start of the event it was reading).
pub fn stream_error(e: mysql_async::Error, server_id: u32, file: &str, pos: u64) -> SourceError {
    if let mysql_async::Error::Io(mysql_async::IoError::Io(io)) = &e {
        if let Some(c) = io.get_ref().and_then(|i| i.downcast_ref::<CorruptEvent>()) {
            return SourceError::Decode {
                at: At {
                    file: file.to_string(),
                    pos,
                },
                message: format!("the event the server sent from this position is corrupt: {c}"),
            };
        }
    }
    if let mysql_async::Error::Server(se) = &e {
        // Another replica registered with our server_id: MariaDB says 4052
        // (ER_SLAVE_SAME_ID), MySQL 1236 with this text.
        if se.code == 4052 || se.message.contains("same server_uuid/server_id") {
            return SourceError::ServerIdClash {
                server_id,
                message: se.message.clone(),
            };
        }
        // 1236: ER_MASTER_FATAL_ERROR_READING_BINLOG (purged or unknown position).
        if se.code == 1236 {
            return SourceError::Purged {
                needed: format!("{file}:{pos}"),
                oldest: "unknown".into(),
                message: se.message.clone(),
            };
        }
    }
    SourceError::Stream(e.to_string())
}

/// Makes a "position not on the server" error precise: purged (older than
/// the oldest binlog, which it names) or a reset history (the position is
/// past what the server has, or in a file of the same name created later).
async fn classify_lost_position(db: &DatabaseConfig, e: SourceError) -> SourceError {
    let SourceError::Purged {
        needed, message, ..
    } = e
    else {
        return e;
    };
    let unknown = |needed, message| SourceError::Purged {
        needed,
        oldest: "unknown".into(),
        message,
    };
    let Ok(mut c) = connect::connect(db).await else {
        return unknown(needed, message);
    };
    let Ok(files) = binlogs::list(&mut c).await else {
        return unknown(needed, message);
    };
    let Some(at) = super::position::FilePos::parse(&needed) else {
        return unknown(needed, message);
    };
    match binlogs::standing(&at.file, at.pos, None, &files, None) {
        Standing::Purged { oldest } => SourceError::Purged {
            needed,
            oldest,
            message,
        },
        Standing::Reset { why } => SourceError::HistoryChanged { needed, why },
        Standing::Present => SourceError::Purged {
            needed,
            oldest: files
                .first()
                .map(|f| format!("{}:4", f.name))
                .unwrap_or_else(|| "none".into()),
            message,
        },
    }
}

/// Live state of a reader, for health and metrics.
#[derive(Debug)]
pub struct ReaderStatus {
    pub connected: std::sync::atomic::AtomicBool,
    pub reconnects: std::sync::atomic::AtomicU64,
    pub last_error: std::sync::Mutex<Option<String>>,
    /// Since when the reader has had no binlog connection (set at creation:
    /// not connected yet), `None` while connected.
    pub disconnected_since: std::sync::Mutex<Option<std::time::Instant>>,
    /// Sizes of the binlog events received (heartbeats included).
    pub bytes_read: std::sync::atomic::AtomicU64,
    /// Binlog timestamp of the last real event read (not a heartbeat, not
    /// an artificial event), seconds since the epoch; 0 = none yet.
    pub event_time: std::sync::atomic::AtomicI64,
    /// Wall clock minus `event_time` when that event was read, in seconds;
    /// 0 after a heartbeat (the server had nothing more to send).
    pub read_lag: std::sync::atomic::AtomicI64,
    /// The reader is waiting for the server (not decoding, not waiting
    /// for room downstream).
    pub waiting: std::sync::atomic::AtomicBool,
    /// Set while other replicas keep taking this `server_id`
    /// ([`CLASHES_FOR_DOWN`] disconnects within [`CLASH_WINDOW`]): why
    /// health is DOWN. Cleared once a stream has lasted [`CLASH_CLEAR`].
    pub server_id_clash: std::sync::Mutex<Option<String>>,
    /// Fast check of `server_id_clash` for the per-event loop.
    clashing: std::sync::atomic::AtomicBool,
    /// Where the reader stood when it last waited for the server with
    /// nothing left to send: every event before this position (binlog file,
    /// offset) has been sent downstream. A snapshot's high watermark that
    /// no transaction end reaches (after a rotation, on an idle server) is
    /// known to be passed by it.
    sent_upto: std::sync::Mutex<Option<(String, u64)>>,
}

/// Disconnects by a replica with the same server_id, within [`CLASH_WINDOW`],
/// that make health DOWN and the reader log an ERROR.
pub(crate) const CLASHES_FOR_DOWN: usize = 3;
/// See [`CLASHES_FOR_DOWN`].
pub(crate) const CLASH_WINDOW: Duration = Duration::from_secs(60);
/// A stream that lasts this long means the clash is over.
pub(crate) const CLASH_CLEAR: Duration = Duration::from_secs(20);
/// Least wait before reconnecting after such a disconnect: each reconnect
/// disconnects the other replica, so not in a tight loop.
const CLASH_MIN_DELAY: Duration = Duration::from_secs(2);

impl Default for ReaderStatus {
    fn default() -> Self {
        ReaderStatus {
            connected: Default::default(),
            reconnects: Default::default(),
            last_error: Default::default(),
            disconnected_since: std::sync::Mutex::new(Some(std::time::Instant::now())),
            bytes_read: Default::default(),
            event_time: Default::default(),
            read_lag: Default::default(),
            waiting: Default::default(),
            server_id_clash: Default::default(),
            clashing: Default::default(),
            sent_upto: Default::default(),
        }
    }
}

impl ReaderStatus {
    /// Where the reader stood when it last waited for the server with
    /// everything before it sent downstream (see the field).
    pub(crate) fn sent_upto(&self) -> Option<(String, u64)> {
        self.sent_upto.lock().ok().and_then(|s| s.clone())
    }

    /// Records that every event before `pos` of `file` has been sent.
    fn note_sent_upto(&self, file: &str, pos: u64) {
        if let Ok(mut s) = self.sent_upto.lock() {
            match &mut *s {
                Some((f, p)) if f == file => *p = pos,
                other => *other = Some((file.to_string(), pos)),
            }
        }
    }

    fn set_connected(&self, c: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.connected.store(c, Relaxed);
        if let Ok(mut since) = self.disconnected_since.lock() {
            match c {
                true => *since = None,
                false => {
                    since.get_or_insert_with(std::time::Instant::now);
                }
            }
        }
    }

    /// Records a disconnect by a replica with the same server_id at `now`
    /// in `recent` (those within [`CLASH_WINDOW`]); from the
    /// [`CLASHES_FOR_DOWN`]th on, sets [`ReaderStatus::server_id_clash`].
    /// True when the clash has just begun (time for an ERROR).
    fn note_clash(
        &self,
        recent: &mut std::collections::VecDeque<std::time::Instant>,
        server_id: u32,
    ) -> bool {
        let now = std::time::Instant::now();
        recent.push_back(now);
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > CLASH_WINDOW)
        {
            recent.pop_front();
        }
        if recent.len() < CLASHES_FOR_DOWN {
            return false;
        }
        let reason = format!(
            "another replica keeps taking database.server_id {server_id} ({} disconnects in the last {} s): pick a database.server_id no other replica uses",
            recent.len(),
            CLASH_WINDOW.as_secs()
        );
        let began = !self
            .clashing
            .swap(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut r) = self.server_id_clash.lock() {
            *r = Some(reason);
        }
        began
    }

    /// Ends the clash state once a stream opened at `opened` has lasted [`CLASH_CLEAR`].
    fn clear_clash_after(&self, opened: std::time::Instant) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.clashing.load(Relaxed) && opened.elapsed() > CLASH_CLEAR {
            self.clashing.store(false, Relaxed);
            if let Ok(mut r) = self.server_id_clash.lock() {
                *r = None;
            }
            tracing::info!(
                "no other replica has taken database.server_id for {} s: the clash is over",
                CLASH_CLEAR.as_secs()
            );
        }
    }

    /// How long the reader has been without a connection (`None` while connected).
    pub(crate) fn disconnected_for(&self) -> Option<Duration> {
        let since = *self.disconnected_since.lock().ok()?;
        since.map(|s| s.elapsed())
    }

    /// Records an event read from the server (bytes, time, lag).
    fn note_event(&self, event: &mysql_common::binlog::events::Event) {
        use std::sync::atomic::Ordering::Relaxed;
        let h = event.header();
        self.waiting.store(false, Relaxed);
        self.bytes_read
            .fetch_add(u64::from(h.event_size()), Relaxed);
        // 27: HEARTBEAT_LOG_EVENT, 41: MySQL's HEARTBEAT_LOG_EVENT_V2.
        if matches!(h.event_type_raw(), 27 | 41) {
            self.read_lag.store(0, Relaxed);
            return;
        }
        // Artificial events (the fake rotate at connect, the format
        // description replayed when starting mid-file) carry a 0 timestamp
        // or position, or the LOG_EVENT_ARTIFICIAL_F flag.
        if h.timestamp() == 0 || h.log_pos() == 0 || h.flags_raw() & 0x20 != 0 {
            return;
        }
        let ts = i64::from(h.timestamp());
        self.event_time.store(ts, Relaxed);
        self.read_lag.store((unix_now() - ts).max(0), Relaxed);
    }

    /// Replication lag in seconds: how far behind the server's binlog the
    /// reader is. While it waits for the server, the lag measured when the
    /// last event was read (0 once a heartbeat came: nothing more to read,
    /// so an idle server shows 0); while it decodes or waits for room
    /// downstream, now minus the last event's binlog time (it grows while
    /// delivery holds the reader back). `None` before any event.
    pub fn lag_seconds(&self) -> Option<i64> {
        use std::sync::atomic::Ordering::Relaxed;
        let ts = self.event_time.load(Relaxed);
        let read_lag = self.read_lag.load(Relaxed);
        if ts == 0 {
            // Nothing real read yet: caught up once waiting for the server.
            return self.waiting.load(Relaxed).then_some(0);
        }
        if self.waiting.load(Relaxed) || !self.connected.load(Relaxed) {
            Some(read_lag)
        } else {
            Some(read_lag.max(unix_now() - ts).max(0))
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Notices a reset of the server's binlog under an idle stream (`RESET
/// MASTER` while the stream waits at the end of the current file: the dump
/// thread keeps the deleted file and sends heartbeats only). At most every
/// [`HistoryWatch::EVERY`] of idleness it compares the stream's position
/// with the server's binlog end; an end behind the stream is a reset, an
/// end ahead of an idle stream twice in a row makes it compare the file's
/// creation time.
#[derive(Debug, Default)]
struct HistoryWatch {
    last: Option<std::time::Instant>,
    ahead_before: bool,
}

impl HistoryWatch {
    const EVERY: Duration = Duration::from_secs(5);

    async fn on_idle(
        &mut self,
        info: &ServerInfo,
        db: &DatabaseConfig,
        conn: &mut Option<Conn>,
        decoder: &Decoder,
        pos: u64,
    ) -> Result<(), SourceError> {
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) || pos == 0 {
            return Ok(());
        }
        self.last = Some(std::time::Instant::now());
        if conn.is_none() {
            *conn = Some(connect::connect(db).await?);
        }
        let Some(c) = conn.as_mut() else {
            return Ok(());
        };
        let end = match super::position::latest(c, info).await {
            Ok(end) => end,
            Err(e) => {
                // A lost helper connection is not the stream's problem.
                tracing::debug!(error = %e, "binlog end check failed");
                *conn = None;
                return Ok(());
            }
        };
        let file = decoder.file();
        let reset = |why| SourceError::HistoryChanged {
            needed: format!("{file}:{pos}"),
            why,
        };
        match binlogs::live_check(file, pos, &end.file, end.pos) {
            binlogs::LiveCheck::Fine => self.ahead_before = false,
            binlogs::LiveCheck::Reset { why } => return Err(reset(why)),
            binlogs::LiveCheck::Ahead if !self.ahead_before => self.ahead_before = true,
            binlogs::LiveCheck::Ahead => {
                self.ahead_before = false;
                let created = decoder.file_created();
                match binlogs::first_event_time(db, file).await {
                    Ok(now) if created != 0 && now != created => {
                        return Err(reset(format!(
                            "{file} on the server was created at {}, but the one being read was created at {}",
                            crate::event::time::rfc3339(i64::from(now)),
                            crate::event::time::rfc3339(i64::from(created))
                        )))
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "binlog file identity check failed"),
                }
            }
        }
        Ok(())
    }
}

/// How far the reader got: the last transaction end it sent, and how many
/// events of the open transaction (changes, XA boundaries) it sent after it.
#[derive(Debug, Default, Clone)]
struct Progress {
    last_commit: Option<Commit>,
    open_changes: u64,
}

/// Reads the binlog from `start` like [`run`], but survives lost connections:
/// it reconnects with backoff and resumes after the last complete
/// transaction it sent, skipping the changes of the interrupted transaction
/// that were already sent, so nothing is lost, repeated or reordered.
/// Errors a retry would repeat (bad credentials, a purged position, an event
/// that cannot be decoded) end it.
pub async fn run_with_reconnect(
    info: ServerInfo,
    opts: ReaderOptions,
    start: StartAt,
    tx: EventSender,
    cancel: CancellationToken,
    status: std::sync::Arc<ReaderStatus>,
) -> Result<(), SourceError> {
    let mut progress = Progress::default();
    let mut history = schema_sync::init(&info, &opts, &start).await?;
    let mut from = start;
    let mut expect = opts.expect_file.clone();
    let mut skip = 0u64;
    let mut failures = 0u32;
    let mut clashes = std::collections::VecDeque::new();
    loop {
        let result = stream_from(
            &info,
            &opts,
            &from,
            expect.clone(),
            skip,
            &tx,
            &cancel,
            &status,
            &mut progress,
            &mut failures,
            &mut history,
        )
        .await;
        status.set_connected(false);
        let e = match result {
            Ok(()) => return Ok(()),
            Err(e) if !e.is_retryable() => return Err(classify_lost_position(&opts.db, e).await),
            Err(e) => e,
        };
        failures += 1;
        let mut delay = crate::backoff::full_jitter(
            Duration::from_millis(200),
            Duration::from_secs(10),
            failures.min(16),
            0.5 + crate::backoff::rand01() / 2.0,
        );
        if let SourceError::ServerIdClash { .. } = &e {
            delay = delay.max(CLASH_MIN_DELAY);
            if status.note_clash(&mut clashes, opts.db.server_id) {
                tracing::error!(server_id = opts.db.server_id, "{e}");
            }
        }
        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, attempt = failures, "binlog connection lost, reconnecting");
        if let Ok(mut l) = status.last_error.lock() {
            *l = Some(e.to_string());
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(delay) => {}
        }
        status
            .reconnects
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(c) = &progress.last_commit {
            from = StartAt::FilePos(super::position::FilePos {
                file: c.file.to_string(),
                pos: c.pos,
            });
            expect = (c.file_created != 0).then(|| FileIdentity {
                file: c.file.to_string(),
                created: c.file_created,
            });
        }
        skip = progress.open_changes;
    }
}

/// One connection's worth of streaming for [`run_with_reconnect`]; the
/// schema history carries over to the next connection.
#[allow(clippy::too_many_arguments)]
async fn stream_from(
    info: &ServerInfo,
    opts: &ReaderOptions,
    from: &StartAt,
    expect: Option<FileIdentity>,
    skip: u64,
    tx: &EventSender,
    cancel: &CancellationToken,
    status: &ReaderStatus,
    progress: &mut Progress,
    failures: &mut u32,
    history: &mut SchemaHistory,
) -> Result<(), SourceError> {
    let (stream, file, gtid_seed) = open_stream(info, opts, from).await?;
    let opened = std::time::Instant::now();
    status.set_connected(true);
    tracing::info!(start = %from, server_id = opts.db.server_id, skip, "binlog stream opened");
    let mut decoder = Decoder::new(
        DecoderOptions {
            decode: opts.decode,
            filter: opts.filter.clone(),
            schema_lookup: true,
        },
        &file,
    );
    if let Some(seed) = &gtid_seed {
        decoder.seed_gtid_state(seed);
    }
    if let Some(e) = expect {
        decoder.expect_file(e);
    }
    decoder.history = std::mem::take(history);
    let result = stream_events(
        info,
        opts,
        from,
        opened,
        stream,
        &mut decoder,
        skip,
        tx,
        cancel,
        status,
        progress,
        failures,
    )
    .await;
    *history = std::mem::take(&mut decoder.history);
    result
}

/// The event loop of [`stream_from`].
#[allow(clippy::too_many_arguments)]
async fn stream_events(
    info: &ServerInfo,
    opts: &ReaderOptions,
    from: &StartAt,
    opened: std::time::Instant,
    mut stream: mysql_async::BinlogStream,
    decoder: &mut Decoder,
    mut skip: u64,
    tx: &EventSender,
    cancel: &CancellationToken,
    status: &ReaderStatus,
    progress: &mut Progress,
    failures: &mut u32,
) -> Result<(), SourceError> {
    // A connection for the checks of an idle stream, opened when needed.
    let mut check_conn: Option<Conn> = None;
    let mut watch = HistoryWatch::default();
    let silence = (opts.heartbeat * 3).max(Duration::from_secs(5));
    let mut out = Vec::new();
    let mut batch: Vec<SourceEvent> = Vec::with_capacity(tx.batch);
    // `progress` is what was sent (a reconnect resumes after it); `pending`
    // also counts the batch being built, and becomes `progress` once the
    // batch is sent. A batch lost to an error is read again.
    let mut pending = progress.clone();
    // Where the next event starts (the end of the last one read), for
    // messages and the checks of an idle stream.
    let mut next_pos = start_pos(from);
    loop {
        // Take what the server has already sent without waiting; when it
        // has nothing ready, send the batch on before waiting for more.
        let ready = ready_event(&mut stream, batch.is_empty());
        let next = match ready {
            Some(next) => Ok(next),
            None => {
                if !batch.is_empty() {
                    if !tx.send_batch(&mut batch, cancel).await {
                        return Ok(());
                    }
                    *progress = pending.clone();
                }
                note_waiting(status, decoder, next_pos);
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    next = tokio::time::timeout(silence, stream.next()) => next,
                }
            }
        };
        let event = received(next, silence, opts, decoder, next_pos)?;
        next_pos = note_received(status, opened, &event, next_pos);
        if matches!(event.header().event_type_raw(), 27 | 41) {
            // Idle: the server has nothing more to send. A reset while the
            // stream sits on the current file leaves it idle for ever.
            watch
                .on_idle(info, &opts.db, &mut check_conn, decoder, next_pos)
                .await?;
        }
        // A healthy event stream resets the backoff.
        *failures = 0;
        let inner = payload_events(&event, decoder.file())?;
        for ev in std::iter::once(&event).chain(&inner) {
            let mut handled = decoder.handle(ev, &mut out);
            if let Err(SourceError::SchemaUnchecked { .. }) = handled {
                // Rows without column names: check the definitions taken at start.
                schema_sync::check_deferred(info, opts, &mut decoder.history).await?;
                handled = decoder.handle(ev, &mut out);
            }
            handled.map_err(|e| with_needed_start(e, from))?;
            let changed = decoder.history.take_changed();
            if !changed.is_empty() {
                // A DDL moved the schema history: check it and save it before
                // its transaction end goes downstream (and can be checkpointed).
                let at = HistPos::new(decoder.file(), decoder.event_pos(ev));
                schema_sync::after_ddl(info, opts, &mut decoder.history, &at, changed).await?;
            }
            if !drain_into_batch(
                tx,
                cancel,
                &mut out,
                &mut batch,
                &mut skip,
                &mut pending,
                progress,
            )
            .await
            {
                return Ok(());
            }
        }
    }
}

/// Where the stream starts reading: the start position's offset (0 for a GTID start).
fn start_pos(from: &StartAt) -> u64 {
    match from {
        StartAt::FilePos(p) => p.pos,
        StartAt::Gtid(_) => 0,
    }
}

/// An event the server has already sent, taken without waiting; none while `batch_empty`.
#[inline]
fn ready_event(
    stream: &mut BinlogStream,
    batch_empty: bool,
) -> Option<Option<Result<Event, mysql_async::Error>>> {
    if batch_empty {
        None
    } else {
        futures_util::FutureExt::now_or_never(stream.next())
    }
}

/// Notes that everything before `next_pos` is downstream and the reader waits for the server.
#[inline]
fn note_waiting(status: &ReaderStatus, decoder: &Decoder, next_pos: u64) {
    // Nothing decoded is left unsent: all before `next_pos` is downstream.
    status.note_sent_upto(decoder.file(), next_pos);
    status
        .waiting
        .store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The event the stream gave, or the error for a silent, closed or failed stream.
#[inline]
fn received(
    next: Result<Option<Result<Event, mysql_async::Error>>, tokio::time::error::Elapsed>,
    silence: Duration,
    opts: &ReaderOptions,
    decoder: &Decoder,
    next_pos: u64,
) -> Result<Event, SourceError> {
    match next {
        Err(_) => Err(SourceError::Silent {
            secs: silence.as_secs(),
        }),
        Ok(None) => Err(SourceError::Stream(
            "the server closed the binlog stream".into(),
        )),
        Ok(Some(Err(e))) => Err(stream_error(e, opts.db.server_id, decoder.file(), next_pos)),
        Ok(Some(Ok(ev))) => Ok(ev),
    }
}

/// Records `event` in the status and returns where the next event starts.
#[inline]
fn note_received(
    status: &ReaderStatus,
    opened: std::time::Instant,
    event: &Event,
    next_pos: u64,
) -> u64 {
    status.note_event(event);
    status.clear_clash_after(opened);
    next_event_pos(
        event.header().event_type_raw(),
        event.header().log_pos(),
        event.data(),
        next_pos,
    )
}

/// A schema history change names the start position that needs the old history.
#[inline]
fn with_needed_start(e: SourceError, from: &StartAt) -> SourceError {
    match e {
        SourceError::HistoryChanged { why, .. } => SourceError::HistoryChanged {
            needed: from.to_string(),
            why,
        },
        e => e,
    }
}

/// Moves the decoder's `out` into `batch` (skipping the `skip` changes
/// already sent before a reconnect, keeping `pending` up to date), sending
/// the batch as soon as it is full, even in the middle of a rows event, so
/// the channel never holds more than its size. False when the reader
/// should stop.
async fn drain_into_batch(
    tx: &EventSender,
    cancel: &CancellationToken,
    out: &mut Vec<Output>,
    batch: &mut Vec<SourceEvent>,
    skip: &mut u64,
    pending: &mut Progress,
    progress: &mut Progress,
) -> bool {
    for o in out.drain(..) {
        let msg = match o {
            Output::Commit(c) => {
                *skip = 0;
                pending.open_changes = 0;
                pending.last_commit = Some(c.clone());
                SourceEvent::Commit(c)
            }
            // Already sent before the connection was lost.
            _ if *skip > 0 => {
                *skip -= 1;
                continue;
            }
            Output::Change(c) => {
                pending.open_changes += 1;
                SourceEvent::Change(c)
            }
            Output::Xa(x) => {
                pending.open_changes += 1;
                SourceEvent::Xa(x)
            }
        };
        batch.push(msg);
        if batch.len() >= tx.batch {
            if !tx.send_batch(batch, cancel).await {
                return false;
            }
            *progress = pending.clone();
        }
    }
    true
}

/// Where the event after this one starts: a ROTATE names it (its position
/// field: 4 for a new file, the start position for the fake ROTATE that
/// opens a stream at a position), others end where their `log_pos` says
/// (0: an artificial event, no move).
fn next_event_pos(event_type: u8, log_pos: u32, data: &[u8], before: u64) -> u64 {
    match (event_type, log_pos) {
        (super::decoder::ROTATE, _) => data
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .filter(|&p| p >= 4)
            .unwrap_or(4),
        (_, 0) => before,
        (_, end) => u64::from(end),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn next_event_pos_follows_rotates_and_log_pos() {
        let mut fake = 195_592_451u64.to_le_bytes().to_vec();
        fake.extend_from_slice(b"mysql-bin.000001");
        // The fake ROTATE opening a stream at a position: the stream goes on from there.
        assert_eq!(
            next_event_pos(super::super::decoder::ROTATE, 0, &fake, 0),
            195_592_451
        );
        let mut real = 4u64.to_le_bytes().to_vec();
        real.extend_from_slice(b"mysql-bin.000002");
        assert_eq!(
            next_event_pos(super::super::decoder::ROTATE, 900, &real, 800),
            4
        );
        assert_eq!(
            next_event_pos(super::super::decoder::ROTATE, 0, b"ab", 800),
            4
        );
        assert_eq!(next_event_pos(2, 0, b"", 800), 800);
        assert_eq!(next_event_pos(2, 1234, b"", 800), 1234);
    }

    use super::*;

    #[test]
    fn a_replica_with_our_server_id_is_told_apart_from_a_purged_position() {
        let server = |code, message: &str| {
            mysql_async::Error::Server(mysql_async::ServerError {
                code,
                message: message.into(),
                state: "HY000".into(),
            })
        };
        // MariaDB.
        let e = stream_error(
            server(
                4052,
                "A slave with the same server_uuid/server_id is already connected",
            ),
            7,
            "f",
            4,
        );
        assert!(
            matches!(e, SourceError::ServerIdClash { server_id: 7, .. }),
            "{e:?}"
        );
        assert!(e.is_retryable());
        assert!(e.to_string().contains("database.server_id 7"), "{e}");
        // MySQL.
        let e = stream_error(
            server(1236, "A replica with the same server_uuid/server_id as this replica has connected to the source"),
            7,
            "f",
            4,
        );
        assert!(matches!(e, SourceError::ServerIdClash { .. }), "{e:?}");
        let e = stream_error(
            server(1236, "Could not find first log file name"),
            7,
            "f",
            4,
        );
        assert!(matches!(e, SourceError::Purged { .. }), "{e:?}");
    }

    #[test]
    fn clash_state_needs_three_disconnects_and_ends_after_a_long_stream() {
        let status = ReaderStatus::default();
        let mut recent = std::collections::VecDeque::new();
        assert!(!status.note_clash(&mut recent, 9));
        assert!(!status.note_clash(&mut recent, 9));
        assert!(status
            .server_id_clash
            .lock()
            .map(|r| r.is_none())
            .unwrap_or(false));
        assert!(status.note_clash(&mut recent, 9), "the third begins it");
        assert!(!status.note_clash(&mut recent, 9), "and only once");
        let reason = status.server_id_clash.lock().ok().and_then(|r| r.clone());
        assert!(reason.is_some_and(|r| r.contains("database.server_id 9")));
        status.clear_clash_after(std::time::Instant::now());
        assert!(status
            .server_id_clash
            .lock()
            .map(|r| r.is_some())
            .unwrap_or(false));
        if let Some(long_ago) = std::time::Instant::now().checked_sub(CLASH_CLEAR * 2) {
            status.clear_clash_after(long_ago);
            assert!(status
                .server_id_clash
                .lock()
                .map(|r| r.is_none())
                .unwrap_or(false));
        }
    }

    #[test]
    fn channel_holds_at_most_about_queue_size_events() {
        for (events, batch, batches) in [
            (1, 1, 2),
            (10, 5, 2),
            (2047, 1023, 2),
            (4096, 1024, 4),
            (10_000, 1024, 9),
        ] {
            let (tx, _rx) = channel(events);
            assert_eq!(tx.batch, batch, "{events}");
            assert_eq!(tx.tx.max_capacity(), batches, "{events}");
            assert!(batch * batches <= events.max(2), "{events}");
        }
    }

    #[tokio::test]
    async fn events_come_out_one_at_a_time_in_order() {
        let (tx, mut rx) = channel(10_000); // room for 9 batches: no reader needed while sending
        let commit = |pos| {
            SourceEvent::Commit(Commit {
                file: "f".into(),
                pos,
                gtid: None,
                gtid_state: None,
                timestamp: 0,
                file_created: 0,
            })
        };
        tx.tx.send(vec![commit(1), commit(2)]).await.expect("send");
        tx.tx.send(vec![]).await.expect("send");
        tx.tx.send(vec![commit(3)]).await.expect("send");
        drop(tx);
        let mut got = Vec::new();
        while let Some(ev) = rx.recv().await {
            if let SourceEvent::Commit(c) = ev {
                got.push(c.pos);
            }
        }
        assert_eq!(got, vec![1, 2, 3]);
        assert!(rx.is_empty());
    }
}
