//! Binlog files on disk (binlogs and relay logs): the `\xfebin` magic, then
//! events framed by their 19-byte headers. Every size is checked here
//! before mysql_common sees the bytes (its `Event::read` panics on short
//! input), so a truncated or corrupt file is an error naming the offset,
//! never a panic. Also opens TRANSACTION_PAYLOAD events (zstd) into their
//! inner events, with the same checks. The live reader applies the same
//! framing checks to events from the network ([`check_event_frame`]) and
//! opens payloads with [`open_payload`] too.

use std::fmt;
use std::io::Read;
use std::path::Path;

use mysql_common::binlog::consts::{BinlogChecksumAlg, BinlogVersion};
use mysql_common::binlog::events::{Event, FormatDescriptionEvent, TransactionPayloadEvent};

/// The magic at the start of every binlog file.
pub(crate) const MAGIC: &[u8; 4] = b"\xfebin";
/// Event header length (binlog v4).
pub const HEADER_LEN: usize = 19;
const CHECKSUM_LEN: usize = 4;
/// FORMAT_DESCRIPTION body: version(2) server version(50) created(4) header length(1).
const FDE_MIN_DATA: usize = 57;
/// Largest decompressed TRANSACTION_PAYLOAD we accept (a corrupt size must
/// not make us allocate without bound; MySQL's own limit is 1 GiB).
const MAX_PAYLOAD: u64 = 1 << 30;

const START_EVENT_V3: u8 = 1;
const FORMAT_DESCRIPTION: u8 = 15;
const MARIA_START_ENCRYPTION: u8 = 164;

/// A file that cannot be read to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file's name as given.
    pub file: String,
    /// Byte offset in the file of the event (or header) at fault.
    pub offset: u64,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

impl std::error::Error for FileError {}

/// One event read from a file, with where it starts.
pub struct FileEvent {
    /// Offset of the event's first header byte in the file.
    pub pos: u64,
    pub event: Event,
}

/// A binlog file held in memory, read event by event.
pub struct BinlogFile {
    name: String,
    data: Vec<u8>,
    off: usize,
    fde: FormatDescriptionEvent<'static>,
    events: u64,
}

impl BinlogFile {
    /// Reads `path` (gzip-compressed files are unpacked first).
    pub fn open(path: &Path) -> Result<BinlogFile, FileError> {
        let name = path.display().to_string();
        let data = std::fs::read(path).map_err(|e| FileError {
            file: name.clone(),
            offset: 0,
            message: format!("cannot read the file: {e}"),
        })?;
        BinlogFile::from_bytes(&name, data)
    }

