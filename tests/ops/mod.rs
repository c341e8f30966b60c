//! Helpers of the operator-endpoint tests (`tests/health.rs`,
//! `tests/metrics.rs`): a plain HTTP/1.1 GET, a free port, pikachu with
//! its server on, and `/metrics` parsed by real parsers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::support::pikachu::Pikachu;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// `server:` settings appended to a generated config.
pub fn server_yaml(port: u16, extra: &str) -> String {
    format!("server:\n  enabled: true\n  bind: \"127.0.0.1\"\n  port: {port}\n{extra}")
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// `GET path` on 127.0.0.1:port; `Err` when nothing answers.
pub fn get(port: u16, path: &str) -> Result<Answer, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8(raw).map_err(|e| e.to_string())?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok(Answer {
        status,
        headers: head.to_string(),
        body: body.to_string(),
    })
}

/// Polls `GET path` until `ok(answer)` or `timeout`; panics with the last
/// answer and pikachu's log.
pub fn poll(
    pikachu: &mut Pikachu,
    port: u16,
    path: &str,
    timeout: Duration,
    what: &str,
    ok: impl Fn(&Answer) -> bool,
) -> Answer {
    let deadline = Instant::now() + timeout;
    loop {
        pikachu.assert_alive();
        let last = match get(port, path) {
            Ok(a) if ok(&a) => return a,
            Ok(a) => format!("{} {}", a.status, a.body),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            panic!(
                "{what}: GET {path} never satisfied the check in {timeout:?}; last: {last}\nlog:\n{}",
                pikachu.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50)); // poll interval
    }
}

/// `/metrics` parsed with the `prometheus-parse` crate.
pub struct Scrape {
    pub text: String,
    pub samples: Vec<prometheus_parse::Sample>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("prometheus-parse");
        Scrape {
            text: text.to_string(),
            samples: scrape.samples,
        }
    }

    /// The value of the sample `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .and_then(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            })
    }

    /// The histogram buckets (upper bound, cumulative count) of `name`.
    pub fn buckets(&self, name: &str, labels: &[(&str, &str)]) -> Option<Vec<(f64, f64)>> {
        self.samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .and_then(|s| match &s.value {
                prometheus_parse::Value::Histogram(b) => {
                    Some(b.iter().map(|c| (c.less_than, c.count)).collect())
                }
                _ => None,
            })
    }
}

/// Validates `text` with the reference OpenMetrics parser (Python
/// `prometheus_client`, installed by scripts/test.sh): it rejects a
/// malformed exposition, a counter without `_total`, a unit that is not
/// the name's suffix, non-cumulative buckets, a missing `# EOF`…
/// Returns the metric family names and types it read.
pub fn validate_openmetrics(text: &str) -> Vec<(String, String)> {
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for f in text_string_to_metric_families(sys.stdin.read()):
    print(f.name, f.type)
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (scripts/test.sh installs prometheus_client)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to python3");
    let out = child.wait_with_output().expect("python3");
    assert!(
        out.status.success(),
        "the OpenMetrics parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (n, t) = l.split_once(' ')?;
            Some((n.to_string(), t.to_string()))
        })
        .collect()
}
