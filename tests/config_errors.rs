//! One test per config error kind: each message must name the key path and `file:line`.

use pikachu::config::{from_str, ConfigError};

const DB: &str = "database:
  host: localhost
  port: 3306
  user: root
  password: \"\"
  database: test_db
  server_id: 100
";

const TASK_A: &str = "- task_id: a
  name: A
  table_name: users
  events: [insert]
  callback_url: https://api.example.com/a
";

/// 1-based line of the `nth` (0-based) line containing `needle`.
fn line_of(text: &str, needle: &str, nth: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .nth(nth)
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| panic!("`{needle}` #{nth} not in test text"))
}

fn err(text: &str) -> ConfigError {
    match from_str(text, "config.yaml", None) {
        Ok(loaded) => panic!("expected an error, got {:#?}", loaded.config),
        Err(e) => e,
    }
}

/// The first line of the message must start with `origin:line:` and name `key`.
fn assert_located(e: &ConfigError, origin: &str, line: usize, key: &str) -> String {
    let shown = e.to_string();
    let first = shown.lines().next().unwrap_or_default().to_owned();
    assert!(
        first.starts_with(&format!("{origin}:{line}:")),
        "expected {origin}:{line}: in {first:?}\nfull: {shown}"
    );
    assert!(first.contains(key), "expected key `{key}` in {first:?}");
    assert!(
        !shown.contains("Error {"),
        "Debug formatting leaked: {shown}"
    );
    first
}

#[test]
fn missing_required_task_field() {
    let text = format!(
        "{DB}tasks:\n{TASK_A}- task_id: b\n  name: B\n  table_name: orders\n  events: [update]\n"
    );
    let e = err(&text);
    assert!(matches!(e, ConfigError::Missing(_)), "{e:?}");
    let first = assert_located(
        &e,
        "config.yaml",
        line_of(&text, "task_id: b", 0),
        "tasks[1].callback_url",
    );
    assert!(first.contains("missing"), "{first}");
}

#[test]
fn missing_required_database_field() {
    let text = format!("{}tasks:\n{TASK_A}", DB.replace("  server_id: 100\n", ""));
    let e = err(&text);
    assert!(matches!(e, ConfigError::Missing(_)), "{e:?}");
    assert_located(
        &e,
        "config.yaml",
        line_of(&text, "host:", 0),
        "database.server_id",
    );
}

#[test]
fn missing_database_section() {
    let text = format!("log:\n  level: info\ntasks:\n{TASK_A}");
    let e = err(&text);
    assert!(matches!(e, ConfigError::Missing(_)), "{e:?}");
    assert_located(&e, "config.yaml", 1, "database");
}

#[test]
fn wrong_type() {
    let text = format!(
        "{}tasks:\n{TASK_A}",
        DB.replace("port: 3306", "port: [3306]")
    );
    let e = err(&text);
    assert!(matches!(e, ConfigError::WrongType(_)), "{e:?}");
    let first = assert_located(
        &e,
        "config.yaml",
        line_of(&text, "port:", 0),
        "database.port",
    );
    assert!(
        first.contains("expected an integer") && first.contains("list"),
        "{first}"
    );
}

#[test]
fn wrong_type_string_for_bool() {
    let text = format!("{DB}server:\n  enabled: maybe\ntasks:\n{TASK_A}");
    let e = err(&text);
    assert!(matches!(e, ConfigError::WrongType(_)), "{e:?}");
    assert_located(
        &e,
        "config.yaml",
        line_of(&text, "enabled:", 0),
        "server.enabled",
    );
}

#[test]
fn duration_as_integer_suggests_unit() {
    let text = format!("{DB}dispatcher:\n  timeout: 30\ntasks:\n{TASK_A}");
    let e = err(&text);
    assert!(matches!(e, ConfigError::WrongType(_)), "{e:?}");
    let first = assert_located(
        &e,
        "config.yaml",
        line_of(&text, "timeout:", 0),
        "dispatcher.timeout",
    );
    assert!(first.contains("\"30s\""), "{first}");
}

#[test]
fn duration_bare_number_string_suggests_unit() {
    let text = format!("{DB}shutdown_timeout: \"45\"\ntasks:\n{TASK_A}");
    let e = err(&text);
    assert!(matches!(e, ConfigError::Invalid(_)), "{e:?}");
    let first = assert_located(
        &e,
        "config.yaml",
        line_of(&text, "shutdown_timeout", 0),
        "shutdown_timeout",
    );
    assert!(first.contains("\"45s\""), "{first}");
}

