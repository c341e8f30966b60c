//! Preflight: checks that the database can be read from, at start and in
//! `pikachu check`. Each check yields ok / WARN / FAIL with one message that
//! says what is wrong and the exact fix (the SQL or the my.cnf line).
//!
//! Checked: connecting (and TLS), the account's privileges (read from its
//! grants, roles included), `log_bin`, `binlog_format`, `binlog_row_image`,
//! `binlog_row_metadata`, `server_id` (not the server's, not another
//! replica's), that every configured table exists, and the binlog retention.

pub(crate) mod grants;

use std::collections::BTreeSet;
use std::fmt;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::config::suggest;
use crate::config::Config;
use crate::source::binlogs::retention_secs;
use crate::source::connect::{self, Flavour, ServerInfo, TlsState};
use crate::source::SourceError;
use crate::telemetry::human_duration;
use grants::{Effective, Name};

/// Why the checks run: at start (findings are logged) or for `pikachu check`
/// (the caller prints them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Start,
    Check,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    /// The 4-character column of `pikachu check`: `ok  `, `WARN`, `FAIL`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub status: Status,
    /// Which check: `connect`, `tls`, `privileges`, `log_bin`,
    /// `binlog_format`, `binlog_row_image`, `binlog_row_metadata`,
    /// `server_id`, `tables`, `retention`.
    pub check: &'static str,
    /// One line: what is wrong and how to fix it (or what is fine).
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.label(), self.message)
    }
}

/// All findings, in check order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// The server's flavour, version and ids, when it could be reached.
    pub server: Option<ServerInfo>,
    /// How the connection was made, when it could be.
    pub tls: Option<TlsState>,
}

impl Report {
    fn push(&mut self, status: Status, check: &'static str, message: impl Into<String>) {
        self.findings.push(Finding {
            status,
            check,
            message: message.into(),
        });
    }

    /// No FAIL.
    pub fn passed(&self) -> bool {
        !self.findings.iter().any(|f| f.status == Status::Fail)
    }

    pub fn failures(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.status == Status::Fail)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.status == Status::Warn)
    }

    /// The findings of `check`.
    pub fn of(&self, check: &str) -> Vec<&Finding> {
        self.findings.iter().filter(|f| f.check == check).collect()
    }

    /// One line per finding (`ok   …`, `WARN …`, `FAIL …`).
    pub fn lines(&self) -> Vec<String> {
        self.findings.iter().map(|f| f.to_string()).collect()
    }

    /// Logs the findings: FAIL as errors, WARN as warnings, ok at debug.
    pub fn log(&self) {
        for f in &self.findings {
            match f.status {
                Status::Ok => tracing::debug!(check = f.check, "preflight ok: {}", f.message),
                Status::Warn => tracing::warn!(check = f.check, "{}", f.message),
                // Failures stop pikachu and reach the user as its one error
                // message (see `error`); logging them too would say it twice.
                Status::Fail => tracing::debug!(check = f.check, "preflight failed: {}", f.message),
            }
        }
    }

    /// The error that stops pikachu when a check failed: the message of the
    /// failure, or of each failure on its own line.
    pub fn error(&self) -> Option<String> {
        self.error_lines().map(|lines| lines.join("\n"))
    }

    /// [`Report::error`] as its lines: the one failure's message, or a
    /// heading and `  FAIL …` for each failure.
    pub(crate) fn error_lines(&self) -> Option<Vec<String>> {
        let fails: Vec<&Finding> = self.failures().collect();
        match fails.as_slice() {
            [] => None,
            [one] => Some(vec![one.message.clone()]),
            many => Some(
                std::iter::once(format!("{} preflight checks failed:", many.len()))
                    .chain(many.iter().map(|f| format!("  FAIL {}", f.message)))
                    .collect(),
            ),
        }
    }
}

/// Runs every check against the configured server. In [`Mode::Start`] the
/// findings are also logged (WARN as warnings, FAIL as errors).
pub async fn run(cfg: &Config, mode: Mode) -> Report {
    let mut report = Report::default();
    checks(cfg, &mut report).await;
    if mode == Mode::Start {
        report.log();
    }
    report
}

