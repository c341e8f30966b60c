//! Cross-check of the value decoder against real binlogs from
//! `../shared/binlog-corpus` (skipped when the corpus is not there). A tiny
//! test-only row walker feeds each present, non-NULL column to
//! `decode_value` and the expected values come from the corpus MANIFEST.

use std::path::PathBuf;

use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::{EventData, OptionalMetaExtractor, RowsEventData};
use mysql_common::binlog::BinlogFile;

use super::value::{decode_value, ColumnInfo, ColumnKind, DecodeOptions};

fn corpus(rel: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/binlog-corpus")
        .join(rel);
    p.exists().then_some(p)
}

/// Every row image of every rows event, as JSON text per column ("NULL").
fn decode_file(rel: &str) -> Option<Vec<Vec<String>>> {
    let path = corpus(rel)?;
    let file = std::io::BufReader::new(std::fs::File::open(path).ok()?);
    let mut binlog = BinlogFile::new(BinlogVersion::Version4, file).ok()?;
    let mut images = Vec::new();
    while let Some(ev) = binlog.next() {
        let ev = ev.unwrap();
        let Some(EventData::RowsEvent(rows)) = ev.read_data().unwrap() else {
            continue;
        };
        let tme = binlog.reader().get_tme(rows.table_id()).unwrap().clone();
        let n = tme.columns_count() as usize;
        let opt = OptionalMetaExtractor::new(tme.iter_optional_meta()).unwrap();
        let mut signed = opt.iter_signedness();
        let mut kinds = Vec::new();
        for i in 0..n {
            let t = tme
                .get_raw_column_type(i)
                .unwrap()
                .map(|c| c as u8)
                .unwrap_or(0);
            let meta = tme.get_column_metadata(i).unwrap_or(&[]);
            let unsigned = if matches!(t, 0x01..=0x05 | 0x08 | 0x09 | 0xf6) {
                signed.next().unwrap_or(false)
            } else {
                false
            };
            let info = ColumnInfo {
                binlog_type: t,
                meta,
                unsigned,
                ..ColumnInfo::default()
            };
            kinds.push(ColumnKind::resolve(&info).unwrap());
        }
        let (before, after) = match &rows {
            RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => {
                (None, rows.columns_after_image())
            }
            RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => {
                (rows.columns_before_image(), None)
            }
            RowsEventData::UpdateRowsEvent(_) | RowsEventData::UpdateRowsEventV1(_) => {
                (rows.columns_before_image(), rows.columns_after_image())
            }
            RowsEventData::PartialUpdateRowsEvent(_) => continue,
        };
        let mut data = rows.rows_data();
        while !data.is_empty() {
            for present in [before, after].into_iter().flatten() {
                let cols: Vec<usize> = (0..n).filter(|&i| present[i]).collect();
                let nb = cols.len().div_ceil(8);
                let (bitmap, rest) = data.split_at(nb);
                data = rest;
                let mut image = Vec::new();
                for (j, &c) in cols.iter().enumerate() {
                    if bitmap[j / 8] & (1 << (j % 8)) != 0 {
                        image.push("NULL".to_string());
                        continue;
                    }
                    let mut out = Vec::new();
                    let used =
                        decode_value(&kinds[c], data, &mut out, &DecodeOptions::default()).unwrap();
                    data = &data[used..];
                    image.push(String::from_utf8(out).unwrap());
                }
                images.push(image);
            }
        }
    }
    Some(images)
}

#[test]
fn json_opaque() {
    let Some(rows) = decode_file("rust_mysql_common/json-opaque.binlog") else {
        return;
    };
    let got: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        got,
        [
            r#"{"a":"base64:type15:VQ=="}"#,
            r#"{"b":"2012-03-18"}"#,
            r#"{"c":"2012-03-18 11:30:45.000000"}"#,
            r#"{"c":"87:31:46.654321"}"#,
            r#"{"d":123.456}"#,
            r#"{"e":9.00}"#,
            r#"{"e":[0,1,true,false]}"#,
            r#"{"e":null}"#,
        ]
    );
}

#[test]
fn time_issue() {
    let Some(rows) = decode_file("rust_mysql_common/time_issue.000001") else {
        return;
    };
    assert_eq!(rows, [["\"-507:48:27\""]]);
}

