//! Connecting to the database: connection options from the config, telling
//! apart "server down", "wrong host" and "wrong password", and reading the
//! server's identity (flavour, version, server_id, uuid, binlog settings).

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use super::error::SourceError;
use crate::config::DatabaseConfig;

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

/// Connection options for the configured server.
pub fn opts(db: &DatabaseConfig) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname(db.host.clone())
        .tcp_port(db.port)
        .user(Some(db.user.clone()))
        .pass(Some(db.password.expose().to_string()))
        .db_name(None::<String>)
        .prefer_socket(false)
        .stmt_cache_size(0)
        .into()
}

/// Opens a connection, with errors told apart for the operator.
pub async fn connect(db: &DatabaseConfig) -> Result<Conn, SourceError> {
    let fut = Conn::new(opts(db));
    let timeout = if db.connect_timeout.is_zero() {
        Duration::from_secs(10)
    } else {
        db.connect_timeout
    };
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(SourceError::Connect {
            addr: addr(db),
            reason: format!(
                "no answer within {} s (is the host reachable and the port open?)",
                timeout.as_secs()
            ),
        }),
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(classify_connect_error(db, e)),
    }
}

fn classify_connect_error(db: &DatabaseConfig, e: mysql_async::Error) -> SourceError {
    use mysql_async::{Error, IoError};
    let addr = addr(db);
    match e {
        Error::Server(se) if se.code == 1045 || se.code == 1698 => SourceError::AccessDenied {
            addr,
            user: db.user.clone(),
            message: se.message,
        },
        Error::Server(se) => SourceError::Connect {
            addr,
            reason: format!("the server answered ERROR {}: {}", se.code, se.message),
        },
        Error::Io(IoError::Io(io)) => {
            let reason = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    "connection refused (is the server running, and listening on this port?)"
                        .to_string()
                }
                std::io::ErrorKind::TimedOut => {
                    "connection timed out (is the host reachable and the port open?)".to_string()
                }
                _ if io.to_string().contains("lookup") || io.to_string().contains("resolve") => {
                    format!("cannot resolve host '{}': {io}", db.host)
                }
                _ => io.to_string(),
            };
            SourceError::Connect { addr, reason }
        }
        Error::Io(IoError::Tls(t)) => SourceError::Connect {
            addr,
            reason: format!("TLS handshake failed: {t}"),
        },
        other => SourceError::Connect {
            addr,
            reason: other.to_string(),
        },
    }
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
pub async fn query_rows(
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
