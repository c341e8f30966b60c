//! Every column type through a real MariaDB binlog, checked against the
//! JSON contract of docs/types.md: extremes, NULLs, charsets, binary bytes,
//! for insert, update and delete — with full and minimal row metadata,
//! with and without binlog compression and checksums.

mod support;

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use support::pikachu::collect_payloads;
use support::{MariaDb, ServerOptions};

use support::every_type::{insert_rows, TABLE};

fn inserts() -> String {
    format!(
        "{}
         UPDATE types SET vc = 'changed', mi = -5 WHERE id = 1;
         DELETE FROM types WHERE id = 2;",
        insert_rows()
    )
}

fn row1() -> Value {
    let nines = format!("{}.{}", "9".repeat(35), "9".repeat(30));
    let all = base64::engine::general_purpose::STANDARD.encode((0u8..=255).collect::<Vec<u8>>());
    json!({
        "id": 1, "ti": 127, "tiu": 255, "si": 32767, "siu": 65535,
        "mi": 8388607, "miu": 16777215, "i": 2147483647, "iu": 4294967295u64,
        "bi": 9223372036854775807i64, "biu": 18446744073709551615u64,
        "yr": 2155, "after_yr": 4294967295u64,
        "d65": nines, "d102": "12.50",
        "f": 1.1, "dbl": 0.1,
        "b64": 18446744073709551615u64, "b1": 1,
        "ch": "abc", "vc": "héllo 😀", "txt": "line1\nline2 \"q\"", "l1": "café",
        "bn": "AP8BAg==", "vb": all, "bl": "YmxvYg==",
        "en": "medium", "st": "a,c",
        "dt": "2024-02-29", "dtm6": "2024-02-29 23:59:59.123456", "dtm": "1000-01-01 00:00:00",
        "ts3": "2038-01-19T03:14:07.999Z",
        "tm": "-838:59:59", "tm6": "-00:00:01.500000",
        "js": {"a": 1, "b": [true, null, "x"], "c": {"d": 1.5}},
        "geo": "POINT(1 2)"
    })
}

fn row2() -> Value {
    let nines = format!("-{}.{}", "9".repeat(35), "9".repeat(30));
    json!({
        "id": 2, "ti": -128, "tiu": 0, "si": -32768, "siu": 0,
        "mi": -8388608, "miu": 0, "i": -2147483648i64, "iu": 0,
        "bi": i64::MIN, "biu": 0,
        "yr": 0, "after_yr": 0,
        "d65": nines, "d102": "-0.01",
        "f": -3.5, "dbl": -1e300,
        "b64": 0, "b1": 0,
        "ch": "", "vc": "", "txt": "", "l1": "",
        "bn": "AAAAAA==", "vb": "", "bl": "",
        "en": "small", "st": "",
        "dt": "1000-01-01", "dtm6": "1000-01-01 00:00:00.000000", "dtm": "9999-12-31 23:59:59",
        "ts3": "1970-01-01T00:00:01.000Z",
        "tm": "838:59:59", "tm6": "00:00:00.000001",
        "js": [],
        "geo": "LINESTRING(0 0,1 1)"
    })
}

fn row3() -> Value {
    let r = row1();
    let mut o = serde_json::Map::new();
    for k in r.as_object().expect("object").keys() {
        o.insert(k.clone(), Value::Null);
    }
    o.insert("id".into(), json!(3));
    Value::Object(o)
}

/// Compares field by field so that a failure names the column.
fn assert_row(got: &Value, want: &Value, what: &str) {
    let (g, w) = (
        got.as_object().expect("row is an object"),
        want.as_object().expect("object"),
    );
    for (k, wv) in w {
        assert_eq!(g.get(k), Some(wv), "{what}: column `{k}`");
    }
    assert_eq!(
        g.len(),
        w.len(),
        "{what}: columns {:?}",
        g.keys().collect::<Vec<_>>()
    );
}

fn run_types(db: &MariaDb) {
    let name = db.fresh_database("types");
    db.exec_in(&name, TABLE);
    let start = db.master_status();
    db.exec_in(&name, &inserts());
    let got = collect_payloads(db, &name, &["types"], &start, 5, Duration::from_secs(30));
    assert_eq!(got[0]["event"], "insert");
    assert_eq!(got[0]["primary_id"], 1);
    assert_row(&got[0]["data"], &row1(), "insert of row 1");
    assert_eq!(got[1]["event"], "insert");
    assert_row(&got[1]["data"], &row2(), "insert of row 2");
    assert_eq!(got[2]["event"], "insert");
    assert_row(&got[2]["data"], &row3(), "insert of the NULL row");
    assert_eq!(got[3]["event"], "update");
    assert_row(&got[3]["old_data"], &row1(), "update: old row 1");
    let mut new1 = row1();
    new1["vc"] = json!("changed");
    new1["mi"] = json!(-5);
    assert_row(&got[3]["new_data"], &new1, "update: new row 1");
    assert_eq!(got[4]["event"], "delete");
    assert_eq!(got[4]["primary_id"], 2);
    assert_row(&got[4]["data"], &row2(), "delete of row 2");
}

#[test]
fn all_types_full_metadata_crc32() {
    run_types(MariaDb::shared());
}

#[test]
fn all_types_minimal_metadata() {
    let db = MariaDb::start(ServerOptions::with_args(["--binlog-row-metadata=MINIMAL"]));
    run_types(&db);
}

#[test]
fn all_types_compressed_binlog() {
    let db = MariaDb::start(ServerOptions::with_args([
        "--log-bin-compress=ON",
        "--log-bin-compress-min-len=10",
    ]));
    run_types(&db);
    // The events really were compressed.
    let name = db.fresh_database("compressed_check");
    let events = db.query(&format!("SHOW BINLOG EVENTS IN '{}'", db.master_status().0));
    let _ = name;
    assert!(
        events.iter().any(|r| r
            .get(2)
            .and_then(|t| t.as_deref())
            .is_some_and(|t| t.contains("compressed"))),
        "no compressed events in the binlog: {events:?}"
    );
}

#[test]
fn all_types_without_checksums() {
    let db = MariaDb::start(ServerOptions::with_args(["--binlog-checksum=NONE"]));
    assert_eq!(db.variable("binlog_checksum"), "NONE");
    run_types(&db);
}
