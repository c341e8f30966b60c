//! Logging: `tracing` set up from `log.level` and `log.format` (text or one
//! JSON object per line), with `RUST_LOG` taking precedence for debugging.
//! Logs go to stderr, or with `log.file` to a file rotated daily.
//!
//! Secrets: passwords and webhook secrets are [`crate::config::Secret`]s,
//! which print as `***`; nothing here formats a config or a connection URL.

use std::path::{Path, PathBuf};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat, LogLevel};

/// How many daily log files `log.file` keeps (the current one included).
pub const KEPT_LOG_FILES: usize = 14;

fn level_directive(level: &LogLevel) -> &'static str {
    match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        // The Go tool's fatal/panic levels mean "errors only" here.
        LogLevel::Error | LogLevel::Fatal | LogLevel::Panic => "error",
    }
}

/// Keeps the log file writer alive: buffered lines are written out when it
/// is dropped, so hold it until the process ends.
#[must_use = "dropping the guard stops the log file writer"]
pub struct LogGuard {
    _file: Option<WorkerGuard>,
}

/// Where `log.file` writes: the files of a day are `<dir>/<stem>.<YYYY-MM-DD>.<ext>`
/// (UTC dates), e.g. `/app/logs/pikachu.log` → `/app/logs/pikachu.2025-01-31.log`.
pub fn log_file_parts(file: &Path) -> (PathBuf, String, Option<String>) {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pikachu".to_string());
    let ext = file.extension().map(|s| s.to_string_lossy().into_owned());
    (dir, stem, ext)
}

fn rolling_file(file: &Path) -> Result<RollingFileAppender, String> {
    let (dir, stem, ext) = log_file_parts(file);
    std::fs::create_dir_all(&dir).map_err(|e| {
        format!(
            "cannot create the folder of log.file '{}': {e}",
            file.display()
        )
    })?;
    let mut builder = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(stem)
        .max_log_files(KEPT_LOG_FILES);
    if let Some(ext) = ext {
        builder = builder.filename_suffix(ext);
    }
    builder
        .build(&dir)
        .map_err(|e| format!("cannot open log.file '{}': {e}", file.display()))
}

/// Installs the global subscriber. Logs go to `log.file` when set (rotated
/// daily, written by a background thread), else to stderr; stdout is kept
/// for command output (`check`).
pub fn init(cfg: &LogConfig) -> Result<LogGuard, String> {
    match &cfg.file {
        None => {
            install(cfg, std::io::stderr);
            Ok(LogGuard { _file: None })
        }
        Some(path) => {
            let appender = rolling_file(path)?;
            // Not lossy: when the writer falls behind, logging waits rather
            // than dropping lines (the errors are what matters most).
            let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .lossy(false)
                .thread_name("pikachu-log")
                .finish(appender);
            install(cfg, writer);
            Ok(LogGuard { _file: Some(guard) })
        }
    }
}

fn install<W>(cfg: &LogConfig, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            // sqlparser logs each statement it parses (binlog DDLs) at debug.
            "{},mysql_async=warn,hyper=warn,reqwest=warn,sqlparser=off",
            level_directive(&cfg.level)
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_file_names() {
        let (dir, stem, ext) = log_file_parts(Path::new("/app/logs/pikachu.log"));
        assert_eq!(dir, PathBuf::from("/app/logs"));
        assert_eq!(stem, "pikachu");
        assert_eq!(ext.as_deref(), Some("log"));
        let (dir, stem, ext) = log_file_parts(Path::new("out"));
        assert_eq!(dir, PathBuf::from("."));
        assert_eq!(stem, "out");
        assert_eq!(ext, None);
    }
}
