//! Header blocks: where they end (RFC 5322 section 2.1, also when the empty
//! line is missing), fields, unfolding (section 2.2) and RFC 2047 encoded
//! words.
//!
//! mailparse's own header decoding is not used for values: its encoded-word
//! scanner indexes characters by byte offset (`chars().nth(byte_index)`), which
//! is quadratic on long values and misses encoded words that follow raw 8-bit
//! text. Parameters (Content-Type and the like) are in `params`, address
//! lists in `address` (which still uses mailparse's `addrparse` for the
//! uncommon forms), dates in `date` (parsed there, not by mailparse).

use std::borrow::Cow;

use encoding_rs::{Encoding, WINDOWS_1252};

use super::transfer;
use super::MAX_HEADER_BYTES;
use crate::hex::digit;

/// Longest encoded word we try to recognise. RFC 2047 allows 75 characters; some
/// mailers write longer ones, but an unterminated `=?` must not make the scan
/// of a 1 MiB header quadratic, so each attempt looks at most this far.
const MAX_ENCODED_WORD: usize = 512;

/// Longest charset label in an encoded word.
const MAX_CHARSET_LABEL: usize = 64;

/// One header field, borrowed from the raw message.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    /// Field name as sent, trimmed (compare case-insensitively).
    pub name: &'a str,
    /// Raw value, folding line breaks included.
    pub value: &'a [u8],
}

/// A parsed header block.
#[derive(Debug, Default)]
pub struct HeaderBlock<'a> {
    pub fields: Vec<Field<'a>>,
    /// The block was longer than [`MAX_HEADER_BYTES`] and was cut.
    pub truncated: bool,
}

impl<'a> HeaderBlock<'a> {
    /// First field with this name (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value)
    }

    /// First field's value, unfolded, as text, RFC 2047 words decoded.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name).map(decode_value)
    }

    /// First field's value, unfolded, as text, without RFC 2047 decoding
    /// (structured fields such as Content-Type).
    pub fn raw_text(&self, name: &str) -> Option<String> {
        self.get(name).map(unfold_trimmed)
    }
}

/// What a line is, seen from the header block it may belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// A field, a continuation of one, or a leading mbox `From ` line.
    Header,
    /// The empty line that ends the header block (not part of either side).
    Blank,
    /// Neither: the header block ended without its empty line, and this
    /// line is the first of the body (RFC 5322 section 2.1 says a header
    /// field is `name:` with a printable-ASCII name; robust readers start the
    /// body at the first line that is not one).
    Body,
}

/// Finds where a header block ends, one line at a time.
#[derive(Debug, Default)]
pub struct HeaderScan {
    /// Header fields seen so far.
    pub fields: usize,
    /// The block opened with an mbox `From ` line.
    pub from_line: bool,
    lines: usize,
}

impl HeaderScan {
    /// Classifies the next line (without its `\n`; a trailing `\r` is
    /// ignored).
    pub fn line(&mut self, line: &[u8]) -> Line {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let first = self.lines == 0;
        self.lines += 1;
        if line.is_empty() {
            Line::Blank
        } else if line[0] == b' ' || line[0] == b'\t' {
            // A continuation needs a field to continue; at the very top it
            // is indented body text.
            if self.fields > 0 {
                Line::Header
            } else {
                Line::Body
            }
        } else if field_name_end(line).is_some() {
            self.fields += 1;
            Line::Header
        } else if first && line.starts_with(b"From ") {
            self.from_line = true;
            Line::Header
        } else {
            Line::Body
        }
    }
}

/// Splits an entity into its header block and body (RFC 5322 section 2.1):
/// the header block ends at the first empty line, or, when the sender left
/// that out, at the first line that is neither a field nor a continuation
/// (see [`HeaderScan`]). Data that does not start with a field is all body.
pub fn split(raw: &[u8]) -> (&[u8], &[u8]) {
    let mut scan = HeaderScan::default();
    let mut pos = 0;
    let (head_end, body_start) = loop {
        if pos >= raw.len() {
            break (raw.len(), raw.len());
        }
        let (line, next) = line_at(raw, pos);
        match scan.line(line) {
            Line::Header => pos = next,
            Line::Blank => break (pos, next),
            Line::Body => break (pos, pos),
        }
    };
    if scan.fields == 0 && scan.from_line {
        // An mbox `From ` line alone is no header: everything is body.
        return (&raw[..0], raw);
    }
    (&raw[..head_end], &raw[body_start..])
}

