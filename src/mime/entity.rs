//! The outermost entity of a message, as the S/MIME step sees it before
//! anything is decoded (README, "S/MIME"): its media type and the
//! parameters that say which S/MIME layer it is, its body with the
//! transfer encoding removed, the exact bytes of a multipart's body parts
//! (a detached signature covers those bytes as received, RFC 8551 section
//! 3.5), and the addresses in `From`. The header parsing is the decoder's
//! own (`header`, `params`, `transfer`), so both read a message alike.

use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;

use super::header;
use super::params;
use super::source::{FileSource, Source, Span};
use super::transfer::{self, Cte};
use super::MAX_HEADER_BYTES;

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
    // Reading a slice cannot fail.
    part_ranges(&body, 0, boundary)
        .unwrap_or_default()
        .into_iter()
        .map(|r| &body[r])
        .collect()
}

/// [`parts`] of the body that starts at `from` in `src`, as byte ranges of
/// `src`: one pass over its lines, so a body in a file is never read whole.
fn part_ranges(src: &dyn Source, from: usize, boundary: &str) -> io::Result<Vec<Range<usize>>> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut lines = src.lines_from(from);
    // Whether the line before the current one ended with `\r\n`.
    let mut prev_cr = false;
    while let Some(l) = lines.next_line() {
        let (pos, cr) = (l.pos, l.cr);
        let line = l.view.strip_suffix(b"\r").unwrap_or(l.view);
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
                    if end > s {
                        end -= 1;
                        if end > s && prev_cr {
                            end -= 1;
                        }
                    }
                    out.push(s..end);
                }
                if close {
                    return Ok(out);
                }
                start = Some(l.next);
            }
        }
        prev_cr = cr;
    }
    match lines.take_error() {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The outermost entity of a message in a file (`message.eml`, or what an
/// S/MIME layer held), for one too big to read whole (README,
/// "Performance", Memory): its header block is read, its body stays in the
/// file and is read in bounded chunks.
pub struct FileEntity {
    src: FileSource,
    /// The header block, up to the body.
    head: Vec<u8>,
}

impl FileEntity {
    /// The entity in `file`; `None` when its header block does not end
    /// within [`MAX_HEADER_BYTES`] (so that the first bytes alone cannot
    /// say what [`entity`] of the whole message would).
    pub fn open(file: File) -> io::Result<Option<FileEntity>> {
        let src = FileSource::new(file)?;
        let mut head = Vec::with_capacity(src.size().min(MAX_HEADER_BYTES));
        src.read_span(Span::new(0, MAX_HEADER_BYTES), &mut |c| {
            head.extend_from_slice(c);
            Ok(())
        })?;
        // Only whole lines decide, as they would in the whole message.
        let cut = if head.len() == src.size() {
            head.len()
        } else {
            head.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
        };
        let (block, body) = header::split(&head[..cut]);
        if block.len() == cut && cut < src.size() {
            return Ok(None);
        }
        head.truncate(cut - body.len());
        Ok(Some(FileEntity { src, head }))
    }

    /// Its header facts; the body in them is empty: see
    /// [`FileEntity::decoded_body`] and [`FileEntity::parts`].
    pub fn entity(&self) -> Entity<'_> {
        entity(&self.head)
    }

    fn body(&self) -> Span {
        Span::new(self.head.len(), self.src.size())
    }

    /// [`Entity::decoded_body`] of this entity, read from the file.
    pub fn decoded_body(&self, e: &Entity<'_>) -> io::Result<Vec<u8>> {
        let body = self.body();
        let mut out = Vec::with_capacity(body.len() / 4 * 3 + 3);
        transfer::decode(&e.cte, (&self.src, body), |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`parts`] of its body, as byte ranges of the file.
    pub fn parts(&self, boundary: &str) -> io::Result<Vec<Range<usize>>> {
        part_ranges(&self.src, self.head.len(), boundary)
    }

    /// The bytes of `range` of the file.
    pub fn read(&self, range: Range<usize>) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(range.len());
        self.copy(range, &mut out)?;
        Ok(out)
    }

    /// Writes `range` of the file to `out`, in bounded chunks.
    pub fn copy(&self, range: Range<usize>, out: &mut dyn Write) -> io::Result<()> {
        self.src
            .read_span(Span::new(range.start, range.end), &mut |c| out.write_all(c))
    }

    /// The header block, for [`from_addresses`].
    pub fn head(&self) -> &[u8] {
        &self.head
    }
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

    /// `raw` in a file of its own, opened as a [`FileEntity`].
    fn on_disk(raw: &[u8], tag: &str) -> Option<FileEntity> {
        let path =
            std::env::temp_dir().join(format!("popspool-entity-{tag}-{}", std::process::id()));
        std::fs::write(&path, raw).unwrap();
        let file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        FileEntity::open(file).unwrap()
    }

    #[test]
    fn a_file_reads_as_memory_does() {
        let mut raw = b"From: a@b\r\nContent-Type: multipart/signed; boundary=\"b\";\r\n protocol=\"application/pkcs7-signature\"\r\n\r\npre\r\n--b\r\n".to_vec();
        // A first part longer than a read chunk, lines of every ending.
        for i in 0..20_000 {
            raw.extend_from_slice(if i % 3 == 0 { b"line\n" } else { b"line\r\n" });
        }
        raw.extend_from_slice(
            b"\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\naGVs\r\nbG8=\r\n--b--\r\n",
        );
        let fe = on_disk(&raw, "parts").unwrap();
        let (mem, file) = (entity(&raw), fe.entity());
        assert_eq!(file.content_type, "multipart/signed");
        assert_eq!(
            (&file.boundary, &file.protocol),
            (&mem.boundary, &mem.protocol)
        );
        assert!(file.body.is_empty());
        assert_eq!(fe.head(), &raw[..raw.len() - mem.body.len()]);
        let want: Vec<Vec<u8>> = parts(mem.body, "b").iter().map(|p| p.to_vec()).collect();
        let got: Vec<Vec<u8>> = fe
            .parts("b")
            .unwrap()
            .into_iter()
            .map(|r| fe.read(r).unwrap())
            .collect();
        assert_eq!(got.len(), 2);
        assert!(got == want);
        let sig = fe.parts("b").unwrap()[1].clone();
        let sig = fe.read(sig).unwrap();
        assert_eq!(entity(&sig).decoded_body(), b"hello");
        let p7m = b"Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: base64\r\n\r\naGVs\r\nbG8=\r\n";
        let fe = on_disk(p7m, "body").unwrap();
        assert_eq!(fe.decoded_body(&fe.entity()).unwrap(), b"hello");
    }

    #[test]
    fn a_header_block_too_long_to_read_alone_is_not_guessed() {
        let mut raw = b"Content-Type: text/plain\r\nX-Long: ".to_vec();
        raw.resize(MAX_HEADER_BYTES + 10, b'a');
        raw.extend_from_slice(b"\r\nContent-Type: application/pkcs7-mime\r\n\r\nbody");
        assert!(on_disk(&raw, "long").is_none());
        // Whole within the first bytes, it is read.
        assert!(on_disk(b"Subject: x\r\n\r\nbody", "short").is_some());
    }

    #[test]
    fn from_addresses_are_bare() {
        let raw = b"From: \"B, Jorn\" <Bjorn@Example.org>, c@d.e\r\nTo: x@y\r\n\r\n";
        assert_eq!(from_addresses(raw), ["Bjorn@Example.org", "c@d.e"]);
    }
}