    /// A binlog file from its bytes; `name` is used in messages.
    pub(crate) fn from_bytes(name: &str, mut data: Vec<u8>) -> Result<BinlogFile, FileError> {
        let err = |offset: u64, message: String| FileError {
            file: name.to_string(),
            offset,
            message,
        };
        if data.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&data[..])
                .take(u64::from(u32::MAX))
                .read_to_end(&mut out)
                .map_err(|e| err(0, format!("gzip data is corrupt: {e}")))?;
            data = out;
        }
        if data.len() < MAGIC.len() || &data[..4] != MAGIC {
            let head: Vec<String> = data.iter().take(4).map(|b| format!("{b:02x}")).collect();
            let what = if data.starts_with(b"\xfdbin") {
                "an encrypted binlog (MySQL binlog_encryption), which cannot be read without the server's keyring".to_string()
            } else {
                format!(
                    "not a binlog file: bad magic [{}] (expected fe 62 69 6e, \"\\xfebin\")",
                    head.join(" ")
                )
            };
            return Err(err(0, what));
        }
        Ok(BinlogFile {
            name: name.to_string(),
            data,
            off: MAGIC.len(),
            fde: FormatDescriptionEvent::new(BinlogVersion::Version4),
            events: 0,
        })
    }

    /// The file's name as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current format description.
    pub fn fde(&self) -> &FormatDescriptionEvent<'static> {
        &self.fde
    }

    fn err(&self, offset: usize, message: String) -> FileError {
        FileError {
            file: self.name.clone(),
            offset: offset as u64,
            message,
        }
    }

    /// The next event, `None` at the end of the file.
    pub(crate) fn next_event(&mut self) -> Result<Option<FileEvent>, FileError> {
        let off = self.off;
        let left = self.data.len() - off;
        if left == 0 {
            return Ok(None);
        }
        let first = self.events == 0;
        let bytes = &self.data[off..];
        if first && left >= 5 && bytes[4] == START_EVENT_V3 {
            // v1 (13-byte headers) and v3 start with START_EVENT_V3; its body
            // begins with the binlog version.
            let version = match (left >= 15, left >= HEADER_LEN + 2) {
                (_, true) if bytes[HEADER_LEN] == 3 => 3,
                (true, _) if bytes[13] == 1 => 1,
                _ => 3,
            };
            return Err(self.err(
                off,
                format!(
                    "binlog format v{version} (START_EVENT_V3, MySQL before 5.0) is not supported at offset {off}; only v4 (MySQL 5.0+, MariaDB) is"
                ),
            ));
        }
        if left < HEADER_LEN {
            return Err(self.err(
                off,
                format!(
                    "truncated event header at offset {off}: {left} bytes left, an event header has {HEADER_LEN}"
                ),
            ));
        }
        let ty = bytes[4];
        let size = u32::from_le_bytes([bytes[9], bytes[10], bytes[11], bytes[12]]) as usize;
        if size < HEADER_LEN {
            return Err(self.err(
                off,
                format!(
                    "corrupt event at offset {off}: header says {size} bytes, less than its own {HEADER_LEN}-byte header"
                ),
            ));
        }
        if size > left {
            return Err(self.err(
                off,
                format!("truncated event at offset {off}: header says {size} bytes, {left} left"),
            ));
        }
        if first && ty != FORMAT_DESCRIPTION {
            return Err(self.err(
                off,
                format!(
                    "the first event (offset {off}) has type {ty}, not FORMAT_DESCRIPTION (15): not a binlog v4 file"
                ),
            ));
        }
        if ty == MARIA_START_ENCRYPTION {
            return Err(self.err(
                off,
                format!(
                    "START_ENCRYPTION event at offset {off}: the rest of this MariaDB binlog is encrypted and cannot be read without the server's keys"
                ),
            ));
        }
        check_data_len(
            ty,
            size - HEADER_LEN,
            &self.fde,
            &format!(" at offset {off}"),
        )
        .map_err(|m| self.err(off, m))?;
        let event = Event::read(&self.fde, &bytes[..size]).map_err(|e| {
            self.err(
                off,
                format!("corrupt event at offset {off} (type {ty}): {e}"),
            )
        })?;
        if ty == FORMAT_DESCRIPTION {
            let fde = event
                .read_event::<FormatDescriptionEvent<'_>>()
                .map_err(|e| {
                    self.err(
                        off,
                        format!("corrupt FORMAT_DESCRIPTION event at offset {off}: {e}"),
                    )
                })?;
            if fde.binlog_version() != BinlogVersion::Version4 {
                return Err(self.err(
                    off,
                    format!(
                        "binlog format v{} at offset {off} is not supported; only v4 (MySQL 5.0+, MariaDB) is",
                        fde.binlog_version() as u16
                    ),
                ));
            }
            if let Err(e) = event.footer().get_checksum_alg() {
                return Err(self.err(
                    off,
                    format!(
                        "FORMAT_DESCRIPTION event at offset {off} names an unknown checksum algorithm: {e}"
                    ),
                ));
            }
            self.fde = fde.into_owned().with_footer(event.footer());
        }
        self.off += size;
        self.events += 1;
        Ok(Some(FileEvent {
            pos: off as u64,
            event,
        }))
    }
}

