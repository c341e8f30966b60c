//! Comparison reader for pikachu's benchmark: the `mysql_cdc` crate.
//!
//! Connects as a replica (COM_BINLOG_DUMP from --file/--pos, blocking, with
//! --server-id), lets mysql_cdc decode every WRITE/UPDATE/DELETE rows event
//! into its `MySqlValue` model (it decodes eagerly, while parsing the event),
//! folds every decoded value into a checksum so none of the work is dead, and
//! stops at the first event ending at or past --end-pos. Prints one JSON line:
//! {"reader":"mysql_cdc","version":..,"rows":..,"events":..,"seconds":..}

use anyhow::{anyhow, bail, Result};
use mysql_cdc::binlog_client::BinlogClient;
use mysql_cdc::binlog_options::BinlogOptions;
use mysql_cdc::events::binlog_event::BinlogEvent;
use mysql_cdc::events::row_events::mysql_value::MySqlValue;
use mysql_cdc::events::row_events::row_data::RowData;
use mysql_cdc::replica_options::ReplicaOptions;
use mysql_cdc::ssl_mode::SslMode;
use pikachu_bench_readers::{mix, mix_bytes, print_result, Args, Counts};
use std::time::{Duration, Instant};

const READER: &str = "mysql_cdc";
const VERSION: &str = "0.2.1";

fn main() {
    if let Err(e) = run() {
        eprintln!("{READER}: error: {e:#}");
        std::process::exit(1);
    }
}

fn cdc_err(e: mysql_cdc::errors::Error) -> anyhow::Error {
    anyhow!("mysql_cdc: {e:?}")
}

fn run() -> Result<()> {
    let args = Args::parse()?;
    let start = Instant::now();
    let mut counts = Counts::default();
    let mut h = 0u64;
    if args.pos < args.end_pos {
        let options = ReplicaOptions {
            hostname: args.host.clone(),
            port: args.port,
            username: args.user.clone(),
            password: args.password.clone(),
            ssl_mode: SslMode::Disabled,
            server_id: args.server_id,
            // Blocking: the dump is sent with our server id; we stop at --end-pos.
            blocking: true,
            heartbeat_interval: Duration::from_secs(30),
            binlog: BinlogOptions::from_position(args.file.clone(), args.pos as u32),
            ..Default::default()
        };
        let mut client = BinlogClient::new(options);
        let mut reached = false;
        for item in client.replicate().map_err(cdc_err)? {
            let (header, event) = item.map_err(cdc_err)?;
            match &event {
                BinlogEvent::WriteRowsEvent(ev) => {
                    counts.events += 1;
                    for row in &ev.rows {
                        counts.rows += 1;
                        h = mix_row(h, row);
                    }
                }
                BinlogEvent::UpdateRowsEvent(ev) => {
                    counts.events += 1;
                    for pair in &ev.rows {
                        counts.rows += 1;
                        h = mix_row(h, &pair.before_update);
                        h = mix_row(h, &pair.after_update);
                    }
                }
                BinlogEvent::DeleteRowsEvent(ev) => {
                    counts.events += 1;
                    for row in &ev.rows {
                        counts.rows += 1;
                        h = mix_row(h, row);
                    }
                }
                _ => {}
            }
            // The artificial Rotate (and a Heartbeat's or FDE's 0) carry no
            // position in the file; every real event says where the next starts.
            if !matches!(
                event,
                BinlogEvent::RotateEvent(_) | BinlogEvent::HeartbeatEvent(_)
            ) && u64::from(header.next_event_position) >= args.end_pos
            {
                reached = true;
                break;
            }
        }
        if !reached {
            bail!(
                "the server ended the stream before --end-pos {}",
                args.end_pos
            );
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    print_result(READER, VERSION, counts, seconds, std::hint::black_box(h));
    Ok(())
}

fn mix_row(mut h: u64, row: &RowData) -> u64 {
    for cell in &row.cells {
        h = match cell {
            None => mix(h, 0xff),
            Some(v) => mix_value(h, v),
        };
    }
    h
}

fn mix_value(h: u64, v: &MySqlValue) -> u64 {
    match v {
        MySqlValue::TinyInt(x) => mix(h, u64::from(*x)),
        MySqlValue::SmallInt(x) => mix(h, u64::from(*x)),
        MySqlValue::MediumInt(x) => mix(h, u64::from(*x)),
        MySqlValue::Int(x) => mix(h, u64::from(*x)),
        MySqlValue::BigInt(x) => mix(h, *x),
        MySqlValue::Float(x) => mix(h, u64::from(x.to_bits())),
        MySqlValue::Double(x) => mix(h, x.to_bits()),
        MySqlValue::Decimal(s) => mix_bytes(h, s.as_bytes()),
        MySqlValue::String(s) => mix_bytes(h, s.as_bytes()),
        MySqlValue::Bit(bits) => bits
            .iter()
            .fold(mix(h, bits.len() as u64), |h, b| mix(h, u64::from(*b))),
        MySqlValue::Enum(x) => mix(h, u64::from(*x)),
        MySqlValue::Set(x) => mix(h, *x),
        MySqlValue::Blob(b) => mix_bytes(h, b),
        MySqlValue::Year(x) => mix(h, u64::from(*x)),
        MySqlValue::Date(d) => mix(
            h,
            (u64::from(d.year) << 16) | (u64::from(d.month) << 8) | u64::from(d.day),
        ),
        MySqlValue::Time(t) => mix(
            h,
            ((t.hour as u64) << 48)
                | (u64::from(t.minute) << 40)
                | (u64::from(t.second) << 32)
                | u64::from(t.millis),
        ),
        MySqlValue::DateTime(d) => {
            let date = (u64::from(d.year) << 16) | (u64::from(d.month) << 8) | u64::from(d.day);
            let time = (u64::from(d.hour) << 48)
                | (u64::from(d.minute) << 40)
                | (u64::from(d.second) << 32)
                | u64::from(d.millis);
            mix(mix(h, date), time)
        }
        MySqlValue::Timestamp(x) => mix(h, *x),
    }
}
