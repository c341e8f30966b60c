//! The snapshot's chunk reader against real MariaDB: a `read` of a row has
//! byte for byte the `data` the binlog path gives the `insert` of that row
//! (every type, FULL and MINIMAL row metadata); keyset pagination over
//! composite and collated text keys; the key choice; `--where`; and the
//! errors (no key, bad condition, no SELECT privilege), each one message
//! naming the table.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use pikachu::event::write_row;
use pikachu::snapshot::{
    plan_table, prepare_session, read_chunk, Cursor, SnapshotError, TablePlan,
};
use pikachu::source::connect::{self, Flavour};
use support::every_type::{insert_rows, TABLE};
use support::pikachu::{reader_config, try_collect_changes};
use support::{MariaDb, ServerOptions};

/// A binlog position: file and offset.
type Pos = (String, u64);

/// What a snapshot of a table gave: each row's `data` JSON and each chunk's
/// (rows, low, high).
struct Snap {
    plan: TablePlan,
    rows: Vec<Vec<u8>>,
    chunks: Vec<(usize, Pos, Pos)>,
}

/// Reads `database`.`table` in chunks of `chunk_size` as `user` (None: the
/// test harness's pikachu user).
fn snapshot(
    db: &MariaDb,
    database: &str,
    table: &str,
    condition: Option<&str>,
    chunk_size: usize,
    user: Option<(&str, &str)>,
) -> Result<Snap, SnapshotError> {
    let start = db.master_status();
    let mut cfg = reader_config(db, database, &[table], &start).expect("config");
    if let Some((u, p)) = user {
        cfg.database.user = u.into();
        cfg.database.password = pikachu::config::Secret::new(p);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut conn = connect::connect(&cfg.database).await?;
        let info = connect::server_info(&mut conn).await?;
        prepare_session(&mut conn, database, table).await?;
        let plan = plan_table(
            &mut conn,
            info.flavour == Flavour::MariaDb,
            database,
            table,
            condition,
        )
        .await?;
        let mut cursor: Option<Cursor> = None;
        let mut rows = Vec::new();
        let mut chunks = Vec::new();
        loop {
            let c = read_chunk(
                &mut conn,
                &info,
                &plan,
                cursor.as_ref(),
                chunk_size,
                &Default::default(),
            )
            .await?;
            chunks.push((
                c.rows.len(),
                (c.low.file.clone(), c.low.pos),
                (c.high.file.clone(), c.high.pos),
            ));
            for r in &c.rows {
                let mut data = Vec::new();
                write_row(&mut data, &plan.event_table, &r.image);
                rows.push(data);
            }
            if c.done {
                break;
            }
            cursor = c.last;
            assert!(
                chunks.len() < 10_000,
                "the snapshot does not end; after {cursor:?}: {}",
                plan.next_sql
            );
        }
        Ok(Snap { plan, rows, chunks })
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `id` of a row's data JSON.
fn id_of(data: &[u8]) -> i64 {
    let v: serde_json::Value = serde_json::from_slice(data).expect("data is JSON");
    v["id"].as_i64().expect("numeric id")
}

/// Asserts that the snapshot of `database`.`table` (chunks of `chunk`)
/// gives, row by row and byte for byte, the `data` of the `n` inserts the
/// binlog has from `start`.
fn assert_reads_equal_inserts(
    db: &MariaDb,
    database: &str,
    table: &str,
    start: &(String, u64),
    n: usize,
    chunk: usize,
) -> Snap {
    let changes = try_collect_changes(db, database, &[table], start, n, Duration::from_secs(30))
        .expect("binlog changes");
    let mut inserts = BTreeMap::new();
    for c in &changes {
        let after = c.after.as_ref().expect("an insert has its row");
        let mut data = Vec::new();
        write_row(&mut data, &c.table, after);
        inserts.insert(id_of(&data), data);
    }
    let snap = snapshot(db, database, table, None, chunk, None).expect("snapshot");
    assert_eq!(snap.rows.len(), n);
    for read in &snap.rows {
        let id = id_of(read);
        let insert = inserts.get(&id).expect("an insert for every read");
        if read != insert {
            // Name the columns that differ.
            let (r, i): (serde_json::Value, serde_json::Value) = (
                serde_json::from_slice(read).expect("json"),
                serde_json::from_slice(insert).expect("json"),
            );
            let diff: Vec<String> = r
                .as_object()
                .expect("object")
                .iter()
                .filter(|(k, v)| i.get(k.as_str()) != Some(v))
                .map(|(k, v)| format!("{k}: read {v} insert {}", i[k.as_str()]))
                .collect();
            panic!(
                "{table} row {id}: read and insert differ:\n  read   {}\n  insert {}\n  {diff:?}",
                text(read),
                text(insert)
            );
        }
    }
    snap
}

/// More edges than the every-type table: zero and partial dates, ENUM's
/// '' value, fractions of every precision, trailing spaces and zero bytes,
/// long CHAR, UCS2/UTF-16/UTF-32/Big5/cp1251 text, narrow DECIMALs, BIT(9).
const EDGES: &str = "CREATE TABLE edges (
  id INT PRIMARY KEY,
  d DATE, dt1 DATETIME(1), dt4 DATETIME(4), ts2 TIMESTAMP(2) NULL DEFAULT NULL, ts6 TIMESTAMP(6) NULL DEFAULT NULL,
  t3 TIME(3), t5 TIME(5), y YEAR,
  e ENUM('x','y'), s SET('p','q','r','s','t','u','v','w','z'),
  c CHAR(255), vc VARCHAR(10), bn BINARY(5), vbn VARBINARY(5),
  u2 VARCHAR(10) CHARACTER SET ucs2, u16 VARCHAR(10) CHARACTER SET utf16, u32 VARCHAR(10) CHARACTER SET utf32,
  b5 VARCHAR(10) CHARACTER SET big5, cy VARCHAR(10) CHARACTER SET cp1251, l1t TEXT CHARACTER SET latin1,
  d50 DECIMAL(5,0), d44 DECIMAL(4,4), d1918 DECIMAL(19,18), bt9 BIT(9), f FLOAT, db DOUBLE,
  mt MEDIUMTEXT, lb LONGBLOB, ti TINYINT(1), z INT(5) ZEROFILL
) DEFAULT CHARSET=utf8mb4";

const EDGE_ROWS: &str = "SET sql_mode = ''; SET time_zone = '+00:00';
INSERT INTO edges VALUES (1,
  '0000-00-00', '0000-00-00 00:00:00.0', '2020-00-00 10:00:00.1234', '0000-00-00 00:00:00', '1970-01-01 00:00:01.000001',
  '-00:00:00.001', '838:59:59.99999', 1901,
  'nope', 'z,p,w', 'pad   ', 'tail  ', 'ab', UNHEX('610000'), 'ŝĉ', '😀x', 'ÿ', '中文', 'Привет', 'naïve',
  '-99999', '-0.9999', '9.999999999999999999', b'100000001', 3.4e38, 2.2250738585072014e-308,
  REPEAT('m', 70000), UNHEX('00FF00'), -1, 42);
INSERT INTO edges VALUES (2,
  '2020-02-00', '9999-12-31 23:59:59.9', '1000-01-01 00:00:00.0001', '2038-01-19 03:14:07.99', '2001-02-03 04:05:06.123456',
  '-838:59:59.000', '00:00:00.00001', 0,
  '', '', '', '', '', '', '', '', '', '', '', '',
  '0', '0.0001', '-0.000000000000000001', b'0', -0.0, -0.0,
  '', '', 0, 0);";

fn reads_equal_inserts(db: &MariaDb) {
    let name = db.fresh_database("snap_types");
    db.exec_in(&name, TABLE);
    let start = db.master_status();
    db.exec_in(&name, &insert_rows());
    // A second time zone for the session that wrote: the snapshot reads UTC anyway.
    db.exec_in(
        &name,
        "SET time_zone = '+05:30'; INSERT INTO types (id, ts3) VALUES (4, '2000-01-01 05:30:00.5')",
    );
    // Chunks of 3: pagination is exercised (4 rows: two chunks).
    let snap = assert_reads_equal_inserts(db, &name, "types", &start, 4, 3);
    assert_eq!(snap.plan.key_index, "PRIMARY");
    assert_eq!(
        snap.chunks.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![3, 1]
    );
    let r4: serde_json::Value = serde_json::from_slice(&snap.rows[3]).expect("json");
    assert_eq!(r4["ts3"], "2000-01-01T00:00:00.500Z", "TIMESTAMP in UTC");

    db.exec_in(&name, EDGES);
    let start = db.master_status();
    db.exec_in(&name, EDGE_ROWS);
    let snap = assert_reads_equal_inserts(db, &name, "edges", &start, 2, 1);
    let r1: serde_json::Value = serde_json::from_slice(&snap.rows[0]).expect("json");
    assert_eq!(r1["d"], "0000-00-00");
    assert_eq!(r1["e"], "", "an invalid ENUM value is stored as index 0");
    assert_eq!(r1["z"], 42, "ZEROFILL is not in the value");
}

#[test]
fn reads_equal_inserts_with_full_metadata() {
    reads_equal_inserts(MariaDb::shared());
}

#[test]
fn reads_equal_inserts_with_minimal_metadata() {
    let db = MariaDb::start(ServerOptions::with_args(["--binlog-row-metadata=MINIMAL"]));
    assert_eq!(db.variable("binlog_row_metadata"), "MINIMAL");
    reads_equal_inserts(&db);
}

/// Composite keys of collated text (case-insensitive utf8mb4 and latin1
/// with bytes ≥ 0x80) page in the server's own order, every row once, for
/// every chunk size.
#[test]
fn composite_collated_keys_page_every_row_once() {
    let db = MariaDb::shared();
    let name = db.fresh_database("snap_keys");
    db.exec_in(
        &name,
        "CREATE TABLE k (
           a VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL,
           b VARCHAR(20) CHARACTER SET latin1 NOT NULL,
           n INT NOT NULL,
           v INT,
           PRIMARY KEY (a, b, n)
         );
         INSERT INTO k VALUES
           ('a', 'x', 1, 1), ('A ', 'y', 1, 2), ('b', 'café', 1, 3), ('B', 'cafe', 2, 4),
           ('é', 'x', 1, 5), ('😀', 'x', 1, 6), ('z', 'Ä', 1, 7), ('z', 'ä ', 2, 8),
           ('', 'x', 1, 9), ('a''q', '\\\\', 1, 10), ('a', 'x', 2, 11), ('a', 'x', -3, 12);",
    );
    let want: Vec<String> = db
        .query(&format!("SELECT v FROM `{name}`.k ORDER BY a, b, n"))
        .into_iter()
        .map(|r| r[0].clone().expect("v"))
        .collect();
    assert_eq!(want.len(), 12);
    for chunk_size in [1, 2, 3, 5, 12, 100] {
        let snap = snapshot(db, &name, "k", None, chunk_size, None).expect("snapshot");
        let got: Vec<String> = snap
            .rows
            .iter()
            .map(|d| {
                let v: serde_json::Value = serde_json::from_slice(d).expect("json");
                v["v"].to_string()
            })
            .collect();
        assert_eq!(got, want, "chunk size {chunk_size}");
    }
}