#[test]
fn vectors() {
    let Some(rows) = decode_file("rust_mysql_common/vector.binlog") else {
        return;
    };
    assert!(
        rows.contains(&vec!["1".to_string(), "[1.1,2.2,3.3]".to_string()]),
        "{rows:?}"
    );
    assert!(
        rows.contains(&vec!["2".to_string(), "[1.0,-1.0,0.0]".to_string()]),
        "{rows:?}"
    );
}

#[test]
fn enum_set_bit_decimal_unsigned() {
    if let Some(rows) = decode_file("rust_mysql_common/mysql-enum-string-set.000001") {
        let s100 = format!("\"{}\"", "0123456789".repeat(10));
        assert_eq!(rows[0][0], s100);
        assert_eq!(rows[0][2..5], ["1", "5", "\"0123456789\""]);
        assert_eq!(rows[2][..4], ["\"field1\"", "\"field_2\"", "2", "10"]);
    }
    if let Some(rows) = decode_file("rust_mysql_common/mysql_type_bit.000001") {
        assert!(!rows.is_empty());
        for r in rows {
            assert_eq!(r, ["4", "\"foo\"", "32"]);
        }
    }
    if let Some(rows) = decode_file("boxercrab/31_update_rows_v2/log.bin") {
        let want_before = [
            "1",
            "\"abc\"",
            "\"abc\"",
            "\"abc\"",
            "\"abc\"",
            "\"abc\"",
            "1.0",
            "2.0",
            "\"3.0000\"",
        ];
        let want_after = [
            "1",
            "\"xd\"",
            "\"xd\"",
            "\"xd\"",
            "\"xd\"",
            "\"xd\"",
            "4.0",
            "4.0",
            "\"4.0000\"",
        ];
        assert_eq!(rows, [want_before, want_after]);
    }
    if let Some(rows) = decode_file("rust_mysql_common/minimal_row_metadata.000001") {
        assert!(rows[0].contains(&"3230202323".to_string()), "{rows:?}");
    }
    if let Some(rows) = decode_file("mysql-cdc-rs/8.0/31_update_rows_v2/binlog.000001") {
        assert!(rows.contains(
            &["1", "11", "111", "1111", "11111", "1"]
                .map(String::from)
                .to_vec()
        ));
        assert!(rows.contains(
            &["1", "22", "222", "1111", "11111", "1"]
                .map(String::from)
                .to_vec()
        ));
    }
}

/// MySqlCdc (5.7.23): the richest type mix; values from its Scripts.sql.
#[test]
fn mysqlcdc_types() {
    let Some(rows) = decode_file("MySqlCdc/mysql-bin.000001") else {
        return;
    };
    let all: Vec<&str> = rows.iter().flatten().map(String::as_str).collect();
    for want in [
        "\"1234567890112233445566778899001112223334445556667778889.9900011112\"",
        "\"1988-11-27 14:12:13.345\"",
        "\"15:22:33.67\"",
        "\"1985-10-23\"",
        "1989",
        "\"Hello world!\"",
        "129324935",                    // BIT(28) b'0111101101010101011110000111'
        "12345.679",                    // FLOAT 12345.6789 as the f32 it is
        "123456789.09876543",           // DOUBLE
        "{\"id\":1,\"name\":\"John\"}", // JSON
        "1234567890987654321",          // BIGINT
    ] {
        assert!(all.contains(&want), "{want} not in {rows:#?}");
    }
    for r in &rows {
        eprintln!("{}", r.join(" | "));
    }
}

/// Whole files decode without a single error.
#[test]
fn whole_files_decode() {
    for f in [
        "mysql-binlog-connector-java/mysql-bin.checksum-crc32",
        "mysql-binlog-connector-java/mysql-bin.checksum-none",
        "zalora-binlog-parser/fixtures/mysql-bin.02",
        "zalora-binlog-parser/fixtures/mysql-bin.06",
        "rust_mysql_common/mariadb-bin.000001",
        "mysql-cdc-rs/8.0/02_query_bigger/binlog.000733",
        "rust-mysql-binlog/bin-log.000001",
        "mysql-binlog-connector-rust/mysql-bin.000080",
    ] {
        if let Some(rows) = decode_file(f) {
            eprintln!("{f}: {} images; first {:?}", rows.len(), rows.first());
        }
    }
}