/// The line starting at `pos` (without its `\n`) and where the next one
/// starts.
pub fn line_at(raw: &[u8], pos: usize) -> (&[u8], usize) {
    match raw[pos..].iter().position(|&b| b == b'\n') {
        Some(o) => (&raw[pos..pos + o], pos + o + 1),
        None => (&raw[pos..], raw.len()),
    }
}

/// Splits at the first empty line only; for the "header-like" field groups
/// of report bodies (RFC 3464 section 2.1), whose odd lines are skipped by
/// [`parse_block`] rather than starting anything.
pub fn split_at_blank_line(raw: &[u8]) -> (&[u8], &[u8]) {
    if raw.starts_with(b"\n") {
        return (&raw[..0], &raw[1..]);
    }
    if raw.starts_with(b"\r\n") {
        return (&raw[..0], &raw[2..]);
    }
    let mut i = 0;
    while let Some(off) = raw[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        let next = &raw[nl + 1..];
        if next.starts_with(b"\n") {
            return (&raw[..nl + 1], &raw[nl + 2..]);
        }
        if next.starts_with(b"\r\n") {
            return (&raw[..nl + 1], &raw[nl + 3..]);
        }
        i = nl + 1;
    }
    (raw, &raw[raw.len()..])
}

/// Parses a header block into fields. Lenient: lines that are not fields are
/// skipped, and so is an mbox `From ` line.
pub fn parse_block(block: &[u8]) -> HeaderBlock<'_> {
    let mut out = HeaderBlock::default();
    let block = if block.len() > MAX_HEADER_BYTES {
        out.truncated = true;
        // The last field keeps its first bytes (a huge Subject still shows
        // its start); the cut backs off to a UTF-8 character boundary.
        let mut cut = MAX_HEADER_BYTES;
        let mut back = 0;
        while back < 4 && cut > 0 && block[cut] & 0xc0 == 0x80 {
            cut -= 1;
            back += 1;
        }
        &block[..cut]
    } else {
        block
    };
    // (field index, start of value) for the field being extended by folds.
    let mut current: Option<(usize, usize)> = None;
    let mut pos = 0;
    while pos < block.len() {
        let end = block[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(block.len(), |o| pos + o);
        let mut line_end = end;
        if line_end > pos && block[line_end - 1] == b'\r' {
            line_end -= 1;
        }
        let line = &block[pos..line_end];
        let next = (end + 1).min(block.len());
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            if let Some((idx, vstart)) = current {
                out.fields[idx].value = &block[vstart..line_end];
            }
        } else if let Some(colon) = field_name_end(line) {
            let name = std::str::from_utf8(&line[..colon]).unwrap_or("").trim_end();
            let mut vstart = pos + colon + 1;
            while vstart < line_end && (block[vstart] == b' ' || block[vstart] == b'\t') {
                vstart += 1;
            }
            out.fields.push(Field {
                name,
                value: &block[vstart..line_end],
            });
            current = Some((out.fields.len() - 1, vstart));
        } else {
            current = None;
        }
        pos = next;
    }
    out
}

/// Index of the colon ending a field name, if `line` starts with one: printable
/// ASCII without spaces, optionally followed by spaces before the colon.
fn field_name_end(line: &[u8]) -> Option<usize> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let trimmed_len = name.iter().rposition(|&b| b != b' ' && b != b'\t')? + 1;
    if name[..trimmed_len]
        .iter()
        .all(|&b| (0x21..=0x7e).contains(&b))
    {
        Some(colon)
    } else {
        None
    }
}

/// Raw bytes to text: UTF-8 when valid (RFC 6532), else Windows-1252, the
/// superset of Latin-1 that 8-bit headers almost always are.
pub fn bytes_to_text(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => WINDOWS_1252.decode_without_bom_handling(b).0,
    }
}

