//! Retention headroom: how long until the server may purge the binlog file
//! pikachu must resume from.
//!
//! MariaDB and MySQL purge a binlog file by age when its *last
//! modification* is older than the retention (`binlog_expire_logs_seconds`,
//! or `expire_logs_days`), never the file being written, and only at a
//! rotation or a flush. A file's last write is the rotate event at its end,
//! written just before the next file's first event, the format
//! description, whose binlog timestamp is therefore the time the file was
//! last modified (to the second). So for the needed file F:
//!
//! - F is the last file (being written): it cannot be purged before it is
//!   rotated away and then ages a full retention: headroom = retention.
//! - otherwise: headroom = first-event time of the file after F +
//!   retention − now (negative: the server may purge it at its next
//!   rotation; it keeps it only while a replica reads it).
//! - F is not on the server any more: 0 (already purged).
//! - retention 0/unset, or `binlog_expire_logs_auto_purge=OFF`: no figure.
//!
//! Neither `SHOW BINARY LOGS` nor `SHOW BINLOG EVENTS` has times, so the
//! first-event time is read from the binlog itself: a short binlog dump of
//! the file from position 4, non-blocking, on its own connection, that reads
//! the format description event and closes. It registers with server_id 0,
//! as `mysqlbinlog` does: a replica id of 0 is never a real replica's, and
//! the server does not disconnect other replicas for it (a copied or
//! derived non-zero id could be some other replica's, which the server
//! would then cut off). Files never change their first event, so each
//! file's time is read once and cached.

use std::collections::HashMap;

use mysql_async::prelude::Queryable;

use super::Headroom;
use crate::config::DatabaseConfig;
use crate::source::SourceError;
use crate::source::{binlogs, connect};

/// What the server says about its binlogs, read at each refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerBinlogs {
    /// Retention in seconds; `None` = never purged automatically.
    pub retention: Option<f64>,
    /// `SHOW BINARY LOGS`, oldest first.
    pub files: Vec<String>,
}

/// The headroom for `needed` (see the module doc). `next_first_event` is
/// the first-event time of the file after `needed`, when there is one.
pub fn headroom(
    needed: &str,
    server: &ServerBinlogs,
    next_first_event: Option<i64>,
    now: i64,
) -> Headroom {
    let Some(retention) = server.retention else {
        return Headroom::Unlimited;
    };
    let file = needed.to_string();
    let Some(i) = server.files.iter().position(|f| f == needed) else {
        return Headroom::Seconds { file, secs: 0.0 };
    };
    if i + 1 == server.files.len() {
        return Headroom::Seconds {
            file,
            secs: retention,
        };
    }
    match next_first_event {
        Some(t) => Headroom::Seconds {
            file,
            secs: t as f64 + retention - now as f64,
        },
        None => Headroom::Unknown,
    }
}

/// The file after `needed` in `files`, if any.
pub fn next_file<'a>(needed: &str, files: &'a [String]) -> Option<&'a str> {
    let i = files.iter().position(|f| f == needed)?;
    files.get(i + 1).map(String::as_str)
}

/// Reads the retention settings and the list of binlog files.
pub async fn server_binlogs(db: &DatabaseConfig) -> Result<ServerBinlogs, SourceError> {
    let mut conn = connect::connect(db).await?;
    let sql = "SHOW GLOBAL VARIABLES WHERE Variable_name IN \
               ('binlog_expire_logs_seconds', 'expire_logs_days', 'binlog_expire_logs_auto_purge')";
    let vars: Vec<(String, String)> = conn
        .query(sql)
        .await
        .map_err(|e| SourceError::query(sql, e))?;
    let vars: Vec<(String, String)> = vars
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let files = binlogs::list(&mut conn)
        .await?
        .into_iter()
        .map(|f| f.name)
        .collect();
    let _ = conn.disconnect().await;
    Ok(ServerBinlogs {
        retention: binlogs::retention_secs(&vars),
        files,
    })
}

/// The binlog timestamp of the first event of `file` (see
/// [`crate::source::binlogs::first_event_time`]).
pub async fn first_event_time(db: &DatabaseConfig, file: &str) -> Result<i64, SourceError> {
    crate::source::binlogs::first_event_time(db, file)
        .await
        .map(i64::from)
}

/// First-event times already read, by file name.
#[derive(Debug, Default)]
pub(crate) struct FirstEventCache {
    times: HashMap<String, i64>,
}

impl FirstEventCache {
    /// The first-event time of `file`, read from the server once.
    pub async fn get(&mut self, db: &DatabaseConfig, file: &str) -> Result<i64, SourceError> {
        if let Some(t) = self.times.get(file) {
            return Ok(*t);
        }
        let t = first_event_time(db, file).await?;
        // Keep it small: only the few files around the checkpoint matter.
        if self.times.len() > 64 {
            self.times.clear();
        }
        self.times.insert(file.to_string(), t);
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(retention: Option<f64>) -> ServerBinlogs {
        ServerBinlogs {
            retention,
            files: vec!["b.000001".into(), "b.000002".into(), "b.000003".into()],
        }
    }

    #[test]
    fn headroom_rules() {
        let s = |file: &str, secs: f64| Headroom::Seconds {
            file: file.into(),
            secs,
        };
        // Unlimited retention: no figure.
        assert_eq!(
            headroom("b.000001", &server(None), Some(1000), 2000),
            Headroom::Unlimited
        );
        // The file being written: a full retention at least.
        assert_eq!(
            headroom("b.000003", &server(Some(3600.0)), None, 2000),
            s("b.000003", 3600.0)
        );
        // An older file: aged from its last write (= next file's first event).
        assert_eq!(
            headroom("b.000002", &server(Some(3600.0)), Some(1000), 2000),
            s("b.000002", 2600.0)
        );
        assert_eq!(
            headroom("b.000001", &server(Some(600.0)), Some(1000), 2000),
            s("b.000001", -400.0)
        );
        // Already purged.
        assert_eq!(
            headroom("b.000000", &server(Some(600.0)), None, 2000),
            s("b.000000", 0.0)
        );
        // The next file's time is not known yet.
        assert_eq!(
            headroom("b.000001", &server(Some(600.0)), None, 2000),
            Headroom::Unknown
        );
        assert_eq!(next_file("b.000002", &server(None).files), Some("b.000003"));
        assert_eq!(next_file("b.000003", &server(None).files), None);
    }
}
