//! The binlog reader: registers as a replica, streams events from a start
//! position, verifies checksums, tracks the file, GTID and transaction
//! boundaries, keeps table maps and schemas, decodes the rows of the tables
//! someone wants, and sends [`SourceEvent`]s downstream. A full channel makes
//! the reader wait: nothing is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::binlog::events::{Event, QueryEvent, TableMapEvent};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn};
use mysql_common::binlog::consts::BinlogChecksumAlg;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::connect::{self, Flavour, ServerInfo};
use super::error::{At, SourceError};
use super::position::{FilePos, StartAt};
use super::rows;
use super::schema::{self, SchemaCache};
use super::table_map::{self, TableDecoder};
use super::value::DecodeOptions;
use crate::config::DatabaseConfig;
use crate::event::{Change, ChangeKind, SourcePosition};

/// What the reader sends downstream.
#[derive(Debug)]
pub enum SourceEvent {
    /// One row change of a wanted table.
    Change(Change),
    /// A transaction ended at this position: every change before it has been sent.
    Commit(Commit),
}

/// The end of a transaction: where to resume so that it is not read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub file: Arc<str>,
    pub pos: u64,
    pub gtid: Option<Arc<str>>,
    pub timestamp: u32,
}

/// Which tables the reader decodes rows for.
pub type TableFilter = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// Settings of one reader.
#[derive(Clone)]
pub struct ReaderOptions {
    pub db: DatabaseConfig,
    pub heartbeat: Duration,
    pub decode: DecodeOptions,
    pub filter: TableFilter,
}

// Event type codes.
const QUERY: u8 = 2;
const STOP: u8 = 3;
const ROTATE: u8 = 4;
const FORMAT_DESCRIPTION: u8 = 15;
const XID: u8 = 16;
const TABLE_MAP: u8 = 19;
const WRITE_ROWS_V1: u8 = 23;
const UPDATE_ROWS_V1: u8 = 24;
const DELETE_ROWS_V1: u8 = 25;
const INCIDENT: u8 = 26;
const HEARTBEAT: u8 = 27;
const WRITE_ROWS_V2: u8 = 30;
const UPDATE_ROWS_V2: u8 = 31;
const DELETE_ROWS_V2: u8 = 32;
const GTID: u8 = 33;
const PARTIAL_UPDATE_ROWS: u8 = 39;
const TRANSACTION_PAYLOAD: u8 = 40;
const MARIA_GTID: u8 = 162;

/// Event types that carry no row data and need nothing from us.
fn is_inert(t: u8) -> bool {
    matches!(
        t,
        1 // START_V3
        | 5 // INTVAR
        | 7 // SLAVE
        | 13 // RAND
        | 14 // USER_VAR
        | 28 // IGNORABLE
        | 29 // ROWS_QUERY
        | 34 // ANONYMOUS_GTID
        | 35 // PREVIOUS_GTIDS
        | 36 // TRANSACTION_CONTEXT
        | 37 // VIEW_CHANGE
        | 41 // HEARTBEAT_V2
        | 160 // MariaDB ANNOTATE_ROWS
        | 161 // MariaDB BINLOG_CHECKPOINT
        | 163 // MariaDB GTID_LIST
    )
}

/// Reader state across events.
struct State {
    info: ServerInfo,
    opts: ReaderOptions,
    file: Arc<str>,
    gtid: Option<Arc<str>>,
    in_trx: bool,
    /// MariaDB standalone GTID: the next statement alone is the transaction.
    standalone: bool,
    row_in_trx: u64,
    tables: HashMap<u64, CachedMap>,
    schemas: SchemaCache,
    schema_conn: Option<Conn>,
}

struct CachedMap {
    raw: Vec<u8>,
    decoder: Option<Arc<TableDecoder>>,
}