/// Unfolds (RFC 5322 section 2.2.3) and converts to text. Like mailparse, a
/// line break and the whitespace run after it become one space, so a folded
/// diagnostic or subject reads as one line.
pub fn unfold_text(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut folding = false;
    for &b in value {
        match b {
            b'\r' | b'\n' => folding = true,
            b' ' | b'\t' if folding => {}
            _ => {
                if folding {
                    out.push(b' ');
                    folding = false;
                }
                out.push(b);
            }
        }
    }
    // One allocation for the common case (valid UTF-8): headers are parsed
    // for every message, several values each.
    String::from_utf8(out).unwrap_or_else(|e| {
        WINDOWS_1252
            .decode_without_bom_handling(e.as_bytes())
            .0
            .into_owned()
    })
}

/// [`unfold_text`], trimmed.
fn unfold_trimmed(value: &[u8]) -> String {
    let mut s = unfold_text(value);
    trim_in_place(&mut s);
    s
}

/// `s.trim()`, in place, without a new allocation.
pub fn trim_in_place(s: &mut String) {
    s.truncate(s.trim_end().len());
    let start = s.len() - s.trim_start().len();
    s.drain(..start);
}

/// Unfolds, converts and decodes RFC 2047 encoded words; trimmed.
pub fn decode_value(value: &[u8]) -> String {
    let text = unfold_text(value);
    let mut s = if text.contains("=?") {
        decode_words(&text)
    } else {
        text
    };
    trim_in_place(&mut s);
    s
}

/// One field for `headers.all`: decoded, with the undecoded text kept
/// where it differs (README, "The spool").
pub fn field(f: &Field<'_>) -> super::HeaderField {
    let raw = unfold_trimmed(f.value);
    // Only an encoded word can make the decoded text differ; most fields
    // have none and cost one allocation.
    let decoded = raw.contains("=?").then(|| {
        let mut v = decode_words(&raw);
        trim_in_place(&mut v);
        v
    });
    let name = f.name.to_string();
    match decoded {
        Some(value) if value != raw => super::HeaderField {
            name,
            value,
            raw: Some(raw),
        },
        _ => super::HeaderField {
            name,
            value: raw,
            raw: None,
        },
    }
}

/// Looks up a charset label the way mail needs it: WHATWG labels plus the
/// Windows code page names mailers use, never the "replacement" encoding.
pub fn encoding_for(label: &str) -> Option<&'static Encoding> {
    let label = label.trim().trim_matches('"');
    // RFC 2231 section 5 allows a language suffix: "utf-8*en".
    let label = label.split('*').next().unwrap_or(label);
    let alias = match label.to_ascii_lowercase().as_str() {
        "cp932" | "ms932" => "shift_jis",
        "cp936" | "ms936" => "gbk",
        "cp949" | "ms949" | "uhc" => "euc-kr",
        "cp950" | "ms950" | "big5-hkscs" => "big5",
        "cp1252" => "windows-1252",
        "cp1250" => "windows-1250",
        "cp1251" => "windows-1251",
        "latin-1" => "iso-8859-1",
        "latin-2" => "iso-8859-2",
        _ => "",
    };
    let label = if alias.is_empty() { label } else { alias };
    Encoding::for_label_no_replacement(label.as_bytes())
}

