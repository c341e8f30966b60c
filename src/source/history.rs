//! The schema history: for each table pikachu follows, the definitions it
//! had, each with the binlog position it is valid from. Without column
//! names in the binlog (`binlog_row_metadata` MINIMAL or NO_LOG) a row
//! event only gives the column types, by position; the history says which
//! definition was in force when the event was written, so a change read
//! long after an `ALTER TABLE` (catching up after a stop) still gets the
//! names of its own time.
//!
//! DDL statements seen in the stream move the history: each is applied to
//! the definition before it ([`SchemaHistory::apply_ddl`], with `sqlparser`'s
//! MySQL dialect). What cannot be derived is an [`Definition::Unknown`] with
//! the reason; decoding a row without column names under it is an error
//! that says what happened and how to go on. Pure: no I/O (the live reader
//! loads, verifies against `information_schema` and persists it).

use std::cmp::Ordering;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, ColumnDef, ColumnOption, CreateTable,
    CreateTableLikeKind, CreateTableOptions, DataType, EnumMember, MySQLColumnPosition, ObjectName,
    ObjectNamePart, ObjectType, RenameTableNameKind, SqlOption, Statement, TableConstraint,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::charset::{charset_for_collation, BINARY_COLLATION};
use super::schema::{Collations, SchemaColumn, TableSchema};
use super::sql;

/// A binlog position (the end of an event). Ordered by the file's numeric
/// suffix, then the offset; the empty file is before everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HistPos {
    /// Binlog file name (`mysql-bin.000003`); empty: before any file.
    pub file: String,
    /// Byte offset in the file.
    pub pos: u64,
}

impl HistPos {
    /// A position in `file`.
    pub fn new(file: &str, pos: u64) -> HistPos {
        HistPos {
            file: file.to_string(),
            pos,
        }
    }

    /// Before every position.
    pub fn origin() -> HistPos {
        HistPos::new("", 0)
    }

    fn key(&self) -> (bool, u64, usize, &str, u64) {
        let suffix = self
            .file
            .rsplit('.')
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        (
            !self.file.is_empty(),
            suffix,
            self.file.len(),
            self.file.as_str(),
            self.pos,
        )
    }
}

impl Ord for HistPos {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for HistPos {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for HistPos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.file.is_empty() {
            return write!(f, "the start");
        }
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// What a table was from some position on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Definition {
    /// Its columns.
    Known {
        /// The definition.
        schema: TableSchema,
    },
    /// The table does not exist.
    Absent,
    /// Cannot be known; why, and what to do (said in full in errors).
    Unknown {
        /// One sentence: what happened, where.
        reason: String,
    },
}

impl Definition {
    /// The definition, when known.
    pub fn schema(&self) -> Option<&TableSchema> {
        match self {
            Definition::Known { schema } => Some(schema),
            _ => None,
        }
    }

    fn unknown(reason: impl Into<String>) -> Definition {
        Definition::Unknown {
            reason: reason.into(),
        }
    }
}

/// One definition and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Valid from this position (the end of the DDL event that made it, or
    /// where pikachu started following the table).
    pub from: HistPos,
    /// What the table was from there on.
    pub def: Definition,
}

/// A table: (database, name).
pub(crate) type TableKey = (String, String);

/// The definitions of the followed tables over time, and the new versions
/// not yet persisted.
#[derive(Debug, Clone, Default)]
pub struct SchemaHistory {
    /// Versions per table, ordered by `from`.
    tables: HashMap<TableKey, Vec<Version>>,
    /// Collations and character sets, for columns of DDL statements.
    pub collations: Collations,
    /// MariaDB (JSON is LONGTEXT there) rather than MySQL.
    pub mariadb: bool,
    /// Versions added or replaced since the last [`SchemaHistory::take_changed`].
    changed: Vec<(TableKey, Version)>,
    /// The start-up check against the binlog that is still to be done
    /// (deferred until a rows event without column names needs it; DDLs
    /// are not applied meanwhile; see [`super::schema_sync`]). `None`: done.
    pub unchecked: Option<Unchecked>,
}

