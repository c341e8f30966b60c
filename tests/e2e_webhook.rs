//! End to end: a real MariaDB with a ROW binlog, the real `pikachu` binary,
//! a real HTTP receiver. Inserts, updates and deletes rows and asserts the
//! exact JSON bodies the receiver got, in the Go pikachu's format.

mod support;

use std::time::Duration;

use serde_json::json;
use support::pikachu::{config_yaml, Pikachu, TaskSpec};
use support::{MariaDb, Receiver};

#[test]
fn insert_update_delete_reach_the_webhook_as_seed_payloads() {
    let db = MariaDb::shared();
    let name = db.fresh_database("e2e");
    db.exec_in(
        &name,
        "CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(64), email VARCHAR(128), created_at DATETIME)",
    );
    db.exec_in(&name, "CREATE TABLE other (id INT PRIMARY KEY)");
    let receiver = Receiver::start();
    let start = db.master_status();
    let yaml = config_yaml(
        db,
        &name,
        &start,
        &[TaskSpec::new(
            "user_monitor",
            "users",
            &["insert", "update", "delete"],
            &receiver.url("/hook/user"),
        )],
    );
    let mut pikachu = Pikachu::start(&yaml);

    // Fixed session time: binlog events carry it, so the payload timestamp is known.
    db.exec_in(
        &name,
        "SET TIMESTAMP = 1672574400;
         INSERT INTO other VALUES (1);
         INSERT INTO users VALUES (1, 'John Doe', 'john@example.com', NOW());
         UPDATE users SET name = 'Jane Doe' WHERE id = 1;
         DELETE FROM users WHERE id = 1;",
    );
    let got = receiver.wait_for(3, Duration::from_secs(30));
    let bodies: Vec<serde_json::Value> = got.iter().map(|r| r.json()).collect();
    pikachu.assert_alive();

    let row = json!({"id": 1, "name": "John Doe", "email": "john@example.com", "created_at": "2023-01-01 12:00:00"});
    let row2 = json!({"id": 1, "name": "Jane Doe", "email": "john@example.com", "created_at": "2023-01-01 12:00:00"});
    let expected = [
        json!({"primary_id": 1, "event": "insert", "table": "users", "data": row, "timestamp": "2023-01-01T12:00:00Z"}),
        json!({"primary_id": 1, "event": "update", "table": "users", "old_data": row, "new_data": row2, "timestamp": "2023-01-01T12:00:00Z"}),
        json!({"primary_id": 1, "event": "delete", "table": "users", "data": row2, "timestamp": "2023-01-01T12:00:00Z"}),
    ];
    for (body, want) in bodies.iter().zip(expected.iter()) {
        // The seed's fields, exactly.
        let seed_part: serde_json::Map<String, serde_json::Value> = body
            .as_object()
            .expect("object")
            .iter()
            .filter(|(k, _)| want.get(k.as_str()).is_some())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(serde_json::Value::Object(seed_part), *want, "body: {body}");
        // The added fields.
        assert_eq!(body["task_id"], "user_monitor");
        assert_eq!(body["database"], name.as_str());
        assert_eq!(body["source"]["file"], start.0.as_str());
        let pos = body["source"]["pos"].as_u64().expect("pos");
        assert!(pos > start.1, "pos {pos} after start {}", start.1);
        assert_eq!(body["source"]["row"], 0);
        let gtid = body["source"]["gtid"].as_str().expect("MariaDB has GTIDs");
        assert!(gtid.starts_with("0-1-"), "gtid {gtid}");
        // `<history>/<gtid>#<row>@<task>`: the history marker is the
        // creation time of the oldest binlog file (a Unix time).
        let id = body["id"].as_str().expect("id");
        let (history, rest) = id.split_once('/').expect("history/…");
        assert!(
            history.parse::<u32>().is_ok_and(|h| h > 1_600_000_000),
            "{id}"
        );
        assert_eq!(rest, format!("{gtid}#0@user_monitor"));
        assert_eq!(
            body.as_object().map(|o| o.len()),
            Some(want.as_object().map_or(0, |o| o.len()) + 4)
        );
    }
    // Headers.
    let first = &got[0];
    assert_eq!(first.path, "/hook/user");
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(first.header("webhook-id"), bodies[0]["id"].as_str());
    assert!(first
        .header("user-agent")
        .is_some_and(|ua| ua.starts_with("pikachu/")));
    // The unwatched table produced nothing.
    receiver.assert_no_more_requests(Duration::from_millis(500));
    assert_eq!(receiver.all_requests().len(), 3);
}
