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

mod tracker;

pub(crate) use tracker::CommitTracker;
pub use tracker::Settled;

use std::sync::{Arc, Mutex};

use mysql_async::Conn;

use crate::config::{Config, StartPosition};
use crate::event::Commit;
use crate::source::binlogs::{self, FileIdentity, History, Standing};
use crate::source::connect::{self, Flavour, ServerInfo};
use crate::source::position::{self, FilePos, StartAt};
use crate::source::SourceError;
use crate::store::{Checkpoint, Store, StoreError};

/// Why a checkpoint cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The state store failed (the error says what was being done).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state store's lock was poisoned by a panic elsewhere.
    #[error(
        "the state store lock is poisoned (a thread panicked while holding it); restart pikachu"
    )]
    Poisoned,
    /// The blocking task that writes the checkpoint did not finish.
    #[error("the checkpoint writer stopped: {0}")]
    Writer(#[source] tokio::task::JoinError),
    /// The request does not fit the server or the saved state (the message
    /// says what and what to do).
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
    /// The binlog history marker, for change ids.
    pub history: History,
    /// The start file as the position was saved in it, for the reader's
    /// check that the server's file is still that one.
    pub expect_file: Option<FileIdentity>,
    /// A checkpoint to save before the stream opens: on a first start the
    /// resolved start position (so a crash in the first seconds resumes
    /// there, not at a new `latest`), or an older checkpoint completed
    /// with its history marker.
    pub save: Option<Checkpoint>,
}

/// Decides where to start: from the checkpoint when there is one (after
/// checking it belongs to this server, or to its replication topology by
/// GTID, and that the server still has that binlog, and the same one),
/// else from `start` in the config.
pub(crate) async fn decide_start(
    cfg: &Config,
    conn: &mut Conn,
    info: &ServerInfo,
    saved: Option<Checkpoint>,
) -> Result<Start, CheckpointError> {
    let Some(cp) = saved else {
        return first_start(cfg, conn, info).await;
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
        // Set by `pikachu position set gtid:…` or a first start at `start: {gtid: …}`.
        if let Some(state) = &cp.gtid_state {
            let (history, save) = history_of(cfg, conn, &cp).await?;
            return Ok(Start {
                at: StartAt::Gtid(state.clone()),
                reason: format!("resuming from the saved GTID position {state}"),
                history,
                expect_file: None,
                save,
            });
        }
    }
    if same_server {
        return resume_same_server(cfg, conn, cp).await;
    }
    // Another server: only a MariaDB server of the same replication topology,
    // by GTID, and only if it has everything up to our position.
    match (info.flavour, &cp.gtid_state) {
        (Flavour::MariaDb, Some(state)) => {
            let have = binlogs::gtid_binlog_state(conn).await?;
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
            // The history marker travels with the checkpoint: the same
            // changes keep their ids on the new server.
            let (history, save) = history_of(cfg, conn, &cp).await?;
            Ok(Start {
                at: StartAt::Gtid(state.clone()),
                reason: format!(
                    "resuming from the checkpoint's GTID position {state} on another server of the topology ({here})"
                ),
                history,
                expect_file: None,
                save,
            })
        }
        _ => Err(refuse("a different server".into())),
    }
}

/// No checkpoint yet: resolves `start` from the config and returns it with
/// the checkpoint to save before the stream opens.
async fn first_start(
    cfg: &Config,
    conn: &mut Conn,
    info: &ServerInfo,
) -> Result<Start, CheckpointError> {
    let at = position::resolve(conn, info, &cfg.start).await?;
    let what = match &cfg.start {
        StartPosition::Latest => "latest".to_string(),
        StartPosition::Earliest => "earliest".to_string(),
        StartPosition::FilePos { .. } => "the configured position".to_string(),
        StartPosition::Gtid(_) => "the configured GTID".to_string(),
    };
    let files = binlogs::list(conn).await?;
    let history = binlogs::current_history(&cfg.database, &files).await?;
    let (file, pos, gtid_state, file_created) = match &at {
        StartAt::FilePos(p) => {
            let created = if files.iter().any(|f| f.name == p.file) {
                Some(binlogs::first_event_time(&cfg.database, &p.file).await?)
            } else {
                None
            };
            let state = gtid_pos(conn, info, p).await;
            (p.file.clone(), p.pos, state, created)
        }
        StartAt::Gtid(g) => (String::new(), 0, Some(g.clone()), None),
    };
    let save = Checkpoint {
        file,
        pos,
        gtid: None,
        gtid_state,
        flavour: info.flavour.as_str().to_string(),
        server_id: info.server_id,
        server_uuid: info.server_uuid.clone(),
        history: Some(history.0),
        file_created,
        updated_at: 0,
    };
    Ok(Start {
        reason: format!(
            "no checkpoint yet: starting from `start: {what}` = {at} (saved as the checkpoint before reading)"
        ),
        expect_file: file_created.map(|created| FileIdentity {
            file: save.file.clone(),
            created,
        }),
        at,
        history,
        save: Some(save),
    })
}

