//! `pikachu snapshot start|status|cancel`: the subcommands' glue over the
//! state store (`store::snapshot`). A request is a row in the store, so it
//! works whether pikachu is running or not: a running pikachu takes it up
//! within about a second, else the next start does.
//!
//! `start` checks the task and table against the config (exit 2), the
//! `--where` condition's shape, and, when the server can be reached, the
//! whole request against it (the table exists, has a usable key, the
//! condition is valid, the user may read it); `status --wait` follows the
//! progress: a bar per table on a terminal (rows done / estimated, rows/s,
//! ETA), plain lines otherwise.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{Cli, SnapshotCommand};
use crate::config::{self, Config, TaskConfig};
use crate::store::snapshot::{SnapshotKind, SnapshotRequest, SnapshotRow, TableProgress};
use crate::store::Store;

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

/// How often `status --wait` reads the store.
const POLL: Duration = Duration::from_millis(500);

/// A failed command: exit code and message lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// 2 for config/usage, 1 for runtime.
    pub code: u8,
    /// The message (first line after `error: `).
    pub message: String,
}

fn usage(message: String) -> Failure {
    Failure {
        code: EXIT_CONFIG,
        message,
    }
}

fn runtime(message: String) -> Failure {
    Failure {
        code: EXIT_RUNTIME,
        message,
    }
}

/// Runs `pikachu snapshot …` and returns the process's exit code. Errors
/// are one line on stderr (escaped like the binary's own).
pub fn run(cli: &Cli, command: &SnapshotCommand, rt: &tokio::runtime::Runtime) -> ExitCode {
    let loaded = match config::load(&cli.config, cli.tasks.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            let lines: Vec<String> = e
                .lines()
                .iter()
                .map(|l| crate::telemetry::escape(l).into_owned())
                .collect();
            eprintln!("error: {}", lines.join("\n"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let cfg = &loaded.config;
    let mut out = std::io::stdout();
    let result = match command {
        SnapshotCommand::Start {
            task,
            table,
            condition,
        } => start(
            cfg,
            task,
            table.as_deref(),
            condition.as_deref(),
            rt,
            &mut out,
        ),
        SnapshotCommand::Status { wait: false } => status(cfg, &mut out),
        SnapshotCommand::Status { wait: true } => wait(cfg, &mut out),
        SnapshotCommand::Cancel { task } => cancel(cfg, task, &mut out),
    };
    let _ = out.flush();
    match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", crate::telemetry::escape(&f.message));
            ExitCode::from(f.code)
        }
    }
}

/// The task `id` of the config, or a usage error listing the tasks.
pub(crate) fn find_task<'a>(cfg: &'a Config, id: &str) -> Result<&'a TaskConfig, Failure> {
    cfg.tasks.iter().find(|t| t.task_id == id).ok_or_else(|| {
        let ids: Vec<&str> = cfg.tasks.iter().map(|t| t.task_id.as_str()).collect();
        usage(format!(
            "unknown task `{id}`; the config's tasks are: {}",
            ids.join(", ")
        ))
    })
}

/// Checks `--table` (`db.table` or `table`) against the task's table;
/// returns the `db.table` to record.
pub(crate) fn check_table(
    cfg: &Config,
    task: &TaskConfig,
    table: Option<&str>,
) -> Result<String, Failure> {
    let (db, t) = cfg.task_table(task);
    let Some(given) = table else {
        return Ok(format!("{db}.{t}"));
    };
    let matches = match given.split_once('.') {
        Some((gd, gt)) => gd == db && gt == t,
        None => given == t,
    };
    if matches {
        Ok(format!("{db}.{t}"))
    } else {
        Err(usage(format!(
            "table `{given}` is not in task `{}` (its table is `{db}.{t}`); give --table {db}.{t} or leave --table out",
            task.task_id
        )))
    }
}

fn start(
    cfg: &Config,
    task_id: &str,
    table: Option<&str>,
    condition: Option<&str>,
    rt: &tokio::runtime::Runtime,
    out: &mut impl Write,
) -> Result<ExitCode, Failure> {
    let task = find_task(cfg, task_id)?;
    let table = check_table(cfg, task, table)?;
    let (db, t) = cfg.task_table(task);
    if let Some(c) = condition {
        crate::snapshot::plan::check_condition(c).map_err(|reason| {
            usage(
                crate::snapshot::SnapshotError::BadWhere {
                    db: db.clone(),
                    table: t.clone(),
                    condition: c.to_string(),
                    reason,
                }
                .to_string(),
            )
        })?;
    }
    match rt.block_on(check_on_server(cfg, &db, &t, condition)) {
        Ok(()) => {}
        Err(Checked::Refused(msg)) => return Err(usage(msg)),
        Err(Checked::Unreachable(msg)) => eprintln!(
            "warning: cannot check the request against the server ({}); it is checked when the snapshot runs",
            crate::telemetry::escape(&msg)
        ),
    }
    let mut store = Store::open(&cfg.state_dir).map_err(|e| runtime(e.to_string()))?;
    let req = SnapshotRequest {
        task_id: task.task_id.clone(),
        table: Some(table.clone()),
        condition: condition.map(str::to_string),
        kind: SnapshotKind::Backfill,
    };
    let (id, new) = store
        .request_snapshot(&req)
        .map_err(|e| runtime(e.to_string()))?;
    let what = match condition {
        Some(c) => format!("{table} where {c}"),
        None => table,
    };
    let line = if new {
        format!(
            "snapshot {id} requested: task {} ({what}); a running pikachu takes it up within a second, else the next `pikachu run` does (follow it with `pikachu snapshot status --wait`)",
            task.task_id
        )
    } else {
        format!(
            "snapshot {id} (task {}, {what}) is already pending or running; nothing new requested",
            task.task_id
        )
    };
    let _ = writeln!(out, "{}", crate::telemetry::escape(&line));
    Ok(ExitCode::SUCCESS)
}

