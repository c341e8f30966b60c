//! Offline decoding of binlog files (`pikachu binlog decode FILE…`): every
//! event of a file, read by [`crate::source::file`] and decoded by the same
//! [`Decoder`] as the live stream (no schema lookups, every table wanted),
//! becomes one [`EventRecord`]: its header, what the event says (statement,
//! GTID, table map, …) and, for rows events, the decoded rows.
//!
//! XA transactions: the rows of a prepared XA are shown where they are in
//! the file (before its XA PREPARE); the XA events say what they are
//! (`xa`, `xid`, `one_phase`, `xa_outcome`), and the last line on stderr
//! counts the prepared, committed and rolled-back XA transactions and those
//! prepared without an outcome in the files given.

use std::path::Path;
use std::sync::Arc;

use mysql_common::binlog::events::{
    Event, FormatDescriptionEvent, GtidEvent, IncidentEvent, IntvarEvent, RandEvent, RotateEvent,
    RowsQueryEvent, TableMapEvent, UserVarEvent, XidEvent,
};
use serde_json::{json, Map, Value};

use crate::event::{payload, Change, ChangeKind};
use crate::source::decoder::{self, Decoder, DecoderOptions, Output, XaEvent};
use crate::source::file::{self, BinlogFile, FileError, FileEvent};
use crate::source::table_map;
use crate::source::value::{type_name as column_type_name, DecodeOptions};
use crate::source::SourceError;

/// The name of an event type code (as MySQL/MariaDB call them).
pub(crate) fn event_type_name(t: u8) -> &'static str {
    match t {
        1 => "START_EVENT_V3",
        2 => "QUERY_EVENT",
        3 => "STOP_EVENT",
        4 => "ROTATE_EVENT",
        5 => "INTVAR_EVENT",
        6 => "LOAD_EVENT",
        7 => "SLAVE_EVENT",
        8 => "CREATE_FILE_EVENT",
        9 => "APPEND_BLOCK_EVENT",
        10 => "EXEC_LOAD_EVENT",
        11 => "DELETE_FILE_EVENT",
        12 => "NEW_LOAD_EVENT",
        13 => "RAND_EVENT",
        14 => "USER_VAR_EVENT",
        15 => "FORMAT_DESCRIPTION_EVENT",
        16 => "XID_EVENT",
        17 => "BEGIN_LOAD_QUERY_EVENT",
        18 => "EXECUTE_LOAD_QUERY_EVENT",
        19 => "TABLE_MAP_EVENT",
        20 => "PRE_GA_WRITE_ROWS_EVENT",
        21 => "PRE_GA_UPDATE_ROWS_EVENT",
        22 => "PRE_GA_DELETE_ROWS_EVENT",
        23 => "WRITE_ROWS_EVENT_V1",
        24 => "UPDATE_ROWS_EVENT_V1",
        25 => "DELETE_ROWS_EVENT_V1",
        26 => "INCIDENT_EVENT",
        27 => "HEARTBEAT_LOG_EVENT",
        28 => "IGNORABLE_LOG_EVENT",
        29 => "ROWS_QUERY_LOG_EVENT",
        30 => "WRITE_ROWS_EVENT_V2",
        31 => "UPDATE_ROWS_EVENT_V2",
        32 => "DELETE_ROWS_EVENT_V2",
        33 => "GTID_LOG_EVENT",
        34 => "ANONYMOUS_GTID_LOG_EVENT",
        35 => "PREVIOUS_GTIDS_LOG_EVENT",
        36 => "TRANSACTION_CONTEXT_EVENT",
        37 => "VIEW_CHANGE_EVENT",
        38 => "XA_PREPARE_LOG_EVENT",
        39 => "PARTIAL_UPDATE_ROWS_EVENT",
        40 => "TRANSACTION_PAYLOAD_EVENT",
        41 => "HEARTBEAT_LOG_EVENT_V2",
        42 => "GTID_TAGGED_LOG_EVENT",
        160 => "MARIADB_ANNOTATE_ROWS_EVENT",
        161 => "MARIADB_BINLOG_CHECKPOINT_EVENT",
        162 => "MARIADB_GTID_EVENT",
        163 => "MARIADB_GTID_LIST_EVENT",
        164 => "MARIADB_START_ENCRYPTION_EVENT",
        165 => "MARIADB_QUERY_COMPRESSED_EVENT",
        166 => "MARIADB_WRITE_ROWS_COMPRESSED_EVENT_V1",
        167 => "MARIADB_UPDATE_ROWS_COMPRESSED_EVENT_V1",
        168 => "MARIADB_DELETE_ROWS_COMPRESSED_EVENT_V1",
        169 => "MARIADB_WRITE_ROWS_COMPRESSED_EVENT",
        170 => "MARIADB_UPDATE_ROWS_COMPRESSED_EVENT",
        171 => "MARIADB_DELETE_ROWS_COMPRESSED_EVENT",
        _ => "unknown",
    }
}

