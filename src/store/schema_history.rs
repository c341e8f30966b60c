//! The schema history rows: one per (table, binlog position) at which the
//! table got a definition, as JSON (see `source::history::Definition`).

use rusqlite::params;

use super::{unix_millis, Store, StoreError};

/// One stored definition of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaVersionRow {
    /// Database.
    pub db: String,
    /// Table.
    pub table: String,
    /// Binlog file the definition is valid from…
    pub file: String,
    /// …and position in it.
    pub pos: u64,
    /// The definition, JSON.
    pub definition: String,
    /// The server the position belongs to.
    pub server: String,
}

impl Store {
    /// Every stored version, by table and position.
    pub fn schema_versions(&self) -> Result<Vec<SchemaVersionRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT db, tbl, file, pos, definition, server FROM schema_history
                 ORDER BY db, tbl, file, pos",
            )
            .map_err(self.err("cannot read the schema history"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(SchemaVersionRow {
                    db: r.get(0)?,
                    table: r.get(1)?,
                    file: r.get(2)?,
                    pos: r.get::<_, i64>(3)? as u64,
                    definition: r.get(4)?,
                    server: r.get(5)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.err("cannot read the schema history"))?;
        Ok(rows)
    }

    /// Stores versions in one transaction (durable when it returns); a
    /// version at the same table and position is replaced.
    pub(crate) fn save_schema_versions(
        &mut self,
        rows: &[SchemaVersionRow],
    ) -> Result<(), StoreError> {
        let now = unix_millis(std::time::SystemTime::now());
        let path = self.path.display().to_string();
        let err = |what: &str| {
            let (what, path) = (what.to_string(), path.clone());
            move |source: rusqlite::Error| StoreError {
                what,
                path,
                source: Box::new(source),
            }
        };
        let tx = self
            .conn
            .transaction()
            .map_err(err("cannot save the schema history"))?;
        for r in rows {
            tx.execute(
                "INSERT INTO schema_history (db, tbl, file, pos, definition, server, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (db, tbl, file, pos) DO UPDATE SET
                   definition = excluded.definition, server = excluded.server,
                   created_at = excluded.created_at",
                params![
                    r.db,
                    r.table,
                    r.file,
                    r.pos as i64,
                    r.definition,
                    r.server,
                    now
                ],
            )
            .map_err(err("cannot save the schema history"))?;
        }
        tx.commit().map_err(err("cannot save the schema history"))
    }

    /// Forgets the schema history (the position moved: the next run takes
    /// the definitions from `information_schema` again).
    pub(crate) fn clear_schema_history(&mut self) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM schema_history", [])
            .map_err(self.err("cannot clear the schema history"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_replace_load_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(dir.path()).expect("open");
        let row = |pos: u64, def: &str| SchemaVersionRow {
            db: "shop".into(),
            table: "users".into(),
            file: "mysql-bin.000001".into(),
            pos,
            definition: def.into(),
            server: "mariadb server_id 1".into(),
        };
        s.save_schema_versions(&[row(4, "{\"a\":1}"), row(100, "{\"b\":2}")])
            .expect("save");
        s.save_schema_versions(&[row(100, "{\"c\":3}")])
            .expect("replace");
        drop(s);
        let mut s = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            s.schema_versions().expect("load"),
            vec![row(4, "{\"a\":1}"), row(100, "{\"c\":3}")]
        );
        assert_eq!(s.clear_schema_history().expect("clear"), 2);
        assert!(s.schema_versions().expect("load").is_empty());
    }
}
