//! Shared bits of the comparison readers (see Cargo.toml): the command line
//! and the one-line JSON result.

use anyhow::{bail, Context, Result};

/// `--host 127.0.0.1 --port 3407 --user pikachu --password pikachu
///  --server-id N --file mysql-bin.000003 --pos 4 --end-pos 123456`
#[derive(Debug, Clone)]
pub struct Args {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub server_id: u32,
    pub file: String,
    pub pos: u64,
    pub end_pos: u64,
}

const USAGE: &str = "usage: --host H --port P --user U --password PW --server-id N \
--file BINLOG_FILE --pos START --end-pos END";

impl Args {
    pub fn parse() -> Result<Args> {
        Self::parse_from(std::env::args().skip(1))
    }

    pub fn parse_from(mut it: impl Iterator<Item = String>) -> Result<Args> {
        let mut host = None;
        let mut port = None;
        let mut user = None;
        let mut password = None;
        let mut server_id = None;
        let mut file = None;
        let mut pos = None;
        let mut end_pos = None;
        while let Some(flag) = it.next() {
            if flag == "-h" || flag == "--help" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let value = it
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            let num = |what: &str| -> Result<u64> {
                value
                    .parse::<u64>()
                    .with_context(|| format!("{what}: `{value}` is not a number"))
            };
            match flag.as_str() {
                "--host" => host = Some(value.clone()),
                "--port" => port = Some(u16::try_from(num("--port")?).context("--port too big")?),
                "--user" => user = Some(value.clone()),
                "--password" => password = Some(value.clone()),
                "--server-id" => {
                    server_id =
                        Some(u32::try_from(num("--server-id")?).context("--server-id too big")?)
                }
                "--file" => file = Some(value.clone()),
                "--pos" => pos = Some(num("--pos")?),
                "--end-pos" => end_pos = Some(num("--end-pos")?),
                other => bail!("unknown argument `{other}`\n{USAGE}"),
            }
        }
        let args = Args {
            host: host.unwrap_or_else(|| "127.0.0.1".into()),
            port: port.unwrap_or(3306),
            user: user.context(format!("--user is required\n{USAGE}"))?,
            password: password.unwrap_or_default(),
            server_id: server_id.context(format!("--server-id is required\n{USAGE}"))?,
            file: file.context(format!("--file is required\n{USAGE}"))?,
            pos: pos.context(format!("--pos is required\n{USAGE}"))?,
            end_pos: end_pos.context(format!("--end-pos is required\n{USAGE}"))?,
        };
        if args.server_id == 0 {
            bail!("--server-id must be non-zero (0 asks the server for a non-blocking dump)");
        }
        if args.pos < 4 {
            bail!("--pos must be at least 4 (the first event of a binlog file)");
        }
        if args.end_pos < args.pos {
            bail!("--end-pos {} is before --pos {}", args.end_pos, args.pos);
        }
        if args.end_pos > u64::from(u32::MAX) {
            bail!(
                "--end-pos {} does not fit a binlog position (32 bits)",
                args.end_pos
            );
        }
        Ok(args)
    }
}

/// What a reader counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Row changes: an update's before+after pair counts as one.
    pub rows: u64,
    /// WRITE/UPDATE/DELETE rows events.
    pub events: u64,
}

/// Prints the one JSON line of the result to stdout.
pub fn print_result(reader: &str, version: &str, counts: Counts, seconds: f64, checksum: u64) {
    // `checksum` folds every decoded value, so that the optimiser cannot
    // skip the decoding; it is printed to stderr only, not part of the result.
    eprintln!("{reader}: value checksum {checksum:#018x}");
    println!(
        "{{\"reader\":\"{reader}\",\"version\":\"{version}\",\"rows\":{},\"events\":{},\"seconds\":{seconds:.6}}}",
        counts.rows, counts.events
    );
}

/// Mixes `v` into the running checksum `h` (FNV-1a style, cheap).
#[inline]
pub fn mix(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x0000_0100_0000_01b3)
}

/// Mixes a byte string: its length and up to 8 of its bytes at each end
/// (every byte of a value was already produced by the decoder).
#[inline]
pub fn mix_bytes(h: u64, b: &[u8]) -> u64 {
    let mut h = mix(h, b.len() as u64);
    for &x in b.iter().take(8).chain(b.iter().rev().take(8)) {
        h = mix(h, u64::from(x));
    }
    h
}
