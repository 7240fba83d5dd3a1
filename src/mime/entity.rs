//! The outermost entity of a message, as the S/MIME step sees it before
//! anything is decoded (README, "S/MIME"): its media type and the
//! parameters that say which S/MIME layer it is, its body with the
//! transfer encoding removed, the exact bytes of a multipart's body parts
//! (a detached signature covers those bytes as received, RFC 8551 section
//! 3.5), and the addresses in `From`. The header parsing is the decoder's
//! own (`header`, `params`, `transfer`), so both read a message alike.

use super::header;
use super::params;
use super::transfer::{self, Cte};

/// One MIME entity's header facts and its still encoded body.
#[derive(Debug)]
pub struct Entity<'a> {
    /// Lowercase `type/subtype`; `text/plain` when absent (RFC 2045 section 5.2).
    pub content_type: String,
    /// The `smime-type` parameter, lowercase (RFC 8551 section 3.2.2).
    pub smime_type: Option<String>,
    /// The `protocol` parameter of a `multipart/signed`, lowercase (RFC 1847).
    pub protocol: Option<String>,
    /// The multipart boundary.
    pub boundary: Option<String>,
    /// The file name from Content-Disposition, else Content-Type `name`.
    pub filename: Option<String>,
    /// The body as sent, transfer encoding included.
    pub body: &'a [u8],
    cte: Cte,
}

impl Entity<'_> {
    /// The body with its Content-Transfer-Encoding removed.
    pub fn decoded_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len());
        // The sink cannot fail, so neither can the decoder.
        let _ = transfer::decode(&self.cte, self.body, |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        });
        out
    }
}

/// The header facts of the entity `raw` (a whole message, or a body part
/// with its own header).
pub fn entity(raw: &[u8]) -> Entity<'_> {
    let (head, body) = header::split(raw);
    let block = header::parse_block(head);
    let ctype = block
        .raw_text("content-type")
        .map(|v| params::parse_params(&v))
        .unwrap_or_default();
    let lower = |v: Option<&str>| v.map(|s| s.trim().to_ascii_lowercase());
    let content_type = match ctype.value.split_whitespace().next() {
        Some(t) if t.contains('/') => t.to_string(),
        _ => "text/plain".to_string(),
    };
    let disposition = block
        .raw_text("content-disposition")
        .map(|v| params::parse_params(&v))
        .unwrap_or_default();
    let cte = Cte::from_header(
        block
            .raw_text("content-transfer-encoding")
            .map(|v| params::parse_params(&v).value)
            .as_deref(),
    );
    Entity {
        smime_type: lower(ctype.plain("smime-type")),
        protocol: lower(ctype.plain("protocol")),
        boundary: ctype.plain("boundary").map(str::to_string),
        filename: disposition.text("filename").or_else(|| ctype.text("name")),
        content_type,
        body,
        cte,
    }
}

/// Whether `raw` opens with a header field, as the MIME entity inside an
/// S/MIME layer does (RFC 8551 section 3.1 gives it at least its
/// Content-Type). Bytes decrypted with the wrong key are random and almost
/// never start with `Name: value`.
pub fn opens_with_header(raw: &[u8]) -> bool {
    if raw.is_empty() {
        return false;
    }
    let mut scan = header::HeaderScan::default();
    let (line, _) = header::line_at(raw, 0);
    scan.line(line) == header::Line::Header && scan.fields > 0
}

/// The body parts of a multipart body, each exactly as received: from the
/// line after a delimiter to the line break before the next one, which
/// belongs to the delimiter (RFC 2046 section 5.1.1). The preamble and the
/// epilogue are not parts; a part the close delimiter never ended is not
/// returned.
pub fn parts<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let (line, next) = header::line_at(body, pos);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line
            .strip_prefix(b"--")
            .and_then(|l| l.strip_prefix(boundary.as_bytes()))
        {
            let close = rest.starts_with(b"--");
            let rest = if close { &rest[2..] } else { rest };
            if rest.iter().all(|b| *b == b' ' || *b == b'\t') {
                if let Some(s) = start {
                    // The line break before the delimiter is not content.
                    let mut end = pos.max(s);
                    if end > s && body[end - 1] == b'\n' {
                        end -= 1;
                        if end > s && body[end - 1] == b'\r' {
                            end -= 1;
                        }
                    }
                    out.push(&body[s..end]);
                }
                if close {
                    return out;
                }
                start = Some(next);
            }
        }
        pos = next;
    }
    out
}

/// The bare addresses (`local@domain`) of every `From` field.
pub fn from_addresses(raw: &[u8]) -> Vec<String> {
    let (head, _) = header::split(raw);
    let block = header::parse_block(head);
    block
        .fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("from"))
        .flat_map(|f| super::address::addresses(f.value))
        .map(|a| match (a.rfind('<'), a.strip_suffix('>')) {
            (Some(open), Some(inner)) => inner[open + 1..].to_string(),
            _ => a,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_facts() {
        let raw = b"From: a@b\r\nContent-Type: Application/PKCS7-MIME; smime-type=Enveloped-Data;\r\n name=\"smime.p7m\"\r\nContent-Transfer-Encoding: base64\r\n\r\naGVs\r\nbG8=\r\n";
        let e = entity(raw);
        assert_eq!(e.content_type, "application/pkcs7-mime");
        assert_eq!(e.smime_type.as_deref(), Some("enveloped-data"));
        assert_eq!(e.filename.as_deref(), Some("smime.p7m"));
        assert_eq!(e.decoded_body(), b"hello");
        assert!(
            opens_with_header(raw) && !opens_with_header(b"\x8f\x02:x") && !opens_with_header(b"")
        );
        let plain = entity(b"Subject: x\r\n\r\nbody");
        assert_eq!(plain.content_type, "text/plain");
        assert_eq!(plain.decoded_body(), b"body");
    }

    #[test]
    fn parts_are_exact_bytes() {
        let body = b"preamble\r\n--b\r\nContent-Type: text/plain\r\n\r\nsigned\r\n\r\n--b \r\nsig\r\n--b--\r\nepilogue\r\n";
        assert_eq!(
            parts(body, "b"),
            [&b"Content-Type: text/plain\r\n\r\nsigned\r\n"[..], b"sig"]
        );
        // `--bx` is another boundary, not ours; an unclosed last part is dropped.
        assert_eq!(
            parts(b"--b\nx\n--bx\ny\n--b\nz\n", "b"),
            [&b"x\n--bx\ny"[..]]
        );
        assert!(parts(b"no delimiters", "b").is_empty());
    }

    #[test]
    fn from_addresses_are_bare() {
        let raw = b"From: \"B, Jorn\" <Bjorn@Example.org>, c@d.e\r\nTo: x@y\r\n\r\n";
        assert_eq!(from_addresses(raw), ["Bjorn@Example.org", "c@d.e"]);
    }
}
