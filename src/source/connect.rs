//! Connecting to the database: connection options from the config (TLS per
//! `database.tls`), telling apart "server down", "wrong host", "wrong
//! password" and TLS trouble, and reading the server's identity (flavour,
//! version, server_id, uuid, binlog settings).

use std::sync::Mutex;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, DriverError, Opts, OptsBuilder, SslOpts};

use super::error::SourceError;
use crate::config::{DatabaseConfig, TlsMode};

/// MySQL or MariaDB (they differ in GTIDs, status statements and events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    MySql,
    MariaDb,
}

impl Flavour {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::MySql => "mysql",
            Flavour::MariaDb => "mariadb",
        }
    }
}

/// What we know of the server we read from.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub flavour: Flavour,
    pub version: String,
    /// (major, minor, patch) as the handshake reported it.
    pub version_tuple: (u16, u16, u16),
    pub server_id: u32,
    pub server_uuid: Option<String>,
    /// `@@binlog_checksum`: "CRC32" or "NONE".
    pub binlog_checksum: String,
}

/// `host:port` of the configured server, for messages.
pub fn addr(db: &DatabaseConfig) -> String {
    format!("{}:{}", db.host, db.port)
}

/// Connection options for the configured server, without TLS.
pub fn opts(db: &DatabaseConfig) -> Opts {
    opts_with(db, None)
}

fn opts_with(db: &DatabaseConfig, ssl: Option<SslOpts>) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname(db.host.clone())
        .tcp_port(db.port)
        .user(Some(db.user.clone()))
        .pass(Some(db.password.expose().to_string()))
        .db_name(None::<String>)
        .prefer_socket(false)
        .stmt_cache_size(0)
        .ssl_opts(ssl)
        .into()
}

/// Whether the connection is encrypted, as found when it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsState {
    /// `database.tls: disabled`.
    Off,
    /// `database.tls: preferred` and the server has no TLS: plain connection.
    FellBack,
    /// Encrypted; `verified` when the certificate chain was checked.
    On { verified: bool },
}

impl TlsState {
    /// For messages: "without TLS", "with TLS (certificate verified)", ...
    pub fn describe(self) -> &'static str {
        match self {
            TlsState::Off => "without TLS (database.tls: disabled)",
            TlsState::FellBack => "without TLS (the server does not support it)",
            TlsState::On { verified: true } => "with TLS (certificate verified)",
            TlsState::On { verified: false } => "with TLS (certificate not verified)",
        }
    }
}

/// Servers (`host:port`) found without TLS support while `database.tls` is
/// `preferred`: later connections go plain at once instead of failing first.
static NO_TLS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn known_without_tls(addr: &str) -> bool {
    NO_TLS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|a| a == addr)
}

fn remember_without_tls(addr: &str) {
    let mut list = NO_TLS.lock().unwrap_or_else(|e| e.into_inner());
    if !list.iter().any(|a| a == addr) {
        list.push(addr.to_string());
    }
}

/// TLS settings: without certificate verification, or verifying against
/// `database.tls_ca` (read here, with a clear error when it cannot be) or,
/// without it, the built-in root CAs.
fn ssl_opts(db: &DatabaseConfig, verify: bool) -> Result<SslOpts, SourceError> {
    let mut ssl = SslOpts::default();
    if !verify {
        return Ok(ssl.with_danger_accept_invalid_certs(true));
    }
    if let Some(path) = &db.tls_ca {
        let pem = std::fs::read(path).map_err(|e| {
            SourceError::Config(format!(
                "cannot read database.tls_ca '{}': {e}",
                path.display()
            ))
        })?;
        // Only the configured CA is trusted, not the built-in roots.
        ssl = ssl
            .with_root_certs(vec![pem.into()])
            .with_disable_built_in_roots(true);
    }
    Ok(ssl)
}

/// Opens a connection, with errors told apart for the operator.
pub async fn connect(db: &DatabaseConfig) -> Result<Conn, SourceError> {
    connect_tls(db).await.map(|(conn, _)| conn)
}

