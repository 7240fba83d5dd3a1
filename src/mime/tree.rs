//! The MIME structure (RFC 2045, RFC 2046 section 5), as an arena of parts
//! borrowing the raw message.
//!
//! mailparse's `parse_mail` is not used for the structure: 0.16 has no depth
//! limit, matches a boundary as a mere prefix of a line (so an outer boundary
//! `abc` also matches the inner `abc-1`), and does not say when a closing
//! boundary is missing. This walker is linear per level, bounded in depth and
//! part count, and reports what it had to guess.

use super::header::{self, HeaderBlock, Params};
use super::transfer::Cte;
use super::{MAX_DEPTH, MAX_HEADER_BYTES, MAX_PARTS};

/// One MIME entity.
#[derive(Debug)]
pub struct Part<'a> {
    /// IMAP-style section number ("1", "2.1"); empty for a multipart message.
    pub section: String,
    pub headers: HeaderBlock<'a>,
    /// Lowercase `type/subtype`, defaults applied.
    pub ctype: String,
    pub ctype_params: Params,
    pub cte: Cte,
    /// Content-Disposition; `value` is empty when absent.
    pub disposition: Params,
    /// The encoded body, borrowed from the raw message.
    pub body: &'a [u8],
    pub children: Vec<usize>,
    pub parent: Option<usize>,
    /// 1-based number among leaf parts (body_part_index counts these).
    pub leaf: Option<u32>,
}

impl Part<'_> {
    /// How problems name this part.
    pub fn label(&self) -> String {
        if self.section.is_empty() {
            format!("message ({})", self.ctype)
        } else {
            format!("part {} ({})", self.section, self.ctype)
        }
    }

    pub fn is_multipart(&self) -> bool {
        self.ctype.starts_with("multipart/")
    }

    /// The sender's file name: RFC 2231 `filename*` first, then `filename`
    /// (RFC 2047 words decoded), then Content-Type `name*` and `name`.
    pub fn filename(&self) -> Option<String> {
        self.disposition
            .text("filename")
            .or_else(|| self.ctype_params.text("name"))
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
    }

    /// Declared charset, lowercased.
    pub fn charset(&self) -> Option<String> {
        self.ctype_params
            .plain("charset")
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
    }

    pub fn is_attachment_disposition(&self) -> bool {
        self.disposition.value == "attachment"
    }
}

/// The parsed structure.
#[derive(Debug, Default)]
pub struct Tree<'a> {
    pub parts: Vec<Part<'a>>,
    /// Leaf parts in depth-first order.
    pub leaves: Vec<usize>,
    pub problems: Vec<String>,
    parts_capped: bool,
}

impl<'a> Tree<'a> {
    pub fn root(&self) -> &Part<'a> {
        &self.parts[0]
    }
}

/// Parses the whole message. Never fails: what cannot be understood becomes
/// a problem and a best guess.
pub fn build(raw: &[u8]) -> Tree<'_> {
    let mut tree = Tree::default();
    parse_entity(&mut tree, raw, 0, String::new(), None, false);
    let leaves: Vec<usize> = (0..tree.parts.len())
        .filter(|&i| tree.parts[i].children.is_empty() && !tree.parts[i].is_multipart())
        .collect();
    // A single-part message's body is section 1, as in IMAP.
    if leaves == [0] {
        tree.parts[0].section = "1".to_string();
    }
    for (n, &i) in leaves.iter().enumerate() {
        tree.parts[i].leaf = Some(n as u32 + 1);
    }
    tree.leaves = leaves;
    tree
}