/// Definitions taken from `information_schema` at start without reading
/// the binlog ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unchecked {
    /// Where the check starts (the reader's start).
    pub from: HistPos,
    /// The tables whose definition at `from` was put there for the meantime
    /// (removed before the check, which derives them itself).
    pub placed: Vec<TableKey>,
}

/// A table that matters to the history: followed, or in a database that has one.
pub(crate) type Relevant<'a> = &'a dyn Fn(&str, &str) -> bool;

impl SchemaHistory {
    /// An empty history for a server with these collations.
    pub fn new(collations: Collations, mariadb: bool) -> SchemaHistory {
        SchemaHistory {
            collations,
            mariadb,
            ..Default::default()
        }
    }

    /// Whether any version of `db`.`table` is kept.
    pub fn has(&self, db: &str, table: &str) -> bool {
        self.tables
            .contains_key(&(db.to_string(), table.to_string()))
    }

    /// Whether a table of `db` is followed.
    pub(crate) fn has_database(&self, db: &str) -> bool {
        self.tables.keys().any(|(d, _)| d == db)
    }

    /// Every table with a history.
    pub fn tables(&self) -> impl Iterator<Item = &TableKey> {
        self.tables.keys()
    }

    /// The versions of a table, oldest first.
    pub fn versions(&self, db: &str, table: &str) -> &[Version] {
        self.tables
            .get(&(db.to_string(), table.to_string()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The definition in force at `at` (the last version from at or before it).
    pub(crate) fn def_at(&self, db: &str, table: &str, at: &HistPos) -> Option<&Definition> {
        self.versions(db, table)
            .iter()
            .rev()
            .find(|v| v.from <= *at)
            .map(|v| &v.def)
    }

    /// The definition in force just before `at`.
    fn def_before(&self, key: &TableKey, at: &HistPos) -> Option<&Definition> {
        self.tables
            .get(key)?
            .iter()
            .rev()
            .find(|v| v.from < *at)
            .map(|v| &v.def)
    }

    /// The latest version of a table.
    pub fn latest(&self, db: &str, table: &str) -> Option<&Version> {
        self.versions(db, table).last()
    }

    /// The most recent known definition of a table (for matching binlog
    /// column names to JSON-ness and the like when the binlog has names).
    pub(crate) fn last_known(&self, db: &str, table: &str) -> Option<&TableSchema> {
        self.versions(db, table)
            .iter()
            .rev()
            .find_map(|v| v.def.schema())
    }

    /// Records `def` as valid from `from` (replacing a version at the same
    /// position). Recorded as changed, for the caller to persist.
    pub fn set(&mut self, db: &str, table: &str, from: HistPos, def: Definition) {
        let key = (db.to_string(), table.to_string());
        let list = self.tables.entry(key.clone()).or_default();
        let version = Version { from, def };
        match list.binary_search_by(|v| v.from.cmp(&version.from)) {
            Ok(i) if list[i] == version => return,
            Ok(i) => list[i] = version.clone(),
            Err(i) => list.insert(i, version.clone()),
        }
        self.changed.push((key, version));
    }

    /// Removes the version of `db`.`table` valid from exactly `from`, if any
    /// (not recorded as changed: only for versions that were never saved).
    pub(crate) fn unload(&mut self, db: &str, table: &str, from: &HistPos) {
        if let Some(list) = self.tables.get_mut(&(db.to_string(), table.to_string())) {
            list.retain(|v| v.from != *from);
        }
    }

    /// Loads a stored version (not recorded as changed).
    pub fn load(&mut self, db: &str, table: &str, from: HistPos, def: Definition) {
        self.set(db, table, from, def);
        self.changed.pop();
    }

    /// The versions added or replaced since the last call.
    pub(crate) fn take_changed(&mut self) -> Vec<(TableKey, Version)> {
        std::mem::take(&mut self.changed)
    }

    /// Forgets versions superseded before `at` (keeps the one in force there).
    pub(crate) fn prune_before(&mut self, at: &HistPos) {
        for list in self.tables.values_mut() {
            if let Some(keep) = list.iter().rposition(|v| v.from <= *at) {
                list.drain(..keep);
            }
        }
    }

    /// Applies the DDL statement `sql` (default database `default_db`), whose
    /// event ends at `at`, to the definitions before `at`. Tables for which
    /// `relevant` is false and that have no history are left alone. A table
    /// that already has a version at `at` keeps it (the DDL was applied
    /// before: a restart from an earlier checkpoint, or a look-ahead).
    /// Returns the tables whose definition changed at `at`.
    pub(crate) fn apply_ddl(
        &mut self,
        at: &HistPos,
        default_db: &str,
        sql_text: &str,
        relevant: Relevant<'_>,
    ) -> Vec<TableKey> {
        // Only table DDL goes to the parser: other statements (CREATE USER
        // … IDENTIFIED BY …) change no table, and must not reach its logs.
        let summary = sql::summarize(sql_text, default_db);
        if !TABLE_DDL.contains(&summary.kind.as_str()) {
            return Vec::new();
        }
        let results = match Parser::parse_sql(&MySqlDialect {}, sql_text) {
            Ok(statements) => {
                let mut work = Work {
                    history: self,
                    at,
                    default_db,
                    relevant,
                    changes: Vec::new(),
                };
                for st in &statements {
                    work.statement(st);
                }
                work.changes
            }
            Err(e) => {
                // The tables it names, as far as the lexer sees them.
                summary
                    .tables
                    .into_iter()
                    .filter(|(d, t)| self.has(d, t) || relevant(d, t))
                    .map(|k| {
                        let reason = format!(
                            "the {} statement at {at} could not be parsed ({e})",
                            summary.kind
                        );
                        (k, Definition::unknown(reason))
                    })
                    .collect()
            }
        };
        // The last definition of each table, in the order they were named.
        let mut finals: Vec<(TableKey, Definition)> = Vec::new();
        for (key, def) in results {
            match finals.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = def,
                None => finals.push((key, def)),
            }
        }
        let mut changed = Vec::new();
        for (key, def) in finals {
            let applied_before = self.versions(&key.0, &key.1).iter().any(|v| v.from == *at);
            if !applied_before {
                self.set(&key.0, &key.1, at.clone(), def);
                changed.push(key);
            }
        }
        changed
    }
}

/// The statements that may change a table's columns.
const TABLE_DDL: &[&str] = &["ALTER TABLE", "CREATE TABLE", "DROP TABLE", "RENAME TABLE"];

/// One DDL statement being applied: the definitions it produced so far
/// (later statements and renames see them).
struct Work<'a> {
    /// The definitions before the statement.
    history: &'a SchemaHistory,
    /// Where the statement's event ends.
    at: &'a HistPos,
    /// The statement's default database.
    default_db: &'a str,
    /// Whether a table without history is to be followed.
    relevant: Relevant<'a>,
    /// What the statement made of each table so far, in order.
    changes: Vec<(TableKey, Definition)>,
}

impl Work<'_> {
    fn key(&self, name: &ObjectName) -> TableKey {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| match p {
                ObjectNamePart::Identifier(i) => i.value.clone(),
                other => other.to_string(),
            })
            .collect();
        match parts.as_slice() {
            [.., db, table] => (db.clone(), table.clone()),
            [table] => (self.default_db.to_string(), table.clone()),
            [] => (self.default_db.to_string(), String::new()),
        }
    }

    fn followed(&self, key: &TableKey) -> bool {
        self.changes.iter().any(|(k, _)| k == key)
            || self.history.has(&key.0, &key.1)
            || (self.relevant)(&key.0, &key.1)
    }

    /// The definition of `key` at this point of the statement.
    fn current(&self, key: &TableKey) -> Definition {
        if let Some((_, d)) = self.changes.iter().rev().find(|(k, _)| k == key) {
            return d.clone();
        }
        match self.history.def_before(key, self.at) {
            Some(d) => d.clone(),
            None => Definition::unknown(format!(
                "pikachu has no definition of `{}`.`{}` before the DDL at {}",
                key.0, key.1, self.at
            )),
        }
    }

    fn put(&mut self, key: TableKey, def: Definition) {
        self.changes.push((key, def));
    }

    fn statement(&mut self, st: &Statement) {
        match st {
            Statement::CreateTable(ct) => self.create(ct),
            Statement::AlterTable(alter) => {
                let key = self.key(&alter.name);
                if !self.followed(&key) {
                    return;
                }
                let def = self.current(&key);
                self.alter(key, def, &alter.operations);
            }
            Statement::RenameTable(renames) => {
                for r in renames {
                    let (old, new) = (self.key(&r.old_name), self.key(&r.new_name));
                    self.rename(old, new);
                }
            }
            Statement::Drop {
                object_type: ObjectType::Table,
                names,
                temporary: false,
                ..
            } => {
                for n in names {
                    let key = self.key(n);
                    if self.followed(&key) {
                        self.put(key, Definition::Absent);
                    }
                }
            }
            _ => {}
        }
    }

    fn rename(&mut self, old: TableKey, new: TableKey) {
        let (old_followed, new_followed) = (self.followed(&old), self.followed(&new));
        if !old_followed && !new_followed {
            return;
        }
        let def = if old_followed {
            self.current(&old)
        } else {
            Definition::unknown(format!(
                "`{}`.`{}` was renamed to `{}`.`{}` at {}, and pikachu did not follow the definition of `{}`.`{}`",
                old.0, old.1, new.0, new.1, self.at, old.0, old.1
            ))
        };
        if old_followed {
            self.put(old, Definition::Absent);
        }
        self.put(new, def);
    }

    fn create(&mut self, ct: &CreateTable) {
        let key = self.key(&ct.name);
        if ct.temporary || !self.followed(&key) && !self.history.has_database(&key.0) {
            return;
        }
        if ct.if_not_exists {
            let known = self.changes.iter().any(|(k, _)| *k == key)
                || self.history.def_before(&key, self.at).is_some();
            if known && !matches!(self.current(&key), Definition::Absent) {
                return;
            }
        }
        let def = if ct.query.is_some() {
            Definition::unknown(format!(
                "`{}`.`{}` was created from a query (CREATE TABLE … SELECT) at {}, whose columns pikachu does not derive",
                key.0, key.1, self.at
            ))
        } else if let Some(like) = &ct.like {
            let source = match like {
                CreateTableLikeKind::Parenthesized(l) | CreateTableLikeKind::Plain(l) => {
                    self.key(&l.name)
                }
            };
            match self.current(&source) {
                Definition::Known { schema } => Definition::Known { schema },
                _ => Definition::unknown(format!(
                    "`{}`.`{}` was created LIKE `{}`.`{}` at {}, whose definition pikachu does not know",
                    key.0, key.1, source.0, source.1, self.at
                )),
            }
        } else {
            match self.table_from_create(&key, ct) {
                Ok(schema) => Definition::Known { schema },
                Err(e) => Definition::unknown(format!(
                    "the CREATE TABLE of `{}`.`{}` at {} could not be applied: {e}",
                    key.0, key.1, self.at
                )),
            }
        };
        self.put(key, def);
    }

    fn table_from_create(&self, key: &TableKey, ct: &CreateTable) -> Result<TableSchema, String> {
        let table_default =
            table_collation(&ct.table_options, &self.history.collations)?.or_else(|| {
                self.history
                    .collations
                    .database_default
                    .get(&key.0)
                    .copied()
            });
        let mut t = TableSchema {
            columns: Vec::new(),
            primary_key: Vec::new(),
            default_collation: table_default,
        };
        for cd in &ct.columns {
            let (col, pk) = self.column(cd, table_default)?;
            if pk {
                t.primary_key = vec![col.name.clone()];
            }
            t.columns.push(col);
        }
        for c in &ct.constraints {
            if let TableConstraint::PrimaryKey(pk) = c {
                t.primary_key = pk
                    .columns
                    .iter()
                    .map(|ic| canonical_name(&t, &ident_text(&ic.column.expr.to_string())))
                    .collect();
            }
        }
        Ok(t)
    }

    fn column(
        &self,
        cd: &ColumnDef,
        table_default: Option<u16>,
    ) -> Result<(SchemaColumn, bool), String> {
        column_from_def(
            &cd.name.value,
            &cd.data_type,
            cd.options.iter().map(|o| &o.option),
            table_default,
            &self.history.collations,
            self.history.mariadb,
        )
    }

    fn alter(&mut self, key: TableKey, def: Definition, ops: &[AlterTableOperation]) {
        let mut key = key;
        let mut def = def;
        for op in ops {
            if let AlterTableOperation::RenameTable { table_name } = op {
                let new = match table_name {
                    RenameTableNameKind::As(n) | RenameTableNameKind::To(n) => self.key(n),
                };
                self.put(key.clone(), Definition::Absent);
                key = new;
                continue;
            }
            def = match def {
                Definition::Known { schema } => match self.alter_op(schema, op) {
                    Ok(schema) => Definition::Known { schema },
                    Err(e) => Definition::unknown(format!(
                        "the ALTER TABLE of `{}`.`{}` at {} could not be applied: {e}",
                        key.0, key.1, self.at
                    )),
                },
                Definition::Absent => Definition::unknown(format!(
                    "`{}`.`{}` was altered at {} while pikachu thought it did not exist",
                    key.0, key.1, self.at
                )),
                unknown => unknown,
            };
        }
        self.put(key, def);
    }

    fn alter_op(
        &self,
        mut t: TableSchema,
        op: &AlterTableOperation,
    ) -> Result<TableSchema, String> {
        use AlterTableOperation as Op;
        match op {
            Op::AddColumn {
                column_def,
                column_position,
                if_not_exists,
                ..
            } => {
                if position_of(&t, &column_def.name.value).is_some() {
                    if *if_not_exists {
                        return Ok(t);
                    }
                    return Err(format!("column `{}` exists already", column_def.name.value));
                }
                let (col, pk) = self.column(column_def, t.default_collation)?;
                if pk {
                    t.primary_key = vec![col.name.clone()];
                }
                insert_at(&mut t, col, column_position.as_ref(), None)?;
            }
            Op::DropColumn {
                column_names,
                if_exists,
                ..
            } => {
                for name in column_names {
                    match position_of(&t, &name.value) {
                        Some(i) => {
                            let gone = t.columns.remove(i).name;
                            t.primary_key.retain(|k| !k.eq_ignore_ascii_case(&gone));
                        }
                        None if *if_exists => {}
                        None => return Err(format!("there is no column `{}`", name.value)),
                    }
                }
            }
            Op::ModifyColumn {
                col_name,
                data_type,
                options,
                column_position,
            } => self.redefine(
                &mut t,
                &col_name.value,
                &col_name.value,
                data_type,
                options,
                column_position.as_ref(),
            )?,
            Op::ChangeColumn {
                old_name,
                new_name,
                data_type,
                options,
                column_position,
            } => self.redefine(
                &mut t,
                &old_name.value,
                &new_name.value,
                data_type,
                options,
                column_position.as_ref(),
            )?,
            Op::RenameColumn {
                old_column_name,
                new_column_name,
            } => {
                let i = position_of(&t, &old_column_name.value)
                    .ok_or_else(|| format!("there is no column `{}`", old_column_name.value))?;
                rename_key(&mut t, i, &new_column_name.value);
                t.columns[i].name = new_column_name.value.clone();
            }
            Op::AddConstraint {
                constraint: TableConstraint::PrimaryKey(pk),
                ..
            } => {
                t.primary_key = pk
                    .columns
                    .iter()
                    .map(|ic| canonical_name(&t, &ident_text(&ic.column.expr.to_string())))
                    .collect();
            }
            Op::DropPrimaryKey { .. } => t.primary_key.clear(),
            Op::AlterColumn { op, .. } => match op {
                AlterColumnOperation::SetDefault { .. }
                | AlterColumnOperation::DropDefault
                | AlterColumnOperation::SetNotNull
                | AlterColumnOperation::DropNotNull => {}
                other => return Err(format!("`ALTER COLUMN … {other}` is not understood")),
            },
            // No effect on the columns.
            Op::AddConstraint { .. }
            | Op::DropConstraint { .. }
            | Op::DropForeignKey { .. }
            | Op::DropIndex { .. }
            | Op::RenameConstraint { .. }
            | Op::Algorithm { .. }
            | Op::Lock { .. }
            | Op::AutoIncrement { .. }
            | Op::AddPartitions { .. }
            | Op::DropPartitions { .. }
            | Op::RenamePartitions { .. } => {}
            other => return Err(format!("`{other}` is not understood")),
        }
        Ok(t)
    }

    /// MODIFY / CHANGE: the column gets a new definition (and maybe name and place).
    fn redefine(
        &self,
        t: &mut TableSchema,
        old: &str,
        new: &str,
        data_type: &DataType,
        options: &[ColumnOption],
        position: Option<&MySQLColumnPosition>,
    ) -> Result<(), String> {
        let i = position_of(t, old).ok_or_else(|| format!("there is no column `{old}`"))?;
        let (col, pk) = column_from_def(
            new,
            data_type,
            options.iter(),
            t.default_collation,
            &self.history.collations,
            self.history.mariadb,
        )?;
        rename_key(t, i, new);
        if pk {
            t.primary_key = vec![new.to_string()];
        }
        match position {
            None => t.columns[i] = col,
            Some(p) => {
                t.columns.remove(i);
                insert_at(t, col, Some(p), Some(i))?;
            }
        }
        Ok(())
    }
}

