//! Binlog positions: file + offset, and where a stream starts (`latest`,
//! `earliest`, an explicit position or a GTID set), resolved against the
//! server with the statements of its flavour and version.

use std::fmt;

use mysql_async::Conn;

use super::connect::{query_row, Flavour, ServerInfo};
use super::error::SourceError;
use crate::config::StartPosition;

/// A position in the binlog: a file name and a byte offset in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FilePos {
    pub file: String,
    pub pos: u64,
}

impl fmt::Display for FilePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

impl FilePos {
    /// Parses `file:pos`.
    pub fn parse(s: &str) -> Option<FilePos> {
        let (file, pos) = s.rsplit_once(':')?;
        if file.is_empty() {
            return None;
        }
        Some(FilePos {
            file: file.to_string(),
            pos: pos.parse().ok()?,
        })
    }
}

/// Where the binlog stream starts, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    FilePos(FilePos),
    /// A GTID set in the server's own form (MariaDB `0-1-100,1-2-5`, MySQL `uuid:1-100`).
    Gtid(String),
}

impl fmt::Display for StartAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartAt::FilePos(p) => write!(f, "{p}"),
            StartAt::Gtid(g) => write!(f, "GTID {g}"),
        }
    }
}

pub(crate) use crate::config::parse_mysql_gtid_set;

/// The server's current end of binlog.
pub async fn latest(conn: &mut Conn, info: &ServerInfo) -> Result<FilePos, SourceError> {
    let sql = match info.flavour {
        Flavour::MySql if info.version_tuple >= (8, 4, 0) => "SHOW BINARY LOG STATUS",
        _ => "SHOW MASTER STATUS",
    };
    let row = query_row(conn, sql).await?.ok_or_else(|| {
        SourceError::Config(
            "binary logging is off on the server (SHOW MASTER STATUS is empty): \
             start it with log_bin=ON and binlog_format=ROW in my.cnf"
                .to_string(),
        )
    })?;
    let file = row.first().cloned().flatten().unwrap_or_default();
    let pos = row
        .get(1)
        .cloned()
        .flatten()
        .and_then(|p| p.parse().ok())
        .unwrap_or(4);
    Ok(FilePos { file, pos })
}

/// The oldest position the server still has.
pub async fn earliest(conn: &mut Conn) -> Result<FilePos, SourceError> {
    let file = super::binlogs::list(conn)
        .await?
        .into_iter()
        .next()
        .map(|f| f.name)
        .ok_or_else(|| {
            SourceError::Config("the server has no binary logs (is log_bin on?)".into())
        })?;
    Ok(FilePos { file, pos: 4 })
}

/// Resolves the configured start position.
pub async fn resolve(
    conn: &mut Conn,
    info: &ServerInfo,
    start: &StartPosition,
) -> Result<StartAt, SourceError> {
    Ok(match start {
        StartPosition::Latest => StartAt::FilePos(latest(conn, info).await?),
        StartPosition::Earliest => StartAt::FilePos(earliest(conn).await?),
        StartPosition::FilePos { file, pos } => StartAt::FilePos(FilePos {
            file: file.clone(),
            pos: *pos,
        }),
        StartPosition::Gtid(g) => StartAt::Gtid(g.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_gtid_sets() {
        let sids = parse_mysql_gtid_set(
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:11-18,\n 4e11fa47-71ca-11e1-9e33-c80aa9429562:7",
        )
        .expect("valid");
        assert_eq!(sids.len(), 2);
        assert!(parse_mysql_gtid_set("0-1-100").is_err());
        assert!(parse_mysql_gtid_set("not-a-uuid:1-2").is_err());
        assert_eq!(parse_mysql_gtid_set("").map(|v| v.len()), Ok(0));
    }

    #[test]
    fn parse_file_pos() {
        assert_eq!(
            FilePos::parse("mysql-bin.000003:1234"),
            Some(FilePos {
                file: "mysql-bin.000003".into(),
                pos: 1234
            })
        );
        assert_eq!(FilePos::parse("nofile"), None);
        assert_eq!(FilePos::parse(":12"), None);
        assert_eq!(FilePos::parse("f:x"), None);
    }
}
