//! The live binlog reader: registers as a replica, streams events from a
//! start position, notices a silent server (heartbeats), looks up table
//! definitions the [`Decoder`] asks for, and sends what it decodes
//! downstream. A full channel makes the reader wait: nothing is dropped.

use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::connect::{self, Flavour, ServerInfo};
pub use super::decoder::{Commit, TableFilter};
use super::decoder::{Decoder, DecoderOptions, Output};
use super::error::SourceError;
use super::position::StartAt;
use super::schema;
use super::value::DecodeOptions;
use crate::config::DatabaseConfig;
use crate::event::Change;

/// What the reader sends downstream.
#[derive(Debug)]
pub enum SourceEvent {
    /// One row change of a wanted table.
    Change(Change),
    /// A transaction ended at this position: every change before it has been sent.
    Commit(Commit),
}

/// Settings of one reader.
#[derive(Clone)]
pub struct ReaderOptions {
    pub db: DatabaseConfig,
    pub heartbeat: Duration,
    pub decode: DecodeOptions,
    pub filter: TableFilter,
}

/// Opens the binlog stream at `start`.
async fn open_stream(
    info: &ServerInfo,
    opts: &ReaderOptions,
    start: &StartAt,
) -> Result<(mysql_async::BinlogStream, String), SourceError> {
    let mut conn = connect::connect(&opts.db).await?;
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
    let stream = conn
        .get_binlog_stream(request)
        .await
        .map_err(|e| stream_error(e, &file, pos))?;
    Ok((stream, file))
}

/// Reads the binlog from `start` until cancelled, the receiver is gone, or an error.
pub async fn run(
    info: ServerInfo,
    opts: ReaderOptions,
    start: StartAt,
    tx: mpsc::Sender<SourceEvent>,
    cancel: CancellationToken,
) -> Result<(), SourceError> {
    let (mut stream, file) = open_stream(&info, &opts, &start).await?;
    tracing::info!(start = %start, server_id = opts.db.server_id, "binlog stream opened");
    let mut decoder = Decoder::new(
        DecoderOptions {
            decode: opts.decode,
            filter: opts.filter.clone(),
            schema_lookup: true,
        },
        &file,
    );
    let mariadb = info.flavour == Flavour::MariaDb;
    let mut schema_conn: Option<Conn> = None;
    let silence = (opts.heartbeat * 3).max(Duration::from_secs(5));
    let mut out = Vec::new();
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
            Ok(Some(Err(e))) => return Err(stream_error(e, decoder.file(), 0)),
            Ok(Some(Ok(ev))) => ev,
        };
        if let Some((db, table)) = decoder.schema_needed(&event) {
            let s = load_schema(&opts.db, &mut schema_conn, mariadb, &db, &table).await?;
            decoder.schemas.insert(&db, &table, s);
        }
        decoder.handle(&event, &mut out)?;
        for o in out.drain(..) {
            let msg = match o {
                Output::Change(c) => SourceEvent::Change(c),
                Output::Commit(c) => SourceEvent::Commit(c),
            };
            if tx.send(msg).await.is_err() {
                return Ok(());
            }
        }
    }
}

async fn load_schema(
    db: &DatabaseConfig,
    conn: &mut Option<Conn>,
    mariadb: bool,
    database: &str,
    table: &str,
) -> Result<Option<schema::TableSchema>, SourceError> {
    if let Some(c) = conn.as_mut() {
        match schema::load(c, mariadb, database, table).await {
            Ok(s) => return Ok(s),
            // The connection may have timed out while idle: retry once on a new one.
            Err(e) => tracing::debug!(error = %e, "schema query failed, reconnecting"),
        }
    }
    let mut c = connect::connect(db).await?;
    let s = schema::load(&mut c, mariadb, database, table).await?;
    *conn = Some(c);
    Ok(s)
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
