//! The `pikachu` binary: parses the command line, loads the config, and runs
//! the chosen command. Errors reach the user as one clean line (no Debug
//! formatting, no backtrace), with exit code 2 for bad config or usage and 1
//! for runtime failures.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use pikachu::cli::{rewrite_args, Cli, Command, DlqCommand, PositionCommand};
use pikachu::config::{self, Loaded};
use pikachu::pipeline::{self, PipelineError};
use pikachu::store::StateLock;
use pikachu::{demo, preflight, telemetry};

/// See the comment on `mimalloc` in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    install_panic_hook();
    let cli = match Cli::try_parse_from(rewrite_args(std::env::args_os())) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match cli.command {
        Some(Command::DemoReceiver { ref listen }) => match runtime.block_on(demo::run(listen)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(EXIT_RUNTIME, &e),
        },
        Some(Command::Check { offline }) => check_command(&cli, offline, &runtime),
        Some(Command::Position { ref command }) => position_command(&cli, command, &runtime),
        Some(Command::Dlq { ref command }) => {
            let loaded = match load(&cli) {
                Ok(l) => l,
                Err(code) => return code,
            };
            runtime.block_on(dlq(&loaded.config, command))
        }
        Some(Command::Binlog { ref command }) => binlog_command(command),
        Some(Command::Task { ref command }) => pikachu::cli::task::run(&cli, command),
        Some(Command::Snapshot { ref command }) => {
            pikachu::cli::snapshot::run(&cli, command, &runtime)
        }
        Some(Command::Replay(ref args)) => replay_command(&cli, args, &runtime),
        None | Some(Command::Run) => {
            let loaded = match load(&cli) {
                Ok(l) => l,
                Err(code) => return code,
            };
            // Held until the end: dropping it flushes the log file.
            let _log_guard = match telemetry::init(&loaded.config.log) {
                Ok(g) => g,
                Err(e) => return fail(EXIT_CONFIG, &e),
            };
            for w in &loaded.warnings {
                tracing::warn!("{w}");
            }
            runtime.block_on(run(loaded.config, cli.reset_position))
        }
    }
}

/// `pikachu check`: the config, then (unless `offline`) the server and
/// the saved position, one line each.
fn check_command(cli: &Cli, offline: bool, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let loaded = match load(cli) {
        Ok(l) => l,
        Err(code) => return code,
    };
    // Server and user text in these lines is escaped (see telemetry).
    println!(
        "ok   config {} is valid ({} tasks)",
        telemetry::escape(&cli.config.display().to_string()),
        loaded.config.tasks.len()
    );
    for w in &loaded.warnings {
        println!("WARN {}", telemetry::escape(w));
    }
    if offline {
        return ExitCode::SUCCESS;
    }
    let report = runtime.block_on(preflight::run(&loaded.config, preflight::Mode::Check));
    for line in report.lines() {
        println!("{}", telemetry::escape(&line));
    }
    // Only once the server answers: whether the saved position can be resumed from.
    let checkpoint = if report.passed() {
        runtime.block_on(pikachu::checkpoint::check(&loaded.config))
    } else {
        None
    };
    if let Some((_, line)) = &checkpoint {
        println!("{line}");
    }
    if report.passed() && checkpoint.is_none_or(|(ok, _)| ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_RUNTIME)
    }
}

/// `pikachu position show|set|reset`.
fn position_command(
    cli: &Cli,
    command: &PositionCommand,
    runtime: &tokio::runtime::Runtime,
) -> ExitCode {
    let loaded = match load(cli) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let cfg = &loaded.config;
    // `set` and `reset` write the checkpoint, which a running
    // `pikachu run` owns (and would overwrite).
    let _lock = match command {
        PositionCommand::Show => None,
        PositionCommand::Set { .. } => match lock(cfg, "pikachu position set") {
            Ok(l) => Some(l),
            Err(code) => return code,
        },
        PositionCommand::Reset => match lock(cfg, "pikachu position reset") {
            Ok(l) => Some(l),
            Err(code) => return code,
        },
    };
    let result = match command {
        PositionCommand::Show => pikachu::checkpoint::show(cfg),
        PositionCommand::Reset => pikachu::checkpoint::reset(cfg).map(|cleared| {
            if cleared {
                "checkpoint forgotten: the next run starts from `start` in the config".to_string()
            } else {
                "there was no checkpoint".to_string()
            }
        }),
        PositionCommand::Set { position } => {
            runtime.block_on(pikachu::checkpoint::set(cfg, position))
        }
    };
    match result {
        Ok(line) => {
            println!("{}", telemetry::escape(&line));
            ExitCode::SUCCESS
        }
        Err(e) => fail(EXIT_RUNTIME, e),
    }
}

/// `pikachu binlog decode FILE…`: events on stdout, summary and errors on stderr.
fn binlog_command(command: &pikachu::cli::BinlogCommand) -> ExitCode {
    let pikachu::cli::BinlogCommand::Decode { files, output } = command;
    let print = if output == "summary" {
        pikachu::offline::Print::Summary
    } else {
        pikachu::offline::Print::Json
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut err = std::io::stderr();
    if pikachu::offline::run_decode(files, print, &mut out, &mut err) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_RUNTIME)
    }
}

