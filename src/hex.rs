//! Hexadecimal, both ways: the one encoder every layer uses (journal
//! hashes, APOP and SASL digests, certificate fingerprints) and the digit
//! decoder behind quoted-printable and RFC 2231 percent-escapes.

const LOWER: &[u8; 16] = b"0123456789abcdef";
const UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `bytes` as lowercase hex to `out` (no allocation of its own).
pub fn push_lower(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(LOWER[usize::from(b >> 4)]));
        out.push(char::from(LOWER[usize::from(b & 0xf)]));
    }
}

/// Lowercase hex, two digits a byte: the form of digests in RFC 1939 (APOP),
/// RFC 2195 (CRAM-MD5) and popspool's journal.
pub fn lower(bytes: &[u8]) -> String {
    let mut out = String::new();
    push_lower(&mut out, bytes);
    out
}

/// `AB:CD:...`, the form `openssl x509 -fingerprint` prints and
/// `tls_fingerprint` accepts.
pub fn upper_colon(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push(char::from(UPPER[usize::from(b >> 4)]));
        out.push(char::from(UPPER[usize::from(b & 0xf)]));
    }
    out
}

/// The value of one hex digit, either case.
pub fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_both_forms() {
        assert_eq!(lower(&[0xab, 0x01, 0xff]), "ab01ff");
        assert_eq!(upper_colon(&[0xab, 0x01, 0xff]), "AB:01:FF");
        assert_eq!(upper_colon(&[]), "");
        let mut s = String::from("x");
        push_lower(&mut s, &[0, 0x10]);
        assert_eq!(s, "x0010");
    }

    #[test]
    fn digits_round_trip() {
        for b in 0..=255u8 {
            let h = lower(&[b]);
            let (hi, lo) = (h.as_bytes()[0], h.as_bytes()[1]);
            assert_eq!(digit(hi).unwrap() * 16 + digit(lo).unwrap(), b);
            let u = upper_colon(&[b]);
            assert_eq!(digit(u.as_bytes()[0]), digit(hi));
        }
        assert_eq!(digit(b'g'), None);
        assert_eq!(digit(b' '), None);
    }
}