fn parse_entity<'a>(
    tree: &mut Tree<'a>,
    raw: &'a [u8],
    depth: usize,
    section: String,
    parent: Option<usize>,
    in_digest: bool,
) -> usize {
    let (head, body) = header::split(raw);
    let headers = header::parse_block(head);
    let mut problems = Vec::new();

    let default_type = if in_digest {
        "message/rfc822"
    } else {
        "text/plain"
    };
    let (ctype, ctype_params) = match headers.raw_text("content-type") {
        Some(v) => {
            let p = header::parse_params(&v);
            let t = p.value.split_whitespace().next().unwrap_or("").to_string();
            if valid_media_type(&t) {
                (t, p)
            } else {
                problems.push(format!(
                    "invalid Content-Type {:?}, treated as {default_type}",
                    v.chars().take(100).collect::<String>()
                ));
                (default_type.to_string(), p)
            }
        }
        None => (default_type.to_string(), Params::default()),
    };
    let cte = Cte::from_header(headers.raw_text("content-transfer-encoding").as_deref());
    let disposition = headers
        .raw_text("content-disposition")
        .map(|v| header::parse_params(&v))
        .unwrap_or_default();
    if headers.truncated {
        problems.push(format!(
            "header block larger than {MAX_HEADER_BYTES} bytes, the rest was ignored"
        ));
    }
    if headers.bad_lines > 0 {
        problems.push(format!(
            "{} header lines were not header fields and were ignored",
            headers.bad_lines
        ));
    }

    let idx = tree.parts.len();
    tree.parts.push(Part {
        section: section.clone(),
        headers,
        ctype,
        ctype_params,
        cte,
        disposition,
        body,
        children: Vec::new(),
        parent,
        leaf: None,
    });
    if let Cte::Unknown(name) = &tree.parts[idx].cte {
        problems.push(format!(
            "unknown Content-Transfer-Encoding {name:?}, content kept undecoded"
        ));
    }

    if tree.parts[idx].is_multipart() {
        if depth >= MAX_DEPTH {
            problems.push(format!(
                "nested deeper than {MAX_DEPTH} levels; its content is only in message.eml"
            ));
        } else {
            split_children(tree, idx, depth, &section, &mut problems);
        }
    }
    let label = tree.parts[idx].label();
    tree.problems
        .extend(problems.into_iter().map(|p| format!("{label}: {p}")));
    idx
}

fn split_children(
    tree: &mut Tree<'_>,
    idx: usize,
    depth: usize,
    section: &str,
    problems: &mut Vec<String>,
) {
    let body = tree.parts[idx].body;
    let boundary = match tree.parts[idx].ctype_params.plain("boundary") {
        Some(b) if !b.is_empty() => b.as_bytes().to_vec(),
        _ => match guess_boundary(body) {
            Some(b) => {
                problems.push(
                    "no boundary parameter; boundary taken from the first delimiter line"
                        .to_string(),
                );
                b
            }
            None => {
                problems.push(
                    "no boundary parameter and no delimiter line; read as text/plain".to_string(),
                );
                demote_to_text(tree, idx);
                return;
            }
        },
    };
    let split = split_multipart(body, &boundary);
    if !split.found {
        problems.push("boundary never occurs; read as text/plain".to_string());
        demote_to_text(tree, idx);
        return;
    }
    if !split.closed {
        problems.push("closing boundary missing (truncated?); kept what could be read".to_string());
    }
    if split.parts.is_empty() {
        problems.push("multipart with no parts".to_string());
    }
    let digest = tree.parts[idx].ctype == "multipart/digest";
    for (n, child_raw) in split.parts.into_iter().enumerate() {
        if tree.parts.len() >= MAX_PARTS {
            if !tree.parts_capped {
                tree.parts_capped = true;
                tree.problems.push(format!(
                    "more than {MAX_PARTS} MIME parts; the rest are only in message.eml"
                ));
            }
            return;
        }
        let child_section = if section.is_empty() {
            format!("{}", n + 1)
        } else {
            format!("{section}.{}", n + 1)
        };
        let child = parse_entity(tree, child_raw, depth + 1, child_section, Some(idx), digest);
        tree.parts[idx].children.push(child);
    }
}

/// A multipart whose parts cannot be found is read as plain text, so that
/// its content still reaches the consumer.
fn demote_to_text(tree: &mut Tree<'_>, idx: usize) {
    let p = &mut tree.parts[idx];
    p.ctype = "text/plain".to_string();
    p.ctype_params = Params::default();
    // A top-level leaf is numbered "1" like any single-part message.
    if p.section.is_empty() {
        p.section = "1".to_string();
    }
}

fn valid_media_type(t: &str) -> bool {
    let mut it = t.splitn(2, '/');
    let (Some(a), Some(b)) = (it.next(), it.next()) else {
        return false;
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|c| c.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&c))
    };
    token(a) && token(b)
}

struct Split<'a> {
    parts: Vec<&'a [u8]>,
    found: bool,
    closed: bool,
}

