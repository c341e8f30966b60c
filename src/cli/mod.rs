//! Command line: `pikachu -config config.yaml` exactly as the Go tool, plus
//! `--config`/`-c`, `--version`, and subcommands. Go-style single-dash long
//! flags are rewritten before clap sees them (else `-config` would parse as
//! `-c onfig`).
//!
//! The binary's glue lives here: the arguments (this file) and the
//! `snapshot` subcommands over the state store ([`snapshot`]); `main`
//! dispatches and decides exit codes.

pub mod snapshot;
pub mod task;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "pikachu",
    version,
    about = "Change data capture from the MySQL/MariaDB binlog to webhooks"
)]
pub struct Cli {
    /// Config file (YAML).
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        default_value = "config.yaml"
    )]
    pub config: PathBuf,

    /// Separate tasks file (YAML), added to the config's tasks.
    #[arg(long = "tasks", global = true)]
    pub tasks: Option<PathBuf>,

    /// Forget the saved position before running: start from `start` in the config.
    #[arg(long = "reset-position")]
    pub reset_position: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum PositionCommand {
    /// Print the saved position.
    Show,
    /// Save a position to resume from: `latest`, `earliest`, `FILE:POS`, or a GTID (`gtid:0-1-100`).
    Set {
        /// latest | earliest | FILE:POS | gtid:GTID_SET
        position: String,
    },
    /// Forget the saved position: the next run starts from `start` in the config.
    Reset,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run: stream changes to the webhooks (the default).
    Run,
    /// Validate the config and, unless --offline, check the database.
    Check {
        /// Only validate the config file; do not connect.
        #[arg(long)]
        offline: bool,
    },
    /// The saved binlog position (checkpoint): show, set or reset it.
    Position {
        #[command(subcommand)]
        command: PositionCommand,
    },
    /// Dead letters: changes whose delivery failed after all retries.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Binlog files: decode them offline (`pikachu binlog decode FILE…`).
    Binlog {
        #[command(subcommand)]
        command: BinlogCommand,
    },
    /// Re-read a range of the server's binlog for the configured tasks (never writes the checkpoint).
    Replay(ReplayArgs),
    /// Snapshots and backfills: deliver the rows that exist already (`start`, `status`, `cancel`).
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Tasks: list their state and backlog, pause or resume one (`list`, `pause`, `resume`).
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// A tiny webhook receiver that prints every request it gets (for trying pikachu out).
    DemoReceiver {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: String,
    },
}

/// `pikachu dlq ...`. `--id` takes a dead-letter id (the number `list`
/// prints) or a change id.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// One line per dead letter: id, task, change id, attempts, last attempt, last error.
    List {
        /// Only this task's dead letters.
        #[arg(long)]
        task: Option<String>,
    },
    /// Everything recorded about one dead letter, and its body.
    Show {
        /// The dead letter's id (from `list`).
        id: i64,
    },
    /// Re-send dead letters, oldest first, through the normal delivery path;
    /// delete those that got a 2xx. A task's first one that still fails
    /// stops that task (the other tasks go on); exit 1 if any failed.
    Replay {
        /// Only this task's dead letters.
        #[arg(long)]
        task: Option<String>,
        /// Only this dead letter (dead-letter id or change id).
        #[arg(long)]
        id: Option<String>,
    },
    /// Delete dead letters (without --id, --yes is required).
    Purge {
        /// Only this task's dead letters.
        #[arg(long)]
        task: Option<String>,
        /// Only this dead letter (dead-letter id or change id).
        #[arg(long)]
        id: Option<String>,
        /// Confirm deleting more than one.
        #[arg(long)]
        yes: bool,
    },
}

/// `pikachu snapshot …`: requests go through the state store, so they work
/// whether pikachu is running (it takes them up within about a second) or
/// not (the next start does). See `cli::snapshot`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Request a snapshot (backfill) of a task's table, optionally of the rows matching --where.
    Start {
        /// The task whose webhook gets the rows.
        #[arg(long)]
        task: String,
        /// The table (`db.table` or `table`); default: the task's table.
        #[arg(long)]
        table: Option<String>,
        /// Only rows matching this SQL condition, e.g. "created_at >= '2024-01-01'".
        #[arg(long = "where")]
        condition: Option<String>,
    },
    /// The snapshots and their progress; with --wait, follow them until they end.
    Status {
        /// Follow the running and pending snapshots (a progress bar on a terminal) until they end.
        #[arg(long)]
        wait: bool,
    },
    /// Cancel a task's pending and running snapshots.
    Cancel {
        /// The task.
        #[arg(long)]
        task: String,
    },
}