enum Token<'a> {
    Text(&'a str),
    Word { charset: &'a str, bytes: Vec<u8> },
}

/// Decodes RFC 2047 encoded words anywhere in `s`. Lenient where real mail
/// is: words need not be delimited by whitespace, raw 8-bit text may stand
/// next to them, and adjacent words in the same charset are joined before
/// conversion so that a multibyte character split across two words survives.
/// Unknown charsets decode as UTF-8 if valid, else Windows-1252.
pub fn decode_words(s: &str) -> String {
    if !s.contains("=?") {
        return s.to_string();
    }
    let mut tokens: Vec<Token<'_>> = Vec::new();
    let mut pos = 0;
    let mut text_start = 0;
    while let Some(off) = s[pos..].find("=?") {
        let at = pos + off;
        match parse_word(&s[at..]) {
            Some((len, charset, bytes)) => {
                if at > text_start {
                    tokens.push(Token::Text(&s[text_start..at]));
                }
                tokens.push(Token::Word { charset, bytes });
                pos = at + len;
                text_start = pos;
            }
            None => pos = at + 2,
        }
    }
    if text_start < s.len() {
        tokens.push(Token::Text(&s[text_start..]));
    }

    let mut out = String::with_capacity(s.len());
    let mut pending: Option<(&str, Vec<u8>)> = None;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Word { charset, bytes } => {
                match &mut pending {
                    Some((cs, buf)) if cs.eq_ignore_ascii_case(charset) => {
                        buf.extend_from_slice(bytes)
                    }
                    _ => {
                        flush_word(&mut out, pending.take());
                        pending = Some((charset, bytes.clone()));
                    }
                }
                i += 1;
            }
            Token::Text(t) => {
                // RFC 2047 section 6.2: whitespace between two encoded words is dropped.
                let between_words = t.trim().is_empty()
                    && matches!(tokens.get(i + 1), Some(Token::Word { .. }))
                    && pending.is_some();
                if !between_words {
                    flush_word(&mut out, pending.take());
                    out.push_str(t);
                }
                i += 1;
            }
        }
    }
    flush_word(&mut out, pending.take());
    out
}

fn flush_word(out: &mut String, word: Option<(&str, Vec<u8>)>) {
    if let Some((charset, bytes)) = word {
        out.push_str(&decode_charset_lossy(charset, &bytes));
    }
}

/// Bytes in a declared charset to text; unknown labels fall back to UTF-8 if
/// valid, else Windows-1252.
pub fn decode_charset_lossy<'b>(label: &str, bytes: &'b [u8]) -> Cow<'b, str> {
    match encoding_for(label) {
        Some(enc) => enc.decode_without_bom_handling(bytes).0,
        None => bytes_to_text(bytes),
    }
}

/// Parses `=?charset?X?text?=` at the start of `s`.
fn parse_word(s: &str) -> Option<(usize, &str, Vec<u8>)> {
    let b = s.as_bytes();
    let window = &b[..b.len().min(MAX_ENCODED_WORD)];
    let q1 = 2 + window[2..]
        .iter()
        .take(MAX_CHARSET_LABEL + 1)
        .position(|&c| c == b'?')?;
    let charset = &s[2..q1];
    if charset.is_empty() || charset.bytes().any(|c| c <= b' ' || c >= 0x7f) {
        return None;
    }
    let enc = *window.get(q1 + 1)?;
    if window.get(q1 + 2) != Some(&b'?') {
        return None;
    }
    let text_start = q1 + 3;
    let mut j = text_start;
    loop {
        let c = *window.get(j)?;
        if c == b'?' && window.get(j + 1) == Some(&b'=') {
            break;
        }
        if c == b' ' || c == b'\t' || c >= 0x80 {
            return None;
        }
        j += 1;
    }
    let text = &b[text_start..j];
    let bytes = match enc {
        b'B' | b'b' => {
            let mut out = Vec::with_capacity(text.len());
            transfer::decode_base64_into(text, &mut out);
            out
        }
        b'Q' | b'q' => decode_q(text),
        _ => return None,
    };
    Some((j + 2, charset, bytes))
}

