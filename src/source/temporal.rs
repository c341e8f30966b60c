//! Temporal column formats → JSON strings.
//!
//! DATE (3-byte packed), the 5.6+ DATETIME2 / TIMESTAMP2 / TIME2 formats with
//! 0..=6 fractional digits, the pre-5.6 DATETIME / TIMESTAMP / TIME integer
//! formats, and the packed 8-byte longlong forms used inside binary JSON.
//! Ports of MySQL `my_time.cc` (`my_datetime_packed_from_binary`,
//! `my_time_packed_from_binary`, `my_timestamp_from_binary`,
//! `TIME_from_longlong_*_packed`).

use super::bytes::{be_uint, le_uint, take, write_padded, Fault};

const DATETIMEF_INT_OFS: i64 = 0x80_0000_0000;
const TIMEF_INT_OFS: i64 = 0x80_0000;
const TIMEF_OFS: i64 = 0x8000_0000_0000;
const FRAC_BITS: u32 = 24;
const FRAC_MASK: u64 = (1 << FRAC_BITS) - 1;

/// Bytes of fractional-second storage for `fsp` digits.
fn frac_bytes(fsp: u8) -> usize {
    usize::from(fsp).div_ceil(2)
}

/// Signed big-endian integer of `n` (1..=3) bytes (mi_sintNkorr).
fn be_sint(input: &[u8], n: usize) -> Result<i64, Fault> {
    let v = be_uint(input, n)?;
    let shift = 64 - 8 * n as u32;
    Ok(((v << shift) as i64) >> shift)
}

/// Microseconds of a DATETIME2 / TIMESTAMP2 fraction stored in
/// `frac_bytes(fsp)` bytes, read as MySQL reads it (signed).
fn read_frac_signed(input: &[u8], fsp: u8) -> Result<i64, Fault> {
    Ok(match fsp {
        1 | 2 => be_sint(input, 1)? * 10_000,
        3 | 4 => be_sint(input, 2)? * 100,
        5 | 6 => be_sint(input, 3)?,
        _ => 0,
    })
}

fn check_usec(usec: u64) -> Result<u32, Fault> {
    if usec >= 1_000_000 {
        return Err(Fault::bad(format!("fraction {usec} µs is out of range")));
    }
    Ok(usec as u32)
}

/// "00" … "99": two digits per table lookup (dates and times are written
/// for every temporal value of every row).
const DIGITS2: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// The two digits of `v` (< 100).
fn two(v: u64) -> [u8; 2] {
    let i = (v % 100) as usize * 2;
    [DIGITS2[i], DIGITS2[i + 1]]
}

fn write_ymd(out: &mut Vec<u8>, y: u64, m: u64, d: u64) {
    if y < 10_000 && m < 100 && d < 100 {
        let ([a, b], [c, e], [f, g], [h, i]) = (two(y / 100), two(y), two(m), two(d));
        out.extend_from_slice(&[a, b, c, e, b'-', f, g, b'-', h, i]);
        return;
    }
    write_padded(out, y, 4);
    out.push(b'-');
    write_padded(out, m, 2);
    out.push(b'-');
    write_padded(out, d, 2);
}

fn write_hms(out: &mut Vec<u8>, h: u64, m: u64, s: u64) {
    if h < 100 && m < 100 && s < 100 {
        let ([a, b], [c, d], [e, f]) = (two(h), two(m), two(s));
        out.extend_from_slice(&[a, b, b':', c, d, b':', e, f]);
        return;
    }
    write_padded(out, h, 2);
    out.push(b':');
    write_padded(out, m, 2);
    out.push(b':');
    write_padded(out, s, 2);
}

/// ".ffffff" cut to exactly `fsp` digits (nothing for fsp 0).
fn write_frac(out: &mut Vec<u8>, usec: u32, fsp: u8) {
    if fsp == 0 {
        return;
    }
    let fsp = usize::from(fsp.min(6));
    if usec < 1_000_000 {
        // The first `fsp` of the six zero-padded digits (truncation, as
        // the server does).
        let u = u64::from(usec);
        let ([a, b], [c, d], [e, f]) = (two(u / 10_000), two(u / 100), two(u));
        let digits = [b'.', a, b, c, d, e, f];
        out.extend_from_slice(&digits[..=fsp]);
        return;
    }
    let div = 10u32.pow(6 - fsp as u32);
    out.push(b'.');
    write_padded(out, u64::from(usec / div), fsp);
}

