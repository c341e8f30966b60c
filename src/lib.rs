//! pikachu: change data capture from the MySQL/MariaDB binlog to webhooks.
//!
//! Data flows one way: [`source`] (connection, binlog stream, table schema,
//! row decoding) → [`event`] (the change model and its webhook payload) →
//! `route` (which task wants which change) → [`deliver`] (webhooks).
//! [`config`], [`telemetry`], `server` (health), [`preflight`] (database
//! checks) and [`store`] (local durable state) sit beside; [`pipeline`]
//! wires them for `run` (with the fan-out and the sink contract that
//! [`replay`] uses too), with `xa` holding the rows of XA transactions
//! until their outcome (for `run` and `replay`).
//!
//! The public modules are those the binary, the tests, the fuzz targets
//! and the examples use; `backoff`, `route`, `server` and `xa` are
//! internal.

mod backoff;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod deliver;
pub mod demo;
pub mod event;
pub mod metrics;
pub mod offline;
pub mod pipeline;
pub mod preflight;
pub mod replay;
mod route;
mod server;
pub mod snapshot;
pub mod source;
pub mod store;
pub mod telemetry;
mod xa;

/// Installs rustls' ring provider as the process default (reqwest is built
/// without a provider; building a client without one panics). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
