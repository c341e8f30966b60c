//! The event decoder: the synchronous core shared by the live stream and
//! offline binlog files. It takes binlog events one by one and keeps the
//! state between them: the current file, GTID and transaction, table maps
//! and their resolved decoders. It verifies checksums, decompresses MariaDB
//! compressed events, decodes the rows of wanted tables into [`Change`]s and
//! marks transaction ends with [`Commit`]s and XA boundaries with
//! [`XaEvent`]s (see [`super::xa`]). It never skips an event type it does
//! not know.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_common::binlog::consts::{BinlogChecksumAlg, EventType};
use mysql_common::binlog::events::{Event, GtidEvent, QueryEvent, TableMapEvent};

use super::binlogs::FileIdentity;
use super::error::{At, SourceError};
use super::history::{Definition, HistPos, SchemaHistory};
use super::rows;
use super::schema::TableSchema;
use super::sql;
use super::table_map::{self, TableDecoder};
use super::value::DecodeOptions;
pub(crate) use super::xa::XaAt;
pub use super::xa::XaEvent;
use crate::event::{Change, ChangeKind, SourcePosition};

/// What decoding an event produced.
#[derive(Debug)]
pub enum Output {
    /// One row change of a wanted table.
    Change(Change),
    /// A transaction ended at this position: every change before it has been emitted.
    Commit(Commit),
    /// An XA transaction begins, is prepared, or has its outcome.
    Xa(XaEvent),
}

pub use crate::event::Commit;

/// Which tables the decoder decodes rows for.
pub(crate) type TableFilter = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

// Event type codes.
pub const QUERY: u8 = 2;
pub(crate) const STOP: u8 = 3;
pub const ROTATE: u8 = 4;
pub const FORMAT_DESCRIPTION: u8 = 15;
pub const XID: u8 = 16;
pub(crate) const EXECUTE_LOAD_QUERY: u8 = 18;
pub const TABLE_MAP: u8 = 19;
pub(crate) const WRITE_ROWS_V1: u8 = 23;
pub(crate) const UPDATE_ROWS_V1: u8 = 24;
pub(crate) const DELETE_ROWS_V1: u8 = 25;
pub(crate) const INCIDENT: u8 = 26;
pub(crate) const HEARTBEAT: u8 = 27;
pub(crate) const WRITE_ROWS_V2: u8 = 30;
pub(crate) const UPDATE_ROWS_V2: u8 = 31;
pub(crate) const DELETE_ROWS_V2: u8 = 32;
pub const GTID: u8 = 33;
pub(crate) const XA_PREPARE: u8 = 38;
pub const PARTIAL_UPDATE_ROWS: u8 = 39;
pub const TRANSACTION_PAYLOAD: u8 = 40;
pub const GTID_TAGGED: u8 = 42;
pub(crate) const MARIA_GTID: u8 = 162;
pub(crate) const MARIA_GTID_LIST: u8 = 163;
pub(crate) const MARIA_QUERY_COMPRESSED: u8 = 165;
/// MariaDB compressed rows events: 166–168 (v1 layout) and 169–171.
pub(crate) const MARIA_ROWS_COMPRESSED_FIRST: u8 = 166;
pub(crate) const MARIA_ROWS_COMPRESSED_LAST: u8 = 171;

/// MariaDB GTID flags: the group is a prepared XA transaction / the outcome
/// of one (both carry the xid).
pub(crate) const FL_PREPARED_XA: u8 = 0x40;
pub(crate) const FL_COMPLETED_XA: u8 = 0x80;

/// Event types that carry no row data and need nothing from us.
fn is_inert(t: u8) -> bool {
    matches!(
        t,
        1 // START_V3
        | 5 // INTVAR
        | 7 // SLAVE
        | 9 // APPEND_BLOCK (statement-based LOAD DATA: no rows)
        | 17 // BEGIN_LOAD_QUERY (idem)
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
    )
}

/// Settings of a decoder.
#[derive(Clone)]
pub struct DecoderOptions {
    pub decode: DecodeOptions,
    pub filter: TableFilter,
    /// Whether table definitions are kept (live: yes, in [`Decoder::history`];
    /// files: no).
    pub schema_lookup: bool,
}

struct CachedMap {
    raw: Vec<u8>,
    decoder: Option<Arc<TableDecoder>>,
}

