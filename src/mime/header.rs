//! Header blocks: splitting (RFC 5322 section 2.2), unfolding, RFC 2047 encoded
//! words and RFC 2045/2231 parameters.
//!
//! mailparse's own header decoding is not used for values: its encoded-word
//! scanner indexes characters by byte offset (`chars().nth(byte_index)`), which
//! is quadratic on long values and misses encoded words that follow raw 8-bit
//! text; its parameter parser prefers `filename` over `filename*` and splits on
//! `;` inside quoted strings. Address lists are in `address` (which still
//! uses mailparse's `addrparse` for the uncommon forms), dates in `date`
//! (parsed there, not by mailparse).

use std::borrow::Cow;

use encoding_rs::{Encoding, WINDOWS_1252};

use super::transfer;
use super::MAX_HEADER_BYTES;
use crate::hex::digit;

/// Longest encoded word we try to recognise. RFC 2047 allows 75 characters; some
/// mailers write longer ones, but an unterminated `=?` must not make the scan
/// of a 1 MiB header quadratic, so each attempt looks at most this far.
const MAX_ENCODED_WORD: usize = 512;

/// Longest charset label in an encoded word or RFC 2231 value.
const MAX_CHARSET_LABEL: usize = 64;

/// RFC 2231 continuations beyond this index are ignored: real names need a
/// handful, and the cap keeps a hostile header from building huge names.
const MAX_CONTINUATIONS: usize = 1000;

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
    /// Lines that were neither a field nor a continuation.
    pub bad_lines: usize,
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

/// Splits `raw` into its header block and body. The header block ends at the
/// first empty line; a message without one is all header.
pub fn split(raw: &[u8]) -> (&[u8], &[u8]) {
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
/// counted and skipped, an mbox `From ` line is skipped silently.
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
    let mut first = true;
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
            match current {
                Some((idx, vstart)) => out.fields[idx].value = &block[vstart..line_end],
                None => out.bad_lines += 1,
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
        } else if !(line.is_empty() || first && line.starts_with(b"From ")) {
            out.bad_lines += 1;
            current = None;
        }
        first = false;
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
fn trim_in_place(s: &mut String) {
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

/// A structured field value with parameters (Content-Type,
/// Content-Disposition): the lowercased main value and the raw parameters in
/// order, names lowercased, quotes and backslash escapes removed.
#[derive(Debug, Default, Clone)]
pub struct Params {
    pub value: String,
    pub params: Vec<(String, String)>,
}

/// Parses `value; name=token; name="quoted; string"`. Unlike mailparse this
/// honours quotes, so `;` inside a quoted file name does not split it.
pub fn parse_params(s: &str) -> Params {
    let mut out = Params::default();
    let main_end = s.find(';').unwrap_or(s.len());
    out.value = strip_comment(&s[..main_end]).trim().to_ascii_lowercase();
    let rest = if main_end < s.len() {
        &s[main_end + 1..]
    } else {
        ""
    };
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b';' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let name_start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b';' {
            i += 1;
        }
        let name = rest[name_start..i].trim().to_ascii_lowercase();
        if i >= b.len() || b[i] == b';' {
            continue;
        }
        i += 1; // '='
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        let mut value = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut seg_start = i;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    value.push_str(&rest[seg_start..i]);
                    seg_start = i + 1;
                    i += 1;
                    // Skip the whole (possibly multibyte) escaped character.
                    while i + 1 < b.len() && !rest.is_char_boundary(i + 1) {
                        i += 1;
                    }
                }
                i += 1;
            }
            value.push_str(&rest[seg_start..i.min(b.len())]);
            while i < b.len() && b[i] != b';' {
                i += 1;
            }
        } else {
            let start = i;
            while i < b.len() && b[i] != b';' {
                i += 1;
            }
            value.push_str(strip_comment(&rest[start..i]).trim());
        }
        if !name.is_empty() {
            out.params.push((name, value));
        }
    }
    out
}

pub fn strip_comment(s: &str) -> &str {
    match s.find('(') {
        Some(p) => &s[..p],
        None => s,
    }
}

