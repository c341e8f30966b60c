//! The checkpoint row: where to resume reading the binlog so that nothing
//! settled is read again and nothing unsettled is skipped, and which server
//! that position belongs to.

use rusqlite::{params, OptionalExtension};

use super::{unix_millis, Store, StoreError};

/// The position up to which every change is settled (delivered or
/// dead-lettered), at a transaction boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub file: String,
    pub pos: u64,
    /// GTID of the last settled transaction, when the server has GTIDs.
    pub gtid: Option<String>,
    /// The server's GTID state at that point (MariaDB `domain-server-seq,…`),
    /// for resuming on another server of the same replication topology.
    pub gtid_state: Option<String>,
    /// `mysql` or `mariadb`.
    pub flavour: String,
    pub server_id: u32,
    pub server_uuid: Option<String>,
    /// The binlog history marker (see `source::binlogs::History`); `None`
    /// in a checkpoint written before pikachu kept it.
    pub history: Option<u32>,
    /// Creation time of `file` on the server (its first event's
    /// timestamp), to tell it from a later file of the same name; `None`
    /// when not known.
    pub file_created: Option<u32>,
    /// Milliseconds since the epoch when it was written.
    pub updated_at: i64,
}

impl Store {
    /// The stored checkpoint, if any.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.conn
            .query_row(
                "SELECT file, pos, gtid, gtid_state, flavour, server_id, server_uuid, updated_at,
                        history, file_created
                 FROM checkpoint WHERE id = 1",
                [],
                |r| {
                    Ok(Checkpoint {
                        file: r.get(0)?,
                        pos: r.get::<_, i64>(1)? as u64,
                        gtid: r.get(2)?,
                        gtid_state: r.get(3)?,
                        flavour: r.get(4)?,
                        server_id: r.get::<_, i64>(5)? as u32,
                        server_uuid: r.get(6)?,
                        updated_at: r.get(7)?,
                        history: r.get::<_, Option<i64>>(8)?.map(|v| v as u32),
                        file_created: r.get::<_, Option<i64>>(9)?.map(|v| v as u32),
                    })
                },
            )
            .optional()
            .map_err(self.err("cannot read the checkpoint"))
    }

    /// Writes the checkpoint (durably: returns after fsync).
    pub(crate) fn save_checkpoint(&mut self, c: &Checkpoint) -> Result<(), StoreError> {
        let now = unix_millis(std::time::SystemTime::now());
        self.conn
            .execute(
                "INSERT INTO checkpoint (id, file, pos, gtid, gtid_state, flavour, server_id, server_uuid,
                   updated_at, history, file_created)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (id) DO UPDATE SET file = excluded.file, pos = excluded.pos,
                   gtid = excluded.gtid, gtid_state = excluded.gtid_state, flavour = excluded.flavour,
                   server_id = excluded.server_id, server_uuid = excluded.server_uuid,
                   updated_at = excluded.updated_at, history = excluded.history,
                   file_created = excluded.file_created",
                params![
                    c.file,
                    c.pos as i64,
                    c.gtid,
                    c.gtid_state,
                    c.flavour,
                    i64::from(c.server_id),
                    c.server_uuid,
                    now,
                    c.history.map(i64::from),
                    c.file_created.map(i64::from)
                ],
            )
            .map(|_| ())
            .map_err(self.err("cannot write the checkpoint"))
    }

    /// Forgets the checkpoint: the next start uses `start` from the config.
    pub(crate) fn clear_checkpoint(&mut self) -> Result<bool, StoreError> {
        self.conn
            .execute("DELETE FROM checkpoint WHERE id = 1", [])
            .map(|n| n > 0)
            .map_err(self.err("cannot clear the checkpoint"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_overwrite_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(dir.path()).expect("open");
        assert_eq!(s.checkpoint().expect("read"), None);
        let mut c = Checkpoint {
            file: "mysql-bin.000002".into(),
            pos: 1234,
            gtid: Some("0-1-7".into()),
            gtid_state: Some("0-1-7".into()),
            flavour: "mariadb".into(),
            server_id: 1,
            server_uuid: None,
            history: Some(1_700_000_000),
            file_created: Some(1_700_000_100),
            updated_at: 0,
        };
        s.save_checkpoint(&c).expect("save");
        let got = s.checkpoint().expect("read").expect("some");
        assert_eq!((got.file.as_str(), got.pos), ("mysql-bin.000002", 1234));
        assert_eq!(got.gtid.as_deref(), Some("0-1-7"));
        assert_eq!(got.history, Some(1_700_000_000));
        assert_eq!(got.file_created, Some(1_700_000_100));
        assert!(got.updated_at > 0);
        c.pos = 5678;
        s.save_checkpoint(&c).expect("save again");
        drop(s);
        // Survives reopening.
        let mut s = Store::open(dir.path()).expect("reopen");
        assert_eq!(s.checkpoint().expect("read").map(|c| c.pos), Some(5678));
        assert!(s.clear_checkpoint().expect("clear"));
        assert_eq!(s.checkpoint().expect("read"), None);
        assert!(!s.clear_checkpoint().expect("clear again"));
    }
}
