//! A table's snapshot plan, from `information_schema`: each column's
//! decoder (the same [`ColumnKind`]s the binlog path resolves, built from a
//! TABLE_MAP synthesised from the column types), the key the table is paged
//! by (the primary key, else the unique index of NOT NULL columns with the
//! fewest columns), and the chunk SELECTs (keyset pagination, composite
//! keys expanded so that the range optimizer uses the index).

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::SnapshotError;
use crate::event::Table;
use crate::source::schema::{self, TableSchema};
use crate::source::table_map::{self, MapColumn, TableMap};
use crate::source::value::{ColumnKind, TextMode};

/// One column as the snapshot reads it.
#[derive(Debug, Clone)]
pub struct PlanColumn {
    /// The column's name.
    pub name: String,
    /// `COLUMN_TYPE`, for messages.
    pub column_type: String,
    /// Character set name of a character column (`utf8mb4`).
    pub charset: Option<String>,
    /// Collation name of a character column (`utf8mb4_general_ci`).
    pub collation: Option<String>,
    /// How it is decoded (as the binlog path would).
    pub kind: ColumnKind,
}

/// Everything needed to read a table in chunks.
#[derive(Debug, Clone)]
pub struct TablePlan {
    /// Database.
    pub db: String,
    /// Table.
    pub table: String,
    /// The event-model table (names, primary key) the rows are rendered for.
    pub event_table: std::sync::Arc<Table>,
    /// The columns, in table order.
    pub columns: Vec<PlanColumn>,
    /// The paging key: indexes into `columns`, in key order.
    pub key: Vec<usize>,
    /// The index the key is (`PRIMARY` or the unique index's name).
    pub key_index: String,
    /// The user's `--where` condition, checked.
    pub condition: Option<String>,
    /// SELECT of the first chunk (parameter: none; `LIMIT ?`).
    pub first_sql: String,
    /// SELECT of a further chunk (parameters: see [`TablePlan::next_params`]).
    pub next_sql: String,
    /// The columns' names and `COLUMN_TYPE`s when planned, to notice an
    /// ALTER between chunks.
    pub definition: Vec<(String, String)>,
}

/// `` `name` `` with backticks doubled.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

const COLUMNS_SQL: &str = "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, \
     CHARACTER_OCTET_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION, \
     CHARACTER_SET_NAME, COLLATION_NAME, EXTRA \
     FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
     ORDER BY ORDINAL_POSITION";

// No ORDER BY: the server lists the indexes in its own key order (PRIMARY,
// then the unique ones without NULLable parts, …), the order in which it
// takes the first unique NOT NULL index as the primary key of a table
// without one (and logs its columns as the key under binlog_row_image=MINIMAL).
const INDEXES_SQL: &str = "SELECT INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME, SUB_PART \
     FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?";

const ESTIMATE_SQL: &str = "SELECT TABLE_ROWS FROM information_schema.TABLES \
     WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?";

/// A result row as strings (NULL → `None`), whatever the wire types.
pub(crate) fn strings(row: mysql_async::Row) -> Vec<Option<String>> {
    row.unwrap()
        .into_iter()
        .map(|v| match v {
            mysql_async::Value::NULL => None,
            mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            mysql_async::Value::Int(i) => Some(i.to_string()),
            mysql_async::Value::UInt(u) => Some(u.to_string()),
            other => Some(other.as_sql(true).trim_matches('\'').to_string()),
        })
        .collect()
}

/// One column row of [`COLUMNS_SQL`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ColumnFacts {
    /// `COLUMN_NAME`.
    pub name: String,
    /// `DATA_TYPE`, lower case.
    pub data_type: String,
    /// `COLUMN_TYPE`, lower case.
    pub column_type: String,
    /// `IS_NULLABLE = 'YES'`.
    pub nullable: bool,
    /// `CHARACTER_OCTET_LENGTH`.
    pub octets: Option<u64>,
    /// `NUMERIC_PRECISION` (BIT: the width).
    pub precision: Option<u64>,
    /// `NUMERIC_SCALE`.
    pub scale: Option<u64>,
    /// `DATETIME_PRECISION`.
    pub fsp: Option<u64>,
    /// `CHARACTER_SET_NAME`.
    pub charset: Option<String>,
    /// `COLLATION_NAME`.
    pub collation: Option<String>,
    /// `EXTRA` says `INVISIBLE`: left out of `SELECT *` (not of the binlog,
    /// nor of the chunk's SELECT, which names every column).
    pub invisible: bool,
}

