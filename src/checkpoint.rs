//! The settled position's lifecycle: at start, load the checkpoint, check it
//! belongs to the server we are connected to and that the server still has
//! its binlog, and decide where to start; while running, save the latest
//! settled transaction end at most every `checkpoint.interval`; at shutdown,
//! save the final one. Also the `pikachu position` command.
//!
//! The position only ever moves to the end of a transaction all of whose
//! changes (and all earlier ones) were delivered or dead-lettered, so a
//! crash at any moment resumes without losing anything; what was in flight
//! is delivered again (at least once; ids let receivers de-duplicate).

use std::sync::{Arc, Mutex};

use mysql_async::Conn;

use crate::config::{Config, StartPosition};
use crate::source::connect::{self, Flavour, ServerInfo};
use crate::source::position::{self, FilePos, StartAt};
use crate::source::reader::Commit;
use crate::source::SourceError;
use crate::store::{Checkpoint, Store};

/// Why a checkpoint cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}")]
    Store(String),
    #[error("{0}")]
    Mismatch(String),
}

fn identity(info: &ServerInfo) -> String {
    match &info.server_uuid {
        Some(u) => format!(
            "{} server_id {} (uuid {u})",
            info.flavour.as_str(),
            info.server_id
        ),
        None => format!("{} server_id {}", info.flavour.as_str(), info.server_id),
    }
}

/// The server's binary logs, oldest first.
async fn binary_logs(conn: &mut Conn) -> Result<Vec<String>, SourceError> {
    Ok(connect::query_rows(conn, "SHOW BINARY LOGS")
        .await?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect())
}

/// Parses a MariaDB GTID state `d-s-n,…` into (domain, server_id, seq).
fn maria_gtids(state: &str) -> Vec<(u32, u32, u64)> {
    state
        .split(',')
        .filter_map(|p| {
            let mut it = p.trim().splitn(3, '-');
            let d = it.next()?.parse().ok()?;
            let s = it.next()?.parse().ok()?;
            let n = it.next()?.parse().ok()?;
            Some((d, s, n))
        })
        .collect()
}

/// Where to start reading, and what it is based on (for the log).
#[derive(Debug, Clone)]
pub struct Start {
    pub at: StartAt,
    pub reason: String,
}

