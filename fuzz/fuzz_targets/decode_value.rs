//! `decode_value` directly, for every column kind: the first bytes pick the
//! type and its metadata, the rest is the value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pikachu::source::{decode_value, ColumnInfo, ColumnKind, DecodeOptions};

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let labels = Some(vec!["a".to_string(), "bb".to_string(), String::new()]);
    let flags = data[3];
    let info = ColumnInfo {
        binlog_type: data[0],
        meta: &data[1..3],
        unsigned: flags & 1 != 0,
        collation: match flags >> 1 & 3 {
            0 => None,
            1 => Some(63),
            2 => Some(8),
            _ => Some(u16::from(data[4]) | u16::from(flags >> 3) << 8),
        },
        enum_labels: if flags & 0x20 != 0 { labels.clone() } else { None },
        set_labels: if flags & 0x20 != 0 { labels } else { None },
        is_json: flags & 0x40 != 0,
        is_binary: flags & 0x80 != 0,
    };
    let Ok(kind) = ColumnKind::resolve(&info) else {
        return;
    };
    let opts = DecodeOptions {
        decimal_as_number: data[4] & 1 != 0,
    };
    let mut out = Vec::new();
    if let Ok(used) = decode_value(&kind, &data[5..], &mut out, &opts) {
        assert!(used <= data.len() - 5, "consumed more than the input");
        // What was written must be valid JSON.
        // A number beyond f64 (e.g. MariaDB JSON text `2E999`) is valid JSON
        // syntax that serde_json refuses: not a decoder bug.
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&out) {
            if e.to_string().contains("number out of range") {
                return;
            }
            panic!("{kind:?} wrote invalid JSON {:?}: {e}", String::from_utf8_lossy(&out));
        }
    }
});
