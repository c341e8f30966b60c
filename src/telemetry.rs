//! Logging: `tracing` set up from `log.level` and `log.format` (text or one
//! JSON object per line), with `RUST_LOG` taking precedence for debugging.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat, LogLevel};

fn level_directive(level: &LogLevel) -> &'static str {
    match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        // The Go tool's fatal/panic levels mean "errors only" here.
        LogLevel::Error | LogLevel::Fatal | LogLevel::Panic => "error",
    }
}

/// Installs the global subscriber. Logs go to stderr; stdout is kept for
/// command output (`check`, `replay --output stdout`).
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{},mysql_async=warn,hyper=warn,reqwest=warn",
            level_directive(&cfg.level)
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match cfg.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

/// Minimal logging before the config is read (errors and warnings only).
pub fn init_default() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}