/// Reads the binlog from `start` until cancelled or an error.
pub async fn run(
    info: ServerInfo,
    opts: ReaderOptions,
    start: StartAt,
    tx: mpsc::Sender<SourceEvent>,
    cancel: CancellationToken,
) -> Result<(), SourceError> {
    let mut conn = connect::connect(&opts.db).await?;
    let mut setup = vec![format!(
        "SET @master_heartbeat_period = {}",
        opts.heartbeat.as_nanos().max(1_000_000_000)
    )];
    if info.flavour == Flavour::MariaDb {
        // Without capability 4 MariaDB replaces GTID events by dummy BEGIN queries.
        setup.push("SET @mariadb_slave_capability = 4".into());
    }
    let (file, pos) = match &start {
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
                    return Err(SourceError::Config(
                        "starting from a MySQL GTID set is not supported yet; use a file:position"
                            .into(),
                    ))
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
    let request = BinlogStreamRequest::new(opts.db.server_id)
        .with_filename(file.as_bytes())
        .with_pos(pos);
    let mut stream = conn
        .get_binlog_stream(request)
        .await
        .map_err(|e| stream_error(e, &file, pos))?;
    tracing::info!(start = %start, server_id = opts.db.server_id, "binlog stream opened");

    let silence = (opts.heartbeat * 3).max(Duration::from_secs(5));
    let mut st = State {
        info,
        opts,
        file: file.as_str().into(),
        gtid: None,
        in_trx: false,
        standalone: false,
        row_in_trx: 0,
        tables: HashMap::new(),
        schemas: SchemaCache::default(),
        schema_conn: None,
    };
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            next = tokio::time::timeout(silence, stream.next()) => next,
        };
        let event = match next {
            Err(_) => {
                return Err(SourceError::Silent {
                    secs: silence.as_secs(),
                })
            }
            Ok(None) => {
                return Err(SourceError::Stream(
                    "the server closed the binlog stream".into(),
                ))
            }
            Ok(Some(Err(e))) => return Err(stream_error(e, &st.file, 0)),
            Ok(Some(Ok(ev))) => ev,
        };
        st.handle(&event, &tx).await?;
        if tx.is_closed() {
            return Ok(());
        }
    }
}

fn stream_error(e: mysql_async::Error, file: &str, pos: u64) -> SourceError {
    if let mysql_async::Error::Server(se) = &e {
        // 1236: ER_MASTER_FATAL_ERROR_READING_BINLOG (purged or unknown position).
        if se.code == 1236 {
            return SourceError::Stream(format!(
                "the server cannot send the binlog from {file}:{pos}: {} \
                 (the file may have been purged; start from `latest` or an existing position)",
                se.message
            ));
        }
    }
    SourceError::Stream(e.to_string())
}

fn header_bytes(ev: &Event) -> [u8; 19] {
    let h = ev.header();
    let mut b = [0u8; 19];
    b[0..4].copy_from_slice(&h.timestamp().to_le_bytes());
    b[4] = h.event_type_raw();
    b[5..9].copy_from_slice(&h.server_id().to_le_bytes());
    b[9..13].copy_from_slice(&h.event_size().to_le_bytes());
    b[13..17].copy_from_slice(&h.log_pos().to_le_bytes());
    b[17..19].copy_from_slice(&h.flags_raw().to_le_bytes());
    b
}

impl State {
    fn at(&self, ev: &Event) -> At {
        At {
            file: self.file.to_string(),
            pos: u64::from(ev.header().log_pos()),
        }
    }

    fn decode_err(&self, ev: &Event, message: impl Into<String>) -> SourceError {
        SourceError::Decode {
            at: self.at(ev),
            message: message.into(),
        }
    }

