//! Logging: `tracing` set up from `log.level` and `log.format` (text or one
//! JSON object per line), with `RUST_LOG` taking precedence for debugging.
//! Logs go to stderr, or with `log.file` to a file rotated daily.
//!
//! Secrets: passwords and webhook secrets are [`crate::config::Secret`]s,
//! which print as `***`; nothing here formats a config or a connection URL.
//!
//! Forged lines: log lines carry text from the server and from users (table
//! names, DDL, server error messages, receiver answers). In the text format
//! every field value and the message go through [`escape`] (line breaks,
//! ANSI escapes and every other control character written as `\n`,
//! `\u{1b}`, …), here in the formatter so that no call site can forget it;
//! the JSON format escapes them as JSON does (`\n`, `\u001b`). The binary's
//! error lines and `pikachu check`'s lines use [`escape`] too.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use tracing::field::{Field, Visit};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat, LogLevel};

/// How many daily log files `log.file` keeps (the current one included).
pub(crate) const KEPT_LOG_FILES: usize = 14;

/// Whether `c` could break or garble a line on a terminal or in a log:
/// a control character (C0, DEL, C1: line breaks, ANSI escapes, …) or a
/// Unicode line or paragraph separator.
fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// `text` made safe for one line of a log or a terminal: `\n`, `\r` and
/// `\t` as those two characters, every other character of
/// [`needs_escape`] as `\u{…}` (ESC is `\u{1b}`). Borrowed when there is
/// nothing to escape (the usual case).
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let _ = fmt::Write::write_str(&mut Escaping(&mut out), text);
    Cow::Owned(out)
}

/// A [`fmt::Write`] that escapes what goes through it as [`escape`] does.
struct Escaping<W>(W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(needs_escape) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or(' ');
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// The text format's fields: as tracing-subscriber's default (the message,
/// then ` name=value`), every value and the message escaped with [`escape`].
struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes the fields of one event or span for [`EscapedFields`].
struct EscapingVisitor<'writer> {
    writer: Writer<'writer>,
    /// No field written yet (no separating space).
    first: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_> {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let sep = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = if name == "message" {
            write!(self.writer, "{sep}")
                .and_then(|()| fmt::write(&mut Escaping(&mut self.writer), value))
        } else {
            write!(self.writer, "{sep}{name}=")
                .and_then(|()| fmt::write(&mut Escaping(&mut self.writer), value))
        };
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // As the default format: the message as is, other strings quoted.
        if field.name() == "message" {
            self.write(field, format_args!("{value}"));
        } else {
            self.write(field, format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

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
pub(crate) fn log_file_parts(file: &Path) -> (PathBuf, String, Option<String>) {
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

/// Why logging cannot start: `log.file` cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The folder of `log.file` cannot be created.
    #[error("cannot create the folder of log.file '{}': {source}", .file.display())]
    Folder {
        /// `log.file` as configured.
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The log file cannot be opened.
    #[error("cannot open log.file '{}': {source}", .file.display())]
    Open {
        /// `log.file` as configured.
        file: PathBuf,
        #[source]
        source: tracing_appender::rolling::InitError,
    },
}

fn rolling_file(file: &Path) -> Result<RollingFileAppender, LogError> {
    let (dir, stem, ext) = log_file_parts(file);
    std::fs::create_dir_all(&dir).map_err(|source| LogError::Folder {
        file: file.to_path_buf(),
        source,
    })?;
    let mut builder = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(stem)
        .max_log_files(KEPT_LOG_FILES);
    if let Some(ext) = ext {
        builder = builder.filename_suffix(ext);
    }
    builder.build(&dir).map_err(|source| LogError::Open {
        file: file.to_path_buf(),
        source,
    })
}

/// Installs the global subscriber. Logs go to `log.file` when set (rotated
/// daily, written by a background thread), else to stderr; stdout is kept
/// for command output (`check`).
pub fn init(cfg: &LogConfig) -> Result<LogGuard, LogError> {
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
        LogFormat::Text => builder
            .with_ansi(false)
            .fmt_fields(EscapedFields)
            .try_init(),
    };
}

/// Minimal logging before the config is read (errors and warnings only).
pub fn init_default() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .fmt_fields(EscapedFields)
        .try_init();
}

/// "7 days", "36 hours", "45 minutes".
pub(crate) fn human_duration(secs: f64) -> String {
    let plural = |n: f64, unit: &str| {
        let shown = if (n - n.round()).abs() < 0.05 {
            format!("{}", n.round() as u64)
        } else {
            format!("{n:.1}")
        };
        format!("{shown} {unit}{}", if shown == "1" { "" } else { "s" })
    };
    if secs >= 2.0 * 86_400.0 {
        plural(secs / 86_400.0, "day")
    } else if secs >= 2.0 * 3600.0 {
        plural(secs / 3600.0, "hour")
    } else if secs >= 120.0 {
        plural(secs / 60.0, "minute")
    } else {
        plural(secs, "second")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_leaves_plain_text_and_escapes_controls() {
        assert!(matches!(escape("plain text, é 😀"), Cow::Borrowed(_)));
        assert_eq!(
            escape("a\nb\r\tc\u{1b}[31md\u{7f}\u{9b}e\u{2028}f\0"),
            "a\\nb\\r\\tc\\u{1b}[31md\\u{7f}\\u{9b}e\\u{2028}f\\u{0}"
        );
        // Backslashes are kept: text cannot make a real newline from them.
        assert_eq!(escape("a\\nb\n"), "a\\nb\\n");
    }

    /// The text format, through a real subscriber: no raw control
    /// character in the message or any field, one line per event.
    #[test]
    fn text_format_escapes_message_and_fields() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                if let Ok(mut v) = self.0.lock() {
                    v.extend_from_slice(b);
                }
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(EscapedFields)
            .finish();
        let evil = "x\n\u{1b}[31m2020-01-01T00:00:00Z  INFO forged";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(query = %evil, name = evil, n = 3, "DDL {evil}");
        });
        let out = String::from_utf8(buf.0.lock().map(|v| v.clone()).unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(!out.trim_end().chars().any(needs_escape), "{out:?}");
        assert!(
            out.contains(
                "DDL x\\n\\u{1b}[31m2020-01-01T00:00:00Z  INFO forged query=x\\n\\u{1b}[31m2020"
            ),
            "{out}"
        );
        assert!(out.contains(" n=3"), "{out}");
    }

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
