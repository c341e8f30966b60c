//! Reading one chunk: the low watermark, the chunk's SELECT (keyset
//! pagination after the last key, `LIMIT chunk_size`) in a read-only
//! transaction of its own, and the high watermark.
//!
//! On MariaDB the low watermark is exact: the chunk is read in
//! `START TRANSACTION WITH CONSISTENT SNAPSHOT`, and the server's
//! `binlog_snapshot_file` / `binlog_snapshot_position` status variables give
//! the binlog position that snapshot corresponds to (what `mariadb-dump
//! --single-transaction --master-data` relies on). On MySQL, which has no
//! such variable, it is the end of the binlog read just before the
//! transaction starts; a transaction written to the binlog but not yet
//! committed in the engine at that instant is then outside the window
//! (see docs/snapshot.md, "Limits").
//!
//! No locks are taken and nothing is written: SELECT on the table and what
//! the replication user has already (`SHOW MASTER STATUS`) are enough.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};
use serde::{Deserialize, Serialize};

use super::plan::{query_err, TablePlan};
use super::values;
use super::window::RowKey;
use super::SnapshotError;
use crate::event::RowImage;
use crate::source::connect::{Flavour, ServerInfo};
use crate::source::position::{self, FilePos};
use crate::source::value::DecodeOptions;

/// One part of a paging key as the server sent it, kept to bind the next
/// chunk's bound (and saved, as JSON, as the snapshot's progress).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyPart {
    /// A signed integer (also ENUM/SET numbers, YEAR).
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// Bytes (text in the column's charset, binary, DECIMAL text, BIT), base64.
    Bytes(#[serde(with = "b64")] Vec<u8>),
    /// FLOAT.
    Float(f32),
    /// DOUBLE.
    Double(f64),
    /// DATE, DATETIME, TIMESTAMP (UTC): y, m, d, h, mi, s, µs.
    Date(u16, u8, u8, u8, u8, u8, u32),
    /// TIME: negative, days, h, m, s, µs.
    Time(bool, u32, u8, u8, u8, u32),
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

impl KeyPart {
    fn from_value(v: &Value) -> Option<KeyPart> {
        Some(match v {
            Value::NULL => return None,
            Value::Int(i) => KeyPart::Int(*i),
            Value::UInt(u) => KeyPart::UInt(*u),
            Value::Bytes(b) => KeyPart::Bytes(b.clone()),
            Value::Float(f) => KeyPart::Float(*f),
            Value::Double(f) => KeyPart::Double(*f),
            Value::Date(y, m, d, h, mi, s, us) => KeyPart::Date(*y, *m, *d, *h, *mi, *s, *us),
            Value::Time(n, d, h, m, s, us) => KeyPart::Time(*n, *d, *h, *m, *s, *us),
        })
    }

    /// The value as a statement parameter.
    pub(crate) fn to_value(&self) -> Value {
        match self {
            KeyPart::Int(i) => Value::Int(*i),
            KeyPart::UInt(u) => Value::UInt(*u),
            KeyPart::Bytes(b) => Value::Bytes(b.clone()),
            KeyPart::Float(f) => Value::Float(*f),
            KeyPart::Double(f) => Value::Double(*f),
            KeyPart::Date(y, m, d, h, mi, s, us) => Value::Date(*y, *m, *d, *h, *mi, *s, *us),
            KeyPart::Time(n, d, h, m, s, us) => Value::Time(*n, *d, *h, *m, *s, *us),
        }
    }
}

/// Where the next chunk starts: after this key (one part per key column).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor(pub Vec<KeyPart>);

impl Cursor {
    /// The cursor as JSON text (what the state store keeps).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "[]".into())
    }

    /// Parses [`Cursor::to_json`]'s text.
    pub(crate) fn from_json(text: &str) -> Result<Cursor, String> {
        serde_json::from_str(text)
            .map_err(|e| format!("saved snapshot key `{text}` is not valid: {e}"))
    }
}

/// One row of a chunk: its key (as the stream's changes show it) and its
/// values, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapRow {
    /// The key columns' JSON text (see [`RowKey`]).
    pub key: RowKey,
    /// Every column, in table order.
    pub image: RowImage,
}

