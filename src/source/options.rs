//! What a binlog reader is given: its settings ([`ReaderOptions`]) and the
//! interface to where the schema history is kept between runs
//! ([`HistoryStore`], implemented over the state store by the pipeline).
//! Its own module so that the reader and the schema keeping it calls
//! (`schema_sync`) both build on it without importing each other.

use std::time::Duration;

use super::binlogs::FileIdentity;
use super::decoder::TableFilter;
use super::history::TableKey;
use super::value::DecodeOptions;
use crate::config::DatabaseConfig;

/// Settings of one reader.
#[derive(Clone)]
pub struct ReaderOptions {
    pub db: DatabaseConfig,
    pub heartbeat: Duration,
    pub decode: DecodeOptions,
    pub filter: TableFilter,
    /// The file the start position was saved in, as it was then: the
    /// stream stops with [`SourceError::HistoryChanged`] if the server's
    /// file of that name was created at another time (see
    /// [`super::binlogs`]). Reconnects check the file of the last commit.
    pub expect_file: Option<FileIdentity>,
    /// The tables `filter` wants, for the schema history.
    pub tables: Vec<TableKey>,
    /// Where the schema history is kept between runs (`None`: in memory).
    pub history_store: Option<std::sync::Arc<dyn HistoryStore>>,
}

/// One stored version of a table's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    /// Database.
    pub db: String,
    /// Table.
    pub table: String,
    /// Valid from this binlog file…
    pub file: String,
    /// …and position.
    pub pos: u64,
    /// The `Definition` (`super::history`), as JSON.
    pub definition: String,
    /// The server the positions belong to (flavour, server_id, uuid).
    pub server: String,
}

/// Where the schema history is kept between runs (the state store; wired
/// by the app). Calls block (disk I/O): they run on a blocking thread.
pub trait HistoryStore: Send + Sync {
    /// Every stored version.
    fn load(&self) -> Result<Vec<StoredVersion>, String>;
    /// Stores versions durably (replacing those at the same table and position).
    fn save(&self, versions: &[StoredVersion]) -> Result<(), String>;
}
