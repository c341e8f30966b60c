//! Bytes → binlog file reader → event decoder (the same `Decoder` as the
//! live stream) → row decoder, including TRANSACTION_PAYLOAD inner events
//! and JSON rendering. Any panic is a bug; errors are fine.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Inputs are stored without the magic (seeds are corpus files minus
    // their first 4 bytes), so every input is a binlog body.
    let mut bytes = b"\xfebin".to_vec();
    bytes.extend_from_slice(data);
    let mut stats = pikachu::offline::Stats::default();
    let mut line = Vec::new();
    let _ = pikachu::offline::decode_bytes("fuzz", bytes, &mut stats, &mut |rec| {
        line.clear();
        rec.write_json(&mut line);
        // Numbers beyond f64 are valid JSON syntax serde_json refuses.
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&line) {
            if e.to_string().contains("number out of range") {
                return;
            }
            panic!("invalid JSON line {:?}: {e}", String::from_utf8_lossy(&line));
        }
    });
});
