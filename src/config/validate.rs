//! Cross-field checks on the decoded draft: callback URLs (joined with
//! `callback_host`), unique task ids, at least one task. Produces the final [`Config`].

use std::collections::HashMap;

use super::decode::{Draft, DraftTask};
use super::{Config, ConfigError};

/// Validates the draft and builds the config handed out.
pub(crate) fn finish(draft: Draft) -> Result<Config, ConfigError> {
    if let Some(host) = &draft.callback_host {
        if let Err(problem) = check_http_url(&host.value) {
            return Err(ConfigError::Invalid(host.spot.diag(
                &host.path,
                format!("`{}` is not usable as callback host: {problem}", host.value),
            )));
        }
        if host.value.contains('?') {
            return Err(ConfigError::Invalid(host.spot.diag(
                &host.path,
                "callback_host must not contain a query (`?`)".to_owned(),
            )));
        }
    }

    if draft.tasks.is_empty() {
        return Err(ConfigError::Invalid(draft.tasks_spot.diag(
            "tasks",
            "no tasks configured; add at least one task under `tasks:`".to_owned(),
        )));
    }

    let mut seen: HashMap<&str, &DraftTask> = HashMap::new();
    for task in &draft.tasks {
        if let Some(first) = seen.get(task.config.task_id.as_str()) {
            return Err(ConfigError::Invalid(task.task_id.diag(
                &format!("{}.task_id", task.path),
                format!(
                    "duplicate task_id `{}`; first defined at {} (`{}.task_id`)",
                    task.config.task_id,
                    first.task_id.at(),
                    first.path
                ),
            )));
        }
        seen.insert(&task.config.task_id, task);
    }

    let host = draft.callback_host.as_ref();
    let mut tasks = Vec::with_capacity(draft.tasks.len());
    for task in &draft.tasks {
        let key = format!("{}.callback_url", task.path);
        let written = task.config.callback_url.as_str();
        let url = if has_scheme(written) {
            written.to_owned()
        } else {
            match host {
                Some(host) => join_url(&host.value, written),
                None => {
                    return Err(ConfigError::Invalid(task.callback_url.diag(
                        &key,
                        format!(
                            "relative URL `{written}` needs a top-level `callback_host` \
                             (e.g. callback_host: \"http://api:9000\"), or write a full http(s) URL"
                        ),
                    )))
                }
            }
        };
        if let Err(problem) = check_http_url(&url) {
            let joined = if url == written {
                String::new()
            } else {
                " (joined with callback_host)".to_owned()
            };
            return Err(ConfigError::Invalid(task.callback_url.diag(
                &key,
                format!("invalid callback URL `{url}`{joined}: {problem}"),
            )));
        }
        let mut config = task.config.clone();
        config.callback_url = url;
        tasks.push(config);
    }

    Ok(Config {
        database: draft.database,
        log: draft.log,
        server: draft.server,
        dispatcher: draft.dispatcher,
        tasks,
        state_dir: draft.state_dir,
        start: draft.start,
        checkpoint: draft.checkpoint,
        shutdown_timeout: draft.shutdown_timeout,
        callback_host: draft.callback_host.map(|h| h.value),
        snapshot: draft.snapshot,
    })
}

/// Whether `url` starts with `scheme://`.
pub(crate) fn has_scheme(url: &str) -> bool {
    match url.split_once("://") {
        Some((scheme, _)) => {
            let mut chars = scheme.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

/// `host` + `path` with exactly one `/` between them.
pub(crate) fn join_url(host: &str, path: &str) -> String {
    let host = host.trim_end_matches('/');
    let path = path.trim_start_matches('/');
    format!("{host}/{path}")
}

/// Checks an absolute http(s) URL with a host, optional valid port, no credentials or fragment.
pub(crate) fn check_http_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("it must start with http:// or https://".to_owned());
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!("scheme `{scheme}` is not http or https"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains spaces or control characters".to_owned());
    }
    if url.contains('#') {
        return Err("it must not contain a fragment (`#`)".to_owned());
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("it must not contain credentials (`user@`)".to_owned());
    }
    let (hostname, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((addr, after)) => (addr, after.strip_prefix(':')),
            None => return Err("unclosed `[` in the host".to_owned()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if hostname.is_empty() {
        return Err("it has no host".to_owned());
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("port `{port}` is not between 1 and 65535")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_with_one_slash() {
        assert_eq!(
            join_url("http://api:9000", "/hook/user"),
            "http://api:9000/hook/user"
        );
        assert_eq!(
            join_url("http://api:9000/", "/hook/user"),
            "http://api:9000/hook/user"
        );
        assert_eq!(
            join_url("http://api:9000/", "hook/user"),
            "http://api:9000/hook/user"
        );
        assert_eq!(join_url("http://api:9000", "hook"), "http://api:9000/hook");
        assert_eq!(join_url("https://h/base", "/x"), "https://h/base/x");
    }

    #[test]
    fn scheme_detection() {
        assert!(has_scheme("http://a"));
        assert!(has_scheme("HTTPS://a"));
        assert!(has_scheme("ftp://a"));
        assert!(!has_scheme("/hook"));
        assert!(!has_scheme("hook/x"));
        assert!(!has_scheme("/a?u=http://b"));
    }

    #[test]
    fn url_checks() {
        assert_eq!(check_http_url("http://api:9000/hook"), Ok(()));
        assert_eq!(check_http_url("https://example.com"), Ok(()));
        assert_eq!(check_http_url("http://[::1]:8080/x"), Ok(()));
        assert!(check_http_url("ftp://example.com").is_err());
        assert!(check_http_url("http:///path").is_err());
        assert!(check_http_url("http://h:0/").is_err());
        assert!(check_http_url("http://h:99999/").is_err());
        assert!(check_http_url("http://u:p@h/").is_err());
        assert!(check_http_url("http://h/a b").is_err());
        assert!(check_http_url("http://h/#frag").is_err());
        assert!(check_http_url("/relative").is_err());
    }
}