/// A checkpoint of the server we are connected to: resumes at its file
/// position if the server still has that file, the same one.
async fn resume_same_server(
    cfg: &Config,
    conn: &mut Conn,
    cp: Checkpoint,
) -> Result<Start, CheckpointError> {
    let files = binlogs::list(conn).await?;
    let created_now = if files.iter().any(|f| f.name == cp.file) {
        Some(binlogs::first_event_time(&cfg.database, &cp.file).await?)
    } else {
        None
    };
    let needed = format!("{}:{}", cp.file, cp.pos);
    match binlogs::standing(&cp.file, cp.pos, cp.file_created, &files, created_now) {
        Standing::Present => {}
        Standing::Purged { oldest } => {
            return Err(CheckpointError::Source(SourceError::Purged {
                needed,
                oldest,
                message: "the binlog file is not in SHOW BINARY LOGS".into(),
            }))
        }
        Standing::Reset { why } => {
            return Err(CheckpointError::Source(SourceError::HistoryChanged {
                needed,
                why,
            }))
        }
    }
    let (history, mut save) = history_of(cfg, conn, &cp).await?;
    if cp.file_created.is_none() && created_now.is_some() {
        // A checkpoint from before pikachu kept the file's identity.
        let mut c = save.take().unwrap_or_else(|| cp.clone());
        c.file_created = created_now;
        save = Some(c);
    }
    Ok(Start {
        at: StartAt::FilePos(FilePos {
            file: cp.file.clone(),
            pos: cp.pos,
        }),
        reason: format!(
            "resuming from the checkpoint {}:{} (every change before it is settled)",
            cp.file, cp.pos
        ),
        history,
        expect_file: cp.file_created.or(created_now).map(|created| FileIdentity {
            file: cp.file.clone(),
            created,
        }),
        save,
    })
}

/// The checkpoint's history marker; for a checkpoint from before pikachu
/// kept one, the server's current one, with the checkpoint to save with it.
async fn history_of(
    cfg: &Config,
    conn: &mut Conn,
    cp: &Checkpoint,
) -> Result<(History, Option<Checkpoint>), CheckpointError> {
    if let Some(h) = cp.history {
        return Ok((History(h), None));
    }
    let files = binlogs::list(conn).await?;
    let h = binlogs::current_history(&cfg.database, &files).await?;
    let mut c = cp.clone();
    c.history = Some(h.0);
    Ok((h, Some(c)))
}

/// MariaDB: the GTID state at `p` (`BINLOG_GTID_POS`), for resuming on
/// another server of the topology; `None` elsewhere or when unknown.
async fn gtid_pos(conn: &mut Conn, info: &ServerInfo, p: &FilePos) -> Option<String> {
    if info.flavour != Flavour::MariaDb {
        return None;
    }
    binlogs::gtid_pos(conn, &p.file, p.pos).await
}

/// The checkpoint for a settled commit on `info`'s server, in `history`.
pub(crate) fn from_commit(c: &Commit, info: &ServerInfo, history: History) -> Checkpoint {
    Checkpoint {
        file: c.file.to_string(),
        pos: c.pos,
        gtid: c.gtid.as_deref().map(str::to_string),
        gtid_state: c.gtid_state.as_deref().map(str::to_string),
        flavour: info.flavour.as_str().to_string(),
        server_id: info.server_id,
        server_uuid: info.server_uuid.clone(),
        history: Some(history.0),
        file_created: (c.file_created != 0).then_some(c.file_created),
        updated_at: 0,
    }
}

/// Saves checkpoints off the async threads; remembers the last one saved so
/// an unchanged position is not written again.
pub(crate) struct Saver {
    store: Arc<Mutex<Store>>,
    info: ServerInfo,
    history: History,
    last: Option<(String, u64)>,
}