fn rows_kind(t: u8) -> Option<ChangeKind> {
    match t {
        23 | 30 | 166 | 169 => Some(ChangeKind::Insert),
        24 | 31 | 39 | 167 | 170 => Some(ChangeKind::Update),
        25 | 32 | 168 | 171 => Some(ChangeKind::Delete),
        _ => None,
    }
}

/// Where an event inside a TRANSACTION_PAYLOAD sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inner {
    /// Offset of the TRANSACTION_PAYLOAD event in the file.
    pub payload_pos: u64,
    /// Offset of this event in the decompressed payload.
    pub offset: u64,
}

/// One event of a file, decoded.
#[derive(Debug)]
pub struct EventRecord {
    pub file: Arc<str>,
    /// Offset of the event in the file (for inner events: of their payload).
    pub pos: u64,
    /// Offset just past the event (for inner events: past their payload).
    pub end_pos: u64,
    pub type_code: u8,
    pub timestamp: u32,
    pub server_id: u32,
    /// Set for events read from inside a TRANSACTION_PAYLOAD.
    pub inner: Option<Inner>,
    /// False when the decoder does not know the event type (shown, not decoded).
    pub decoded: bool,
    /// What the event says, by type (statement, GTID, table map, …).
    pub details: Map<String, Value>,
    /// For rows events: the decoded rows, in order.
    pub changes: Vec<Change>,
    /// The XA boundaries the decoder read in this event.
    pub xa: Vec<XaEvent>,
}

impl EventRecord {
    /// The event type's name (`"unknown"` for codes nobody defines).
    pub fn type_name(&self) -> &'static str {
        event_type_name(self.type_code)
    }

    /// Writes the record as one JSON object (no newline).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"file\":");
        payload::write_json_str(out, &self.file);
        let num = |out: &mut Vec<u8>, key: &str, v: u64| {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        };
        num(out, "pos", self.pos);
        num(out, "end_pos", self.end_pos);
        out.extend_from_slice(b",\"type\":");
        payload::write_json_str(out, self.type_name());
        num(out, "type_code", u64::from(self.type_code));
        num(out, "timestamp", u64::from(self.timestamp));
        num(out, "server_id", u64::from(self.server_id));
        if let Some(inner) = self.inner {
            out.extend_from_slice(b",\"inner\":true");
            num(out, "payload_pos", inner.payload_pos);
            num(out, "inner_offset", inner.offset);
        }
        if !self.decoded {
            out.extend_from_slice(b",\"decoded\":false");
        }
        for (k, v) in &self.details {
            out.push(b',');
            payload::write_json_str(out, k);
            out.push(b':');
            // Values are built by us from plain types: serializing cannot fail.
            let _ = serde_json::to_writer(&mut *out, v);
        }
        if rows_kind(self.type_code).is_some() && self.decoded {
            out.extend_from_slice(b",\"rows\":[");
            for (i, c) in self.changes.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_change_row(out, c);
            }
            out.push(b']');
        }
        out.push(b'}');
    }
}

fn write_change_row(out: &mut Vec<u8>, c: &Change) {
    let img = |out: &mut Vec<u8>, i: Option<&crate::event::RowImage>| match i {
        Some(i) => payload::write_row(out, &c.table, i),
        None => out.extend_from_slice(b"null"),
    };
    match c.kind {
        ChangeKind::Update => {
            out.extend_from_slice(b"{\"old_data\":");
            img(out, c.before.as_ref());
            out.extend_from_slice(b",\"new_data\":");
            img(out, c.after.as_ref());
        }
        ChangeKind::Insert | ChangeKind::Delete => {
            out.extend_from_slice(b"{\"data\":");
            img(out, c.key_image());
        }
    }
    out.push(b'}');
}

/// Counts over the files decoded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub files: u64,
    pub events: u64,
    /// Events read from inside TRANSACTION_PAYLOADs (also counted in `events`).
    pub inner_events: u64,
    pub rows: u64,
}

/// Decodes one file, handing each event to `sink` in order. Stops at the
/// first error (truncated or corrupt file, undecodable event), after
/// handing over every event before it.
pub fn decode_file(
    path: &Path,
    stats: &mut Stats,
    sink: &mut dyn FnMut(&EventRecord),
) -> Result<(), FileError> {
    let bf = BinlogFile::open(path)?;
    decode_binlog(bf, stats, sink)
}

