//! `primary_id` under every `binlog_row_image` (FULL, NOBLOB, MINIMAL), read
//! from a real MariaDB binlog: with MINIMAL an update's after image holds
//! only the changed columns and the before image only the key, so the key
//! must come from whichever image has it; the same for a composite key
//! whose columns change one at a time.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::pikachu::collect_payloads;
use support::{MariaDb, ServerOptions};

/// Runs the same changes on a server with `--binlog-row-image=<image>` and
/// checks the event and `primary_id` of every payload.
fn primary_ids_under(image: &str) -> Vec<Value> {
    let db = MariaDb::start(ServerOptions::with_args([format!(
        "--binlog-row-image={image}"
    )]));
    assert_eq!(db.variable("binlog_row_image"), image);
    let database = db.fresh_database("row_image");
    db.exec_in(
        &database,
        "CREATE TABLE one (id INT PRIMARY KEY, name VARCHAR(20), note TEXT);
         CREATE TABLE two (a INT, b INT, c VARCHAR(10), PRIMARY KEY (a, b));",
    );
    let start = db.master_status();
    db.exec_in(
        &database,
        "INSERT INTO one VALUES (1, 'a', 'n');
         UPDATE one SET name = 'b' WHERE id = 1;
         UPDATE one SET note = 'm' WHERE id = 1;
         UPDATE one SET id = 5 WHERE id = 1;
         DELETE FROM one WHERE id = 5;
         INSERT INTO two VALUES (1, 2, 'x');
         UPDATE two SET c = 'y' WHERE a = 1 AND b = 2;
         UPDATE two SET a = 3 WHERE a = 1 AND b = 2;
         DELETE FROM two WHERE a = 3 AND b = 2;",
    );
    let payloads = collect_payloads(
        &db,
        &database,
        &["one", "two"],
        &start,
        9,
        Duration::from_secs(30),
    );
    let got: Vec<Value> = payloads
        .iter()
        .map(|p| json!([p["event"], p["primary_id"]]))
        .collect();
    let expected = vec![
        json!(["insert", 1]),
        json!(["update", 1]),
        json!(["update", 1]),
        // A key change: the new key.
        json!(["update", 5]),
        json!(["delete", 5]),
        json!(["insert", {"a": 1, "b": 2}]),
        json!(["update", {"a": 1, "b": 2}]),
        json!(["update", {"a": 3, "b": 2}]),
        json!(["delete", {"a": 3, "b": 2}]),
    ];
    assert_eq!(
        got, expected,
        "binlog_row_image={image}; payloads: {payloads:#?}"
    );
    payloads
}

#[test]
fn primary_id_with_full_images() {
    primary_ids_under("FULL");
}

#[test]
fn primary_id_with_noblob_images() {
    primary_ids_under("NOBLOB");
}

#[test]
fn primary_id_with_minimal_images() {
    let payloads = primary_ids_under("MINIMAL");
    // What MINIMAL really sends (so the test does exercise the fallback):
    // the old row's key only, and only the changed column in the new row.
    assert_eq!(payloads[1]["old_data"], json!({"id": 1}));
    assert_eq!(payloads[1]["new_data"], json!({"name": "b"}));
    assert_eq!(payloads[4]["data"], json!({"id": 5}));
    assert_eq!(payloads[7]["new_data"], json!({"a": 3}));
}
