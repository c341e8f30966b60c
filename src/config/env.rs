//! `${VAR}` / `${VAR:-default}` interpolation of string values (`$$` is a literal `$`).
//!
//! Applied to individual string scalars after YAML parsing, so an environment
//! value can never inject YAML structure and line numbers stay exact.

/// Why a string could not be interpolated. Display is a short human sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EnvError {
    #[error("environment variable `{0}` is not set (use `${{{0}:-default}}` to give a default)")]
    Unset(String),
    #[error("environment variable `{0}` is not valid UTF-8")]
    NotUnicode(String),
    #[error("unterminated `${{` (missing `}}`); write `$$` for a literal `$`")]
    Unterminated,
    #[error("invalid variable name `{0}` in `${{...}}` (letters, digits and `_`, not starting with a digit)")]
    BadName(String),
}

/// Interpolates `text`, looking variables up with `lookup`.
///
/// `lookup` returns `Ok(None)` for an unset variable. `${VAR:-default}` uses the
/// default when the variable is unset or empty (as in the shell). A `$` that is
/// not followed by `{` or `$` is kept as is.
pub(crate) fn interpolate_with<F>(text: &str, mut lookup: F) -> Result<String, EnvError>
where
    F: FnMut(&str) -> Result<Option<String>, EnvError>,
{
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(after_dollar) = after.strip_prefix('$') {
            out.push('$');
            rest = after_dollar;
        } else if let Some(body_and_rest) = after.strip_prefix('{') {
            let end = body_and_rest.find('}').ok_or(EnvError::Unterminated)?;
            let body = &body_and_rest[..end];
            let (name, default) = match body.find(":-") {
                Some(j) => (&body[..j], Some(&body[j + 2..])),
                None => (body, None),
            };
            if !valid_name(name) {
                return Err(EnvError::BadName(name.to_owned()));
            }
            match (lookup(name)?, default) {
                (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => return Err(EnvError::Unset(name.to_owned())),
            }
            rest = &body_and_rest[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Interpolates `text` from the process environment.
pub(crate) fn interpolate(text: &str) -> Result<String, EnvError> {
    interpolate_with(text, |name| match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(EnvError::NotUnicode(name.to_owned())),
    })
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(text: &str) -> Result<String, EnvError> {
        interpolate_with(text, |name| {
            Ok(match name {
                "HOST" => Some("db.internal".to_owned()),
                "EMPTY" => Some(String::new()),
                "INJECT" => Some("a\nb: c".to_owned()),
                _ => None,
            })
        })
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(fake("hello").as_deref(), Ok("hello"));
        assert_eq!(fake("pa$word").as_deref(), Ok("pa$word"));
        assert_eq!(fake("trailing$").as_deref(), Ok("trailing$"));
    }

    #[test]
    fn substitutes_and_defaults() {
        assert_eq!(fake("${HOST}").as_deref(), Ok("db.internal"));
        assert_eq!(
            fake("mysql://${HOST}:3306").as_deref(),
            Ok("mysql://db.internal:3306")
        );
        assert_eq!(fake("${NOPE:-fallback}").as_deref(), Ok("fallback"));
        assert_eq!(fake("${NOPE:-}").as_deref(), Ok(""));
        assert_eq!(fake("${EMPTY:-x}").as_deref(), Ok("x"));
        assert_eq!(fake("${EMPTY}").as_deref(), Ok(""));
        assert_eq!(fake("${HOST:-x}").as_deref(), Ok("db.internal"));
        assert_eq!(fake("${INJECT}").as_deref(), Ok("a\nb: c"));
    }

    #[test]
    fn dollar_dollar_is_literal() {
        assert_eq!(fake("$$").as_deref(), Ok("$"));
        assert_eq!(fake("$${HOST}").as_deref(), Ok("${HOST}"));
        assert_eq!(fake("a$$$${HOST}").as_deref(), Ok("a$${HOST}"));
        assert_eq!(fake("$$$HOST").as_deref(), Ok("$$HOST"));
    }

    #[test]
    fn errors() {
        assert_eq!(fake("x ${NOPE} y"), Err(EnvError::Unset("NOPE".into())));
        assert_eq!(fake("${HOST"), Err(EnvError::Unterminated));
        assert_eq!(fake("${1A}"), Err(EnvError::BadName("1A".into())));
        assert_eq!(fake("${}"), Err(EnvError::BadName(String::new())));
        let msg = EnvError::Unset("DB_PASS".into()).to_string();
        assert!(
            msg.contains("`DB_PASS`") && msg.contains("${DB_PASS:-default}"),
            "{msg}"
        );
    }

    #[test]
    fn reads_process_environment() {
        let name = "PIKACHU_CONFIG_ENV_UNIT_TEST_READS_PROCESS";
        std::env::set_var(name, "from-env");
        assert_eq!(
            interpolate(&format!("v=${{{name}}}")).as_deref(),
            Ok("v=from-env")
        );
        std::env::remove_var(name);
        assert_eq!(
            interpolate(&format!("${{{name}}}")),
            Err(EnvError::Unset(name.into()))
        );
    }
}