/// Decides where to start: from the checkpoint when there is one (after
/// checking it belongs to this server, or to its replication topology by
/// GTID, and that the server still has that binlog), else from `start` in
/// the config.
pub async fn decide_start(
    cfg: &Config,
    conn: &mut Conn,
    info: &ServerInfo,
    saved: Option<Checkpoint>,
) -> Result<Start, CheckpointError> {
    let Some(cp) = saved else {
        let at = position::resolve(conn, info, &cfg.start).await?;
        let what = match &cfg.start {
            StartPosition::Latest => "latest".to_string(),
            StartPosition::Earliest => "earliest".to_string(),
            StartPosition::FilePos { .. } => "the configured position".to_string(),
            StartPosition::Gtid(_) => "the configured GTID".to_string(),
        };
        return Ok(Start {
            reason: format!("no checkpoint yet: starting from `start: {what}` = {at}"),
            at,
        });
    };
    let here = identity(info);
    let there = match &cp.server_uuid {
        Some(u) => format!("{} server_id {} (uuid {u})", cp.flavour, cp.server_id),
        None => format!("{} server_id {}", cp.flavour, cp.server_id),
    };
    let addr = connect::addr(&cfg.database);
    let refuse = |why: String| {
        CheckpointError::Mismatch(format!(
            "the checkpoint in {} ({}:{}) belongs to {there}, but {addr} is {here}: {why}. \
             If this is intended, forget the checkpoint with `pikachu position reset -config …` \
             (pikachu then starts from `start` in the config) or set one with `pikachu position set …`",
            cfg.state_dir.display(),
            cp.file,
            cp.pos
        ))
    };
    if cp.flavour != info.flavour.as_str() {
        return Err(refuse("a different kind of server".into()));
    }
    let same_server = match (&cp.server_uuid, &info.server_uuid) {
        (Some(a), Some(b)) => a == b,
        _ => cp.server_id == info.server_id,
    };
    if same_server && cp.file.is_empty() {
        // Set by `pikachu position set gtid:…`.
        if let Some(state) = &cp.gtid_state {
            return Ok(Start {
                at: StartAt::Gtid(state.clone()),
                reason: format!("resuming from the saved GTID position {state}"),
            });
        }
    }
    if same_server {
        let logs = binary_logs(conn).await?;
        if !logs.iter().any(|f| f == &cp.file) {
            return Err(CheckpointError::Source(SourceError::Purged {
                needed: format!("{}:{}", cp.file, cp.pos),
                oldest: logs
                    .first()
                    .map(|f| format!("{f}:4"))
                    .unwrap_or_else(|| "none".into()),
                message: "the binlog file is not in SHOW BINARY LOGS".into(),
            }));
        }
        return Ok(Start {
            at: StartAt::FilePos(FilePos {
                file: cp.file.clone(),
                pos: cp.pos,
            }),
            reason: format!(
                "resuming from the checkpoint {}:{} (every change before it is settled)",
                cp.file, cp.pos
            ),
        });
    }
    // Another server: only a MariaDB server of the same replication topology,
    // by GTID, and only if it has everything up to our position.
    match (info.flavour, &cp.gtid_state) {
        (Flavour::MariaDb, Some(state)) => {
            let have = connect::query_row(conn, "SELECT @@gtid_binlog_state")
                .await?
                .and_then(|r| r.into_iter().next().flatten())
                .unwrap_or_default();
            // @@gtid_binlog_state has the last GTID of every (domain, server)
            // pair the server's binlog holds: a server of the same topology
            // has ours, at or past our sequence number.
            let have = maria_gtids(&have);
            for (domain, server, seq) in maria_gtids(state) {
                match have.iter().find(|(d, s, _)| *d == domain && *s == server) {
                    Some((_, _, n)) if *n >= seq => {}
                    Some((_, _, n)) => {
                        return Err(refuse(format!(
                            "its binlog has GTID {domain}-{server}-{n}, behind our position {domain}-{server}-{seq}"
                        )))
                    }
                    None => {
                        return Err(refuse(format!(
                            "its binlog has no GTIDs of domain {domain} from server {server}, so it is not a server of the same replication topology"
                        )))
                    }
                }
            }
            Ok(Start {
                at: StartAt::Gtid(state.clone()),
                reason: format!(
                    "resuming from the checkpoint's GTID position {state} on another server of the topology ({here})"
                ),
            })
        }
        _ => Err(refuse("a different server".into())),
    }
}

/// The checkpoint for a settled commit on `info`'s server.
pub fn from_commit(c: &Commit, info: &ServerInfo) -> Checkpoint {
    Checkpoint {
        file: c.file.to_string(),
        pos: c.pos,
        gtid: c.gtid.as_deref().map(str::to_string),
        gtid_state: c.gtid_state.as_deref().map(str::to_string),
        flavour: info.flavour.as_str().to_string(),
        server_id: info.server_id,
        server_uuid: info.server_uuid.clone(),
        updated_at: 0,
    }
}

/// Saves checkpoints off the async threads; remembers the last one saved so
/// an unchanged position is not written again.
pub struct Saver {
    store: Arc<Mutex<Store>>,
    info: ServerInfo,
    last: Option<(String, u64)>,
}

impl Saver {
    pub fn new(store: Arc<Mutex<Store>>, info: ServerInfo) -> Self {
        Saver {
            store,
            info,
            last: None,
        }
    }

    /// Saves `c` (durably) unless it is the position saved last.
    pub async fn save(&mut self, c: &Commit) -> Result<bool, CheckpointError> {
        let key = (c.file.to_string(), c.pos);
        if self.last.as_ref() == Some(&key) {
            return Ok(false);
        }
        let cp = from_commit(c, &self.info);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = store
                .lock()
                .map_err(|_| CheckpointError::Store("the state store lock is poisoned".into()))?;
            s.save_checkpoint(&cp)
                .map_err(|e| CheckpointError::Store(e.to_string()))
        })
        .await
        .map_err(|e| CheckpointError::Store(format!("checkpoint writer stopped: {e}")))??;
        self.last = Some(key);
        Ok(true)
    }
}

