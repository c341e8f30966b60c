//! Unit tests of the schema history: DDL application and version lookup.

use super::*;

fn collations() -> Collations {
    let mut c = Collations::default();
    for (name, cs, id, default) in [
        ("latin1_swedish_ci", "latin1", 8u16, true),
        ("latin1_bin", "latin1", 47, false),
        ("utf8mb4_general_ci", "utf8mb4", 45, true),
        ("utf8mb4_bin", "utf8mb4", 46, false),
        ("utf8mb3_general_ci", "utf8mb3", 33, true),
    ] {
        c.by_name.insert(name.into(), id);
        if default {
            c.charset_default.insert(cs.into(), id);
        }
    }
    c.database_default.insert("shop".into(), 45);
    c
}

fn col(name: &str, data_type: &str) -> SchemaColumn {
    let text = matches!(data_type, "varchar" | "char" | "text" | "enum" | "set");
    SchemaColumn {
        name: name.into(),
        data_type: data_type.into(),
        unsigned: false,
        collation: text.then_some(45),
        enum_labels: None,
        set_labels: None,
        is_json: false,
        is_binary: false,
    }
}

fn users() -> TableSchema {
    TableSchema {
        columns: vec![col("id", "int"), col("email", "varchar"), col("n", "int")],
        primary_key: vec!["id".into()],
        default_collation: Some(45),
    }
}

fn history() -> SchemaHistory {
    let mut h = SchemaHistory::new(collations(), true);
    h.load(
        "shop",
        "users",
        HistPos::new("mysql-bin.000001", 4),
        Definition::Known { schema: users() },
    );
    h
}

fn pos(p: u64) -> HistPos {
    HistPos::new("mysql-bin.000001", p)
}

fn names(h: &SchemaHistory, table: &str, at: u64) -> Vec<String> {
    match h.def_at("shop", table, &pos(at)) {
        Some(Definition::Known { schema }) => {
            schema.columns.iter().map(|c| c.name.clone()).collect()
        }
        other => panic!("no known definition of {table} at {at}: {other:?}"),
    }
}

fn apply(h: &mut SchemaHistory, at: u64, sql: &str) -> Vec<TableKey> {
    h.apply_ddl(&pos(at), "shop", sql, &|d, t| d == "shop" && t == "users")
}

#[test]
fn positions_order_by_file_number_then_offset() {
    assert!(HistPos::new("mysql-bin.999999", 9) < HistPos::new("mysql-bin.1000000", 4));
    assert!(HistPos::new("mysql-bin.000001", 900) < HistPos::new("mysql-bin.000002", 4));
    assert!(HistPos::origin() < HistPos::new("mysql-bin.000001", 4));
}

#[test]
fn drop_then_add_of_the_same_type_keeps_each_version() {
    let mut h = history();
    assert_eq!(
        apply(&mut h, 100, "ALTER TABLE users DROP COLUMN email"),
        vec![("shop".to_string(), "users".to_string())]
    );
    apply(
        &mut h,
        200,
        "ALTER TABLE `shop`.`users` ADD COLUMN secret_col VARCHAR(64) AFTER id",
    );
    assert_eq!(names(&h, "users", 50), vec!["id", "email", "n"]);
    assert_eq!(names(&h, "users", 100), vec!["id", "n"]);
    assert_eq!(names(&h, "users", 150), vec!["id", "n"]);
    assert_eq!(names(&h, "users", 300), vec!["id", "secret_col", "n"]);
    let changed = h.take_changed();
    assert_eq!(changed.len(), 2);
    // The same DDL again (a restart from before it): nothing re-applied.
    assert!(apply(&mut h, 100, "ALTER TABLE users DROP COLUMN email").is_empty());
    assert!(h.take_changed().is_empty());
    assert_eq!(names(&h, "users", 300), vec!["id", "secret_col", "n"]);
}

#[test]
fn modify_change_rename_and_positions() {
    let mut h = history();
    apply(
        &mut h,
        10,
        "ALTER TABLE users MODIFY COLUMN n VARCHAR(20) CHARACTER SET latin1 FIRST",
    );
    let s = h
        .def_at("shop", "users", &pos(10))
        .and_then(Definition::schema)
        .cloned()
        .expect("known");
    assert_eq!(s.columns[0].name, "n");
    assert_eq!(s.columns[0].data_type, "varchar");
    assert_eq!(s.columns[0].collation, Some(8));
    apply(
        &mut h,
        20,
        "ALTER TABLE users CHANGE n m BIGINT UNSIGNED NOT NULL AFTER email",
    );
    let s = h
        .def_at("shop", "users", &pos(20))
        .and_then(Definition::schema)
        .cloned()
        .expect("known");
    assert_eq!(names(&h, "users", 20), vec!["id", "email", "m"]);
    assert!(s.columns[2].unsigned);
    assert_eq!(s.columns[2].collation, None);
    apply(
        &mut h,
        30,
        "ALTER TABLE users RENAME COLUMN id TO uid, DROP PRIMARY KEY, ADD PRIMARY KEY (uid, m)",
    );
    let s = h
        .def_at("shop", "users", &pos(30))
        .and_then(Definition::schema)
        .cloned()
        .expect("known");
    assert_eq!(s.primary_key, vec!["uid", "m"]);
    apply(
        &mut h,
        40,
        "ALTER TABLE users ADD INDEX (email), ALGORITHM=INPLACE, LOCK=NONE",
    );
    assert_eq!(names(&h, "users", 40), vec!["uid", "email", "m"]);
}