/// For `pikachu run`: the checks, logged; `Err` with the lines of the
/// message to stop with when one failed ([`Report::error_lines`]).
pub(crate) async fn at_start(cfg: &Config) -> Result<Report, Vec<String>> {
    let report = run(cfg, Mode::Start).await;
    match report.error_lines() {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

async fn checks(cfg: &Config, r: &mut Report) {
    let db = &cfg.database;
    let (mut conn, tls) = match connect::connect_tls(db).await {
        Ok(c) => c,
        Err(e) => {
            r.push(Status::Fail, "connect", e.to_string());
            return;
        }
    };
    let info = match connect::server_info(&mut conn).await {
        Ok(i) => i,
        Err(e) => {
            r.push(Status::Fail, "connect", e.to_string());
            return;
        }
    };
    r.push(
        Status::Ok,
        "connect",
        format!(
            "connected to {} as '{}' {}: {} {}, server_id {}",
            connect::addr(db),
            db.user,
            tls.describe(),
            match info.flavour {
                Flavour::MariaDb => "MariaDB",
                Flavour::MySql => "MySQL",
            },
            info.version,
            info.server_id
        ),
    );
    if tls == TlsState::FellBack {
        r.push(
            Status::Warn,
            "tls",
            format!(
                "the connection to {} is not encrypted: the server does not support TLS (database.tls: preferred); enable TLS on the server (ssl_cert and ssl_key under [mysqld] in my.cnf), or set database.tls: disabled to accept a plain connection",
                connect::addr(db)
            ),
        );
    }
    r.tls = Some(tls);

    let tables = configured_tables(cfg);
    let unreadable = check_privileges(&mut conn, &info, &tables, r).await;
    let vars = match global_variables(&mut conn).await {
        Ok(v) => v,
        Err(e) => {
            r.push(
                Status::Fail,
                "log_bin",
                format!("cannot read the server's binlog settings: {e}"),
            );
            Vec::new()
        }
    };
    if !vars.is_empty() {
        check_binlog(&vars, &info, r);
    }
    check_server_id(&mut conn, cfg, &info, r).await;
    // Without SELECT a table is invisible in information_schema: the
    // privileges FAIL says so, "does not exist" would be wrong.
    let visible: Vec<_> = tables
        .iter()
        .filter(|(d, t, _)| !unreadable.iter().any(|(ud, ut)| ud == d && ut == t))
        .cloned()
        .collect();
    check_tables(&mut conn, cfg, &visible, r).await;
    if !vars.is_empty() && binlog_on(&vars) {
        check_retention(&vars, r);
    }
    r.server = Some(info);
    let _ = conn.disconnect().await;
}

/// (database, table, task ids) of every task, without repeats, in config order.
fn configured_tables(cfg: &Config) -> Vec<(String, String, Vec<String>)> {
    let mut out: Vec<(String, String, Vec<String>)> = Vec::new();
    for t in &cfg.tasks {
        let (db, table) = cfg.task_table(t);
        match out.iter_mut().find(|(d, n, _)| *d == db && *n == table) {
            Some(entry) => entry.2.push(t.task_id.clone()),
            None => out.push((db, table, vec![t.task_id.clone()])),
        }
    }
    out
}

fn sql_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(se) => Some(se.code),
        _ => None,
    }
}

async fn text_rows(
    conn: &mut Conn,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, mysql_async::Error> {
    let rows: Vec<mysql_async::Row> = conn.query(sql).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            row.unwrap_raw()
                .into_iter()
                .map(|v| match v {
                    None | Some(mysql_async::Value::NULL) => None,
                    Some(mysql_async::Value::Bytes(b)) => {
                        Some(String::from_utf8_lossy(&b).into_owned())
                    }
                    Some(other) => Some(other.as_sql(true).trim_matches('\'').to_string()),
                })
                .collect()
        })
        .collect())
}

// ---------------------------------------------------------------- privileges

const REPL_SLAVE: [&str; 2] = ["REPLICATION SLAVE", "REPLICATION REPLICA"];

/// Spellings that give what REPLICATION CLIENT gives (SHOW MASTER STATUS,
/// SHOW BINARY LOGS): MariaDB 10.5+ calls it BINLOG MONITOR; SUPER includes
/// it on MySQL and on MariaDB before 10.5.2.
fn repl_client_spellings(info: &ServerInfo) -> Vec<&'static str> {
    let mut v = vec!["REPLICATION CLIENT", "BINLOG MONITOR"];
    let super_counts = match info.flavour {
        Flavour::MySql => true,
        Flavour::MariaDb => info.version_tuple < (10, 5, 2),
    };
    if super_counts {
        v.push("SUPER");
    }
    v
}