/// `pikachu position show`: the saved position, one line.
pub fn show(cfg: &Config) -> Result<String, String> {
    let Some(store) = Store::open_existing(&cfg.state_dir).map_err(|e| e.to_string())? else {
        return Ok(format!(
            "no checkpoint (no state in {}): the next run starts from `start` in the config",
            cfg.state_dir.display()
        ));
    };
    Ok(match store.checkpoint().map_err(|e| e.to_string())? {
        None => "no checkpoint: the next run starts from `start` in the config".to_string(),
        Some(c) => {
            let at = if c.file.is_empty() {
                format!("GTID {}", c.gtid_state.as_deref().unwrap_or("?"))
            } else {
                format!("{}:{}", c.file, c.pos)
            };
            format!(
                "{at}  gtid={}  gtid_state={}  server={} server_id={}{}  saved={}",
                c.gtid.as_deref().unwrap_or("-"),
                c.gtid_state.as_deref().unwrap_or("-"),
                c.flavour,
                c.server_id,
                c.server_uuid
                    .as_deref()
                    .map(|u| format!(" uuid={u}"))
                    .unwrap_or_default(),
                crate::event::time::rfc3339(c.updated_at / 1000)
            )
        }
    })
}

/// `pikachu position reset`: forgets the saved position.
pub fn reset(cfg: &Config) -> Result<bool, String> {
    match Store::open_existing(&cfg.state_dir).map_err(|e| e.to_string())? {
        None => Ok(false),
        Some(mut s) => {
            // The schema history is tied to the positions read: start afresh.
            s.clear_schema_history().map_err(|e| e.to_string())?;
            s.clear_checkpoint().map_err(|e| e.to_string())
        }
    }
}

/// `pikachu position set SPEC`: saves a position for the configured server.
/// SPEC is `latest`, `earliest`, `FILE:POS` or `gtid:SET`.
pub async fn set(cfg: &Config, spec: &str) -> Result<String, CheckpointError> {
    let mut conn = connect::connect(&cfg.database).await?;
    let info = connect::server_info(&mut conn).await?;
    let (file, pos, gtid_state) = if let Some(g) = spec.strip_prefix("gtid:") {
        if info.flavour != Flavour::MariaDb {
            return Err(CheckpointError::Mismatch(
                "a GTID position can only be set for MariaDB for now; use FILE:POS".into(),
            ));
        }
        (String::new(), 0, Some(g.to_string()))
    } else {
        let p = match spec {
            "latest" => position::latest(&mut conn, &info).await?,
            "earliest" => position::earliest(&mut conn).await?,
            other => FilePos::parse(other).ok_or_else(|| {
                CheckpointError::Mismatch(format!(
                    "`{other}` is not a position: use latest, earliest, FILE:POS (e.g. mysql-bin.000003:4) or gtid:0-1-100"
                ))
            })?,
        };
        let logs = binary_logs(&mut conn).await?;
        if !logs.contains(&p.file) {
            return Err(CheckpointError::Mismatch(format!(
                "the server has no binlog file `{}` (it has {})",
                p.file,
                logs.join(", ")
            )));
        }
        let state = if info.flavour == Flavour::MariaDb {
            use mysql_async::prelude::Queryable;
            conn.exec_first::<Option<String>, _, _>(
                "SELECT BINLOG_GTID_POS(?, ?)",
                (p.file.as_str(), p.pos),
            )
            .await
            .ok()
            .flatten()
            .flatten()
        } else {
            None
        };
        (p.file, p.pos, state)
    };
    let cp = Checkpoint {
        file,
        pos,
        gtid: None,
        gtid_state,
        flavour: info.flavour.as_str().to_string(),
        server_id: info.server_id,
        server_uuid: info.server_uuid.clone(),
        updated_at: 0,
    };
    let mut store =
        Store::open(&cfg.state_dir).map_err(|e| CheckpointError::Store(e.to_string()))?;
    store
        .save_checkpoint(&cp)
        .map_err(|e| CheckpointError::Store(e.to_string()))?;
    // The schema history is tied to the positions read: start afresh there.
    store
        .clear_schema_history()
        .map_err(|e| CheckpointError::Store(e.to_string()))?;
    show(cfg).map_err(CheckpointError::Store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maria_state_parsing() {
        assert_eq!(maria_gtids("0-1-100,7-2-5"), vec![(0, 1, 100), (7, 2, 5)]);
        assert_eq!(maria_gtids(""), vec![]);
        assert_eq!(maria_gtids("x,0-1-2"), vec![(0, 1, 2)]);
    }
}