#[test]
fn a_unique_not_null_key_pages_a_table_without_primary_key() {
    let db = MariaDb::shared();
    let name = db.fresh_database("snap_unique");
    db.exec_in(
        &name,
        "CREATE TABLE u (x INT, code CHAR(3) NOT NULL, maybe INT NULL, UNIQUE KEY u_maybe (maybe), UNIQUE KEY u_code (code));
         INSERT INTO u VALUES (1, 'ccc', NULL), (2, 'aaa', 5), (3, 'bbb', NULL);",
    );
    let snap = snapshot(db, &name, "u", None, 2, None).expect("snapshot");
    assert_eq!(
        snap.plan.key_index, "u_code",
        "the nullable unique key is not used"
    );
    let xs: Vec<String> = snap.rows.iter().map(|d| text(d)).collect();
    assert_eq!(
        xs,
        vec![
            r#"{"x":2,"code":"aaa","maybe":5}"#,
            r#"{"x":3,"code":"bbb","maybe":null}"#,
            r#"{"x":1,"code":"ccc","maybe":null}"#
        ]
    );
}

/// MariaDB's INVISIBLE columns are in the binlog: the snapshot reads them
/// too (its SELECT names every column), and `SELECT *` leaving them out is
/// not mistaken for a missing privilege.
#[test]
fn invisible_columns_are_read_like_the_binlog_has_them() {
    let db = MariaDb::shared();
    let name = db.fresh_database("snap_invisible");
    db.exec_in(
        &name,
        "CREATE TABLE iv (id INT PRIMARY KEY, hidden INT INVISIBLE DEFAULT 7, v INT);",
    );
    let start = db.master_status();
    db.exec_in(&name, "INSERT INTO iv (id, hidden, v) VALUES (1, 5, 9);");
    let changes = try_collect_changes(db, &name, &["iv"], &start, 1, Duration::from_secs(30))
        .expect("binlog changes");
    let mut insert = Vec::new();
    write_row(
        &mut insert,
        &changes[0].table,
        changes[0].after.as_ref().expect("row"),
    );
    let snap = snapshot(db, &name, "iv", None, 10, None).expect("snapshot");
    assert_eq!(text(&snap.rows[0]), r#"{"id":1,"hidden":5,"v":9}"#);
    assert_eq!(snap.rows[0], insert);
}

/// An ALTER or a DROP between two chunks: the next chunk is refused with
/// what changed (the caller plans the table again), not read with the old
/// column list.
#[test]
fn a_definition_change_between_chunks_is_noticed() {
    let db = MariaDb::shared();
    let name = db.fresh_database("snap_alter");
    db.exec_in(
        &name,
        "CREATE TABLE a (id INT PRIMARY KEY, v INT); INSERT INTO a VALUES (1,1),(2,2),(3,3),(4,4);",
    );
    let cfg = reader_config(db, &name, &["a"], &db.master_status()).expect("config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let mut conn = connect::connect(&cfg.database).await.expect("connect");
        let info = connect::server_info(&mut conn).await.expect("info");
        prepare_session(&mut conn, &name, "a")
            .await
            .expect("session");
        let plan = plan_table(&mut conn, true, &name, "a", None)
            .await
            .expect("plan");
        let first = read_chunk(&mut conn, &info, &plan, None, 1, &Default::default())
            .await
            .expect("first chunk");
        let after = first.last.expect("a key");
        // Unchanged: fine.
        let second = read_chunk(
            &mut conn,
            &info,
            &plan,
            Some(&after),
            1,
            &Default::default(),
        )
        .await
        .expect("second chunk");
        assert_eq!(second.rows.len(), 1);
        for (ddl, expect) in [
            (
                "ALTER TABLE a ADD COLUMN w INT",
                "is (id int(11), v int(11), w int(11))",
            ),
            ("ALTER TABLE a DROP COLUMN v", "is (id int(11), w int(11))"),
        ] {
            db.exec_in(&name, ddl);
            let err = read_chunk(
                &mut conn,
                &info,
                &plan,
                Some(&after),
                1,
                &Default::default(),
            )
            .await
            .expect_err("the definition changed");
            assert!(matches!(err, SnapshotError::Changed { .. }), "{ddl}: {err}");
            assert!(err.to_string().contains(expect), "{ddl}: {err}");
        }
        db.exec_in(&name, "DROP TABLE a");
        let err = read_chunk(
            &mut conn,
            &info,
            &plan,
            Some(&after),
            1,
            &Default::default(),
        )
        .await
        .expect_err("the table is gone");
        assert!(matches!(err, SnapshotError::NoTable { .. }), "{err}");
    });
}