/// [`connect`], also telling whether (and how) the connection is encrypted.
///
/// `database.tls`: `disabled` never uses TLS; `preferred` uses it when the
/// server supports it (without verifying the certificate) and falls back to
/// a plain connection otherwise; `required` insists on TLS but does not
/// verify the certificate; `verify_ca` verifies the chain against
/// `database.tls_ca` (else the built-in roots) but not the host name;
/// `verify_identity` verifies both.
pub(crate) async fn connect_tls(db: &DatabaseConfig) -> Result<(Conn, TlsState), SourceError> {
    let address = addr(db);
    match db.tls {
        TlsMode::Disabled => Ok((worded(db, attempt(db, None).await)?, TlsState::Off)),
        TlsMode::Preferred => {
            if known_without_tls(&address) {
                return Ok((worded(db, attempt(db, None).await)?, TlsState::FellBack));
            }
            match attempt(db, Some(ssl_opts(db, false)?)).await {
                Err(Failed::Driver(mysql_async::Error::Driver(
                    DriverError::NoClientSslFlagFromServer,
                ))) => {
                    tracing::debug!(
                        "the server at {address} does not support TLS; connecting without it (database.tls: preferred)"
                    );
                    remember_without_tls(&address);
                    Ok((worded(db, attempt(db, None).await)?, TlsState::FellBack))
                }
                other => Ok((worded(db, other)?, TlsState::On { verified: false })),
            }
        }
        TlsMode::Required => {
            let r = attempt(db, Some(ssl_opts(db, false)?)).await;
            Ok((worded(db, r)?, TlsState::On { verified: false }))
        }
        TlsMode::VerifyIdentity => {
            let r = attempt(db, Some(ssl_opts(db, true)?)).await;
            Ok((worded(db, r)?, TlsState::On { verified: true }))
        }
        TlsMode::VerifyCa => {
            let ssl = ssl_opts(db, true)?;
            match attempt(db, Some(ssl.clone())).await {
                // The chain was verified (webpki checks it before the name):
                // only the name differs, which verify_ca does not check.
                // Connect again naming one of the certificate's own names;
                // the chain is verified again on that connection.
                Err(Failed::Driver(e)) if name_mismatch(&e).is_some_and(|n| !n.is_empty()) => {
                    let name = dialable(&name_mismatch(&e).unwrap_or_default().remove(0));
                    tracing::debug!(
                        "the database's certificate is not for '{}'; verifying it as '{name}' (database.tls: verify_ca)",
                        db.host
                    );
                    let ssl = ssl.with_danger_tls_hostname_override(Some(name));
                    let r = attempt(db, Some(ssl)).await;
                    Ok((worded(db, r)?, TlsState::On { verified: true }))
                }
                other => Ok((worded(db, other)?, TlsState::On { verified: true })),
            }
        }
    }
}

/// A failed connection attempt: the driver's error, or a timeout.
enum Failed {
    Driver(mysql_async::Error),
    Timeout(Duration),
}

async fn attempt(db: &DatabaseConfig, ssl: Option<SslOpts>) -> Result<Conn, Failed> {
    let fut = Conn::new(opts_with(db, ssl));
    let timeout = if db.connect_timeout.is_zero() {
        Duration::from_secs(10)
    } else {
        db.connect_timeout
    };
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(Failed::Timeout(timeout)),
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(Failed::Driver(e)),
    }
}

/// The outcome of an attempt, errors worded for the operator.
fn worded(db: &DatabaseConfig, r: Result<Conn, Failed>) -> Result<Conn, SourceError> {
    r.map_err(|f| match f {
        Failed::Timeout(t) => SourceError::Connect {
            addr: addr(db),
            reason: format!(
                "no answer within {} s (is the host reachable and the port open?)",
                t.as_secs()
            ),
        },
        Failed::Driver(e) => classify_connect_error(db, e),
    })
}