/// [`decode_file`] over bytes already in memory (`name` is used in messages).
pub fn decode_bytes(
    name: &str,
    bytes: Vec<u8>,
    stats: &mut Stats,
    sink: &mut dyn FnMut(&EventRecord),
) -> Result<(), FileError> {
    let bf = BinlogFile::from_bytes(name, bytes)?;
    decode_binlog(bf, stats, sink)
}

/// A decoder for files: no schema lookups, every table decoded.
pub fn file_decoder(file_name: &str) -> Decoder {
    let mut d = Decoder::new(
        DecoderOptions {
            decode: DecodeOptions::default(),
            filter: Arc::new(|_: &str, _: &str| true),
            schema_lookup: false,
        },
        file_name,
    );
    d.set_show_json_diffs(true);
    d
}

fn decode_binlog(
    mut bf: BinlogFile,
    stats: &mut Stats,
    sink: &mut dyn FnMut(&EventRecord),
) -> Result<(), FileError> {
    stats.files += 1;
    let display: Arc<str> = bf.name().into();
    let base = Path::new(bf.name())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| bf.name().to_string());
    let mut dec = file_decoder(&base);
    let mut outs = Vec::new();
    while let Some(FileEvent { pos, event }) = bf.next_event()? {
        let fail = |message: String| FileError {
            file: display.to_string(),
            offset: pos,
            message,
        };
        let end_pos = pos + u64::from(event.header().event_size());
        let rec = decode_event(&mut dec, &event, &display, pos, end_pos, None, &mut outs)
            .map_err(|m| fail(format!("event at offset {pos}: {m}")))?;
        let payload = if rec.type_code == decoder::TRANSACTION_PAYLOAD {
            Some(
                file::open_payload(&event, bf.fde())
                    .map_err(|m| fail(format!("event at offset {pos}: {m}")))?,
            )
        } else {
            None
        };
        let mut rec = rec;
        if let Some(p) = &payload {
            rec.details
                .insert("compression".into(), json!(p.compression));
            rec.details
                .insert("payload_size".into(), json!(p.payload_size));
            rec.details
                .insert("uncompressed_size".into(), json!(p.uncompressed_size));
            rec.details
                .insert("inner_events".into(), json!(p.events.len()));
        }
        emit(&rec, stats, sink);
        if let Some(p) = payload {
            for inner in p.events {
                let at = Inner {
                    payload_pos: pos,
                    offset: inner.pos,
                };
                let rec = decode_event(
                    &mut dec,
                    &inner.event,
                    &display,
                    pos,
                    end_pos,
                    Some(at),
                    &mut outs,
                )
                .map_err(|m| {
                    fail(format!(
                        "event at payload offset {} of the TRANSACTION_PAYLOAD at offset {pos}: {m}",
                        inner.pos
                    ))
                })?;
                stats.inner_events += 1;
                emit(&rec, stats, sink);
            }
        }
    }
    Ok(())
}

fn emit(rec: &EventRecord, stats: &mut Stats, sink: &mut dyn FnMut(&EventRecord)) {
    stats.events += 1;
    stats.rows += rec.changes.len() as u64;
    sink(rec);
}

fn decode_event(
    dec: &mut Decoder,
    ev: &Event,
    file: &Arc<str>,
    pos: u64,
    end_pos: u64,
    inner: Option<Inner>,
    outs: &mut Vec<Output>,
) -> Result<EventRecord, String> {
    let h = ev.header();
    let t = h.event_type_raw();
    let mut rec = EventRecord {
        file: file.clone(),
        pos,
        end_pos,
        type_code: t,
        timestamp: h.timestamp(),
        server_id: h.server_id(),
        inner,
        decoded: true,
        details: Map::new(),
        changes: Vec::new(),
        xa: Vec::new(),
    };
    describe(dec, ev, &mut rec.details)?;
    // INCIDENT stops the live stream; offline it is shown (see its details).
    if t != decoder::INCIDENT {
        outs.clear();
        match dec.handle(ev, outs) {
            Ok(()) => {}
            Err(SourceError::UnknownEvent { .. }) => rec.decoded = false,
            Err(e) => return Err(source_error_text(e)),
        }
        for o in outs.drain(..) {
            match o {
                Output::Change(c) => rec.changes.push(c),
                Output::Xa(x) => {
                    describe_xa(&x, &mut rec.details);
                    rec.xa.push(x);
                }
                Output::Commit(_) => {}
            }
        }
    }
    if let (Some(kind), Some(c)) = (rows_kind(t), rec.changes.first()) {
        rec.details.insert("db".into(), json!(&*c.table.database));
        rec.details.insert("table".into(), json!(&*c.table.name));
        rec.details.insert("kind".into(), json!(kind.as_str()));
    }
    Ok(rec)
}