impl ColumnFacts {
    fn from_row(r: Vec<Option<String>>) -> ColumnFacts {
        let s = |i: usize| r.get(i).cloned().flatten();
        let n = |i: usize| s(i).and_then(|v| v.parse::<u64>().ok());
        ColumnFacts {
            name: s(0).unwrap_or_default(),
            data_type: s(1).unwrap_or_default().to_ascii_lowercase(),
            column_type: s(2).unwrap_or_default().to_ascii_lowercase(),
            nullable: s(3).is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            octets: n(4),
            precision: n(5),
            scale: n(6),
            fsp: n(7),
            charset: s(8),
            collation: s(9),
            invisible: s(10).is_some_and(|e| e.to_ascii_uppercase().contains("INVISIBLE")),
        }
    }
}

/// The TABLE_MAP type byte and metadata the server would log for a column
/// of this type; `None` for a type the decoder has no exact rendering of
/// from a SELECT (MySQL's binary JSON, MariaDB's INET6/UUID/… types).
pub(crate) fn binlog_type(c: &ColumnFacts, mariadb: bool) -> Option<(u8, Vec<u8>)> {
    let fsp = || vec![c.fsp.unwrap_or(0).min(6) as u8];
    let octets = c.octets.unwrap_or(0);
    let blob = |n: u8| Some((table_map::T_BLOB, vec![n]));
    Some(match c.data_type.as_str() {
        "tinyint" | "bool" | "boolean" => (table_map::T_TINY, vec![]),
        "smallint" => (table_map::T_SHORT, vec![]),
        "mediumint" => (table_map::T_INT24, vec![]),
        "int" | "integer" => (table_map::T_LONG, vec![]),
        "bigint" => (table_map::T_LONGLONG, vec![]),
        "float" => (table_map::T_FLOAT, vec![4]),
        "double" | "real" | "double precision" => (table_map::T_DOUBLE, vec![8]),
        "decimal" | "numeric" | "fixed" => (
            table_map::T_NEWDECIMAL,
            vec![
                c.precision.unwrap_or(10).min(255) as u8,
                c.scale.unwrap_or(0).min(255) as u8,
            ],
        ),
        "bit" => {
            let n = c.precision.unwrap_or(1).min(64) as u8;
            (table_map::T_BIT, vec![n % 8, n / 8])
        }
        "year" => (table_map::T_YEAR, vec![]),
        "date" => (0x0a, vec![]),
        "time" => (table_map::T_TIME2, fsp()),
        "datetime" => (table_map::T_DATETIME2, fsp()),
        "timestamp" => (table_map::T_TIMESTAMP2, fsp()),
        "char" | "binary" => {
            let len = octets.min(1023) as u16;
            // Long CHAR (bug #37426): two length bits, inverted, in byte 0.
            let hi = ((len & 0x300) >> 4) as u8;
            (table_map::T_STRING, vec![0xce | (hi ^ 0x30), len as u8])
        }
        "varchar" | "varbinary" => {
            let len = octets.min(u64::from(u16::MAX)) as u16;
            (table_map::T_VARCHAR, len.to_le_bytes().to_vec())
        }
        "enum" => {
            let n = schema::parse_labels(&c.column_type).len();
            (
                table_map::T_STRING,
                vec![table_map::T_ENUM, if n < 256 { 1 } else { 2 }],
            )
        }
        "set" => {
            let n = schema::parse_labels(&c.column_type).len().div_ceil(8);
            (
                table_map::T_STRING,
                vec![table_map::T_SET, if n > 4 { 8 } else { n.max(1) as u8 }],
            )
        }
        "tinytext" | "tinyblob" => return blob(1),
        "text" | "blob" => return blob(2),
        "mediumtext" | "mediumblob" => return blob(3),
        "longtext" | "longblob" => return blob(4),
        // MariaDB's JSON is LONGTEXT; MySQL's binary JSON is not rendered from
        // its SELECT text (yet).
        "json" if mariadb => return blob(4),
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "geomcollection" => {
            (table_map::T_GEOMETRY, vec![4])
        }
        "vector" if !mariadb => (table_map::T_VECTOR, vec![4]),
        _ => return None,
    })
}

