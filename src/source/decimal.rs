//! DECIMAL (MYSQL_TYPE_NEWDECIMAL) binary format → exact decimal text.
//!
//! Port of MySQL `bin2decimal` (strings/decimal.cc): digits are stored in
//! base-10^9 groups of 4 bytes big-endian, the leading and trailing partial
//! groups in 1..4 bytes; negative values have all bits inverted; the top bit
//! of the first byte is flipped so that the binary form sorts. The output
//! always has exactly `scale` fraction digits.

use super::bytes::{take, Fault};

/// Largest precision MySQL's decimal code accepts (DECIMAL_MAX_POSSIBLE_PRECISION).
pub(crate) const MAX_PRECISION: usize = 81;

const DIG_PER_DEC: usize = 9;
const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
pub(crate) use super::bytes::POW10;

/// Bytes taken by DECIMAL(precision, scale); caller ensures scale ≤ precision.
pub(crate) fn bin_size(precision: u8, scale: u8) -> usize {
    let intg = usize::from(precision.saturating_sub(scale));
    let frac = usize::from(scale);
    (intg / DIG_PER_DEC) * 4
        + DIG2BYTES[intg % DIG_PER_DEC]
        + (frac / DIG_PER_DEC) * 4
        + DIG2BYTES[frac % DIG_PER_DEC]
}

/// Digits buffer: MAX_PRECISION digits at most.
struct Digits {
    buf: [u8; MAX_PRECISION + 9],
    len: usize,
}

impl Digits {
    /// Append `v` as exactly `width` digits; `v` must be < 10^width.
    fn push_group(&mut self, v: u32, width: usize) -> Result<(), Fault> {
        if width > DIG_PER_DEC || v >= POW10[width] {
            return Err(Fault::bad(format!(
                "digit group {v} does not fit in {width} digits"
            )));
        }
        let end = self.len + width;
        let slot = self
            .buf
            .get_mut(self.len..end)
            .ok_or_else(|| Fault::bad("too many digits"))?;
        let mut v = v;
        for d in slot.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        self.len = end;
        Ok(())
    }
}

/// Decode DECIMAL(precision, scale) at the start of `input` into `out`,
/// quoted as a JSON string when `quoted`. Returns the bytes consumed.
pub(crate) fn write_decimal(
    input: &[u8],
    precision: u8,
    scale: u8,
    quoted: bool,
    out: &mut Vec<u8>,
) -> Result<usize, Fault> {
    if precision == 0 || scale > precision || usize::from(precision) > MAX_PRECISION {
        return Err(Fault::bad(format!(
            "invalid precision/scale ({precision},{scale})"
        )));
    }
    let size = bin_size(precision, scale);
    let raw = take(input, size)?;
    let first = raw.first().copied().ok_or_else(|| Fault::bad("empty"))?;
    let negative = first & 0x80 == 0;
    let mask: u32 = if negative { u32::MAX } else { 0 };

    let intg = usize::from(precision - scale);
    let frac = usize::from(scale);
    let mut pos = 0usize;
    // Reads one group of `nbytes` big-endian bytes, undoing the sign
    // inversion and the flipped top bit of byte 0.
    let mut group = |nbytes: usize| -> Result<u32, Fault> {
        let b = raw
            .get(pos..pos + nbytes)
            .ok_or_else(|| Fault::bad("short group"))?;
        let mut v: u32 = 0;
        for (i, &x) in b.iter().enumerate() {
            let x = if pos + i == 0 { x ^ 0x80 } else { x };
            v = (v << 8) | u32::from(x);
        }
        let m = if nbytes == 4 {
            mask
        } else {
            mask & ((1u32 << (8 * nbytes)) - 1)
        };
        pos += nbytes;
        Ok(v ^ m)
    };

    let mut digits = Digits {
        buf: [b'0'; MAX_PRECISION + 9],
        len: 0,
    };
    let lead = intg % DIG_PER_DEC;
    if lead > 0 {
        let v = group(DIG2BYTES[lead])?;
        digits.push_group(v, lead)?;
    }
    for _ in 0..intg / DIG_PER_DEC {
        let v = group(4)?;
        digits.push_group(v, DIG_PER_DEC)?;
    }
    let int_len = digits.len;
    for _ in 0..frac / DIG_PER_DEC {
        let v = group(4)?;
        digits.push_group(v, DIG_PER_DEC)?;
    }
    let trail = frac % DIG_PER_DEC;
    if trail > 0 {
        let v = group(DIG2BYTES[trail])?;
        digits.push_group(v, trail)?;
    }

    let all = digits.buf.get(..digits.len).unwrap_or(&[]);
    let (int_digits, frac_digits) = all.split_at(int_len.min(all.len()));
    let int_digits = match int_digits.iter().position(|&d| d != b'0') {
        Some(p) => int_digits.get(p..).unwrap_or(b"0"),
        None => b"0",
    };
    let is_zero = all.iter().all(|&d| d == b'0');

    if quoted {
        out.push(b'"');
    }
    // MySQL never produces -0; if the bytes say so, print 0.
    if negative && !is_zero {
        out.push(b'-');
    }
    out.extend_from_slice(int_digits);
    if !frac_digits.is_empty() {
        out.push(b'.');
        out.extend_from_slice(frac_digits);
    }
    if quoted {
        out.push(b'"');
    }
    Ok(size)
}