/// What the decoder made of an XA event, unless [`describe`] said it.
fn describe_xa(x: &XaEvent, d: &mut Map<String, Value>) {
    let (key, what) = match x {
        XaEvent::Start(_) => ("xa", "start"),
        XaEvent::Prepare(_) => ("xa", "prepare"),
        XaEvent::Outcome { commit: true, .. } => ("xa_outcome", "commit"),
        XaEvent::Outcome { commit: false, .. } => ("xa_outcome", "rollback"),
    };
    d.entry(key).or_insert_with(|| json!(what));
    d.entry("xid").or_insert_with(|| json!(&*x.at().xid));
}

fn source_error_text(e: SourceError) -> String {
    match e {
        SourceError::Decode { message, .. } => message,
        SourceError::Checksum {
            expected, computed, ..
        } => format!("bad checksum (the event says {expected:08x}, its bytes give {computed:08x})"),
        other => other.to_string(),
    }
}

fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Fills `d` with what event `ev` says, by type.
fn describe(dec: &Decoder, ev: &Event, d: &mut Map<String, Value>) -> Result<(), String> {
    match ev.header().event_type_raw() {
        2 | 165 => describe_query(dec, ev, d),
        4 => describe_rotate(ev, d),
        5 => describe_intvar(ev, d),
        13 => describe_rand(ev, d),
        14 => describe_user_var(ev, d),
        15 => describe_format_description(ev, d),
        16 => describe_xid(ev, d),
        19 => describe_table_map(ev, d),
        26 => describe_incident(ev, d),
        29 => describe_rows_query(ev, d),
        t @ (33 | 34 | 42) => describe_mysql_gtid(t, ev, d),
        35 => describe_previous_gtids(ev.data(), d),
        38 => describe_xa_prepare(ev, d),
        40 => Ok(()),
        160 => describe_annotate_rows(ev.data(), d),
        161 => describe_binlog_checkpoint(ev.data(), d),
        162 => describe_mariadb_gtid(ev, d),
        163 => describe_gtid_list(ev.data(), d),
        t if rows_kind(t).is_some() => describe_rows(t, ev, d),
        _ => Ok(()),
    }
}

/// Sets key `k` of `d` to `v`.
fn put(d: &mut Map<String, Value>, k: &str, v: Value) {
    d.insert(k.to_string(), v);
}

/// The message for an event of type `what` that could not be parsed.
fn corrupt(what: &str, e: std::io::Error) -> String {
    format!("corrupt {what}: {e}")
}

/// QUERY (2) and MariaDB QUERY_COMPRESSED (165): the schema and the statement.
fn describe_query(dec: &Decoder, ev: &Event, d: &mut Map<String, Value>) -> Result<(), String> {
    let (schema, sql) = dec.query_text(ev).map_err(source_error_text)?;
    put(d, "schema", json!(schema));
    put(d, "statement", json!(sql));
    Ok(())
}

/// ROTATE (4): the next file and position.
fn describe_rotate(ev: &Event, d: &mut Map<String, Value>) -> Result<(), String> {
    let r: RotateEvent<'_> = ev.read_event().map_err(|e| corrupt("ROTATE", e))?;
    put(d, "next_file", json!(r.name()));
    put(d, "next_pos", json!(r.position()));
    Ok(())
}

/// INTVAR (5): the subtype and the value.
fn describe_intvar(ev: &Event, d: &mut Map<String, Value>) -> Result<(), String> {
    let r: IntvarEvent = ev.read_event().map_err(|e| corrupt("INTVAR", e))?;
    put(d, "subtype", json!(format!("{:?}", r.subtype())));
    put(d, "value", json!(r.value()));
    Ok(())
}

/// RAND (13): the two seeds.
fn describe_rand(ev: &Event, d: &mut Map<String, Value>) -> Result<(), String> {
    let r: RandEvent = ev.read_event().map_err(|e| corrupt("RAND", e))?;
    put(d, "seed1", json!(r.seed1.0));
    put(d, "seed2", json!(r.seed2.0));
    Ok(())
}

