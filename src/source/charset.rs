//! Collation id → character set, and character data → JSON text.
//!
//! Covers MySQL ids 1..=323 and MariaDB's extra ranges (576+, the 1024+
//! NO PAD copies, the 2048+ `uca1400` collations). Text that is not valid in
//! its character set is never altered: it is emitted losslessly as
//! `{"base64":"..."}` (see docs/types.md).

use encoding_rs::Encoding;

use super::bytes::{write_base64_body, write_json_str};

/// The binary pseudo-collation: bytes, not text.
pub(crate) const BINARY_COLLATION: u16 = 63;

/// A character set, as far as decoding is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    Utf8mb4,
    Utf8mb3,
    Ascii,
    /// UTF-16 big-endian (MySQL `utf16` and `ucs2`).
    Utf16Be,
    Utf16Le,
    /// UTF-32 big-endian (MySQL `utf32`).
    Utf32Be,
    /// Decoded through `encoding_rs` (latin1 = windows-1252, gbk, sjis, …).
    Legacy(&'static Encoding),
    /// A charset with no decoder here (dec8, cp850, swe7, …) or an unknown
    /// collation id: ASCII-only text passes, anything else is base64.
    Unknown,
    /// The binary charset (collation 63).
    Binary,
}

/// The character set of a collation id (MySQL and MariaDB).
pub(crate) fn charset_for_collation(id: u16) -> Charset {
    use encoding_rs::*;
    let legacy = Charset::Legacy;
    match id {
        63 => Charset::Binary,
        // utf8mb3 / utf8mb4
        33 | 76 | 83 | 192..=223 | 576..=578 | 2048..=2303 => Charset::Utf8mb3,
        45 | 46 | 224..=247 | 255..=323 | 608..=610 | 2304..=2559 => Charset::Utf8mb4,
        // Unicode encodings
        35 | 90 | 128..=159 | 640..=642 | 2560..=2815 => Charset::Utf16Be,
        54 | 55 | 101..=124 | 672..=674 | 2816..=3071 => Charset::Utf16Be,
        56 | 62 => Charset::Utf16Le,
        60 | 61 | 160..=191 | 736..=738 | 3072..=3327 => Charset::Utf32Be,
        11 | 65 => Charset::Ascii,
        // MySQL latin1 is windows-1252 (with the 5 undefined bytes mapped to
        // the C1 controls, exactly as encoding_rs does).
        5 | 8 | 15 | 31 | 47..=49 | 94 => legacy(WINDOWS_1252),
        2 | 9 | 21 | 27 | 77 => legacy(ISO_8859_2),
        26 | 34 | 44 | 66 | 99 => legacy(WINDOWS_1250),
        14 | 23 | 50..=52 => legacy(WINDOWS_1251),
        57 | 67 => legacy(WINDOWS_1256),
        29 | 58 | 59 => legacy(WINDOWS_1257),
        36 | 68 => legacy(IBM866),
        7 | 74 => legacy(KOI8_R),
        22 | 75 => legacy(KOI8_U),
        25 | 70 => legacy(ISO_8859_7),
        16 | 71 => legacy(ISO_8859_8),
        // latin5 = ISO 8859-9; encoding_rs (WHATWG) decodes it as its
        // superset windows-1254.
        30 | 78 => legacy(WINDOWS_1254),
        20 | 41 | 42 | 79 => legacy(ISO_8859_13),
        18 | 89 => legacy(WINDOWS_874),
        39 | 53 => legacy(MACINTOSH),
        1 | 84 => legacy(BIG5),
        // gb2312 and gbk are subsets of what the WHATWG GBK decoder accepts.
        24 | 86 | 28 | 87 => legacy(GBK),
        248..=250 => legacy(GB18030),
        13 | 88 | 95 | 96 => legacy(SHIFT_JIS),
        12 | 91 | 97 | 98 => legacy(EUC_JP),
        19 | 85 => legacy(EUC_KR),
        // MariaDB NO PAD collations: base id + 1024.
        1024..=2047 => match charset_for_collation(id - 1024) {
            // Keep the recursion one level deep.
            Charset::Binary => Charset::Unknown,
            cs => cs,
        },
        _ => Charset::Unknown,
    }
}

/// True when every byte is ASCII.
fn is_ascii(bytes: &[u8]) -> bool {
    bytes.is_ascii()
}

