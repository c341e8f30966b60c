//! The start of `pikachu run`: the preflight checks, the state store
//! (with a loud warning when its checkpoint is missing), the connection
//! and the start position, saved before the stream opens.

use std::sync::{Arc, Mutex};

use crate::checkpoint::{self, Start};
use crate::config::Config;
use crate::source::connect::{self, ServerInfo};
use crate::source::schema_sync::{HistoryStore, StoredVersion};
use crate::store::{Checkpoint, SchemaVersionRow, Store};

use super::PipelineError;

/// What the start left for the rest of the run.
pub(super) struct Started {
    /// The state store, open.
    pub store: Store,
    /// The server read from.
    pub info: ServerInfo,
    /// Where to read from, and the binlog history marker.
    pub start: Start,
}

/// Checks the server, opens the store and decides where to start.
pub(super) async fn start(config: &Config, reset_position: bool) -> Result<Started, PipelineError> {
    crate::preflight::at_start(config)
        .await
        .map_err(PipelineError::Preflight)?;
    let (mut store, saved) = open_store(config, reset_position)?;
    let mut conn = connect::connect(&config.database).await?;
    let info: ServerInfo = connect::server_info(&mut conn).await?;
    tracing::info!(flavour = info.flavour.as_str(), version = %info.version, server_id = info.server_id, "connected to {}", connect::addr(&config.database));
    let start = checkpoint::decide_start(config, &mut conn, &info, saved).await?;
    drop(conn);
    tracing::info!(position = %start.at, history = %start.history, "{}", start.reason);
    if let Some(cp) = &start.save {
        // Before the stream opens: a crash from here on resumes at this
        // position, never at a `latest` resolved again later.
        store.save_checkpoint(cp)?;
    }
    Ok(Started { store, info, start })
}

/// Opens the state store; with `--reset-position`, forgets the checkpoint
/// and the schema history; without a checkpoint, says what that means.
/// Returns the store and its checkpoint.
fn open_store(
    config: &Config,
    reset_position: bool,
) -> Result<(Store, Option<Checkpoint>), PipelineError> {
    let state_before = StateOnDisk::look(&config.state_dir);
    let mut store = Store::open(&config.state_dir)?;
    if reset_position {
        if store.clear_checkpoint()? {
            tracing::warn!(state = %store.path().display(), "checkpoint forgotten (--reset-position): starting from `start` in the config");
        }
        store.clear_schema_history()?;
    }
    let saved = store.checkpoint()?;
    if saved.is_none() && !reset_position {
        state_before.warn_if_lost(&config.state_dir, store.path());
    }
    Ok((store, saved))
}

/// What the state directory held before this start, to tell a first start
/// from one whose state was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StateOnDisk {
    /// No state directory.
    NoDir,
    /// The directory, but no database in it.
    NoDatabase,
    /// A database (its checkpoint may still be missing: `position reset`).
    Database,
}

impl StateOnDisk {
    fn look(dir: &std::path::Path) -> StateOnDisk {
        if Store::path_in(dir).exists() {
            return StateOnDisk::Database;
        }
        // The state lock (taken before this) creates the directory and its
        // lock file: a directory with nothing else is a new one.
        let other = std::fs::read_dir(dir).map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name() != crate::store::lock::LOCK_FILE)
        });
        match other {
            Ok(true) => StateOnDisk::NoDatabase,
            _ => StateOnDisk::NoDir,
        }
    }

    /// Without a checkpoint, pikachu starts from `start` in the config,
    /// which for `latest` skips everything since an earlier run stopped:
    /// say so loudly unless the checkpoint was reset on purpose.
    fn warn_if_lost(self, dir: &std::path::Path, db: &std::path::Path) {
        let consequence = "pikachu starts from `start` in the config; if it read this server before with this config, every change since it stopped is skipped. To resume where it stopped, stop now and restore the state, or set the position with `pikachu position set FILE:POS -config …`";
        match self {
            StateOnDisk::NoDir => tracing::warn!(
                state_dir = %dir.display(),
                "no state directory: this is the first start with it (it is created now), or it was deleted or moved; {consequence}"
            ),
            StateOnDisk::NoDatabase => tracing::warn!(
                state = %db.display(),
                "the state directory exists but has no state database: it was deleted or moved; {consequence}"
            ),
            StateOnDisk::Database => tracing::info!(
                state = %db.display(),
                "no checkpoint in the state database (it was reset): starting from `start` in the config"
            ),
        }
    }
}

/// The schema history kept in the state store, for the reader.
pub(super) struct StoreHistory(pub Arc<Mutex<Store>>);

impl HistoryStore for StoreHistory {
    fn load(&self) -> Result<Vec<StoredVersion>, String> {
        let store = self
            .0
            .lock()
            .map_err(|_| "the state store lock is poisoned")?;
        let rows = store.schema_versions().map_err(|e| e.to_string())?;
        Ok(rows
            .into_iter()
            .map(|r| StoredVersion {
                db: r.db,
                table: r.table,
                file: r.file,
                pos: r.pos,
                definition: r.definition,
                server: r.server,
            })
            .collect())
    }

    fn save(&self, versions: &[StoredVersion]) -> Result<(), String> {
        let rows: Vec<SchemaVersionRow> = versions
            .iter()
            .map(|v| SchemaVersionRow {
                db: v.db.clone(),
                table: v.table.clone(),
                file: v.file.clone(),
                pos: v.pos,
                definition: v.definition.clone(),
                server: v.server.clone(),
            })
            .collect();
        let mut store = self
            .0
            .lock()
            .map_err(|_| "the state store lock is poisoned")?;
        store.save_schema_versions(&rows).map_err(|e| e.to_string())
    }
}