/// Checks that an event's data is long enough for what `Event::read`
/// takes from it (it panics otherwise): a FORMAT_DESCRIPTION's fixed part,
/// or the checksum under `fde`. `at` says where, for the message.
fn check_data_len(
    ty: u8,
    data_len: usize,
    fde: &FormatDescriptionEvent<'_>,
    at: &str,
) -> Result<(), String> {
    if ty == FORMAT_DESCRIPTION {
        if data_len < FDE_MIN_DATA {
            return Err(format!(
                "corrupt FORMAT_DESCRIPTION event{at}: {data_len} bytes of data, at least {FDE_MIN_DATA} needed"
            ));
        }
    } else if has_checksum(fde) && data_len < CHECKSUM_LEN {
        return Err(format!(
            "corrupt event{at}: {data_len} bytes of data, too short for its CRC32 checksum"
        ));
    }
    Ok(())
}

/// Checks one event as received from a server (`bytes`: its header and
/// data) before mysql_common parses it, which panics on a size larger than
/// the bytes or too small for the checksum or a format description; `fde`
/// is the format description in force. The framing checks of
/// [`BinlogFile::next_event`], for the live reader.
pub(crate) fn check_event_frame(
    bytes: &[u8],
    fde: &FormatDescriptionEvent<'_>,
) -> Result<(), String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "truncated event: {} bytes, an event header has {HEADER_LEN}",
            bytes.len()
        ));
    }
    let ty = bytes[4];
    let size = u32::from_le_bytes([bytes[9], bytes[10], bytes[11], bytes[12]]) as usize;
    if size < HEADER_LEN {
        return Err(format!(
            "corrupt event (type {ty}): header says {size} bytes, less than its own {HEADER_LEN}-byte header"
        ));
    }
    if size > bytes.len() {
        return Err(format!(
            "truncated event (type {ty}): header says {size} bytes, {} received",
            bytes.len()
        ));
    }
    check_data_len(ty, size - HEADER_LEN, fde, &format!(" (type {ty})"))
}

/// Whether events under `fde` end with a checksum (as `Event::read` decides).
fn has_checksum(fde: &FormatDescriptionEvent<'_>) -> bool {
    let footer = fde.footer();
    footer.get_checksum_enabled()
        && match footer.get_checksum_alg() {
            Ok(None) | Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_OFF)) => false,
            Ok(Some(_)) | Err(_) => true,
        }
}

/// Checks a TRANSACTION_PAYLOAD header (fields: type, length, value, all
/// length-encoded; type 0 ends it) before mysql_common parses it: it
/// panics on a field longer than the event and on an unknown compression.
fn check_payload_header(mut b: &[u8]) -> Result<(), String> {
    use super::rows::lenenc;
    let bad = |m: String| format!("TRANSACTION_PAYLOAD header is corrupt: {m}");
    let (mut size, mut compression) = (None, None);
    loop {
        let field = lenenc(&mut b).map_err(bad)?;
        if field == 0 {
            break;
        }
        let len = lenenc(&mut b).map_err(bad)?;
        if len > b.len() as u64 {
            return Err(bad(format!(
                "field {field} says {len} bytes, {} left",
                b.len()
            )));
        }
        if (1..=3).contains(&field) {
            let mut v = &b[..len as usize];
            let value = lenenc(&mut v).map_err(bad)?;
            if !v.is_empty() {
                return Err(bad(format!("field {field} is longer than its value")));
            }
            match field {
                1 => size = Some(value),
                2 => compression = Some(value),
                _ => {}
            }
        }
        b = &b[len as usize..];
    }
    match compression {
        Some(0) | Some(255) => {}
        Some(c) => {
            return Err(bad(format!(
                "compression type {c} is not known (zstd 0, none 255)"
            )))
        }
        None => return Err(bad("no compression type".into())),
    }
    match size {
        Some(n) if n <= b.len() as u64 => Ok(()),
        Some(n) => Err(bad(format!("payload size {n}, {} bytes left", b.len()))),
        None => Err(bad("no payload size".into())),
    }
}

/// Facts about a TRANSACTION_PAYLOAD event and its inner events.
pub struct Payload {
    /// "zstd" or "none".
    pub compression: &'static str,
    pub payload_size: u64,
    pub uncompressed_size: u64,
    /// The inner events with their offsets in the uncompressed payload.
    pub events: Vec<FileEvent>,
}