/// Checks the account's privileges; returns the configured tables it may
/// not SELECT from (empty when the grants could not be read).
async fn check_privileges(
    conn: &mut Conn,
    info: &ServerInfo,
    tables: &[(String, String, Vec<String>)],
    r: &mut Report,
) -> Vec<(String, String)> {
    match read_grants(conn, info).await {
        Ok((user, eff)) => {
            let mut missing = Vec::new();
            let unreadable: Vec<(String, String)> = tables
                .iter()
                .filter(|(d, t, _)| !eff.can_select(d, t))
                .map(|(d, t, _)| (d.clone(), t.clone()))
                .collect();
            let no_select: Vec<String> = unreadable
                .iter()
                .map(|(d, t)| format!("{}.{}", ident(d), ident(t)))
                .collect();
            if !no_select.is_empty() {
                missing.push("SELECT");
            }
            if !eff.has_global(&REPL_SLAVE) {
                missing.push("REPLICATION SLAVE");
            }
            if !eff.has_global(&repl_client_spellings(info)) {
                missing.push("REPLICATION CLIENT");
            }
            let account = format!(
                "{}@{}",
                sql_quote(&user.name),
                sql_quote(user.host.as_deref().unwrap_or("%"))
            );
            if missing.is_empty() {
                r.push(
                    Status::Ok,
                    "privileges",
                    format!("user {account} has SELECT, REPLICATION SLAVE, REPLICATION CLIENT"),
                );
                return unreadable;
            }
            let mut msg = format!(
                "user {account} lacks {} {}",
                if missing.len() == 1 {
                    "the privilege"
                } else {
                    "the privileges"
                },
                missing.join(", ")
            );
            if !no_select.is_empty() && no_select.len() < tables.len() {
                msg.push_str(&format!(" (SELECT on {})", no_select.join(", ")));
            }
            msg.push_str(&format!(
                ": run `GRANT {} ON *.* TO {account};`",
                missing.join(", ")
            ));
            let current = current_roles(conn, info).await;
            let inactive: Vec<&Name> = eff
                .roles_of_user
                .iter()
                .filter(|role| !current.iter().any(|c| c == &role.name))
                .collect();
            if !inactive.is_empty() {
                let names: Vec<String> = inactive.iter().map(|n| n.sql()).collect();
                let fix = match info.flavour {
                    Flavour::MariaDb => format!("SET DEFAULT ROLE {} FOR {account};", names[0]),
                    Flavour::MySql => {
                        format!("SET DEFAULT ROLE {} TO {account};", names.join(", "))
                    }
                };
                msg.push_str(&format!(
                    " (or, if the role {} has them: it is granted but not active at login; run `{fix}`)",
                    names.join(", ")
                ));
            }
            r.push(Status::Fail, "privileges", msg);
            unreadable
        }
        Err(e) => {
            r.push(
                Status::Warn,
                "privileges",
                format!(
                    "cannot read the grants of database.user: {e}; make sure it has SELECT, REPLICATION SLAVE, REPLICATION CLIENT"
                ),
            );
            Vec::new()
        }
    }
}

/// Names of the roles active in this session (those a login activates).
async fn current_roles(conn: &mut Conn, info: &ServerInfo) -> Vec<String> {
    let Ok(rows) = text_rows(conn, "SELECT CURRENT_ROLE()").await else {
        return Vec::new();
    };
    let Some(Some(value)) = rows.into_iter().next().and_then(|r| r.into_iter().next()) else {
        return Vec::new();
    };
    if value.eq_ignore_ascii_case("NONE") {
        return Vec::new();
    }
    match info.flavour {
        Flavour::MariaDb => vec![value],
        // MySQL: "`r1`@`%`,`r2`@`%`"
        Flavour::MySql => value
            .split(',')
            .filter_map(|part| {
                let name = part.split('@').next()?.trim().trim_matches('`');
                (!name.is_empty()).then(|| name.to_string())
            })
            .collect(),
    }
}

