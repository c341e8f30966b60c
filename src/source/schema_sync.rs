//! Keeping the schema history ([`super::history`]) true for the live reader:
//! loading it from where it is kept between runs, checking it against
//! `information_schema` at start and after each DDL of a followed table,
//! and saving new versions before the reader sends on the transaction end
//! of the DDL that made them (so a checkpoint never passes a DDL whose
//! resulting definition is not saved).
//!
//! `information_schema` only tells the definition of now. A snapshot reads
//! the binlog end position, the definitions, and the end position again
//! (E1, N, E2). When no binlog was written since the position being
//! checked (it is ≥ E1 = E2), N is the definition there. Otherwise the
//! binlog from that position to E2 is read ahead (a non-blocking dump of DDL
//! statements only) and the definitions derived from it must end equal to
//! N; the versions found on the way are kept, so the stream finds them
//! already applied. Anything that does not add up makes the affected
//! definitions unknown, which stops pikachu if rows without column names
//! need them.
//!
//! For `replay` (which keeps no history) that check is deferred
//! ([`check_deferred`]) until a rows event without column names needs it:
//! with `binlog_row_metadata=FULL` it never does, and a replay does not read
//! the binlog twice.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn};

use super::connect::{self, Flavour, ServerInfo};
use super::decoder::{Decoder, DecoderOptions};
use super::error::SourceError;
use super::history::{
    difference, Definition, HistPos, SchemaHistory, TableKey, Unchecked, Version,
};
pub use super::options::ReaderOptions;
pub(crate) use super::options::{HistoryStore, StoredVersion};
use super::position::{self, StartAt};
use super::schema::{self, TableSchema};

/// The identity the stored positions are tied to.
pub(crate) fn server_identity(info: &ServerInfo) -> String {
    format!(
        "{} server_id {}{}",
        info.flavour.as_str(),
        info.server_id,
        info.server_uuid
            .as_deref()
            .map(|u| format!(" uuid {u}"))
            .unwrap_or_default()
    )
}

fn store_err(e: impl std::fmt::Display) -> SourceError {
    SourceError::Config(format!("the schema history in the state store: {e}"))
}

/// Saves `versions` (when there is a store), waiting until they are on disk.
pub(crate) async fn persist(
    opts: &ReaderOptions,
    info: &ServerInfo,
    versions: Vec<(TableKey, Version)>,
) -> Result<(), SourceError> {
    let Some(store) = opts.history_store.clone() else {
        return Ok(());
    };
    if versions.is_empty() {
        return Ok(());
    }
    let server = server_identity(info);
    let mut rows = Vec::with_capacity(versions.len());
    for ((db, table), v) in versions {
        rows.push(StoredVersion {
            db,
            table,
            file: v.from.file,
            pos: v.from.pos,
            definition: serde_json::to_string(&v.def).map_err(store_err)?,
            server: server.clone(),
        });
    }
    tokio::task::spawn_blocking(move || store.save(&rows))
        .await
        .map_err(store_err)?
        .map_err(store_err)
}

async fn load_stored(
    opts: &ReaderOptions,
    info: &ServerInfo,
    h: &mut SchemaHistory,
) -> Result<(), SourceError> {
    let Some(store) = opts.history_store.clone() else {
        return Ok(());
    };
    let rows = tokio::task::spawn_blocking(move || store.load())
        .await
        .map_err(store_err)?
        .map_err(store_err)?;
    let here = server_identity(info);
    // Versions of another server: positions mean nothing here; keep the
    // latest definition of each table, as valid from the start.
    let mut foreign: HashMap<TableKey, (HistPos, Definition)> = HashMap::new();
    for r in rows {
        let def: Definition = serde_json::from_str(&r.definition).map_err(store_err)?;
        let from = HistPos::new(&r.file, r.pos);
        if r.server == here {
            h.load(&r.db, &r.table, from, def);
        } else {
            let slot = foreign
                .entry((r.db, r.table))
                .or_insert((from.clone(), def.clone()));
            if from >= slot.0 {
                *slot = (from, def);
            }
        }
    }
    for ((db, table), (_, def)) in foreign {
        if !h.has(&db, &table) {
            h.set(&db, &table, HistPos::origin(), def);
        }
    }
    Ok(())
}

/// What `information_schema` said, between two readings of the binlog end.
struct Snapshot {
    /// The binlog end before reading the definitions.
    e1: HistPos,
    /// The binlog end after reading them.
    e2: HistPos,
    /// Each table's definition (`None`: it does not exist).
    defs: HashMap<TableKey, Option<TableSchema>>,
}