#[test]
fn invalid_duration_unit() {
    let text = format!("{DB}checkpoint:\n  interval: 5 sec\ntasks:\n{TASK_A}");
    let e = err(&text);
    assert!(matches!(e, ConfigError::Invalid(_)), "{e:?}");
    assert_located(
        &e,
        "config.yaml",
        line_of(&text, "interval:", 0),
        "checkpoint.interval",
    );
}

#[test]
fn unknown_key_with_suggestion() {
    let text = format!(
        "{}tasks:\n{TASK_A}",
        DB.replace("server_id: 100", "servr_id: 100")
    );
    let e = err(&text);
    assert!(matches!(e, ConfigError::UnknownKey(_)), "{e:?}");
    let first = assert_located(
        &e,
        "config.yaml",
        line_of(&text, "servr_id", 0),
        "database.servr_id",
    );
    assert!(first.contains("did you mean `server_id`?"), "{first}");
}

#[test]
fn unknown_key_in_task_without_close_match() {
    let text = format!("{DB}tasks:\n{TASK_A}  colour: red\n");
    let e = err(&text);
    assert!(matches!(e, ConfigError::UnknownKey(_)), "{e:?}");
    let first = assert_located(
        &e,
        "config.yaml",
        line_of(&text, "colour", 0),
        "tasks[0].colour",
    );
    assert!(!first.contains("did you mean"), "{first}");
}

#[test]
fn duplicate_task_id_names_both_lines() {
    let text = format!("{DB}tasks:\n{TASK_A}{}", TASK_A.replace("/a", "/b"));
    let e = err(&text);
    assert!(matches!(e, ConfigError::Invalid(_)), "{e:?}");
    let second = line_of(&text, "task_id: a", 1);
    let first_line = line_of(&text, "task_id: a", 0);
    let first = assert_located(&e, "config.yaml", second, "tasks[1].task_id");
    assert!(
        first.contains(&format!("config.yaml:{first_line}:")),
        "{first}"
    );
    assert!(first.contains("tasks[0].task_id"), "{first}");
}

#[test]
fn duplicate_task_id_across_files() {
    let tasks = format!("tasks:\n{}", TASK_A.replace("/a", "/b"));
    let main = format!("{DB}tasks:\n{TASK_A}");
    let e = match from_str(&main, "config.yaml", Some((&tasks, "tasks.yaml"))) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    };
    let first = assert_located(
        &e,
        "tasks.yaml",
        line_of(&tasks, "task_id: a", 0),
        "tasks[0].task_id",
    );
    let main_line = line_of(&main, "task_id: a", 0);
    assert!(
        first.contains(&format!("config.yaml:{main_line}:")),
        "{first}"
    );
}

#[test]
fn unknown_event_name() {
    let text = format!(
        "{DB}tasks:\n{}",
        TASK_A.replace("[insert]", "[insert, insrt]")
    );
    let e = err(&text);
    assert!(matches!(e, ConfigError::Invalid(_)), "{e:?}");
    let first = assert_located(
        &e,
        "config.yaml",
        line_of(&text, "insrt", 0),
        "tasks[0].events[1]",
    );
    assert!(first.contains("did you mean `insert`?"), "{first}");
}

#[test]
fn empty_events() {
    let text = format!("{DB}tasks:\n{}", TASK_A.replace("[insert]", "[]"));
    let e = err(&text);
    assert_located(
        &e,
        "config.yaml",
        line_of(&text, "events:", 0),
        "tasks[0].events",
    );
}

#[test]
fn callback_url_not_http() {
    let text = format!(
        "{DB}tasks:\n{}",
        TASK_A.replace("https://api.example.com/a", "ftp://files/a")
    );
    let e = err(&text);
    assert!(matches!(e, ConfigError::Invalid(_)), "{e:?}");
    let first = assert_located(
        &e,
        "config.yaml",
        line_of(&text, "callback_url", 0),
        "tasks[0].callback_url",
    );
    assert!(first.contains("ftp"), "{first}");
}