/// The rustls error inside a failed TLS handshake, if that is what failed.
fn tls_error(e: &mysql_async::Error) -> Option<&rustls::Error> {
    use mysql_async::{Error, IoError};
    match e {
        Error::Io(IoError::Io(io)) => io.get_ref()?.downcast_ref::<rustls::Error>(),
        Error::Io(IoError::Tls(mysql_async::TlsError::Tls(t))) => Some(t),
        _ => None,
    }
}

/// The certificate's names when it is valid but not for the host we dialled.
fn name_mismatch(e: &mysql_async::Error) -> Option<Vec<String>> {
    use rustls::{CertificateError, Error};
    match tls_error(e)? {
        Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            presented, ..
        }) => Some(presented.iter().map(|p| plain_name(p)).collect()),
        Error::InvalidCertificate(CertificateError::NotValidForName) => Some(Vec::new()),
        _ => None,
    }
}

/// `DnsName("db.example.com")` / `IpAddress(10.0.0.1)` (as webpki reports
/// a certificate's names) → `db.example.com` / `10.0.0.1`.
fn plain_name(presented: &str) -> String {
    match (presented.find('('), presented.strip_suffix(')')) {
        (Some(open), Some(inner)) => inner[open + 1..].trim_matches('"').to_string(),
        _ => presented.to_string(),
    }
}

/// A name to verify a certificate issued for `name` with: a wildcard name
/// gets a label of ours.
fn dialable(name: &str) -> String {
    match name.strip_prefix("*.") {
        Some(rest) => format!("pikachu-verify-ca.{rest}"),
        None => name.to_string(),
    }
}

/// Words a TLS handshake failure: what is wrong and which setting fixes it.
fn tls_reason(db: &DatabaseConfig, t: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    let ca = match &db.tls_ca {
        Some(p) => format!("database.tls_ca '{}'", p.display()),
        None => "the built-in root CAs (set database.tls_ca to your CA file)".to_string(),
    };
    match t {
        Error::InvalidCertificate(CertificateError::NotValidForNameContext { presented, .. }) => {
            format!(
                "the server's TLS certificate is for {}, not '{}' (database.tls: verify_identity): connect with database.host set to a name in the certificate, or use tls: verify_ca",
                if presented.is_empty() {
                    "no host name".to_string()
                } else {
                    presented
                        .iter()
                        .map(|p| plain_name(p))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                db.host
            )
        }
        Error::InvalidCertificate(CertificateError::NotValidForName) => format!(
            "the server's TLS certificate is not valid for '{}' (database.tls: verify_identity): connect with database.host set to a name in the certificate, or use tls: verify_ca",
            db.host
        ),
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the server's TLS certificate is not signed by a CA trusted here ({ca}); or use database.tls: required to encrypt without verifying"
        ),
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the server's TLS certificate has expired: renew it on the server".to_string(),
        other => format!("TLS handshake failed: {other}"),
    }
}

fn classify_connect_error(db: &DatabaseConfig, e: mysql_async::Error) -> SourceError {
    use mysql_async::{Error, IoError};
    let addr = addr(db);
    if let Some(t) = tls_error(&e) {
        return SourceError::Connect {
            addr,
            reason: tls_reason(db, t),
        };
    }
    match e {
        Error::Server(se) if se.code == 1045 || se.code == 1698 => SourceError::AccessDenied {
            addr,
            user: db.user.clone(),
            message: se.message,
        },
        // ER_HOST_NOT_PRIVILEGED
        Error::Server(se) if se.code == 1130 => SourceError::Connect {
            addr,
            reason: format!(
                "{} (the user '{}' may not log in from this host: create it for this host, e.g. '{}'@'%')",
                se.message, db.user, db.user
            ),
        },
        Error::Server(se) => SourceError::Connect {
            addr,
            reason: format!("the server answered ERROR {}: {}", se.code, se.message),
        },
        Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
            SourceError::Connect {
                addr,
                reason: format!(
                    "the server does not support TLS but database.tls is {}: enable TLS on the server (ssl_cert and ssl_key under [mysqld] in my.cnf), or set database.tls: preferred",
                    tls_mode_name(db.tls)
                ),
            }
        }
        Error::Io(IoError::Io(io)) => {
            let text = io.to_string();
            let reason = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    "connection refused (is the server running, and listening on this port?)"
                        .to_string()
                }
                std::io::ErrorKind::TimedOut => {
                    "connection timed out (is the host reachable and the port open?)".to_string()
                }
                std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable => {
                    format!("{text} (is database.host right, and the network up?)")
                }
                _ if is_dns_error(&text) => {
                    format!(
                        "cannot resolve host '{}' ({text}): check database.host",
                        db.host
                    )
                }
                _ => text,
            };
            SourceError::Connect { addr, reason }
        }
        Error::Io(IoError::Tls(t)) => SourceError::Connect {
            addr,
            reason: format!("TLS setup failed: {t}"),
        },
        other => SourceError::Connect {
            addr,
            reason: other.to_string(),
        },
    }
}

