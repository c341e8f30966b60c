//! A corrupt TRANSACTION_PAYLOAD event (MySQL 8 binlog transaction
//! compression, type 40) or a corrupt event frame coming from the network,
//! through the live reader's path: mysql_async's binlog stream as the
//! reader opens it (`reader::checked`), then `reader::payload_events` and
//! `reader::stream_error`, as `reader::run` calls them. The server is a
//! small fake speaking just enough of the protocol (handshake, OK to every
//! command, then the binlog events given), because no real server sends a
//! corrupt payload. Each case must be a decode error naming the position,
//! not a panic or an abort.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use futures_util::StreamExt;
use mysql_async::{BinlogStreamRequest, Conn, OptsBuilder};
use pikachu::source::reader;
use pikachu::source::SourceError;

const FILE: &str = "binlog.000001";
const HEADER_LEN: usize = 19;

/// One protocol packet: 3-byte length, sequence number, payload.
fn write_packet(s: &mut TcpStream, seq: u8, payload: &[u8]) {
    let len = payload.len() as u32;
    let mut p = len.to_le_bytes()[..3].to_vec();
    p.push(seq);
    p.extend_from_slice(payload);
    s.write_all(&p).expect("write packet");
}

/// The next packet's sequence number and payload; `None` at the end.
fn read_packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).ok()?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).ok()?;
    Some((head[3], payload))
}

const OK: &[u8] = &[0, 0, 0, 2, 0, 0, 0];

/// A server on 127.0.0.1 that accepts one connection, lets it log in, says
/// OK to every command, and answers COM_BINLOG_DUMP with `events`.
fn fake_server(events: Vec<Vec<u8>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        // Protocol 41, secure connection, plugin auth, long password, transactions.
        let caps: u32 =
            0x0000_0001 | 0x0000_0004 | 0x0000_0200 | 0x0000_2000 | 0x0000_8000 | 0x0008_0000;
        let mut hello = vec![10];
        hello.extend_from_slice(b"8.0.40-fake\0");
        hello.extend_from_slice(&1u32.to_le_bytes());
        hello.extend_from_slice(b"abcdefgh\0");
        hello.extend_from_slice(&(caps as u16).to_le_bytes());
        hello.push(0x21);
        hello.extend_from_slice(&2u16.to_le_bytes());
        hello.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        hello.push(21);
        hello.extend_from_slice(&[0; 10]);
        hello.extend_from_slice(b"ijklmnopqrst\0");
        hello.extend_from_slice(b"mysql_native_password\0");
        write_packet(&mut s, 0, &hello);
        let Some((seq, _login)) = read_packet(&mut s) else {
            return;
        };
        write_packet(&mut s, seq + 1, OK);
        while let Some((seq, cmd)) = read_packet(&mut s) {
            match cmd.first() {
                // COM_BINLOG_DUMP: the events, then hold the connection.
                Some(0x12) => {
                    for (i, ev) in events.iter().enumerate() {
                        let mut p = vec![0];
                        p.extend_from_slice(ev);
                        write_packet(&mut s, seq + 1 + i as u8, &p);
                    }
                    let mut rest = Vec::new();
                    let _ = s.read_to_end(&mut rest);
                    return;
                }
                Some(0x01) => return,
                _ => write_packet(&mut s, seq + 1, OK),
            }
        }
    });
    port
}

/// An event: the 19-byte header (type, size, end position) and `data`.
fn event(ty: u8, end: u32, data: &[u8]) -> Vec<u8> {
    let size = (HEADER_LEN + data.len()) as u32;
    let mut ev = vec![0, 0, 0, 0, ty, 1, 0, 0, 0];
    ev.extend_from_slice(&size.to_le_bytes());
    ev.extend_from_slice(&end.to_le_bytes());
    ev.extend_from_slice(&[0, 0]);
    ev.extend_from_slice(data);
    ev
}

/// A MySQL 8.0 FORMAT_DESCRIPTION with checksums off, ending at 125.
fn fde() -> Vec<u8> {
    let mut body = vec![4, 0];
    let mut ver = b"8.0.40".to_vec();
    ver.resize(50, 0);
    body.extend_from_slice(&ver);
    body.extend_from_slice(&0u32.to_le_bytes());
    body.push(19);
    // Post-header lengths of the event types (values do not matter here).
    body.extend_from_slice(&[0u8; 41]);
    // Checksum algorithm OFF, and the FDE's own (always present) checksum.
    body.push(0);
    body.extend_from_slice(&[0; 4]);
    event(15, 4 + (HEADER_LEN + body.len()) as u32, &body)
}