/// DATE / NEWDATE: 3 bytes little-endian, day:5 month:4 year:15.
pub(crate) fn write_date(input: &[u8], out: &mut Vec<u8>) -> Result<usize, Fault> {
    let v = le_uint(input, 3)?;
    out.push(b'"');
    write_ymd(out, v >> 9, (v >> 5) & 15, v & 31);
    out.push(b'"');
    Ok(3)
}

/// Pre-5.6 TIME: 3 bytes little-endian signed integer ±HHMMSS.
pub(crate) fn write_time_v1(input: &[u8], out: &mut Vec<u8>) -> Result<usize, Fault> {
    let v = le_uint(input, 3)?;
    let v = ((v << 40) as i64) >> 40;
    let a = v.unsigned_abs();
    out.push(b'"');
    if v < 0 {
        out.push(b'-');
    }
    write_hms(out, a / 10_000, (a / 100) % 100, a % 100);
    out.push(b'"');
    Ok(3)
}

/// Pre-5.6 DATETIME: 8 bytes little-endian integer YYYYMMDDhhmmss.
pub(crate) fn write_datetime_v1(input: &[u8], out: &mut Vec<u8>) -> Result<usize, Fault> {
    let v = le_uint(input, 8)?;
    let d = v / 1_000_000;
    let t = v % 1_000_000;
    out.push(b'"');
    write_ymd(out, d / 10_000, (d / 100) % 100, d % 100);
    out.push(b' ');
    write_hms(out, t / 10_000, (t / 100) % 100, t % 100);
    out.push(b'"');
    Ok(8)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Unix seconds → "YYYY-MM-DDTHH:MM:SS[.f]Z"; 0 → MySQL's zero timestamp
/// "0000-00-00 00:00:00[.f]".
pub(crate) fn write_unix(out: &mut Vec<u8>, secs: u64, usec: u32, fsp: u8) {
    out.push(b'"');
    if secs == 0 {
        out.extend_from_slice(b"0000-00-00 00:00:00");
        write_frac(out, usec, fsp);
    } else {
        let (y, m, d) = civil_from_days(secs / 86_400);
        let rem = secs % 86_400;
        write_ymd(out, y, m, d);
        out.push(b'T');
        write_hms(out, rem / 3600, (rem / 60) % 60, rem % 60);
        write_frac(out, usec, fsp);
        out.push(b'Z');
    }
    out.push(b'"');
}

/// Pre-5.6 TIMESTAMP: 4 bytes little-endian unix seconds.
pub(crate) fn write_timestamp_v1(input: &[u8], out: &mut Vec<u8>) -> Result<usize, Fault> {
    let secs = le_uint(input, 4)?;
    write_unix(out, secs, 0, 0);
    Ok(4)
}

/// TIMESTAMP2: 4 bytes big-endian unix seconds + fraction.
pub(crate) fn write_timestamp2(input: &[u8], fsp: u8, out: &mut Vec<u8>) -> Result<usize, Fault> {
    let n = 4 + frac_bytes(fsp);
    let raw = take(input, n)?;
    let secs = be_uint(raw, 4)?;
    let frac = raw.get(4..).unwrap_or(&[]);
    let usec = match fsp {
        1 | 2 => be_uint(frac, 1)? * 10_000,
        3 | 4 => be_uint(frac, 2)? * 100,
        5 | 6 => be_uint(frac, 3)?,
        _ => 0,
    };
    let usec = check_usec(usec)?;
    write_unix(out, secs, usec, fsp);
    Ok(n)
}

/// A packed datetime longlong (intpart << 24 | µs) → "YYYY-MM-DD" when
/// `date_only`, else "YYYY-MM-DD HH:MM:SS[.f]" with exactly `fsp` digits.
pub(crate) fn write_datetime_packed(
    out: &mut Vec<u8>,
    packed: i64,
    fsp: u8,
    date_only: bool,
) -> Result<(), Fault> {
    if packed < 0 {
        return Err(Fault::bad(format!("negative packed datetime {packed}")));
    }
    let tmp = packed as u64;
    let usec = check_usec(tmp & FRAC_MASK)?;
    let ymdhms = tmp >> FRAC_BITS;
    let ymd = ymdhms >> 17;
    let ym = ymd >> 5;
    let hms = ymdhms % (1 << 17);
    out.push(b'"');
    write_ymd(out, ym / 13, ym % 13, ymd % (1 << 5));
    if !date_only {
        out.push(b' ');
        write_hms(out, hms >> 12, (hms >> 6) % (1 << 6), hms % (1 << 6));
        write_frac(out, usec, fsp);
    }
    out.push(b'"');
    Ok(())
}

/// DATETIME2: 5 bytes big-endian (offset 0x8000000000) + fraction.
pub(crate) fn write_datetime2(input: &[u8], fsp: u8, out: &mut Vec<u8>) -> Result<usize, Fault> {
    let n = 5 + frac_bytes(fsp);
    let raw = take(input, n)?;
    let intpart = be_uint(raw, 5)? as i64 - DATETIMEF_INT_OFS;
    let frac = read_frac_signed(raw.get(5..).unwrap_or(&[]), fsp)?;
    let packed = intpart
        .checked_mul(1 << FRAC_BITS)
        .and_then(|v| v.checked_add(frac))
        .ok_or_else(|| Fault::bad("packed datetime overflows"))?;
    write_datetime_packed(out, packed, fsp, false)?;
    Ok(n)
}

/// A packed time longlong (±(hms << 24 | µs)) → "[-]HH:MM:SS[.f]".
pub(crate) fn write_time_packed(out: &mut Vec<u8>, packed: i64, fsp: u8) -> Result<(), Fault> {
    let tmp = packed.unsigned_abs();
    let usec = check_usec(tmp & FRAC_MASK)?;
    let hms = tmp >> FRAC_BITS;
    out.push(b'"');
    if packed < 0 {
        out.push(b'-');
    }
    write_hms(
        out,
        (hms >> 12) % (1 << 10),
        (hms >> 6) % (1 << 6),
        hms % (1 << 6),
    );
    write_frac(out, usec, fsp);
    out.push(b'"');
    Ok(())
}

/// TIME2: 3 bytes big-endian (offset 0x800000) + fraction; negative values
/// with a fraction store the fraction complemented (my_time_packed_from_binary).
pub(crate) fn write_time2(input: &[u8], fsp: u8, out: &mut Vec<u8>) -> Result<usize, Fault> {
    let n = 3 + frac_bytes(fsp);
    let raw = take(input, n)?;
    let packed: i64 = match fsp {
        1..=4 => {
            let mut intpart = be_uint(raw, 3)? as i64 - TIMEF_INT_OFS;
            let fb = frac_bytes(fsp);
            let mut frac = be_uint(raw.get(3..).unwrap_or(&[]), fb)? as i64;
            if intpart < 0 && frac != 0 {
                // Shift to the next integer value and take -(0x100.. - frac).
                intpart += 1;
                frac -= 1 << (8 * fb);
            }
            let scale = if fb == 1 { 10_000 } else { 100 };
            (intpart << FRAC_BITS) + frac * scale
        }
        5 | 6 => be_uint(raw, 6)? as i64 - TIMEF_OFS,
        _ => (be_uint(raw, 3)? as i64 - TIMEF_INT_OFS) << FRAC_BITS,
    };
    write_time_packed(out, packed, fsp)?;
    Ok(n)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(out: Vec<u8>) -> String {
        String::from_utf8(out).unwrap()
    }

    // ---- test encoders, from MySQL my_time.cc ----

    fn pack_frac_part(nr: i64) -> i64 {
        nr % (1 << 24) // C remainder: keeps the sign
    }

    fn pack_int_part(nr: i64) -> i64 {
        nr >> 24 // arithmetic shift
    }

    /// TIME_to_longlong_time_packed.
    pub(crate) fn time_packed(neg: bool, h: i64, m: i64, s: i64, us: i64) -> i64 {
        let hms = (h << 12) | (m << 6) | s;
        let v = (hms << 24) + us;
        if neg {
            -v
        } else {
            v
        }
    }

    /// TIME_to_longlong_datetime_packed.
    pub(crate) fn datetime_packed(
        y: i64,
        mo: i64,
        d: i64,
        h: i64,
        mi: i64,
        s: i64,
        us: i64,
    ) -> i64 {
        let ymd = ((y * 13 + mo) << 5) | d;
        let hms = (h << 12) | (mi << 6) | s;
        (((ymd << 17) | hms) << 24) + us
    }

    fn be(v: i64, n: usize) -> Vec<u8> {
        v.to_be_bytes()[8 - n..].to_vec()
    }

    /// my_time_packed_to_binary.
    pub(crate) fn time2_bin(nr: i64, fsp: u8) -> Vec<u8> {
        let mut v = be(TIMEF_INT_OFS + pack_int_part(nr), 3);
        match fsp {
            1 | 2 => v.push((pack_frac_part(nr) / 10_000) as i8 as u8),
            3 | 4 => v.extend(be(pack_frac_part(nr) / 100, 2)),
            5 | 6 => v = be(nr + TIMEF_OFS, 6),
            _ => {}
        }
        v
    }

    /// my_datetime_packed_to_binary.
    pub(crate) fn datetime2_bin(nr: i64, fsp: u8) -> Vec<u8> {
        let mut v = be(DATETIMEF_INT_OFS + pack_int_part(nr), 5);
        match fsp {
            1 | 2 => v.push((pack_frac_part(nr) / 10_000) as i8 as u8),
            3 | 4 => v.extend(be(pack_frac_part(nr) / 100, 2)),
            5 | 6 => v.extend(be(pack_frac_part(nr), 3)),
            _ => {}
        }
        v
    }

    /// my_timestamp_to_binary.
    pub(crate) fn timestamp2_bin(secs: u32, usec: u32, fsp: u8) -> Vec<u8> {
        let mut v = secs.to_be_bytes().to_vec();
        match fsp {
            1 | 2 => v.push((usec / 10_000) as u8),
            3 | 4 => v.extend(be(i64::from(usec / 100), 2)),
            5 | 6 => v.extend(be(i64::from(usec), 3)),
            _ => {}
        }
        v
    }

    fn time2(nr: i64, fsp: u8) -> String {
        let b = time2_bin(nr, fsp);
        let mut out = Vec::new();
        assert_eq!(write_time2(&b, fsp, &mut out).unwrap(), b.len());
        s(out)
    }

    #[test]
    fn time2_values() {
        assert_eq!(time2(time_packed(false, 0, 0, 0, 0), 0), "\"00:00:00\"");
        assert_eq!(
            time2(time_packed(true, 838, 59, 59, 0), 0),
            "\"-838:59:59\""
        );
        assert_eq!(
            time2(time_packed(false, 838, 59, 59, 0), 0),
            "\"838:59:59\""
        );
        // corpus time_issue.000001: -507:48:27
        assert_eq!(
            time2(time_packed(true, 507, 48, 27, 0), 0),
            "\"-507:48:27\""
        );
        assert_eq!(
            time2(time_packed(true, 0, 0, 1, 500_000), 1),
            "\"-00:00:01.5\""
        );
        assert_eq!(
            time2(time_packed(true, 0, 0, 1, 500_000), 2),
            "\"-00:00:01.50\""
        );
        assert_eq!(
            time2(time_packed(true, 0, 0, 0, 500_000), 1),
            "\"-00:00:00.5\""
        );
        assert_eq!(time2(time_packed(true, 0, 0, 1, 0), 2), "\"-00:00:01.00\"");
        assert_eq!(
            time2(time_packed(true, 0, 0, 1, 1_000), 3),
            "\"-00:00:01.001\""
        );
        assert_eq!(
            time2(time_packed(true, 0, 0, 1, 999_900), 4),
            "\"-00:00:01.9999\""
        );
        assert_eq!(
            time2(time_packed(true, 12, 34, 56, 123_456), 6),
            "\"-12:34:56.123456\""
        );
        assert_eq!(
            time2(time_packed(true, 838, 59, 59, 0), 6),
            "\"-838:59:59.000000\""
        );
        assert_eq!(
            time2(time_packed(false, 15, 22, 33, 670_000), 2),
            "\"15:22:33.67\""
        );
        assert_eq!(
            time2(time_packed(false, 100, 0, 0, 10), 5),
            "\"100:00:00.00001\""
        );
    }

    #[test]
    fn time2_known_bytes() {
        // -00:00:01.5 TIME(1): intpart -2 → 0x7ffffe, frac (char)-50 = 0xce.
        assert_eq!(
            time2_bin(time_packed(true, 0, 0, 1, 500_000), 1),
            [0x7f, 0xff, 0xfe, 0xce]
        );
        // 00:00:00 TIME(0) = 0x800000.
        assert_eq!(time2_bin(0, 0), [0x80, 0, 0]);
    }

    fn datetime2(nr: i64, fsp: u8) -> String {
        let b = datetime2_bin(nr, fsp);
        let mut out = Vec::new();
        assert_eq!(write_datetime2(&b, fsp, &mut out).unwrap(), b.len());
        s(out)
    }

    #[test]
    fn datetime2_values() {
        assert_eq!(datetime2(0, 0), "\"0000-00-00 00:00:00\"");
        assert_eq!(datetime2(0, 3), "\"0000-00-00 00:00:00.000\"");
        assert_eq!(
            datetime2(datetime_packed(1988, 11, 27, 14, 12, 13, 345_000), 3),
            "\"1988-11-27 14:12:13.345\""
        );
        assert_eq!(
            datetime2(datetime_packed(9999, 12, 31, 23, 59, 59, 999_999), 6),
            "\"9999-12-31 23:59:59.999999\""
        );
        assert_eq!(
            datetime2(datetime_packed(1000, 1, 1, 0, 0, 0, 0), 0),
            "\"1000-01-01 00:00:00\""
        );
        assert_eq!(
            datetime2(datetime_packed(2020, 0, 0, 0, 0, 0, 0), 1),
            "\"2020-00-00 00:00:00.0\""
        );
        assert_eq!(
            datetime2(datetime_packed(2024, 2, 29, 1, 2, 3, 400_000), 1),
            "\"2024-02-29 01:02:03.4\""
        );
    }

    #[test]
    fn timestamp2_values() {
        let t = |secs, usec, fsp| {
            let b = timestamp2_bin(secs, usec, fsp);
            let mut out = Vec::new();
            assert_eq!(write_timestamp2(&b, fsp, &mut out).unwrap(), b.len());
            s(out)
        };
        assert_eq!(t(0, 0, 0), "\"0000-00-00 00:00:00\"");
        assert_eq!(t(0, 0, 3), "\"0000-00-00 00:00:00.000\"");
        assert_eq!(t(1, 0, 0), "\"1970-01-01T00:00:01Z\"");
        // 1985-10-13 13:22:23.567 UTC
        assert_eq!(t(498_057_743, 567_000, 3), "\"1985-10-13T13:22:23.567Z\"");
        assert_eq!(
            t(2_147_483_647, 999_999, 6),
            "\"2038-01-19T03:14:07.999999Z\""
        );
        assert_eq!(t(951_782_400, 50_000, 2), "\"2000-02-29T00:00:00.05Z\"");
        assert_eq!(t(u32::MAX, 0, 0), "\"2106-02-07T06:28:15Z\"");
    }

    #[test]
    fn old_formats() {
        let mut out = Vec::new();
        write_date(&[0, 0, 0], &mut out).unwrap();
        assert_eq!(s(std::mem::take(&mut out)), "\"0000-00-00\"");
        let v: u32 = (1985 << 9) | (10 << 5) | 23;
        write_date(&v.to_le_bytes()[..3], &mut out).unwrap();
        assert_eq!(s(std::mem::take(&mut out)), "\"1985-10-23\"");
        let v: u32 = 2020 << 9;
        write_date(&v.to_le_bytes()[..3], &mut out).unwrap();
        assert_eq!(s(std::mem::take(&mut out)), "\"2020-00-00\"");

        let v: i32 = -8_385_959;
        write_time_v1(&v.to_le_bytes()[..3], &mut out).unwrap();
        assert_eq!(s(std::mem::take(&mut out)), "\"-838:59:59\"");
        let v: i32 = 123_456;
        write_time_v1(&v.to_le_bytes()[..3], &mut out).unwrap();
        assert_eq!(s(std::mem::take(&mut out)), "\"12:34:56\"");

        let v: u64 = 19_881_127_141_213;
        write_datetime_v1(&v.to_le_bytes(), &mut out).unwrap();
        assert_eq!(s(std::mem::take(&mut out)), "\"1988-11-27 14:12:13\"");
        write_datetime_v1(&[0; 8], &mut out).unwrap();
        assert_eq!(s(std::mem::take(&mut out)), "\"0000-00-00 00:00:00\"");

        write_timestamp_v1(&1_000_000_000u32.to_le_bytes(), &mut out).unwrap();
        assert_eq!(s(std::mem::take(&mut out)), "\"2001-09-09T01:46:40Z\"");
        write_timestamp_v1(&[0; 4], &mut out).unwrap();
        assert_eq!(s(std::mem::take(&mut out)), "\"0000-00-00 00:00:00\"");
    }

    #[test]
    fn bad_fraction_is_error() {
        // TIMESTAMP2(6) with fraction 0xffffff µs.
        let mut out = Vec::new();
        assert!(matches!(
            write_timestamp2(&[0, 0, 0, 1, 0xff, 0xff, 0xff], 6, &mut out),
            Err(Fault::Bad(_))
        ));
    }

    proptest! {
        #[test]
        fn datetime2_random(y in 0i64..=9999, mo in 0i64..=12, d in 0i64..=31,
                            h in 0i64..=23, mi in 0i64..=59, sec in 0i64..=59,
                            us in 0i64..1_000_000, fsp in 0u8..=6) {
            let div = 10i64.pow(6 - u32::from(fsp));
            let us = us / div * div;
            let got = datetime2(datetime_packed(y, mo, d, h, mi, sec, us), fsp);
            let mut want = format!("\"{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{sec:02}");
            if fsp > 0 {
                want.push_str(&format!(".{:0w$}", us / div, w = usize::from(fsp)));
            }
            want.push('"');
            prop_assert_eq!(got, want);
        }

        #[test]
        fn time2_random(neg: bool, h in 0i64..=838, mi in 0i64..=59, sec in 0i64..=59,
                        us in 0i64..1_000_000, fsp in 0u8..=6) {
            let div = 10i64.pow(6 - u32::from(fsp));
            let us = us / div * div;
            let nr = time_packed(neg, h, mi, sec, us);
            let got = time2(nr, fsp);
            let sign = if neg && nr != 0 { "-" } else { "" };
            let mut want = format!("\"{sign}{h:02}:{mi:02}:{sec:02}");
            if fsp > 0 {
                want.push_str(&format!(".{:0w$}", us / div, w = usize::from(fsp)));
            }
            want.push('"');
            prop_assert_eq!(got, want);
        }

        #[test]
        fn truncated_never_panics(bytes: Vec<u8>, fsp in 0u8..=6) {
            let mut out = Vec::new();
            let _ = write_time2(&bytes, fsp, &mut out);
            let _ = write_datetime2(&bytes, fsp, &mut out);
            let _ = write_timestamp2(&bytes, fsp, &mut out);
            let _ = write_date(&bytes, &mut out);
            let _ = write_time_v1(&bytes, &mut out);
            let _ = write_datetime_v1(&bytes, &mut out);
            let _ = write_timestamp_v1(&bytes, &mut out);
        }
    }
}
