//! Benchmark receiver: the fastest webhook endpoint we can write, so that
//! the delivery benchmark measures pikachu, not the receiver. HTTP/1.1 with
//! keep-alive; every POST is read whole and answered `200` with an empty
//! body at once; it counts requests and changes (payload objects: one per
//! request, or one per element of a batch array). `GET /stats` returns
//! `{"requests":…,"changes":…,"bytes":…}`. Used by `scripts/bench.sh`.
//!
//!   bench_receiver [PORT]     (default 0: any free port; prints the URL)

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

#[path = "common/http.rs"]
mod http;

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    changes: AtomicU64,
    bytes: AtomicU64,
}

/// Payload objects in a body: each has exactly one top-level `"event":"`
/// key, and inside JSON strings a quote is always escaped, so the key's
/// text cannot appear in a value (the benchmark's rows hold no JSON
/// objects with an `event` key).
fn changes_in(body: &[u8]) -> u64 {
    body.windows(9).filter(|w| w == b"\"event\":\"").count() as u64
}

async fn serve_conn(mut sock: tokio::net::TcpStream, counts: Arc<Counts>) {
    let _ = sock.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut tmp = vec![0u8; 64 * 1024];
    loop {
        let Some((head_end, len)) = http::read_request(&mut sock, &mut buf, &mut tmp).await else {
            return;
        };
        let reply = if buf.starts_with(b"GET /stats") {
            let body = format!(
                "{{\"requests\":{},\"changes\":{},\"bytes\":{}}}",
                counts.requests.load(Relaxed),
                counts.changes.load(Relaxed),
                counts.bytes.load(Relaxed)
            );
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        } else {
            let body = &buf[head_end..head_end + len];
            counts.changes.fetch_add(changes_in(body), Relaxed);
            counts.bytes.fetch_add(len as u64, Relaxed);
            counts.requests.fetch_add(1, Relaxed);
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_string()
        };
        buf.drain(..head_end + len);
        if sock.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bench_receiver: cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    match listener.local_addr() {
        Ok(a) => println!("http://{a}/hook"),
        Err(e) => {
            eprintln!("bench_receiver: {e}");
            std::process::exit(1);
        }
    }
    let counts = Arc::new(Counts::default());
    while let Ok((sock, _)) = listener.accept().await {
        tokio::spawn(serve_conn(sock, counts.clone()));
    }
}