impl Saver {
    pub fn new(store: Arc<Mutex<Store>>, info: ServerInfo, history: History) -> Self {
        Saver {
            store,
            info,
            history,
            last: None,
        }
    }

    /// Saves `c` (durably) unless it is the position saved last, deleting
    /// in the same store transaction the held XA transactions `settled_xa`
    /// whose outcome `c` covers.
    pub(crate) async fn save_settling(
        &mut self,
        c: &Commit,
        settled_xa: &[i64],
    ) -> Result<bool, CheckpointError> {
        let key = (c.file.to_string(), c.pos);
        if self.last.as_ref() == Some(&key) && settled_xa.is_empty() {
            return Ok(false);
        }
        let cp = from_commit(c, &self.info, self.history);
        let store = self.store.clone();
        let xa = settled_xa.to_vec();
        tokio::task::spawn_blocking(move || {
            let mut s = store.lock().map_err(|_| CheckpointError::Poisoned)?;
            s.save_checkpoint_settling_xa(&cp, &xa)
                .map_err(CheckpointError::Store)
        })
        .await
        .map_err(CheckpointError::Writer)??;
        self.last = Some(key);
        Ok(true)
    }
}

/// `pikachu position show`: the saved position, one line.
pub fn show(cfg: &Config) -> Result<String, CheckpointError> {
    let Some(store) = Store::open_read_only(&cfg.state_dir)? else {
        return Ok(format!(
            "no checkpoint (no state in {}): the next run starts from `start` in the config",
            cfg.state_dir.display()
        ));
    };
    Ok(match store.checkpoint()? {
        None => "no checkpoint: the next run starts from `start` in the config".to_string(),
        Some(c) => {
            let at = if c.file.is_empty() {
                format!("GTID {}", c.gtid_state.as_deref().unwrap_or("?"))
            } else {
                format!("{}:{}", c.file, c.pos)
            };
            format!(
                "{at}  gtid={}  gtid_state={}  server={} server_id={}{}  history={}  saved={}",
                c.gtid.as_deref().unwrap_or("-"),
                c.gtid_state.as_deref().unwrap_or("-"),
                c.flavour,
                c.server_id,
                c.server_uuid
                    .as_deref()
                    .map(|u| format!(" uuid={u}"))
                    .unwrap_or_default(),
                c.history.map_or_else(|| "-".to_string(), |h| h.to_string()),
                crate::event::time::rfc3339(c.updated_at / 1000)
            )
        }
    })
}

/// `pikachu position reset`: forgets the saved position.
pub fn reset(cfg: &Config) -> Result<bool, CheckpointError> {
    match Store::open_existing(&cfg.state_dir)? {
        None => Ok(false),
        Some(mut s) => {
            // The schema history is tied to the positions read: start afresh.
            s.clear_schema_history()?;
            Ok(s.clear_checkpoint()?)
        }
    }
}

/// `pikachu position set SPEC`: saves a position for the configured server.
/// SPEC is `latest`, `earliest`, `FILE:POS` or `gtid:SET`.
pub async fn set(cfg: &Config, spec: &str) -> Result<String, CheckpointError> {
    let mut conn = connect::connect(&cfg.database).await?;
    let info = connect::server_info(&mut conn).await?;
    let files = binlogs::list(&mut conn).await?;
    let (file, pos, gtid_state, file_created) = if let Some(g) = spec.strip_prefix("gtid:") {
        if info.flavour != Flavour::MariaDb {
            return Err(CheckpointError::Mismatch(
                "a GTID position can only be set for MariaDB for now; use FILE:POS".into(),
            ));
        }
        (String::new(), 0, Some(g.to_string()), None)
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
        if !files.iter().any(|f| f.name == p.file) {
            let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
            return Err(CheckpointError::Mismatch(format!(
                "the server has no binlog file `{}` (it has {})",
                p.file,
                names.join(", ")
            )));
        }
        let created = binlogs::first_event_time(&cfg.database, &p.file).await?;
        let state = gtid_pos(&mut conn, &info, &p).await;
        (p.file, p.pos, state, Some(created))
    };
    let mut store = Store::open(&cfg.state_dir)?;
    let old = store.checkpoint()?;
    let current = binlogs::current_history(&cfg.database, &files).await?;
    let same = match &old {
        Some(o) => same_history(cfg, &info, o, &files).await?,
        None => false,
    };
    let cp = Checkpoint {
        file,
        pos,
        gtid: None,
        gtid_state,
        flavour: info.flavour.as_str().to_string(),
        server_id: info.server_id,
        server_uuid: info.server_uuid.clone(),
        history: Some(next_history(old.and_then(|o| o.history), same, current).0),
        file_created,
        updated_at: 0,
    };
    store.save_checkpoint(&cp)?;
    // The schema history is tied to the positions read: start afresh there.
    store.clear_schema_history()?;
    show(cfg)
}