    fn verify_checksum(&self, ev: &Event) -> Result<(), SourceError> {
        let Some(sum) = ev.checksum() else {
            return Ok(());
        };
        if let Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)) =
            ev.footer().get_checksum_alg()
        {
            let expected = u32::from_le_bytes(sum);
            let computed = ev.calc_checksum(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32);
            if expected != computed {
                return Err(SourceError::Checksum {
                    at: self.at(ev),
                    expected,
                    computed,
                });
            }
        }
        Ok(())
    }

    async fn commit(
        &mut self,
        ev: &Event,
        tx: &mpsc::Sender<SourceEvent>,
    ) -> Result<(), SourceError> {
        self.in_trx = false;
        self.standalone = false;
        let commit = Commit {
            file: self.file.clone(),
            pos: u64::from(ev.header().log_pos()),
            gtid: self.gtid.take(),
            timestamp: ev.header().timestamp(),
        };
        self.row_in_trx = 0;
        let _ = tx.send(SourceEvent::Commit(commit)).await;
        Ok(())
    }

    async fn handle(
        &mut self,
        ev: &Event,
        tx: &mpsc::Sender<SourceEvent>,
    ) -> Result<(), SourceError> {
        self.verify_checksum(ev)?;
        let t = ev.header().event_type_raw();
        match t {
            ROTATE => self.on_rotate(ev)?,
            FORMAT_DESCRIPTION | HEARTBEAT | STOP => {}
            QUERY => self.on_query(ev, tx).await?,
            XID => self.commit(ev, tx).await?,
            TABLE_MAP => self.on_table_map(ev).await?,
            WRITE_ROWS_V1 | WRITE_ROWS_V2 => self.on_rows(ev, ChangeKind::Insert, t == WRITE_ROWS_V2, tx).await?,
            UPDATE_ROWS_V1 | UPDATE_ROWS_V2 => self.on_rows(ev, ChangeKind::Update, t == UPDATE_ROWS_V2, tx).await?,
            DELETE_ROWS_V1 | DELETE_ROWS_V2 => self.on_rows(ev, ChangeKind::Delete, t == DELETE_ROWS_V2, tx).await?,
            GTID => self.on_mysql_gtid(ev)?,
            MARIA_GTID => self.on_maria_gtid(ev)?,
            INCIDENT => {
                return Err(self.decode_err(
                    ev,
                    "the server logged an INCIDENT event: changes may be missing from its binlog at this point; check the server's error log",
                ))
            }
            TRANSACTION_PAYLOAD => {
                // The stream decompresses the payload and yields its inner events next.
            }
            PARTIAL_UPDATE_ROWS => {
                return Err(self.decode_err(
                    ev,
                    "PARTIAL_UPDATE_ROWS events (binlog_row_value_options=PARTIAL_JSON) are not supported yet; set binlog_row_value_options='' on the server",
                ))
            }
            t if is_inert(t) => {}
            t => {
                // LOG_EVENT_IGNORABLE_F: the server says it is safe to skip.
                if ev.header().flags_raw() & 0x80 != 0 {
                    tracing::debug!(event_type = t, "skipping ignorable event");
                } else {
                    return Err(SourceError::UnknownEvent {
                        at: self.at(ev),
                        type_code: t,
                    });
                }
            }
        }
        Ok(())
    }

    fn on_rotate(&mut self, ev: &Event) -> Result<(), SourceError> {
        let data = ev.data();
        if data.len() < 8 {
            return Err(self.decode_err(ev, "ROTATE event too short"));
        }
        let mut name = &data[8..];
        // The first (fake) ROTATE is sent before the FORMAT_DESCRIPTION, so its
        // checksum, if any, is still on the end of the name: check and strip it.
        if name.len() > 4 && self.info.binlog_checksum == "CRC32" && ev.checksum().is_none() {
            let (n, sum) = name.split_at(name.len() - 4);
            let mut h = crc32fast::Hasher::new();
            h.update(&header_bytes(ev));
            h.update(&data[..8]);
            h.update(n);
            if h.finalize().to_le_bytes() == sum {
                name = n;
            }
        }
        let name = std::str::from_utf8(name)
            .map_err(|_| self.decode_err(ev, "ROTATE file name is not UTF-8"))?;
        if &*self.file != name {
            tracing::debug!(file = name, "binlog file");
            self.file = name.into();
        }
        // Table ids are per file.
        if ev.header().log_pos() != 0 {
            self.tables.clear();
        }
        Ok(())
    }

    async fn on_query(
        &mut self,
        ev: &Event,
        tx: &mpsc::Sender<SourceEvent>,
    ) -> Result<(), SourceError> {
        let q: QueryEvent<'_> = ev
            .read_event()
            .map_err(|e| self.decode_err(ev, format!("QUERY event: {e}")))?;
        let sql = q.query();
        let head = statement_head(&sql);
        match head.as_str() {
            "BEGIN" | "XA START" => {
                self.in_trx = true;
                self.standalone = false;
                return Ok(());
            }
            "COMMIT" | "ROLLBACK" | "XA COMMIT" | "XA ROLLBACK" => {
                return self.commit(ev, tx).await;
            }
            _ => {}
        }
        if is_ddl(&head) {
            tracing::info!(schema = %q.schema(), query = %truncate(&sql, 200), "DDL: table definitions will be re-read");
            self.schemas.clear();
            self.tables.clear();
        }
        if !self.in_trx || self.standalone {
            // A statement outside BEGIN…COMMIT (DDL) is a transaction of its own.
            self.commit(ev, tx).await?;
        }
        Ok(())
    }

    fn on_mysql_gtid(&mut self, ev: &Event) -> Result<(), SourceError> {
        // flags(1) sid(16) gno(8)
        let d = ev.data();
        let (Some(sid), Some(gno)) = (d.get(1..17), d.get(17..25)) else {
            return Err(self.decode_err(ev, "GTID event too short"));
        };
        let gno = i64::from_le_bytes(gno.try_into().unwrap_or([0; 8]));
        let h = |r: std::ops::Range<usize>| -> String {
            sid[r].iter().map(|b| format!("{b:02x}")).collect()
        };
        self.gtid = Some(
            format!(
                "{}-{}-{}-{}-{}:{gno}",
                h(0..4),
                h(4..6),
                h(6..8),
                h(8..10),
                h(10..16)
            )
            .into(),
        );
        self.row_in_trx = 0;
        Ok(())
    }

    fn on_maria_gtid(&mut self, ev: &Event) -> Result<(), SourceError> {
        // seq_no(8) domain_id(4) flags2(1) ...
        let d = ev.data();
        let (Some(seq), Some(domain), Some(&flags)) = (d.get(0..8), d.get(8..12), d.get(12)) else {
            return Err(self.decode_err(ev, "MariaDB GTID event too short"));
        };
        let seq = u64::from_le_bytes(seq.try_into().unwrap_or([0; 8]));
        let domain = u32::from_le_bytes(domain.try_into().unwrap_or([0; 4]));
        self.gtid = Some(format!("{domain}-{}-{seq}", ev.header().server_id()).into());
        self.row_in_trx = 0;
        // FL_STANDALONE: no BEGIN/COMMIT around the single statement.
        self.standalone = flags & 1 != 0;
        self.in_trx = !self.standalone;
        Ok(())
    }

    async fn on_table_map(&mut self, ev: &Event) -> Result<(), SourceError> {
        let data = ev.data();
        let tme: TableMapEvent<'_> = ev
            .read_event()
            .map_err(|e| self.decode_err(ev, format!("TABLE_MAP event: {e}")))?;
        let table_id = tme.table_id();
        if let Some(c) = self.tables.get(&table_id) {
            if c.raw == data {
                return Ok(());
            }
        }
        let tm = table_map::parse(&tme).map_err(|e| self.decode_err(ev, e))?;
        let decoder = if (self.opts.filter)(&tm.database, &tm.table) {
            let schema = self.schema(&tm.database, &tm.table).await?;
            let dec = table_map::build_decoder(&tm, schema.as_ref()).map_err(|e| {
                self.decode_err(ev, format!("table `{}`.`{}`: {e}", tm.database, tm.table))
            })?;
            Some(Arc::new(dec))
        } else {
            None
        };
        self.tables.insert(
            table_id,
            CachedMap {
                raw: data.to_vec(),
                decoder,
            },
        );
        Ok(())
    }

    async fn schema(
        &mut self,
        db: &str,
        table: &str,
    ) -> Result<Option<schema::TableSchema>, SourceError> {
        if let Some(s) = self.schemas.get(db, table) {
            return Ok(s.clone());
        }
        if self.schema_conn.is_none() {
            self.schema_conn = Some(connect::connect(&self.opts.db).await?);
        }
        let mariadb = self.info.flavour == Flavour::MariaDb;
        let result = match self.schema_conn.as_mut() {
            Some(conn) => schema::load(conn, mariadb, db, table).await,
            None => Ok(None),
        };
        let s = match result {
            Ok(s) => s,
            Err(e) => {
                // One retry on a fresh connection (it may have timed out while idle).
                tracing::debug!(error = %e, "schema query failed, reconnecting");
                let mut conn = connect::connect(&self.opts.db).await?;
                let s = schema::load(&mut conn, mariadb, db, table).await?;
                self.schema_conn = Some(conn);
                s
            }
        };
        self.schemas.insert(db, table, s.clone());
        Ok(s)
    }

    async fn on_rows(
        &mut self,
        ev: &Event,
        kind: ChangeKind,
        v2: bool,
        tx: &mpsc::Sender<SourceEvent>,
    ) -> Result<(), SourceError> {
        let table_id_len = if ev.fde().get_event_type_header_length(
            ev.header()
                .event_type()
                .unwrap_or(mysql_common::binlog::consts::EventType::WRITE_ROWS_EVENT),
        ) == 6
        {
            4
        } else {
            6
        };
        let hdr = rows::parse_header(ev.data(), table_id_len, v2, kind)
            .map_err(|e| self.decode_err(ev, e))?;
        let decoder = match self.tables.get(&hdr.table_id) {
            Some(c) => match &c.decoder {
                Some(d) => d.clone(),
                None => return Ok(()),
            },
            None => {
                return Err(self.decode_err(
                    ev,
                    format!(
                        "rows event for table id {} without a preceding TABLE_MAP",
                        hdr.table_id
                    ),
                ))
            }
        };
        let pos = u64::from(ev.header().log_pos());
        let timestamp = ev.header().timestamp();
        let mut changes = Vec::new();
        let mut row = 0u32;
        let file = self.file.clone();
        let gtid = self.gtid.clone();
        let mut row_in_trx = self.row_in_trx;
        rows::decode_rows(kind, &hdr, &decoder, &self.opts.decode, |before, after| {
            changes.push(Change {
                kind,
                table: decoder.table.clone(),
                before,
                after,
                source: SourcePosition {
                    file: file.clone(),
                    pos,
                    gtid: gtid.clone(),
                    row,
                    row_in_trx,
                },
                timestamp,
            });
            row += 1;
            row_in_trx += 1;
        })
        .map_err(|e| self.decode_err(ev, e))?;
        self.row_in_trx = row_in_trx;
        for c in changes {
            if tx.send(SourceEvent::Change(c)).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// The leading keyword(s) of a statement, upper-cased, comments skipped.
fn statement_head(sql: &str) -> String {
    let mut s = sql.trim_start();
    loop {
        if let Some(rest) = s.strip_prefix("/*") {
            match rest.find("*/") {
                Some(end) => s = rest[end + 2..].trim_start(),
                None => return String::new(),
            }
        } else if s.starts_with("--") || s.starts_with('#') {
            match s.find('\n') {
                Some(end) => s = s[end + 1..].trim_start(),
                None => return String::new(),
            }
        } else {
            break;
        }
    }
    let words: Vec<&str> = s.split_whitespace().take(2).collect();
    let first = words
        .first()
        .map(|w| w.to_ascii_uppercase())
        .unwrap_or_default();
    let first = first.trim_end_matches(';').to_string();
    if first == "XA" {
        let second = words
            .get(1)
            .map(|w| w.to_ascii_uppercase())
            .unwrap_or_default();
        return format!("XA {second}");
    }
    first
}

fn is_ddl(head: &str) -> bool {
    matches!(head, "ALTER" | "CREATE" | "DROP" | "RENAME" | "TRUNCATE")
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Position helper for callers.
pub fn commit_position(c: &Commit) -> FilePos {
    FilePos {
        file: c.file.to_string(),
        pos: c.pos,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        assert_eq!(statement_head("BEGIN"), "BEGIN");
        assert_eq!(statement_head("  /* x */ alter table t add c int"), "ALTER");
        assert_eq!(statement_head("-- c\nCOMMIT;"), "COMMIT");
        assert_eq!(statement_head("xa commit 'x'"), "XA COMMIT");
        assert!(is_ddl(&statement_head("create table t (a int)")));
        assert!(!is_ddl(&statement_head("insert into t values (1)")));
    }
}