/// Decoder state across events.
pub struct Decoder {
    opts: DecoderOptions,
    file: Arc<str>,
    gtid: Option<Arc<str>>,
    in_trx: bool,
    /// MariaDB standalone GTID: the next statement alone is the transaction.
    standalone: bool,
    row_in_trx: u64,
    tables: HashMap<u64, CachedMap>,
    /// The definitions of the followed tables over time: moved by the DDL
    /// statements of the stream, loaded and verified by the caller.
    pub history: SchemaHistory,
    /// Only follow DDL statements (a look-ahead over the stream): no rows.
    ddl_only: bool,
    /// End position of the TRANSACTION_PAYLOAD whose inner events are being read.
    payload_end: Option<u64>,
    /// A TRANSACTION_PAYLOAD was just seen: its inner events must follow.
    expect_inner: bool,
    /// MariaDB GTID state: domain → (server_id, seq), from GTID_LIST and GTID events.
    gtid_state: std::collections::BTreeMap<u32, (u32, u64)>,
    /// The GTID of the open transaction as (domain, server_id, seq).
    maria_gtid: Option<(u32, u32, u64)>,
    /// PARTIAL_UPDATE_ROWS without the before image of a JSON column: show
    /// the diffs (offline) instead of failing (live).
    show_json_diffs: bool,
    /// Creation time of the current file (its format description's
    /// timestamp); 0 until one was seen.
    file_created: u32,
    /// The file the stream starts in, as it was when the start position was
    /// saved: its format description must have this time, else the
    /// server's binlog history changed under the position (checked once).
    expect_file: Option<FileIdentity>,
    /// The canonical xid of the XA transaction whose event group is open
    /// (from MariaDB's GTID event or MySQL's `XA START`).
    xa_open: Option<Arc<str>>,
}

impl Decoder {
    pub fn new(opts: DecoderOptions, file: &str) -> Self {
        Decoder {
            opts,
            file: file.into(),
            gtid: None,
            in_trx: false,
            standalone: false,
            row_in_trx: 0,
            tables: HashMap::new(),
            history: SchemaHistory::default(),
            ddl_only: false,
            payload_end: None,
            expect_inner: false,
            gtid_state: std::collections::BTreeMap::new(),
            maria_gtid: None,
            show_json_diffs: false,
            file_created: 0,
            expect_file: None,
            xa_open: None,
        }
    }

    /// Makes the first format description of `expected.file` prove that the
    /// file is the one a saved position was taken in (see
    /// [`super::binlogs`]); a different creation time is a
    /// [`SourceError::HistoryChanged`] before any change of it is decoded.
    pub fn expect_file(&mut self, expected: FileIdentity) {
        self.expect_file = Some(expected);
    }

    /// Creation time of the file being read (0 = not seen yet).
    pub(crate) fn file_created(&self) -> u32 {
        self.file_created
    }

    fn on_format_description(&mut self, ev: &Event) -> Result<(), SourceError> {
        let ts = ev.header().timestamp();
        if ts == 0 {
            return Ok(());
        }
        if let Some(exp) = self.expect_file.take() {
            if exp.file == *self.file && exp.created != ts {
                return Err(SourceError::HistoryChanged {
                    needed: self.file.to_string(),
                    why: format!(
                        "{} on the server was created at {}, but the one the position was taken in was created at {}",
                        self.file,
                        crate::event::time::rfc3339(i64::from(ts)),
                        crate::event::time::rfc3339(i64::from(exp.created))
                    ),
                });
            }
        }
        self.file_created = ts;
        Ok(())
    }

    /// Offline printing: a partial JSON update whose before image is missing
    /// is shown as its list of diffs (`{"json_diff":[…]}`) instead of being an
    /// error. Never for the live stream: a diff is not the column's value.
    pub fn set_show_json_diffs(&mut self, on: bool) {
        self.show_json_diffs = on;
    }

    /// Follow only the DDL statements of the stream (the schema history),
    /// decoding no rows: a look-ahead of what the stream will bring.
    pub(crate) fn set_ddl_only(&mut self) {
        self.ddl_only = true;
    }

    /// The binlog file being read.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The end position of `ev` in its file (for events inside a
    /// TRANSACTION_PAYLOAD, the payload's end).
    pub(crate) fn event_pos(&self, ev: &Event) -> u64 {
        let p = u64::from(ev.header().log_pos());
        match self.payload_end {
            Some(end) if p == 0 || p <= end => end,
            _ => p,
        }
    }

    fn at(&self, ev: &Event) -> At {
        At {
            file: self.file.to_string(),
            pos: self.event_pos(ev),
        }
    }

    fn decode_err(&self, ev: &Event, message: impl Into<String>) -> SourceError {
        SourceError::Decode {
            at: self.at(ev),
            message: message.into(),
        }
    }