impl Params {
    /// The plain (non-RFC 2231) value of a parameter.
    pub fn plain(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// RFC 2231 value (`name*`, or `name*0`, `name*1*`… continuations),
    /// decoded to text, if the parameter is present in that form.
    pub fn extended(&self, name: &str) -> Option<String> {
        // `name*…` without building "name*": asked for every part.
        fn after_star<'k>(k: &'k str, name: &str) -> Option<&'k str> {
            k.strip_prefix(name).and_then(|r| r.strip_prefix('*'))
        }
        if let Some((_, v)) = self
            .params
            .iter()
            .find(|(k, _)| after_star(k, name) == Some(""))
        {
            let (charset, data) = split_ext_value(v);
            let bytes = percent_decode(data);
            return Some(decode_charset_lossy(charset.unwrap_or(""), &bytes).into_owned());
        }
        let mut segments: Vec<(usize, bool, &str)> = Vec::new();
        for (k, v) in &self.params {
            let Some(rest) = after_star(k, name) else {
                continue;
            };
            let (num, encoded) = match rest.strip_suffix('*') {
                Some(n) => (n, true),
                None => (rest, false),
            };
            if num.is_empty() || !num.bytes().all(|c| c.is_ascii_digit()) || num.len() > 4 {
                continue;
            }
            if let Ok(n) = num.parse::<usize>() {
                if n <= MAX_CONTINUATIONS && !segments.iter().any(|s| s.0 == n) {
                    segments.push((n, encoded, v));
                }
            }
        }
        if segments.is_empty() {
            return None;
        }
        segments.sort_by_key(|s| s.0);
        let mut bytes = Vec::new();
        let mut charset: Option<&str> = None;
        for (expect, (n, encoded, v)) in segments.iter().enumerate() {
            // RFC 2231 section 3: a gap ends the value.
            if *n != expect {
                break;
            }
            if *encoded {
                let data = if *n == 0 {
                    let (cs, data) = split_ext_value(v);
                    charset = cs;
                    data
                } else {
                    v
                };
                bytes.extend_from_slice(&percent_decode(data));
            } else {
                bytes.extend_from_slice(v.as_bytes());
            }
        }
        Some(decode_charset_lossy(charset.unwrap_or(""), &bytes).into_owned())
    }

    /// Best value of a parameter that may be encoded either way: RFC 2231
    /// first, then the plain value with RFC 2047 words decoded (Outlook writes
    /// `name="=?utf-8?B?...?="`).
    pub fn text(&self, name: &str) -> Option<String> {
        self.extended(name)
            .or_else(|| self.plain(name).map(decode_words))
            .filter(|v| !v.is_empty())
    }
}

/// Splits `charset'language'data`; without both quotes it is all data.
fn split_ext_value(v: &str) -> (Option<&str>, &str) {
    let mut it = v.splitn(3, '\'');
    match (it.next(), it.next(), it.next()) {
        (Some(cs), Some(_lang), Some(data)) => (Some(cs), data),
        _ => (None, v),
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|&c| digit(c)),
                b.get(i + 2).and_then(|&c| digit(c)),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
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
    fn params_quotes_and_2231() {
        let p = parse_params(r#"attachment; filename="a;b \"c\".pdf"; size=12"#);
        assert_eq!(p.value, "attachment");
        assert_eq!(p.plain("filename"), Some(r#"a;b "c".pdf"#));
        assert_eq!(p.plain("size"), Some("12"));

        let p = parse_params("attachment; filename=plain.txt; filename*=UTF-8''%E2%82%AC.txt");
        assert_eq!(p.text("filename").as_deref(), Some("€.txt"));

        let p = parse_params(
            "attachment; filename*0*=iso-8859-1'fr'caf%E9; filename*1=\" au lait\"; filename*2*=%2Etxt",
        );
        assert_eq!(p.text("filename").as_deref(), Some("café au lait.txt"));
    }

    #[test]
    fn split_and_fields() {
        let raw = b"From sender Mon\r\nSubject: a\r\n b\r\nX-Bad line\r\nTo : x@y\r\n\r\nbody";
        let (h, body) = split(raw);
        assert_eq!(body, b"body");
        let block = parse_block(h);
        assert_eq!(block.fields.len(), 2);
        assert_eq!(block.fields[0].value, b"a\r\n b");
        assert_eq!(block.text("subject").as_deref(), Some("a b"));
        assert_eq!(block.fields[1].name, "To");
        assert_eq!(block.bad_lines, 1);
    }
}