/// Reads the column facts of a table (empty: no such table).
pub(crate) async fn column_facts(
    conn: &mut Conn,
    db: &str,
    table: &str,
) -> Result<Vec<ColumnFacts>, SnapshotError> {
    let rows: Vec<mysql_async::Row> = conn
        .exec(COLUMNS_SQL, (db, table))
        .await
        .map_err(|e| query_err(db, table, "reading its columns from information_schema", e))?;
    Ok(rows
        .into_iter()
        .map(|r| ColumnFacts::from_row(strings(r)))
        .collect())
}

/// A unique index of the table: name and column names, and whether it can
/// page the table (no prefix part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexFacts {
    /// `INDEX_NAME`.
    pub name: String,
    /// `NON_UNIQUE = 0`.
    pub unique: bool,
    /// Columns in index order.
    pub columns: Vec<String>,
    /// Some column is indexed by a prefix only.
    pub prefix: bool,
}

async fn index_facts(
    conn: &mut Conn,
    db: &str,
    table: &str,
) -> Result<Vec<IndexFacts>, SnapshotError> {
    let rows: Vec<mysql_async::Row> = conn
        .exec(INDEXES_SQL, (db, table))
        .await
        .map_err(|e| query_err(db, table, "reading its indexes from information_schema", e))?;
    // Indexes in the order the server lists them first; columns by position.
    let mut out: Vec<(IndexFacts, Vec<u64>)> = Vec::new();
    for r in rows.into_iter().map(strings) {
        let s = |i: usize| r.get(i).cloned().flatten();
        let name = s(0).unwrap_or_default();
        let unique = s(1).as_deref() == Some("0");
        let seq = s(2).and_then(|v| v.parse().ok()).unwrap_or(0);
        let column = s(3).unwrap_or_default();
        let prefix = s(4).is_some();
        match out.iter_mut().find(|(ix, _)| ix.name == name) {
            Some((ix, seqs)) => {
                let at = seqs.partition_point(|&q| q < seq);
                seqs.insert(at, seq);
                ix.columns.insert(at, column);
                ix.prefix |= prefix;
            }
            None => out.push((
                IndexFacts {
                    name,
                    unique,
                    columns: vec![column],
                    prefix,
                },
                vec![seq],
            )),
        }
    }
    Ok(out.into_iter().map(|(ix, _)| ix).collect())
}

/// Whether a column of this kind can be part of the paging key.
fn key_kind_ok(kind: &ColumnKind) -> bool {
    !matches!(
        kind,
        ColumnKind::Json { .. } | ColumnKind::Geometry { .. } | ColumnKind::Vector { .. }
    )
}

/// The paging key: `PRIMARY`, else the first unique index (in the server's
/// key order, `indexes` as listed) without prefix parts whose columns are
/// all NOT NULL and of key-able types: the one the server itself takes as
/// the table's primary key, whose columns a MINIMAL row image carries.
pub(crate) fn choose_key(
    indexes: &[IndexFacts],
    columns: &[ColumnFacts],
    kinds: &[ColumnKind],
) -> Option<(String, Vec<usize>)> {
    let usable = |ix: &IndexFacts| -> Option<Vec<usize>> {
        if !ix.unique || ix.prefix || ix.columns.is_empty() {
            return None;
        }
        ix.columns
            .iter()
            .map(|c| {
                let i = columns.iter().position(|f| &f.name == c)?;
                let ok = !columns[i].nullable && kinds.get(i).is_some_and(key_kind_ok);
                ok.then_some(i)
            })
            .collect()
    };
    if let Some(pk) = indexes.iter().find(|ix| ix.name == "PRIMARY") {
        if let Some(cols) = usable(pk) {
            return Some((pk.name.clone(), cols));
        }
    }
    indexes
        .iter()
        .find_map(|ix| usable(ix).map(|cols| (ix.name.clone(), cols)))
}