/// The account (`CURRENT_USER()`) and its privileges in effect. MariaDB's
/// `SHOW GRANTS` includes the active role and the roles granted to it;
/// MySQL's needs `USING` the active roles.
async fn read_grants(conn: &mut Conn, info: &ServerInfo) -> Result<(Name, Effective), String> {
    let rows = text_rows(conn, "SELECT CURRENT_USER()")
        .await
        .map_err(|e| e.to_string())?;
    let cu = rows
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten())
        .ok_or("CURRENT_USER() returned nothing")?;
    let (name, host) = match cu.rsplit_once('@') {
        Some((n, h)) => (n.to_string(), Some(h.to_string())),
        None => (cu.clone(), None),
    };
    let user = Name { name, host };
    let mut sql = "SHOW GRANTS".to_string();
    if info.flavour == Flavour::MySql {
        if let Ok(rows) = text_rows(conn, "SELECT CURRENT_ROLE()").await {
            let roles = rows
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next().flatten())
                .unwrap_or_default();
            if !roles.is_empty() && !roles.eq_ignore_ascii_case("NONE") {
                sql = format!("SHOW GRANTS FOR CURRENT_USER() USING {roles}");
            }
        }
    }
    let rows = text_rows(conn, &sql)
        .await
        .map_err(|e| format!("`{sql}` failed: {e}"))?;
    let mut eff = Effective::default();
    let mut parsed = 0;
    for row in rows {
        if let Some(Some(line)) = row.into_iter().next() {
            if let Some(g) = grants::parse(&line) {
                eff.add(g, &user);
                parsed += 1;
            }
        }
    }
    if parsed == 0 {
        return Err(format!("`{sql}` gave no GRANT line pikachu could read"));
    }
    Ok((user, eff))
}

// ---------------------------------------------------------------- binlog settings

const VARIABLES: [&str; 7] = [
    "log_bin",
    "binlog_format",
    "binlog_row_image",
    "binlog_row_metadata",
    "binlog_expire_logs_seconds",
    "expire_logs_days",
    "binlog_expire_logs_auto_purge",
];

/// Global values of the binlog variables the server has (unknown ones are absent).
async fn global_variables(conn: &mut Conn) -> Result<Vec<(String, String)>, SourceError> {
    let list: Vec<String> = VARIABLES.iter().map(|v| sql_quote(v)).collect();
    let sql = format!(
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN ({})",
        list.join(", ")
    );
    let rows = text_rows(conn, &sql)
        .await
        .map_err(|e| SourceError::query(&sql, e))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let mut it = r.into_iter();
            Some((
                it.next()??.to_ascii_lowercase(),
                it.next()?.unwrap_or_default(),
            ))
        })
        .collect())
}

fn var<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn binlog_on(vars: &[(String, String)]) -> bool {
    matches!(var(vars, "log_bin"), Some(v) if v == "1" || v.eq_ignore_ascii_case("ON"))
}

fn set_and_cnf(name: &str, value: &str) -> String {
    format!(
        "run `SET GLOBAL {name} = '{value}';` and add `{name}={value}` under [mysqld] in my.cnf (SET GLOBAL applies to new sessions)"
    )
}

fn check_binlog(vars: &[(String, String)], info: &ServerInfo, r: &mut Report) {
    if binlog_on(vars) {
        r.push(Status::Ok, "log_bin", "binary log is on");
    } else {
        let fix = match info.flavour {
            Flavour::MariaDb => "add `log-bin=mysql-bin` under [mysqld] in my.cnf and restart the server",
            Flavour::MySql => "remove `skip-log-bin`/`disable-log-bin` from my.cnf, or add `log-bin=mysql-bin` under [mysqld], and restart the server",
        };
        r.push(
            Status::Fail,
            "log_bin",
            format!("binary logging is off on the server, so there are no changes to read: {fix}"),
        );
    }

    let format = var(vars, "binlog_format")
        .unwrap_or("")
        .to_ascii_uppercase();
    if format == "ROW" {
        r.push(Status::Ok, "binlog_format", "binlog_format is ROW");
    } else {
        r.push(
            Status::Fail,
            "binlog_format",
            format!(
                "binlog_format is {}, but pikachu needs ROW (only row events carry the changed rows): {}",
                if format.is_empty() { "unknown" } else { &format },
                set_and_cnf("binlog_format", "ROW")
            ),
        );
    }

    if let Some(image) = var(vars, "binlog_row_image") {
        let image = image.to_ascii_uppercase();
        if image == "FULL" {
            r.push(Status::Ok, "binlog_row_image", "binlog_row_image is FULL");
        } else {
            let what = match image.as_str() {
                "MINIMAL" => "updates and deletes carry only the key and the changed columns, so old_data and new_data lack the other columns",
                "NOBLOB" => "unchanged BLOB/TEXT columns are left out of updates and deletes",
                _ => "rows in the binlog may lack columns",
            };
            r.push(
                Status::Warn,
                "binlog_row_image",
                format!(
                    "binlog_row_image is {image}: {what}; for whole rows {}",
                    set_and_cnf("binlog_row_image", "FULL")
                ),
            );
        }
    }

    // MySQL >= 8.0.1 and MariaDB >= 10.5 only; skipped where absent.
    if let Some(meta) = var(vars, "binlog_row_metadata") {
        let meta = meta.to_ascii_uppercase();
        if meta == "FULL" {
            r.push(
                Status::Ok,
                "binlog_row_metadata",
                "binlog_row_metadata is FULL",
            );
        } else {
            r.push(
                Status::Warn,
                "binlog_row_metadata",
                format!(
                    "binlog_row_metadata is {meta}: column names are not in the binlog, so pikachu follows each table's definition through the DDL statements it reads (its schema history), and stops when it cannot know the definition a change was written with (a DDL it cannot parse, or one not in the binlog); {}",
                    set_and_cnf("binlog_row_metadata", "FULL")
                ),
            );
        }
    }
}

