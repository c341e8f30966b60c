//! Table definitions changing mid-stream: with full row metadata every change
//! carries the column names of its own time, even when read long after the
//! ALTERs; with minimal metadata pikachu follows the definition through each
//! DDL it sees (the schema history), and refuses (rather than shifting
//! columns) when it cannot know the definition an older event was written
//! with.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::pikachu::{collect_payloads, config_yaml, try_collect_payloads, Pikachu, TaskSpec};
use support::{MariaDb, Receiver, ServerOptions};

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn full_metadata_keeps_the_names_of_each_changes_time() {
    let db = MariaDb::shared();
    let name = db.fresh_database("ddl_full");
    db.exec_in(
        &name,
        "CREATE TABLE t (id INT PRIMARY KEY, a INT, b VARCHAR(10))",
    );
    let start = db.master_status();
    db.exec_in(
        &name,
        "INSERT INTO t VALUES (1, 10, 'x');
         ALTER TABLE t ADD COLUMN c INT;
         INSERT INTO t VALUES (2, 20, 'y', 200);
         ALTER TABLE t DROP COLUMN a;
         INSERT INTO t VALUES (3, 'z', 300);
         ALTER TABLE t MODIFY c INT FIRST;
         INSERT INTO t (c, id, b) VALUES (400, 4, 'w');
         UPDATE t SET b = 'v' WHERE id = 4;",
    );
    // Read everything after all the ALTERs ran (catch-up).
    let got = collect_payloads(db, &name, &["t"], &start, 5, Duration::from_secs(30));
    assert_eq!(got[0]["data"], json!({"id": 1, "a": 10, "b": "x"}));
    assert_eq!(
        got[1]["data"],
        json!({"id": 2, "a": 20, "b": "y", "c": 200})
    );
    assert_eq!(got[2]["data"], json!({"id": 3, "b": "z", "c": 300}));
    assert_eq!(got[3]["data"], json!({"c": 400, "id": 4, "b": "w"}));
    assert_eq!(
        got[3]["primary_id"], 4,
        "the key is found by name after a reorder"
    );
    assert_eq!(got[4]["old_data"], json!({"c": 400, "id": 4, "b": "w"}));
    assert_eq!(got[4]["new_data"], json!({"c": 400, "id": 4, "b": "v"}));
    assert_eq!(keys(&got[3]["data"]), vec!["b", "c", "id"]);
}

#[test]
fn minimal_metadata_following_live_rereads_the_definition_after_ddl() {
    let db = MariaDb::start(ServerOptions::with_args(["--binlog-row-metadata=MINIMAL"]));
    let name = db.fresh_database("ddl_min");
    db.exec_in(
        &name,
        "CREATE TABLE t (id INT PRIMARY KEY, a INT, b VARCHAR(10))",
    );
    let receiver = Receiver::start();
    let start = db.master_status();
    let yaml = config_yaml(
        &db,
        &name,
        &start,
        &[TaskSpec::new(
            "t",
            "t",
            &["insert", "update", "delete"],
            &receiver.url("/t"),
        )],
    );
    let mut pikachu = Pikachu::start(&yaml);
    let steps: [(&str, Value); 4] = [
        (
            "INSERT INTO t VALUES (1, 10, 'x')",
            json!({"id": 1, "a": 10, "b": "x"}),
        ),
        (
            "ALTER TABLE t ADD COLUMN c INT; INSERT INTO t VALUES (2, 20, 'y', 200)",
            json!({"id": 2, "a": 20, "b": "y", "c": 200}),
        ),
        (
            "ALTER TABLE t DROP COLUMN a; INSERT INTO t VALUES (3, 'z', 300)",
            json!({"id": 3, "b": "z", "c": 300}),
        ),
        (
            "ALTER TABLE t MODIFY c INT FIRST; INSERT INTO t (c, id, b) VALUES (400, 4, 'w')",
            json!({"c": 400, "id": 4, "b": "w"}),
        ),
    ];
    for (i, (sql, want)) in steps.iter().enumerate() {
        db.exec_in(&name, sql);
        let got = receiver.wait_for(i + 1, Duration::from_secs(30));
        assert_eq!(got[i].json()["data"], *want, "after `{sql}`");
    }
    pikachu.assert_alive();
}

#[test]
fn minimal_metadata_refuses_a_definition_that_cannot_match() {
    let db = MariaDb::start(ServerOptions::with_args(["--binlog-row-metadata=MINIMAL"]));
    let name = db.fresh_database("ddl_refuse");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, a VARCHAR(10))");
    let start = db.master_status();
    db.exec_in(
        &name,
        "INSERT INTO t VALUES (1, 'x');
         ALTER TABLE t DROP COLUMN a, ADD COLUMN b INT;
         INSERT INTO t VALUES (2, 2);",
    );
    // Reading from before the ALTER with no schema history: the definition
    // before it cannot be known (the table is (id INT, b INT) now).
    let err = try_collect_payloads(&db, &name, &["t"], &start, 2, Duration::from_secs(30))
        .expect_err("must not emit shifted columns");
    assert!(err.contains("cannot tell which columns"), "{err}");
    assert!(err.contains("before the DDL at"), "{err}");
    assert!(err.contains("binlog_row_metadata=FULL"), "{err}");
}