/// Checks the shape of a `--where` condition before the server sees it:
/// not empty, no statement separator or comment, and parentheses that never
/// close more than they opened (outside quotes), so that wrapped in
/// `WHERE (…)` it stays one condition.
pub(crate) fn check_condition(cond: &str) -> Result<(), String> {
    if cond.trim().is_empty() {
        return Err("it is empty".into());
    }
    let b = cond.as_bytes();
    let mut depth = 0i64;
    let mut i = 0usize;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                // Skip to the closing quote (doubled quotes and backslash escapes inside).
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err("a quote is not closed".into()),
                        Some(&c) if c == b'\\' && q != b'`' => i += 2,
                        Some(&c) if c == q && b.get(i + 1) == Some(&q) => i += 2,
                        Some(&c) if c == q => break,
                        Some(_) => i += 1,
                    }
                }
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("a `)` closes more than the condition opened".into());
                }
            }
            b';' => return Err("it contains `;`; give one condition, not statements".into()),
            b'#' => return Err("it contains a comment (`#`)".into()),
            b'-' if b.get(i + 1) == Some(&b'-') => {
                return Err("it contains a comment (`--`)".into())
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                return Err("it contains a comment (`/*`)".into())
            }
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        return Err("its parentheses are not balanced".into());
    }
    Ok(())
}

/// The server error of a statement as a [`SnapshotError::Query`], with a
/// hint when it is a missing privilege.
pub(crate) fn query_err(db: &str, table: &str, what: &str, e: mysql_async::Error) -> SnapshotError {
    let mut reason = e.to_string();
    if matches!(e, mysql_async::Error::Io(_) | mysql_async::Error::Driver(_)) {
        return SnapshotError::Connection {
            db: db.to_string(),
            table: table.to_string(),
            what: what.to_string(),
            reason,
        };
    }
    if let mysql_async::Error::Server(se) = &e {
        // 1146: no such table (dropped mid-snapshot).
        if se.code == 1146 {
            return SnapshotError::NoTable {
                db: db.to_string(),
                table: table.to_string(),
            };
        }
        // 1142 table access denied, 1143 column access denied, 1044 db access denied.
        if matches!(se.code, 1142 | 1143 | 1044) {
            reason.push_str(&format!(
                "; grant it with: GRANT SELECT ON {}.{} TO <pikachu's user>",
                quote_ident(db),
                quote_ident(table)
            ));
        }
    }
    SnapshotError::Query {
        db: db.to_string(),
        table: table.to_string(),
        what: what.to_string(),
        reason,
    }
}

/// Names and types of the columns, what a definition change is judged by.
pub(crate) fn definition_of(facts: &[ColumnFacts]) -> Vec<(String, String)> {
    facts
        .iter()
        .map(|f| (f.name.clone(), f.column_type.clone()))
        .collect()
}

