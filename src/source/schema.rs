//! Table definitions from `information_schema`, for what the binlog does not
//! say: column names when `binlog_row_metadata` is MINIMAL, ENUM/SET labels,
//! binary-vs-text, and MariaDB JSON columns (which the binlog shows as
//! LONGTEXT). Read at start and when verifying the schema history
//! ([`super::history`]), which keeps the definition valid at each position.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::error::SourceError;

/// One column as `information_schema` describes it (or as derived from a
/// DDL statement, in the same terms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaColumn {
    /// The column's name.
    pub name: String,
    /// `DATA_TYPE`, lower case (`int`, `varchar`, …).
    pub data_type: String,
    /// `UNSIGNED` (numeric columns).
    pub unsigned: bool,
    /// Collation id of a character column (`None`: not a character column).
    pub collation: Option<u16>,
    /// The labels of an ENUM column.
    pub enum_labels: Option<Vec<String>>,
    /// The labels of a SET column.
    pub set_labels: Option<Vec<String>>,
    /// JSON (MySQL's type, or MariaDB's LONGTEXT with `json_valid`).
    pub is_json: bool,
    /// BINARY/VARBINARY/BLOB: bytes, not text.
    pub is_binary: bool,
}

/// A table's definition: as `information_schema` describes it, or as the
/// schema history derived it from DDL statements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// The columns, in the table's order (the binlog's order).
    pub columns: Vec<SchemaColumn>,
    /// The primary key's column names, in key order (empty: none).
    pub primary_key: Vec<String>,
    /// The table's default collation id (new character columns get it).
    #[serde(default)]
    pub default_collation: Option<u16>,
}

/// Whether a column that `information_schema` calls `data_type` can appear
/// in the binlog with real type `real` (see [`super::table_map::real_type`]).
/// Unknown data types are accepted (no opinion).
pub(crate) fn type_matches(data_type: &str, real: u8) -> bool {
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
pub(crate) fn parse_labels(column_type: &str) -> Vec<String> {
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

const TABLE_COLLATION_SQL: &str = "SELECT co.ID FROM information_schema.TABLES t \
     JOIN information_schema.COLLATIONS co ON co.COLLATION_NAME = t.TABLE_COLLATION \
     WHERE t.TABLE_SCHEMA = ? AND t.TABLE_NAME = ?";

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
    let default_collation: Option<Option<u64>> = conn
        .exec_first(TABLE_COLLATION_SQL, (db, table))
        .await
        .map_err(|e| SourceError::query(TABLE_COLLATION_SQL, e))?;
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
        default_collation: default_collation
            .flatten()
            .and_then(|c| u16::try_from(c).ok()),
    }))
}

/// The server's collations and character sets by name, for deriving a
/// column's collation from `CHARACTER SET x` / `COLLATE y` in a DDL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collations {
    /// Collation name (lower case) → id.
    pub by_name: HashMap<String, u16>,
    /// Character set name (lower case) → the id of its default collation.
    pub charset_default: HashMap<String, u16>,
    /// Database name → the id of its default collation.
    pub database_default: HashMap<String, u16>,
}

impl Collations {
    /// The id of collation `name` (`utf8_…` is read as `utf8mb3_…`).
    pub fn collation(&self, name: &str) -> Option<u16> {
        let n = name.to_ascii_lowercase();
        self.by_name.get(&n).copied().or_else(|| {
            n.strip_prefix("utf8_")
                .and_then(|rest| self.by_name.get(&format!("utf8mb3_{rest}")).copied())
        })
    }

    /// The default collation of character set `name` (`utf8` is `utf8mb3`).
    pub fn charset(&self, name: &str) -> Option<u16> {
        let n = name.to_ascii_lowercase();
        let n = if n == "utf8" {
            "utf8mb3".to_string()
        } else {
            n
        };
        self.charset_default.get(&n).copied()
    }
}

const COLLATIONS_SQL: &str = "SELECT COLLATION_NAME, CHARACTER_SET_NAME, ID, IS_DEFAULT \
     FROM information_schema.COLLATIONS";

const DATABASES_SQL: &str = "SELECT s.SCHEMA_NAME, co.ID FROM information_schema.SCHEMATA s \
     JOIN information_schema.COLLATIONS co ON co.COLLATION_NAME = s.DEFAULT_COLLATION_NAME";

/// Reads the server's collations and the databases' default collations.
pub(crate) async fn load_collations(conn: &mut Conn) -> Result<Collations, SourceError> {
    // Every column may be NULL (MariaDB lists collation aliases without an id).
    type Row = (Option<String>, Option<String>, Option<u64>, Option<String>);
    let rows: Vec<Row> = conn
        .query(COLLATIONS_SQL)
        .await
        .map_err(|e| SourceError::query(COLLATIONS_SQL, e))?;
    let mut c = Collations::default();
    for (name, charset, id, default) in rows {
        let (Some(name), Some(Ok(id))) = (name, id.map(u16::try_from)) else {
            continue;
        };
        if let Some(cs) = charset {
            let is_default = default.is_some_and(|d| d.eq_ignore_ascii_case("yes"));
            if is_default || !c.charset_default.contains_key(&cs.to_ascii_lowercase()) {
                c.charset_default.insert(cs.to_ascii_lowercase(), id);
            }
        }
        c.by_name.insert(name.to_ascii_lowercase(), id);
    }
    let dbs: Vec<(Option<String>, Option<u64>)> = conn
        .query(DATABASES_SQL)
        .await
        .map_err(|e| SourceError::query(DATABASES_SQL, e))?;
    for (db, id) in dbs {
        if let (Some(db), Some(Ok(id))) = (db, id.map(u16::try_from)) {
            c.database_default.insert(db, id);
        }
    }
    Ok(c)
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