/// The index of column `name` (column names are case-insensitive).
fn position_of(t: &TableSchema, name: &str) -> Option<usize> {
    t.columns
        .iter()
        .position(|c| c.name.to_lowercase() == name.to_lowercase())
}

/// A primary key part as the table spells the column.
fn canonical_name(t: &TableSchema, name: &str) -> String {
    position_of(t, name)
        .map(|i| t.columns[i].name.clone())
        .unwrap_or_else(|| name.to_string())
}

fn rename_key(t: &mut TableSchema, i: usize, new: &str) {
    let old = t.columns[i].name.clone();
    for k in &mut t.primary_key {
        if k.eq_ignore_ascii_case(&old) {
            *k = new.to_string();
        }
    }
}

fn insert_at(
    t: &mut TableSchema,
    col: SchemaColumn,
    position: Option<&MySQLColumnPosition>,
    default: Option<usize>,
) -> Result<(), String> {
    let i = match position {
        None => default.unwrap_or(t.columns.len()),
        Some(MySQLColumnPosition::First) => 0,
        Some(MySQLColumnPosition::After(c)) => {
            position_of(t, &c.value).ok_or_else(|| format!("there is no column `{}`", c.value))? + 1
        }
    };
    t.columns.insert(i.min(t.columns.len()), col);
    Ok(())
}

