//! Tests of the test harness itself (tests/support).

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use support::{http_client, MariaDb, Receiver, ServerOptions};

async fn connect(url: &str) -> mysql_async::Conn {
    let opts = mysql_async::Opts::from_url(url).expect("url");
    mysql_async::Conn::new(opts)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// The privileges of a `GRANT ... ON *.* TO ...` line.
fn global_privileges(grant: &str) -> BTreeSet<String> {
    let rest = grant.strip_prefix("GRANT ").expect("GRANT line");
    let list = &rest[..rest.find(" ON *.*").expect("ON *.*")];
    list.split(',')
        .map(|p| match p.trim() {
            // MariaDB 10.5+ renamed REPLICATION CLIENT to BINLOG MONITOR
            // (the old name is an alias).
            "REPLICATION CLIENT" => "BINLOG MONITOR".to_owned(),
            other => other.to_owned(),
        })
        .collect()
}

#[tokio::test]
async fn shared_server_has_the_cdc_user_and_a_row_binlog() {
    let db = MariaDb::shared();
    let mut conn = connect(&db.user_url()).await;

    let user: String = conn
        .query_first("SELECT CURRENT_USER()")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user, "pikachu@%");

    let grants: Vec<String> = conn.query("SHOW GRANTS").await.unwrap();
    let global: Vec<&String> = grants.iter().filter(|g| g.contains(" ON *.* ")).collect();
    assert_eq!(global.len(), 1, "grants: {grants:?}");
    let expected: BTreeSet<String> = ["SELECT", "REPLICATION SLAVE", "BINLOG MONITOR"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(global_privileges(global[0]), expected, "grants: {grants:?}");
    assert_eq!(grants.len(), 1, "no other grants expected: {grants:?}");

    for (name, value) in [
        ("binlog_format", "ROW"),
        ("log_bin", "ON"),
        ("binlog_row_image", "FULL"),
        ("binlog_row_metadata", "FULL"),
        ("server_id", "1"),
        ("binlog_checksum", "CRC32"),
    ] {
        let row: Option<(String, String)> = conn
            .query_first(format!("SHOW VARIABLES LIKE '{name}'"))
            .await
            .unwrap();
        assert_eq!(row, Some((name.to_owned(), value.to_owned())));
    }

    // The CDC user may read the binlog position.
    let status: Option<mysql_async::Row> = conn.query_first("SHOW MASTER STATUS").await.unwrap();
    let file: String = status.expect("SHOW MASTER STATUS row").get(0).unwrap();
    assert!(file.starts_with("mysql-bin."), "{file}");
    assert!(db.binlog_dir().join(&file).is_file());

    // ... and may not write.
    let denied = conn
        .query_drop("CREATE DATABASE pikachu_must_not_exist")
        .await;
    assert!(denied.is_err(), "pikachu could create a database");
    conn.disconnect().await.unwrap();
}

#[test]
fn fresh_databases_are_distinct_and_usable() {
    let db = MariaDb::shared();
    let a = db.fresh_database("selftest");
    let b = db.fresh_database("selftest");
    assert_ne!(a, b);
    db.exec_in(
        &a,
        "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20));
         INSERT INTO t VALUES (1, 'pikachu'), (2, NULL), (3, 'ünïcödé');",
    );
    let rows = db.query(&format!("SELECT id, name FROM `{a}`.t ORDER BY id"));
    assert_eq!(
        rows,
        vec![
            vec![Some("1".into()), Some("pikachu".into())],
            vec![Some("2".into()), None],
            vec![Some("3".into()), Some("ünïcödé".into())],
        ]
    );
    assert_eq!(
        db.query_value(&format!(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{b}'"
        )),
        "0"
    );
}

#[test]
#[should_panic(expected = "SQL failed")]
fn exec_panics_with_the_server_error() {
    MariaDb::shared().exec("SELECT * FROM no_such_db.no_such_table");
}

#[test]
fn dedicated_server_takes_extra_args_and_dies_on_drop() {
    let started = Instant::now();
    let db = MariaDb::start(ServerOptions::with_args([
        "--binlog-checksum=NONE",
        "--binlog-row-metadata=MINIMAL",
    ]));
    eprintln!("dedicated server started in {:?}", started.elapsed());
    assert_ne!(db.port, MariaDb::shared().port);
    assert_eq!(db.variable("binlog_checksum"), "NONE");
    assert_eq!(db.variable("binlog_row_metadata"), "MINIMAL");
    assert_eq!(db.variable("binlog_format"), "ROW");
    assert_eq!(MariaDb::shared().variable("binlog_checksum"), "CRC32");

    let pid = db.pid().expect("running");
    let dir = db.dir.clone();
    assert!(dir.join("data").is_dir());
    drop(db);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "mariadbd {pid} survived Drop"
    );
    assert!(!dir.exists(), "{} survived Drop", dir.display());
}

