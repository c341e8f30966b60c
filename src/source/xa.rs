//! XA transaction identifiers as the binlog carries them, and the XA
//! boundaries the [`super::decoder::Decoder`] reports.
//!
//! An xid is `gtrid, bqual, formatID`. The servers write it in binary in the
//! XA_PREPARE_LOG_EVENT (type 38) and in MariaDB's GTID event, and as SQL in
//! the `XA START/END/COMMIT/ROLLBACK` statements (`X'6131',X'',1`). Both
//! are brought to one canonical text, [`Xid::canonical`] (the servers' own
//! `X'gtrid',X'bqual',formatID`), so a PREPARE and its outcome match.
//!
//! What each server writes (checked against MariaDB 10.11 and the MySQL
//! source, `libbinlogevents`):
//! - MariaDB, prepared XA: a GTID event with `FL_PREPARED_XA` and the xid,
//!   the rows, `XA END …`, then XA_PREPARE_LOG_EVENT. The outcome is a group
//!   of its own: a GTID event with `FL_COMPLETED_XA` and a Query
//!   `XA COMMIT …` or `XA ROLLBACK …`. `XA COMMIT … ONE PHASE` is written as
//!   an ordinary transaction.
//! - MySQL: Query `XA START …`, the rows, `XA END …`, XA_PREPARE_LOG_EVENT;
//!   the outcome a Query of its own. `XA COMMIT … ONE PHASE` is the same
//!   group ending with an XA_PREPARE_LOG_EVENT whose `one_phase` is 1: the
//!   commit itself.

use std::fmt::Write as _;
use std::sync::Arc;

/// Longest gtrid and bqual (MySQL's and MariaDB's `MAXGTRIDSIZE`, `MAXBQUALSIZE`).
pub(crate) const MAX_PART: usize = 64;

/// An XA transaction identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Xid {
    /// The global transaction id.
    pub gtrid: Vec<u8>,
    /// The branch qualifier.
    pub bqual: Vec<u8>,
    /// The format id (1 unless the application says otherwise).
    pub format_id: u32,
}

impl Xid {
    /// `X'gtrid',X'bqual',formatID`, the form both servers print.
    pub(crate) fn canonical(&self) -> String {
        let mut s = String::with_capacity(12 + 2 * (self.gtrid.len() + self.bqual.len()));
        for (i, part) in [&self.gtrid, &self.bqual].into_iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str("X'");
            for b in part.iter() {
                let _ = write!(s, "{b:02x}");
            }
            s.push('\'');
        }
        let _ = write!(s, ",{}", self.format_id);
        s
    }

    /// From `formatID, gtrid length, bqual length, data`; lengths are checked.
    fn from_parts(
        format_id: u32,
        gtrid_len: usize,
        bqual_len: usize,
        data: &[u8],
    ) -> Result<Xid, String> {
        if gtrid_len > MAX_PART || bqual_len > MAX_PART {
            return Err(format!(
                "xid lengths {gtrid_len} and {bqual_len} exceed {MAX_PART} bytes"
            ));
        }
        let Some(bytes) = data.get(..gtrid_len + bqual_len) else {
            return Err(format!(
                "xid of {} bytes announced, {} present",
                gtrid_len + bqual_len,
                data.len()
            ));
        };
        Ok(Xid {
            gtrid: bytes[..gtrid_len].to_vec(),
            bqual: bytes[gtrid_len..].to_vec(),
            format_id,
        })
    }
}

/// The body of an XA_PREPARE_LOG_EVENT (after its post-header, which is
/// empty in every server so far): `one_phase` (1 byte), formatID (4),
/// gtrid_length (4), bqual_length (4), then gtrid and bqual. Returns
/// `(one_phase, xid)`.
pub(crate) fn parse_prepare(body: &[u8]) -> Result<(bool, Xid), String> {
    let u32_at = |at: usize| -> Result<u32, String> {
        body.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| format!("XA_PREPARE event too short ({} bytes)", body.len()))
    };
    let one_phase = *body.first().ok_or("XA_PREPARE event is empty")? != 0;
    let format_id = u32_at(1)?;
    let gtrid_len = u32_at(5)? as usize;
    let bqual_len = u32_at(9)? as usize;
    let xid = Xid::from_parts(format_id, gtrid_len, bqual_len, &body[13..])
        .map_err(|e| format!("XA_PREPARE event: {e}"))?;
    Ok((one_phase, xid))
}

