//! Structured field values with parameters (RFC 2045 section 5.1):
//! Content-Type, Content-Disposition and Content-Transfer-Encoding, with
//! RFC 5322 comments and whitespace, quoted strings, and RFC 2231 extended
//! values and continuations.
//!
//! mailparse's parameter parser is not used: it prefers `filename` over
//! `filename*`, splits on `;` inside quoted strings and knows no comments.

use super::header::{decode_charset_lossy, decode_words, trim_in_place};
use crate::hex::digit;

/// RFC 2231 continuations beyond this index are ignored: real names need a
/// handful, and the cap keeps a hostile header from building huge names.
const MAX_CONTINUATIONS: usize = 1000;

/// A structured field value with parameters (Content-Type,
/// Content-Disposition): the lowercased main value and the raw parameters in
/// order, names lowercased, quotes and backslash escapes removed.
#[derive(Debug, Default, Clone)]
pub struct Params {
    pub value: String,
    pub params: Vec<(String, String)>,
}

/// Parses `value; name=token; name="quoted; string"`. Unlike mailparse this
/// honours quotes, so `;` inside a quoted file name does not split it, and
/// comments and whitespace wherever RFC 2045 section 5.1 allows them
/// (RFC 5322 CFWS: `text/plain (the body) ; charset = "utf-8" (really)`).
/// Parentheses inside a quoted string are text. Broken unquoted values are
/// kept readable: a comment in the middle of one (`name=report (1).pdf`) is
/// kept as written, and an unclosed `(` is taken as a character.
pub fn parse_params(s: &str) -> Params {
    let items = lex_params(s);
    let mut segments = items.split(|i| matches!(i, Item::Semi));
    let mut out = Params {
        value: main_value(segments.next().unwrap_or(&[])),
        params: Vec::new(),
    };
    for seg in segments {
        let Some(eq) = seg.iter().position(|i| matches!(i, Item::Eq)) else {
            continue;
        };
        let mut name = String::new();
        for item in &seg[..eq] {
            match item {
                Item::Text(t) => name.push_str(t),
                Item::Quoted { text, .. } => name.push_str(text),
                Item::Comment(_) | Item::Eq | Item::Semi => {}
            }
        }
        let name = name.trim().to_ascii_lowercase();
        if !name.is_empty() {
            out.params.push((name, param_value(&seg[eq + 1..])));
        }
    }
    out
}

/// A lexical item of a structured field value with parameters.
#[derive(Debug)]
enum Item<'s> {
    /// A run of anything else, whitespace included.
    Text(&'s str),
    /// A quoted string: as written (quotes included) and its content.
    Quoted {
        raw: &'s str,
        text: String,
    },
    /// A comment, parentheses included.
    Comment(&'s str),
    Eq,
    Semi,
}

impl Item<'_> {
    fn is_blank(&self) -> bool {
        match self {
            Item::Text(t) => t.trim().is_empty(),
            Item::Comment(_) => true,
            _ => false,
        }
    }
}

/// Splits a value into [`Item`]s in one pass. A comment may nest and hold
/// quoted pairs (RFC 5322 section 3.2.2); a quoted string holds quoted pairs.
/// When a `(` is never closed, it and every later `(` are plain text (a
/// smiley in an unquoted name must not swallow the parameters after it).
fn lex_params(s: &str) -> Vec<Item<'_>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut comments = true;
    let mut i = 0;
    let mut text_start = 0;
    // Byte index after the character at `j` (which may be multibyte).
    let after_char = |j: usize| j + s[j..].chars().next().map_or(1, char::len_utf8);
    while i < b.len() {
        let special = match b[i] {
            b'"' | b';' | b'=' => true,
            b'(' => comments,
            _ => false,
        };
        if !special {
            i += 1;
            continue;
        }
        if text_start < i {
            out.push(Item::Text(&s[text_start..i]));
        }
        match b[i] {
            b';' => {
                out.push(Item::Semi);
                i += 1;
            }
            b'=' => {
                out.push(Item::Eq);
                i += 1;
            }
            b'"' => {
                let start = i;
                let mut text = String::new();
                i += 1;
                let mut seg = i;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        text.push_str(&s[seg..i]);
                        seg = i + 1;
                        i = after_char(i + 1);
                    } else {
                        i += 1;
                    }
                }
                text.push_str(&s[seg..i]);
                i = (i + 1).min(b.len());
                out.push(Item::Quoted {
                    raw: &s[start..i],
                    text,
                });
            }
            _ => {
                // '(' with comments on.
                let start = i;
                let mut depth = 0usize;
                let mut j = i;
                while j < b.len() {
                    match b[j] {
                        b'\\' if j + 1 < b.len() => {
                            j = after_char(j + 1);
                            continue;
                        }
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if j < b.len() {
                    out.push(Item::Comment(&s[start..=j]));
                    i = j + 1;
                } else {
                    comments = false;
                    text_start = i;
                    i += 1;
                    continue;
                }
            }
        }
        text_start = i;
    }
    if text_start < b.len() {
        out.push(Item::Text(&s[text_start..]));
    }
    out
}