/// Why a request could not be checked against the server.
enum Checked {
    /// The server says the request cannot work (no table, no key, bad condition, no privilege).
    Refused(String),
    /// The server could not be asked.
    Unreachable(String),
}

async fn check_on_server(
    cfg: &Config,
    db: &str,
    table: &str,
    condition: Option<&str>,
) -> Result<(), Checked> {
    use crate::source::connect;
    let ask = async {
        let mut conn = connect::connect(&cfg.database)
            .await
            .map_err(|e| Checked::Unreachable(e.to_string()))?;
        let info = connect::server_info(&mut conn)
            .await
            .map_err(|e| Checked::Unreachable(e.to_string()))?;
        crate::snapshot::chunk::prepare_session(&mut conn, db, table)
            .await
            .map_err(|e| Checked::Refused(e.to_string()))?;
        let mariadb = info.flavour == connect::Flavour::MariaDb;
        crate::snapshot::plan::plan_table(&mut conn, mariadb, db, table, condition)
            .await
            .map_err(|e| Checked::Refused(e.to_string()))?;
        let _ = conn.disconnect().await;
        Ok(())
    };
    match tokio::time::timeout(cfg.database.connect_timeout + Duration::from_secs(5), ask).await {
        Ok(r) => r,
        Err(_) => Err(Checked::Unreachable("timed out".into())),
    }
}

fn cancel(cfg: &Config, task_id: &str, out: &mut impl Write) -> Result<ExitCode, Failure> {
    let task = find_task(cfg, task_id)?;
    let n = match Store::open_existing(&cfg.state_dir).map_err(|e| runtime(e.to_string()))? {
        Some(mut store) => store
            .cancel_snapshots(&task.task_id)
            .map_err(|e| runtime(e.to_string()))?,
        None => 0,
    };
    let line = match n {
        0 => format!("task {} has no pending or running snapshot", task.task_id),
        n => format!(
            "cancelled {n} snapshot(s) of task {}; a running pikachu stops after the chunk in flight",
            task.task_id
        ),
    };
    let _ = writeln!(out, "{}", crate::telemetry::escape(&line));
    Ok(ExitCode::SUCCESS)
}

fn read_snapshots(cfg: &Config) -> Result<Vec<SnapshotRow>, Failure> {
    match Store::open_read_only(&cfg.state_dir).map_err(|e| runtime(e.to_string()))? {
        Some(store) => store.snapshots().map_err(|e| runtime(e.to_string())),
        None => Ok(Vec::new()),
    }
}

/// `12,345`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1h02m`, `3m05s`, `42s`.
fn short_duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// One table's progress as text: `db.t: 1,200 / ~5,000 rows (24%)`, with
/// the rate and ETA when known.
pub(crate) fn progress_line(p: &TableProgress, rate: Option<f64>) -> String {
    let mut s = format!("{}.{}: {} ", p.db, p.table, thousands(p.rows_done));
    if p.done {
        s.push_str("rows, done");
        return s;
    }
    if p.rows_estimated > 0 {
        let pct = (p.rows_done as f64 * 100.0 / p.rows_estimated as f64).min(100.0);
        s.push_str(&format!(
            "/ ~{} rows ({pct:.0}%)",
            thousands(p.rows_estimated)
        ));
    } else {
        s.push_str("rows");
    }
    if let Some(r) = rate.filter(|r| *r > 0.0) {
        s.push_str(&format!(", {} rows/s", thousands(r as u64)));
        if p.rows_estimated > p.rows_done {
            let eta = ((p.rows_estimated - p.rows_done) as f64 / r) as u64;
            s.push_str(&format!(", ETA {}", short_duration(eta)));
        }
    }
    s
}

/// A snapshot's head line: `snapshot 3 task orders (shop.orders where …): running`.
pub(crate) fn head_line(s: &SnapshotRow) -> String {
    let mut what = s.table.clone().unwrap_or_else(|| "all tables".into());
    if let Some(c) = &s.condition {
        what.push_str(&format!(" where {c}"));
    }
    let mut line = format!(
        "snapshot {} task {} ({what}, {}): {}",
        s.id,
        s.task_id,
        s.kind,
        s.state.as_str()
    );
    if let Some(e) = &s.error {
        line.push_str(&format!(": {e}"));
    }
    line
}