/// `{"base64":"..."}`: text bytes that are not valid in their charset.
fn write_undecodable(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(b"{\"base64\":\"");
    write_base64_body(out, bytes);
    out.extend_from_slice(b"\"}");
}

/// Decode `bytes` in `cs` to UTF-8; `None` if they are not valid in it.
fn decode(cs: Charset, bytes: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    match cs {
        Charset::Utf8mb4 | Charset::Utf8mb3 => std::str::from_utf8(bytes).ok().map(Cow::Borrowed),
        Charset::Ascii | Charset::Unknown | Charset::Binary => {
            if is_ascii(bytes) {
                std::str::from_utf8(bytes).ok().map(Cow::Borrowed)
            } else {
                None
            }
        }
        Charset::Utf16Be => {
            encoding_rs::UTF_16BE.decode_without_bom_handling_and_without_replacement(bytes)
        }
        Charset::Utf16Le => {
            encoding_rs::UTF_16LE.decode_without_bom_handling_and_without_replacement(bytes)
        }
        Charset::Utf32Be => {
            if bytes.len() % 4 != 0 {
                return None;
            }
            let mut s = String::with_capacity(bytes.len() / 4);
            for c in bytes.chunks_exact(4) {
                let a = <[u8; 4]>::try_from(c).ok()?;
                s.push(char::from_u32(u32::from_be_bytes(a))?);
            }
            Some(Cow::Owned(s))
        }
        Charset::Legacy(enc) => enc.decode_without_bom_handling_and_without_replacement(bytes),
    }
}