/// Without a primary key, the key chosen is the unique NOT NULL index the
/// server takes as the primary key: the one whose columns a MINIMAL row
/// image logs (so the window can match the stream's deletes and updates).
#[test]
fn the_unique_key_chosen_is_the_one_a_minimal_row_image_logs() {
    let db = MariaDb::start(ServerOptions::with_args(["--binlog-row-image=MINIMAL"]));
    let name = db.fresh_database("snap_minimal");
    db.exec_in(
        &name,
        "CREATE TABLE m (a INT NOT NULL, b INT NOT NULL, c INT NOT NULL, v INT,
           UNIQUE KEY zz (a, b), UNIQUE KEY aa (c));
         INSERT INTO m VALUES (1, 2, 3, 4);",
    );
    let start = db.master_status();
    db.exec_in(&name, "DELETE FROM m");
    let changes = try_collect_changes(&db, &name, &["m"], &start, 1, Duration::from_secs(30))
        .expect("the delete");
    let before = changes[0].before.as_ref().expect("a delete's row");
    let logged: Vec<&str> = before
        .iter()
        .map(|(i, _)| changes[0].table.columns[i].name.as_str())
        .collect();
    db.exec_in(&name, "INSERT INTO m VALUES (1, 2, 3, 4)");
    let snap = snapshot(&db, &name, "m", None, 10, None).expect("snapshot");
    assert_eq!(snap.plan.key_index, "zz");
    assert_eq!(
        snap.plan.key_names(),
        logged,
        "the key is what the binlog logs"
    );
}

