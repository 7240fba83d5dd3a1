//! The MIME structure (RFC 2045, RFC 2046 section 5), as an arena of parts
//! naming byte ranges of the message, which a [`Source`] holds (in memory,
//! or on disk for a big message: the walk reads lines, never the whole).
//!
//! mailparse's `parse_mail` is not used for the structure: 0.16 has no depth
//! limit, matches a boundary as a mere prefix of a line (so an outer boundary
//! `abc` also matches the inner `abc-1`), and does not say when a closing
//! boundary is missing. This walker reads the message once, line by line,
//! with an explicit stack of the multiparts it is inside (no recursion, no
//! rescans per level), so its cost is linear in the message whatever the
//! nesting; it is bounded in depth and part count and reports what it had to
//! guess.

use std::collections::HashMap;

use super::header::{self, HeaderBlock, HeaderScan, Line};
use super::params::{self, Params};
use super::source::{self, Lines, Source, Span};
use super::transfer::Cte;
use super::{MAX_DEPTH, MAX_HEADER_BYTES, MAX_PARTS};

/// Lines looked at to guess a missing boundary parameter: the first
/// delimiter follows the header or a short preamble.
const GUESS_LINES: usize = 1000;

/// Longest guessed boundary; RFC 2046 section 5.1.1 allows 70 characters.
const MAX_GUESSED_BOUNDARY: usize = 200;

/// One MIME entity.
#[derive(Debug)]
pub struct Part {
    /// IMAP-style section number ("1", "2.1"); empty for a multipart message.
    pub section: String,
    /// `Content-Description: body` (the body-part cascade's first rule).
    pub described_as_body: bool,
    /// Lowercase `type/subtype`, defaults applied.
    pub ctype: String,
    pub ctype_params: Params,
    pub cte: Cte,
    /// Content-Disposition; `value` is empty when absent.
    pub disposition: Params,
    /// Where the encoded body is in the message.
    pub body: Span,
    pub children: Vec<usize>,
    pub parent: Option<usize>,
    /// 1-based number among leaf parts (body_part_index counts these).
    pub leaf: Option<u32>,
}

impl Part {
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
    /// Exactly as decoded (`invoice.pdf. ` keeps its dot and space: that is
    /// what the sender called it); only the stored name is made safe. A
    /// name of nothing but whitespace is no name.
    pub fn filename(&self) -> Option<String> {
        self.disposition
            .text("filename")
            .or_else(|| self.ctype_params.text("name"))
            .filter(|n| !n.trim().is_empty())
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
pub struct Tree {
    pub parts: Vec<Part>,
    /// Leaf parts in depth-first order.
    pub leaves: Vec<usize>,
    pub problems: Vec<String>,
    /// The message's header block (at most [`MAX_HEADER_BYTES`] and one:
    /// enough for [`header::parse_block`] to see that it was cut).
    root_head: Vec<u8>,
}

impl Tree {
    pub fn root(&self) -> &Part {
        &self.parts[0]
    }

    /// The message's header fields.
    pub fn root_headers(&self) -> HeaderBlock<'_> {
        header::parse_block(&self.root_head)
    }
}

/// Parses the whole message. Never fails: what cannot be understood becomes
/// a problem and a best guess; only reading `src` can fail.
pub fn build(src: &dyn Source) -> std::io::Result<Tree> {
    let mut b = Builder {
        src,
        size: src.size(),
        parts: Vec::new(),
        starts: Vec::new(),
        levels: Vec::new(),
        active: HashMap::new(),
        notes: Vec::new(),
        stopped: false,
        head: Vec::new(),
        root_head: Vec::new(),
        prev_cr: false,
    };
    let mut lines = src.lines_from(0);
    b.run(&mut *lines)?;
    if let Some(e) = lines.take_error() {
        return Err(e);
    }
    Ok(b.finish())
}

/// A multipart being read: its delimiter lines open and close its parts.
struct Level {
    /// The multipart's part.
    part: usize,
    boundary: Vec<u8>,
    /// The multipart's depth (the message is 0).
    depth: usize,
    digest: bool,
    /// The part being read, ended by the next delimiter of this level.
    current: Option<usize>,
    /// Some delimiter line of this level was seen.
    found: bool,
    /// A nested multipart with the same boundary ate this level's closing
    /// delimiter, so its absence is no news.
    close_shared: bool,
}

/// Where the lines of the message currently go.
enum Mode {
    /// A header block starting at `start`, of a part of `parent` (an index
    /// into the level stack), or of the message.
    Header {
        start: usize,
        parent: Option<usize>,
        scan: HeaderScan,
    },
    /// A part's content (or a preamble or epilogue): only delimiter lines
    /// matter.
    Content,
}

struct Builder<'s> {
    src: &'s dyn Source,
    size: usize,
    parts: Vec<Part>,
    /// Where each part's body starts; its end is known only when
    /// the enclosing multipart's next delimiter (or the end) is read.
    starts: Vec<usize>,
    levels: Vec<Level>,
    /// Boundary -> indices into `levels` using it, innermost last: one hash
    /// look-up per line starting with `--`, whatever the depth.
    active: HashMap<Vec<u8>, Vec<usize>>,
    /// Problems, by part (None: about the whole message), labelled at the
    /// end, when each part's type is final.
    notes: Vec<(Option<usize>, String)>,
    /// MAX_PARTS was reached: the rest is not read.
    stopped: bool,
    /// The header block being read (see [`Tree::root_head`] for its cap).
    head: Vec<u8>,
    root_head: Vec<u8>,
    /// The line before the current one ended with `\r\n`.
    prev_cr: bool,
}

