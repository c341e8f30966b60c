//! TABLE_MAP events: a table's column types and metadata as the binlog
//! describes them, plus the optional metadata (`binlog_row_metadata=FULL`:
//! names, signedness, charsets, ENUM/SET labels, primary key), resolved once
//! per table into a [`TableDecoder`] that the row loop uses for every row.

use std::sync::Arc;

use mysql_common::binlog::events::{
    ColumnCharsets, ColumnNames, DefaultCharset, EnumsStrValues, OptionalMetadataField,
    SetsStrValues, TableMapEvent,
};

use super::schema::TableSchema;
use super::value::{ColumnInfo, ColumnKind};
use crate::event::{Column, Table};

// Column type codes as they appear in TABLE_MAP.
pub(crate) const T_DECIMAL: u8 = 0x00;
pub(crate) const T_TINY: u8 = 0x01;
pub(crate) const T_SHORT: u8 = 0x02;
pub(crate) const T_LONG: u8 = 0x03;
pub(crate) const T_FLOAT: u8 = 0x04;
pub(crate) const T_DOUBLE: u8 = 0x05;
pub(crate) const T_LONGLONG: u8 = 0x08;
pub(crate) const T_INT24: u8 = 0x09;
pub(crate) const T_YEAR: u8 = 0x0d;
pub(crate) const T_VARCHAR: u8 = 0x0f;
pub(crate) const T_BIT: u8 = 0x10;
pub(crate) const T_TIMESTAMP2: u8 = 0x11;
pub(crate) const T_DATETIME2: u8 = 0x12;
pub(crate) const T_TIME2: u8 = 0x13;
pub(crate) const T_VECTOR: u8 = 0xf2;
pub(crate) const T_NEWDECIMAL: u8 = 0xf6;
pub(crate) const T_ENUM: u8 = 0xf7;
pub(crate) const T_SET: u8 = 0xf8;
pub(crate) const T_BLOB: u8 = 0xfc;
pub(crate) const T_VAR_STRING: u8 = 0xfd;
pub(crate) const T_STRING: u8 = 0xfe;
pub(crate) const T_GEOMETRY: u8 = 0xff;

/// The real type of a column: STRING columns carry ENUM/SET in their metadata.
pub(crate) fn real_type(ty: u8, meta: &[u8]) -> u8 {
    if ty == T_STRING {
        if let Some(&b0) = meta.first() {
            if b0 & 0x30 != 0x30 {
                return T_STRING; // long CHAR: length bits are mixed into byte 0
            }
            return b0;
        }
    }
    ty
}

/// Numeric columns, in the sense of the SIGNEDNESS optional metadata.
fn is_numeric(real: u8) -> bool {
    matches!(
        real,
        T_TINY
            | T_SHORT
            | T_INT24
            | T_LONG
            | T_LONGLONG
            | T_DECIMAL
            | T_NEWDECIMAL
            | T_FLOAT
            | T_DOUBLE
            | T_YEAR
    )
}

/// Character columns, in the sense of the charset optional metadata.
fn is_character(real: u8) -> bool {
    matches!(real, T_STRING | T_VAR_STRING | T_VARCHAR | T_BLOB)
}

/// One column of a TABLE_MAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MapColumn {
    pub ty: u8,
    pub meta: Vec<u8>,
    pub nullable: bool,
    pub name: Option<String>,
    pub unsigned: Option<bool>,
    pub collation: Option<u16>,
    pub enum_labels: Option<Vec<String>>,
    pub set_labels: Option<Vec<String>>,
}

/// A TABLE_MAP event, with optional metadata spread onto its columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableMap {
    pub table_id: u64,
    pub database: String,
    pub table: String,
    pub columns: Vec<MapColumn>,
    /// From SIMPLE_PRIMARY_KEY / PRIMARY_KEY_WITH_PREFIX, when present.
    pub primary_key: Option<Vec<usize>>,
}

impl TableMap {
    /// Whether the binlog carried column names (binlog_row_metadata=FULL).
    pub(crate) fn has_names(&self) -> bool {
        self.columns.iter().all(|c| c.name.is_some()) && !self.columns.is_empty()
    }
}