    fn verify_checksum(&self, ev: &Event) -> Result<(), SourceError> {
        // Events inside a TRANSACTION_PAYLOAD carry no checksum (WL#3549):
        // they are read with checksums disabled.
        if !ev.footer().get_checksum_enabled() {
            return Ok(());
        }
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

    fn commit(&mut self, ev: &Event, out: &mut Vec<Output>) {
        self.in_trx = false;
        self.standalone = false;
        self.xa_open = None;
        self.row_in_trx = 0;
        if let Some((domain, server, seq)) = self.maria_gtid.take() {
            self.gtid_state.insert(domain, (server, seq));
        }
        let gtid_state = (!self.gtid_state.is_empty()).then(|| self.gtid_state_string().into());
        out.push(Output::Commit(Commit {
            file: self.file.clone(),
            pos: self.event_pos(ev),
            gtid: self.gtid.take(),
            gtid_state,
            timestamp: ev.header().timestamp(),
            file_created: self.file_created,
        }));
    }

    /// Seeds the MariaDB GTID state (`d-s-n,d-s-n`), e.g. from
    /// `BINLOG_GTID_POS(file, pos)` when the stream starts mid-file, where the
    /// server sends no GTID_LIST. Malformed parts are ignored.
    pub(crate) fn seed_gtid_state(&mut self, state: &str) {
        for part in state.split(',') {
            let mut it = part.trim().splitn(3, '-');
            if let (Some(d), Some(srv), Some(seq)) = (it.next(), it.next(), it.next()) {
                if let (Ok(d), Ok(srv), Ok(seq)) = (d.parse(), srv.parse(), seq.parse()) {
                    self.gtid_state.insert(d, (srv, seq));
                }
            }
        }
    }

    fn gtid_state_string(&self) -> String {
        let mut s = String::new();
        for (d, (srv, seq)) in &self.gtid_state {
            if !s.is_empty() {
                s.push(',');
            }
            s.push_str(&format!("{d}-{srv}-{seq}"));
        }
        s
    }

    /// MariaDB GTID_LIST: the binlog state at this point of the stream.
    fn on_maria_gtid_list(&mut self, ev: &Event) -> Result<(), SourceError> {
        let d = ev.data();
        let Some(n) = d.get(0..4) else {
            return Err(self.decode_err(ev, "GTID_LIST event too short"));
        };
        let count = (u32::from_le_bytes([n[0], n[1], n[2], n[3]]) & 0x0fff_ffff) as usize;
        for i in 0..count {
            let at = 4 + i * 16;
            let Some(e) = d.get(at..at + 16) else {
                return Err(self.decode_err(ev, "GTID_LIST event truncated"));
            };
            let domain = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            let server = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&e[8..16]);
            self.gtid_state
                .insert(domain, (server, u64::from_le_bytes(seq)));
        }
        Ok(())
    }

