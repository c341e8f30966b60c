//! The binlog side: connecting as a replica ([`connect`]), positions
//! ([`position`]), the event stream ([`reader`]), table definitions
//! ([`table_map`], [`schema`]) and row decoding ([`rows`], [`value`] and the
//! per-type decoders it uses).
//! It produces [`crate::event::Change`]s and transaction boundaries.

pub mod binlogs;
mod bytes;
pub mod charset;
pub mod connect;
pub(crate) mod decimal;
pub mod decoder;
pub mod error;
pub mod file;
pub(crate) mod geometry;
pub mod history;
pub(crate) mod jsonb;
pub mod options;
pub mod position;
pub mod reader;
pub mod rows;
pub mod schema;
pub(crate) mod schema_sync;
pub mod sql;
pub(crate) mod table_map;
pub(crate) mod temporal;
pub mod value;
pub mod xa;

pub use error::SourceError;