/// The xid in a MariaDB GTID event flagged `FL_PREPARED_XA` or
/// `FL_COMPLETED_XA`, at `rest` (after the commit id, if any): formatID (4),
/// gtrid length (1), bqual length (1), data.
pub(crate) fn parse_maria_gtid_xid(rest: &[u8]) -> Result<Xid, String> {
    let (Some(f), Some(&g), Some(&b)) = (rest.get(0..4), rest.get(4), rest.get(5)) else {
        return Err("MariaDB GTID event: XA xid truncated".into());
    };
    let format_id = u32::from_le_bytes([f[0], f[1], f[2], f[3]]);
    Xid::from_parts(format_id, usize::from(g), usize::from(b), &rest[6..])
        .map_err(|e| format!("MariaDB GTID event: {e}"))
}

/// The xid of an `XA START|BEGIN|END|PREPARE|COMMIT|ROLLBACK xid …`
/// statement (comments before `XA` are allowed). The servers write it as
/// `X'…',X'…',N`; quoted strings and `0x…` are read too.
pub(crate) fn parse_statement_xid(sql: &str) -> Result<Xid, String> {
    let mut p = SqlXid::new(skip_comments(sql));
    p.keyword("XA")?;
    p.word()?; // START, COMMIT, ...
    let gtrid = p.string()?;
    let (mut bqual, mut format_id) = (Vec::new(), 1u32);
    if p.comma() {
        bqual = p.string()?;
        if p.comma() {
            format_id = p.number()?;
        }
    }
    if gtrid.len() > MAX_PART || bqual.len() > MAX_PART {
        return Err(format!("xid parts longer than {MAX_PART} bytes"));
    }
    Ok(Xid {
        gtrid,
        bqual,
        format_id,
    })
}

/// Whether `sql` is an `XA …` statement (cheap: no allocation, as it is
/// asked of every `BEGIN`).
pub(crate) fn is_xa_statement(sql: &str) -> bool {
    let b = skip_comments(sql).as_bytes();
    b.len() > 3 && b[..2].eq_ignore_ascii_case(b"XA") && b[2].is_ascii_whitespace()
}

/// Whether an `XA COMMIT` statement ends with `ONE PHASE`.
pub(crate) fn is_one_phase(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split_whitespace()
        .rev()
        .take(2)
        .map(|w| w.trim_end_matches(';').to_ascii_uppercase())
        .collect();
    words.len() == 2 && words[0] == "PHASE" && words[1] == "ONE"
}

fn skip_comments(sql: &str) -> &str {
    let mut s = sql.trim_start();
    loop {
        if let Some(rest) = s.strip_prefix("/*") {
            match rest.find("*/") {
                Some(end) => s = rest[end + 2..].trim_start(),
                None => return "",
            }
        } else if s.starts_with("--") || s.starts_with('#') {
            match s.find('\n') {
                Some(end) => s = s[end + 1..].trim_start(),
                None => return "",
            }
        } else {
            return s;
        }
    }
}