    /// Decodes one event, appending what it produced to `out`.
    pub fn handle(&mut self, ev: &Event, out: &mut Vec<Output>) -> Result<(), SourceError> {
        self.verify_checksum(ev)?;
        let t = ev.header().event_type_raw();
        let log_pos = u64::from(ev.header().log_pos());
        if self.expect_inner {
            self.expect_inner = false;
            if let Some(end) = self.payload_end {
                if log_pos > end {
                    return Err(self.decode_err(
                        ev,
                        "the TRANSACTION_PAYLOAD event before this one could not be decompressed (its inner events are missing)",
                    ));
                }
            }
        }
        if let Some(end) = self.payload_end {
            if log_pos > end {
                self.payload_end = None;
            }
        }
        match t {
            ROTATE => self.on_rotate(ev)?,
            FORMAT_DESCRIPTION => self.on_format_description(ev)?,
            HEARTBEAT | STOP => {}
            QUERY => {
                let q: QueryEvent<'_> = ev
                    .read_event()
                    .map_err(|e| self.decode_err(ev, format!("QUERY event: {e}")))?;
                let (schema, sql) = (q.schema().into_owned(), q.query().into_owned());
                if !self.on_xa_query(ev, &sql, out)? {
                    self.on_query(ev, &schema, &sql, out)?;
                }
            }
            MARIA_QUERY_COMPRESSED => {
                let (schema, sql) = self.compressed_query(ev)?;
                if !self.on_xa_query(ev, &sql, out)? {
                    self.on_query(ev, &schema, &sql, out)?;
                }
            }
            XA_PREPARE => self.on_xa_prepare(ev, out)?,
            GTID_TAGGED => self.on_mysql_gtid(ev)?,
            XID => self.commit(ev, out),
            // Statement-based LOAD DATA: like any statement it carries no
            // rows, but outside BEGIN…COMMIT it is a transaction of its own.
            EXECUTE_LOAD_QUERY => self.on_query(ev, "", "LOAD DATA", out)?,
            TABLE_MAP => self.on_table_map(ev)?,
            WRITE_ROWS_V1 | WRITE_ROWS_V2 => self.on_rows(ev, ChangeKind::Insert, false, out)?,
            UPDATE_ROWS_V1 | UPDATE_ROWS_V2 => self.on_rows(ev, ChangeKind::Update, false, out)?,
            DELETE_ROWS_V1 | DELETE_ROWS_V2 => self.on_rows(ev, ChangeKind::Delete, false, out)?,
            MARIA_ROWS_COMPRESSED_FIRST..=MARIA_ROWS_COMPRESSED_LAST => {
                let kind = match (t - MARIA_ROWS_COMPRESSED_FIRST) % 3 {
                    0 => ChangeKind::Insert,
                    1 => ChangeKind::Update,
                    _ => ChangeKind::Delete,
                };
                self.on_rows(ev, kind, true, out)?
            }
            GTID => self.on_mysql_gtid(ev)?,
            MARIA_GTID => self.on_maria_gtid(ev, out)?,
            MARIA_GTID_LIST => self.on_maria_gtid_list(ev)?,
            INCIDENT => {
                return Err(self.decode_err(
                    ev,
                    "the server logged an INCIDENT event: changes may be missing from its binlog at this point; check the server's error log",
                ))
            }
            TRANSACTION_PAYLOAD => {
                // The stream decompresses the payload and yields its inner events next.
                self.payload_end = Some(log_pos);
                self.expect_inner = true;
            }
            PARTIAL_UPDATE_ROWS => self.on_rows_ext(ev, ChangeKind::Update, false, true, out)?,
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
        // checksum, if any, is still on the end of the name: strip it when it
        // is one. (MariaDB sends one even with binlog_checksum=NONE.)
        if name.len() > 4 && ev.checksum().is_none() {
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
            self.file_created = 0;
        }
        // Table ids are only valid within one file.
        if ev.header().log_pos() != 0 {
            self.tables.clear();
        }
        Ok(())
    }

    /// Schema and statement of a QUERY or MariaDB QUERY_COMPRESSED event.
    pub(crate) fn query_text(&self, ev: &Event) -> Result<(String, String), SourceError> {
        if ev.header().event_type_raw() == MARIA_QUERY_COMPRESSED {
            return self.compressed_query(ev);
        }
        let q: QueryEvent<'_> = ev
            .read_event()
            .map_err(|e| self.decode_err(ev, format!("QUERY event: {e}")))?;
        Ok((q.schema().into_owned(), q.query().into_owned()))
    }

    /// Schema and statement of a MariaDB QUERY_COMPRESSED event.
    fn compressed_query(&self, ev: &Event) -> Result<(String, String), SourceError> {
        // Post-header: thread_id(4) exec_time(4) db_len(1) error_code(2) status_len(2).
        let d = ev.data();
        let post = usize::from(
            ev.fde()
                .get_event_type_header_length(EventType::QUERY_EVENT),
        )
        .max(13);
        let (Some(&db_len), Some(sl)) = (d.get(8), d.get(11..13)) else {
            return Err(self.decode_err(ev, "QUERY_COMPRESSED event too short"));
        };
        let status_len = usize::from(u16::from_le_bytes([sl[0], sl[1]]));
        let db_start = post + status_len;
        let db = d
            .get(db_start..db_start + usize::from(db_len))
            .ok_or_else(|| self.decode_err(ev, "QUERY_COMPRESSED event truncated"))?;
        let body = d
            .get(db_start + usize::from(db_len) + 1..)
            .ok_or_else(|| self.decode_err(ev, "QUERY_COMPRESSED event truncated"))?;
        let sql = rows::mariadb_uncompress(body)
            .map_err(|e| self.decode_err(ev, format!("QUERY_COMPRESSED: {e}")))?;
        Ok((
            String::from_utf8_lossy(db).into_owned(),
            String::from_utf8_lossy(&sql).into_owned(),
        ))
    }

    fn on_query(
        &mut self,
        ev: &Event,
        schema: &str,
        sql: &str,
        out: &mut Vec<Output>,
    ) -> Result<(), SourceError> {
        let head = statement_head(sql);
        match head.as_str() {
            "BEGIN" => {
                self.in_trx = true;
                self.standalone = false;
                return Ok(());
            }
            "COMMIT" | "ROLLBACK" => {
                self.commit(ev, out);
                return Ok(());
            }
            _ => {}
        }
        if is_ddl(&head) {
            self.on_ddl(ev, schema, sql);
        } else if !head.is_empty() {
            self.on_statement(ev, schema, sql);
        }
        if !self.in_trx || self.standalone {
            // A statement outside BEGIN…COMMIT (DDL) is a transaction of its own.
            self.commit(ev, out);
        }
        Ok(())
    }

    /// A DDL statement: logged as its kind and tables (at INFO when it
    /// touches a followed table, else at debug; the text, credentials
    /// masked, only at debug), applied to the schema history.
    fn on_ddl(&mut self, ev: &Event, schema: &str, sql: &str) {
        let at = HistPos::new(&self.file, self.event_pos(ev));
        let summary = sql::summarize(sql, schema);
        let filter = self.opts.filter.clone();
        let followed = summary
            .tables
            .iter()
            .any(|(d, t)| filter(d, t) || self.history.has(d, t));
        let tables = sql::show_tables(&summary.tables);
        if followed && !self.ddl_only {
            tracing::info!(position = %at, "DDL {} {tables}", summary.kind);
        } else {
            tracing::debug!(position = %at, "DDL {} {tables}", summary.kind);
        }
        tracing::debug!(position = %at, schema, statement = %sql::masked(sql, 500), "DDL text");
        // While the start-up check is deferred the definitions are
        // information_schema's of now, not the ones this DDL applies to: it
        // is left to that check (rows with column names do not need it).
        if self.opts.schema_lookup && self.history.unchecked.is_none() {
            self.history
                .apply_ddl(&at, schema, sql, &|d: &str, t: &str| filter(d, t));
        }
        // Table ids may be reused with another definition after a DDL.
        self.tables.clear();
    }

    /// Any other statement: at debug level (credentials masked). A DML
    /// statement on a followed table means the binlog has its changes as a
    /// statement, not as rows: they cannot be delivered; say so loudly.
    fn on_statement(&mut self, ev: &Event, schema: &str, sql: &str) {
        let at = HistPos::new(&self.file, self.event_pos(ev));
        if self.ddl_only {
            return;
        }
        tracing::debug!(position = %at, schema, statement = %sql::masked(sql, 500), "statement");
        let summary = sql::summarize(sql, schema);
        if !sql::is_dml(&summary.kind) {
            return;
        }
        let filter = &self.opts.filter;
        let watched: Vec<_> = summary
            .tables
            .into_iter()
            .filter(|(d, t)| filter(d, t))
            .collect();
        if !watched.is_empty() {
            tracing::warn!(
                position = %at,
                tables = %sql::show_tables(&watched),
                "{} on {} is in the binlog as a statement, not as rows (its session used binlog_format=STATEMENT or MIXED): its changes are not in the binlog as rows and cannot be delivered. To prevent it, set binlog_format=ROW globally and revoke SUPER and BINLOG ADMIN from applications that change binlog_format per session",
                summary.kind,
                sql::show_tables(&watched)
            );
        }
    }

    /// The definition to decode `tm`'s rows with, from the schema history
    /// at `at`. Without column names in the binlog an unknown definition is
    /// an error (columns would be matched by position to a guess).
    fn schema_for(
        &self,
        tm: &table_map::TableMap,
        at: &HistPos,
    ) -> Result<Option<&TableSchema>, String> {
        if !self.opts.schema_lookup {
            return Ok(None);
        }
        let (db, t) = (tm.database.as_str(), tm.table.as_str());
        let def = self.history.def_at(db, t, at);
        if let Some(Definition::Known { schema }) = def {
            return Ok(Some(schema));
        }
        if tm.has_names() {
            // binlog_row_metadata=FULL: names come from the binlog; the
            // last known definition only adds what the binlog lacks (JSON).
            return Ok(self.history.last_known(db, t));
        }
        let why = match def {
            Some(Definition::Unknown { reason }) => reason.clone(),
            Some(Definition::Absent) => format!("pikachu's schema history says `{db}`.`{t}` does not exist at this point"),
            _ => match self.history.versions(db, t).first() {
                Some(v) => format!("pikachu has no definition of `{db}`.`{t}` before the DDL at {} (it has no schema history from before: a first start from a past position?)", v.from),
                None => format!("pikachu has no definition of `{db}`.`{t}` for this point"),
            },
        };
        let next = self
            .history
            .versions(db, t)
            .iter()
            .find(|v| v.from > *at && v.def.schema().is_some())
            .map(|v| v.from.to_string());
        let skip = match next {
            Some(p) => format!("`pikachu position set {p}` (where its definition is known again; the changes of all tables in between are skipped)"),
            None => "`pikachu position set latest` (the changes of all tables until now are skipped)".to_string(),
        };
        Err(format!(
            "cannot tell which columns these values belong to: the binlog carries no column names (binlog_row_metadata is not FULL) and {why}. Nothing of this table from here on was delivered. To go on: set binlog_row_metadata=FULL on the server (for the future), and move past this with {skip}"
        ))
    }

    fn on_mysql_gtid(&mut self, ev: &Event) -> Result<(), SourceError> {
        let gtid = mysql_gtid(ev).map_err(|e| self.decode_err(ev, e))?;
        self.gtid = Some(gtid.into());
        self.row_in_trx = 0;
        self.in_trx = false;
        self.xa_open = None;
        Ok(())
    }

    fn xa_at(&self, ev: &Event, xid: Arc<str>) -> XaAt {
        XaAt {
            xid,
            file: self.file.clone(),
            pos: self.event_pos(ev),
            gtid: self.gtid.clone(),
        }
    }

    /// The XA statements (`XA START`, `XA END`, `XA PREPARE`, `XA COMMIT`,
    /// `XA ROLLBACK`); false when `sql` is none of them.
    fn on_xa_query(
        &mut self,
        ev: &Event,
        sql: &str,
        out: &mut Vec<Output>,
    ) -> Result<bool, SourceError> {
        if !super::xa::is_xa_statement(sql) {
            return Ok(false);
        }
        let head = statement_head(sql);
        if head == "XA END" {
            return Ok(true);
        }
        if !matches!(
            head.as_str(),
            "XA START" | "XA BEGIN" | "XA PREPARE" | "XA COMMIT" | "XA ROLLBACK"
        ) {
            return Ok(false);
        }
        let xid: Arc<str> = super::xa::parse_statement_xid(sql)
            .map_err(|e| {
                self.decode_err(
                    ev,
                    format!(
                        "cannot read the xid of `{}`: {e}",
                        super::sql::masked(sql, 200)
                    ),
                )
            })?
            .canonical()
            .into();
        let own_group = self.xa_open.as_deref() == Some(&*xid);
        match head.as_str() {
            "XA START" | "XA BEGIN" => {
                self.in_trx = true;
                self.standalone = false;
                self.xa_open = Some(xid.clone());
                out.push(Output::Xa(XaEvent::Start(self.xa_at(ev, xid))));
                return Ok(true);
            }
            "XA PREPARE" => out.push(Output::Xa(XaEvent::Prepare(self.xa_at(ev, xid)))),
            // The commit of the group's own changes (one phase): a plain commit.
            "XA COMMIT" if own_group || super::xa::is_one_phase(sql) => {}
            _ => {
                let commit = head == "XA COMMIT";
                let at = self.xa_at(ev, xid);
                out.push(Output::Xa(XaEvent::Outcome { at, commit }));
            }
        }
        self.commit(ev, out);
        Ok(true)
    }

    /// XA_PREPARE_LOG_EVENT: the end of a prepared XA transaction's group,
    /// or (MySQL, `one_phase`) of a one-phase XA commit.
    fn on_xa_prepare(&mut self, ev: &Event, out: &mut Vec<Output>) -> Result<(), SourceError> {
        let post = usize::from(fde_post_header_len(ev, XA_PREPARE).unwrap_or(0));
        let body = ev.data().get(post..).unwrap_or_default();
        let (one_phase, xid) =
            super::xa::parse_prepare(body).map_err(|e| self.decode_err(ev, e))?;
        if !one_phase {
            let at = self.xa_at(ev, xid.canonical().into());
            out.push(Output::Xa(XaEvent::Prepare(at)));
        }
        self.commit(ev, out);
        Ok(())
    }

    fn on_maria_gtid(&mut self, ev: &Event, out: &mut Vec<Output>) -> Result<(), SourceError> {
        // seq_no(8) domain_id(4) flags2(1) ...
        let d = ev.data();
        let (Some(seq), Some(domain), Some(&flags)) = (d.get(0..8), d.get(8..12), d.get(12)) else {
            return Err(self.decode_err(ev, "MariaDB GTID event too short"));
        };
        let mut s = [0u8; 8];
        s.copy_from_slice(seq);
        let mut dm = [0u8; 4];
        dm.copy_from_slice(domain);
        let (seq, domain) = (u64::from_le_bytes(s), u32::from_le_bytes(dm));
        let server = ev.header().server_id();
        self.gtid = Some(format!("{domain}-{server}-{seq}").into());
        self.maria_gtid = Some((domain, server, seq));
        self.row_in_trx = 0;
        // FL_STANDALONE: no BEGIN/COMMIT around the single statement.
        self.standalone = flags & 1 != 0;
        self.in_trx = !self.standalone;
        self.xa_open = None;
        if flags & FL_PREPARED_XA != 0 {
            // FL_GROUP_COMMIT_ID: an 8-byte commit id comes before the xid.
            let at = if flags & 2 != 0 { 21 } else { 13 };
            let xid = super::xa::parse_maria_gtid_xid(d.get(at..).unwrap_or_default())
                .map_err(|e| self.decode_err(ev, e))?;
            let xid: Arc<str> = xid.canonical().into();
            self.xa_open = Some(xid.clone());
            out.push(Output::Xa(XaEvent::Start(self.xa_at(ev, xid))));
        }
        Ok(())
    }

    fn on_table_map(&mut self, ev: &Event) -> Result<(), SourceError> {
        let data = ev.data();
        check_table_map(ev).map_err(|e| self.decode_err(ev, format!("TABLE_MAP event: {e}")))?;
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
        let decoder = if !self.ddl_only && (self.opts.filter)(&tm.database, &tm.table) {
            let at = HistPos::new(&self.file, self.event_pos(ev));
            if self.opts.schema_lookup && !tm.has_names() && self.history.unchecked.is_some() {
                // Nothing changed yet: the reader checks and hands this event in again.
                return Err(SourceError::SchemaUnchecked {
                    at: self.at(ev),
                    db: tm.database.clone(),
                    table: tm.table.clone(),
                });
            }
            let dec = self
                .schema_for(&tm, &at)
                .and_then(|schema| table_map::build_decoder(&tm, schema))
                .map_err(|e| {
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

    fn on_rows(
        &mut self,
        ev: &Event,
        kind: ChangeKind,
        compressed: bool,
        out: &mut Vec<Output>,
    ) -> Result<(), SourceError> {
        self.on_rows_ext(ev, kind, compressed, false, out)
    }

    fn on_rows_ext(
        &mut self,
        ev: &Event,
        kind: ChangeKind,
        compressed: bool,
        partial: bool,
        out: &mut Vec<Output>,
    ) -> Result<(), SourceError> {
        let t = ev.header().event_type_raw();
        // The post-header length tells the layout: 6 = table id of 4 bytes
        // (very old servers), 8 = v1, 10 = v2 (with extra data).
        let post = match fde_post_header_len(ev, t) {
            Some(p) if p != 0 => p,
            _ if (WRITE_ROWS_V2..=DELETE_ROWS_V2).contains(&t) || t == PARTIAL_UPDATE_ROWS => 10,
            _ => 8,
        };
        let table_id_len = if post == 6 { 4 } else { 6 };
        let v2 = post == 10;
        let hdr = rows::parse_header(ev.data(), table_id_len, v2, compressed, kind)
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
        let pos = self.event_pos(ev);
        let timestamp = ev.header().timestamp();
        let file = self.file.clone();
        let gtid = self.gtid.clone();
        let mut row = 0u32;
        let mut row_in_trx = self.row_in_trx;
        let mode = rows::RowsMode {
            partial_json: partial,
            show_json_diffs: self.show_json_diffs,
        };
        rows::decode_rows_ext(
            kind,
            &hdr,
            &decoder,
            &self.opts.decode,
            mode,
            |before, after| {
                out.push(Output::Change(Change {
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
                }));
                row += 1;
                row_in_trx += 1;
            },
        )
        .map_err(|e| self.decode_err(ev, e))?;
        self.row_in_trx = row_in_trx;
        Ok(())
    }
}

/// The post-header length the format description gives for event type `t`
/// (for types the crate has no enum value for).
fn fde_post_header_len(ev: &Event, t: u8) -> Option<u8> {
    let fde = ev.fde();
    // The FDE's array is indexed by type - 1.
    let lens: &[u8] = fde.event_type_header_lengths();
    lens.get(usize::from(t).checked_sub(1)?).copied()
}

/// Checks the counts inside a TABLE_MAP's optional metadata before
/// mysql_common parses it: it allocates ENUM/SET label lists by the count
/// in the event, so a corrupt count would abort the process.
pub(crate) fn check_table_map(ev: &Event) -> Result<(), String> {
    let t = ev.header().event_type_raw();
    let id_len = match fde_post_header_len(ev, t) {
        Some(6) => 4,
        _ => 6,
    };
    let mut b = ev.data();
    let short = || "truncated".to_string();
    let take = |b: &mut &[u8], n: usize| -> Result<(), String> {
        if b.len() < n {
            return Err(short());
        }
        *b = &b[n..];
        Ok(())
    };
    take(&mut b, id_len + 2)?;
    for _ in 0..2 {
        let n = usize::from(*b.first().ok_or_else(short)?);
        take(&mut b, 1 + n + 1)?;
    }
    let cols = rows::lenenc(&mut b)?;
    if cols > b.len() as u64 {
        return Err(format!("{cols} columns announced, {} bytes left", b.len()));
    }
    take(&mut b, cols as usize)?;
    let meta_len = rows::lenenc(&mut b)?;
    if meta_len > b.len() as u64 {
        return Err("column metadata truncated".into());
    }
    take(&mut b, meta_len as usize)?;
    take(&mut b, (cols as usize).div_ceil(8))?;
    // Optional metadata: type(1), length, value.
    while let Some(&ty) = b.first() {
        b = &b[1..];
        let len = rows::lenenc(&mut b)?;
        if len > b.len() as u64 {
            return Err(format!("optional metadata field {ty} truncated"));
        }
        let (mut v, rest) = b.split_at(len as usize);
        b = rest;
        // SET_STR_VALUE (5), ENUM_STR_VALUE (6): per column a count, then labels.
        if ty == 5 || ty == 6 {
            while !v.is_empty() {
                let n = rows::lenenc(&mut v)?;
                if n > v.len() as u64 {
                    return Err(format!(
                        "{n} ENUM/SET labels announced, {} bytes left",
                        v.len()
                    ));
                }
                for _ in 0..n {
                    let l = rows::lenenc(&mut v)?;
                    if l > v.len() as u64 {
                        return Err("ENUM/SET label truncated".into());
                    }
                    v = &v[l as usize..];
                }
            }
        }
    }
    Ok(())
}

/// Formats a 16-byte server UUID.
pub(crate) fn format_uuid(sid: &[u8; 16]) -> String {
    let hex = |r: std::ops::Range<usize>| -> String {
        sid[r].iter().map(|b| format!("{b:02x}")).collect()
    };
    format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

/// The GTID of a MySQL GTID (33) or GTID_TAGGED (42) event: `uuid:gno`,
/// tagged `uuid:tag:gno`.
pub(crate) fn mysql_gtid(ev: &Event) -> Result<String, String> {
    if ev.header().event_type_raw() == GTID_TAGGED {
        let g: GtidEvent = ev
            .read_event()
            .map_err(|e| format!("GTID_TAGGED event: {e}"))?;
        let uuid = format_uuid(&g.sid());
        return Ok(match g.tag() {
            Some(tag) => format!("{uuid}:{}:{}", &**tag, g.gno()),
            None => format!("{uuid}:{}", g.gno()),
        });
    }
    // flags(1) sid(16) gno(8): read directly (5.6 events lack later fields).
    let d = ev.data();
    let (Some(sid), Some(gno)) = (d.get(1..17), d.get(17..25)) else {
        return Err("GTID event too short".into());
    };
    let mut s = [0u8; 16];
    s.copy_from_slice(sid);
    let mut g = [0u8; 8];
    g.copy_from_slice(gno);
    Ok(format!("{}:{}", format_uuid(&s), i64::from_le_bytes(g)))
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

/// The leading keyword(s) of a statement, upper-cased, comments skipped.
pub(crate) fn statement_head(sql: &str) -> String {
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

    /// A MySQL 8.0 binlog file (no checksums) built event by event.
    struct MySqlFile {
        bytes: Vec<u8>,
    }

    impl MySqlFile {
        fn new() -> Self {
            let mut body = vec![4, 0];
            let mut ver = b"8.0.40".to_vec();
            ver.resize(50, 0);
            body.extend_from_slice(&ver);
            body.extend_from_slice(&0u32.to_le_bytes());
            body.push(19);
            // Post-header lengths of types 1..=41: QUERY 13, GTID 42, XA_PREPARE 0.
            let mut lens = [0u8; 41];
            lens[usize::from(QUERY) - 1] = 13;
            lens[usize::from(GTID) - 1] = 42;
            body.extend_from_slice(&lens);
            body.push(0); // checksum OFF
            let mut f = MySqlFile {
                bytes: b"\xfebin".to_vec(),
            };
            f.event(FORMAT_DESCRIPTION, &body);
            f
        }

        fn event(&mut self, t: u8, body: &[u8]) {
            let size = (19 + body.len()) as u32;
            let end = self.bytes.len() as u32 + size;
            let mut h = vec![0, 0, 0, 0, t, 1, 0, 0, 0];
            h.extend_from_slice(&size.to_le_bytes());
            h.extend_from_slice(&end.to_le_bytes());
            h.extend_from_slice(&[0, 0]);
            self.bytes.extend_from_slice(&h);
            self.bytes.extend_from_slice(body);
        }

        fn gtid(&mut self, gno: u64) {
            let mut b = vec![1];
            b.extend_from_slice(&[0x3e; 16]);
            b.extend_from_slice(&gno.to_le_bytes());
            b.extend_from_slice(&[0; 17]);
            self.event(GTID, &b);
        }

        fn query(&mut self, sql: &str) {
            // thread_id, exec_time, db_len 0, error_code, status_vars_len 0; db "" NUL; sql.
            let mut b = vec![0u8; 13];
            b.push(0);
            b.extend_from_slice(sql.as_bytes());
            self.event(QUERY, &b);
        }

        fn xa_prepare(&mut self, one_phase: bool, gtrid: &[u8]) {
            // libbinlogevents XA_prepare_event: one_phase, formatID,
            // gtrid_length, bqual_length (4 bytes each, little-endian), data.
            let mut b = vec![u8::from(one_phase)];
            b.extend_from_slice(&1u32.to_le_bytes());
            b.extend_from_slice(&(gtrid.len() as u32).to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(gtrid);
            self.event(XA_PREPARE, &b);
        }
    }

    fn outputs(f: MySqlFile) -> Vec<String> {
        let mut file =
            super::super::file::BinlogFile::from_bytes("mysql-bin.000001", f.bytes).expect("file");
        let mut dec = Decoder::new(
            DecoderOptions {
                decode: DecodeOptions::default(),
                filter: Arc::new(|_: &str, _: &str| true),
                schema_lookup: false,
            },
            "mysql-bin.000001",
        );
        let mut out = Vec::new();
        while let Some(fe) = file.next_event().expect("event") {
            dec.handle(&fe.event, &mut out).expect("decode");
        }
        out.iter()
            .map(|o| match o {
                Output::Change(_) => "change".to_string(),
                Output::Commit(c) => format!("commit {}", c.gtid.as_deref().unwrap_or("-")),
                Output::Xa(XaEvent::Start(a)) => format!("start {}", a.xid),
                Output::Xa(XaEvent::Prepare(a)) => format!("prepare {}", a.xid),
                Output::Xa(XaEvent::Outcome { at, commit }) => {
                    format!("outcome {} {commit}", at.xid)
                }
            })
            .collect()
    }

    #[test]
    fn mysql_xa_prepare_then_outcomes() {
        let mut f = MySqlFile::new();
        // XA START 'ab' … XA PREPARE; later XA COMMIT in a group of its own.
        f.gtid(1);
        f.query("XA START X'6162',X'',1");
        f.query("XA END X'6162',X'',1");
        f.xa_prepare(false, b"ab");
        f.gtid(2);
        f.query("XA COMMIT X'6162',X'',1");
        // XA COMMIT … ONE PHASE: the XA_PREPARE with one_phase = 1 is the commit.
        f.gtid(3);
        f.query("XA START X'6364',X'',1");
        f.query("XA END X'6364',X'',1");
        f.xa_prepare(true, b"cd");
        // A rollback of a prepared XA.
        f.gtid(4);
        f.query("XA ROLLBACK 'ab'");
        let uuid = "3e3e3e3e-3e3e-3e3e-3e3e-3e3e3e3e3e3e";
        assert_eq!(
            outputs(f),
            vec![
                "start X'6162',X'',1".to_string(),
                "prepare X'6162',X'',1".into(),
                format!("commit {uuid}:1"),
                "outcome X'6162',X'',1 true".into(),
                format!("commit {uuid}:2"),
                "start X'6364',X'',1".into(),
                format!("commit {uuid}:3"),
                "outcome X'6162',X'',1 false".into(),
                format!("commit {uuid}:4"),
            ]
        );
    }

    #[test]
    fn a_corrupt_xa_prepare_is_a_clear_error() {
        let mut f = MySqlFile::new();
        f.gtid(1);
        f.query("XA START 'ab'");
        f.event(XA_PREPARE, &[0, 1, 0]);
        let mut file = super::super::file::BinlogFile::from_bytes("f", f.bytes).expect("file");
        let mut dec = Decoder::new(
            DecoderOptions {
                decode: DecodeOptions::default(),
                filter: Arc::new(|_: &str, _: &str| true),
                schema_lookup: false,
            },
            "f",
        );
        let mut out = Vec::new();
        let mut err = None;
        while let Some(fe) = file.next_event().expect("event") {
            if let Err(e) = dec.handle(&fe.event, &mut out) {
                err = Some(e.to_string());
            }
        }
        let err = err.expect("an error");
        assert!(err.contains("XA_PREPARE event too short"), "{err}");
    }
}
