//! `/health`, `/ready` and `/live` of the real binary: the document's shape,
//! DOWN (HTTP 503) when the database has been gone longer than
//! `server.down_after` and UP again when it is back, DOWN while delivery is
//! stalled, and the server stopping with pikachu.

mod ops;
mod support;

use std::time::Duration;

use ops::{free_port, get, poll, server_yaml};
use support::pikachu::{config_yaml, Pikachu, TaskSpec};
use support::{MariaDb, Receiver, ServerOptions};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn health_is_down_while_the_database_is_gone_and_up_again_after() {
    let db = MariaDb::start(ServerOptions::default());
    let name = db.fresh_database("health");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY)");
    let receiver = Receiver::start();
    let port = free_port();
    let start = db.master_status();
    let mut yaml = config_yaml(
        &db,
        &name,
        &start,
        &[TaskSpec::new("h", "t", &["insert"], &receiver.url("/t"))],
    );
    yaml.push_str(&server_yaml(
        port,
        "  path: \"/healthz\"\n  down_after: \"2s\"\n",
    ));
    let mut pikachu = Pikachu::start(&yaml);

    let up = poll(&mut pikachu, port, "/healthz", WAIT, "UP", |a| {
        a.status == 200 && a.json()["connected"] == true
    });
    let doc = up.json();
    assert_eq!(doc["status"], "UP", "{doc}");
    assert_eq!(doc["monitor_running"], true);
    assert_eq!(doc["dispatcher_running"], true);
    assert_eq!(doc["event_queue_size"], 0);
    assert_eq!(doc["dead_letters"], 0);
    assert!(doc.get("reason").is_none(), "{doc}");
    for key in ["last_event_time", "lag_seconds", "position"] {
        assert!(doc.get(key).is_some(), "no {key}: {doc}");
    }
    assert_eq!(get(port, "/ready").expect("ready").status, 200);
    assert_eq!(get(port, "/live").expect("live").status, 200);
    // The health path is the configured one.
    assert_eq!(get(port, "/health").expect("404").status, 404);

    db.exec_in(
        &name,
        "SET TIMESTAMP = 1672574400; INSERT INTO t VALUES (1)",
    );
    receiver.wait_for(1, WAIT);
    let doc = poll(&mut pikachu, port, "/healthz", WAIT, "position", |a| {
        a.json()["position"].is_string()
    })
    .json();
    assert_eq!(doc["last_event_time"], "2023-01-01T12:00:00Z", "{doc}");
    let position = doc["position"].as_str().unwrap_or_default().to_string();
    assert!(
        position.starts_with(&format!("{}:", start.0)),
        "position {position}, started at {start:?}"
    );
    assert!(doc["lag_seconds"].is_i64(), "{doc}");

    // The database goes away: not ready at once, DOWN after down_after.
    db.stop();
    poll(&mut pikachu, port, "/ready", WAIT, "not ready", |a| {
        a.status == 503
    });
    let down = poll(&mut pikachu, port, "/healthz", WAIT, "DOWN", |a| {
        a.status == 503
    });
    let doc = down.json();
    assert_eq!(doc["status"], "DOWN", "{doc}");
    assert_eq!(doc["connected"], false);
    assert!(
        doc["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("no binlog connection for"),
        "{doc}"
    );
    assert_eq!(doc["position"], position.as_str());
    assert_eq!(get(port, "/live").expect("live").status, 200);

    // Back: UP and ready again, without a restart of pikachu.
    db.start_again();
    poll(&mut pikachu, port, "/healthz", WAIT, "UP again", |a| {
        a.status == 200 && a.json()["status"] == "UP" && a.json()["connected"] == true
    });
    poll(&mut pikachu, port, "/ready", WAIT, "ready again", |a| {
        a.status == 200
    });
    let m = get(port, "/metrics").expect("metrics").body;
    assert!(
        m.lines()
            .any(|l| l.starts_with("pikachu_binlog_reconnects_total ")
                && l != "pikachu_binlog_reconnects_total 0"),
        "no reconnect counted:\n{m}"
    );

    // A clean stop closes the server too.
    assert_eq!(pikachu.terminate().code(), Some(0));
    assert!(get(port, "/live").is_err(), "the server still answers");
}

#[test]
fn health_is_down_while_delivery_is_stalled() {
    let db = MariaDb::shared();
    let name = db.fresh_database("stall");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY)");
    let receiver = Receiver::start();
    let port = free_port();
    let start = db.master_status();
    let mut spec = TaskSpec::new("s", "t", &["insert"], &receiver.url("/t"));
    // Retried forever: the change holds the queue while the endpoint fails.
    spec.extra = "  on_failure: block\n".into();
    let mut yaml = config_yaml(db, &name, &start, &[spec]);
    yaml.push_str(&server_yaml(port, "  stall_after: \"1s\"\n"));
    let mut pikachu = Pikachu::start(&yaml);
    poll(&mut pikachu, port, "/health", WAIT, "UP", |a| {
        a.status == 200
    });

    receiver.set_status(Some(500));
    db.exec_in(&name, "INSERT INTO t VALUES (1)");
    let doc = poll(&mut pikachu, port, "/health", WAIT, "stalled", |a| {
        a.status == 503
    })
    .json();
    assert_eq!(doc["status"], "DOWN", "{doc}");
    assert_eq!(doc["event_queue_size"], 1, "{doc}");
    assert_eq!(doc["connected"], true, "{doc}");
    assert!(
        doc["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("delivery stalled"),
        "{doc}"
    );
    // Still connected and streaming: ready (not a reason to restart or
    // take it out of rotation; it is the endpoint that fails).
    assert_eq!(get(port, "/ready").expect("ready").status, 200);

    receiver.set_status(None);
    poll(
        &mut pikachu,
        port,
        "/health",
        WAIT,
        "UP after delivery",
        |a| a.status == 200 && a.json()["event_queue_size"] == 0,
    );
}

#[test]
fn the_health_path_cannot_shadow_the_other_endpoints() {
    let db = MariaDb::shared();
    let start = db.master_status();
    let port = free_port();
    let mut yaml = config_yaml(
        db,
        "mysql",
        &start,
        &[TaskSpec::new(
            "x",
            "user",
            &["insert"],
            "http://127.0.0.1:9/",
        )],
    );
    yaml.push_str(&server_yaml(port, "  path: \"/metrics\"\n"));
    // A config error: exit 2, located at the key.
    let pikachu = Pikachu::start(&yaml);
    pikachu.wait_log("server.path: `/metrics` is taken", WAIT);
    assert_eq!(pikachu.wait_exit(WAIT).code(), Some(2));
}