/// RFC 2047 "Q" encoding: `_` is a space, `=XX` a byte; malformed escapes are
/// kept literally.
fn decode_q(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'_' => out.push(b' '),
            b'=' => {
                match (
                    text.get(i + 1).and_then(|&c| digit(c)),
                    text.get(i + 2).and_then(|&c| digit(c)),
                ) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'='),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// The text before the first comment; for the Date field, whose trailing
/// `(CET)` comment is common and carries nothing the date needs.
pub fn strip_comment(s: &str) -> &str {
    match s.find('(') {
        Some(p) => &s[..p],
        None => s,
    }
}

/// Text of a field in a report body (RFC 3464/8098 "header-like" blocks):
/// unfolded, trimmed, not RFC 2047-decoded.
pub fn report_text(value: &[u8]) -> String {
    unfold_trimmed(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_words() {
        assert_eq!(
            decode_words("=?iso-8859-1?Q?=A1Hola,_se=F1or!?="),
            "\u{a1}Hola, se\u{f1}or!"
        );
        // Adjacent words: the whitespace between them goes.
        assert_eq!(decode_words("=?utf-8?Q?a?= =?utf-8?Q?b?="), "ab");
        assert_eq!(decode_words("=?utf-8?Q?a?=\t =?iso-8859-1?Q?b?="), "ab");
        // Text next to words keeps its whitespace.
        assert_eq!(decode_words("x =?utf-8?Q?a?= y"), "x a y");
        // Raw 8-bit text right before a word (mailparse leaves this encoded).
        assert_eq!(decode_words("Grüße=?utf-8?Q?_Welt?="), "Grüße Welt");
        assert_eq!(decode_words("Grüße =?utf-8?B?V2VsdA==?="), "Grüße Welt");
        // A UTF-8 character split across two B words.
        assert_eq!(decode_words("=?utf-8?B?ww==?= =?utf-8?B?pA==?="), "ä");
        // Not a word: left alone.
        assert_eq!(decode_words("a =? b ?= c"), "a =? b ?= c");
        assert_eq!(decode_words("=?utf-8?X?abc?="), "=?utf-8?X?abc?=");
        // Language suffix (RFC 2231 section 5).
        assert_eq!(decode_words("=?UTF-8*en?Q?hi?="), "hi");
        // Unknown charset: UTF-8 if valid.
        assert_eq!(decode_words("=?x-bogus?Q?=C3=A4?="), "ä");
    }

    #[test]
    fn split_and_fields() {
        let raw = b"From sender Mon\r\nSubject: a\r\n b\r\nTo : x@y\r\n\r\nbody";
        let (h, body) = split(raw);
        assert_eq!(body, b"body");
        let block = parse_block(h);
        assert_eq!(block.fields.len(), 2);
        assert_eq!(block.fields[0].value, b"a\r\n b");
        assert_eq!(block.text("subject").as_deref(), Some("a b"));
        assert_eq!(block.fields[1].name, "To");

        // Report field groups: odd lines are skipped, not fatal.
        let block = parse_block(b"A: 1\r\nodd line\r\n cont\r\nB: 2\r\n");
        assert_eq!(block.fields.len(), 2);
        assert_eq!(block.fields[0].value, b"1");
        let (h, rest) = split_at_blank_line(b"A: 1\r\nodd\r\n\r\nB: 2");
        assert_eq!((h, rest), (&b"A: 1\r\nodd\r\n"[..], &b"B: 2"[..]));
    }

    #[test]
    fn header_ends_at_the_first_line_that_is_not_a_field() {
        // No empty line: the first non-field line starts the body.
        let (h, body) = split(b"Subject: a\r\nX-Bad line\r\nTo: x@y\r\n\r\nbody");
        assert_eq!(h, b"Subject: a\r\n");
        assert_eq!(body, b"X-Bad line\r\nTo: x@y\r\n\r\nbody");
        let (h, body) = split(b"Content-Type: text/plain\nbar\n");
        assert_eq!(
            (h, body),
            (&b"Content-Type: text/plain\n"[..], &b"bar\n"[..])
        );
        // A field name is printable ASCII up to the colon (spaces before it
        // are the obsolete syntax, still a field).
        let (h, body) = split(b"To : x\r\nDear John: hi\r\n");
        assert_eq!((h, body), (&b"To : x\r\n"[..], &b"Dear John: hi\r\n"[..]));
        // No header at all: everything is body, an indented first line too.
        for raw in [&b"Hello,\r\nSubject: x\r\n"[..], b"  indented\r\n", b""] {
            assert_eq!(split(raw), (&b""[..], raw));
        }
        // An mbox From line alone is no header.
        let raw = b"From the desk of J.\r\nHello\r\n";
        assert_eq!(split(raw), (&b""[..], &raw[..]));
        // An empty first line: an empty header, the rest is body.
        assert_eq!(split(b"\r\n\r\nx"), (&b""[..], &b"\r\nx"[..]));
        // All header.
        assert_eq!(split(b"A: 1\r\n b"), (&b"A: 1\r\n b"[..], &b""[..]));
    }
}
