//! Test harness shared by the integration tests (`mod support;`).
//!
//! - [`config`]: library-level dispatcher and task configs.
//! - [`mariadb`]: private `mariadbd` servers with a ROW binlog, started by
//!   the test process itself ([`MariaDb::shared`], [`MariaDb::start`]).
//! - [`receiver`]: a real HTTP webhook receiver whose answers tests can
//!   script ([`Receiver`]).
//! - [`every_type`]: the table with a column of every type.
//! - [`isolation`]: the workload, order check and state readers of the
//!   task-isolation tests.
//! - [`tmpfs`]: a small filesystem to make read-only or fill up ([`TmpFs`]).
//!
//! Each test binary compiles this module on its own and may use only part
//! of it, hence the allows.
#![allow(dead_code, unused_imports)]

pub mod config;
pub mod every_type;
pub mod isolation;
pub mod mariadb;
pub mod pikachu;
pub mod receiver;
pub mod tmpfs;

pub use mariadb::{MariaDb, ServerOptions};
pub use receiver::{Received, Receiver};
pub use tmpfs::TmpFs;

/// Installs rustls' ring provider as the process default (idempotent).
///
/// reqwest is built with `rustls-no-provider`: building a `reqwest::Client`
/// panics unless a provider is installed, even for plain `http://` URLs.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client for tests (installs the crypto provider first).
pub fn http_client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .build()
        .expect("building a reqwest client")
}
