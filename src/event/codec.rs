//! A compact binary form of a [`Change`], for keeping changes on disk (the
//! rows of a prepared XA transaction wait in the state store for its
//! outcome) and reading them back exactly: the row images' JSON fragments,
//! the table as the change saw it, and where the change was read.
//!
//! Layout (little-endian; `str` is a u32 length and UTF-8 bytes):
//! - version (u8), kind (u8), timestamp (u32);
//! - table: database (str), name (str), column count (u32) and names (str),
//!   key column count (u32) and indexes (u32);
//! - before image, after image: present (u8), then column count (u32) and
//!   fragment ends (u32), byte count (u32) and bytes;
//! - source: file (str), pos (u64), has_gtid (u8) and gtid (str), row (u32),
//!   row_in_trx (u64).
//!
//! Reading checks every length against the bytes left, so a damaged record
//! is an error, never a panic.

use std::sync::Arc;

use super::{Change, ChangeKind, Column, RowImage, SourcePosition, Table, ABSENT};

const VERSION: u8 = 1;

/// Appends the binary form of `c` to `out`.
pub fn encode(c: &Change, out: &mut Vec<u8>) {
    out.push(VERSION);
    out.push(match c.kind {
        ChangeKind::Insert => 0,
        ChangeKind::Update => 1,
        ChangeKind::Delete => 2,
    });
    out.extend_from_slice(&c.timestamp.to_le_bytes());
    encode_table(&c.table, out);
    for img in [&c.before, &c.after] {
        match img {
            None => out.push(0),
            Some(i) => {
                out.push(1);
                put_u32(out, i.ends.len());
                for e in &i.ends {
                    out.extend_from_slice(&e.to_le_bytes());
                }
                put_bytes(out, &i.buf);
            }
        }
    }
    let s = &c.source;
    put_bytes(out, s.file.as_bytes());
    out.extend_from_slice(&s.pos.to_le_bytes());
    match &s.gtid {
        None => out.push(0),
        Some(g) => {
            out.push(1);
            put_bytes(out, g.as_bytes());
        }
    }
    out.extend_from_slice(&s.row.to_le_bytes());
    out.extend_from_slice(&s.row_in_trx.to_le_bytes());
}