#[test]
fn create_like_rename_swap_and_drop() {
    let mut h = history();
    apply(&mut h, 10, "CREATE TABLE users_new LIKE users");
    apply(
        &mut h,
        20,
        "ALTER TABLE users_new DROP COLUMN email, ADD COLUMN secret_col VARCHAR(64)",
    );
    apply(
        &mut h,
        30,
        "RENAME TABLE users TO users_old, users_new TO users",
    );
    assert_eq!(names(&h, "users", 25), vec!["id", "email", "n"]);
    assert_eq!(names(&h, "users", 30), vec!["id", "n", "secret_col"]);
    assert_eq!(names(&h, "users_old", 30), vec!["id", "email", "n"]);
    assert_eq!(
        h.def_at("shop", "users_new", &pos(30)),
        Some(&Definition::Absent)
    );
    apply(&mut h, 40, "ALTER TABLE users RENAME TO users_x");
    apply(&mut h, 41, "ALTER TABLE users_old RENAME TO users");
    assert_eq!(names(&h, "users", 41), vec!["id", "email", "n"]);
    assert_eq!(names(&h, "users_x", 41), vec!["id", "n", "secret_col"]);
    apply(
        &mut h,
        50,
        "DROP TABLE IF EXISTS `users` /* generated by server */",
    );
    assert_eq!(
        h.def_at("shop", "users", &pos(50)),
        Some(&Definition::Absent)
    );
    // Created again from a full definition, with its own charset.
    apply(
        &mut h,
        60,
        "CREATE TABLE users (id INT NOT NULL, e ENUM('a','b''c'), s SET('x','y'), j JSON, b BLOB, v VARBINARY(3), t TEXT, PRIMARY KEY (id)) ENGINE=InnoDB DEFAULT CHARSET=latin1",
    );
    let s = h
        .def_at("shop", "users", &pos(60))
        .and_then(Definition::schema)
        .cloned()
        .expect("known");
    assert_eq!(s.primary_key, vec!["id"]);
    assert_eq!(s.default_collation, Some(8));
    let by = |n: &str| {
        s.columns
            .iter()
            .find(|c| c.name == n)
            .cloned()
            .expect("column")
    };
    assert_eq!(
        by("e").enum_labels,
        Some(vec!["a".to_string(), "b'c".to_string()])
    );
    assert_eq!(by("e").collation, Some(8));
    assert_eq!(
        by("s").set_labels,
        Some(vec!["x".to_string(), "y".to_string()])
    );
    assert!(by("j").is_json);
    assert_eq!(by("j").data_type, "longtext");
    assert_eq!(by("j").collation, Some(46));
    assert!(by("b").is_binary && by("v").is_binary);
    assert_eq!(by("b").collation, None);
    assert_eq!(by("t").collation, Some(8));
}

#[test]
fn what_cannot_be_applied_is_unknown_with_the_reason() {
    let mut h = history();
    apply(
        &mut h,
        10,
        "ALTER TABLE users ADD COLUMN IF NOT EXISTS z INT",
    );
    match h.def_at("shop", "users", &pos(10)) {
        Some(Definition::Unknown { reason }) => {
            assert!(
                reason.contains("ALTER TABLE statement at mysql-bin.000001:10 could not be parsed"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    // Later DDLs cannot fix it (but a full CREATE TABLE can).
    apply(&mut h, 20, "ALTER TABLE users ADD COLUMN w INT");
    assert!(matches!(
        h.def_at("shop", "users", &pos(20)),
        Some(Definition::Unknown { .. })
    ));
    let mut h = history();
    apply(&mut h, 10, "ALTER TABLE users DROP COLUMN nope");
    match h.def_at("shop", "users", &pos(10)) {
        Some(Definition::Unknown { reason }) => {
            assert!(reason.contains("there is no column `nope`"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // A rename from a table pikachu does not follow.
    let mut h = history();
    apply(&mut h, 10, "RENAME TABLE users TO gone, other.t TO users");
    assert!(matches!(
        h.def_at("shop", "users", &pos(10)),
        Some(Definition::Unknown { .. })
    ));
}

#[test]
fn unrelated_tables_are_left_alone() {
    let mut h = history();
    assert!(h
        .apply_ddl(&pos(10), "elsewhere", "CREATE TABLE t (a INT)", &|_, _| {
            false
        })
        .is_empty());
    assert!(apply(&mut h, 11, "ALTER TABLE elsewhere.x ADD c INT").is_empty());
    assert!(apply(&mut h, 12, "CREATE USER u IDENTIFIED BY 'x'").is_empty());
    assert!(!h.has("elsewhere", "t"));
    // A new table in a followed database is followed (it may be renamed in).
    assert_eq!(apply(&mut h, 13, "CREATE TABLE tmp (a INT)").len(), 1);
}

#[test]
fn differences_are_worded() {
    let known = Definition::Known { schema: users() };
    assert_eq!(difference(&known, Some(&users())), None);
    let mut other = users();
    other.columns[1].name = "secret_col".into();
    let d = difference(&known, Some(&other)).expect("differs");
    assert!(d.contains("`email`") && d.contains("`secret_col`"), "{d}");
    // Same charset, another collation: decodes the same.
    let mut other = users();
    other.columns[1].collation = Some(46);
    assert_eq!(difference(&known, Some(&other)), None);
    other.columns[1].collation = Some(8);
    assert!(difference(&known, Some(&other)).is_some());
    assert!(difference(&Definition::Absent, None).is_none());
    assert!(difference(&known, None).is_some());
}

#[test]
fn pruning_keeps_the_version_in_force() {
    let mut h = history();
    apply(&mut h, 100, "ALTER TABLE users DROP COLUMN email");
    apply(&mut h, 200, "ALTER TABLE users ADD COLUMN e INT");
    h.prune_before(&pos(150));
    assert_eq!(h.versions("shop", "users").len(), 2);
    assert_eq!(names(&h, "users", 150), vec!["id", "n"]);
}