/// `pikachu replay`: payloads and the summary line on stdout.
fn replay_command(
    cli: &Cli,
    args: &pikachu::cli::ReplayArgs,
    runtime: &tokio::runtime::Runtime,
) -> ExitCode {
    let loaded = match load(cli) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let _log_guard = match telemetry::init(&loaded.config.log) {
        Ok(g) => g,
        Err(e) => return fail(EXIT_CONFIG, &e),
    };
    let req = pikachu::replay::Request {
        from: args.from.clone(),
        to: args.to.clone(),
        output: args
            .output
            .parse()
            .unwrap_or(pikachu::replay::Output::Stdout),
        server_id: args.server_id,
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
    match runtime.block_on(pikachu::replay::run(&loaded.config, &req, &mut out)) {
        Ok(summary) => {
            use std::io::Write as _;
            let _ = writeln!(out, "{}", summary.to_json());
            let _ = out.flush();
            if summary.failed > 0 {
                ExitCode::from(EXIT_RUNTIME)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e @ pikachu::replay::ReplayError::Usage(_)) => fail(EXIT_CONFIG, e),
        Err(e @ pikachu::replay::ReplayError::Runtime(_)) => fail(EXIT_RUNTIME, e),
    }
}

/// Prints `error: <msg>` on stderr as one line: a line break or an escape
/// sequence in `msg` (server or user text) is escaped, not printed.
fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    fail_lines(code, &[msg.to_string()])
}

/// Prints `error: <first line>` and the further lines, each escaped on its own.
fn fail_lines(code: u8, lines: &[String]) -> ExitCode {
    let mut text = String::from("error: ");
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        text.push_str(&telemetry::escape(line));
    }
    eprintln!("{text}");
    ExitCode::from(code)
}

/// Takes the state directory's lock for `command`, or says who holds it
/// (exit 2) or why it cannot be taken (exit 1).
fn lock(cfg: &config::Config, command: &str) -> Result<StateLock, ExitCode> {
    StateLock::acquire(&cfg.state_dir, command).map_err(|e| {
        let msg = e.to_string();
        if cfg.log.file.is_some() {
            // stderr gets it below; the log file should have it too.
            tracing::error!("{msg}");
        }
        fail(e.exit_code(), &msg)
    })
}

fn load(cli: &Cli) -> Result<Loaded, ExitCode> {
    config::load(&cli.config, cli.tasks.as_deref()).map_err(|e| fail_lines(EXIT_CONFIG, &e.lines()))
}

async fn dlq(cfg: &config::Config, command: &DlqCommand) -> ExitCode {
    use pikachu::deliver::dlq::{self, DlqError};
    use pikachu::store::Filter;
    let filter = |task: &Option<String>, id: &Option<String>| Filter {
        task_id: task.clone(),
        id: id.clone(),
    };
    let mut out = std::io::stdout();
    let result = match command {
        DlqCommand::List { task } => dlq::list(cfg, &filter(task, &None), &mut out).map(|n| {
            if n == 0 {
                eprintln!("no dead letters");
            }
            true
        }),
        DlqCommand::Show { id } => dlq::show(cfg, *id, &mut out).map(|()| true),
        DlqCommand::Replay { task, id } => dlq::replay(cfg, &filter(task, id), &mut out)
            .await
            .map(|r| r.failed == 0),
        DlqCommand::Purge { task, id, yes } => {
            dlq::purge(cfg, &filter(task, id), *yes, &mut out).map(|_| true)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_RUNTIME),
        Err(DlqError::Usage(m)) => fail(EXIT_CONFIG, &m),
        Err(DlqError::Runtime(m)) => fail(EXIT_RUNTIME, &m),
    }
}

/// `pikachu run`: the pipeline until a signal or a fatal error.
async fn run(config: config::Config, reset_position: bool) -> ExitCode {
    let logs_to_file = config.log.file.is_some();
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());
    match pipeline::run(config, cancel.clone(), reset_position).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            cancel.cancel();
            if logs_to_file {
                // stderr gets it below; the log file should have it too.
                tracing::error!("{e}");
            }
            let code = match &e {
                PipelineError::Lock(lock) => lock.exit_code(),
                _ => EXIT_RUNTIME,
            };
            fail_lines(code, &e.lines())
        }
    }
}

/// First SIGINT/SIGTERM: graceful stop. Second: exit at once.
fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            wait_signal().await;
            seen += 1;
            if seen == 1 {
                tracing::info!("signal received, stopping (send again to exit at once)");
                cancel.cancel();
            } else {
                eprintln!("second signal: exiting now");
                std::process::exit(i32::from(EXIT_RUNTIME));
            }
        }
    });
}

#[cfg(unix)]
async fn wait_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// A bug must still reach the user as one readable line, not a backtrace.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = telemetry::escape(&msg);
        eprintln!("error: internal error{at}: {msg} (this is a bug in pikachu; please report it)");
    }));
}