/// Parses a TABLE_MAP event.
pub fn parse(tme: &TableMapEvent<'_>) -> Result<TableMap, String> {
    let n = tme.columns_count() as usize;
    let mut columns = Vec::with_capacity(n);
    let nulls = tme.null_bitmask();
    for i in 0..n {
        let ty = match tme.get_raw_column_type(i) {
            Ok(Some(t)) => t as u8,
            Ok(None) => return Err(format!("column {i} missing from TABLE_MAP")),
            Err(e) => return Err(format!("column {} has an unknown type {}", i + 1, e.0)),
        };
        // Offsets are recomputed per column (quadratic), but a TABLE_MAP is
        // parsed once per distinct table definition, not per row.
        let meta = tme
            .get_column_metadata(i)
            .ok_or_else(|| {
                format!(
                    "TABLE_MAP metadata of column {} is missing or truncated",
                    i + 1
                )
            })?
            .to_vec();
        columns.push(MapColumn {
            ty,
            meta,
            nullable: nulls.get(i).map(|b| *b).unwrap_or(true),
            name: None,
            unsigned: None,
            collation: None,
            enum_labels: None,
            set_labels: None,
        });
    }
    let mut tm = TableMap {
        table_id: tme.table_id(),
        database: tme.database_name().into_owned(),
        table: tme.table_name().into_owned(),
        columns,
        primary_key: None,
    };
    apply_optional_metadata(tme, &mut tm)?;
    Ok(tm)
}

/// Indexes (into the table's columns) of the columns that each kind of
/// optional metadata field lists, in column order.
struct MetaColumns {
    numeric: Vec<usize>,
    character: Vec<usize>,
    enum_set: Vec<usize>,
    enums: Vec<usize>,
    sets: Vec<usize>,
}

impl MetaColumns {
    /// Groups the columns of `tm` by their real type.
    fn of(tm: &TableMap) -> MetaColumns {
        let real: Vec<u8> = tm
            .columns
            .iter()
            .map(|c| real_type(c.ty, &c.meta))
            .collect();
        let numeric: Vec<usize> = (0..real.len()).filter(|&i| is_numeric(real[i])).collect();
        let character: Vec<usize> = (0..real.len()).filter(|&i| is_character(real[i])).collect();
        let enum_set: Vec<usize> = (0..real.len())
            .filter(|&i| matches!(real[i], T_ENUM | T_SET))
            .collect();
        let enums: Vec<usize> = (0..real.len()).filter(|&i| real[i] == T_ENUM).collect();
        let sets: Vec<usize> = (0..real.len()).filter(|&i| real[i] == T_SET).collect();
        MetaColumns {
            numeric,
            character,
            enum_set,
            enums,
            sets,
        }
    }
}

/// The message for an optional metadata field `what` that could not be read.
fn meta_err(what: &str, e: std::io::Error) -> String {
    format!("optional metadata {what}: {e}")
}

/// Applies the optional metadata of `tme` (binlog_row_metadata=FULL) to `tm`.
fn apply_optional_metadata(tme: &TableMapEvent<'_>, tm: &mut TableMap) -> Result<(), String> {
    let cols = MetaColumns::of(tm);
    for field in tme.iter_optional_meta() {
        let field = field.map_err(|e| meta_err("", e))?;
        apply_meta_field(field, &cols, tm)?;
    }
    Ok(())
}