#[test]
fn a_table_without_a_usable_key_is_refused_by_name() {
    let db = MariaDb::shared();
    let name = db.fresh_database("snap_nokey");
    db.exec_in(
        &name,
        "CREATE TABLE nk (x INT, y INT NULL, UNIQUE KEY (y), KEY (x)); INSERT INTO nk VALUES (1, 1);",
    );
    let err = snapshot(db, &name, "nk", None, 10, None)
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(matches!(err, SnapshotError::NoKey { .. }), "{msg}");
    assert!(msg.contains(&format!("`{name}`.`nk`")), "{msg}");
    assert!(msg.contains("primary key"), "{msg}");
    let err = snapshot(db, &name, "gone", None, 10, None)
        .err()
        .expect("no table");
    assert!(matches!(err, SnapshotError::NoTable { .. }), "{err}");
    assert!(err.to_string().contains("`gone`"), "{err}");
}

#[test]
fn where_reads_a_subset_and_a_bad_one_is_one_clear_error() {
    let db = MariaDb::shared();
    let name = db.fresh_database("snap_where");
    db.exec_in(
        &name,
        "CREATE TABLE w (id INT PRIMARY KEY, kind VARCHAR(10));
         INSERT INTO w VALUES (1,'a'),(2,'b'),(3,'a'),(4,'a'),(5,'b'),(6,'a');",
    );
    let snap = snapshot(db, &name, "w", Some("kind = 'a' AND id > 1"), 2, None).expect("snapshot");
    let ids: Vec<i64> = snap.rows.iter().map(|d| id_of(d)).collect();
    assert_eq!(ids, vec![3, 4, 6]);
    for (cond, expect) in [
        ("kind = ", "SQL syntax"),
        ("nosuch = 1", "nosuch"),
        ("1) OR (1", "closes more"),
        ("1; DELETE FROM w", "`;`"),
    ] {
        let err = snapshot(db, &name, "w", Some(cond), 2, None)
            .err()
            .expect("refused");
        let msg = err.to_string();
        assert!(
            matches!(err, SnapshotError::BadWhere { .. }),
            "{cond}: {msg}"
        );
        assert!(
            msg.contains(&format!("`{cond}`")),
            "names the condition: {msg}"
        );
        assert!(msg.contains(expect), "{cond}: {msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }
    assert_eq!(
        db.query_value(&format!("SELECT COUNT(*) FROM `{name}`.w")),
        "6"
    );
}

#[test]
fn a_missing_select_privilege_names_the_table_and_the_grant() {
    let db = MariaDb::shared();
    let name = db.fresh_database("snap_priv");
    db.exec_in(
        &name,
        "CREATE TABLE p (id INT PRIMARY KEY); INSERT INTO p VALUES (1);",
    );
    let user = format!("nosel_{}", std::process::id());
    db.exec(&format!(
        "CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY 'pw';
         GRANT REPLICATION CLIENT ON *.* TO '{user}'@'%';
         GRANT SELECT (id) ON `{name}`.p TO '{user}'@'%';
         CREATE TABLE `{name}`.q (id INT PRIMARY KEY, secret INT);
         GRANT SELECT (id) ON `{name}`.q TO '{user}'@'%';"
    ));
    // It sees the table (a column grant), but cannot read all of it.
    let err = snapshot(db, &name, "q", None, 10, Some((&user, "pw")))
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(matches!(err, SnapshotError::Query { .. }), "{msg}");
    assert!(msg.contains(&format!("`{name}`.`q`")), "{msg}");
    assert!(msg.contains("GRANT SELECT ON"), "{msg}");
    // With SELECT on every column it works.
    let snap = snapshot(db, &name, "p", None, 10, Some((&user, "pw"))).expect("snapshot");
    assert_eq!(snap.rows.len(), 1);
}

/// On MariaDB the low watermark is the consistent snapshot's position:
/// with nothing written, both watermarks are the end of the binlog.
#[test]
fn watermarks_are_binlog_positions_around_the_chunk() {
    let db = MariaDb::shared();
    let name = db.fresh_database("snap_marks");
    db.exec_in(
        &name,
        "CREATE TABLE m (id INT PRIMARY KEY); INSERT INTO m VALUES (1),(2),(3);",
    );
    let before = db.master_status();
    let snap = snapshot(db, &name, "m", None, 2, None).expect("snapshot");
    let after = db.master_status();
    assert_eq!(snap.chunks.len(), 2);
    for (_, low, high) in &snap.chunks {
        assert!(
            *low >= before && *low <= *high && *high <= after,
            "{low:?} {high:?}"
        );
    }
}

/// A writer on its own connection: one row per statement (insert, update,
/// delete, key change), aimed at the rows just after `cursor_at`, until
/// `stop`. Returns the number of rows it changed.
fn spawn_writer(
    db: &MariaDb,
    name: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cursor_at: std::sync::Arc<std::sync::atomic::AtomicI64>,
) -> std::thread::JoinHandle<u64> {
    use std::sync::atomic::Ordering;
    let (url, name) = (db.root_url(), name.to_string());
    std::thread::spawn(move || -> u64 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            use mysql_async::prelude::Queryable;
            let opts = mysql_async::Opts::from_url(&url).expect("url");
            let mut conn = mysql_async::Conn::new(opts).await.expect("writer connects");
            conn.query_drop(format!("USE `{name}`")).await.expect("use");
            let (mut rows, mut i, mut next_id) = (0u64, 0u64, 1_000_000i64);
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let near = cursor_at.load(Ordering::Relaxed) + fastrand::i64(0..40);
                let sql = match i % 4 {
                    0 => format!("INSERT INTO c VALUES ({}, {i}, 'ins')", 5_000_000 + i),
                    1 => format!("UPDATE c SET v = v + 1, s = 'upd{i}' WHERE id = {near}"),
                    2 => format!("DELETE FROM c WHERE id = {near}"),
                    _ => {
                        next_id += 1;
                        format!("UPDATE c SET id = {next_id} WHERE id = {near}")
                    }
                };
                if conn.query_drop(&sql).await.is_ok() {
                    rows += conn.affected_rows();
                }
            }
            rows
        })
    })
}