async fn end_position(conn: &mut Conn, info: &ServerInfo) -> Result<HistPos, SourceError> {
    let p = position::latest(conn, info).await?;
    Ok(HistPos::new(&p.file, p.pos))
}

async fn snapshot(
    conn: &mut Conn,
    info: &ServerInfo,
    tables: &[TableKey],
) -> Result<Snapshot, SourceError> {
    let mariadb = info.flavour == Flavour::MariaDb;
    let e1 = end_position(conn, info).await?;
    let mut defs = HashMap::new();
    for (db, t) in tables {
        defs.insert(
            (db.clone(), t.clone()),
            schema::load(conn, mariadb, db, t).await?,
        );
    }
    let e2 = end_position(conn, info).await?;
    Ok(Snapshot { e1, e2, defs })
}

/// Builds the schema history at start: what is stored, checked against
/// `information_schema` for every followed table from `start` on.
pub async fn init(
    info: &ServerInfo,
    opts: &ReaderOptions,
    start: &StartAt,
) -> Result<SchemaHistory, SourceError> {
    let mut conn = connect::connect(&opts.db).await?;
    let mut h = SchemaHistory::new(
        schema::load_collations(&mut conn).await?,
        info.flavour == Flavour::MariaDb,
    );
    load_stored(opts, info, &mut h).await?;
    let tables = opts.tables.clone();
    match start {
        StartAt::FilePos(p) => {
            let from = HistPos::new(&p.file, p.pos);
            h.prune_before(&from);
            // Nothing to check when every table is as it was: the DDLs
            // ahead are checked as the stream brings them.
            let snap = snapshot(&mut conn, info, &tables).await?;
            let unchanged = tables.iter().all(|k| {
                h.def_at(&k.0, &k.1, &from).is_some_and(|d| {
                    difference(d, definition_of(snap.defs.get(k)).schema()).is_none()
                })
            });
            if !unchanged {
                if opts.history_store.is_none() {
                    defer_check(&mut h, &from, &tables, &snap);
                } else {
                    verify(&mut conn, info, opts, &mut h, &from, &tables, true).await?;
                }
            }
        }
        StartAt::Gtid(_) => {
            // Positions of a GTID start are only known once the stream
            // runs: take information_schema's definitions as they are.
            let snap = snapshot(&mut conn, info, &tables).await?;
            for key in &tables {
                let now = definition_of(snap.defs.get(key));
                let latest = h.latest(&key.0, &key.1).map(|v| v.def.clone());
                if latest.as_ref() != Some(&now) {
                    if latest.is_some() {
                        tracing::warn!(table = %format!("{}.{}", key.0, key.1), "started from a GTID: the stored definition differs from information_schema's; using information_schema's");
                    }
                    h.set(&key.0, &key.1, HistPos::origin(), now);
                }
            }
        }
    }
    let _ = conn.disconnect().await;
    persist(opts, info, h.take_changed()).await?;
    Ok(h)
}

/// For a reader that keeps no history (`replay`): takes information_schema's
/// definitions as valid at `from` for the tables without one, and leaves
/// the check to [`check_deferred`]. Reading the binlog ahead from `from` to
/// its end costs as much as the replay itself, and is only needed by rows
/// events without column names (`binlog_row_metadata` not FULL), which call
/// for it when they come. Rows with names need the definition only for what
/// the binlog lacks (MariaDB's JSON), as the checked history would give
/// them. DDLs met meanwhile are not applied (the check reads them).
///
/// The live run checks at start instead: what the check finds (the
/// definition valid at its start) is saved, and a later start from its
/// checkpoint could not find it again once a DDL is behind it.
fn defer_check(h: &mut SchemaHistory, from: &HistPos, tables: &[TableKey], snap: &Snapshot) {
    let mut placed = Vec::new();
    for key in tables {
        if h.def_at(&key.0, &key.1, from).is_none() {
            h.load(
                &key.0,
                &key.1,
                from.clone(),
                definition_of(snap.defs.get(key)),
            );
            placed.push(key.clone());
        }
    }
    h.unchecked = Some(Unchecked {
        from: from.clone(),
        placed,
    });
    tracing::debug!(from = %from, "schema history: the check against information_schema waits for a rows event without column names");
}

/// The start-up check [`defer_check`] left: reads the binlog ahead from
/// where it was deferred and fixes the history, then saves what changed.
/// Called by the reader when a rows event without column names needs it.
pub(crate) async fn check_deferred(
    info: &ServerInfo,
    opts: &ReaderOptions,
    h: &mut SchemaHistory,
) -> Result<(), SourceError> {
    let Some(Unchecked { from, placed }) = h.unchecked.take() else {
        return Ok(());
    };
    for (db, t) in &placed {
        h.unload(db, t, &from);
    }
    let mut conn = connect::connect(&opts.db).await?;
    let tables = opts.tables.clone();
    verify(&mut conn, info, opts, h, &from, &tables, true).await?;
    let _ = conn.disconnect().await;
    persist(opts, info, h.take_changed()).await
}