/// `` `a` `` → `a` (a key part as sqlparser prints it).
fn ident_text(s: &str) -> String {
    let s = s.trim();
    let s = s.split('(').next().unwrap_or(s).trim();
    s.trim_matches('`').replace("``", "`")
}

/// The table default collation of CREATE TABLE options (`DEFAULT CHARSET=x`, `COLLATE=y`).
fn table_collation(opts: &CreateTableOptions, c: &Collations) -> Result<Option<u16>, String> {
    let list: &[SqlOption] = match opts {
        CreateTableOptions::None => &[],
        CreateTableOptions::With(l)
        | CreateTableOptions::Options(l)
        | CreateTableOptions::Plain(l)
        | CreateTableOptions::TableProperties(l) => l,
    };
    let (mut charset, mut collate) = (None, None);
    for o in list {
        if let SqlOption::KeyValue { key, value } = o {
            let k = key.to_string().to_ascii_uppercase();
            let v = value.to_string().trim_matches(['\'', '"', '`']).to_string();
            match k.trim_start_matches("DEFAULT ").trim() {
                "CHARSET" | "CHARACTER SET" => charset = Some(v),
                "COLLATE" => collate = Some(v),
                _ => {}
            }
        }
    }
    resolve_collation(charset.as_deref(), collate.as_deref(), c)
}