/// Whether `old` was taken on this server in the binlog history it has now
/// (not before a reset or on a recreated server).
async fn same_history(
    cfg: &Config,
    info: &ServerInfo,
    old: &Checkpoint,
    files: &[binlogs::BinlogFile],
) -> Result<bool, CheckpointError> {
    let same_server = old.flavour == info.flavour.as_str()
        && match (&old.server_uuid, &info.server_uuid) {
            (Some(a), Some(b)) => a == b,
            _ => old.server_id == info.server_id,
        };
    if !same_server || old.file.is_empty() {
        return Ok(same_server);
    }
    let created_now = if files.iter().any(|f| f.name == old.file) {
        Some(binlogs::first_event_time(&cfg.database, &old.file).await?)
    } else {
        None
    };
    Ok(!matches!(
        binlogs::standing(&old.file, old.pos, old.file_created, files, created_now),
        Standing::Reset { .. }
    ))
}

/// The history marker of a position set by hand: the old checkpoint's when
/// it is of the same history, else the server's current one — but never
/// the old one again (a reset within the same second as the old history's
/// start would otherwise repeat it, and with it change ids).
fn next_history(old: Option<u32>, same_history: bool, current: History) -> History {
    match old {
        Some(h) if same_history => History(h),
        Some(h) if h == current.0 => History(h.wrapping_add(1)),
        _ => current,
    }
}

/// The history marker `pikachu replay` renders ids with: the checkpoint's
/// when it was taken in the server's current history (so a replay gives
/// the ids `run` gave), else the server's current one.
pub(crate) async fn history_for_replay(
    cfg: &Config,
    conn: &mut Conn,
    info: &ServerInfo,
) -> Result<History, CheckpointError> {
    let files = binlogs::list(conn).await?;
    let saved = Store::open_existing(&cfg.state_dir)
        .ok()
        .flatten()
        .and_then(|s| s.checkpoint().ok().flatten());
    if let Some(cp) = saved {
        if let Some(h) = cp.history {
            if same_history(cfg, info, &cp, &files).await? {
                return Ok(History(h));
            }
        }
    }
    Ok(binlogs::current_history(&cfg.database, &files).await?)
}

/// `pikachu check`: whether the saved checkpoint can be resumed from on the
/// server now. `None` when there is no checkpoint; else whether it can,
/// and one line for the report (`ok   …` / `FAIL …`).
pub async fn check(cfg: &Config) -> Option<(bool, String)> {
    let store = match Store::open_existing(&cfg.state_dir) {
        Ok(Some(s)) => s,
        Ok(None) => return None,
        Err(e) => return Some((false, format!("FAIL state store: {e}"))),
    };
    let cp = match store.checkpoint() {
        Ok(Some(cp)) => cp,
        Ok(None) => return None,
        Err(e) => return Some((false, format!("FAIL checkpoint: {e}"))),
    };
    drop(store);
    let result = async {
        let mut conn = connect::connect(&cfg.database).await?;
        let info = connect::server_info(&mut conn).await?;
        decide_start(cfg, &mut conn, &info, Some(cp)).await
    }
    .await;
    Some(match result {
        Ok(start) => (true, format!("ok   checkpoint: {}", start.reason)),
        Err(e) => (false, format!("FAIL checkpoint: {e}")),
    })
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

    #[test]
    fn history_of_a_position_set_by_hand() {
        let now = History(2000);
        // Same history: kept.
        assert_eq!(next_history(Some(1000), true, now), History(1000));
        // Reset: the server's new one.
        assert_eq!(next_history(Some(1000), false, now), History(2000));
        // Reset within the same second: never the old marker again.
        assert_eq!(next_history(Some(2000), false, now), History(2001));
        // No old checkpoint.
        assert_eq!(next_history(None, false, now), History(2000));
    }
}