/// Reads table `c` in chunks of 20, publishing the cursor for the writer.
fn read_chunks(
    db: &MariaDb,
    name: &str,
    cursor_at: &std::sync::atomic::AtomicI64,
) -> (TablePlan, Vec<pikachu::snapshot::Chunk>) {
    let cfg = reader_config(db, name, &["c"], &db.master_status()).expect("config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let mut conn = connect::connect(&cfg.database).await.expect("connect");
        let info = connect::server_info(&mut conn).await.expect("info");
        prepare_session(&mut conn, name, "c")
            .await
            .expect("session");
        let plan = plan_table(&mut conn, true, name, "c", None)
            .await
            .expect("plan");
        let mut chunks = Vec::new();
        let mut cursor: Option<Cursor> = None;
        loop {
            let c = read_chunk(
                &mut conn,
                &info,
                &plan,
                cursor.as_ref(),
                20,
                &Default::default(),
            )
            .await
            .expect("chunk");
            if let Some(pikachu::snapshot::KeyPart::Int(k)) =
                c.last.as_ref().and_then(|l| l.0.first())
            {
                cursor_at.store(*k + 1, std::sync::atomic::Ordering::Relaxed);
            }
            let done = c.done;
            cursor = c.last.clone();
            chunks.push(c);
            if done {
                return (plan, chunks);
            }
        }
    })
}