/// A tiny reader for the xid grammar of XA statements.
struct SqlXid<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> SqlXid<'a> {
    fn new(s: &'a str) -> Self {
        SqlXid {
            s: s.as_bytes(),
            i: 0,
        }
    }

    fn skip_space(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn word(&mut self) -> Result<&'a [u8], String> {
        self.skip_space();
        let start = self.i;
        while self.s.get(self.i).is_some_and(u8::is_ascii_alphabetic) {
            self.i += 1;
        }
        if start == self.i {
            return Err("a keyword is missing".into());
        }
        Ok(&self.s[start..self.i])
    }

    fn keyword(&mut self, want: &str) -> Result<(), String> {
        let w = self.word()?;
        if !w.eq_ignore_ascii_case(want.as_bytes()) {
            return Err(format!("expected {want}"));
        }
        Ok(())
    }

    fn comma(&mut self) -> bool {
        self.skip_space();
        if self.s.get(self.i) == Some(&b',') {
            self.i += 1;
            return true;
        }
        false
    }

    fn number(&mut self) -> Result<u32, String> {
        self.skip_space();
        let start = self.i;
        while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
            // The servers keep the format id in 4 bytes.
            .map(|n| n as u32)
            .ok_or_else(|| "the format id is not a number".to_string())
    }

    /// `X'hex'`, `0xhex`, `'text'` or `"text"` (with a `_charset` introducer or not).
    fn string(&mut self) -> Result<Vec<u8>, String> {
        self.skip_space();
        let rest = &self.s[self.i..];
        if rest.first() == Some(&b'_') {
            // _utf8mb4'…': the introducer changes nothing about the bytes.
            while self
                .s
                .get(self.i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
            {
                self.i += 1;
            }
            return self.quoted();
        }
        match rest {
            [b'x' | b'X', b'\'', ..] => {
                self.i += 2;
                let end = rest[2..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .ok_or("unterminated X'…' literal")?;
                let hex = &rest[2..2 + end];
                self.i += end + 1;
                unhex(hex)
            }
            [b'0', b'x' | b'X', ..] => {
                self.i += 2;
                let start = self.i;
                while self.s.get(self.i).is_some_and(u8::is_ascii_hexdigit) {
                    self.i += 1;
                }
                unhex(&self.s[start..self.i])
            }
            _ => self.quoted(),
        }
    }

    fn quoted(&mut self) -> Result<Vec<u8>, String> {
        let q = match self.s.get(self.i) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => return Err("expected a quoted xid".into()),
        };
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = *self.s.get(self.i).ok_or("unterminated quoted xid")?;
            self.i += 1;
            if c == q {
                if self.s.get(self.i) == Some(&q) {
                    out.push(q);
                    self.i += 1;
                    continue;
                }
                return Ok(out);
            }
            if c == b'\\' {
                let e = *self.s.get(self.i).ok_or("unterminated quoted xid")?;
                self.i += 1;
                out.push(match e {
                    b'0' => 0,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 8,
                    b'Z' => 26,
                    other => other,
                });
                continue;
            }
            out.push(c);
        }
    }
}

fn unhex(hex: &[u8]) -> Result<Vec<u8>, String> {
    // An odd count has an implied leading 0 (as MySQL reads X'abc').
    let padded: Vec<u8> = if hex.len() % 2 == 1 {
        std::iter::once(b'0').chain(hex.iter().copied()).collect()
    } else {
        hex.to_vec()
    };
    padded
        .chunks(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "bad hex digits in the xid".to_string())
        })
        .collect()
}

/// Where an XA boundary was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XaAt {
    /// The canonical xid ([`Xid::canonical`]).
    pub xid: Arc<str>,
    /// The binlog file of the event.
    pub file: Arc<str>,
    /// The end position of the event in that file.
    pub pos: u64,
    /// The GTID of the event group, when the server has GTIDs.
    pub gtid: Option<Arc<str>>,
}

/// An XA boundary in the stream of [`super::decoder::Output`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XaEvent {
    /// The event group of an XA transaction begins: the changes up to the
    /// group's `Commit` are that transaction's. They are committed by that
    /// `Commit` unless a `Prepare` comes first (a one-phase commit has none).
    Start(XaAt),
    /// The XA transaction whose changes were just emitted is prepared, not
    /// committed: its outcome comes later, in a group of its own. The
    /// group's `Commit` follows (the binlog position moves past it).
    Prepare(XaAt),
    /// The outcome of a prepared XA transaction (in its own group, followed
    /// by the group's `Commit`); or, within an XA's own group, the rollback
    /// of that group's changes.
    Outcome {
        at: XaAt,
        /// `XA COMMIT` (true) or `XA ROLLBACK` (false).
        commit: bool,
    },
}

