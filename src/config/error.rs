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
    /// The message as lines to print: the located line, then the source
    /// excerpt's lines (whose control characters are already blanked).
    pub fn lines(&self) -> Vec<String> {
        match self.diagnostic() {
            Some(d) => {
                let mut head = d.clone();
                head.snippet.clear();
                std::iter::once(head.to_string())
                    .chain(
                        d.snippet
                            .lines()
                            .filter(|l| !l.is_empty())
                            .map(str::to_owned),
                    )
                    .collect()
            }
            None => vec![self.to_string()],
        }
    }

    /// The located diagnostic, for every kind except [`ConfigError::Read`].
    pub(crate) fn diagnostic(&self) -> Option<&Diagnostic> {
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
        .map(|c| {
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                ' '
            } else {
                c
            }
        })
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

/// The diagnostic for a file that is not UTF-8: the line and column
/// (characters) of the first bad byte.
pub(crate) fn not_utf8(origin: &str, bytes: &[u8], err: std::str::Utf8Error) -> Diagnostic {
    let valid = &bytes[..err.valid_up_to()];
    let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line = valid.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let column = String::from_utf8_lossy(&valid[line_start..])
        .chars()
        .count() as u64
        + 1;
    let byte = bytes.get(err.valid_up_to()).copied().unwrap_or(0);
    Diagnostic {
        origin: origin.to_owned(),
        line,
        column,
        key: None,
        message: format!(
            "byte 0x{byte:02x} is not valid UTF-8; the config file must be UTF-8: save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ),
        snippet: snippet(&String::from_utf8_lossy(bytes), line, column),
    }
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
    fn not_utf8_names_line_and_column() {
        let utf8_error = |b: &[u8]| match std::str::from_utf8(b) {
            Ok(_) => panic!("valid UTF-8"),
            Err(e) => e,
        };
        let bytes = b"a: 1\nname: caf\xe9\n";
        let d = not_utf8("c.yaml", bytes, utf8_error(bytes));
        assert_eq!((d.line, d.column), (2, 10));
        assert!(d
            .to_string()
            .starts_with("c.yaml:2:10: byte 0xe9 is not valid UTF-8"));
        // "é" then 0xff: column 2 (columns count characters).
        let bytes = b"\xc3\xa9\xff";
        let d = not_utf8("c.yaml", bytes, utf8_error(bytes));
        assert_eq!((d.line, d.column), (1, 2));
    }

    #[test]
    fn snippet_out_of_range_is_empty() {
        assert_eq!(snippet("a: 1\n", 9, 1), "");
        assert_eq!(snippet("a: 1\n", 0, 1), "");
    }
}
