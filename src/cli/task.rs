//! `pikachu task list|pause|resume`: the subcommands' glue over the state
//! store (`store::control`) and the tasks' backlog files. A pause is a row
//! in the store: a running pikachu takes it up within about a second (its
//! engine starts nothing, its changes go to its backlog), a stopped one at
//! its next start.

use std::process::ExitCode;

use super::{Cli, TaskCommand};
use crate::config::{self, Config};
use crate::store::backlog::{file_of, Backlog};
use crate::store::{Filter, Store, StoreError, TaskStatus};

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("error: {}", crate::telemetry::escape(message));
    ExitCode::from(code)
}

/// Runs `pikachu task …` and returns the process's exit code.
pub fn run(cli: &Cli, command: &TaskCommand) -> ExitCode {
    let loaded = match config::load(&cli.config, cli.tasks.as_deref()) {
        Ok(l) => l,
        Err(e) => return fail(EXIT_CONFIG, &e.lines().join("\n")),
    };
    let cfg = &loaded.config;
    match command {
        TaskCommand::List => list(cfg),
        TaskCommand::Pause { task } => set(cfg, task, true),
        TaskCommand::Resume { task } => set(cfg, task, false),
    }
}

fn known(cfg: &Config, task: &str) -> Result<(), String> {
    if cfg.tasks.iter().any(|t| t.task_id == task) {
        return Ok(());
    }
    let ids: Vec<&str> = cfg.tasks.iter().map(|t| t.task_id.as_str()).collect();
    Err(format!(
        "no task `{task}` in the config (its tasks: {})",
        ids.join(", ")
    ))
}

fn set(cfg: &Config, task: &str, paused: bool) -> ExitCode {
    if let Err(e) = known(cfg, task) {
        return fail(EXIT_CONFIG, &e);
    }
    let changed = Store::open(&cfg.state_dir).and_then(|mut s| s.set_paused(task, paused));
    match (changed, paused) {
        (Err(e), _) => fail(EXIT_RUNTIME, &e.to_string()),
        (Ok(false), true) => {
            println!("task {task} is paused already");
            ExitCode::SUCCESS
        }
        (Ok(false), false) => {
            println!("task {task} is not paused");
            ExitCode::SUCCESS
        }
        (Ok(true), true) => {
            println!("task {task} paused: a running pikachu takes it up within a second (else the next start does); nothing is sent to it and its changes go to its backlog until `pikachu task resume {task}`");
            ExitCode::SUCCESS
        }
        (Ok(true), false) => {
            println!("task {task} resumed: it delivers its backlog first, then its new changes");
            ExitCode::SUCCESS
        }
    }
}

/// A status written longer ago than this is not from a running pikachu
/// (it writes one every second).
const LIVE_MS: i64 = 5_000;

fn list(cfg: &Config) -> ExitCode {
    let store = match Store::open_existing(&cfg.state_dir) {
        Ok(s) => s,
        Err(e) => return fail(EXIT_RUNTIME, &e.to_string()),
    };
    let read = store
        .as_ref()
        .map(|s| Ok::<_, StoreError>((s.paused_tasks()?, s.task_status()?)));
    let (paused, status) = match read.transpose() {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => return fail(EXIT_RUNTIME, &e.to_string()),
    };
    let now = crate::store::unix_millis(std::time::SystemTime::now());
    for t in &cfg.tasks {
        let live = status.iter().find(|s| s.task_id == t.task_id);
        match line(
            cfg,
            store.as_ref(),
            &t.task_id,
            paused.contains(&t.task_id),
            live,
            now,
        ) {
            Ok(l) => println!("{l}"),
            Err(e) => return fail(EXIT_RUNTIME, &e.to_string()),
        }
    }
    ExitCode::SUCCESS
}

/// One task's line: state, whether a pikachu runs it (its rate and queue),
/// backlog, dead letters, last error.
fn line(
    cfg: &Config,
    store: Option<&Store>,
    task: &str,
    paused: bool,
    status: Option<&TaskStatus>,
    now: i64,
) -> Result<String, StoreError> {
    let live = status.filter(|s| now - s.updated_at < LIVE_MS);
    let state = match live {
        Some(s) => s.state.as_str(),
        None if paused => "paused",
        None => "active",
    };
    let running = match (live, status) {
        (Some(s), _) => format!(
            "running (pid {}): {:.1} changes/s, {} in memory",
            s.pid, s.rate, s.queued
        ),
        (None, Some(s)) => format!("not running (last seen {} ago)", ago(now - s.updated_at)),
        (None, None) => "not running".to_string(),
    };
    let extent = if file_of(&cfg.state_dir, task).exists() {
        Backlog::open(&cfg.state_dir, task).and_then(|b| b.extent())?
    } else {
        Default::default()
    };
    let dead = match store {
        Some(s) => s
            .dead_letters(&Filter {
                task_id: Some(task.to_string()),
                id: None,
            })?
            .len(),
        None => 0,
    };
    let age = extent
        .oldest
        .map(|o| format!(", oldest {}", ago(now - o)))
        .unwrap_or_default();
    let error = status
        .and_then(|s| s.last_error.as_ref())
        .map(|(e, at)| format!("; last error {} ago: {e}", ago(now - at)))
        .unwrap_or_default();
    Ok(format!(
        "{task:<20} {state:<12} {running}; backlog {} changes, {:.1} MiB{age}; dead letters {dead}{error}",
        extent.rows,
        extent.bytes as f64 / (1024.0 * 1024.0),
    ))
}

/// `12 s`, `5 min`, `3 h`, `2 d`.
fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}