// ---------------------------------------------------------------- server_id

async fn check_server_id(conn: &mut Conn, cfg: &Config, info: &ServerInfo, r: &mut Report) {
    let ours = cfg.database.server_id;
    if ours == info.server_id {
        r.push(
            Status::Fail,
            "server_id",
            format!(
                "database.server_id {ours} is the server's own server_id: set database.server_id to another number, unique among the server and its replicas (e.g. {})",
                suggest_id(&[info.server_id])
            ),
        );
        return;
    }
    let new_syntax = info.flavour == Flavour::MySql && info.version_tuple >= (8, 0, 22);
    let sql = if new_syntax {
        "SHOW REPLICAS"
    } else {
        "SHOW SLAVE HOSTS"
    };
    match text_rows(conn, sql).await {
        Ok(rows) => {
            // Server_id, Host, Port, Master_id/Source_id, ...
            let ids: Vec<u32> = rows
                .iter()
                .filter_map(|row| row.first().cloned().flatten()?.parse().ok())
                .collect();
            if let Some(row) = rows
                .iter()
                .find(|row| row.first().cloned().flatten().as_deref() == Some(&ours.to_string()))
            {
                let host = row.get(1).cloned().flatten().filter(|h| !h.is_empty());
                let mut used = ids.clone();
                used.push(info.server_id);
                r.push(
                    Status::Fail,
                    "server_id",
                    format!(
                        "database.server_id {ours} is already used by a replica connected to the server{}: two replicas with one id disconnect each other over and over; set database.server_id to an unused number (e.g. {}). If that replica is an earlier pikachu that just stopped, the server drops it within a minute",
                        host.map(|h| format!(" (from {h})")).unwrap_or_default(),
                        suggest_id(&used)
                    ),
                );
            } else {
                r.push(
                    Status::Ok,
                    "server_id",
                    format!(
                        "server_id {ours} is not the server's own ({}) nor that of a connected replica ({} connected)",
                        info.server_id,
                        ids.len()
                    ),
                );
            }
        }
        Err(e) => {
            let why = if server_code(&e) == Some(1227) {
                match info.flavour {
                    Flavour::MariaDb => {
                        "SHOW SLAVE HOSTS needs the REPLICATION MASTER ADMIN privilege".to_string()
                    }
                    Flavour::MySql => format!("{sql} needs the REPLICATION SLAVE privilege"),
                }
            } else {
                e.to_string()
            };
            r.push(
                Status::Ok,
                "server_id",
                format!(
                    "server_id {ours} is not the server's own ({}); other replicas' ids not checked ({why}): make sure no replica uses {ours}",
                    info.server_id
                ),
            );
        }
    }
}

/// A server_id not in `used`: a round number above the largest.
fn suggest_id(used: &[u32]) -> u32 {
    let max = used.iter().copied().max().unwrap_or(0);
    (max / 1000 + 1)
        .checked_mul(1000)
        .and_then(|n| n.checked_add(1))
        .unwrap_or_else(|| (1..=u32::MAX).find(|n| !used.contains(n)).unwrap_or(1))
}

// ---------------------------------------------------------------- tables