/// USER_VAR (14): the variable's name and, unless NULL, its type, charset and value.
fn describe_user_var(ev: &Event, d: &mut Map<String, Value>) -> Result<(), String> {
    let r: UserVarEvent<'_> = ev.read_event().map_err(|e| corrupt("USER_VAR", e))?;
    put(d, "name", json!(r.name()));
    put(d, "is_null", json!(r.is_null()));
    if !r.is_null() {
        put(
            d,
            "value_type",
            json!(r
                .value_type()
                .map(|v| format!("{v:?}"))
                .unwrap_or_else(|e| format!("unknown {e:?}"))),
        );
        put(d, "charset", json!(r.charset()));
        put(d, "value_hex", json!(hex(r.value())));
    }
    Ok(())
}

/// FORMAT_DESCRIPTION (15): binlog and server versions, creation time, checksum.
fn describe_format_description(ev: &Event, d: &mut Map<String, Value>) -> Result<(), String> {
    let f: FormatDescriptionEvent<'_> = ev
        .read_event()
        .map_err(|e| corrupt("FORMAT_DESCRIPTION", e))?;
    put(d, "binlog_version", json!(f.binlog_version() as u16));
    let v = f.server_version();
    put(
        d,
        "server_version",
        json!(v.split('\0').next().unwrap_or("")),
    );
    put(d, "create_timestamp", json!(f.create_timestamp()));
    let alg = match ev.footer().get_checksum_alg() {
        Ok(Some(a)) => json!(format!("{a:?}").trim_start_matches("BINLOG_CHECKSUM_ALG_")),
        _ => Value::Null,
    };
    put(d, "checksum", alg);
    Ok(())
}

/// XID (16): the transaction's xid.
fn describe_xid(ev: &Event, d: &mut Map<String, Value>) -> Result<(), String> {
    let x: XidEvent = ev.read_event().map_err(|e| corrupt("XID", e))?;
    put(d, "xid", json!(x.xid));
    Ok(())
}

/// TABLE_MAP (19): the table, its columns and its primary key.
fn describe_table_map(ev: &Event, d: &mut Map<String, Value>) -> Result<(), String> {
    decoder::check_table_map(ev).map_err(|e| format!("corrupt TABLE_MAP: {e}"))?;
    let tme: TableMapEvent<'_> = ev.read_event().map_err(|e| corrupt("TABLE_MAP", e))?;
    let tm = table_map::parse(&tme).map_err(|e| format!("corrupt TABLE_MAP: {e}"))?;
    put(d, "table_id", json!(tm.table_id));
    put(d, "db", json!(tm.database));
    put(d, "table", json!(tm.table));
    let cols: Vec<Value> = tm.columns.iter().map(table_map_column).collect();
    put(d, "columns", Value::Array(cols));
    if let Some(pk) = &tm.primary_key {
        put(d, "primary_key", json!(pk));
    }
    Ok(())
}

/// One TABLE_MAP column as JSON: its real type, metadata and what the optional metadata says.
fn table_map_column(c: &table_map::MapColumn) -> Value {
    let real = table_map::real_type(c.ty, &c.meta);
    let mut o = Map::new();
    o.insert("type".into(), json!(column_type_name(real)));
    o.insert("meta".into(), json!(c.meta));
    o.insert("nullable".into(), json!(c.nullable));
    if let Some(n) = &c.name {
        o.insert("name".into(), json!(n));
    }
    if let Some(u) = c.unsigned {
        o.insert("unsigned".into(), json!(u));
    }
    if let Some(cs) = c.collation {
        o.insert("charset".into(), json!(cs));
    }
    if let Some(l) = &c.enum_labels {
        o.insert("enum".into(), json!(l));
    }
    if let Some(l) = &c.set_labels {
        o.insert("set".into(), json!(l));
    }
    Value::Object(o)
}

/// INCIDENT (26): the incident type and message, with a warning.
fn describe_incident(ev: &Event, d: &mut Map<String, Value>) -> Result<(), String> {
    let i: IncidentEvent<'_> = ev.read_event().map_err(|e| corrupt("INCIDENT", e))?;
    put(
        d,
        "incident",
        json!(i
            .incident_type()
            .map(|t| format!("{t:?}"))
            .unwrap_or_else(|e| format!("{e:?}"))),
    );
    put(d, "message", json!(i.message()));
    put(
        d,
        "warning",
        json!("the server logged an INCIDENT: changes may be missing from this binlog here; the live reader stops at this event"),
    );
    Ok(())
}

/// ROWS_QUERY (29): the statement behind the rows events.
fn describe_rows_query(ev: &Event, d: &mut Map<String, Value>) -> Result<(), String> {
    let q: RowsQueryEvent<'_> = ev.read_event().map_err(|e| corrupt("ROWS_QUERY", e))?;
    put(d, "query", json!(q.query()));
    Ok(())
}

