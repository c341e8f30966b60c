//! `pikachu task list|pause|resume`: the subcommands' glue over the state
//! store (`store::control`) and the tasks' backlog files. A pause is a row
//! in the store: a running pikachu takes it up within about a second (its
//! engine starts nothing, its changes go to its backlog), a stopped one at
//! its next start.

use std::process::ExitCode;

use super::{Cli, TaskCommand};
use crate::config::{self, Config};
use crate::store::backlog::{file_of, Backlog};
use crate::store::{Filter, Store};

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

fn list(cfg: &Config) -> ExitCode {
    let store = match Store::open_existing(&cfg.state_dir) {
        Ok(s) => s,
        Err(e) => return fail(EXIT_RUNTIME, &e.to_string()),
    };
    let paused = match store.as_ref().map(|s| s.paused_tasks()).transpose() {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => return fail(EXIT_RUNTIME, &e.to_string()),
    };
    let now = crate::store::unix_millis(std::time::SystemTime::now());
    for t in &cfg.tasks {
        let state = if paused.contains(&t.task_id) {
            "paused"
        } else {
            "active"
        };
        let extent = if file_of(&cfg.state_dir, &t.task_id).exists() {
            match Backlog::open(&cfg.state_dir, &t.task_id).and_then(|b| b.extent()) {
                Ok(e) => e,
                Err(e) => return fail(EXIT_RUNTIME, &e.to_string()),
            }
        } else {
            Default::default()
        };
        let dead = match &store {
            Some(s) => match s.dead_letters(&Filter {
                task_id: Some(t.task_id.clone()),
                id: None,
            }) {
                Ok(d) => d.len(),
                Err(e) => return fail(EXIT_RUNTIME, &e.to_string()),
            },
            None => 0,
        };
        let age = extent
            .oldest
            .map(|o| format!(", oldest {} s", (now - o).max(0) / 1000))
            .unwrap_or_default();
        println!(
            "{:<20} {:<7} backlog {} changes, {:.1} MiB{age}; dead letters {dead}",
            t.task_id,
            state,
            extent.rows,
            extent.bytes as f64 / (1024.0 * 1024.0),
        );
    }
    ExitCode::SUCCESS
}
