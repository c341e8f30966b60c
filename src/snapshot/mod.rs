//! Snapshots and backfills (issue 12): reading the rows that exist already,
//! consistently with the binlog stream and without locks (DBLog, the
//! read-only variant of Debezium's incremental snapshot). See
//! `docs/snapshot.md`.
//!
//! What is here is the part that does not depend on the run loop:
//! - [`plan`]: which key a table is paged by, the SELECT of a chunk, a
//!   `--where` condition checked;
//! - [`values`]: the SELECT's values (binary protocol) rendered by the
//!   binlog path's own decoder, so a `read` carries byte for byte the
//!   `data` an `insert` of the same row carries;
//! - [`chunk`]: one chunk read with its low and high watermarks;
//! - [`window`]: the watermark window (pure): which rows of a chunk the
//!   stream has newer changes of;
//! - [`payload`]: the body and deterministic id of a `read`;
//! - [`cli`]: `pikachu snapshot start|status|cancel` over the state store
//!   (`store::snapshot`).
//!
//! The running pipeline drives these (`pipeline::snapshots`: the reader
//! beside the binlog reader, the window in the loop, progress at
//! settlement); see "In the running pipeline" in `docs/snapshot.md`.

pub(crate) mod chunk;
pub(crate) mod payload;
pub(crate) mod plan;
pub(crate) mod values;
pub(crate) mod window;

pub use chunk::prepare_session;
pub use chunk::{read_chunk, Chunk, Cursor, KeyPart};
pub use plan::{plan_table, TablePlan};
pub use window::{BinlogPos, Settled, Window};

impl SnapshotError {
    /// Whether reading again after reconnecting may succeed (a lost
    /// connection, a position that could not be read); the other errors
    /// stop the snapshot with their message.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            SnapshotError::Connection { .. } => true,
            SnapshotError::Position(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Why a table cannot be snapshotted, or a chunk could not be read. Each
/// message names the table and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The table is not there (never was, or dropped mid-snapshot).
    #[error("table `{db}`.`{table}` does not exist (or the user cannot see it); check the task's table_name")]
    NoTable {
        /// Database.
        db: String,
        /// Table.
        table: String,
    },
    /// Neither a primary key nor a unique index of NOT NULL columns.
    #[error("table `{db}`.`{table}` has no primary key and no unique index whose columns are all NOT NULL, so it cannot be read in chunks consistently with the stream; add a primary key (or a unique NOT NULL key) to snapshot it")]
    NoKey {
        /// Database.
        db: String,
        /// Table.
        table: String,
    },
    /// A column type the snapshot cannot render exactly as the binlog path does.
    #[error("table `{db}`.`{table}`: column `{column}` has type {column_type}, which snapshots do not support yet (its value could not be rendered exactly as the binlog path renders it)")]
    UnsupportedColumn {
        /// Database.
        db: String,
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// `COLUMN_TYPE` as information_schema shows it.
        column_type: String,
    },
    /// The `--where` condition is not usable.
    #[error("the --where condition `{condition}` for `{db}`.`{table}` is not valid: {reason}")]
    BadWhere {
        /// Database.
        db: String,
        /// Table.
        table: String,
        /// The condition as given.
        condition: String,
        /// The server's or our own reason.
        reason: String,
    },
    /// The server refused a statement (privileges, a dropped table, …).
    #[error("snapshot of `{db}`.`{table}`: {what}: {reason}")]
    Query {
        /// Database.
        db: String,
        /// Table.
        table: String,
        /// What was being done (`reading a chunk`).
        what: String,
        /// The server's message (with a hint for missing privileges).
        reason: String,
    },
    /// The connection to the server was lost (read again after reconnecting).
    #[error("snapshot of `{db}`.`{table}`: {what}: the connection was lost: {reason}")]
    Connection {
        /// Database.
        db: String,
        /// Table.
        table: String,
        /// What was being done.
        what: String,
        /// The driver's message.
        reason: String,
    },
    /// A value the server sent does not fit its column's type.
    #[error("snapshot of `{db}`.`{table}`: column `{column}`: {detail}")]
    Value {
        /// Database.
        db: String,
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The table's definition changed since it was planned (an ALTER between
    /// chunks): the chunk is not used; plan the table again and read it again.
    #[error("the definition of `{db}`.`{table}` changed during the snapshot ({detail}); the chunk is read again with the new definition")]
    Changed {
        /// Database.
        db: String,
        /// Table.
        table: String,
        /// What changed.
        detail: String,
    },
    /// Reading the binlog position (watermark) failed.
    #[error("snapshot: cannot read the binlog position: {0}")]
    Position(#[from] crate::source::SourceError),
}
