//! The `pikachu` binary: parses the command line, loads the config, and runs
//! the chosen command. Errors reach the user as one clean line (no Debug
//! formatting, no backtrace), with exit code 2 for bad config or usage and 1
//! for runtime failures.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use pikachu::cli::{rewrite_args, Cli, Command};
use pikachu::config::{self, Loaded};
use pikachu::server::Health;
use pikachu::{app, demo, telemetry};

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
        Some(Command::Check { offline }) => {
            let loaded = match load(&cli) {
                Ok(l) => l,
                Err(code) => return code,
            };
            println!(
                "ok   config {} is valid ({} tasks)",
                cli.config.display(),
                loaded.config.tasks.len()
            );
            if offline {
                return ExitCode::SUCCESS;
            }
            match runtime.block_on(check_online(&loaded.config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    println!("FAIL {e}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }
        Some(Command::Binlog { ref command }) => binlog_command(command),
        Some(Command::Replay(ref args)) => replay_command(&cli, args, &runtime),
        None | Some(Command::Run) => {
            let loaded = match load(&cli) {
                Ok(l) => l,
                Err(code) => return code,
            };
            telemetry::init(&loaded.config.log);
            for w in &loaded.warnings {
                tracing::warn!("{w}");
            }
            runtime.block_on(run(loaded.config))
        }
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
    telemetry::init(&loaded.config.log);
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
        Err(e) => fail(e.code, &e.message),
    }
}

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(code)
}

fn load(cli: &Cli) -> Result<Loaded, ExitCode> {
    config::load(&cli.config, cli.tasks.as_deref()).map_err(|e| fail(EXIT_CONFIG, &e.to_string()))
}

async fn check_online(cfg: &config::Config) -> Result<(), String> {
    let mut conn = pikachu::source::connect::connect(&cfg.database)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "ok   connected to {}",
        pikachu::source::connect::addr(&cfg.database)
    );
    app::check_binlog_settings(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    println!("ok   binary log is on, binlog_format=ROW");
    Ok(())
}

async fn run(config: config::Config) -> ExitCode {
    let cancel = CancellationToken::new();
    let health = Arc::new(Health::default());
    spawn_signal_handler(cancel.clone());
    if config.server.enabled {
        match pikachu::server::bind(
            &config.server.bind,
            config.server.port,
            &config.server.path,
            health.clone(),
            cancel.clone(),
        )
        .await
        {
            Ok((addr, serve)) => {
                tracing::info!(%addr, path = %config.server.path, "health server listening");
                tokio::spawn(serve);
            }
            Err(e) => return fail(EXIT_RUNTIME, &e),
        }
    }
    match app::run(config, health, cancel.clone()).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            cancel.cancel();
            fail(EXIT_RUNTIME, &e.to_string())
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
        eprintln!("error: internal error{at}: {msg} (this is a bug in pikachu; please report it)");
    }));
}