impl Builder<'_> {
    fn run(&mut self, lines: &mut dyn Lines) -> std::io::Result<()> {
        let mut mode = Mode::Header {
            start: 0,
            parent: None,
            scan: HeaderScan::default(),
        };
        self.head.clear();
        while !self.stopped {
            let Some(line) = lines.next_line() else {
                break;
            };
            // A line is looked at again when its meaning changed under it.
            while self.on_line(&mut mode, &line) {}
            self.prev_cr = line.cr;
        }
        if let Mode::Header {
            start,
            parent,
            scan,
        } = mode
        {
            if !self.stopped {
                let end = self.size;
                self.end_header(start, parent, &scan, end, false);
            }
        }
        while let Some(level) = self.levels.pop() {
            self.end_level(level, Some(self.size));
        }
        Ok(())
    }

    /// One line; true when it must be looked at again in the new mode.
    fn on_line(&mut self, mode: &mut Mode, line: &source::Line<'_>) -> bool {
        let (pos, next) = (line.pos, line.next);
        if let Some((level, close)) = self.delimiter(line.view) {
            if let Mode::Header {
                start,
                parent,
                scan,
            } = mode
            {
                // A header cut short by a delimiter: the part has no
                // body. The line is looked at again, as the header may
                // have declared a multipart with this very boundary.
                let (start, parent, scan) = (*start, *parent, std::mem::take(scan));
                self.end_header(start, parent, &scan, pos, false);
                *mode = Mode::Content;
                return true;
            }
            *mode = self.on_delimiter(level, close, pos, next);
            return false;
        }
        if let Mode::Header {
            start,
            parent,
            scan,
        } = mode
        {
            match scan.line(line.view) {
                Line::Header => {
                    let room = (MAX_HEADER_BYTES + 1).saturating_sub(self.head.len());
                    let nl: &[u8] = if line.nl { b"\n" } else { b"" };
                    let bytes = line.view.iter().chain(nl);
                    self.head.extend(bytes.take(room));
                }
                Line::Blank => {
                    let (start, parent) = (*start, *parent);
                    let scan = std::mem::take(scan);
                    self.end_header(start, parent, &scan, next, false);
                    *mode = Mode::Content;
                }
                Line::Body => {
                    let (start, parent) = (*start, *parent);
                    let scan = std::mem::take(scan);
                    self.end_header(start, parent, &scan, pos, true);
                    *mode = Mode::Content;
                    // The line is the body's first; it may be a
                    // delimiter of the multipart this header declared.
                    return true;
                }
            }
        }
        false
    }

    /// The level a delimiter line belongs to, and whether it closes it
    /// (RFC 2046 section 5.1.1): `--boundary` followed only by whitespace,
    /// or `--boundary--` (for the innermost level, anything after the
    /// closing `--` is tolerated). Equal boundaries: the innermost wins.
    fn delimiter(&self, line: &[u8]) -> Option<(usize, bool)> {
        let rest = line.strip_prefix(b"--")?;
        let top = self.levels.len().checked_sub(1)?;
        let end = rest
            .iter()
            .rposition(|&b| !matches!(b, b' ' | b'\t' | b'\r'))
            .map_or(0, |p| p + 1);
        let trimmed = &rest[..end];
        let innermost = |b: &[u8]| self.active.get(b).and_then(|v| v.last().copied());
        let open = innermost(trimmed).map(|l| (l, false));
        let close = trimmed
            .strip_suffix(b"--")
            .and_then(innermost)
            .map(|l| (l, true));
        let top_close = rest
            .strip_prefix(&self.levels[top].boundary[..])
            .is_some_and(|r| r.starts_with(b"--"))
            .then_some((top, true));
        [open, close, top_close].into_iter().flatten().max()
    }

    /// A delimiter line of `level` at `pos` (the next line at `next`):
    /// ends what was open inside the level, then opens its next part or
    /// closes it.
    fn on_delimiter(&mut self, level: usize, close: bool, pos: usize, next: usize) -> Mode {
        // The line break before a delimiter belongs to the delimiter.
        let end = if pos == 0 {
            0
        } else {
            pos - 1 - usize::from(self.prev_cr)
        };
        // Inner multiparts still open are cut short by an outer delimiter.
        while self.levels.len() > level + 1 {
            let inner = self.levels.pop().expect("checked length");
            self.end_level(inner, Some(end));
        }
        let l = &mut self.levels[level];
        l.found = true;
        if let Some(c) = l.current.take() {
            self.end_part(c, end);
        }
        if close {
            let l = self.levels.pop().expect("level exists");
            // Its epilogue runs to its parent's next delimiter, which ends
            // the part (it is the parent's current part).
            self.end_level(l, None);
            return Mode::Content;
        }
        if self.parts.len() >= MAX_PARTS {
            self.notes.push((
                None,
                format!("more than {MAX_PARTS} MIME parts; the rest are only in message.eml"),
            ));
            self.stopped = true;
            return Mode::Content;
        }
        self.head.clear();
        Mode::Header {
            start: next,
            parent: Some(level),
            scan: HeaderScan::default(),
        }
    }

    /// A header block (in `head`, from `start` on) is complete and its body
    /// starts at `body_start`: creates the part, and a level if it is a
    /// multipart to read.
    fn end_header(
        &mut self,
        start: usize,
        parent_level: Option<usize>,
        scan: &HeaderScan,
        mut body_start: usize,
        no_blank_line: bool,
    ) {
        let mut head = std::mem::take(&mut self.head);
        if scan.fields == 0 && scan.from_line {
            // An mbox `From ` line alone is no header: it is body text.
            head.clear();
            body_start = start;
        }
        let headers = header::parse_block(&head);
        let idx = self.parts.len();
        let (parent, depth, section, digest) = match parent_level {
            Some(l) => {
                let level = &mut self.levels[l];
                level.current = Some(idx);
                let n = self.parts[level.part].children.len() + 1;
                let ps = &self.parts[level.part].section;
                let section = if ps.is_empty() {
                    n.to_string()
                } else {
                    format!("{ps}.{n}")
                };
                self.parts[level.part].children.push(idx);
                (Some(level.part), level.depth + 1, section, level.digest)
            }
            None => (None, 0, String::new(), false),
        };
        // A message without any header field is the caller's to report.
        if no_blank_line && !(parent.is_none() && headers.fields.is_empty()) {
            self.note(
                idx,
                "no empty line after the header; the body starts at the first line that is not a header field",
            );
        }
        let mut part = self.new_part(idx, &headers, section, parent, digest);
        // Until a delimiter ends it, a part runs to the end of the message.
        part.body = Span::new(body_start, self.size);
        self.parts.push(part);
        drop(headers);
        if parent.is_none() {
            self.root_head = head;
        } else {
            // The buffer is reused for the next header block.
            head.clear();
            self.head = head;
        }
        self.starts.push(body_start);
        if self.parts[idx].is_multipart() {
            if depth >= MAX_DEPTH {
                self.note(
                    idx,
                    format!(
                        "nested deeper than {MAX_DEPTH} levels; its content is only in message.eml"
                    ),
                );
            } else {
                self.open_level(idx, depth, body_start);
            }
        }
    }

    /// The part for a header block: type, transfer encoding, disposition.
    fn new_part(
        &mut self,
        idx: usize,
        headers: &HeaderBlock<'_>,
        section: String,
        parent: Option<usize>,
        in_digest: bool,
    ) -> Part {
        let default_type = if in_digest {
            "message/rfc822"
        } else {
            "text/plain"
        };
        let (ctype, ctype_params) = match headers.raw_text("content-type") {
            Some(v) => {
                let p = params::parse_params(&v);
                let t = p.value.split_whitespace().next().unwrap_or("").to_string();
                if valid_media_type(&t) {
                    (t, p)
                } else {
                    self.note(
                        idx,
                        format!(
                            "invalid Content-Type {:?}, treated as {default_type}",
                            v.chars().take(100).collect::<String>()
                        ),
                    );
                    (default_type.to_string(), p)
                }
            }
            None => (default_type.to_string(), Params::default()),
        };
        // A comment after the mechanism (`base64 (binary)`) is CFWS too.
        let cte = Cte::from_header(
            headers
                .raw_text("content-transfer-encoding")
                .map(|v| params::parse_params(&v).value)
                .as_deref(),
        );
        if let Cte::Unknown(name) = &cte {
            self.note(
                idx,
                format!("unknown Content-Transfer-Encoding {name:?}, content kept undecoded"),
            );
        }
        let disposition = headers
            .raw_text("content-disposition")
            .map(|v| params::parse_params(&v))
            .unwrap_or_default();
        if headers.truncated {
            self.note(
                idx,
                format!("header block larger than {MAX_HEADER_BYTES} bytes, the rest was ignored"),
            );
        }
        let described_as_body = headers
            .text("content-description")
            .is_some_and(|d| d.trim().eq_ignore_ascii_case("body"));
        Part {
            section,
            described_as_body,
            ctype,
            ctype_params,
            cte,
            disposition,
            body: Span::default(),
            children: Vec::new(),
            parent,
            leaf: None,
        }
    }

    /// Starts reading the multipart `idx` whose body starts at `body_start`.
    fn open_level(&mut self, idx: usize, depth: usize, body_start: usize) {
        let boundary = match self.parts[idx].ctype_params.plain("boundary") {
            Some(b) if !b.is_empty() => b.as_bytes().to_vec(),
            _ => match self.guess_boundary(body_start) {
                Some(b) => {
                    self.note(
                        idx,
                        "no boundary parameter; boundary taken from the first delimiter line",
                    );
                    b
                }
                None => {
                    self.note(
                        idx,
                        "no boundary parameter and no delimiter line; read as text/plain",
                    );
                    self.demote_to_text(idx);
                    return;
                }
            },
        };
        let users = self.active.entry(boundary.clone()).or_default();
        if !users.is_empty() {
            // Old Outlook Express for Mac reuses its parent's boundary. As
            // robust readers do, the delimiters that follow are this
            // multipart's until its closing delimiter, then the parent's.
            self.notes.push((
                Some(idx),
                "same boundary as an enclosing multipart; the parts that follow are read as its own until its closing delimiter"
                .to_string(),
            ));
        }
        users.push(self.levels.len());
        self.levels.push(Level {
            part: idx,
            boundary,
            depth,
            digest: self.parts[idx].ctype == "multipart/digest",
            current: None,
            found: false,
            close_shared: false,
        });
    }

    /// The boundary of the first `--something` line of a multipart body that
    /// forgot its boundary parameter, if that line is not a delimiter of an
    /// enclosing multipart (which ends the body: nothing to guess from).
    fn guess_boundary(&self, from: usize) -> Option<Vec<u8>> {
        let mut lines = self.src.lines_from(from);
        for _ in 0..GUESS_LINES {
            let Some(line) = lines.next_line() else {
                break;
            };
            let line = line.view;
            if self.delimiter(line).is_some() {
                return None;
            }
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(rest) = line.strip_prefix(b"--") {
                let end = rest
                    .iter()
                    .rposition(|&b| b != b' ' && b != b'\t')
                    .map_or(0, |p| p + 1);
                let b = &rest[..end];
                let b = b.strip_suffix(b"--").unwrap_or(b);
                if !b.is_empty() && b.len() <= MAX_GUESSED_BOUNDARY {
                    return Some(b.to_vec());
                }
            }
        }
        None
    }

    /// A level is done: closed by its delimiter (`end` None: the part runs
    /// on through its epilogue), or cut short by an enclosing delimiter or
    /// the end of the message at `end`.
    fn end_level(&mut self, level: Level, end: Option<usize>) {
        let closed = end.is_none();
        if let Some(users) = self.active.get_mut(&level.boundary) {
            users.pop();
            if users.is_empty() {
                self.active.remove(&level.boundary);
            } else if closed {
                for &u in users.iter() {
                    self.levels[u].close_shared = true;
                }
            }
        }
        if let Some(end) = end {
            if let Some(c) = level.current {
                self.end_part(c, end);
            }
            self.end_part(level.part, end);
        }
        let idx = level.part;
        if !level.found {
            self.note(idx, "boundary never occurs; read as text/plain");
            self.demote_to_text(idx);
        } else if !closed && !level.close_shared && !self.stopped {
            self.note(
                idx,
                "closing boundary missing (truncated?); kept what could be read",
            );
        }
        if level.found && self.parts[idx].children.is_empty() {
            self.note(idx, "multipart with no parts");
        }
    }

    fn end_part(&mut self, idx: usize, end: usize) {
        let start = self.starts[idx];
        self.parts[idx].body = Span::new(start, end.max(start));
    }

    fn note(&mut self, idx: usize, text: impl Into<String>) {
        self.notes.push((Some(idx), text.into()));
    }

    /// A multipart whose parts cannot be found is read as plain text, so
    /// that its content still reaches the consumer.
    fn demote_to_text(&mut self, idx: usize) {
        let p = &mut self.parts[idx];
        p.ctype = "text/plain".to_string();
        p.ctype_params = Params::default();
        // A top-level leaf is numbered "1" like any single-part message.
        if p.section.is_empty() {
            p.section = "1".to_string();
        }
    }

    fn finish(mut self) -> Tree {
        let mut tree = Tree {
            parts: self.parts,
            leaves: Vec::new(),
            problems: Vec::new(),
            root_head: self.root_head,
        };
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
        tree.problems = std::mem::take(&mut self.notes)
            .into_iter()
            .map(|(p, n)| match p {
                Some(i) => format!("{}: {n}", tree.parts[i].label()),
                None => n,
            })
            .collect();
        tree
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The structure, and the message it names ranges of.
    struct Built<'a> {
        tree: Tree,
        raw: &'a [u8],
    }

    impl std::ops::Deref for Built<'_> {
        type Target = Tree;
        fn deref(&self) -> &Tree {
            &self.tree
        }
    }

    impl<'a> Built<'a> {
        fn body(&self, i: usize) -> &'a [u8] {
            let s = self.tree.parts[i].body;
            &self.raw[s.start..s.end]
        }
    }

    fn build(raw: &[u8]) -> Built<'_> {
        Built {
            tree: super::build(&raw).unwrap(),
            raw,
        }
    }

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
            .map(|&i| (t.parts[i].section.as_str(), t.body(i)))
            .collect();
        assert_eq!(l[0], ("1.1", &b"plain"[..]));
        assert_eq!(l[1], ("1.2", &b"<p>h</p>"[..]));
        assert_eq!(l[2], ("2", &b"%PDF"[..]));
    }

    #[test]
    fn missing_close_and_missing_boundary() {
        let t = build(b"Content-Type: multipart/mixed; boundary=x\n\n--x\n\nonly part\n");
        assert_eq!(t.leaves.len(), 1);
        assert_eq!(t.body(t.leaves[0]), b"only part\n");
        assert!(t.problems[0].contains("closing boundary missing"));

        let t = build(b"Content-Type: multipart/mixed\n\npreamble\n--zz\n\none\n--zz--\n");
        assert_eq!(t.leaves.len(), 1);
        assert_eq!(t.body(t.leaves[0]), b"one");
        assert!(t.problems[0].contains("boundary taken from the first delimiter"));

        let t = build(b"Content-Type: multipart/mixed\n\njust text\n");
        assert_eq!(t.leaves.len(), 1);
        assert_eq!(t.root().ctype, "text/plain");
    }

    fn leaves<'a>(t: &'a Built<'_>) -> Vec<(&'a str, &'a str, &'a [u8])> {
        t.leaves
            .iter()
            .map(|&i| {
                let p = &t.parts[i];
                (p.section.as_str(), p.ctype.as_str(), t.body(i))
            })
            .collect()
    }

    #[test]
    fn shared_boundary_continues_in_the_parents_delimiters() {
        // One closing delimiter for both: the nested multipart takes the
        // rest, and the parent's missing close is not reported.
        let t = build(
            b"Content-Type: multipart/mixed; boundary=B\n\n--B\n\
Content-Type: multipart/alternative; boundary=B\n\n--B\n\nplain\n\
--B\nContent-Type: text/html\n\n<p>h</p>\n--B--\n",
        );
        assert_eq!(
            leaves(&t),
            [
                ("1.1", "text/plain", &b"plain"[..]),
                ("1.2", "text/html", b"<p>h</p>")
            ]
        );
        assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
        assert!(t.problems[0].starts_with("part 1 (multipart/alternative): same boundary"));
        // Two closes: the parent goes on after the nested one.
        let t = build(
            b"Content-Type: multipart/mixed; boundary=B\n\n--B\n\
Content-Type: multipart/alternative; boundary=B\n\n--B\n\nplain\n--B--\n\
--B\nContent-Type: application/pdf\n\n%PDF\n--B--\n",
        );
        assert_eq!(
            leaves(&t),
            [
                ("1.1", "text/plain", &b"plain"[..]),
                ("2", "application/pdf", b"%PDF")
            ]
        );
        assert_eq!(t.problems.len(), 1);
    }

    #[test]
    fn delimiters_right_after_a_header() {
        // No empty line after a multipart's header: its first line is
        // already a delimiter. A part whose header meets a delimiter is
        // empty.
        let t = build(
            b"Content-Type: multipart/mixed; boundary=x\n--x\n\
Content-Type: text/plain\n--x\nContent-Type: text/csv\n\na,b\n--x--\n",
        );
        assert_eq!(
            leaves(&t),
            [("1", "text/plain", &b""[..]), ("2", "text/csv", b"a,b")]
        );
        assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
        assert!(t.problems[0].starts_with("message (multipart/mixed): no empty line"));
    }

    #[test]
    fn an_outer_delimiter_ends_an_open_inner_multipart() {
        let t = build(
            b"Content-Type: multipart/mixed; boundary=o\n\n--o\n\
Content-Type: multipart/alternative; boundary=i\n\n--i\n\ncut\n\
--o\nContent-Type: application/pdf\n\n%PDF\n--o--\n",
        );
        assert_eq!(
            leaves(&t),
            [
                ("1.1", "text/plain", &b"cut"[..]),
                ("2", "application/pdf", b"%PDF")
            ]
        );
        assert_eq!(
            t.problems,
            ["part 1 (multipart/alternative): closing boundary missing (truncated?); kept what could be read"]
        );
        // Epilogues and preambles are nobody's part; a multipart's body is
        // its whole extent.
        assert_eq!(t.body(1), b"--i\n\ncut");
    }

    #[test]
    fn nesting_costs_no_stack() {
        // Far past the cap, on a small stack: nothing recurses per level.
        let mut raw = Vec::new();
        for i in 0..20_000 {
            raw.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n").as_bytes(),
            );
        }
        raw.extend_from_slice(b"\nbottom\n");
        let t = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let t = build(&raw);
                (t.parts.len(), t.problems.len())
            })
            .unwrap()
            .join()
            .unwrap();
        // The message and MAX_DEPTH nested multiparts; one cap note and a
        // missing close per level read.
        assert_eq!(t, (MAX_DEPTH + 1, MAX_DEPTH + 1));
    }

    #[test]
    fn digest_default_type() {
        let t = build(
            b"Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: inner\n\nhi\n--d--\n",
        );
        assert_eq!(t.parts[t.leaves[0]].ctype, "message/rfc822");
    }
}