/// Applies one optional metadata field to the columns (or primary key) of `tm`.
fn apply_meta_field(
    field: OptionalMetadataField<'_>,
    cols: &MetaColumns,
    tm: &mut TableMap,
) -> Result<(), String> {
    match field {
        OptionalMetadataField::Signedness(bits) => {
            for (k, &i) in cols.numeric.iter().enumerate() {
                tm.columns[i].unsigned = Some(bits.get(k).map(|b| *b).unwrap_or(false));
            }
        }
        OptionalMetadataField::DefaultCharset(dc) => {
            apply_default_charset(&dc, &cols.character, "DEFAULT_CHARSET", tm)?
        }
        OptionalMetadataField::ColumnCharset(cc) => {
            apply_column_charsets(&cc, &cols.character, "COLUMN_CHARSET", tm)?
        }
        OptionalMetadataField::EnumAndSetDefaultCharset(dc) => {
            apply_default_charset(&dc, &cols.enum_set, "ENUM_AND_SET_DEFAULT_CHARSET", tm)?
        }
        OptionalMetadataField::EnumAndSetColumnCharset(cc) => {
            apply_column_charsets(&cc, &cols.enum_set, "ENUM_AND_SET_COLUMN_CHARSET", tm)?
        }
        OptionalMetadataField::ColumnName(names) => apply_column_names(&names, tm)?,
        OptionalMetadataField::EnumStrValue(values) => apply_enum_labels(&values, &cols.enums, tm)?,
        OptionalMetadataField::SetStrValue(values) => apply_set_labels(&values, &cols.sets, tm)?,
        OptionalMetadataField::SimplePrimaryKey(pk) => {
            let mut keys = Vec::new();
            for i in pk.iter_indexes() {
                keys.push(i.map_err(|e| meta_err("SIMPLE_PRIMARY_KEY", e))? as usize);
            }
            tm.primary_key = Some(keys);
        }
        OptionalMetadataField::PrimaryKeyWithPrefix(pk) => {
            let mut keys = Vec::new();
            for k in pk.iter_keys() {
                keys.push(
                    k.map_err(|e| meta_err("PRIMARY_KEY_WITH_PREFIX", e))?
                        .column_index() as usize,
                );
            }
            tm.primary_key = Some(keys);
        }
        OptionalMetadataField::GeometryType(_)
        | OptionalMetadataField::ColumnVisibility(_)
        | OptionalMetadataField::Dimensionality(_) => {}
    }
    Ok(())
}

/// Sets the collation of the columns at `targets`: the default, then the non-default ones.
fn apply_default_charset(
    dc: &DefaultCharset<'_>,
    targets: &[usize],
    what: &str,
    tm: &mut TableMap,
) -> Result<(), String> {
    let default = dc.default_charset();
    for &i in targets {
        tm.columns[i].collation = Some(default);
    }
    for nd in dc.iter_non_default() {
        let nd = nd.map_err(|e| meta_err(what, e))?;
        if let Some(&i) = targets.get(nd.column_index() as usize) {
            tm.columns[i].collation = Some(nd.charset());
        }
    }
    Ok(())
}

/// Sets the collation of each column at `targets` from a per-column list.
fn apply_column_charsets(
    cc: &ColumnCharsets<'_>,
    targets: &[usize],
    what: &str,
    tm: &mut TableMap,
) -> Result<(), String> {
    for (k, c) in cc.iter_charsets().enumerate() {
        let c = c.map_err(|e| meta_err(what, e))?;
        if let Some(&i) = targets.get(k) {
            tm.columns[i].collation = Some(c);
        }
    }
    Ok(())
}

/// Sets the column names.
fn apply_column_names(names: &ColumnNames<'_>, tm: &mut TableMap) -> Result<(), String> {
    for (i, name) in names.iter_names().enumerate() {
        let name = name.map_err(|e| meta_err("COLUMN_NAME", e))?;
        if let Some(col) = tm.columns.get_mut(i) {
            col.name = Some(name.name().into_owned());
        }
    }
    Ok(())
}

/// Sets the labels of the ENUM columns at `enums`.
fn apply_enum_labels(
    values: &EnumsStrValues<'_>,
    enums: &[usize],
    tm: &mut TableMap,
) -> Result<(), String> {
    for (k, labels) in values.iter_values().enumerate() {
        let labels = labels.map_err(|e| meta_err("ENUM_STR_VALUE", e))?;
        if let Some(&i) = enums.get(k) {
            tm.columns[i].enum_labels = Some(
                labels
                    .values()
                    .iter()
                    .map(|v| v.value().into_owned())
                    .collect(),
            );
        }
    }
    Ok(())
}