fn resolve_collation(
    charset: Option<&str>,
    collate: Option<&str>,
    c: &Collations,
) -> Result<Option<u16>, String> {
    if let Some(name) = collate {
        return c
            .collation(name)
            .map(Some)
            .ok_or_else(|| format!("unknown collation `{name}`"));
    }
    if let Some(name) = charset {
        if name.eq_ignore_ascii_case("binary") {
            return Ok(Some(BINARY_COLLATION));
        }
        return c
            .charset(name)
            .map(Some)
            .ok_or_else(|| format!("unknown character set `{name}`"));
    }
    Ok(None)
}

/// A column of a DDL statement in `information_schema`'s terms, and
/// whether it is declared PRIMARY KEY.
fn column_from_def<'o>(
    name: &str,
    data_type: &DataType,
    options: impl Iterator<Item = &'o ColumnOption>,
    table_default: Option<u16>,
    collations: &Collations,
    mariadb: bool,
) -> Result<(SchemaColumn, bool), String> {
    let (mut charset, mut collate, mut pk) = (None, None, false);
    for o in options {
        match o {
            ColumnOption::CharacterSet(n) => charset = Some(ident_text(&n.to_string())),
            ColumnOption::Collation(n) => collate = Some(ident_text(&n.to_string())),
            ColumnOption::PrimaryKey(_) => pk = true,
            _ => {}
        }
    }
    let text = data_type.to_string().to_ascii_uppercase();
    let unsigned = text.contains("UNSIGNED");
    let base: String = text.split(['(', ' ']).next().unwrap_or("").to_string();
    let length = text
        .split_once('(')
        .and_then(|(_, r)| r.split([')', ',']).next())
        .and_then(|n| n.trim().parse::<u64>().ok());
    let (mut enum_labels, mut set_labels) = (None, None);
    let labels = |members: &[EnumMember]| -> Vec<String> {
        members
            .iter()
            .map(|m| match m {
                EnumMember::Name(n) => n.clone(),
                EnumMember::NamedValue(n, _) => n.clone(),
            })
            .collect()
    };
    let (data, is_text, is_binary, is_json) = match (base.as_str(), data_type) {
        (_, DataType::Enum(members, _)) => {
            enum_labels = Some(labels(members));
            ("enum".to_string(), true, false, false)
        }
        (_, DataType::Set(members)) => {
            set_labels = Some(members.clone());
            ("set".to_string(), true, false, false)
        }
        ("TINYINT" | "BOOL" | "BOOLEAN", _) => ("tinyint".into(), false, false, false),
        ("SMALLINT", _) => ("smallint".into(), false, false, false),
        ("MEDIUMINT", _) => ("mediumint".into(), false, false, false),
        ("INT" | "INTEGER", _) => ("int".into(), false, false, false),
        ("BIGINT", _) => ("bigint".into(), false, false, false),
        ("FLOAT", _) if length.is_some_and(|p| p > 24) => ("double".into(), false, false, false),
        ("FLOAT", _) => ("float".into(), false, false, false),
        ("DOUBLE" | "REAL", _) => ("double".into(), false, false, false),
        ("DECIMAL" | "DEC" | "NUMERIC" | "FIXED", _) => ("decimal".into(), false, false, false),
        ("BIT", _) => ("bit".into(), false, false, false),
        ("YEAR", _) => ("year".into(), false, false, false),
        ("DATE", _) => ("date".into(), false, false, false),
        ("DATETIME", _) => ("datetime".into(), false, false, false),
        ("TIMESTAMP", _) => ("timestamp".into(), false, false, false),
        ("TIME", _) => ("time".into(), false, false, false),
        ("CHAR" | "CHARACTER", _) if text.contains("VARYING") => {
            ("varchar".into(), true, false, false)
        }
        ("CHAR" | "CHARACTER" | "NCHAR", _) => ("char".into(), true, false, false),
        ("VARCHAR" | "NVARCHAR", _) => ("varchar".into(), true, false, false),
        ("TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT", _) => {
            (base.to_ascii_lowercase(), true, false, false)
        }
        ("BINARY", _) => ("binary".into(), false, true, false),
        ("VARBINARY", _) => ("varbinary".into(), false, true, false),
        ("TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB", _) => {
            (base.to_ascii_lowercase(), false, true, false)
        }
        ("JSON", _) if mariadb => ("longtext".into(), true, false, true),
        ("JSON", _) => ("json".into(), false, false, true),
        (
            "GEOMETRY" | "POINT" | "LINESTRING" | "POLYGON" | "MULTIPOINT" | "MULTILINESTRING"
            | "MULTIPOLYGON" | "GEOMETRYCOLLECTION" | "GEOMCOLLECTION",
            _,
        ) => (base.to_ascii_lowercase(), false, false, false),
        ("SERIAL", _) => ("bigint".into(), false, false, false),
        ("UUID" | "INET4" | "INET6" | "VECTOR", _) => {
            (base.to_ascii_lowercase(), false, false, false)
        }
        _ => {
            return Err(format!(
                "column `{name}`: type `{data_type}` is not understood"
            ))
        }
    };
    let collation = if is_text {
        let json_default = if is_json {
            collations.collation("utf8mb4_bin")
        } else {
            None
        };
        match resolve_collation(charset.as_deref(), collate.as_deref(), collations)? {
            Some(c) => Some(c),
            None => json_default.or(table_default),
        }
    } else {
        None
    };
    Ok((
        SchemaColumn {
            name: name.to_string(),
            data_type: data,
            unsigned: unsigned || base == "SERIAL",
            collation,
            enum_labels,
            set_labels,
            is_json,
            is_binary,
        },
        pk,
    ))
}