/// Reads the stream after the FORMAT_DESCRIPTION the way the reader does;
/// the error the second event gives.
fn error_of(second: Vec<u8>) -> SourceError {
    let first = fde();
    let fde_end = 4 + first.len() as u64;
    let port = fake_server(vec![first, second]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let opts = OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(port)
            .user(Some("u"))
            .pass(Some(""))
            .prefer_socket(false)
            .max_allowed_packet(Some(16 << 20))
            .wait_timeout(Some(28_800));
        let conn = Conn::new(opts).await.expect("log in to the fake server");
        let request = BinlogStreamRequest::new(77)
            .with_filename(FILE.as_bytes())
            .with_pos(4);
        let stream = conn.get_binlog_stream(request).await.expect("dump");
        let mut stream = reader::checked(stream);
        let fde = match stream.next().await {
            Some(Ok(ev)) => ev,
            other => panic!("no FORMAT_DESCRIPTION: {other:?}"),
        };
        assert!(reader::payload_events(&fde, FILE).expect("fde").is_empty());
        match stream.next().await {
            Some(Ok(ev)) => match reader::payload_events(&ev, FILE) {
                Ok(inner) => panic!("a corrupt event passed ({} inner events)", inner.len()),
                Err(e) => e,
            },
            Some(Err(e)) => reader::stream_error(e, 77, FILE, fde_end),
            None => panic!("the stream ended"),
        }
    })
}

/// The error is a decode error at `FILE:pos` whose message has `needle`.
fn assert_decode_error(e: &SourceError, pos: u64, needle: &str) {
    match e {
        SourceError::Decode { at, message } => {
            assert_eq!((at.file.as_str(), at.pos), (FILE, pos), "{e}");
            assert!(message.contains(needle), "{e}");
        }
        other => panic!("not a decode error: {other:?}"),
    }
    assert!(!e.is_retryable());
    assert!(
        e.to_string().starts_with(&format!(
            "binlog event at {FILE}:{pos} could not be decoded"
        )),
        "{e}"
    );
}

/// Payload header fields: (type, value) as lenenc type, length, value.
fn fields(fields: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (ty, value) in fields {
        out.push(*ty);
        out.push(value.len() as u8);
        out.extend_from_slice(value);
    }
    out.push(0);
    out
}

#[test]
fn unknown_compression_type() {
    // compression 7 (only zstd 0 and none 255 exist), payload size 3.
    let mut data = fields(&[(2, &[7]), (1, &[3])]);
    data.extend_from_slice(b"abc");
    let e = error_of(event(40, 2000, &data));
    assert_decode_error(&e, 2000, "compression type 7 is not known");
}

#[test]
fn huge_uncompressed_size() {
    // zstd, 2^40 bytes uncompressed (lenenc 0xfe + 8 bytes), payload size 3.
    let mut huge = vec![0xfe];
    huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let mut data = fields(&[(2, &[0]), (3, &huge), (1, &[3])]);
    data.extend_from_slice(b"abc");
    let e = error_of(event(40, 2000, &data));
    assert_decode_error(&e, 2000, "claims 1099511627776 bytes uncompressed");
}

#[test]
fn header_field_longer_than_the_event() {
    // An unknown field type (9) that says it has 200 bytes.
    let data = vec![9, 200, 1, 2, 3];
    let e = error_of(event(40, 2000, &data));
    assert_decode_error(&e, 2000, "field 9 says 200 bytes");
}

#[test]
fn payload_that_is_not_zstd() {
    let mut data = fields(&[(2, &[0]), (3, &[10]), (1, &[4])]);
    data.extend_from_slice(b"junk");
    let e = error_of(event(40, 2000, &data));
    assert_decode_error(&e, 2000, "could not be decompressed");
}

#[test]
fn event_size_larger_than_the_packet() {
    // The header says 1000 bytes; the packet has 30.
    let mut ev = event(40, 2000, &[0; 11]);
    ev[9..13].copy_from_slice(&1000u32.to_le_bytes());
    let e = error_of(ev);
    // The event starts where the FORMAT_DESCRIPTION ended.
    assert_decode_error(
        &e,
        4 + fde().len() as u64,
        "header says 1000 bytes, 30 received",
    );
}
