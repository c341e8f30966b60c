//! What the server says about its binary logs: the files it has
//! (`SHOW BINARY LOGS`), when each was created (the time of its first
//! event), the binlog *history* they belong to, the GTID position and
//! state (MariaDB `BINLOG_GTID_POS`, `@@gtid_binlog_state`) and how long
//! the server keeps them (its retention settings). The checkpoint, replay,
//! the reader, preflight and the retention metrics ask here.
//!
//! A binlog file's name does not identify it: `RESET MASTER` (MySQL 8.4:
//! `RESET BINARY LOGS AND GTIDS`) deletes every file and starts again at
//! `…000001`, and so does a server recreated on an empty datadir (MariaDB
//! keeps `server_id` 1 and has no `server_uuid`). What does change is the
//! file's creation time: the binlog timestamp of its format description
//! event, the first event of every file, which the server also sends
//! (with its original timestamp) when a stream starts in the middle of the
//! file. So a file is identified by its name *and* that time
//! ([`FileIdentity`]), and a history by the creation time of the oldest
//! file pikachu saw in it ([`History`]), which goes into every change id.

use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::{BinlogStreamRequest, Conn};

use super::connect;
use super::error::SourceError;
use crate::config::DatabaseConfig;

/// One line of `SHOW BINARY LOGS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogFile {
    pub name: String,
    /// Bytes written so far.
    pub size: u64,
}

/// A binlog file as pikachu read it: its name and its creation time (the
/// binlog timestamp of its first event, seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdentity {
    pub file: String,
    pub created: u32,
}

/// Marker of a binlog history: the creation time (seconds since the epoch)
/// of the oldest binlog file the server had when pikachu first read this
/// history. It stays the same for the life of a checkpoint, and changes
/// when the history is reset (the files are recreated later), so it makes
/// change ids unique across resets. See `docs/webhooks.md` (the `id` rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct History(pub u32);

impl std::fmt::Display for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `SHOW BINARY LOGS`, oldest first.
pub async fn list(conn: &mut Conn) -> Result<Vec<BinlogFile>, SourceError> {
    let rows = connect::query_rows(conn, "SHOW BINARY LOGS").await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let mut it = r.into_iter();
            let name = it.next().flatten()?;
            let size = it
                .next()
                .flatten()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Some(BinlogFile { name, size })
        })
        .collect())
}

/// MariaDB: the GTID state at `file:pos` (`BINLOG_GTID_POS`); `None`
/// when the server does not know it (or is not MariaDB).
pub(crate) async fn gtid_pos(conn: &mut Conn, file: &str, pos: u64) -> Option<String> {
    use mysql_async::prelude::Queryable;
    conn.exec_first::<Option<String>, _, _>("SELECT BINLOG_GTID_POS(?, ?)", (file, pos))
        .await
        .ok()
        .flatten()
        .flatten()
}

/// MariaDB: `@@gtid_binlog_state`, the last GTID of every (domain, server)
/// pair the server's binlog holds (empty when none).
pub(crate) async fn gtid_binlog_state(conn: &mut Conn) -> Result<String, SourceError> {
    Ok(connect::query_row(conn, "SELECT @@gtid_binlog_state")
        .await?
        .and_then(|r| r.into_iter().next().flatten())
        .unwrap_or_default())
}

/// The retention in seconds, `None` when binlogs are never purged automatically.
/// MySQL 8 and MariaDB 10.6+: `binlog_expire_logs_seconds` (0 = unset, then
/// `expire_logs_days`); older servers: `expire_logs_days` only.
/// `vars` are (lower-case name, value) pairs of `SHOW GLOBAL VARIABLES`.
pub(crate) fn retention_secs(vars: &[(String, String)]) -> Option<f64> {
    let var = |name: &str| {
        vars.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let secs = var("binlog_expire_logs_seconds")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0);
    let days = var("expire_logs_days")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|d| *d > 0.0)
        .map(|d| d * 86_400.0);
    if var("binlog_expire_logs_auto_purge").is_some_and(|v| v.eq_ignore_ascii_case("OFF")) {
        return None;
    }
    secs.or(days)
}

