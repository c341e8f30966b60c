//! Config errors: one human line `file:line:col: key: message`, optionally followed by a source snippet.

use std::fmt;
use std::path::PathBuf;

/// A located problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// File name as given to [`super::from_str`] / [`super::load`].
    pub origin: String,
    /// 1-based line.
    pub line: u64,
    /// 1-based column (characters).
    pub column: u64,
    /// Key path such as `tasks[1].events[0]`; `None` for YAML syntax errors.
    pub key: Option<String>,
    /// The message, without location.
    pub message: String,
    /// Source excerpt with a caret (possibly empty); printed after the first line.
    pub snippet: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.origin, self.line, self.column)?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)?;
        f.write_str(&self.snippet)
    }
}

/// Everything that can go wrong while loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid YAML.
    #[error("{0}")]
    Syntax(Diagnostic),
    /// A required key is absent.
    #[error("{0}")]
    Missing(Diagnostic),
    /// A value has the wrong YAML type (e.g. a list where a string is expected).
    #[error("{0}")]
    WrongType(Diagnostic),
    /// A key that is not a setting (with a "did you mean" hint when close to one).
    #[error("{0}")]
    UnknownKey(Diagnostic),
    /// `${VAR}` interpolation failed.
    #[error("{0}")]
    Env(Diagnostic),
    /// A value is well-typed but not acceptable (range, enum, URL, duplicate...).
    #[error("{0}")]
    Invalid(Diagnostic),
}

impl ConfigError {
    /// The located diagnostic, for every kind except [`ConfigError::Read`].
    pub fn diagnostic(&self) -> Option<&Diagnostic> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax(d)
            | ConfigError::Missing(d)
            | ConfigError::WrongType(d)
            | ConfigError::UnknownKey(d)
            | ConfigError::Env(d)
            | ConfigError::Invalid(d) => Some(d),
        }
    }
}

/// Renders the source line `line` with a caret under `column` (both 1-based).
pub(crate) fn snippet(text: &str, line: u64, column: u64) -> String {
    let Some(index) = usize::try_from(line).ok().and_then(|l| l.checked_sub(1)) else {
        return String::new();
    };
    let Some(source_line) = text.lines().nth(index) else {
        return String::new();
    };
    let source_line = source_line.trim_end_matches('\r');
    let printable: String = source_line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let number = line.to_string();
    let gutter = " ".repeat(number.len());
    let caret_pad: String = printable
        .chars()
        .take(usize::try_from(column.saturating_sub(1)).unwrap_or(0))
        .map(|_| ' ')
        .collect();
    format!("\n {gutter} |\n {number} | {printable}\n {gutter} | {caret_pad}^")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_located_line_then_snippet() {
        let text = "a: 1\nport: abc\n";
        let d = Diagnostic {
            origin: "config.yaml".into(),
            line: 2,
            column: 7,
            key: Some("database.port".into()),
            message: "expected an integer".into(),
            snippet: snippet(text, 2, 7),
        };
        let shown = d.to_string();
        let first = shown.lines().next().unwrap_or_default();
        assert_eq!(first, "config.yaml:2:7: database.port: expected an integer");
        assert!(shown.contains("2 | port: abc"), "{shown}");
        assert!(shown.ends_with("|       ^"), "{shown:?}");
    }

    #[test]
    fn snippet_out_of_range_is_empty() {
        assert_eq!(snippet("a: 1\n", 9, 1), "");
        assert_eq!(snippet("a: 1\n", 0, 1), "");
    }
}