/// Character data → a JSON string, or `{"base64":"..."}` when the bytes are
/// not valid in `cs`.
pub(crate) fn write_text(cs: Charset, bytes: &[u8], out: &mut Vec<u8>) {
    // Most text is plain ASCII: copy it without decoding and escaping.
    // (Text of bytes below 0x80 only decodes to itself in every
    // ASCII-compatible charset: UTF-8, and the WHATWG legacy encodings,
    // whose multi-byte sequences start with a byte of 0x80 or more;
    // UTF-16/32 are not ASCII-compatible and take the full path.)
    let ascii_compatible = match cs {
        Charset::Legacy(enc) => enc.is_ascii_compatible(),
        Charset::Utf16Be | Charset::Utf16Le | Charset::Utf32Be => false,
        _ => true,
    };
    if ascii_compatible && crate::event::payload::is_plain_ascii(bytes) {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    match decode(cs, bytes) {
        Some(s) => write_json_str(out, &s),
        None => write_undecodable(out, bytes),
    }
}

/// MariaDB JSON (LONGTEXT with a JSON_VALID check): the text itself when it
/// is valid JSON, else a JSON string (or base64 object) of the text.
pub(crate) fn write_json_text(cs: Charset, bytes: &[u8], out: &mut Vec<u8>) {
    match decode(cs, bytes) {
        Some(s) => {
            let trimmed = s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
            if !trimmed.is_empty() && serde_json::from_str::<serde::de::IgnoredAny>(trimmed).is_ok()
            {
                out.extend_from_slice(trimmed.as_bytes());
            } else {
                write_json_str(out, &s);
            }
        }
        None => write_undecodable(out, bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(cs: Charset, b: &[u8]) -> String {
        let mut out = Vec::new();
        write_text(cs, b, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn ids() {
        assert_eq!(charset_for_collation(255), Charset::Utf8mb4);
        assert_eq!(charset_for_collation(45), Charset::Utf8mb4);
        assert_eq!(charset_for_collation(33), Charset::Utf8mb3);
        assert_eq!(charset_for_collation(63), Charset::Binary);
        assert_eq!(
            charset_for_collation(8),
            Charset::Legacy(encoding_rs::WINDOWS_1252)
        );
        assert_eq!(charset_for_collation(28), Charset::Legacy(encoding_rs::GBK));
        // MariaDB: utf8mb4_general_nopad_ci, utf8mb4_uca1400_ai_ci,
        // utf8mb3_uca1400_ai_ci, latin1_swedish_nopad_ci.
        assert_eq!(charset_for_collation(1069), Charset::Utf8mb4);
        assert_eq!(charset_for_collation(2304), Charset::Utf8mb4);
        assert_eq!(charset_for_collation(2048), Charset::Utf8mb3);
        assert_eq!(
            charset_for_collation(1032),
            Charset::Legacy(encoding_rs::WINDOWS_1252)
        );
        assert_eq!(charset_for_collation(1087), Charset::Unknown);
        assert_eq!(charset_for_collation(3), Charset::Unknown); // dec8
        assert_eq!(charset_for_collation(9999), Charset::Unknown);
    }

    /// Every collation id mysql_common knows maps to the same charset here.
    #[test]
    fn agrees_with_mysql_common() {
        use mysql_common::collations::{Collation, CollationId};
        for id in 1u16..=400 {
            let cid = CollationId::from(id);
            if cid == CollationId::UNKNOWN_COLLATION_ID {
                continue;
            }
            let coll = Collation::resolve(cid);
            let name = coll.charset();
            let want = match name {
                "utf8mb4" => Charset::Utf8mb4,
                "utf8mb3" | "utf8" => Charset::Utf8mb3,
                "binary" => Charset::Binary,
                "ascii" => Charset::Ascii,
                "ucs2" | "utf16" => Charset::Utf16Be,
                "utf16le" => Charset::Utf16Le,
                "utf32" => Charset::Utf32Be,
                "dec8" | "cp850" | "hp8" | "swe7" | "armscii8" | "keybcs2" | "macce" | "cp852"
                | "geostd8" => Charset::Unknown,
                _ => {
                    assert!(
                        matches!(charset_for_collation(id), Charset::Legacy(_)),
                        "{id} {name}"
                    );
                    continue;
                }
            };
            assert_eq!(charset_for_collation(id), want, "{id} {name}");
        }
    }

    #[test]
    fn decoding() {
        let latin1 = charset_for_collation(8);
        assert_eq!(text(latin1, b"caf\xe9"), "\"café\"");
        assert_eq!(text(latin1, b"\x80\x81"), "\"€\u{81}\"");
        assert_eq!(text(Charset::Utf8mb4, "😀 é".as_bytes()), "\"😀 é\"");
        assert_eq!(
            text(Charset::Utf8mb4, b"a\"b\\c\n\x01"),
            "\"a\\\"b\\\\c\\n\\u0001\""
        );
        // invalid UTF-8 is kept losslessly
        assert_eq!(text(Charset::Utf8mb4, b"\xff\xfe"), "{\"base64\":\"//4=\"}");
        assert_eq!(text(Charset::Ascii, b"ok"), "\"ok\"");
        assert_eq!(text(Charset::Ascii, b"\xe9"), "{\"base64\":\"6Q==\"}");
        assert_eq!(text(Charset::Unknown, b"plain"), "\"plain\"");
        let gbk = charset_for_collation(28);
        assert_eq!(text(gbk, b"\xc4\xe3\xba\xc3"), "\"你好\"");
        let sjis = charset_for_collation(13);
        assert_eq!(text(sjis, b"\x82\xa0"), "\"あ\"");
        let cp1251 = charset_for_collation(51);
        assert_eq!(text(cp1251, b"\xcf\xf0\xe8"), "\"При\"");
        let latin2 = charset_for_collation(9);
        assert_eq!(text(latin2, b"\xb1"), "\"ą\"");
        assert_eq!(text(Charset::Utf16Be, b"\x00A\xd8\x3d\xde\x00"), "\"A😀\"");
        assert_eq!(text(Charset::Utf16Be, b"\x00"), "{\"base64\":\"AA==\"}");
        assert_eq!(text(Charset::Utf16Le, b"A\x00"), "\"A\"");
        assert_eq!(text(Charset::Utf32Be, b"\x00\x01\xf6\x00"), "\"😀\"");
        assert_eq!(
            text(Charset::Utf32Be, b"\x00\x11\x00\x00"),
            "{\"base64\":\"ABEAAA==\"}"
        );
    }

    #[test]
    fn mariadb_json_text() {
        let j = |b: &[u8]| {
            let mut out = Vec::new();
            write_json_text(Charset::Utf8mb4, b, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(j(b"{\"foo\":1}"), "{\"foo\":1}");
        assert_eq!(j(b" [1, 2] \n"), "[1, 2]");
        assert_eq!(j(b"not json"), "\"not json\"");
        assert_eq!(j(b""), "\"\"");
        assert_eq!(j(b"\xff"), "{\"base64\":\"/w==\"}");
    }
}