fn is_dns_error(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "lookup",
        "resolve",
        "name or service not known",
        "nodename nor servname",
        "no address associated",
        "temporary failure in name resolution",
    ]
    .iter()
    .any(|m| t.contains(m))
}

fn tls_mode_name(mode: TlsMode) -> &'static str {
    TlsMode::ALL
        .iter()
        .find(|(_, m)| *m == mode)
        .map_or("?", |(n, _)| n)
}

/// Runs a query returning at most one row of strings (NULL → None).
pub async fn query_row(
    conn: &mut Conn,
    sql: &str,
) -> Result<Option<Vec<Option<String>>>, SourceError> {
    let row: Option<mysql_async::Row> = conn
        .query_first(sql)
        .await
        .map_err(|e| SourceError::query(sql, e))?;
    Ok(row.map(row_strings))
}

/// Runs a query and returns every row as strings (NULL → None).
pub(crate) async fn query_rows(
    conn: &mut Conn,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, SourceError> {
    let rows: Vec<mysql_async::Row> = conn
        .query(sql)
        .await
        .map_err(|e| SourceError::query(sql, e))?;
    Ok(rows.into_iter().map(row_strings).collect())
}

fn row_strings(row: mysql_async::Row) -> Vec<Option<String>> {
    row.unwrap_raw()
        .into_iter()
        .map(|v| match v {
            None | Some(mysql_async::Value::NULL) => None,
            Some(mysql_async::Value::Bytes(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
            Some(mysql_async::Value::Int(i)) => Some(i.to_string()),
            Some(mysql_async::Value::UInt(u)) => Some(u.to_string()),
            Some(other) => Some(other.as_sql(true)),
        })
        .collect()
}

/// Reads the server's flavour, version and identity.
pub async fn server_info(conn: &mut Conn) -> Result<ServerInfo, SourceError> {
    let sql = "SELECT VERSION(), @@server_id, @@binlog_checksum";
    let row = query_row(conn, sql)
        .await?
        .ok_or_else(|| SourceError::query(sql, "no row"))?;
    let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let version = get(0);
    let flavour = if version.to_ascii_lowercase().contains("mariadb") {
        Flavour::MariaDb
    } else {
        Flavour::MySql
    };
    let server_id = get(1).parse().unwrap_or(0);
    let binlog_checksum = get(2).to_ascii_uppercase();
    let server_uuid = match flavour {
        Flavour::MySql => query_row(conn, "SELECT @@server_uuid")
            .await
            .ok()
            .flatten()
            .and_then(|r| r.into_iter().next().flatten()),
        Flavour::MariaDb => None,
    };
    Ok(ServerInfo {
        flavour,
        version_tuple: conn.server_version(),
        version,
        server_id,
        server_uuid,
        binlog_checksum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_names() {
        assert_eq!(plain_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(plain_name("IpAddress(10.0.0.1)"), "10.0.0.1");
        assert_eq!(plain_name("db.example.com"), "db.example.com");
        assert_eq!(dialable("*.example.com"), "pikachu-verify-ca.example.com");
        assert_eq!(dialable("db"), "db");
    }
}