/// Decompresses a TRANSACTION_PAYLOAD event and frames its inner events
/// (which carry no checksums). `fde` is the file's format description.
pub(crate) fn open_payload(
    ev: &Event,
    fde: &FormatDescriptionEvent<'static>,
) -> Result<Payload, String> {
    check_payload_header(ev.data())?;
    let tpe: TransactionPayloadEvent<'_> = ev
        .read_event()
        .map_err(|e| format!("TRANSACTION_PAYLOAD event is corrupt: {e}"))?;
    let compression = match tpe.algorithm() {
        mysql_common::binlog::consts::TransactionPayloadCompressionType::ZSTD => "zstd",
        mysql_common::binlog::consts::TransactionPayloadCompressionType::NONE => "none",
    };
    let declared = tpe.uncompressed_size();
    if declared > MAX_PAYLOAD {
        return Err(format!(
            "TRANSACTION_PAYLOAD claims {declared} bytes uncompressed (limit {MAX_PAYLOAD})"
        ));
    }
    let mut raw = Vec::new();
    tpe.decompressed()
        .and_then(|r| r.take(MAX_PAYLOAD + 1).read_to_end(&mut raw))
        .map_err(|e| {
            format!("TRANSACTION_PAYLOAD could not be decompressed ({compression}): {e}")
        })?;
    if raw.len() as u64 > MAX_PAYLOAD {
        return Err(format!(
            "TRANSACTION_PAYLOAD decompresses to more than {MAX_PAYLOAD} bytes"
        ));
    }
    if declared != 0 && raw.len() as u64 != declared {
        return Err(format!(
            "TRANSACTION_PAYLOAD decompressed to {} bytes, its header says {declared}",
            raw.len()
        ));
    }
    let mut footer = fde.footer();
    footer.set_checksum_enabled(false);
    let inner_fde = fde.clone().with_footer(footer);
    let mut events = Vec::new();
    let mut off = 0usize;
    while off < raw.len() {
        let left = raw.len() - off;
        if left < HEADER_LEN {
            return Err(format!(
                "TRANSACTION_PAYLOAD: truncated inner event header at payload offset {off}: {left} bytes left"
            ));
        }
        let b = &raw[off..];
        let ty = b[4];
        let size = u32::from_le_bytes([b[9], b[10], b[11], b[12]]) as usize;
        if size < HEADER_LEN || size > left {
            return Err(format!(
                "TRANSACTION_PAYLOAD: inner event at payload offset {off} says {size} bytes, {left} left"
            ));
        }
        if ty == 40 || ty == FORMAT_DESCRIPTION {
            return Err(format!(
                "TRANSACTION_PAYLOAD: inner event at payload offset {off} has type {ty}, which cannot be inside a payload"
            ));
        }
        let event = Event::read(&inner_fde, &b[..size]).map_err(|e| {
            format!("TRANSACTION_PAYLOAD: inner event at payload offset {off}: {e}")
        })?;
        events.push(FileEvent {
            pos: off as u64,
            event,
        });
        off += size;
    }
    Ok(Payload {
        compression,
        payload_size: tpe.payload_size(),
        uncompressed_size: declared,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fde_event(checksum: bool) -> Vec<u8> {
        // A MySQL 8.0 FORMAT_DESCRIPTION with CRC32 (or OFF).
        let mut body = vec![4, 0];
        let mut ver = b"8.0.40".to_vec();
        ver.resize(50, 0);
        body.extend_from_slice(&ver);
        body.extend_from_slice(&0u32.to_le_bytes());
        body.push(19);
        body.extend_from_slice(&[0u8; 41]);
        body.push(u8::from(checksum));
        let size = (HEADER_LEN + body.len() + 4) as u32;
        let mut ev = vec![0, 0, 0, 0, 15, 1, 0, 0, 0];
        ev.extend_from_slice(&size.to_le_bytes());
        ev.extend_from_slice(&(4 + size).to_le_bytes());
        ev.extend_from_slice(&[0, 0]);
        ev.extend_from_slice(&body);
        let crc = {
            let mut h = crc32fast::Hasher::new();
            h.update(&ev);
            h.finalize()
        };
        ev.extend_from_slice(&crc.to_le_bytes());
        ev
    }

    fn read_all(bytes: Vec<u8>) -> Result<usize, FileError> {
        let mut f = BinlogFile::from_bytes("t", bytes)?;
        let mut n = 0;
        while f.next_event()?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    #[test]
    fn magic_and_truncation() {
        let e = read_all(b"nope".to_vec()).unwrap_err();
        assert!(e.message.contains("bad magic"), "{e}");
        let mut f = MAGIC.to_vec();
        assert_eq!(read_all(f.clone()), Ok(0));
        f.extend_from_slice(&fde_event(true));
        assert_eq!(read_all(f.clone()), Ok(1));
        // A header cut short.
        let mut g = f.clone();
        g.extend_from_slice(&[1, 2, 3]);
        let e = read_all(g).unwrap_err();
        assert!(
            e.message.contains("truncated event header at offset"),
            "{e}"
        );
        // A header claiming more than there is.
        let mut g = f.clone();
        g.extend_from_slice(&[0, 0, 0, 0, 2, 1, 0, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        g.extend_from_slice(&[0; 38]);
        let e = read_all(g).unwrap_err();
        assert_eq!(e.offset, f.len() as u64);
        assert!(e.message.contains("header says 200 bytes, 57 left"), "{e}");
        // Smaller than a header.
        let mut g = f.clone();
        g.extend_from_slice(&[0, 0, 0, 0, 2, 1, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(read_all(g).unwrap_err().message.contains("less than"));
        // Checksummed but shorter than the checksum.
        let mut g = f.clone();
        g.extend_from_slice(&[
            0, 0, 0, 0, 2, 1, 0, 0, 0, 21, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2,
        ]);
        assert!(read_all(g).unwrap_err().message.contains("too short"));
    }

    /// The live reader's checks: every corrupt frame is an error, never a
    /// panic in `Event::read` after it.
    #[test]
    fn event_frames_from_the_network() {
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&fde_event(true));
        let mut file = BinlogFile::from_bytes("t", f).expect("file");
        assert!(file.next_event().expect("fde").is_some());
        let fde = file.fde().clone();
        let header = |ty: u8, size: u32| {
            let mut h = vec![0, 0, 0, 0, ty, 1, 0, 0, 0];
            h.extend_from_slice(&size.to_le_bytes());
            h.extend_from_slice(&[0; 6]);
            h
        };
        let with_data = |mut h: Vec<u8>, n: usize| {
            h.extend(std::iter::repeat_n(0u8, n));
            h
        };
        for (bytes, expected) in [
            (vec![0u8; 5], "truncated event: 5 bytes"),
            (header(2, 5), "less than its own 19-byte header"),
            (
                with_data(header(2, 200), 10),
                "header says 200 bytes, 29 received",
            ),
            (
                with_data(header(2, 21), 2),
                "too short for its CRC32 checksum",
            ),
            (with_data(header(15, 40), 21), "at least 57 needed"),
        ] {
            match check_event_frame(&bytes, &fde) {
                Ok(()) => panic!("{bytes:?} passed"),
                Err(m) => assert!(m.contains(expected), "{m}"),
            }
        }
        let ok = with_data(header(2, 23), 4);
        assert_eq!(check_event_frame(&ok, &fde), Ok(()));
        assert!(Event::read(&fde, &ok[..]).is_ok());
        // Without checksums, a bare header is a whole event.
        let no_sum = FormatDescriptionEvent::new(BinlogVersion::Version4);
        assert_eq!(check_event_frame(&header(3, 19), &no_sum), Ok(()));
    }

    #[test]
    fn old_versions_are_named() {
        let mut f = MAGIC.to_vec();
        // START_EVENT_V3, v3: 19-byte header, body starts with version 3.
        f.extend_from_slice(&[
            0, 0, 0, 0, 1, 1, 0, 0, 0, 75, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0,
        ]);
        let e = read_all(f).unwrap_err();
        assert!(e.message.contains("binlog format v3"), "{e}");
    }
}
