//! Benchmark reader: the wire limit. Streams a binlog range from a live
//! server with the same client stack as pikachu (mysql_async's binlog
//! stream, the same session settings), counts events and bytes, and decodes
//! nothing. Used by `scripts/bench.sh`.
//!
//!   bench_raw_stream --host H --port P --user U --password W --server-id N \
//!       --file mysql-bin.000003 --pos 4 --end-pos 123456
//!
//! Prints one JSON line: {"reader":"raw-stream","events":…,"bytes":…,"seconds":…}.

use std::time::Instant;

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, OptsBuilder};

fn arg(args: &[String], name: &str) -> Result<String, String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .ok_or_else(|| format!("missing {name}"))
}

async fn run(args: &[String]) -> Result<String, Box<dyn std::error::Error>> {
    let port: u16 = arg(args, "--port")?.parse()?;
    let server_id: u32 = arg(args, "--server-id")?.parse()?;
    let file = arg(args, "--file")?;
    let pos: u64 = arg(args, "--pos")?.parse()?;
    let end: u64 = arg(args, "--end-pos")?.parse()?;
    let opts = OptsBuilder::default()
        .ip_or_hostname(arg(args, "--host")?)
        .tcp_port(port)
        .user(Some(arg(args, "--user")?))
        .pass(Some(arg(args, "--password")?));
    let started = Instant::now();
    let mut conn = Conn::new(opts).await?;
    conn.query_drop("SET @master_heartbeat_period = 1000000000")
        .await?;
    conn.query_drop("SET @mariadb_slave_capability = 4").await?;
    let request = BinlogStreamRequest::new(server_id)
        .with_filename(file.as_bytes())
        .with_pos(pos);
    let mut stream = conn.get_binlog_stream(request).await?;
    let (mut events, mut bytes) = (0u64, 0u64);
    while let Some(ev) = stream.next().await {
        let ev = ev?;
        let h = ev.header();
        events += 1;
        bytes += u64::from(h.event_size());
        if h.log_pos() != 0 && u64::from(h.log_pos()) >= end {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(format!(
        "{{\"reader\":\"raw-stream\",\"events\":{events},\"bytes\":{bytes},\"seconds\":{secs:.4}}}"
    ))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match run(&args).await {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("bench_raw_stream: {e}");
            std::process::exit(1);
        }
    }
}