/// One chunk's settled rows (their `data`), placed at its high watermark.
type Emitted = (pikachu::snapshot::BinlogPos, Vec<Vec<u8>>);

/// Settles every chunk by its window over `changes`; returns the rows to
/// emit at each high watermark and how many rows the windows dropped.
fn settle_all(
    name: &str,
    plan: &TablePlan,
    chunks: Vec<pikachu::snapshot::Chunk>,
    changes: &[pikachu::event::Change],
) -> (Vec<Emitted>, usize) {
    use pikachu::snapshot::{BinlogPos, Settled, Window};
    let mut emitted = Vec::new();
    let mut dropped_total = 0;
    for c in chunks {
        let low = BinlogPos::new(&c.low.file, c.low.pos);
        let high = BinlogPos::new(&c.high.file, c.high.pos);
        let mut w = Window::new(name, "c", plan.key_names(), low, high.clone());
        for ch in changes {
            w.observe(ch);
        }
        match w.settle(c.rows, |r| &r.key) {
            Settled::Emit { rows, dropped } => {
                dropped_total += dropped;
                let data = rows
                    .iter()
                    .map(|r| {
                        let mut d = Vec::new();
                        write_row(&mut d, &plan.event_table, &r.image);
                        d
                    })
                    .collect();
                emitted.push((high, data));
            }
            Settled::Reread { reason } => panic!("reread: {reason}"),
        }
    }
    (emitted, dropped_total)
}

