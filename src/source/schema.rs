//! Table definitions from `information_schema`, for what the binlog does not
//! say: column names when `binlog_row_metadata` is MINIMAL, ENUM/SET labels,
//! binary-vs-text, and MariaDB JSON columns (which the binlog shows as
//! LONGTEXT). Looked up once per table and cached until a DDL for it passes.

use std::collections::HashMap;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::error::SourceError;

/// One column as `information_schema` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaColumn {
    pub name: String,
    /// `DATA_TYPE`, lower case (`int`, `varchar`, …).
    pub data_type: String,
    pub unsigned: bool,
    pub collation: Option<u16>,
    pub enum_labels: Option<Vec<String>>,
    pub set_labels: Option<Vec<String>>,
    pub is_json: bool,
    pub is_binary: bool,
}

/// A table as `information_schema` describes it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    pub columns: Vec<SchemaColumn>,
    pub primary_key: Vec<String>,
}

/// Whether a column that `information_schema` calls `data_type` can appear
/// in the binlog with real type `real` (see [`super::table_map::real_type`]).
/// Unknown data types are accepted (no opinion).
pub fn type_matches(data_type: &str, real: u8) -> bool {
    let allowed: &[u8] = match data_type {
        "tinyint" | "bool" | "boolean" => &[0x01],
        "smallint" => &[0x02],
        "mediumint" => &[0x09],
        "int" | "integer" => &[0x03],
        "bigint" => &[0x08],
        "float" => &[0x04],
        "double" | "real" | "double precision" => &[0x05],
        "decimal" | "numeric" | "fixed" => &[0xf6, 0x00],
        "bit" => &[0x10],
        "year" => &[0x0d],
        "date" => &[0x0a, 0x0e],
        "datetime" => &[0x12, 0x0c],
        "timestamp" => &[0x11, 0x07],
        "time" => &[0x13, 0x0b],
        "char" | "binary" => &[0xfe],
        "varchar" | "varbinary" => &[0x0f, 0xfd],
        "enum" => &[0xf7],
        "set" => &[0xf8],
        "tinytext" | "text" | "mediumtext" | "longtext" | "tinyblob" | "blob" | "mediumblob"
        | "longblob" => &[0xfc, 0xf9, 0xfa, 0xfb],
        "json" => &[0xf5, 0xfc],
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "geomcollection" => &[0xff],
        "vector" => &[0xf2, 0x0f, 0xfe],
        _ => return true,
    };
    allowed.contains(&real)
}

/// Parses the labels of `enum('a','b''c')` / `set(...)` as COLUMN_TYPE shows them.
pub fn parse_labels(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut chars = column_type[open + 1..].chars().peekable();
    loop {
        // Expect a quote or the end.
        match chars.next() {
            Some('\'') => {}
            _ => return out,
        }
        let mut label = String::new();
        loop {
            match chars.next() {
                Some('\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                Some('\'') => break,
                Some('\\') => {
                    if let Some(c) = chars.next() {
                        label.push(c);
                    }
                }
                Some(c) => label.push(c),
                None => return out,
            }
        }
        out.push(label);
        match chars.next() {
            Some(',') => continue,
            _ => return out,
        }
    }
}

const COLUMNS_SQL: &str = "SELECT c.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE, co.ID \
     FROM information_schema.COLUMNS c \
     LEFT JOIN information_schema.COLLATIONS co ON co.COLLATION_NAME = c.COLLATION_NAME \
     WHERE c.TABLE_SCHEMA = ? AND c.TABLE_NAME = ? ORDER BY c.ORDINAL_POSITION";

const PK_SQL: &str = "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
     WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
     ORDER BY ORDINAL_POSITION";

const JSON_CHECKS_SQL: &str = "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
     WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?";

/// Reads a table's definition; `None` when the table does not exist (any more).
pub async fn load(
    conn: &mut Conn,
    mariadb: bool,
    db: &str,
    table: &str,
) -> Result<Option<TableSchema>, SourceError> {
    type Row = (String, String, String, Option<u64>);
    let rows: Vec<Row> = conn
        .exec(COLUMNS_SQL, (db, table))
        .await
        .map_err(|e| SourceError::query(COLUMNS_SQL, e))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let pk: Vec<String> = conn
        .exec(PK_SQL, (db, table))
        .await
        .map_err(|e| SourceError::query(PK_SQL, e))?;
    // MariaDB's JSON is LONGTEXT with a CHECK (json_valid(`col`)) constraint.
    let json_checks: Vec<String> = if mariadb {
        conn.exec(JSON_CHECKS_SQL, (db, table))
            .await
            .map_err(|e| SourceError::query(JSON_CHECKS_SQL, e))?
    } else {
        Vec::new()
    };
    let columns = rows
        .into_iter()
        .map(|(name, data_type, column_type, collation)| {
            let dt = data_type.to_ascii_lowercase();
            let ct = column_type.to_ascii_lowercase();
            let is_json = dt == "json"
                || json_checks.iter().any(|c| {
                    c.replace(' ', "")
                        .contains(&format!("json_valid(`{name}`)"))
                });
            SchemaColumn {
                unsigned: ct.contains("unsigned"),
                collation: collation.and_then(|c| u16::try_from(c).ok()),
                enum_labels: (dt == "enum").then(|| parse_labels(&column_type)),
                set_labels: (dt == "set").then(|| parse_labels(&column_type)),
                is_json,
                is_binary: matches!(
                    dt.as_str(),
                    "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob"
                ),
                name,
                data_type: dt,
            }
        })
        .collect();
    Ok(Some(TableSchema {
        columns,
        primary_key: pk,
    }))
}

/// Cache of table definitions, keyed by (database, table).
#[derive(Debug, Default)]
pub struct SchemaCache {
    tables: HashMap<(String, String), Option<TableSchema>>,
}

impl SchemaCache {
    pub fn get(&self, db: &str, table: &str) -> Option<&Option<TableSchema>> {
        self.tables.get(&(db.to_string(), table.to_string()))
    }

    pub fn insert(&mut self, db: &str, table: &str, schema: Option<TableSchema>) {
        self.tables
            .insert((db.to_string(), table.to_string()), schema);
    }

    /// Forgets every table of `db` (after a DDL whose target we could not pin down).
    pub fn invalidate_db(&mut self, db: &str) {
        self.tables.retain(|(d, _), _| d != db);
    }

    pub fn clear(&mut self) {
        self.tables.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_with_quotes_and_commas() {
        assert_eq!(parse_labels("enum('a','b')"), vec!["a", "b"]);
        assert_eq!(
            parse_labels("set('x,y','it''s','')"),
            vec!["x,y", "it's", ""]
        );
        assert!(parse_labels("int(11)").is_empty());
    }
}
