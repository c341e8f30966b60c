//! The binlog side: connecting as a replica ([`connect`]), positions
//! ([`position`]), the event stream ([`reader`]), table definitions
//! ([`table_map`], [`schema`]) and row decoding ([`rows`], [`value`] and the
//! per-type decoders it uses).
//! It produces [`crate::event::Change`]s and transaction boundaries.

pub(crate) mod binlogs;
mod bytes;
pub(crate) mod charset;
pub mod connect;
pub(crate) mod decimal;
pub(crate) mod decoder;
pub(crate) mod error;
pub(crate) mod file;
pub(crate) mod geometry;
pub(crate) mod history;
pub(crate) mod jsonb;
pub(crate) mod options;
pub mod position;
pub mod reader;
pub(crate) mod rows;
pub(crate) mod schema;
pub(crate) mod schema_sync;
pub(crate) mod sql;
pub(crate) mod table_map;
pub(crate) mod temporal;
pub(crate) mod value;
pub(crate) mod xa;

pub use decoder::Output;
pub use error::SourceError;
pub use file::FileError;
pub use value::{decode_value, ColumnInfo, ColumnKind, DecodeOptions};