fn definition_of(s: Option<&Option<TableSchema>>) -> Definition {
    match s.cloned().flatten() {
        Some(schema) => Definition::Known { schema },
        None => Definition::Absent,
    }
}

/// After the DDL at `at` changed `changed`: checks the followed ones
/// against `information_schema` (see the module docs), then saves every
/// new version. Call before sending on what the DDL's event produced.
pub(crate) async fn after_ddl(
    info: &ServerInfo,
    opts: &ReaderOptions,
    h: &mut SchemaHistory,
    at: &HistPos,
    changed: Vec<(TableKey, Version)>,
) -> Result<(), SourceError> {
    let followed: Vec<TableKey> = changed
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| opts.tables.contains(k))
        .fold(Vec::new(), |mut v, k| {
            if !v.contains(&k) {
                v.push(k);
            }
            v
        });
    let mut all = changed;
    if !followed.is_empty() {
        let mut conn = connect::connect(&opts.db).await?;
        verify(&mut conn, info, opts, h, at, &followed, false).await?;
        let _ = conn.disconnect().await;
    }
    all.extend(h.take_changed());
    let tables: Vec<String> = all.iter().map(|((d, t), _)| format!("{d}.{t}")).collect();
    persist(opts, info, all).await?;
    tracing::debug!(position = %at, tables = %tables.join(", "), "schema history saved");
    Ok(())
}

/// Checks the definitions of `tables` from `from` on against
/// `information_schema`, reading the binlog ahead when it was written to
/// since; fixes the history where it is wrong or unknown.
async fn verify(
    conn: &mut Conn,
    info: &ServerInfo,
    opts: &ReaderOptions,
    h: &mut SchemaHistory,
    from: &HistPos,
    tables: &[TableKey],
    at_start: bool,
) -> Result<(), SourceError> {
    for attempt in 0..3 {
        let snap = snapshot(conn, info, tables).await?;
        if *from >= snap.e1 && snap.e1 == snap.e2 {
            // Nothing written since `from`: information_schema's definition is the one there.
            for key in tables {
                let now = definition_of(snap.defs.get(key));
                let here = h.def_at(&key.0, &key.1, from).cloned();
                let diff = here.as_ref().map(|d| difference(d, now.schema()));
                match (here, diff) {
                    (Some(_), Some(None)) => continue,
                    (Some(Definition::Unknown { .. }), _) => {
                        tracing::info!(table = %format!("{}.{}", key.0, key.1), position = %from, "schema history: the definition after the DDL is information_schema's (nothing was written since)")
                    }
                    (Some(_), Some(Some(d))) => {
                        tracing::warn!(table = %format!("{}.{}", key.0, key.1), position = %from, difference = %d, "schema history: the table's definition changed without a DDL in the binlog (or pikachu derived it wrongly); using information_schema's from here on (nothing was written since)")
                    }
                    _ => {}
                }
                h.set(&key.0, &key.1, from.clone(), now);
            }
            return Ok(());
        }
        let ahead = look_ahead(info, opts, h, from, &snap.e2).await?;
        // Where each table last changed in (from, E2]: DDLs found now, or
        // applied before (a restart from before them).
        let last_change = |key: &TableKey| {
            ahead
                .versions(&key.0, &key.1)
                .iter()
                .map(|v| v.from.clone())
                .filter(|p| p > from && *p <= snap.e2)
                .max()
        };
        let racing = tables
            .iter()
            .any(|k| last_change(k).is_some_and(|p| p > snap.e1));
        if racing && attempt < 2 {
            continue; // a DDL between the two end readings: read again
        }
        merge(h, &ahead, from, &snap.e2);
        for key in tables {
            settle(h, key, from, &snap, last_change(key), at_start);
        }
        return Ok(());
    }
    Ok(())
}

/// Copies the versions the look-ahead found in (`from`, `until`] into `h`.
fn merge(h: &mut SchemaHistory, ahead: &SchemaHistory, from: &HistPos, until: &HistPos) {
    let keys: Vec<TableKey> = ahead.tables().cloned().collect();
    for (db, t) in keys {
        for v in ahead.versions(&db, &t) {
            if v.from > *from && v.from <= *until {
                h.set(&db, &t, v.from.clone(), v.def.clone());
            }
        }
    }
}