/// Sets the labels of the SET columns at `sets`.
fn apply_set_labels(
    values: &SetsStrValues<'_>,
    sets: &[usize],
    tm: &mut TableMap,
) -> Result<(), String> {
    for (k, labels) in values.iter_values().enumerate() {
        let labels = labels.map_err(|e| meta_err("SET_STR_VALUE", e))?;
        if let Some(&i) = sets.get(k) {
            tm.columns[i].set_labels = Some(
                labels
                    .values()
                    .iter()
                    .map(|v| v.value().into_owned())
                    .collect(),
            );
        }
    }
    Ok(())
}

/// Everything the row loop needs for one table: the event-model table
/// (names, key) and each column's resolved decoder.
#[derive(Debug)]
pub(crate) struct TableDecoder {
    pub table: Arc<Table>,
    pub kinds: Vec<ColumnKind>,
}

/// Combines a TABLE_MAP with what `information_schema` says of the table
/// (when available) into a decoder. Binlog metadata wins where both exist;
/// the schema fills the gaps (names without FULL metadata, MariaDB JSON).
pub(crate) fn build_decoder(
    tm: &TableMap,
    schema: Option<&TableSchema>,
) -> Result<TableDecoder, String> {
    let n = tm.columns.len();
    if let Some(s) = schema {
        if !tm.has_names() && s.columns.len() != n {
            return Err(format!(
                "the binlog has {n} columns for `{}`.`{}` but the table has {} now (its definition changed since this event was written, and the binlog does not carry column names: set binlog_row_metadata=FULL)",
                tm.database,
                tm.table,
                s.columns.len()
            ));
        }
    }
    if let (Some(s), false) = (schema, tm.has_names()) {
        // Without names in the binlog, columns are matched by position: refuse
        // when the types say the definition is not the one the event was written with.
        for (i, (c, sc)) in tm.columns.iter().zip(&s.columns).enumerate() {
            let real = real_type(c.ty, &c.meta);
            if !super::schema::type_matches(&sc.data_type, real) {
                return Err(format!(
                    "column #{} is `{}` {} now, but the binlog event has a {} there: the table's definition changed since this event was written, and the binlog does not carry column names (set binlog_row_metadata=FULL); refusing to emit shifted columns",
                    i + 1,
                    sc.name,
                    sc.data_type,
                    super::value::type_name(real)
                ));
            }
        }
    }
    let mut columns = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    for (i, c) in tm.columns.iter().enumerate() {
        let sc = schema.and_then(|s| {
            // Match by name when the binlog has names, else by position.
            match &c.name {
                Some(name) => s.columns.iter().find(|sc| &sc.name == name),
                None => s.columns.get(i),
            }
        });
        let name = c
            .name
            .clone()
            .or_else(|| sc.map(|s| s.name.clone()))
            .unwrap_or_else(|| format!("@{}", i + 1));
        let info = ColumnInfo {
            binlog_type: c.ty,
            meta: &c.meta,
            unsigned: c.unsigned.or(sc.map(|s| s.unsigned)).unwrap_or(false),
            collation: c.collation.or(sc.and_then(|s| s.collation)),
            enum_labels: c
                .enum_labels
                .clone()
                .or_else(|| sc.and_then(|s| s.enum_labels.clone())),
            set_labels: c
                .set_labels
                .clone()
                .or_else(|| sc.and_then(|s| s.set_labels.clone())),
            is_json: sc.is_some_and(|s| s.is_json),
            is_binary: sc.is_some_and(|s| s.is_binary),
        };
        let kind = ColumnKind::resolve(&info).map_err(|e| format!("column `{name}`: {e}"))?;
        kinds.push(kind);
        columns.push(Column::new(name));
    }
    let primary_key = match &tm.primary_key {
        Some(pk) => pk.iter().copied().filter(|&i| i < n).collect(),
        None => schema
            .map(|s| {
                s.primary_key
                    .iter()
                    .filter_map(|k| columns.iter().position(|c: &Column| &c.name == k))
                    .collect()
            })
            .unwrap_or_default(),
    };
    Ok(TableDecoder {
        table: Arc::new(Table {
            database: tm.database.as_str().into(),
            name: tm.table.as_str().into(),
            columns,
            primary_key,
        }),
        kinds,
    })
}