/// Checks that the table still has the definition it was planned with.
/// Run inside the chunk's transaction, after its SELECT: the SELECT's
/// metadata lock keeps an ALTER from completing between the two.
pub(crate) async fn check_definition(
    conn: &mut Conn,
    plan: &TablePlan,
) -> Result<(), SnapshotError> {
    let facts = column_facts(conn, &plan.db, &plan.table).await?;
    if facts.is_empty() {
        return Err(SnapshotError::NoTable {
            db: plan.db.clone(),
            table: plan.table.clone(),
        });
    }
    let now = definition_of(&facts);
    if now == plan.definition {
        return Ok(());
    }
    let show = |d: &[(String, String)]| {
        d.iter()
            .map(|(n, t)| format!("{n} {t}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(SnapshotError::Changed {
        db: plan.db.clone(),
        table: plan.table.clone(),
        detail: format!("was ({}), is ({})", show(&plan.definition), show(&now)),
    })
}

/// The parameter expression a key column's bound value is compared with,
/// so that the comparison is the column's own (its collation for text,
/// exact for DECIMAL).
fn bound_expr(c: &PlanColumn) -> String {
    let safe = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    match (&c.kind, &c.charset, &c.collation) {
        (ColumnKind::Decimal { precision, scale }, _, _) => {
            format!("CAST(? AS DECIMAL({precision},{scale}))")
        }
        // Text and binary keys are bound as hex (see `key_param`): a string
        // parameter is taken in the connection's charset, and bytes of
        // another charset (latin1 é) would be changed on the way.
        (
            ColumnKind::Str {
                mode: TextMode::Binary,
                ..
            },
            _,
            _,
        ) => "UNHEX(?)".into(),
        (ColumnKind::Str { .. }, Some(cs), Some(coll)) if safe(cs) && safe(coll) => {
            // The bytes as read (character_set_results = NULL: the column's
            // charset), labelled with it, compared by the column's collation.
            format!("CONVERT(UNHEX(?) USING {cs}) COLLATE {coll}")
        }
        (ColumnKind::Str { .. }, _, _) => "UNHEX(?)".into(),
        _ => "?".into(),
    }
}

/// The parameter value binding key part `part` of column `c` (to go with
/// `bound_expr`): text and binary as hex text, BIT as its number.
pub(crate) fn key_param(c: &PlanColumn, part: &crate::snapshot::KeyPart) -> mysql_async::Value {
    use crate::snapshot::KeyPart;
    match (&c.kind, part) {
        (ColumnKind::Str { .. }, KeyPart::Bytes(b)) => {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            let mut h = Vec::with_capacity(b.len() * 2);
            for &x in b {
                h.push(HEX[usize::from(x >> 4)]);
                h.push(HEX[usize::from(x & 0xf)]);
            }
            mysql_async::Value::Bytes(h)
        }
        (ColumnKind::Bit { .. }, KeyPart::Bytes(b)) => {
            mysql_async::Value::UInt(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
        }
        _ => part.to_value(),
    }
}

/// The SELECT list expression of a column: ENUM and SET as their number
/// (index, bitmask), which is what the binlog carries.
fn select_expr(c: &PlanColumn) -> String {
    match c.kind {
        ColumnKind::Enum { .. } | ColumnKind::Set { .. } => {
            format!("({}+0)", quote_ident(&c.name))
        }
        _ => quote_ident(&c.name),
    }
}

/// `k1 >= ?b1 AND (k1 > ?b1 OR (k1 = ?b1 AND k2 > ?b2) OR …)`: "after the
/// bound" in key order, in a form the range optimizer turns into index
/// ranges (row constructors are not, on every server). Returns the text and,
/// for each `?`, which key part it binds.
pub(crate) fn keyset_condition(key: &[(String, String)]) -> (String, Vec<usize>) {
    let mut params = Vec::new();
    let mut ors = Vec::new();
    for n in 0..key.len() {
        let mut ands = Vec::new();
        for (k, (col, bound)) in key.iter().enumerate().take(n) {
            ands.push(format!("{col} = {bound}"));
            params.push(k);
        }
        ands.push(format!("{} > {}", key[n].0, key[n].1));
        params.push(n);
        ors.push(if ands.len() == 1 {
            ands.remove(0)
        } else {
            format!("({})", ands.join(" AND "))
        });
    }
    let Some((col0, bound0)) = key.first() else {
        return ("TRUE".into(), Vec::new());
    };
    let mut all = vec![0];
    all.extend(params);
    (
        format!("{col0} >= {bound0} AND ({})", ors.join(" OR ")),
        all,
    )
}

/// Builds the plan of `db`.`table`: reads its columns and indexes, checks
/// the `--where` condition (ours, then the server's), and refuses a table
/// without a usable key or with a column type that cannot be rendered
/// exactly.
pub async fn plan_table(
    conn: &mut Conn,
    mariadb: bool,
    db: &str,
    table: &str,
    condition: Option<&str>,
) -> Result<TablePlan, SnapshotError> {
    let facts = column_facts(conn, db, table).await?;
    let no_table = || SnapshotError::NoTable {
        db: db.to_string(),
        table: table.to_string(),
    };
    if facts.is_empty() {
        return Err(no_table());
    }
    let visible = facts.iter().filter(|f| !f.invisible).count();
    check_readable(conn, db, table, visible).await?;
    let schema = schema::load(conn, mariadb, db, table)
        .await
        .map_err(|e| SnapshotError::Query {
            db: db.to_string(),
            table: table.to_string(),
            what: "reading its definition".into(),
            reason: e.to_string(),
        })?
        .ok_or_else(no_table)?;
    let (event_table, kinds) = decoders(db, table, &facts, &schema, mariadb)?;
    let indexes = index_facts(conn, db, table).await?;
    let (key_index, key) = choose_key(&indexes, &facts, &kinds).ok_or(SnapshotError::NoKey {
        db: db.to_string(),
        table: table.to_string(),
    })?;
    let columns: Vec<PlanColumn> = facts
        .iter()
        .zip(kinds)
        .map(|(f, kind)| PlanColumn {
            name: f.name.clone(),
            column_type: f.column_type.clone(),
            charset: f.charset.clone(),
            collation: f.collation.clone(),
            kind,
        })
        .collect();
    let condition = match condition {
        Some(c) => Some(check_where(conn, db, table, c).await?),
        None => None,
    };
    let (first_sql, next_sql) = chunk_sql(db, table, &columns, &key, &key_index, &condition);
    let definition = definition_of(&facts);
    Ok(TablePlan {
        definition,
        db: db.to_string(),
        table: table.to_string(),
        event_table,
        columns,
        key,
        key_index,
        condition,
        first_sql,
        next_sql,
    })
}

/// The decoders of the columns: a TABLE_MAP as the server would log it for
/// these types, resolved with the schema exactly as the binlog path does.
fn decoders(
    db: &str,
    table: &str,
    facts: &[ColumnFacts],
    schema: &TableSchema,
    mariadb: bool,
) -> Result<(std::sync::Arc<Table>, Vec<ColumnKind>), SnapshotError> {
    let mut map_columns = Vec::with_capacity(facts.len());
    for (i, f) in facts.iter().enumerate() {
        let Some((ty, meta)) = binlog_type(f, mariadb) else {
            return Err(SnapshotError::UnsupportedColumn {
                db: db.to_string(),
                table: table.to_string(),
                column: f.name.clone(),
                column_type: f.column_type.clone(),
            });
        };
        let sc = schema.columns.get(i).filter(|sc| sc.name == f.name);
        map_columns.push(MapColumn {
            ty,
            meta,
            nullable: f.nullable,
            name: Some(f.name.clone()),
            unsigned: Some(f.column_type.contains("unsigned")),
            collation: sc.and_then(|s| s.collation),
            enum_labels: sc.and_then(|s| s.enum_labels.clone()),
            set_labels: sc.and_then(|s| s.set_labels.clone()),
        });
    }
    let tm = TableMap {
        table_id: 0,
        database: db.to_string(),
        table: table.to_string(),
        columns: map_columns,
        primary_key: None,
    };
    let dec =
        table_map::build_decoder(&tm, Some(schema)).map_err(|detail| SnapshotError::Value {
            db: db.to_string(),
            table: table.to_string(),
            column: "?".into(),
            detail,
        })?;
    Ok((dec.table, dec.kinds))
}

/// `SELECT *` needs SELECT on every column: with a grant on some columns
/// only, `information_schema` shows just those, and a snapshot of them
/// would be rows with columns missing. Refused here, with the grant to give.
async fn check_readable(
    conn: &mut Conn,
    db: &str,
    table: &str,
    columns: usize,
) -> Result<(), SnapshotError> {
    let sql = format!(
        "SELECT * FROM {}.{} LIMIT 0",
        quote_ident(db),
        quote_ident(table)
    );
    let what = "reading it (SELECT * … LIMIT 0)";
    let result = conn
        .query_iter(sql)
        .await
        .map_err(|e| query_err(db, table, what, e))?;
    let seen = result.columns().map(|c| c.len()).unwrap_or(0);
    result
        .drop_result()
        .await
        .map_err(|e| query_err(db, table, what, e))?;
    if seen != columns {
        return Err(SnapshotError::Query {
            db: db.to_string(),
            table: table.to_string(),
            what: what.into(),
            reason: format!(
                "SELECT * returns {seen} columns but information_schema lists {columns} visible ones; \
                 grant SELECT on the whole table: GRANT SELECT ON {}.{} TO <pikachu's user>",
                quote_ident(db),
                quote_ident(table)
            ),
        });
    }
    Ok(())
}

/// Checks a `--where` condition: its shape, then the server's view of it
/// (a `LIMIT 0` query: a syntax error, an unknown column or a missing
/// privilege is reported here, before anything is read).
async fn check_where(
    conn: &mut Conn,
    db: &str,
    table: &str,
    cond: &str,
) -> Result<String, SnapshotError> {
    let bad = |reason: String| SnapshotError::BadWhere {
        db: db.to_string(),
        table: table.to_string(),
        condition: cond.to_string(),
        reason,
    };
    check_condition(cond).map_err(bad)?;
    let sql = format!(
        "SELECT 1 FROM {}.{} WHERE ({cond}) LIMIT 0",
        quote_ident(db),
        quote_ident(table)
    );
    conn.query_drop(&sql).await.map_err(|e| match &e {
        mysql_async::Error::Server(se) if matches!(se.code, 1142 | 1143 | 1044) => {
            query_err(db, table, "checking the --where condition", e)
        }
        mysql_async::Error::Server(se) => bad(se.message.clone()),
        _ => query_err(db, table, "checking the --where condition", e),
    })?;
    Ok(cond.to_string())
}

/// The first-chunk and next-chunk SELECTs.
fn chunk_sql(
    db: &str,
    table: &str,
    columns: &[PlanColumn],
    key: &[usize],
    key_index: &str,
    condition: &Option<String>,
) -> (String, String) {
    let list: Vec<String> = columns.iter().map(select_expr).collect();
    let index = if key_index == "PRIMARY" {
        "PRIMARY".to_string()
    } else {
        quote_ident(key_index)
    };
    let head = format!(
        "SELECT {} FROM {}.{} FORCE INDEX ({index})",
        list.join(", "),
        quote_ident(db),
        quote_ident(table)
    );
    let order: Vec<String> = key.iter().map(|&i| quote_ident(&columns[i].name)).collect();
    let tail = format!(" ORDER BY {} LIMIT ?", order.join(", "));
    let user = condition
        .as_ref()
        .map(|c| format!("({c})"))
        .unwrap_or_default();
    let key_exprs: Vec<(String, String)> = key
        .iter()
        .map(|&i| (quote_ident(&columns[i].name), bound_expr(&columns[i])))
        .collect();
    let (after, _) = keyset_condition(&key_exprs);
    let first = if user.is_empty() {
        format!("{head}{tail}")
    } else {
        format!("{head} WHERE {user}{tail}")
    };
    let next = if user.is_empty() {
        format!("{head} WHERE {after}{tail}")
    } else {
        format!("{head} WHERE {user} AND ({after}){tail}")
    };
    (first, next)
}

impl TablePlan {
    /// For each `?` of [`TablePlan::next_sql`] before the `LIMIT`, the key
    /// part (index into the key) it binds.
    pub(crate) fn next_params(&self) -> Vec<usize> {
        let dummy: Vec<(String, String)> = self
            .key
            .iter()
            .map(|_| (String::new(), String::new()))
            .collect();
        keyset_condition(&dummy).1
    }

    /// Names of the key columns, in key order.
    pub fn key_names(&self) -> Vec<String> {
        self.key
            .iter()
            .map(|&i| self.columns[i].name.clone())
            .collect()
    }
}

/// The server's estimate of a table's rows (`information_schema.TABLES`).
pub(crate) async fn estimate_rows(
    conn: &mut Conn,
    db: &str,
    table: &str,
) -> Result<u64, SnapshotError> {
    let row: Option<mysql_async::Row> = conn
        .exec_first(ESTIMATE_SQL, (db, table))
        .await
        .map_err(|e| query_err(db, table, "reading its row estimate", e))?;
    Ok(row
        .map(strings)
        .and_then(|r| r.into_iter().next().flatten())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(name: &str, data_type: &str, nullable: bool) -> ColumnFacts {
        ColumnFacts {
            name: name.into(),
            data_type: data_type.into(),
            column_type: data_type.into(),
            nullable,
            ..Default::default()
        }
    }

    fn ix(name: &str, unique: bool, cols: &[&str], prefix: bool) -> IndexFacts {
        IndexFacts {
            name: name.into(),
            unique,
            columns: cols.iter().map(|c| c.to_string()).collect(),
            prefix,
        }
    }

    #[test]
    fn key_is_primary_else_smallest_unique_not_null() {
        let cols = vec![
            facts("a", "int", false),
            facts("b", "int", false),
            facts("c", "int", true),
            facts("g", "geometry", false),
        ];
        let kinds = vec![
            ColumnKind::Int {
                bytes: 4,
                unsigned: false,
            };
            3
        ]
        .into_iter()
        .chain([ColumnKind::Geometry { len_bytes: 4 }])
        .collect::<Vec<_>>();
        let with_pk = [
            ix("u_b", true, &["b"], false),
            ix("PRIMARY", true, &["a", "b"], false),
        ];
        assert_eq!(
            choose_key(&with_pk, &cols, &kinds),
            Some(("PRIMARY".into(), vec![0, 1]))
        );
        let no_pk = [
            ix("u_ab", true, &["a", "b"], false),
            ix("u_c", true, &["c"], false),  // nullable
            ix("u_g", true, &["g"], false),  // geometry
            ix("u_bp", true, &["b"], true),  // prefix
            ix("k_a", false, &["a"], false), // not unique
            ix("u_b", true, &["b"], false),  // smaller, but listed later
        ];
        assert_eq!(
            choose_key(&no_pk, &cols, &kinds),
            Some(("u_ab".into(), vec![0, 1])),
            "the first usable one in the server's order"
        );
        assert_eq!(choose_key(&no_pk[1..5], &cols, &kinds), None);
        assert_eq!(choose_key(&[], &cols, &kinds), None);
    }

    #[test]
    fn keyset_condition_for_one_and_three_columns() {
        let one = vec![("`a`".to_string(), "?".to_string())];
        assert_eq!(
            keyset_condition(&one),
            ("`a` >= ? AND (`a` > ?)".to_string(), vec![0, 0])
        );
        let three: Vec<(String, String)> = ["a", "b", "c"]
            .iter()
            .map(|c| (format!("`{c}`"), "?".to_string()))
            .collect();
        let (sql, params) = keyset_condition(&three);
        assert_eq!(
            sql,
            "`a` >= ? AND (`a` > ? OR (`a` = ? AND `b` > ?) OR (`a` = ? AND `b` = ? AND `c` > ?))"
        );
        assert_eq!(params, vec![0, 0, 0, 1, 0, 1, 2]);
    }

    #[test]
    fn conditions_that_could_leave_their_parentheses_are_refused() {
        assert!(check_condition("id > 10 AND name = 'a)b'").is_ok());
        assert!(check_condition("(a = 1) OR (b = \"x\\\"y\")").is_ok());
        assert!(check_condition("note = 'it''s'").is_ok());
        for bad in [
            "",
            "  ",
            "1) UNION SELECT (1",
            "1; DROP TABLE t",
            "1 -- x",
            "1 # x",
            "1 /* x */",
            "(1",
            "a = 'open",
        ] {
            assert!(check_condition(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn long_char_metadata_resolves_to_its_length() {
        use crate::source::value::ColumnInfo;
        for octets in [10u64, 255, 256, 400, 1020] {
            let f = ColumnFacts {
                octets: Some(octets),
                ..facts("c", "binary", false)
            };
            let (ty, meta) = binlog_type(&f, true).expect("char maps");
            let kind = ColumnKind::resolve(&ColumnInfo {
                binlog_type: ty,
                meta: &meta,
                is_binary: true,
                ..Default::default()
            })
            .expect("resolves");
            match kind {
                ColumnKind::Str { pad_to, .. } => assert_eq!(u64::from(pad_to), octets),
                other => panic!("{other:?}"),
            }
        }
    }
}