/// The main value (`type/subtype`, disposition type, transfer encoding):
/// comments dropped, trimmed, lowercased.
fn main_value(items: &[Item<'_>]) -> String {
    let mut v = String::new();
    for item in items {
        match item {
            Item::Text(t) => v.push_str(t),
            Item::Quoted { text, .. } => v.push_str(text),
            Item::Eq => v.push('='),
            Item::Comment(_) | Item::Semi => {}
        }
    }
    let mut v = v.to_ascii_lowercase();
    trim_in_place(&mut v);
    v
}

/// A parameter's value from the items after its `=`: a quoted string's
/// content (anything after it is ignored), or the unquoted text with leading
/// and trailing comments and whitespace dropped.
fn param_value(items: &[Item<'_>]) -> String {
    let Some(first) = items.iter().position(|i| !i.is_blank()) else {
        return String::new();
    };
    if let Item::Quoted { text, .. } = &items[first] {
        return text.clone();
    }
    let last = items.iter().rposition(|i| !i.is_blank()).unwrap_or(first);
    let mut v = String::new();
    for item in &items[first..=last] {
        match item {
            Item::Text(t) | Item::Comment(t) | Item::Quoted { raw: t, .. } => v.push_str(t),
            Item::Eq => v.push('='),
            Item::Semi => {}
        }
    }
    trim_in_place(&mut v);
    v
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn params_with_comments_and_spaces() {
        let p = parse_params(
            r#"text/plain (the body; "quoted" (nested \) one)) ; charset = "utf-8" (really) ; format (x) = flowed"#,
        );
        assert_eq!(p.value, "text/plain");
        assert_eq!(p.plain("charset"), Some("utf-8"));
        assert_eq!(p.plain("format"), Some("flowed"));
        // Parentheses in a quoted string are text, a comment after it is not.
        let p = parse_params(r#"attachment (file) ; filename = "notes (v2).txt" (comment)"#);
        assert_eq!(p.value, "attachment");
        assert_eq!(p.plain("filename"), Some("notes (v2).txt"));
        // Transfer encodings take comments too.
        assert_eq!(
            parse_params("quoted-printable (for transport)").value,
            "quoted-printable"
        );
        assert_eq!(parse_params("(leading) BASE64").value, "base64");
        // A comment inside an unquoted value is kept (a broken mailer's
        // unquoted name); leading and trailing ones go.
        let p = parse_params("attachment; filename=report (1).pdf; x=(c) y (d)");
        assert_eq!(p.plain("filename"), Some("report (1).pdf"));
        assert_eq!(p.plain("x"), Some("y"));
        // An unclosed comment is text and hides nothing after it.
        let p = parse_params("attachment; filename=smile :-(.txt; size=3");
        assert_eq!(p.plain("filename"), Some("smile :-(.txt"));
        assert_eq!(p.plain("size"), Some("3"));
        let p = parse_params("text/plain (open; charset=utf-8");
        assert_eq!(p.plain("charset"), Some("utf-8"));
        // A quoted pair inside a comment does not end it; an unterminated
        // quoted string runs to the end.
        let p = parse_params(r#"a/b (x \) ; y=1) ; n="v;w"#);
        assert_eq!(p.value, "a/b");
        assert_eq!(p.params, [("n".to_string(), "v;w".to_string())]);
        // RFC 2047 words in an unquoted value keep their `=`.
        let p = parse_params("attachment; name==?utf-8?Q?a=C3=A4?=");
        assert_eq!(p.text("name").as_deref(), Some("aä"));
    }
}