fn encode_table(t: &Table, out: &mut Vec<u8>) {
    put_bytes(out, t.database.as_bytes());
    put_bytes(out, t.name.as_bytes());
    put_u32(out, t.columns.len());
    for col in &t.columns {
        put_bytes(out, col.name.as_bytes());
    }
    put_u32(out, t.primary_key.len());
    for &k in &t.primary_key {
        put_u32(out, k);
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

/// Reads changes back; consecutive changes of the same table share one
/// [`Table`] (as the changes read from the binlog do).
#[derive(Default)]
pub(crate) struct Reader {
    /// The encoded table of the last change read, and the table.
    last_table: Option<(Vec<u8>, Arc<Table>)>,
}

impl Reader {
    /// Decodes one record written by [`encode`].
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Change, String> {
        let mut b = Bytes(bytes);
        let version = b.u8()?;
        if version != VERSION {
            return Err(format!("unknown record version {version}"));
        }
        let kind = match b.u8()? {
            0 => ChangeKind::Insert,
            1 => ChangeKind::Update,
            2 => ChangeKind::Delete,
            k => return Err(format!("unknown change kind {k}")),
        };
        let timestamp = b.u32()?;
        let table = self.table(&mut b)?;
        let before = image(&mut b)?;
        let after = image(&mut b)?;
        let file: Arc<str> = b.str()?.into();
        let pos = b.u64()?;
        let gtid = match b.u8()? {
            0 => None,
            _ => Some(b.str()?.into()),
        };
        let row = b.u32()?;
        let row_in_trx = b.u64()?;
        if !b.0.is_empty() {
            return Err(format!("{} bytes left over", b.0.len()));
        }
        Ok(Change {
            kind,
            table,
            before,
            after,
            source: SourcePosition {
                file,
                pos,
                gtid,
                row,
                row_in_trx,
            },
            timestamp,
        })
    }

    fn table(&mut self, b: &mut Bytes<'_>) -> Result<Arc<Table>, String> {
        let start = b.0;
        let database = b.str()?;
        let name = b.str()?;
        let n = b.count(4)?;
        let mut columns = Vec::with_capacity(n);
        for _ in 0..n {
            columns.push(Column::new(b.str()?));
        }
        let k = b.count(4)?;
        let mut primary_key = Vec::with_capacity(k);
        for _ in 0..k {
            let i = b.u32()? as usize;
            if i >= n {
                return Err(format!("key column {i} of a table of {n} columns"));
            }
            primary_key.push(i);
        }
        let raw = &start[..start.len() - b.0.len()];
        if let Some((last, t)) = &self.last_table {
            if last == raw {
                return Ok(t.clone());
            }
        }
        let t = Arc::new(Table {
            database: database.into(),
            name: name.into(),
            columns,
            primary_key,
        });
        self.last_table = Some((raw.to_vec(), t.clone()));
        Ok(t)
    }
}

fn image(b: &mut Bytes<'_>) -> Result<Option<RowImage>, String> {
    if b.u8()? == 0 {
        return Ok(None);
    }
    let n = b.count(4)?;
    let mut ends = Vec::with_capacity(n);
    for _ in 0..n {
        ends.push(b.u32()?);
    }
    let buf = b.bytes()?.to_vec();
    // What RowImage::get and iter rely on: present ends ascend within the buffer.
    let mut prev = 0u32;
    for &e in &ends {
        if e == ABSENT {
            continue;
        }
        if e < prev || e as usize > buf.len() {
            return Err("row image offsets out of order".into());
        }
        prev = e;
    }
    Ok(Some(RowImage { buf, ends }))
}

struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!(
                "truncated: {n} bytes needed, {} left",
                self.0.len()
            ));
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    /// A count of items of at least `each` bytes, checked against what is left.
    fn count(&mut self, each: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(each) > self.0.len() {
            return Err(format!("{n} items announced, {} bytes left", self.0.len()));
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn str(&mut self) -> Result<&'a str, String> {
        std::str::from_utf8(self.bytes()?).map_err(|_| "text is not UTF-8".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: ChangeKind, gtid: Option<&str>) -> Change {
        let table = Arc::new(Table {
            database: "shop".into(),
            name: "users".into(),
            columns: vec![
                Column::new("id"),
                Column::new("na\"me"),
                Column::new("blob"),
            ],
            primary_key: vec![0],
        });
        let mut img = RowImage::default();
        img.push_json(b"1");
        img.push_json("\"é\"".as_bytes());
        img.push_absent();
        Change {
            kind,
            table,
            before: (kind != ChangeKind::Insert).then(|| img.clone()),
            after: (kind != ChangeKind::Delete).then(|| img.clone()),
            source: SourcePosition {
                file: "mysql-bin.000007".into(),
                pos: 123_456,
                gtid: gtid.map(Into::into),
                row: 3,
                row_in_trx: 99,
            },
            timestamp: 1_700_000_000,
        }
    }

    fn same(a: &Change, b: &Change) {
        assert_eq!(a.kind, b.kind);
        assert_eq!(a.table, b.table);
        assert_eq!(a.before, b.before);
        assert_eq!(a.after, b.after);
        assert_eq!(a.source, b.source);
        assert_eq!(a.timestamp, b.timestamp);
    }

    #[test]
    fn round_trip_and_shared_tables() {
        let mut r = Reader::default();
        let mut tables = Vec::new();
        for (kind, gtid) in [
            (ChangeKind::Insert, Some("0-1-5")),
            (ChangeKind::Update, None),
            (
                ChangeKind::Delete,
                Some("3E11FA47-71CA-11E1-9E33-C80AA9429562:23"),
            ),
        ] {
            let c = change(kind, gtid);
            let mut buf = Vec::new();
            encode(&c, &mut buf);
            let back = r.decode(&buf).expect("decode");
            same(&c, &back);
            tables.push(back.table);
        }
        assert!(
            Arc::ptr_eq(&tables[0], &tables[2]),
            "one table for consecutive rows"
        );
    }

    #[test]
    fn damaged_records_are_errors() {
        let mut buf = Vec::new();
        encode(&change(ChangeKind::Update, Some("0-1-5")), &mut buf);
        for n in 0..buf.len() {
            assert!(Reader::default().decode(&buf[..n]).is_err(), "cut at {n}");
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert!(Reader::default().decode(&longer).is_err());
        let mut v2 = buf.clone();
        v2[0] = 2;
        assert!(Reader::default().decode(&v2).is_err());
        // Any single damaged byte: an error or some change, never a panic.
        for i in 0..buf.len() {
            let mut d = buf.clone();
            d[i] ^= 0xff;
            let _ = Reader::default().decode(&d);
        }
    }
}
