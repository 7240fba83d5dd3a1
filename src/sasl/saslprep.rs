//! SASLprep (RFC 4013), as far as it goes without Unicode tables.
//!
//! SCRAM hashes the *prepared* password (RFC 5802 §2.2 `Normalize`), so a
//! client and a server that prepare the same string differently cannot
//! agree. What is done here, in RFC 4013's order:
//!
//! 1. Mapping (§2.1): non-ASCII spaces (table C.1.2) become U+0020;
//!    characters "commonly mapped to nothing" (table B.1) are removed.
//! 2. Normalisation (§2.2, Unicode NFKC): **not done**. It needs the
//!    Unicode decomposition and composition tables, which no dependency we
//!    have provides. ASCII is already NFKC, and so is almost all text typed
//!    on a keyboard; a password with compatibility characters (full-width
//!    letters, ligatures such as "ﬁ", superscripts) or decomposed accents
//!    is sent unnormalised and may fail against a server that normalises.
//!    README tells users to prefer such passwords out, or to use ASCII.
//! 3. Prohibited output (§2.3): control characters, private use,
//!    non-characters, surrogates, the "inappropriate" tables C.6 to C.9:
//!    refused, with an error that names the rule but never the character.
//! 4. Bidirectional rules (§2.4): **not checked**; they need the
//!    bidirectional category table. A string that breaks them is sent as is.
//!
//! Unassigned code points are allowed, as RFC 4013 §2.5 allows for queries.

/// A string RFC 4013 refuses, with the rule it broke (never the text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prohibited(pub &'static str);

/// Prepares `s` as described in the module documentation.
pub fn saslprep(s: &str) -> Result<String, Prohibited> {
    // Fast path: printable ASCII is its own preparation.
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if mapped_to_nothing(c) {
            continue;
        }
        let c = if non_ascii_space(c) { ' ' } else { c };
        if let Some(rule) = prohibited(c) {
            return Err(Prohibited(rule));
        }
        out.push(c);
    }
    Ok(out)
}

/// RFC 3454 table C.1.2.
fn non_ascii_space(c: char) -> bool {
    matches!(
        c as u32,
        0x00a0 | 0x1680 | 0x2000..=0x200b | 0x202f | 0x205f | 0x3000
    )
}

/// RFC 3454 table B.1.
fn mapped_to_nothing(c: char) -> bool {
    matches!(c as u32,
        0x00ad | 0x034f | 0x1806 | 0x180b..=0x180d | 0x200b..=0x200d | 0x2060
            | 0xfe00..=0xfe0f | 0xfeff)
}

/// RFC 4013 §2.3: which table forbids `c`, if any.
fn prohibited(c: char) -> Option<&'static str> {
    let u = c as u32;
    let rule = match u {
        0x0000..=0x001f | 0x007f => "an ASCII control character (RFC 3454 C.2.1)",
        0x0080..=0x009f
        | 0x06dd
        | 0x070f
        | 0x180e
        | 0x200c
        | 0x200d
        | 0x2028
        | 0x2029
        | 0x2060..=0x2063
        | 0x206a..=0x206f
        | 0xfeff
        | 0xfff9..=0xfffc
        | 0x1d173..=0x1d17a => "a non-ASCII control character (RFC 3454 C.2.2)",
        0xe000..=0xf8ff | 0xf0000..=0xffffd | 0x100000..=0x10fffd => {
            "a private-use character (RFC 3454 C.3)"
        }
        0xfdd0..=0xfdef => "a non-character code point (RFC 3454 C.4)",
        _ if u & 0xfffe == 0xfffe => "a non-character code point (RFC 3454 C.4)",
        0xfffd => "a replacement character (RFC 3454 C.6)",
        0x2ff0..=0x2ffb => "an ideographic description character (RFC 3454 C.7)",
        0x0340 | 0x0341 | 0x200e | 0x200f | 0x202a..=0x202e => {
            "a display or directional control (RFC 3454 C.8)"
        }
        0xe0001 | 0xe0020..=0xe007f => "a tagging character (RFC 3454 C.9)",
        _ => return None,
    };
    Some(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4013 §3 examples, those that need no NFKC.
    #[test]
    fn rfc4013_examples() {
        assert_eq!(saslprep("I\u{00AD}X").unwrap(), "IX"); // 1: SOFT HYPHEN mapped to nothing
        assert_eq!(saslprep("user").unwrap(), "user"); // 2: no transformation
        assert_eq!(saslprep("USER").unwrap(), "USER"); // 3: case preserved
        assert!(saslprep("\u{0007}").is_err()); // 6: prohibited character
    }

    #[test]
    fn mapping_and_prohibition() {
        assert_eq!(saslprep("a\u{00A0}b\u{3000}c").unwrap(), "a b c");
        assert_eq!(saslprep("pa\u{200B}ss\u{FEFF}").unwrap(), "pass");
        assert_eq!(saslprep("pässwörd €").unwrap(), "pässwörd €");
        assert_eq!(saslprep("pencil").unwrap(), "pencil");
        for bad in [
            "a\tb",
            "a\u{7f}",
            "\u{0085}",
            "\u{E000}",
            "\u{FDD0}",
            "\u{FFFF}",
            "\u{10FFFF}",
            "\u{FFFD}",
            "\u{2FF0}",
            "\u{202E}",
            "\u{E0041}",
        ] {
            let e = saslprep(bad).unwrap_err();
            assert!(e.0.contains("RFC 3454"), "{bad:?}");
        }
    }
}
