//! Comparison reader for pikachu's benchmark: mysql_async's row API.
//!
//! `Conn::get_binlog_stream` from --file/--pos (COM_BINLOG_DUMP with
//! --server-id), and for each WRITE/UPDATE/DELETE rows event mysql_common's
//! `RowsEventData::rows(table_map_event)`, which decodes each row image into a
//! `BinlogRow` of `BinlogValue`s; every value is read and folded into a
//! checksum. Stops at the first event ending at or past --end-pos. This is
//! the generic row API of the crates pikachu itself is built on (pikachu uses
//! its own decoder over the same event structs). Prints one JSON line:
//! {"reader":"mysql_async-rows","version":..,"rows":..,"events":..,"seconds":..}

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, OptsBuilder};
use mysql_common::binlog::events::EventData;
use mysql_common::binlog::row::BinlogRow;
use mysql_common::binlog::value::BinlogValue;
use mysql_common::value::Value;
use pikachu_bench_readers::{mix, mix_bytes, print_result, Args, Counts};
use std::time::Instant;

const READER: &str = "mysql_async-rows";
const VERSION: &str = "mysql_async 0.37.1, mysql_common 0.37.3";

fn main() {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{READER}: error: cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run()) {
        eprintln!("{READER}: error: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let args = Args::parse()?;
    let start = Instant::now();
    let mut counts = Counts::default();
    let mut h = 0u64;
    if args.pos < args.end_pos {
        let opts = OptsBuilder::default()
            .ip_or_hostname(args.host.clone())
            .tcp_port(args.port)
            .user(Some(args.user.clone()))
            .pass(Some(args.password.clone()))
            .prefer_socket(false);
        let mut conn = Conn::new(opts)
            .await
            .with_context(|| format!("connecting to {}:{}", args.host, args.port))?;
        // Harmless on MySQL; on MariaDB, lets it send its GTID events as they
        // are (like the other readers do).
        conn.query_drop("SET @mariadb_slave_capability = 4")
            .await
            .context("SET @mariadb_slave_capability")?;
        let request = BinlogStreamRequest::new(args.server_id)
            .with_filename(args.file.as_bytes())
            .with_pos(args.pos);
        let mut stream = conn
            .get_binlog_stream(request)
            .await
            .with_context(|| format!("requesting the binlog at {}:{}", args.file, args.pos))?;
        let mut reached = false;
        while let Some(event) = stream.next().await {
            let event = event.context("reading the binlog stream")?;
            if let Some(EventData::RowsEvent(rows)) =
                event.read_data().context("parsing an event")?
            {
                counts.events += 1;
                let tme = stream
                    .get_tme(rows.table_id())
                    .with_context(|| format!("no table map for table id {}", rows.table_id()))?;
                for row in rows.rows(tme) {
                    let (before, after) = row.context("decoding a row")?;
                    counts.rows += 1;
                    if let Some(r) = &before {
                        h = mix_row(h, r);
                    }
                    if let Some(r) = &after {
                        h = mix_row(h, r);
                    }
                }
            }
            // log_pos is 0 in artificial events (the first Rotate, Heartbeats).
            if u64::from(event.header().log_pos()) >= args.end_pos {
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
        // Not `stream.close()`: for a blocking dump it waits for the server.
        drop(stream);
    }
    let seconds = start.elapsed().as_secs_f64();
    print_result(READER, VERSION, counts, seconds, std::hint::black_box(h));
    Ok(())
}

fn mix_row(mut h: u64, row: &BinlogRow) -> u64 {
    for i in 0..row.len() {
        h = match row.as_ref(i) {
            // Not in the row image (binlog_row_image != FULL).
            None => mix(h, 0xfe),
            Some(BinlogValue::Value(v)) => mix_value(h, v),
            // MySQL's binary JSON (MariaDB stores JSON as text).
            Some(BinlogValue::Jsonb(j)) => mix_bytes(h, format!("{j:?}").as_bytes()),
            Some(BinlogValue::JsonDiff(d)) => mix(h, d.len() as u64),
        };
    }
    h
}

fn mix_value(h: u64, v: &Value) -> u64 {
    match v {
        Value::NULL => mix(h, 0xff),
        Value::Bytes(b) => mix_bytes(h, b),
        Value::Int(x) => mix(h, *x as u64),
        Value::UInt(x) => mix(h, *x),
        Value::Float(x) => mix(h, u64::from(x.to_bits())),
        Value::Double(x) => mix(h, x.to_bits()),
        Value::Date(y, mo, d, hh, mi, s, us) => {
            let date = (u64::from(*y) << 16) | (u64::from(*mo) << 8) | u64::from(*d);
            let time = (u64::from(*hh) << 48)
                | (u64::from(*mi) << 40)
                | (u64::from(*s) << 32)
                | u64::from(*us);
            mix(mix(h, date), time)
        }
        Value::Time(neg, days, hh, mi, s, us) => {
            let a = (u64::from(*neg) << 63) | u64::from(*days);
            let b = (u64::from(*hh) << 48)
                | (u64::from(*mi) << 40)
                | (u64::from(*s) << 32)
                | u64::from(*us);
            mix(mix(h, a), b)
        }
    }
}