#[test]
fn callback_url_invalid_after_joining() {
    let text = format!(
        "{DB}callback_host: http://api:9000\ntasks:\n{}",
        TASK_A.replace("https://api.example.com/a", "\"/hook with space\"")
    );
    let e = err(&text);
    let first = assert_located(
        &e,
        "config.yaml",
        line_of(&text, "callback_url", 0),
        "tasks[0].callback_url",
    );
    assert!(first.contains("http://api:9000/hook with space"), "{first}");
}

#[test]
fn callback_host_not_http() {
    let text = format!(
        "{DB}callback_host: ftp://api\ntasks:\n{}",
        TASK_A.replace("https://api.example.com/a", "/hook")
    );
    let e = err(&text);
    assert_located(
        &e,
        "config.yaml",
        line_of(&text, "callback_host", 0),
        "callback_host",
    );
}

#[test]
fn relative_callback_url_without_host() {
    let text = format!(
        "{DB}tasks:\n{}",
        TASK_A.replace("https://api.example.com/a", "/hook/user")
    );
    let e = err(&text);
    let first = assert_located(
        &e,
        "config.yaml",
        line_of(&text, "callback_url", 0),
        "tasks[0].callback_url",
    );
    assert!(first.contains("callback_host"), "{first}");
}

#[test]
fn server_id_zero() {
    let text = format!(
        "{}tasks:\n{TASK_A}",
        DB.replace("server_id: 100", "server_id: 0")
    );
    let e = err(&text);
    assert!(matches!(e, ConfigError::Invalid(_)), "{e:?}");
    assert_located(
        &e,
        "config.yaml",
        line_of(&text, "server_id", 0),
        "database.server_id",
    );
}

#[test]
fn empty_tasks_list() {
    let text = format!("{DB}tasks: []\n");
    let e = err(&text);
    assert_located(&e, "config.yaml", line_of(&text, "tasks:", 0), "tasks");
}

#[test]
fn missing_tasks() {
    let e = err(DB);
    let first = assert_located(&e, "config.yaml", 1, "tasks");
    assert!(first.contains("no tasks"), "{first}");
}

#[test]
fn port_zero() {
    let text = format!("{DB}server:\n  enabled: true\n  port: 0\ntasks:\n{TASK_A}");
    let e = err(&text);
    assert!(matches!(e, ConfigError::Invalid(_)), "{e:?}");
    let first = assert_located(
        &e,
        "config.yaml",
        line_of(&text, "port: 0", 0),
        "server.port",
    );
    assert!(first.contains("between 1 and 65535"), "{first}");
}

#[test]
fn port_out_of_range() {
    let text = format!(
        "{}tasks:\n{TASK_A}",
        DB.replace("port: 3306", "port: 70000")
    );
    let e = err(&text);
    assert_located(
        &e,
        "config.yaml",
        line_of(&text, "port: 70000", 0),
        "database.port",
    );
}

#[test]
fn log_level_not_allowed() {
    let text = format!("{DB}log:\n  level: verbose\ntasks:\n{TASK_A}");
    let e = err(&text);
    assert!(matches!(e, ConfigError::Invalid(_)), "{e:?}");
    let first = assert_located(&e, "config.yaml", line_of(&text, "verbose", 0), "log.level");
    assert!(
        first.contains("debug, info, warn, error, fatal, panic"),
        "{first}"
    );
}

#[test]
fn log_format_not_allowed() {
    let text = format!("{DB}log:\n  format: jsno\ntasks:\n{TASK_A}");
    let e = err(&text);
    let first = assert_located(&e, "config.yaml", line_of(&text, "jsno", 0), "log.format");
    assert!(first.contains("did you mean `json`?"), "{first}");
}

#[test]
fn worker_count_zero() {
    let text = format!("{DB}dispatcher:\n  worker_count: 0\ntasks:\n{TASK_A}");
    let e = err(&text);
    assert!(matches!(e, ConfigError::Invalid(_)), "{e:?}");
    assert_located(
        &e,
        "config.yaml",
        line_of(&text, "worker_count", 0),
        "dispatcher.worker_count",
    );
}

#[test]
fn queue_size_zero() {
    let text = format!("{DB}dispatcher:\n  queue_size: 0\ntasks:\n{TASK_A}");
    let e = err(&text);
    assert!(matches!(e, ConfigError::Invalid(_)), "{e:?}");
    assert_located(
        &e,
        "config.yaml",
        line_of(&text, "queue_size", 0),
        "dispatcher.queue_size",
    );
}