/// Applies reads (each after every change at or before its high
/// watermark) and changes in that order, as a consumer would.
fn rebuild(emitted: Vec<Emitted>, changes: &[pikachu::event::Change]) -> BTreeMap<i64, Vec<u8>> {
    use pikachu::snapshot::BinlogPos;
    let mut table: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
    let mut reads = emitted.into_iter().peekable();
    let mut apply_reads = |table: &mut BTreeMap<i64, Vec<u8>>, upto: Option<&BinlogPos>| {
        while let Some((high, _)) = reads.peek() {
            if upto.is_some_and(|p| high >= p) {
                break;
            }
            let (_, rows) = reads.next().expect("peeked");
            for d in rows {
                table.insert(id_of(&d), d);
            }
        }
    };
    for ch in changes {
        apply_reads(
            &mut table,
            Some(&BinlogPos::new(&ch.source.file, ch.source.pos)),
        );
        let data = |img: &pikachu::event::RowImage| {
            let mut d = Vec::new();
            write_row(&mut d, &ch.table, img);
            d
        };
        if let Some(b) = &ch.before {
            table.remove(&id_of(&data(b)));
        }
        if let Some(a) = &ch.after {
            let d = data(a);
            table.insert(id_of(&d), d);
        }
    }
    apply_reads(&mut table, None);
    table
}

/// The DBLog window end to end at library level, with a real concurrent
/// writer: chunks are read while another connection inserts, updates
/// (also the key) and deletes rows, aimed at the chunk being read; the
/// stream's changes are read from the binlog; each chunk is settled by its
/// window and its rows placed at its high watermark. Applying reads and
/// changes in that order rebuilds exactly the table's final content (a
/// read placed after a change it predates would leave a stale or deleted
/// row: with the windows disabled this test fails with such rows).
#[test]
fn window_keeps_reads_consistent_with_a_concurrent_writer() {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::Arc;

    let db = MariaDb::shared();
    let name = db.fresh_database("snap_window");
    db.exec_in(
        &name,
        "CREATE TABLE c (id INT PRIMARY KEY, v INT NOT NULL, s VARCHAR(20));
         INSERT INTO c (id, v, s) SELECT seq, seq, CONCAT('r', seq) FROM seq_1_to_3000;",
    );
    let start = db.master_status();
    let stop = Arc::new(AtomicBool::new(false));
    let cursor_at = Arc::new(AtomicI64::new(1));
    let writer = spawn_writer(db, &name, stop.clone(), cursor_at.clone());
    let (plan, chunks) = read_chunks(db, &name, &cursor_at);
    stop.store(true, Ordering::Relaxed);
    let changed_rows = writer.join().expect("writer");
    assert!(changed_rows > 0, "the writer wrote nothing");
    let changes = try_collect_changes(
        db,
        &name,
        &["c"],
        &start,
        changed_rows as usize,
        Duration::from_secs(60),
    )
    .expect("the stream's changes");
    let (emitted, dropped) = settle_all(&name, &plan, chunks, &changes);
    let rebuilt = rebuild(emitted, &changes);
    // The table's final content, read the same way.
    let fin = snapshot(db, &name, "c", None, 10_000, None).expect("final read");
    let want: BTreeMap<i64, Vec<u8>> = fin.rows.into_iter().map(|d| (id_of(&d), d)).collect();
    assert_eq!(
        db.query_value(&format!("SELECT COUNT(*) FROM `{name}`.c")),
        want.len().to_string()
    );
    let missing: Vec<&i64> = want.keys().filter(|k| !rebuilt.contains_key(k)).collect();
    let extra: Vec<&i64> = rebuilt.keys().filter(|k| !want.contains_key(k)).collect();
    let stale: Vec<&i64> = want
        .iter()
        .filter(|(k, v)| rebuilt.get(k).is_some_and(|t| t != *v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && stale.is_empty(),
        "rebuilt table differs: missing {missing:?}, extra {extra:?}, stale {stale:?}"
    );
    assert!(
        dropped > 0,
        "no chunk row was ever in a window; the test did not exercise it ({changed_rows} changes)"
    );
    eprintln!(
        "{changed_rows} changes during the snapshot, {dropped} chunk rows dropped by their windows"
    );
}