/// The type family `information_schema`'s DATA_TYPE falls in, as far as
/// decoding is concerned (TEXT(n) becomes whichever TEXT fits n).
fn family(data_type: &str) -> &str {
    match data_type {
        "tinytext" | "text" | "mediumtext" | "longtext" => "text",
        "tinyblob" | "blob" | "mediumblob" | "longblob" => "blob",
        "integer" => "int",
        "bool" | "boolean" => "tinyint",
        "numeric" | "fixed" => "decimal",
        "real" | "double precision" => "double",
        other => other,
    }
}

fn same_charset(a: Option<u16>, b: Option<u16>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => charset_for_collation(a) == charset_for_collation(b),
        (None, None) => true,
        _ => false,
    }
}

/// Whether two definitions decode the same rows the same way; else the
/// first difference, in words.
pub(crate) fn difference(derived: &Definition, actual: Option<&TableSchema>) -> Option<String> {
    let d = match (derived, actual) {
        (Definition::Absent, None) => return None,
        (Definition::Absent, Some(_)) => {
            return Some("the table exists, but the DDLs say it does not".into())
        }
        (Definition::Unknown { reason }, _) => return Some(reason.clone()),
        (Definition::Known { .. }, None) => {
            return Some("the table does not exist, but the DDLs say it does".into())
        }
        (Definition::Known { schema }, Some(_)) => schema,
    };
    let a = actual?;
    let names = |t: &TableSchema| {
        t.columns
            .iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if d.columns.len() != a.columns.len() {
        return Some(format!(
            "columns ({}) derived, ({}) in information_schema",
            names(d),
            names(a)
        ));
    }
    for (x, y) in d.columns.iter().zip(&a.columns) {
        let what = if x.name.to_lowercase() != y.name.to_lowercase() {
            "name"
        } else if family(&x.data_type) != family(&y.data_type) {
            "type"
        } else if x.unsigned != y.unsigned {
            "signedness"
        } else if !same_charset(x.collation, y.collation) {
            "character set"
        } else if x.enum_labels != y.enum_labels || x.set_labels != y.set_labels {
            "labels"
        } else if x.is_json != y.is_json || x.is_binary != y.is_binary {
            "kind"
        } else {
            continue;
        };
        return Some(format!(
            "column `{}` {} {} derived, column `{}` {} in information_schema ({what} differs)",
            x.name,
            x.data_type,
            if x.unsigned { "unsigned" } else { "" },
            y.name,
            y.data_type
        ));
    }
    let lower = |k: &[String]| k.iter().map(|s| s.to_lowercase()).collect::<Vec<_>>();
    if lower(&d.primary_key) != lower(&a.primary_key) {
        return Some(format!(
            "primary key ({}) derived, ({}) in information_schema",
            d.primary_key.join(", "),
            a.primary_key.join(", ")
        ));
    }
    None
}

#[cfg(test)]
mod tests;
