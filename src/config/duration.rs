//! Go-syntax durations (`30s`, `1m30s`, `1.5h`, `100ms`), as parsed by Go's `time.ParseDuration`.

use std::time::Duration;

/// Why a duration string was rejected. Display is a short human sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("duration `{0}` has no unit; write it like \"{0}s\" (units: ns, us, ms, s, m, h)")]
    MissingUnit(String),
    #[error("invalid duration `{0}`; expected e.g. \"30s\", \"100ms\", \"1m30s\" or \"1.5h\"")]
    Invalid(String),
    #[error("unknown unit `{unit}` in duration `{text}` (units: ns, us, ms, s, m, h)")]
    UnknownUnit { unit: String, text: String },
    #[error("duration `{0}` must not be negative")]
    Negative(String),
    #[error("duration `{0}` is too large")]
    Overflow(String),
}

/// Parses a Go duration string. A bare `0` is accepted (as in Go); any other
/// number needs a unit. Negative durations are rejected.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let (negative, mut rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(DurationError::Invalid(s.to_owned()));
    }
    if rest.bytes().all(|b| b.is_ascii_digit() || b == b'.') && rest != "." {
        return Err(DurationError::MissingUnit(s.to_owned()));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        // Number: integer part, optional fraction.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(DurationError::Invalid(s.to_owned()));
        }
        // Unit: everything up to the next digit or dot.
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(s.to_owned()));
        }
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => {
                return Err(DurationError::UnknownUnit {
                    unit: unit.to_owned(),
                    text: s.to_owned(),
                })
            }
        };
        let overflow = || DurationError::Overflow(s.to_owned());
        let int_value: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| overflow())?
        };
        let mut nanos = int_value.checked_mul(scale).ok_or_else(overflow)?;
        // Fraction: accumulate digit by digit, truncating like Go does.
        let mut divisor: u128 = 1;
        let mut frac_value: u128 = 0;
        for digit in frac_part.bytes() {
            if divisor > scale {
                break;
            }
            frac_value = frac_value * 10 + u128::from(digit - b'0');
            divisor *= 10;
        }
        nanos += frac_value * scale / divisor;
        total = total.checked_add(nanos).ok_or_else(overflow)?;
        if total > u128::from(u64::MAX) {
            return Err(overflow());
        }
    }
    if negative && total != 0 {
        return Err(DurationError::Negative(s.to_owned()));
    }
    let total = u64::try_from(total).map_err(|_| DurationError::Overflow(s.to_owned()))?;
    Ok(Duration::from_nanos(total))
}

/// `d` in Go syntax, largest whole unit first: `0s`, `1ms`, `1m30s`, `24h`.
pub(crate) fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let mut nanos = d.as_nanos();
    let mut out = String::new();
    for (unit, size) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        if nanos >= size {
            out.push_str(&format!("{}{unit}", nanos / size));
            nanos %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Duration {
        match parse_duration(text) {
            Ok(d) => d,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    #[test]
    fn simple_units() {
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("100ms"), Duration::from_millis(100));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("2h"), Duration::from_secs(7200));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("7us"), Duration::from_micros(7));
        assert_eq!(ok("7µs"), Duration::from_micros(7));
        assert_eq!(ok("7μs"), Duration::from_micros(7));
    }

    #[test]
    fn compound_and_fractions() {
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("2h45m"), Duration::from_secs(2 * 3600 + 45 * 60));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1h2m3s4ms"), Duration::from_millis(3_723_004));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("+1s"), Duration::from_secs(1));
    }

    #[test]
    fn rejects_bare_numbers_with_hint() {
        let err = parse_duration("30").unwrap_err();
        assert_eq!(err, DurationError::MissingUnit("30".into()));
        assert!(err.to_string().contains("\"30s\""), "{err}");
        assert!(matches!(
            parse_duration("1.5"),
            Err(DurationError::MissingUnit(_))
        ));
        assert!(matches!(
            parse_duration("1m30"),
            Err(DurationError::MissingUnit(_))
        ));
    }

    #[test]
    fn formats_in_go_syntax_and_round_trips() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(1), "1ms"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(24 * 3600), "24h"),
            (Duration::from_nanos(3_600_000_001_500), "1h1us500ns"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(ok(text), d);
        }
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("s"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse_duration("."),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse_duration("1d"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("1 s"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("-1s"),
            Err(DurationError::Negative(_))
        ));
        assert!(matches!(
            parse_duration("99999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }
}