#[test]
fn unset_env_var_names_variable_key_and_line() {
    let var = "PIKACHU_CFG_ERRTEST_UNSET_PASSWORD_VAR";
    std::env::remove_var(var);
    let text = format!(
        "{}tasks:\n{TASK_A}",
        DB.replace("password: \"\"", &format!("password: \"${{{var}}}\""))
    );
    let e = err(&text);
    assert!(matches!(e, ConfigError::Env(_)), "{e:?}");
    let first = assert_located(
        &e,
        "config.yaml",
        line_of(&text, var, 0),
        "database.password",
    );
    assert!(first.contains(var), "{first}");
}

#[test]
fn env_value_cannot_inject_yaml() {
    let var = "PIKACHU_CFG_ERRTEST_INJECT_PORT";
    std::env::set_var(var, "3306\nserver_id: 0");
    let text = format!(
        "{}tasks:\n{TASK_A}",
        DB.replace("port: 3306", &format!("port: ${{{var}}}"))
    );
    let e = err(&text);
    assert!(matches!(e, ConfigError::WrongType(_)), "{e:?}");
    assert_located(&e, "config.yaml", line_of(&text, var, 0), "database.port");
}

#[test]
fn error_in_tasks_file_names_that_file() {
    let tasks = "- task_id: b\n  name: B\n  table_name: t\n  events: [truncate]\n  callback_url: http://x/y\n";
    let main = format!("{DB}tasks:\n{TASK_A}");
    let e = match from_str(&main, "config.yaml", Some((tasks, "tasks.yaml"))) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    };
    assert_located(
        &e,
        "tasks.yaml",
        line_of(tasks, "truncate", 0),
        "tasks[0].events[0]",
    );
}

#[test]
fn yaml_syntax_error_is_located() {
    let text = format!("{DB}tasks:\n{TASK_A}  events: [insert\n");
    let e = err(&text);
    assert!(matches!(e, ConfigError::Syntax(_)), "{e:?}");
    let shown = e.to_string();
    assert!(shown.starts_with("config.yaml:"), "{shown}");
    assert!(shown.contains("invalid YAML"), "{shown}");
}

#[test]
fn duplicate_yaml_key_is_located() {
    let text = format!("{}  port: 3307\ntasks:\n{TASK_A}", DB);
    let e = err(&text);
    let shown = e.to_string();
    let line = line_of(&text, "port: 3307", 0);
    assert!(
        shown.starts_with(&format!("config.yaml:{line}:")),
        "{shown}"
    );
    assert!(shown.contains("duplicate"), "{shown}");
}

// --- Errors `pikachu check --offline` must report as config errors (exit 2, located) ---