/// Compares the derived definition of `key` at the snapshot with
/// information_schema's and fixes the history (see the module docs).
fn settle(
    h: &mut SchemaHistory,
    key: &TableKey,
    from: &HistPos,
    snap: &Snapshot,
    last_ddl: Option<HistPos>,
    at_start: bool,
) {
    let now = definition_of(snap.defs.get(key));
    let derived = h
        .def_at(&key.0, &key.1, &snap.e2)
        .cloned()
        .unwrap_or_else(|| Definition::Unknown {
            reason: format!(
                "pikachu has no definition of `{}`.`{}` before {}",
                key.0, key.1, from
            ),
        });
    let Some(diff) = difference(&derived, now.schema()) else {
        return;
    };
    let (db, t) = (&key.0, &key.1);
    if let Definition::Unknown { .. } = derived {
        // The last DDL made it what information_schema shows now (nothing
        // of the table changed since); before it stays unknown.
        h.set(db, t, last_ddl.unwrap_or_else(|| from.clone()), now);
        return;
    }
    let since = match &last_ddl {
        Some(p) => format!("through its DDLs between {from} and {p}"),
        None => format!("no DDL of it in the binlog since {from}"),
    };
    let had = if at_start {
        " (the one it had when it stopped)"
    } else {
        ""
    };
    let reason = format!(
        "its definition in information_schema differs from the one pikachu derived from the binlog{had}, {since}: {diff}; a DDL was run without being written to the binlog (sql_log_bin=0), or pikachu applied one wrongly"
    );
    tracing::error!(table = %format!("{db}.{t}"), position = %from, "schema history: {reason}");
    let suspect: Vec<HistPos> = h
        .versions(db, t)
        .iter()
        .map(|v| v.from.clone())
        .filter(|p| p >= from && last_ddl.as_ref().is_none_or(|l| p < l))
        .collect();
    for p in suspect {
        h.set(
            db,
            t,
            p,
            Definition::Unknown {
                reason: reason.clone(),
            },
        );
    }
    if h.def_at(db, t, from).and_then(Definition::schema).is_some() {
        h.set(
            db,
            t,
            from.clone(),
            Definition::Unknown {
                reason: reason.clone(),
            },
        );
    }
    h.set(db, t, last_ddl.unwrap_or_else(|| snap.e2.clone()), now);
}

/// Reads the binlog from `from` to `until` (DDL statements only) with a
/// copy of `h`: the copy, with the versions found added.
async fn look_ahead(
    info: &ServerInfo,
    opts: &ReaderOptions,
    h: &SchemaHistory,
    from: &HistPos,
    until: &HistPos,
) -> Result<SchemaHistory, SourceError> {
    let mut conn = connect::connect(&opts.db).await?;
    if info.flavour == Flavour::MariaDb {
        conn.query_drop("SET @mariadb_slave_capability = 4")
            .await
            .map_err(|e| SourceError::query("SET @mariadb_slave_capability = 4", e))?;
    }
    tracing::info!(from = %from, to = %until, "reading the binlog ahead for the DDLs of the followed tables");
    // server_id 0 (as mysqlbinlog): never a real replica's id, so no replica
    // is disconnected; non-blocking: the server ends at the binlog's end.
    let request = BinlogStreamRequest::new(0)
        .with_filename(from.file.as_bytes())
        .with_pos(from.pos)
        .with_non_blocking();
    let mut stream = conn
        .get_binlog_stream(request)
        .await
        .map_err(|e| SourceError::Stream(format!("reading the binlog ahead from {from}: {e}")))?;
    let mut decoder = Decoder::new(
        DecoderOptions {
            decode: opts.decode,
            filter: opts.filter.clone(),
            schema_lookup: true,
        },
        &from.file,
    );
    decoder.set_ddl_only();
    decoder.history = h.clone();
    decoder.history.take_changed();
    decoder.history.unchecked = None;
    let mut out = Vec::new();
    let wait = (opts.heartbeat * 3).max(Duration::from_secs(5));
    loop {
        let event = match tokio::time::timeout(wait, stream.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(SourceError::Stream(format!(
                    "reading the binlog ahead from {from}: {e}"
                )))
            }
            Ok(Some(Ok(ev))) => ev,
        };
        decoder.handle(&event, &mut out)?;
        out.clear();
        let at = HistPos::new(decoder.file(), decoder.event_pos(&event));
        if event.header().log_pos() != 0 && at >= *until {
            break;
        }
    }
    let _ = stream.close().await;
    decoder.history.take_changed();
    Ok(decoder.history)
}