fn status(cfg: &Config, out: &mut impl Write) -> Result<ExitCode, Failure> {
    let all = read_snapshots(cfg)?;
    if all.is_empty() {
        let _ = writeln!(out, "no snapshots");
    }
    for s in &all {
        let _ = writeln!(out, "{}", crate::telemetry::escape(&head_line(s)));
        for p in &s.progress {
            let _ = writeln!(
                out,
                "  {}",
                crate::telemetry::escape(&progress_line(p, None))
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The rate of one table, from the first time `status --wait` saw it.
struct Seen {
    since: Instant,
    rows_at_start: u64,
    last_line: Option<Instant>,
    last_rows: u64,
}

fn rate(seen: &Seen, rows: u64) -> Option<f64> {
    let secs = seen.since.elapsed().as_secs_f64();
    (secs >= 1.0 && rows > seen.rows_at_start).then(|| (rows - seen.rows_at_start) as f64 / secs)
}

fn wait(cfg: &Config, out: &mut impl Write) -> Result<ExitCode, Failure> {
    let terminal = std::io::stdout().is_terminal();
    let bars = indicatif::MultiProgress::new();
    let mut bar_of: HashMap<(i64, String, String), indicatif::ProgressBar> = HashMap::new();
    let mut seen: HashMap<(i64, String, String), Seen> = HashMap::new();
    let mut ended: HashMap<i64, bool> = HashMap::new();
    let style = indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:30}] {pos}/{len} rows {per_sec} ETA {eta} {msg}",
    )
    .map_err(|e| runtime(e.to_string()))?
    .progress_chars("=> ");
    let mut watched_any = false;
    loop {
        let all = read_snapshots(cfg)?;
        let active = all.iter().filter(|s| s.state.is_active()).count();
        for s in &all {
            // Only snapshots active at some point while we watch.
            if !s.state.is_active() && !ended.contains_key(&s.id) {
                continue;
            }
            watched_any = true;
            let done_now = !s.state.is_active();
            let first_end = done_now && ended.get(&s.id) == Some(&false);
            ended.insert(s.id, done_now);
            for p in &s.progress {
                let key = (s.id, p.db.clone(), p.table.clone());
                let entry = seen.entry(key.clone()).or_insert(Seen {
                    since: Instant::now(),
                    rows_at_start: p.rows_done,
                    last_line: None,
                    last_rows: u64::MAX,
                });
                if terminal {
                    let bar = bar_of.entry(key).or_insert_with(|| {
                        let b = bars.add(indicatif::ProgressBar::new(p.rows_estimated.max(1)));
                        b.set_style(style.clone());
                        b.set_prefix(format!("snapshot {} {}.{}", s.id, p.db, p.table));
                        b
                    });
                    bar.set_length(p.rows_estimated.max(p.rows_done).max(1));
                    bar.set_position(p.rows_done);
                    if p.done || done_now {
                        bar.finish_with_message(s.state.as_str());
                    }
                } else {
                    let due = entry
                        .last_line
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
                    if (due && entry.last_rows != p.rows_done) || first_end {
                        let line = progress_line(p, rate(entry, p.rows_done));
                        let _ =
                            writeln!(out, "snapshot {} {}", s.id, crate::telemetry::escape(&line));
                        entry.last_line = Some(Instant::now());
                        entry.last_rows = p.rows_done;
                    }
                }
            }
            if first_end {
                let _ = writeln!(out, "{}", crate::telemetry::escape(&head_line(s)));
            }
        }
        let _ = out.flush();
        if active == 0 {
            if !watched_any {
                let _ = writeln!(out, "no pending or running snapshots");
            }
            let failed = all.iter().any(|s| {
                ended.contains_key(&s.id)
                    && s.state == crate::store::snapshot::SnapshotState::Failed
            });
            return Ok(if failed {
                ExitCode::from(EXIT_RUNTIME)
            } else {
                ExitCode::SUCCESS
            });
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(done: u64, est: u64, finished: bool) -> TableProgress {
        TableProgress {
            db: "shop".into(),
            table: "orders".into(),
            last_key: None,
            rows_done: done,
            rows_estimated: est,
            done: finished,
            chunks: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn progress_lines() {
        assert_eq!(
            progress_line(&progress(1200, 5000, false), None),
            "shop.orders: 1,200 / ~5,000 rows (24%)"
        );
        assert_eq!(
            progress_line(&progress(1000, 5000, false), Some(400.0)),
            "shop.orders: 1,000 / ~5,000 rows (20%), 400 rows/s, ETA 10s"
        );
        assert_eq!(
            progress_line(&progress(7, 0, false), Some(2.0)),
            "shop.orders: 7 rows, 2 rows/s"
        );
        assert_eq!(
            progress_line(&progress(1_234_567, 10, true), None),
            "shop.orders: 1,234,567 rows, done"
        );
        assert_eq!(short_duration(3725), "1h02m");
        assert_eq!(short_duration(185), "3m05s");
    }
}