/// One chunk with its watermarks.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The rows, in key order.
    pub rows: Vec<SnapRow>,
    /// The binlog position the rows' state corresponds to (or precedes).
    pub low: FilePos,
    /// The end of the binlog after the SELECT.
    pub high: FilePos,
    /// The last row's key: where the next chunk starts; `None` when the
    /// chunk was empty.
    pub last: Option<Cursor>,
    /// Fewer rows than asked for: the table is done.
    pub done: bool,
}

/// Sets up a connection for snapshot reads of `db`.`table`: UTC session
/// time zone (TIMESTAMP values are the stored instants), values in their
/// columns' own charsets, CHAR without padding, REPEATABLE READ (for the
/// consistent snapshot).
pub async fn prepare_session(conn: &mut Conn, db: &str, table: &str) -> Result<(), SnapshotError> {
    const SQL: [&str; 2] = [
        "SET time_zone = '+00:00', character_set_results = NULL, \
         sql_mode = REPLACE(@@sql_mode, 'PAD_CHAR_TO_FULL_LENGTH', '')",
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    ];
    for sql in SQL {
        conn.query_drop(sql)
            .await
            .map_err(|e| query_err(db, table, "setting up the session", e))?;
    }
    Ok(())
}

/// The position a MariaDB consistent snapshot corresponds to.
async fn snapshot_position(conn: &mut Conn) -> Result<Option<FilePos>, mysql_async::Error> {
    let rows: Vec<(String, String)> = conn.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
    let get = |name: &str| {
        rows.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    Ok(
        match (get("binlog_snapshot_file"), get("binlog_snapshot_position")) {
            (Some(file), Some(pos)) if !file.is_empty() => {
                pos.parse().ok().map(|pos| FilePos { file, pos })
            }
            _ => None,
        },
    )
}

/// Reads the chunk after `after` (from the start when `None`) of at most
/// `limit` rows. The session must have been set up with [`prepare_session`].
pub async fn read_chunk(
    conn: &mut Conn,
    info: &ServerInfo,
    plan: &TablePlan,
    after: Option<&Cursor>,
    limit: usize,
    opts: &DecodeOptions,
) -> Result<Chunk, SnapshotError> {
    let before = position::latest(conn, info).await?;
    let err = |what: &str| {
        let (db, table, what) = (plan.db.clone(), plan.table.clone(), what.to_string());
        move |e: mysql_async::Error| query_err(&db, &table, &what, e)
    };
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .map_err(err("starting the chunk's transaction"))?;
    let result = select_in_transaction(conn, info, plan, after, limit, opts).await;
    // Read-only: ending it either way is the same; a failed COMMIT leaves
    // nothing behind (the connection is dropped by the caller on error).
    let end = conn
        .query_drop("COMMIT")
        .await
        .map_err(err("ending the chunk's transaction"));
    let (rows, last, snapshot) = result?;
    end?;
    let high = position::latest(conn, info).await?;
    let low = snapshot.unwrap_or(before);
    let done = rows.len() < limit;
    Ok(Chunk {
        rows,
        low,
        high,
        last,
        done,
    })
}

/// A chunk's rows, the cursor after the last, and (MariaDB) the
/// snapshot's position.
type Selected = (Vec<SnapRow>, Option<Cursor>, Option<FilePos>);

async fn select_in_transaction(
    conn: &mut Conn,
    info: &ServerInfo,
    plan: &TablePlan,
    after: Option<&Cursor>,
    limit: usize,
    opts: &DecodeOptions,
) -> Result<Selected, SnapshotError> {
    let err = |what: &str| {
        let (db, table, what) = (plan.db.clone(), plan.table.clone(), what.to_string());
        move |e: mysql_async::Error| query_err(&db, &table, &what, e)
    };
    let snapshot = match info.flavour {
        Flavour::MariaDb => snapshot_position(conn)
            .await
            .map_err(err("reading the snapshot's binlog position"))?,
        Flavour::MySql => None,
    };
    let limit_value = Value::UInt(limit as u64);
    let (sql, params): (&str, Vec<Value>) = match after {
        None => (&plan.first_sql, vec![limit_value]),
        Some(cursor) => {
            let mut p = Vec::new();
            for k in plan.next_params() {
                let part = cursor.0.get(k).ok_or_else(|| SnapshotError::Value {
                    db: plan.db.clone(),
                    table: plan.table.clone(),
                    column: "(key)".into(),
                    detail: format!(
                        "the saved key has {} parts, the table's key {}; the key changed since the snapshot started",
                        cursor.0.len(),
                        plan.key.len()
                    ),
                })?;
                let column = plan.key.get(k).and_then(|&i| plan.columns.get(i));
                p.push(match column {
                    Some(c) => super::plan::key_param(c, part),
                    None => part.to_value(),
                });
            }
            p.push(limit_value);
            (&plan.next_sql, p)
        }
    };
    let mut rows = Vec::with_capacity(limit.min(65_536));
    let mut result = match conn.exec_iter(sql, params).await {
        Ok(r) => r,
        Err(e) => {
            // A column dropped or renamed since planning: say so, not
            // "unknown column".
            super::plan::check_definition(conn, plan).await?;
            return Err(err("reading a chunk")(e));
        }
    };
    // Each row's buffer sized from the row before (rows of a table are
    // alike): a chunk held in memory takes what its rows need.
    let mut hint = 64 * plan.columns.len();
    let mut last = None;
    while let Some(row) = result.next().await.map_err(err("reading a chunk"))? {
        let values = row.unwrap();
        let r = convert_row(plan, &values, opts, hint)?;
        hint = r.image.byte_len() + r.image.byte_len() / 4 + 16;
        rows.push(r);
        last = Some(values);
    }
    drop(result);
    super::plan::check_definition(conn, plan).await?;
    // Only the last row's key is where the next chunk starts.
    let cursor = last.map(|v| cursor_of(plan, &v)).transpose()?;
    Ok((rows, cursor, snapshot))
}

/// Renders one SELECT row and takes its key; `capacity`: bytes to reserve
/// for its JSON.
pub(crate) fn convert_row(
    plan: &TablePlan,
    values: &[Value],
    opts: &DecodeOptions,
    capacity: usize,
) -> Result<SnapRow, SnapshotError> {
    let value_err = |column: String, detail: String| SnapshotError::Value {
        db: plan.db.clone(),
        table: plan.table.clone(),
        column,
        detail,
    };
    if values.len() != plan.columns.len() {
        return Err(value_err(
            "*".into(),
            format!(
                "the SELECT returned {} columns, the table has {}; its definition changed, the chunk is read again",
                values.len(),
                plan.columns.len()
            ),
        ));
    }
    let mut image = RowImage::with_capacity(values.len(), capacity);
    for (c, v) in plan.columns.iter().zip(values) {
        if *v == Value::NULL {
            image.push_null();
            continue;
        }
        values::render(&c.kind, v, image.buf_mut(), opts)
            .map_err(|detail| value_err(c.name.clone(), detail))?;
        image.end_value();
    }
    for &i in &plan.key {
        if values.get(i).is_none_or(|v| *v == Value::NULL) {
            let column = plan.columns.get(i).map(|c| c.name.clone());
            return Err(value_err(
                column.unwrap_or_default(),
                "a key column is NULL".into(),
            ));
        }
    }
    let key = RowKey::of_image(&image, &plan.key).ok_or_else(|| {
        value_err(
            "(key)".into(),
            "a key column is missing from the row".into(),
        )
    })?;
    Ok(SnapRow { key, image })
}

/// The cursor after a row: its key columns' values.
pub(crate) fn cursor_of(plan: &TablePlan, values: &[Value]) -> Result<Cursor, SnapshotError> {
    let mut parts = Vec::with_capacity(plan.key.len());
    for &i in &plan.key {
        let part = values.get(i).and_then(KeyPart::from_value);
        parts.push(part.ok_or_else(|| {
            SnapshotError::Value {
                db: plan.db.clone(),
                table: plan.table.clone(),
                column: plan
                    .columns
                    .get(i)
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
                detail: "a key column is NULL".into(),
            }
        })?);
    }
    Ok(Cursor(parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_through_json() {
        let c = Cursor(vec![
            KeyPart::Int(-3),
            KeyPart::UInt(u64::MAX),
            KeyPart::Bytes(b"caf\xe9\0".to_vec()),
            KeyPart::Float(1.1),
            KeyPart::Double(-1e300),
            KeyPart::Date(2024, 2, 29, 23, 59, 59, 123_456),
            KeyPart::Time(true, 34, 22, 59, 59, 1),
        ]);
        let text = c.to_json();
        assert_eq!(Cursor::from_json(&text), Ok(c));
        assert!(Cursor::from_json("{\"nope\":1}").is_err());
    }
}