/// `pikachu task …`: through the state store, so they work whether pikachu
/// is running (it takes a pause up within about a second) or not (the next
/// start does). See `cli::task`.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Each task: active or paused, its backlog (changes, bytes, age) and dead letters.
    List,
    /// Stop sending a task's webhooks; its changes go to its backlog meanwhile.
    Pause {
        /// The task's id.
        task: String,
    },
    /// Send a paused task's webhooks again: its backlog first.
    Resume {
        /// The task's id.
        task: String,
    },
}

/// `pikachu binlog …` subcommands.
#[derive(Debug, Subcommand)]
pub enum BinlogCommand {
    /// Print every event of binlog (or relay log) files as one JSON line each.
    Decode {
        /// Binlog files, read in order (gzip-compressed files are unpacked).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// `json`: one line per event; `summary`: one line per file.
        #[arg(long, default_value = "json", value_parser = ["json", "summary"])]
        output: String,
    },
}

/// `pikachu replay` arguments.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Start: FILE:POS (e.g. mysql-bin.000003:1234) or a MariaDB GTID position (0-1-100).
    #[arg(long)]
    pub from: String,
    /// End (default: the end of the binlog when the replay starts). A position inside a
    /// transaction ends after that whole transaction. FILE:POS or a GTID.
    #[arg(long)]
    pub to: Option<String>,
    /// Where payloads go: `webhook`, `stdout` (one per line) or `null` (count only).
    #[arg(long, default_value = "stdout", value_parser = ["webhook", "stdout", "null"])]
    pub output: String,
    /// Replica server_id for the replay's binlog connection (default: a random one).
    #[arg(long)]
    pub server_id: Option<u32>,
}

/// Rewrites Go-style flags (`-config x`, `-config=x`, `-tasks`, `-version`,
/// `-help`) to their `--` forms.
pub fn rewrite_args<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    const LONG: [&str; 6] = [
        "config",
        "tasks",
        "version",
        "help",
        "offline",
        "reset-position",
    ];
    args.into_iter()
        .map(|a| {
            let Some(s) = a.to_str() else { return a };
            if let Some(rest) = s.strip_prefix('-') {
                if !rest.starts_with('-') {
                    let name = rest.split('=').next().unwrap_or("");
                    if LONG.contains(&name) {
                        return OsString::from(format!("-{s}"));
                    }
                }
            }
            a
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let v = rewrite_args(args.iter().map(OsString::from));
        Cli::try_parse_from(v).expect("parses")
    }

    #[test]
    fn go_style_config_flag() {
        assert_eq!(
            parse(&["pikachu", "-config", "a.yaml"]).config,
            PathBuf::from("a.yaml")
        );
        assert_eq!(
            parse(&["pikachu", "-config=b.yaml"]).config,
            PathBuf::from("b.yaml")
        );
        assert_eq!(
            parse(&["pikachu", "--config", "c.yaml"]).config,
            PathBuf::from("c.yaml")
        );
        assert_eq!(
            parse(&["pikachu", "-c", "d.yaml"]).config,
            PathBuf::from("d.yaml")
        );
        assert_eq!(parse(&["pikachu"]).config, PathBuf::from("config.yaml"));
        let cli = parse(&["pikachu", "-config", "x.yaml", "-tasks", "t.yaml"]);
        assert_eq!(cli.tasks, Some(PathBuf::from("t.yaml")));
    }

    #[test]
    fn subcommands() {
        let cli = parse(&["pikachu", "check", "-config", "a.yaml", "--offline"]);
        assert!(matches!(
            cli.command,
            Some(Command::Check { offline: true })
        ));
        assert_eq!(cli.config, PathBuf::from("a.yaml"));
        let cli = parse(&[
            "pikachu", "dlq", "purge", "-config", "a.yaml", "--task", "t", "--yes",
        ]);
        assert!(matches!(
            cli.command,
            Some(Command::Dlq {
                command: DlqCommand::Purge { yes: true, .. }
            })
        ));
        assert_eq!(cli.config, PathBuf::from("a.yaml"));
        let cli = parse(&[
            "pikachu", "snapshot", "start", "-config", "a.yaml", "--task", "t", "--where", "id > 5",
        ]);
        match cli.command {
            Some(Command::Snapshot {
                command:
                    SnapshotCommand::Start {
                        task,
                        table: None,
                        condition: Some(c),
                    },
            }) => assert_eq!((task.as_str(), c.as_str()), ("t", "id > 5")),
            other => panic!("{other:?}"),
        }
        let cli = parse(&["pikachu", "check", "-offline", "-c", "a.yaml"]);
        assert!(matches!(
            cli.command,
            Some(Command::Check { offline: true })
        ));
    }
}