/// MySQL GTID (33), ANONYMOUS_GTID (34) and GTID_TAGGED (42): flags, commit order, GTID.
fn describe_mysql_gtid(t: u8, ev: &Event, d: &mut Map<String, Value>) -> Result<(), String> {
    match ev.read_event::<GtidEvent>() {
        Ok(g) => {
            put(d, "flags", json!(g.flags_raw()));
            if let Some(tc) = g.lc_typecode() {
                put(d, "lc_typecode", json!(tc));
                put(d, "last_committed", json!(g.last_committed()));
                put(d, "sequence_number", json!(g.sequence_number()));
            }
        }
        Err(e) if t == 42 => return Err(corrupt("GTID_TAGGED", e)),
        Err(_) => {}
    }
    if t != 34 {
        put(d, "gtid", json!(decoder::mysql_gtid(ev)?));
    }
    Ok(())
}

/// PREVIOUS_GTIDS (35): the GTID set as text and as a list of server uuids.
fn describe_previous_gtids(data: &[u8], d: &mut Map<String, Value>) -> Result<(), String> {
    let sids = previous_gtids(data).map_err(|e| format!("corrupt PREVIOUS_GTIDS: {e}"))?;
    let mut text: Vec<String> = Vec::new();
    let mut list = Vec::new();
    for (uuid, tag, ivs) in sids {
        let ranges = gtid_ranges(&ivs);
        list.push(gtid_sid_json(&uuid, &tag, &ivs));
        let part = match &tag {
            Some(tag) => format!("{tag}:{}", ranges.join(":")),
            None => ranges.join(":"),
        };
        match text.last_mut() {
            Some(last) if last.starts_with(&uuid) => {
                last.push(':');
                last.push_str(&part);
            }
            _ => text.push(format!("{uuid}:{part}")),
        }
    }
    put(d, "gtid_set", json!(text.join(",")));
    put(d, "sids", Value::Array(list));
    Ok(())
}

/// [start, end) intervals as GTID set text: `a` or `a-b` (inclusive).
fn gtid_ranges(ivs: &[(u64, u64)]) -> Vec<String> {
    ivs.iter()
        .map(|&(a, b)| {
            if a.checked_add(1) == Some(b) {
                a.to_string()
            } else {
                format!("{a}-{}", b.saturating_sub(1))
            }
        })
        .collect()
}

/// One PREVIOUS_GTIDS server uuid (with its tag) and its intervals as JSON.
fn gtid_sid_json(uuid: &str, tag: &Option<String>, ivs: &[(u64, u64)]) -> Value {
    let mut o = Map::new();
    o.insert("uuid".into(), json!(uuid));
    if let Some(tag) = tag {
        o.insert("tag".into(), json!(tag));
    }
    o.insert(
        "intervals".into(),
        Value::Array(ivs.iter().map(|&(a, b)| json!([a, b])).collect()),
    );
    Value::Object(o)
}

/// XA_PREPARE (38): the xid and whether it is a one-phase commit.
fn describe_xa_prepare(ev: &Event, d: &mut Map<String, Value>) -> Result<(), String> {
    let data = ev.data();
    let post = ev
        .fde()
        .event_type_header_lengths()
        .get(37)
        .copied()
        .unwrap_or(0);
    let (one_phase, xid) =
        crate::source::xa::parse_prepare(data.get(usize::from(post)..).unwrap_or_default())
            .map_err(|e| format!("corrupt {e}"))?;
    put(d, "xid", json!(xid.canonical()));
    put(d, "one_phase", json!(one_phase));
    Ok(())
}

/// MariaDB ANNOTATE_ROWS (160): the statement text.
fn describe_annotate_rows(data: &[u8], d: &mut Map<String, Value>) -> Result<(), String> {
    put(d, "text", json!(lossy(data)));
    Ok(())
}

/// MariaDB BINLOG_CHECKPOINT (161): the binlog file name.
fn describe_binlog_checkpoint(data: &[u8], d: &mut Map<String, Value>) -> Result<(), String> {
    let len = data.get(..4).map(le).unwrap_or(0) as usize;
    let name = data
        .get(4..4 + len)
        .ok_or("corrupt BINLOG_CHECKPOINT: file name truncated")?;
    put(d, "binlog_file", json!(lossy(name)));
    Ok(())
}