/// Checks that every configured table exists (and is a table, not a view).
async fn check_tables(
    conn: &mut Conn,
    cfg: &Config,
    tables: &[(String, String, Vec<String>)],
    r: &mut Report,
) {
    if tables.is_empty() {
        return;
    }
    let sql = tables_query(tables);
    let rows = match text_rows(conn, &sql).await {
        Ok(rows) => rows,
        Err(e) => {
            r.push(
                Status::Warn,
                "tables",
                format!("cannot list the tables (information_schema.TABLES): {e}"),
            );
            return;
        }
    };
    let found = found_tables(rows);
    let schemas = schema_names(conn).await;

    let mut ok = Vec::new();
    let mut fails = Vec::new();
    for (db, table, tasks) in tables {
        match table_finding(cfg, db, table, tasks, &found, &schemas) {
            Ok(qualified) => ok.push(qualified),
            Err(msg) => fails.push(msg),
        }
    }
    if !ok.is_empty() {
        r.push(Status::Ok, "tables", tables_ok_message(&ok));
    }
    for msg in fails {
        r.push(Status::Fail, "tables", msg);
    }
}

/// The information_schema.TABLES query for the configured tables' databases and names.
fn tables_query(tables: &[(String, String, Vec<String>)]) -> String {
    let dbs: BTreeSet<&str> = tables.iter().map(|(d, _, _)| d.as_str()).collect();
    let names: BTreeSet<&str> = tables.iter().map(|(_, t, _)| t.as_str()).collect();
    let list = |set: &BTreeSet<&str>| {
        set.iter()
            .map(|s| sql_quote(s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ({}) OR TABLE_NAME IN ({})",
        list(&dbs),
        list(&names)
    )
}

/// The (database, table, table type) rows of the tables query.
fn found_tables(rows: Vec<Vec<Option<String>>>) -> Vec<(String, String, String)> {
    rows.into_iter()
        .filter_map(|row| {
            let mut it = row.into_iter();
            Some((it.next()??, it.next()??, it.next()?.unwrap_or_default()))
        })
        .collect()
}

/// The server's database names (none when they cannot be listed).
async fn schema_names(conn: &mut Conn) -> Vec<String> {
    text_rows(conn, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
        .await
        .map(|rows| {
            rows.into_iter()
                .filter_map(|r| r.into_iter().next().flatten())
                .collect()
        })
        .unwrap_or_default()
}

/// One configured table: its qualified name when it exists, else the failure message.
fn table_finding(
    cfg: &Config,
    db: &str,
    table: &str,
    tasks: &[String],
    found: &[(String, String, String)],
    schemas: &[String],
) -> Result<String, String> {
    let qualified = format!("{}.{}", ident(db), ident(table));
    let whose = format!(
        "(task{} {})",
        if tasks.len() == 1 { "" } else { "s" },
        tasks.join(", ")
    );
    if let Some((_, _, kind)) = found.iter().find(|(d, t, _)| d == db && t == table) {
        if kind.eq_ignore_ascii_case("VIEW") || kind.eq_ignore_ascii_case("SYSTEM VIEW") {
            return Err(format!("{qualified} {whose} is a view: views have no row changes in the binlog; set table_name to the table the view reads"));
        }
        return Ok(qualified);
    }
    if !schemas.is_empty() && !schemas.iter().any(|s| s == db) {
        return Err(missing_database_message(
            cfg, db, &qualified, &whose, schemas,
        ));
    }
    Err(missing_table_message(db, table, &qualified, &whose, found))
}

/// The failure message for a table whose database does not exist (with a hint).
fn missing_database_message(
    cfg: &Config,
    db: &str,
    qualified: &str,
    whose: &str,
    schemas: &[String],
) -> String {
    let hint = suggest::closest(db, schemas.iter().map(String::as_str))
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    let key = if db == cfg.database.database {
        "database.database"
    } else {
        "the db. prefix of table_name"
    };
    format!(
        "table {qualified} {whose} does not exist: there is no database {}{hint} (fix {key})",
        ident(db)
    )
}

/// The failure message for a missing table (with hints: a near name, the same name elsewhere).
fn missing_table_message(
    db: &str,
    table: &str,
    qualified: &str,
    whose: &str,
    found: &[(String, String, String)],
) -> String {
    let same_db: Vec<&str> = found
        .iter()
        .filter(|(d, _, _)| d == db)
        .map(|(_, t, _)| t.as_str())
        .collect();
    let elsewhere: Vec<&str> = found
        .iter()
        .filter(|(d, t, _)| t == table && d != db)
        .map(|(d, _, _)| d.as_str())
        .collect();
    let mut hints = Vec::new();
    if let Some(near) = suggest::closest(table, same_db.iter().copied()) {
        hints.push(format!("did you mean `{near}`?"));
    }
    if let Some(other) = elsewhere.first() {
        hints.push(format!(
            "there is {}.{}: write table_name: {other}.{table}",
            ident(other),
            ident(table)
        ));
    }
    let mut msg = format!("table {qualified} {whose} does not exist");
    if !hints.is_empty() {
        msg.push_str(&format!(" ({})", hints.join("; ")));
    }
    msg.push_str(": fix table_name, or create the table");
    msg
}

/// The message listing the configured tables that exist.
fn tables_ok_message(ok: &[String]) -> String {
    format!(
        "{} configured table{} exist{}: {}",
        ok.len(),
        if ok.len() == 1 { "" } else { "s" },
        if ok.len() == 1 { "s" } else { "" },
        ok.join(", ")
    )
}

// ---------------------------------------------------------------- retention

/// Below this, a stop of pikachu (a weekend, a long outage) may outlast the
/// binlog it must resume from.
const MIN_RETENTION_SECS: f64 = 86_400.0;

fn check_retention(vars: &[(String, String)], r: &mut Report) {
    let has_seconds = var(vars, "binlog_expire_logs_seconds").is_some();
    match retention_secs(vars) {
        None => r.push(
            Status::Ok,
            "retention",
            "binlog retention: no automatic purge (binlog files are kept until purged by hand)",
        ),
        Some(secs) if secs < MIN_RETENTION_SECS => {
            let fix = if has_seconds {
                "run `SET GLOBAL binlog_expire_logs_seconds = 604800;` and add `binlog_expire_logs_seconds=604800` under [mysqld] in my.cnf (7 days)"
            } else {
                "run `SET GLOBAL expire_logs_days = 7;` and add `expire_logs_days=7` under [mysqld] in my.cnf"
            };
            r.push(
                Status::Warn,
                "retention",
                format!(
                    "binlog retention is only {}: if pikachu is stopped or behind for longer, the server purges the binlog it must resume from and those changes are lost; {fix}",
                    human_duration(secs)
                ),
            );
        }
        Some(secs) => r.push(
            Status::Ok,
            "retention",
            format!("binlog retention {}", human_duration(secs)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn retention_rules() {
        assert_eq!(
            retention_secs(&vars(&[
                ("binlog_expire_logs_seconds", "604800"),
                ("expire_logs_days", "7.000000")
            ])),
            Some(604_800.0)
        );
        assert_eq!(
            retention_secs(&vars(&[
                ("binlog_expire_logs_seconds", "0"),
                ("expire_logs_days", "0")
            ])),
            None
        );
        assert_eq!(
            retention_secs(&vars(&[("expire_logs_days", "2")])),
            Some(172_800.0)
        );
        assert_eq!(
            retention_secs(&vars(&[
                ("binlog_expire_logs_seconds", "3600"),
                ("binlog_expire_logs_auto_purge", "OFF")
            ])),
            None
        );
        assert_eq!(human_duration(604_800.0), "7 days");
        assert_eq!(human_duration(2_592_000.0), "30 days");
        assert_eq!(human_duration(3600.0), "60 minutes");
        assert_eq!(human_duration(7200.0), "2 hours");
        assert_eq!(human_duration(129_600.0), "36 hours");
        assert_eq!(human_duration(1.0), "1 second");
    }

    #[test]
    fn suggested_ids_are_unused() {
        assert_eq!(suggest_id(&[1]), 1001);
        assert_eq!(suggest_id(&[1, 1001]), 2001);
        assert_eq!(suggest_id(&[u32::MAX, 1]), 2);
    }

    #[test]
    fn report_error_text() {
        let mut r = Report::default();
        assert_eq!(r.error(), None);
        r.push(Status::Warn, "tls", "w");
        r.push(Status::Fail, "log_bin", "a");
        assert_eq!(r.error().as_deref(), Some("a"));
        r.push(Status::Fail, "tables", "b");
        assert_eq!(
            r.error().as_deref(),
            Some("2 preflight checks failed:\n  FAIL a\n  FAIL b")
        );
        assert_eq!(r.lines()[0], "WARN w");
    }
}
