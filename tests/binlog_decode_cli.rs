//! `pikachu binlog decode` as a user runs it: the real binary, its stdout
//! (one JSON line per event), stderr (summary, errors) and exit code.
//! Files are built in a temp dir (and taken from the binlog corpus when
//! `PIKACHU_BINLOG_CORPUS` is set); nothing binary is committed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pikachu"))
}

fn decode(args: &[&Path], extra: &[&str]) -> Output {
    Command::new(bin())
        .args(["binlog", "decode"])
        .args(extra)
        .args(args)
        .output()
        .expect("run pikachu")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A MySQL 8.0 FORMAT_DESCRIPTION event with CRC32, built byte by byte.
fn fde_event() -> Vec<u8> {
    let mut body = vec![4, 0];
    let mut ver = b"8.0.40".to_vec();
    ver.resize(50, 0);
    body.extend_from_slice(&ver);
    body.extend_from_slice(&0u32.to_le_bytes());
    body.push(19);
    body.extend_from_slice(&[0u8; 41]);
    body.push(1); // CRC32
    let size = (19 + body.len() + 4) as u32;
    let mut ev = vec![0, 0, 0, 0, 15, 1, 0, 0, 0];
    ev.extend_from_slice(&size.to_le_bytes());
    ev.extend_from_slice(&(4 + size).to_le_bytes());
    ev.extend_from_slice(&[0, 0]);
    ev.extend_from_slice(&body);
    let mut h = crc32fast::Hasher::new();
    h.update(&ev);
    ev.extend_from_slice(&h.finalize().to_le_bytes());
    ev
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

fn assert_no_panic(o: &Output) {
    let err = text(&o.stderr);
    assert!(
        !err.contains("internal error") && !err.contains("panicked"),
        "panic: {err}"
    );
}

#[test]
fn fde_only_file_decodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = b"\xfebin".to_vec();
    f.extend_from_slice(&fde_event());
    let p = write(dir.path(), "mysql-bin.000001", &f);
    let o = decode(&[&p], &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let lines: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["type"], "FORMAT_DESCRIPTION_EVENT");
    assert_eq!(lines[0]["type_code"], 15);
    assert_eq!(lines[0]["pos"], 4);
    assert_eq!(lines[0]["server_version"], "8.0.40");
    assert_eq!(lines[0]["checksum"], "CRC32");
    assert!(
        text(&o.stderr).contains("decoded 1 events"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn truncated_and_corrupt_files_fail_naming_the_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut good = b"\xfebin".to_vec();
    good.extend_from_slice(&fde_event());
    let fde_end = good.len();
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "header-cut",
            [&good[..], &[1, 2, 3][..]].concat(),
            format!("truncated event header at offset {fde_end}: 3 bytes left"),
        ),
        (
            "body-cut",
            {
                let mut v = good.clone();
                v.extend_from_slice(&[0, 0, 0, 0, 2, 1, 0, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                v.extend_from_slice(&[0; 38]);
                v
            },
            format!("truncated event at offset {fde_end}: header says 200 bytes, 57 left"),
        ),
        (
            "tiny-size",
            {
                let mut v = good.clone();
                v.extend_from_slice(&[0, 0, 0, 0, 2, 1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                v
            },
            format!("corrupt event at offset {fde_end}: header says 3 bytes"),
        ),
        (
            "bad-crc",
            {
                let mut v = good.clone();
                let n = v.len();
                v[n - 1] ^= 0xff;
                v
            },
            "bad checksum".to_string(),
        ),
        (
            "not-binlog",
            b"hello world".to_vec(),
            "not a binlog file: bad magic".to_string(),
        ),
        (
            "v3",
            {
                let mut v = b"\xfebin".to_vec();
                v.extend_from_slice(&[
                    0, 0, 0, 0, 1, 1, 0, 0, 0, 75, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0,
                ]);
                v
            },
            "binlog format v3 (START_EVENT_V3, MySQL before 5.0) is not supported".to_string(),
        ),
    ];
    for (name, bytes, want) in cases {
        let p = write(dir.path(), name, &bytes);
        let o = decode(&[&p], &[]);
        assert_no_panic(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(
            err.contains(&format!("error: {}: ", p.display())) && err.contains(&want),
            "{name}: stderr should name the file and say {want:?}: {err}"
        );
    }
}

fn corpus() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("PIKACHU_BINLOG_CORPUS")?);
    assert!(
        dir.is_dir(),
        "PIKACHU_BINLOG_CORPUS={} is not a directory",
        dir.display()
    );
    Some(dir)
}

#[test]
fn corpus_file_rows_and_summary() {
    let Some(c) = corpus() else {
        eprintln!("PIKACHU_BINLOG_CORPUS is not set; skipping the corpus part");
        return;
    };
    // MANIFEST §6 and Appendix B: boxercrab 31_update_rows_v2, 8 events.
    let f = c.join("boxercrab/31_update_rows_v2/log.bin");
    let o = decode(&[&f], &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let lines: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 8);
    let upd = lines
        .iter()
        .find(|l| l["type"] == "UPDATE_ROWS_EVENT_V2")
        .expect("update");
    assert_eq!(upd["db"], "default");
    assert_eq!(upd["table"], "boxercrab");
    assert_eq!(upd["rows"][0]["old_data"]["@2"], "abc");
    assert_eq!(upd["rows"][0]["new_data"]["@9"], "4.0000");
    // Two files, summary output; then a truncated copy stops with an error.
    let g = c.join("rust_mysql_common/transaction_compression.000001");
    let o = decode(&[&f, &g], &["--output", "summary"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        text(&o.stderr)
            .contains("decoded 17 events (4 inside transaction payloads), 2 rows, from 2 file(s)"),
        "{}",
        text(&o.stderr)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = std::fs::read(&f).expect("read");
    let cut = write(dir.path(), "log.bin", &bytes[..bytes.len() - 10]);
    let o = decode(&[&cut], &[]);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("truncated event at offset"),
        "{}",
        text(&o.stderr)
    );
    // Events before the damage were printed.
    assert_eq!(text(&o.stdout).lines().count(), 7);
}

#[test]
fn every_prefix_of_a_corpus_file_ends_cleanly() {
    let Some(c) = corpus() else { return };
    let bytes =
        std::fs::read(c.join("mysql-binlog-connector-java/mysql-bin.compressed")).expect("read");
    // Cut anywhere: an error or (at an event boundary) success, never a panic.
    let mut ok = 0;
    for n in 0..=bytes.len() {
        let mut stats = pikachu::offline::Stats::default();
        let r = pikachu::offline::decode_bytes("cut", bytes[..n].to_vec(), &mut stats, &mut |_| {});
        if r.is_ok() {
            ok += 1;
        }
    }
    // The magic alone, and after each of the 5 events.
    assert_eq!(ok, 6);
}

/// Inputs the fuzzer (fuzz/, target `decode_file`) found crashing, stored
/// without the `\xfebin` magic, as the fuzz target takes them. Each must end
/// in an error or success, never a panic or an abort.
#[test]
fn fuzz_regressions_do_not_crash() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/fuzz-regressions") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with("decode_file-") {
            continue;
        }
        let mut bytes = b"\xfebin".to_vec();
        bytes.extend_from_slice(&std::fs::read(&path).expect("read"));
        let mut stats = pikachu::offline::Stats::default();
        let mut line = Vec::new();
        let _ = pikachu::offline::decode_bytes(name, bytes, &mut stats, &mut |rec| {
            line.clear();
            rec.write_json(&mut line);
            serde_json::from_slice::<serde_json::Value>(&line).expect("valid JSON line");
        });
        n += 1;
    }
    assert!(n >= 1);
}