/// MariaDB GTID (162): the GTID, flags, commit id and XA state.
fn describe_mariadb_gtid(ev: &Event, d: &mut Map<String, Value>) -> Result<(), String> {
    let data = ev.data();
    let (Some(seq), Some(domain), Some(&flags)) = (data.get(0..8), data.get(8..12), data.get(12))
    else {
        return Err("corrupt MariaDB GTID event: too short".into());
    };
    let gtid = format!("{}-{}-{}", le(domain), ev.header().server_id(), le(seq));
    put(d, "gtid", json!(gtid));
    put(d, "flags", json!(flags));
    put(d, "standalone", json!(flags & 1 != 0));
    if flags & 2 != 0 {
        if let Some(cid) = data.get(13..21) {
            put(d, "commit_id", json!(le(cid)));
        }
    }
    describe_mariadb_gtid_xa(data, flags, d)
}

/// The XA part of a MariaDB GTID event: prepared or completed, and the xid.
fn describe_mariadb_gtid_xa(
    data: &[u8],
    flags: u8,
    d: &mut Map<String, Value>,
) -> Result<(), String> {
    let xa = flags & (decoder::FL_PREPARED_XA | decoder::FL_COMPLETED_XA);
    if xa != 0 {
        let at = if flags & 2 != 0 { 21 } else { 13 };
        let xid = crate::source::xa::parse_maria_gtid_xid(data.get(at..).unwrap_or_default())
            .map_err(|e| format!("corrupt {e}"))?;
        let what = if xa == decoder::FL_PREPARED_XA {
            "prepared"
        } else {
            "completed"
        };
        put(d, "xa", json!(what));
        put(d, "xid", json!(xid.canonical()));
    }
    Ok(())
}

/// MariaDB GTID_LIST (163): the GTIDs listed and the flags.
fn describe_gtid_list(data: &[u8], d: &mut Map<String, Value>) -> Result<(), String> {
    let head = data.get(..4).ok_or("corrupt GTID_LIST: too short")?;
    let raw = le(head) as u32;
    let count = (raw & 0x0fff_ffff) as usize;
    let mut list = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        let e = data
            .get(4 + 16 * i..4 + 16 * (i + 1))
            .ok_or_else(|| format!("corrupt GTID_LIST: {count} entries announced, {i} present"))?;
        list.push(json!(format!(
            "{}-{}-{}",
            le(&e[0..4]),
            le(&e[4..8]),
            le(&e[8..16])
        )));
    }
    put(d, "gtid_list", Value::Array(list));
    put(d, "flags", json!(raw >> 28));
    Ok(())
}

/// Rows events (type `t`): the table id.
fn describe_rows(t: u8, ev: &Event, d: &mut Map<String, Value>) -> Result<(), String> {
    // Table id: 6 bytes (4 on very old servers).
    let post = ev
        .fde()
        .event_type_header_lengths()
        .get(usize::from(t) - 1)
        .copied()
        .unwrap_or(8);
    let n = if post == 6 { 4 } else { 6 };
    if let Some(id) = ev.data().get(..n) {
        put(d, "table_id", json!(le(id)));
    }
    Ok(())
}

type GtidSid = (String, Option<String>, Vec<(u64, u64)>);