/// Splits a multipart body at its delimiter lines (RFC 2046 section 5.1.1):
/// `--boundary` followed only by optional whitespace, or `--boundary--`
/// (anything after the closing `--` is tolerated). The line break before a
/// delimiter belongs to the delimiter.
fn split_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> Split<'a> {
    let mut out = Split {
        parts: Vec::new(),
        found: false,
        closed: false,
    };
    let mut current_start: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let nl = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|o| pos + o);
        let line_end = nl.unwrap_or(body.len());
        let next = nl.map_or(body.len(), |n| n + 1);
        let line = &body[pos..line_end];
        if let Some(kind) = delimiter_kind(line, boundary) {
            if let Some(start) = current_start {
                let mut end = pos;
                if end > start && body[end - 1] == b'\n' {
                    end -= 1;
                    if end > start && body[end - 1] == b'\r' {
                        end -= 1;
                    }
                }
                out.parts.push(&body[start..end.max(start)]);
            }
            out.found = true;
            if kind == Delim::Close {
                out.closed = true;
                return out;
            }
            current_start = Some(next);
        }
        pos = next;
    }
    if let Some(start) = current_start {
        out.parts.push(&body[start.min(body.len())..]);
    }
    out
}

#[derive(PartialEq, Eq)]
enum Delim {
    Open,
    Close,
}

fn delimiter_kind(line: &[u8], boundary: &[u8]) -> Option<Delim> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    if rest.starts_with(b"--") {
        return Some(Delim::Close);
    }
    if rest.iter().all(|&b| b == b' ' || b == b'\t' || b == b'\r') {
        Some(Delim::Open)
    } else {
        None
    }
}

/// The boundary of the first `--something` line, for a multipart that forgot
/// its boundary parameter.
fn guess_boundary(body: &[u8]) -> Option<Vec<u8>> {
    for line in body.split(|&b| b == b'\n').take(1000) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"--") {
            let mut b = rest;
            while let Some(last) = b.last() {
                if *last == b' ' || *last == b'\t' {
                    b = &b[..b.len() - 1];
                } else {
                    break;
                }
            }
            let b = b.strip_suffix(b"--").unwrap_or(b);
            if !b.is_empty() && b.len() <= 200 {
                return Some(b.to_vec());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_boundaries_are_not_prefixes() {
        let raw = b"Content-Type: multipart/mixed; boundary=abc\r\n\r\n\
--abc\r\nContent-Type: multipart/alternative; boundary=abc-1\r\n\r\n\
--abc-1\r\n\r\nplain\r\n--abc-1\r\nContent-Type: text/html\r\n\r\n<p>h</p>\r\n--abc-1--\r\n\
--abc\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n--abc--\r\n";
        let t = build(raw);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        assert_eq!(t.leaves.len(), 3);
        let l: Vec<_> = t
            .leaves
            .iter()
            .map(|&i| (t.parts[i].section.as_str(), t.parts[i].body))
            .collect();
        assert_eq!(l[0], ("1.1", &b"plain"[..]));
        assert_eq!(l[1], ("1.2", &b"<p>h</p>"[..]));
        assert_eq!(l[2], ("2", &b"%PDF"[..]));
    }

    #[test]
    fn missing_close_and_missing_boundary() {
        let t = build(b"Content-Type: multipart/mixed; boundary=x\n\n--x\n\nonly part\n");
        assert_eq!(t.leaves.len(), 1);
        assert_eq!(t.parts[t.leaves[0]].body, b"only part\n");
        assert!(t.problems[0].contains("closing boundary missing"));

        let t = build(b"Content-Type: multipart/mixed\n\npreamble\n--zz\n\none\n--zz--\n");
        assert_eq!(t.leaves.len(), 1);
        assert_eq!(t.parts[t.leaves[0]].body, b"one");
        assert!(t.problems[0].contains("boundary taken from the first delimiter"));

        let t = build(b"Content-Type: multipart/mixed\n\njust text\n");
        assert_eq!(t.leaves.len(), 1);
        assert_eq!(t.root().ctype, "text/plain");
    }

    #[test]
    fn digest_default_type() {
        let t = build(
            b"Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: inner\n\nhi\n--d--\n",
        );
        assert_eq!(t.parts[t.leaves[0]].ctype, "message/rfc822");
    }
}