/// MySQL `decimal2bin`: the binary form of DECIMAL(precision, scale) for a
/// plain decimal text as the server prints it (`-12.50`: optional minus,
/// digits, optional `.` and at most `scale` digits). The inverse of
/// [`write_decimal`], used to render values read by a SELECT through the
/// same code as the binlog's; text that does not fit is an error, never
/// rounded.
pub(crate) fn encode_text(text: &str, precision: u8, scale: u8) -> Result<Vec<u8>, String> {
    let bad = || format!("`{text}` is not a DECIMAL({precision},{scale}) value");
    if precision == 0 || scale > precision || usize::from(precision) > MAX_PRECISION {
        return Err(bad());
    }
    let (neg, body) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (ip, fp) = body.split_once('.').unwrap_or((body, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if ip.is_empty() || !digits(ip) || !digits(fp) {
        return Err(bad());
    }
    let intg = usize::from(precision - scale);
    let frac = usize::from(scale);
    let ip = ip.trim_start_matches('0');
    if ip.len() > intg || fp.len() > frac {
        return Err(bad());
    }
    // Zero-padded to exactly intg and frac digits.
    let mut all = Vec::with_capacity(intg + frac);
    all.resize(intg - ip.len(), b'0');
    all.extend_from_slice(ip.as_bytes());
    all.extend_from_slice(fp.as_bytes());
    all.resize(intg + frac, b'0');
    let mut out = Vec::with_capacity(bin_size(precision, scale));
    let mut push = |group: &[u8], nbytes: usize| {
        let v = group
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
        let v = if neg { !v } else { v };
        out.extend_from_slice(&v.to_be_bytes()[4 - nbytes..]);
    };
    let (int_digits, frac_digits) = all.split_at(intg);
    let lead = intg % DIG_PER_DEC;
    push(&int_digits[..lead], DIG2BYTES[lead]);
    for g in int_digits[lead..].chunks(DIG_PER_DEC) {
        push(g, 4);
    }
    let full = frac / DIG_PER_DEC * DIG_PER_DEC;
    for g in frac_digits[..full].chunks(DIG_PER_DEC) {
        push(g, 4);
    }
    let trail = frac % DIG_PER_DEC;
    push(&frac_digits[full..], DIG2BYTES[trail]);
    match out.first_mut() {
        Some(b) => *b ^= 0x80,
        None => return Err(bad()),
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Test encoder: MySQL `decimal2bin` for a plain decimal string
    /// ("-12.5"), rounding is not supported (the string must fit).
    pub(crate) fn encode(s: &str, precision: u8, scale: u8) -> Vec<u8> {
        let (neg, s) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let (ip, fp) = s.split_once('.').unwrap_or((s, ""));
        let intg = usize::from(precision - scale);
        let frac = usize::from(scale);
        assert!(ip.len() <= intg.max(1) && fp.len() <= frac, "{s} too wide");
        let ip = format!("{:0>width$}", ip, width = intg);
        let ip = &ip[ip.len() - intg..];
        let fp = format!("{:0<width$}", fp, width = frac);
        let mut out = Vec::new();
        let mut push = |digits: &str, nbytes: usize| {
            let v: u32 = if digits.is_empty() {
                0
            } else {
                digits.parse().unwrap()
            };
            let v = if neg { !v } else { v };
            let be = v.to_be_bytes();
            out.extend_from_slice(&be[4 - nbytes..]);
        };
        let lead = intg % 9;
        if lead > 0 {
            push(&ip[..lead], DIG2BYTES[lead]);
        }
        for i in 0..intg / 9 {
            push(&ip[lead + 9 * i..lead + 9 * i + 9], 4);
        }
        for i in 0..frac / 9 {
            push(&fp[9 * i..9 * i + 9], 4);
        }
        let trail = frac % 9;
        if trail > 0 {
            push(&fp[frac - trail..], DIG2BYTES[trail]);
        }
        out[0] ^= 0x80;
        assert_eq!(out.len(), bin_size(precision, scale));
        out
    }

    #[test]
    fn encode_text_is_the_inverse() {
        for (text, p, s) in [
            ("12.50", 10, 2),
            ("-0.01", 10, 2),
            ("0.00", 10, 2),
            ("7", 5, 0),
            ("-123456789012.345678901", 30, 9),
            (
                "99999999999999999999999999999999999.999999999999999999999999999999",
                65,
                30,
            ),
        ] {
            let bin = encode_text(text, p, s).expect("fits");
            assert_eq!(bin, encode(text, p, s), "{text}");
            assert_eq!(dec(&bin, p, s, false).unwrap().0, text);
        }
        assert!(encode_text("123.4", 3, 1).is_err());
        assert!(encode_text("1.234", 5, 2).is_err());
        assert!(encode_text("1e5", 5, 0).is_err());
        assert!(encode_text("", 5, 0).is_err());
        assert!(encode_text("-", 5, 0).is_err());
    }

    fn dec(bytes: &[u8], p: u8, s: u8, quoted: bool) -> Result<(String, usize), Fault> {
        let mut out = Vec::new();
        let n = write_decimal(bytes, p, s, quoted, &mut out)?;
        Ok((String::from_utf8(out).unwrap(), n))
    }

    #[test]
    fn known_bytes_from_corpus() {
        // boxercrab 31_update_rows_v2: DECIMAL(10,4) 3.0000 and 4.0000.
        assert_eq!(
            dec(&[128, 0, 3, 0, 0], 10, 4, true).unwrap(),
            ("\"3.0000\"".into(), 5)
        );
        assert_eq!(
            dec(&[128, 0, 4, 0, 0], 10, 4, false).unwrap(),
            ("4.0000".into(), 5)
        );
        // MySQL manual example: 1234567890.1234 as DECIMAL(14,4).
        assert_eq!(
            encode("1234567890.1234", 14, 4),
            vec![0x81, 0x0D, 0xFB, 0x38, 0xD2, 0x04, 0xD2]
        );
        // and its negation.
        assert_eq!(
            encode("-1234567890.1234", 14, 4),
            vec![0x7E, 0xF2, 0x04, 0xC7, 0x2D, 0xFB, 0x2D]
        );
    }

    #[test]
    fn exact_text() {
        for (s, p, sc, want) in [
            ("12.5", 10, 2, "12.50"),
            ("-0.001", 10, 3, "-0.001"),
            ("0", 10, 2, "0.00"),
            ("-0.5", 5, 2, "-0.50"),
            ("0.1", 10, 5, "0.10000"),
            ("7", 1, 0, "7"),
            ("-7", 1, 0, "-7"),
            ("123456789", 9, 0, "123456789"),
            ("-1234567890", 10, 0, "-1234567890"),
            ("0.123456789", 9, 9, "0.123456789"),
            ("-0.000000001", 12, 9, "-0.000000001"),
            ("-0.000000001", 30, 10, "-0.0000000010"),
        ] {
            let b = encode(s, p, sc);
            assert_eq!(dec(&b, p, sc, false).unwrap().0, want, "{s} ({p},{sc})");
        }
    }

    #[test]
    fn extremes_65_30() {
        let max = format!("{}.{}", "9".repeat(35), "9".repeat(30));
        let b = encode(&max, 65, 30);
        assert_eq!(b.len(), 30);
        assert_eq!(dec(&b, 65, 30, false).unwrap(), (max.clone(), 30));
        let min = format!("-{max}");
        let b = encode(&min, 65, 30);
        assert_eq!(dec(&b, 65, 30, true).unwrap().0, format!("\"{min}\""));
        let tiny = format!("-0.{}1", "0".repeat(29));
        let b = encode(&tiny, 65, 30);
        assert_eq!(dec(&b, 65, 30, false).unwrap().0, tiny);
        let zero = format!("0.{}", "0".repeat(30));
        let b = encode("0", 65, 30);
        assert_eq!(dec(&b, 65, 30, false).unwrap().0, zero);
    }

    #[test]
    fn negative_zero_prints_zero() {
        // All digits zero but the sign bit says negative.
        let b = [0x7f, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(dec(&b, 10, 4, false).unwrap().0, "0.0000");
    }

    #[test]
    fn corrupt_group_is_error() {
        // A 4-byte group of 0xffffffff (after sign handling) is > 999999999.
        let b = [0x80 ^ 0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(dec(&b, 9, 0, false), Err(Fault::Bad(_))));
    }

    #[test]
    fn truncated() {
        let b = encode("12.5", 10, 2);
        for n in 0..b.len() {
            assert_eq!(
                dec(&b[..n], 10, 2, false),
                Err(Fault::Short {
                    have: n,
                    need: b.len()
                })
            );
        }
    }

    proptest! {
        #[test]
        fn roundtrip(p in 1u8..=65, s_frac in 0u8..=30, neg: bool, seed: Vec<u8>) {
            let s = s_frac.min(p);
            let intg = usize::from(p - s);
            let digit = |i: usize| (b'0' + seed.get(i).copied().unwrap_or(7) % 10) as char;
            let ip: String = (0..intg).map(digit).collect();
            let fp: String = (0..usize::from(s)).map(|i| digit(i + 100)).collect();
            let ip_trim = ip.trim_start_matches('0');
            let ip_trim = if ip_trim.is_empty() { "0" } else { ip_trim };
            let text = if s > 0 { format!("{ip_trim}.{fp}") } else { ip_trim.to_string() };
            let is_zero = text.bytes().all(|c| c == b'0' || c == b'.');
            let signed = if neg { format!("-{text}") } else { text.clone() };
            let want = if neg && !is_zero { signed.clone() } else { text.clone() };
            let b = encode(&signed, p, s);
            prop_assert_eq!(dec(&b, p, s, false).unwrap(), (want, b.len()));
        }
    }
}