/// Runs `pikachu check --offline -config <file>` on `text`: exit code and stderr.
fn check_offline(text: &[u8]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pikachu"))
        .args(["check", "--offline", "-config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .output()
        .expect("run pikachu");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `text` is rejected, by the library and by `pikachu check --offline`
/// (exit 2, one `error: …config.yaml:LINE:COL: KEY: …` line), at the line
/// holding `at`, naming `key`, with every one of `needles` in the message.
fn assert_config_error(text: &str, at: &str, key: &str, needles: &[&str]) {
    let line = line_of(text, at, 0);
    let e = err(text);
    let first = assert_located(&e, "config.yaml", line, key);
    for n in needles {
        assert!(first.contains(n), "expected {n:?} in {first:?}");
    }
    let (code, stderr) = check_offline(text.as_bytes());
    assert_eq!(code, Some(2), "exit code for {key}; stderr: {stderr}");
    let shown = stderr.lines().next().unwrap_or_default();
    assert!(
        shown.starts_with("error: ") && shown.contains(&format!("config.yaml:{line}:")),
        "expected error: …config.yaml:{line}: in {shown:?}"
    );
    assert!(shown.contains(key), "expected `{key}` in {shown:?}");
    for n in needles {
        assert!(shown.contains(n), "expected {n:?} in {shown:?}");
    }
}

#[test]
fn whsec_secret_with_invalid_base64() {
    let text = format!("{DB}tasks:\n{TASK_A}  secret: \"whsec_not*base64!\"\n");
    assert_config_error(&text, "secret:", "tasks[0].secret", &["whsec_", "base64"]);
    // The secret itself is never shown (not even in the source excerpt).
    let (_, stderr) = check_offline(text.as_bytes());
    assert!(!stderr.contains("not*base64!"), "{stderr}");
    let shown = err(&text).to_string();
    assert!(!shown.contains("not*base64!"), "{shown}");
}

#[test]
fn server_path_taken_by_a_fixed_endpoint() {
    for path in ["/metrics", "/live", "/ready"] {
        let text = format!("{DB}server:\n  enabled: true\n  path: \"{path}\"\ntasks:\n{TASK_A}");
        assert_config_error(
            &text,
            "path:",
            "server.path",
            &[path, "/live, /ready, /metrics"],
        );
    }
}

#[test]
fn server_path_that_is_not_a_plain_path() {
    for path in ["health", "/{id}", "/a/*rest", "/:x"] {
        let text = format!("{DB}server:\n  enabled: true\n  path: \"{path}\"\ntasks:\n{TASK_A}");
        assert_config_error(&text, "path:", "server.path", &["must start with `/`"]);
    }
}

#[test]
fn start_gtid_that_is_no_gtid() {
    for gtid in [
        "nope",
        "0-1",
        "0-1-x",
        "1-2-3,",
        "3E11FA47-71CA-11E1-9E33-C80AA9429562",
        "uuid:1-5",
    ] {
        let text = format!("{DB}start:\n  gtid: \"{gtid}\"\ntasks:\n{TASK_A}");
        assert_config_error(
            &text,
            "gtid:",
            "start.gtid",
            &[gtid, "0-1-100", "uuid:1-100"],
        );
    }
}

/// Every numeric and duration key has a range; a value outside it names the range.
#[test]
fn absurd_values_name_the_allowed_range() {
    let task_batch = |batch: &str| format!("{TASK_A}  batch: {{{batch}}}\n");
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            format!("{DB}dispatcher:\n  worker_count: 1000000000000\ntasks:\n{TASK_A}"),
            "worker_count",
            "dispatcher.worker_count",
            "between 1 and 10000",
        ),
        (
            format!("{DB}dispatcher:\n  queue_size: 1000000000000\ntasks:\n{TASK_A}"),
            "queue_size",
            "dispatcher.queue_size",
            "between 1 and 1000000",
        ),
        (
            format!("{DB}dispatcher:\n  max_retries: 1000000000\ntasks:\n{TASK_A}"),
            "max_retries",
            "dispatcher.max_retries",
            "between 0 and 1000",
        ),
        (
            format!("{DB}dispatcher:\n  timeout: 100000h\ntasks:\n{TASK_A}"),
            "timeout",
            "dispatcher.timeout",
            "between 1ms and 1h",
        ),
        (
            format!("{DB}dispatcher:\n  retry_base_delay: 1000h\ntasks:\n{TASK_A}"),
            "retry_base_delay",
            "dispatcher.retry_base_delay",
            "between 1ms and 1h",
        ),
        (
            format!("{DB}dispatcher:\n  retry_max_delay: 1000h\ntasks:\n{TASK_A}"),
            "retry_max_delay",
            "dispatcher.retry_max_delay",
            "between 1ms and 24h",
        ),
        (
            format!("{DB}dispatcher:\n  shutdown_timeout: 1000h\ntasks:\n{TASK_A}"),
            "shutdown_timeout",
            "dispatcher.shutdown_timeout",
            "between 0s and 1h",
        ),
        (
            format!("{DB}shutdown_timeout: 1000h\ntasks:\n{TASK_A}"),
            "shutdown_timeout",
            "shutdown_timeout",
            "between 0s and 1h",
        ),
        (
            format!("{DB}checkpoint:\n  interval: 0s\ntasks:\n{TASK_A}"),
            "interval",
            "checkpoint.interval",
            "between 1ms and 1h",
        ),
        (
            format!("{DB}checkpoint:\n  interval: 1000h\ntasks:\n{TASK_A}"),
            "interval",
            "checkpoint.interval",
            "between 1ms and 1h",
        ),
        (
            format!(
                "{}tasks:\n{TASK_A}",
                DB.replace("port: 3306", "port: 70000")
            ),
            "port: 70000",
            "database.port",
            "between 1 and 65535",
        ),
        (
            format!("{DB}server:\n  port: 70000\ntasks:\n{TASK_A}"),
            "port: 70000",
            "server.port",
            "between 1 and 65535",
        ),
        (
            format!(
                "{}tasks:\n{TASK_A}",
                DB.replace("server_id: 100", "server_id: 0")
            ),
            "server_id",
            "database.server_id",
            "between 1 and 4294967295",
        ),
        (
            format!(
                "{}tasks:\n{TASK_A}",
                DB.replace("server_id: 100", "server_id: 4294967296")
            ),
            "server_id",
            "database.server_id",
            "between 1 and 4294967295",
        ),
        (
            format!("{DB}  connect_timeout: 1000h\ntasks:\n{TASK_A}"),
            "connect_timeout",
            "database.connect_timeout",
            "between 1ms and 1h",
        ),
        (
            format!("{DB}  heartbeat: 0s\ntasks:\n{TASK_A}"),
            "heartbeat",
            "database.heartbeat",
            "between 1ms and 1h",
        ),
        (
            format!("{DB}  heartbeat: 1000h\ntasks:\n{TASK_A}"),
            "heartbeat",
            "database.heartbeat",
            "between 1ms and 1h",
        ),
        (
            format!("{DB}server:\n  down_after: 1000h\ntasks:\n{TASK_A}"),
            "down_after",
            "server.down_after",
            "between 1ms and 24h",
        ),
        (
            format!("{DB}server:\n  stall_after: 1000h\ntasks:\n{TASK_A}"),
            "stall_after",
            "server.stall_after",
            "between 1ms and 168h",
        ),
        (
            format!("{DB}start:\n  file: mysql-bin.000001\n  pos: 99999999999\ntasks:\n{TASK_A}"),
            "pos:",
            "start.pos",
            "between 4 and 4294967295",
        ),
        (
            format!("{DB}tasks:\n{}", task_batch("max_events: 1000000000")),
            "batch:",
            "tasks[0].batch.max_events",
            "between 1 and 10000",
        ),
        (
            format!(
                "{DB}tasks:\n{}",
                task_batch("max_events: 10, max_wait: 100000h")
            ),
            "batch:",
            "tasks[0].batch.max_wait",
            "between 0s and 1h",
        ),
    ];
    for (text, at, key, range) in &cases {
        assert_config_error(text, at, key, &[range]);
    }
}

#[test]
fn values_at_the_ends_of_the_ranges_are_accepted() {
    let text = format!(
        "{}  connect_timeout: 1h\n  heartbeat: 1ms\n\
         server:\n  port: 65535\n  down_after: 24h\n  stall_after: 168h\n\
         dispatcher:\n  worker_count: 10000\n  queue_size: 1000000\n  timeout: 1h\n  max_retries: 1000\n  retry_base_delay: 1h\n  retry_max_delay: 24h\n\
         checkpoint:\n  interval: 1ms\n\
         shutdown_timeout: 0s\n\
         start:\n  file: mysql-bin.000001\n  pos: 4294967295\n\
         tasks:\n{TASK_A}  batch: {{max_events: 10000, max_wait: 0s}}\n",
        DB.replace("server_id: 100", "server_id: 4294967295")
    );
    if let Err(e) = from_str(&text, "config.yaml", None) {
        panic!("{e}");
    }
}

#[test]
fn non_utf8_byte_names_its_line_and_column() {
    let text = format!("{DB}tasks:\n{TASK_A}").replace("name: A", "name: caf\u{1}");
    let line = line_of(&text, "caf\u{1}", 0);
    // A latin1 "é" (0xe9) after "  name: caf": column 12.
    let bytes: Vec<u8> = text
        .into_bytes()
        .into_iter()
        .map(|b| if b == 1 { 0xe9 } else { b })
        .collect();
    let (code, stderr) = check_offline(&bytes);
    assert_eq!(code, Some(2), "{stderr}");
    let shown = stderr.lines().next().unwrap_or_default();
    assert!(
        shown.contains(&format!("config.yaml:{line}:12:")),
        "expected config.yaml:{line}:12: in {shown:?}"
    );
    assert!(shown.contains("UTF-8") && shown.contains("0xe9"), "{shown}");
}

#[test]
fn snapshot_mode_and_chunk_size_are_checked() {
    // An unknown mode on a task: file:line, the key, the choices.
    let text = format!("{DB}tasks:\n{TASK_A}  snapshot: always\n");
    let e = err(&text);
    assert!(matches!(e, ConfigError::Invalid(_)), "{e:?}");
    let first = assert_located(
        &e,
        "config.yaml",
        line_of(&text, "snapshot:", 0),
        "snapshot",
    );
    assert!(
        first.contains("initial") && first.contains("never"),
        "{first}"
    );
    // A chunk size out of range, and of the wrong type.
    for (bad, kind) in [("0", "range"), ("100001", "range"), ("\"big\"", "type")] {
        let text = format!("{DB}snapshot:\n  chunk_size: {bad}\ntasks:\n{TASK_A}");
        let e = err(&text);
        match kind {
            "range" => assert!(matches!(e, ConfigError::Invalid(_)), "{bad}: {e:?}"),
            _ => assert!(matches!(e, ConfigError::WrongType(_)), "{bad}: {e:?}"),
        }
        assert_located(
            &e,
            "config.yaml",
            line_of(&text, "chunk_size", 0),
            "chunk_size",
        );
    }
    // An unknown key under `snapshot`.
    let text = format!("{DB}snapshot:\n  chunk: 10\ntasks:\n{TASK_A}");
    let e = err(&text);
    assert!(matches!(e, ConfigError::UnknownKey(_)), "{e:?}");
    assert_located(&e, "config.yaml", line_of(&text, "chunk: 10", 0), "chunk");
}

#[test]
fn snapshot_settings_load() {
    let text = format!("{DB}snapshot:\n  chunk_size: 500\ntasks:\n{TASK_A}  snapshot: initial\n- task_id: b\n  name: B\n  table_name: orders\n  events: [insert]\n  callback_url: https://api.example.com/b\n");
    let loaded = from_str(&text, "config.yaml", None).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert_eq!(c.snapshot.chunk_size, 500);
    assert_eq!(c.tasks[0].snapshot, pikachu::config::SnapshotMode::Initial);
    assert_eq!(c.tasks[1].snapshot, pikachu::config::SnapshotMode::Never);
    let c = from_str(&format!("{DB}tasks:\n{TASK_A}"), "config.yaml", None)
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    assert_eq!(c.snapshot.chunk_size, 4096, "the default");
}

#[test]
fn task_limits_are_checked_and_located() {
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            format!("{DB}tasks:\n{TASK_A}  rate_limit: 0\n"),
            "rate_limit",
            "rate_limit",
            "between 1 and 1000000",
        ),
        (
            format!("{DB}tasks:\n{TASK_A}  max_in_flight: 0\n"),
            "max_in_flight",
            "max_in_flight",
            "between 1 and 10000",
        ),
        (
            format!("{DB}tasks:\n{TASK_A}  breaker:\n    cooldown: 5\n"),
            "cooldown",
            "cooldown",
            "duration with a unit",
        ),
        (
            format!("{DB}tasks:\n{TASK_A}  backlog:\n    max_bytes: 10\n"),
            "max_bytes",
            "max_bytes",
            "at least 1 MiB",
        ),
        (
            format!("{DB}tasks:\n{TASK_A}  backlog:\n    when_full: drop\n"),
            "when_full",
            "when_full",
            "dead_letter",
        ),
        (
            format!("{DB}tasks:\n{TASK_A}  dead_letter_on: [200]\n"),
            "dead_letter_on",
            "dead_letter_on",
            "between 400 and 599",
        ),
    ];
    for (text, needle, key, says) in cases {
        let e = err(&text);
        let first = assert_located(&e, "config.yaml", line_of(&text, needle, 0), key);
        assert!(e.to_string().contains(says), "{needle}: {e}\n{first}");
    }
    // Valid limits load, with their defaults filled in.
    let text = format!(
        "{DB}tasks:\n{TASK_A}  max_in_flight: 4\n  rate_limit: 50\n  breaker: {{failures: 3}}\n  backlog: {{max_bytes: 2097152, when_full: dead_letter}}\n  dead_letter_on: [410, 422, 410]\n"
    );
    let loaded = from_str(&text, "config.yaml", None).expect("valid");
    let l = &loaded.config.tasks[0].limits;
    assert_eq!((l.max_in_flight, l.rate_limit), (Some(4), Some(50)));
    assert_eq!(l.breaker.failures, 3);
    assert_eq!(l.breaker.cooldown, std::time::Duration::from_secs(1));
    assert_eq!(l.backlog.max_bytes, 2 << 20);
    assert_eq!(l.backlog.when_full, pikachu::config::WhenFull::DeadLetter);
    assert_eq!(l.dead_letter_on, [410, 422]);
}
