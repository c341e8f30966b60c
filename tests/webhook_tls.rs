//! An https callback whose certificate is self-signed: the delivery error
//! (dead letter, log, `dlq replay` output) says "self-signed certificate"
//! and how to fix it, not a generic "error sending request"; and the fix it
//! names (a CA this machine trusts, through `SSL_CERT_FILE`) works. Real
//! MariaDB, real binary, a real TLS receiver.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::pikachu::{config_yaml, Pikachu, TaskSpec};
use support::{MariaDb, Receiver};

fn last_errors(state: &Path) -> Vec<String> {
    let Ok(conn) = rusqlite::Connection::open(state.join("pikachu.db")) else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare("SELECT last_error FROM dead_letters") else {
        return Vec::new();
    };
    stmt.query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .unwrap_or_default()
}

#[test]
fn a_self_signed_webhook_certificate_is_named_and_the_fix_works() {
    let db = MariaDb::shared();
    let name = db.fresh_database("tls_hook");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let r = Receiver::start_tls();
    let start = db.master_status();
    let yaml = config_yaml(
        db,
        &name,
        &start,
        &[TaskSpec::new("t", "t", &["insert"], &r.url("/hook"))],
    )
    .replacen("dispatcher:\n", "dispatcher:\n  max_retries: 1\n", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Pikachu::start_in(dir.path(), &yaml, &[]);
    db.exec_in(&name, "INSERT INTO t VALUES (1, 1)");

    let state = dir.path().join("data");
    let deadline = Instant::now() + Duration::from_secs(60);
    let errors = loop {
        let e = last_errors(&state);
        if !e.is_empty() {
            break e;
        }
        assert!(Instant::now() < deadline, "no dead letter");
        std::thread::sleep(Duration::from_millis(50)); // poll interval
    };
    let error = &errors[0];
    assert!(error.contains("self-signed certificate"), "{error}");
    assert!(
        error.contains("SSL_CERT_FILE"),
        "says how to fix it: {error}"
    );
    assert!(
        p.log().contains("self-signed certificate"),
        "the log says it too"
    );
    assert!(
        r.failed_handshakes() >= 2,
        "both attempts reached the server"
    );
    assert!(r.all_requests().is_empty(), "no request got through");
    let status = p.terminate();
    assert!(status.success(), "{status}");

    // The fix the message names: trust the certificate.
    let ca = dir.path().join("receiver.pem");
    std::fs::write(&ca, r.cert_pem()).expect("write the certificate");
    let o = Command::new(Pikachu::bin())
        .args(["dlq", "replay", "-config", "config.yaml"])
        .current_dir(dir.path())
        .env("SSL_CERT_FILE", &ca)
        .output()
        .expect("dlq replay");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let got = r.wait_for(1, Duration::from_secs(10));
    assert_eq!(got[0].json()["data"]["id"], 1);
    assert!(last_errors(&state).is_empty(), "replayed and removed");
}