/// The sequence number of a binlog file name (`mysql-bin.000042` → 42).
pub(crate) fn file_number(name: &str) -> Option<u64> {
    name.rsplit_once('.')?.1.parse().ok()
}

/// The binlog timestamp of the first event of `file` (its format
/// description event), read with a short non-blocking binlog dump on its own
/// connection. It registers with server_id 0, as `mysqlbinlog` does: a
/// replica id of 0 is never a real replica's, and the server does not
/// disconnect other replicas for it.
pub async fn first_event_time(db: &DatabaseConfig, file: &str) -> Result<u32, SourceError> {
    let conn = connect::connect(db).await?;
    let request = BinlogStreamRequest::new(0)
        .with_filename(file.as_bytes())
        .with_pos(4)
        .with_non_blocking();
    let mut stream = conn
        .get_binlog_stream(request)
        .await
        .map_err(|e| SourceError::Stream(format!("reading the start of {file}: {e}")))?;
    let wait = db.connect_timeout.max(Duration::from_secs(1));
    let mut found = None;
    // The fake rotate (timestamp 0) comes first, then the file's format
    // description; a few events are plenty.
    for _ in 0..4 {
        let next = tokio::time::timeout(wait, stream.next()).await;
        let event = match next {
            Err(_) | Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(SourceError::Stream(format!(
                    "reading the start of {file}: {e}"
                )))
            }
            Ok(Some(Ok(ev))) => ev,
        };
        let h = event.header();
        if h.timestamp() != 0 && h.log_pos() != 0 && h.flags_raw() & 0x20 == 0 {
            found = Some(h.timestamp());
            break;
        }
    }
    let _ = stream.close().await;
    found.ok_or_else(|| SourceError::Stream(format!("no event with a time at the start of {file}")))
}

/// The marker of the server's binlog history as it is now: the creation
/// time of its oldest binlog file.
pub(crate) async fn current_history(
    db: &DatabaseConfig,
    files: &[BinlogFile],
) -> Result<History, SourceError> {
    let oldest = files.first().ok_or_else(|| {
        SourceError::Config("the server has no binary logs (is log_bin on?)".into())
    })?;
    Ok(History(first_event_time(db, &oldest.name).await?))
}

/// Where a saved position stands against the server's binlog history now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// The file is there, the position inside it, and (when known) it is
    /// the same file.
    Present,
    /// The file is older than the oldest one the server has: purged.
    Purged { oldest: String },
    /// The file is not the one the position was taken in (created at
    /// another time), or the position is past its end, or its number is
    /// past the newest file: the history was reset or the server recreated.
    Reset { why: String },
}

/// Judges `file:pos` (created at `created`, when known) against `files`
/// and the creation time the server reports for that file now
/// (`created_now`, when it has the file).
pub fn standing(
    file: &str,
    pos: u64,
    created: Option<u32>,
    files: &[BinlogFile],
    created_now: Option<u32>,
) -> Standing {
    let (Some(first), Some(last)) = (files.first(), files.last()) else {
        return Standing::Reset {
            why: "the server has no binary logs at all".into(),
        };
    };
    match files.iter().find(|f| f.name == file) {
        Some(f) if pos > f.size => Standing::Reset {
            why: format!(
                "{file} on the server has {} bytes, fewer than the saved position {pos}",
                f.size
            ),
        },
        Some(_) => match (created, created_now) {
            (Some(a), Some(b)) if a != b => Standing::Reset {
                why: format!(
                    "{file} on the server was created at {}, but the one the position was taken in was created at {}",
                    crate::event::time::rfc3339(i64::from(b)),
                    crate::event::time::rfc3339(i64::from(a))
                ),
            },
            _ => Standing::Present,
        },
        None => {
            let n = file_number(file);
            if n.is_some() && n < file_number(&first.name) {
                Standing::Purged {
                    oldest: format!("{}:4", first.name),
                }
            } else {
                Standing::Reset {
                    why: format!(
                        "the server's binary logs are {} … {}, and {file} is not among them",
                        first.name, last.name
                    ),
                }
            }
        }
    }
}