impl XaEvent {
    /// Where it was read.
    pub fn at(&self) -> &XaAt {
        match self {
            XaEvent::Start(at) | XaEvent::Prepare(at) | XaEvent::Outcome { at, .. } => at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The MySQL layout (libbinlogevents `XA_prepare_event`): one_phase,
    /// formatID, gtrid_length, bqual_length as 4-byte little-endian, data.
    fn mysql_prepare_body(one_phase: bool, format_id: u32, gtrid: &[u8], bqual: &[u8]) -> Vec<u8> {
        let mut b = vec![u8::from(one_phase)];
        b.extend_from_slice(&format_id.to_le_bytes());
        b.extend_from_slice(&(gtrid.len() as u32).to_le_bytes());
        b.extend_from_slice(&(bqual.len() as u32).to_le_bytes());
        b.extend_from_slice(gtrid);
        b.extend_from_slice(bqual);
        b
    }

    #[test]
    fn mysql_xa_prepare_layout() {
        let (one, xid) = parse_prepare(&mysql_prepare_body(false, 7, b"x2", b"bq")).expect("parse");
        assert!(!one);
        assert_eq!(xid.canonical(), "X'7832',X'6271',7");
        let (one, xid) = parse_prepare(&mysql_prepare_body(true, 1, b"abc", b"")).expect("parse");
        assert!(one, "XA COMMIT ... ONE PHASE");
        assert_eq!(xid.canonical(), "X'616263',X'',1");
        // The bytes MariaDB 10.11 wrote for XA PREPARE 'x1' (mariadb-binlog --hexdump).
        let maria = [0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, b'x', b'1'];
        assert_eq!(
            parse_prepare(&maria).expect("parse").1.canonical(),
            "X'7831',X'',1"
        );
        // Corrupt: truncated, too long, lengths beyond the data.
        assert!(parse_prepare(&[]).is_err());
        assert!(parse_prepare(&[0, 1, 0]).is_err());
        assert!(parse_prepare(&mysql_prepare_body(false, 1, &[b'a'; 65], b"")).is_err());
        let mut cut = mysql_prepare_body(false, 1, b"abcd", b"");
        cut.truncate(cut.len() - 1);
        assert!(parse_prepare(&cut).is_err());
        let mut huge = mysql_prepare_body(false, 1, b"", b"");
        huge[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_prepare(&huge).is_err());
    }

    #[test]
    fn maria_gtid_xid() {
        // formatID 7, gtrid "x2", bqual "bq" (from MariaDB 10.11's GTID event).
        let rest = [7, 0, 0, 0, 2, 2, b'x', b'2', b'b', b'q', 1, 0xff];
        assert_eq!(
            parse_maria_gtid_xid(&rest).expect("xid").canonical(),
            "X'7832',X'6271',7"
        );
        assert!(parse_maria_gtid_xid(&[7, 0, 0, 0, 9, 0, b'x']).is_err());
        assert!(parse_maria_gtid_xid(&[7, 0]).is_err());
    }

    #[test]
    fn statement_xids_match_the_binary_form() {
        let want = "X'7832',X'6271',7";
        for sql in [
            "XA COMMIT X'7832',X'6271',7",
            "xa rollback x'7832' , X'6271' , 7",
            "/* c */ XA COMMIT 'x2','bq',7",
            "XA PREPARE 0x7832,\"bq\",7",
            "XA END _utf8mb4'x2',_binary'bq',7",
        ] {
            assert_eq!(
                parse_statement_xid(sql).expect(sql).canonical(),
                want,
                "{sql}"
            );
        }
        assert_eq!(
            parse_statement_xid("XA COMMIT 'it''s\\'x' ONE PHASE")
                .expect("quoted")
                .gtrid,
            b"it's'x"
        );
        assert_eq!(
            parse_statement_xid("XA START 'a'")
                .expect("default")
                .canonical(),
            "X'61',X'',1"
        );
        assert_eq!(
            parse_statement_xid("XA START X'abc'").expect("odd").gtrid,
            vec![0x0a, 0xbc]
        );
        for bad in ["XA COMMIT", "XA COMMIT 'a", "XA COMMIT X'zz'", "COMMIT 'a'"] {
            assert!(parse_statement_xid(bad).is_err(), "{bad}");
        }
        assert!(is_one_phase("XA COMMIT 'a' one phase;"));
        assert!(is_xa_statement("/* x */ xa\tCOMMIT 'a'"));
        assert!(!is_xa_statement("XACT"));
        assert!(!is_xa_statement("BEGIN"));
        assert!(!is_one_phase("XA COMMIT 'a'"));
    }
}
