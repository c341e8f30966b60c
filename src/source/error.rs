//! Errors of the binlog source, each worded for the operator: what is wrong
//! and, where we know it, how to fix it.

use std::fmt;

/// Where in the binlog a decoding error happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    pub file: String,
    pub pos: u64,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot connect to the database at {addr}: {reason}")]
    Connect { addr: String, reason: String },

    #[error("the database at {addr} refused user '{user}': {message} (check database.user and database.password)")]
    AccessDenied {
        addr: String,
        user: String,
        message: String,
    },

    #[error("query `{query}` failed: {message}")]
    Query { query: String, message: String },

    #[error("the binlog stream failed: {0}")]
    Stream(String),

    #[error("no data from the database for {secs} s (heartbeats stopped): the connection is considered lost")]
    Silent { secs: u64 },

    #[error("binlog event at {at} could not be decoded: {message}")]
    Decode { at: At, message: String },

    #[error("binlog event at {at} has a bad checksum (expected {expected:08x}, computed {computed:08x}); the stream is corrupt")]
    Checksum {
        at: At,
        expected: u32,
        computed: u32,
    },

    #[error("binlog event at {at} has type {type_code}, which pikachu does not know and which may carry rows; stopping rather than skipping it silently")]
    UnknownEvent { at: At, type_code: u8 },

    #[error("the binlog position pikachu needs, {needed}, is no longer on the server ({message}); the oldest binlog it still has is {oldest}. The changes between them are lost to pikachu. To go on from the oldest binlog the server still has, run `pikachu position set earliest -config …` (or `latest` to skip to now), then start pikachu again; re-sync the tables from a copy of their rows if the lost changes matter")]
    Purged {
        needed: String,
        oldest: String,
        message: String,
    },

    #[error("the position {needed} does not belong to the server's binlog any more: {why}. Its binary logs were reset (RESET MASTER) or the server was recreated since the position was saved. To read the server's new binlog from its start, run `pikachu position set earliest -config …`, then start pikachu again")]
    HistoryChanged { needed: String, why: String },

    #[error("another replica is connected to the server with the same database.server_id {server_id}, and the server keeps one binlog connection per id, so the two keep disconnecting each other: pick a database.server_id that no other replica of this server uses (`SHOW SLAVE HOSTS` lists them), or stop the other replica (server: {message})")]
    ServerIdClash { server_id: u32, message: String },

    #[error("{0}")]
    Config(String),

    /// A rows event without column names needs the definitions that the
    /// start-up check deferred ([`super::history::SchemaHistory::unchecked_from`]).
    /// The live reader answers it by checking them and handling the event
    /// again; it reaches a user only from a decoder used without that reader.
    #[error("binlog event at {at}: the binlog carries no column names for `{db}`.`{table}` and the table definitions pikachu took from information_schema at start were not checked against the binlog")]
    SchemaUnchecked { at: At, db: String, table: String },
}

impl SourceError {
    /// Whether reconnecting may help (the server went away, the network
    /// broke, heartbeats stopped), as opposed to errors a retry would repeat
    /// (bad credentials, a purged position, an event we cannot decode).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SourceError::Connect { .. }
                | SourceError::Stream(_)
                | SourceError::Silent { .. }
                | SourceError::Query { .. }
                // The other replica may go away (e.g. an old pikachu just stopped).
                | SourceError::ServerIdClash { .. }
        )
    }
}

impl SourceError {
    pub fn query(query: &str, err: impl fmt::Display) -> Self {
        SourceError::Query {
            query: query.to_string(),
            message: err.to_string(),
        }
    }
}