/// What a look at the server's binlog end says about a live stream that
/// the server reports as idle (it sends heartbeats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LiveCheck {
    /// The server's end is where the stream is.
    Fine,
    /// The server's end is past the stream although the stream is idle: a
    /// lag, or a dump thread left on a file that a reset deleted. Worth a
    /// look at the file's identity if it lasts.
    Ahead,
    /// The server's binlog is behind the stream's position: it was reset.
    Reset { why: String },
}

/// Judges the stream's position `file:pos` against the server's binlog
/// end `end_file:end_pos` (`SHOW MASTER STATUS`).
pub(crate) fn live_check(file: &str, pos: u64, end_file: &str, end_pos: u64) -> LiveCheck {
    let (ours, theirs) = (file_number(file), file_number(end_file));
    if end_file == file {
        return match end_pos.cmp(&pos) {
            std::cmp::Ordering::Less => LiveCheck::Reset {
                why: format!(
                    "{file} on the server has {end_pos} bytes, fewer than the position {pos} already read from it"
                ),
            },
            std::cmp::Ordering::Equal => LiveCheck::Fine,
            std::cmp::Ordering::Greater => LiveCheck::Ahead,
        };
    }
    match (ours, theirs) {
        (Some(a), Some(b)) if b < a => LiveCheck::Reset {
            why: format!(
                "the server now writes {end_file}, an earlier file than {file} being read"
            ),
        },
        _ => LiveCheck::Ahead,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, u64)]) -> Vec<BinlogFile> {
        list.iter()
            .map(|(n, s)| BinlogFile {
                name: n.to_string(),
                size: *s,
            })
            .collect()
    }

    #[test]
    fn file_numbers() {
        assert_eq!(file_number("mysql-bin.000042"), Some(42));
        assert_eq!(file_number("a.b.000007"), Some(7));
        assert_eq!(file_number("nodot"), None);
    }

    #[test]
    fn live_checks() {
        assert_eq!(
            live_check("b.000004", 900, "b.000004", 900),
            LiveCheck::Fine
        );
        assert_eq!(
            live_check("b.000004", 900, "b.000004", 950),
            LiveCheck::Ahead
        );
        assert_eq!(live_check("b.000004", 900, "b.000005", 4), LiveCheck::Ahead);
        assert!(matches!(
            live_check("b.000004", 900, "b.000004", 300),
            LiveCheck::Reset { .. }
        ));
        assert!(matches!(
            live_check("b.000004", 900, "b.000001", 3000),
            LiveCheck::Reset { .. }
        ));
    }

    #[test]
    fn standing_of_a_position() {
        let fs = files(&[("b.000003", 500), ("b.000004", 900)]);
        assert_eq!(
            standing("b.000004", 800, Some(10), &fs, Some(10)),
            Standing::Present
        );
        // Unknown creation time (an old checkpoint): present if it fits.
        assert_eq!(
            standing("b.000003", 500, None, &fs, Some(10)),
            Standing::Present
        );
        assert_eq!(
            standing("b.000001", 800, Some(10), &fs, None),
            Standing::Purged {
                oldest: "b.000003:4".into()
            }
        );
        assert!(matches!(
            standing("b.000004", 901, Some(10), &fs, Some(10)),
            Standing::Reset { .. }
        ));
        assert!(matches!(
            standing("b.000004", 100, Some(10), &fs, Some(11)),
            Standing::Reset { .. }
        ));
        // A file past the newest one: the history restarted below it.
        assert!(matches!(
            standing("b.000009", 100, Some(10), &fs, None),
            Standing::Reset { .. }
        ));
        assert!(matches!(
            standing("b.000001", 4, None, &[], None),
            Standing::Reset { .. }
        ));
    }
}
