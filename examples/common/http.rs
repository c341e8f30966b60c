//! The minimal HTTP/1.1 request reader shared by the benchmark receivers
//! (`bench_deliver`, `bench_receiver`): keep-alive, one request at a time,
//! a body of `Content-Length` bytes. Written for speed, not for the web.

use tokio::io::AsyncReadExt;

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> usize {
    let text = String::from_utf8_lossy(head);
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// Reads the next request into `buf` (which may hold the start of it
/// already); returns the end of its head and its body length, so the
/// request is `buf[..head + len]`. `None` when the peer closed or failed.
pub async fn read_request(
    sock: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    tmp: &mut [u8],
) -> Option<(usize, usize)> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        match sock.read(tmp).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    };
    let len = content_length(&buf[..head_end]);
    while buf.len() < head_end + len {
        match sock.read(tmp).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    Some((head_end, len))
}