/// Parses a PREVIOUS_GTIDS body (untagged, or the tagged format of MySQL
/// 8.4+): (uuid, tag, [start, end) intervals). Counts are checked against
/// the bytes left before anything is allocated.
fn previous_gtids(mut b: &[u8]) -> Result<Vec<GtidSid>, String> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if b.len() < n {
            return Err(format!("need {n} bytes, {} left", b.len()));
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Ok(h)
    }
    // MySQL's varlen unsigned: the number of trailing 1 bits of the
    // first byte (+1) is the byte count.
    fn varlen(b: &mut &[u8]) -> Result<u64, String> {
        let first = *b.first().ok_or("truncated length")?;
        let n = (first.trailing_ones() as usize + 1).min(9);
        let bytes = take(b, n)?;
        let mut v = 0u64;
        for (i, &x) in bytes.iter().enumerate().skip(1) {
            v |= u64::from(x) << (8 * (i - 1));
        }
        if n < 9 {
            v = (v << (8 - n)) | (u64::from(first) >> n);
        }
        Ok(v)
    }
    let head = le(take(&mut b, 8)?);
    let tagged = head >> 56 != 0;
    let n = if tagged {
        (head >> 8) & ((1 << 48) - 1)
    } else {
        head & ((1 << 56) - 1)
    };
    if n > b.len() as u64 / 24 {
        return Err(format!(
            "{n} server uuids announced, {} bytes left",
            b.len()
        ));
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(take(&mut b, 16)?);
        let tag = if tagged {
            let len = varlen(&mut b)?;
            if len > b.len() as u64 {
                return Err("tag truncated".into());
            }
            let t = take(&mut b, len as usize)?;
            (!t.is_empty()).then(|| lossy(t))
        } else {
            None
        };
        let k = le(take(&mut b, 8)?);
        if k > b.len() as u64 / 16 {
            return Err(format!("{k} intervals announced, {} bytes left", b.len()));
        }
        let mut ivs = Vec::with_capacity(k as usize);
        for _ in 0..k {
            let a = le(take(&mut b, 8)?);
            let e = le(take(&mut b, 8)?);
            if a == 0 || e <= a {
                return Err(format!("interval [{a}, {e}) is empty or starts at 0"));
            }
            ivs.push((a, e));
        }
        out.push((decoder::format_uuid(&uuid), tag, ivs));
    }
    if !b.is_empty() {
        return Err(format!("{} bytes left over", b.len()));
    }
    Ok(out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What `pikachu binlog decode` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Print {
    /// One JSON line per event.
    #[default]
    Json,
    /// Only the per-file summary line and the final one.
    Summary,
}

/// `pikachu binlog decode`: decodes `files` in order, writing to `out`
/// (events) and `err` (summary, errors). Returns false when a file failed.
pub fn run_decode(
    files: &[std::path::PathBuf],
    print: Print,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> bool {
    let mut total = Stats::default();
    let mut line = Vec::with_capacity(4096);
    let mut ok = true;
    let mut xa = XaTally::default();
    for path in files {
        let mut stats = Stats::default();
        let mut write_failed = None;
        let r = decode_file(path, &mut stats, &mut |rec| {
            xa.count(&rec.xa);
            if print == Print::Json && write_failed.is_none() {
                line.clear();
                rec.write_json(&mut line);
                line.push(b'\n');
                if let Err(e) = out.write_all(&line) {
                    write_failed = Some(e);
                }
            }
        });
        total.files += stats.files;
        total.events += stats.events;
        total.inner_events += stats.inner_events;
        total.rows += stats.rows;
        if let Some(e) = write_failed {
            let _ = writeln!(err, "error: cannot write the output: {e}");
            return false;
        }
        if print == Print::Summary {
            let _ = writeln!(
                out,
                "{}",
                json!({"file": path.display().to_string(), "events": stats.events,
                       "inner_events": stats.inner_events, "rows": stats.rows,
                       "ok": r.is_ok()})
            );
        }
        if let Err(e) = r {
            let _ = writeln!(err, "error: {e}");
            ok = false;
            break;
        }
    }
    let _ = out.flush();
    let _ = writeln!(
        err,
        "decoded {} events ({} inside transaction payloads), {} rows, from {} file(s){}",
        total.events,
        total.inner_events,
        total.rows,
        total.files,
        if ok {
            ""
        } else {
            "; stopped at the error above"
        }
    );
    if let Some(line) = xa.line() {
        let _ = writeln!(err, "{line}");
    }
    ok
}

/// XA transactions seen by `pikachu binlog decode`.
#[derive(Debug, Default)]
struct XaTally {
    prepared: u64,
    committed: u64,
    rolled_back: u64,
    /// Outcomes whose PREPARE is not in the files.
    unmatched: u64,
    /// Prepared, no outcome yet (canonical xids).
    open: std::collections::HashSet<std::sync::Arc<str>>,
}

impl XaTally {
    fn count(&mut self, events: &[XaEvent]) {
        for x in events {
            match x {
                XaEvent::Start(_) => {}
                XaEvent::Prepare(at) => {
                    self.prepared += 1;
                    self.open.insert(at.xid.clone());
                }
                XaEvent::Outcome { at, commit } => {
                    match commit {
                        true => self.committed += 1,
                        false => self.rolled_back += 1,
                    }
                    if !self.open.remove(&at.xid) {
                        self.unmatched += 1;
                    }
                }
            }
        }
    }

    /// The summary line, when there was any XA transaction.
    fn line(&self) -> Option<String> {
        if self.prepared + self.committed + self.rolled_back == 0 {
            return None;
        }
        let mut s = format!(
            "XA transactions: {} prepared, {} committed, {} rolled back, {} prepared without an outcome in these files",
            self.prepared,
            self.committed,
            self.rolled_back,
            self.open.len()
        );
        if self.unmatched > 0 {
            s.push_str(&format!(
                ", {} outcome(s) of transactions prepared before them",
                self.unmatched
            ));
        }
        s.push_str(" (a prepared XA's rows are shown where they are written, before its XA PREPARE; pikachu delivers them only at its XA COMMIT)");
        Some(s)
    }
}