#[tokio::test]
async fn restart_keeps_port_and_data() {
    let db = MariaDb::start(ServerOptions::default());
    let port = db.port;
    let name = db.fresh_database("restart");
    db.exec_in(
        &name,
        "CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (42);",
    );
    let (file_before, _): (String, u64) = {
        let mut conn = connect(&db.user_url()).await;
        let row: (String, u64, String, String) = conn
            .query_first("SHOW MASTER STATUS")
            .await
            .unwrap()
            .unwrap();
        conn.disconnect().await.unwrap();
        (row.0, row.1)
    };

    db.stop();
    assert!(!db.is_running());
    let refused =
        mysql_async::Conn::new(mysql_async::Opts::from_url(&db.user_url()).unwrap()).await;
    assert!(refused.is_err(), "connected to a stopped server");

    let started = Instant::now();
    db.start_again();
    eprintln!("restart (start only) took {:?}", started.elapsed());
    assert_eq!(db.port, port);
    let mut conn = connect(&db.user_url_for(&name)).await;
    let id: Option<i64> = conn.query_first("SELECT id FROM t").await.unwrap();
    assert_eq!(id, Some(42));
    // A restart rotates to the next binlog file.
    let (file_after,): (String,) = {
        let row: (String, u64, String, String) = conn
            .query_first("SHOW MASTER STATUS")
            .await
            .unwrap()
            .unwrap();
        (row.0,)
    };
    assert_ne!(file_before, file_after);
    conn.disconnect().await.unwrap();

    db.restart();
    assert_eq!(db.port, port);
    assert_eq!(db.query_value(&format!("SELECT id FROM `{name}`.t")), "42");
}

#[tokio::test]
async fn receiver_records_posts_and_fails_on_demand() {
    let receiver = Receiver::start();
    let client = http_client();
    let post = |n: u32| {
        client
            .post(receiver.url("/hook?x=1"))
            .header("x-test", "yes")
            .header("content-type", "application/json")
            .body(serde_json::json!({ "n": n }).to_string())
            .send()
    };

    assert_eq!(post(0).await.unwrap().status(), 200);
    receiver.fail_next(2, 500);
    assert_eq!(post(1).await.unwrap().status(), 500);
    assert_eq!(post(2).await.unwrap().status(), 500);
    assert_eq!(post(3).await.unwrap().status(), 200);

    let ok = receiver.wait_for(2, Duration::from_secs(5));
    assert_eq!(ok.len(), 2);
    assert_eq!(ok[0].method, "POST");
    assert_eq!(ok[0].path, "/hook");
    assert_eq!(ok[0].query.as_deref(), Some("x=1"));
    assert_eq!(ok[0].header("X-Test"), Some("yes"));
    assert_eq!(ok[0].header("content-type"), Some("application/json"));
    assert!(ok[0].at <= ok[1].at);
    assert_eq!(
        receiver.json_bodies(),
        vec![serde_json::json!({"n": 0}), serde_json::json!({"n": 3})]
    );
    let all = receiver.all_requests();
    let statuses: Vec<Option<u16>> = all.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![Some(200), Some(500), Some(500), Some(200)]);

    receiver.fail_next_with_retry_after(1, 429, 7);
    let response = post(4).await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");

    receiver.set_status(Some(503));
    assert_eq!(post(5).await.unwrap().status(), 503);
    assert_eq!(post(6).await.unwrap().status(), 503);
    receiver.set_status(None);
    assert_eq!(post(7).await.unwrap().status(), 200);
    assert_eq!(receiver.received().len(), 3);
}

#[tokio::test]
async fn receiver_delays_hangs_and_goes_down() {
    let receiver = Receiver::start();
    let client = http_client();

    receiver.set_delay(|r| {
        if r.body == b"slow" {
            Duration::from_millis(300)
        } else {
            Duration::ZERO
        }
    });
    let started = Instant::now();
    let response = client
        .post(receiver.url("/d"))
        .body("slow")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    receiver.clear_delay();

    receiver.hang_next(1);
    let hung = client
        .post(receiver.url("/h"))
        .body("hang")
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(hung.unwrap_err().is_timeout());
    assert_eq!(receiver.all_requests().last().unwrap().status, None);
    assert_eq!(
        client
            .post(receiver.url("/h"))
            .body("after")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let port = receiver.port();
    receiver.stop();
    // (A pooled keep-alive connection would fail differently: hyper's
    // IncompleteMessage, a request error. A new connection is refused.)
    let down = http_client()
        .post(receiver.url("/x"))
        .body("down")
        .send()
        .await;
    assert!(down.unwrap_err().is_connect());
    receiver.start_again();
    assert_eq!(receiver.port(), port);
    assert_eq!(
        client
            .post(receiver.url("/x"))
            .body("up")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let bodies: Vec<String> = receiver.received().iter().map(|r| r.body_text()).collect();
    assert_eq!(bodies, vec!["slow", "after", "up"]);
    receiver.assert_no_more_requests(Duration::from_millis(50));
}

#[test]
fn receiver_works_from_sync_code_and_wait_for_reports_what_came() {
    let receiver = Receiver::start();
    let url = receiver.url("/sync");
    // A plain blocking HTTP/1.1 request, no runtime on this thread.
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches("/sync")
            .to_owned();
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"POST /sync HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    })
    .join()
    .unwrap();
    assert_eq!(receiver.wait_for(1, Duration::from_secs(5)).len(), 1);

    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        receiver.wait_for(2, Duration::from_millis(50));
    }))
    .unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(message.contains("POST /sync -> 200: {}"), "{message}");
}
