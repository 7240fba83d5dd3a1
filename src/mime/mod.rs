//! MIME decoding for a spool entry (README, "The spool": meta.json, body
//! selection, attachment names and limits).
//!
//! [`decode`] reads the message as received and writes `body.txt` or
//! `body.html` and `attachments/<name>` into the entry directory; what it
//! returns is flattened into `meta.json`. [`headers_only`] is the `mime = no`
//! path. Decoding problems are data (`problems`), never errors or panics; the
//! only error is an I/O failure writing into the entry directory (or
//! reading the message from disk).
//!
//! A message is decoded from memory ([`decode_into`]) or from its file
//! ([`decode_file_into`], [`headers_only_file`]): the structure is found in
//! one pass over its lines, then each part's byte range is decoded in
//! bounded chunks straight into its file (see `source` and `transfer`), so
//! memory does not grow with the message. Both give byte-identical entries.
//! Standards: RFC 5322 (message format), RFC 2045-2047 and 2231 (MIME,
//! encoded words, parameter values), RFC 6532 (UTF-8 headers), RFC 6522,
//! 3464 and 8098 (reports).

mod address;
mod date;
pub mod entity;
mod header;
mod names;
mod params;
mod report;
mod select;
mod source;
mod text;
mod transfer;
mod tree;

use std::fs::File;
use std::io::{self, Write};
use std::path::{Component, Path};

use encoding_rs::{Encoding, UTF_8, WINDOWS_1252};
use openssl::sha::Sha256;
use serde::Serialize;

use self::header::HeaderBlock;
use self::names::UniqueNames;
use self::source::{FileSource, Source};
use self::text::TextSink;
use self::tree::{Part, Tree};

/// Largest header block parsed per part. Real header blocks are a few KiB
/// (heavily relayed mail reaches ~100 KiB); beyond 1 MiB it is an attack or a
/// broken generator, and mailparse-style decoders go quadratic on such input.
pub const MAX_HEADER_BYTES: usize = 1 << 20;

/// Deepest multipart nesting descended. Legitimate mail rarely exceeds 5
/// levels (a forward of a signed reply with alternatives); 100 is far
/// beyond real mail, so only a broken or hostile message meets the cap, and
/// it keeps what was found above it. The structure is read in one pass with
/// an explicit stack (`tree`), so depth costs bookkeeping (section numbers,
/// walks to the root), never recursion or rescans.
pub const MAX_DEPTH: usize = 100;

/// Most MIME parts parsed. Each part costs a few hundred bytes of
/// bookkeeping; 10,000 keeps a "zip bomb" of empty parts to a few MiB.
pub const MAX_PARTS: usize = 10_000;

/// Most attachment files written per entry, so one message cannot exhaust
/// the spool file system's inodes; parts beyond stay in message.eml.
pub const MAX_ATTACHMENTS: usize = 1_000;

/// Largest decoded report status part or attached header block read for
/// `report` (those are a few KiB; they are held in memory).
pub const MAX_REPORT_BYTES: usize = 1 << 20;

/// The entry's subdirectory for attachments (README, "The spool").
const ATTACHMENTS_DIR: &str = "attachments";

/// Body-part selection, from the account's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// 0: the default cascade; N: the Nth leaf part (1-based).
    pub body_part_index: u32,
    /// Lowercase `type/subtype`.
    pub body_part_content_type: Option<String>,
}

/// The message's main header fields, decoded to UTF-8 (RFC 2047, RFC 6532).
///
/// Addresses are written `"Display Name" <local@domain>` or `local@domain`;
/// group syntax is flattened to its members. `from`, `reply_to` and
/// `disposition_notification_to` hold the formatted list joined by `", "`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Headers {
    /// `Message-ID`, as written.
    pub message_id: Option<String>,
    /// The Date header as written (decoded).
    pub date: Option<String>,
    /// `date` as RFC 3339 UTC, or null when it does not parse.
    pub date_iso: Option<String>,
    /// `From`.
    pub from: Option<String>,
    /// `To`, one address each.
    pub to: Vec<String>,
    /// `Cc`, one address each.
    pub cc: Vec<String>,
    /// `Reply-To`.
    pub reply_to: Option<String>,
    /// `Subject`.
    pub subject: Option<String>,
    /// `Disposition-Notification-To` (an MDN request, RFC 8098).
    pub disposition_notification_to: Option<String>,
    /// The whole header block in order (BizTalk's `Headers` property),
    /// bounded by [`MAX_HEADER_BYTES`] like the rest.
    pub all: Vec<HeaderField>,
}

/// One field of `headers.all`: written to `meta.json` as `[name, value]`,
/// or `[name, value, raw]` when decoding changed the value (README,
/// "meta.json").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderField {
    /// The field name as sent.
    pub name: String,
    /// Unfolded, RFC 2047 words decoded, UTF-8 (RFC 6532), trimmed.
    pub value: String,
    /// Unfolded and trimmed but not decoded, when that differs from
    /// `value`: what a consumer needs to see an encoded word as sent.
    pub raw: Option<String>,
}

impl Serialize for HeaderField {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(2 + usize::from(self.raw.is_some())))?;
        seq.serialize_element(&self.name)?;
        seq.serialize_element(&self.value)?;
        if let Some(raw) = &self.raw {
            seq.serialize_element(raw)?;
        }
        seq.end()
    }
}

/// What the message is, for consumers (README, "The spool").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A message without attachments.
    Message,
    /// A message with attachments.
    File,
    /// `multipart/report`: a DSN or an MDN.
    Report,
    /// MIME decoding failed; only `message.eml` is reliable.
    Undecodable,
}

/// The selected body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Body {
    /// `body.txt` or `body.html`.
    pub file: String,
    /// The part's `type/subtype`.
    pub content_type: String,
    /// The declared charset, lowercased; the file is always UTF-8.
    pub charset: Option<String>,
}

/// One file under `attachments/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    /// `attachments/<safe name>`.
    pub file: String,
    /// The sender's file name, decoded, before it was made safe.
    pub filename: Option<String>,
    /// The part's `type/subtype`.
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: u64,
    /// SHA-256 of the decoded content, lowercase hex.
    pub sha256: String,
}

/// The decoding result; the caller flattens it into `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decoded {
    /// The main header fields.
    pub headers: Headers,
    /// What the message is.
    pub kind: Kind,
    /// The selected body, if any.
    pub body: Option<Body>,
    /// Every attachment written.
    pub attachments: Vec<Attachment>,
    /// DSN/MDN fields for `kind = report`.
    pub report: Option<serde_json::Value>,
    /// What could not be decoded, in words.
    pub problems: Vec<String>,
    /// Set when body-part selection failed: the entry goes to quarantine
    /// with this reason. The rest is still decoded.
    #[serde(skip)]
    pub quarantine: Option<String>,
    /// Files created, relative to the entry directory, for the caller's fsync.
    #[serde(skip)]
    pub files: Vec<String>,
    /// Directories created (`attachments`), relative to the entry directory.
    #[serde(skip)]
    pub dirs: Vec<String>,
}

/// `mime = no`: headers, kind and report only; no files are written and no
/// body is selected (so never a quarantine). `kind` is computed from the
/// structure as [`decode`] would, except that a non-text part chosen as body
/// is not inspected.
pub fn headers_only(raw: &[u8]) -> Decoded {
    // Reading a slice cannot fail, and nothing here writes.
    headers_only_from(&raw).unwrap_or_else(|e| Decoded {
        headers: Headers::default(),
        kind: Kind::Undecodable,
        body: None,
        attachments: Vec::new(),
        report: None,
        problems: vec![format!("reading the message: {e}")],
        quarantine: None,
        files: Vec::new(),
        dirs: Vec::new(),
    })
}

/// [`headers_only`] for a message in a file (`message.eml`), read in
/// bounded chunks. Fails only when reading it fails.
pub fn headers_only_file(file: File) -> io::Result<Decoded> {
    headers_only_from(&FileSource::new(file)?)
}

fn headers_only_from(src: &dyn Source) -> io::Result<Decoded> {
    let a = analyze(src, &Options::default())?;
    Ok(Decoded {
        headers: a.headers,
        kind: a.kind,
        body: None,
        attachments: Vec::new(),
        report: a.report,
        problems: a.problems,
        quarantine: None,
        files: Vec::new(),
        dirs: Vec::new(),
    })
}

/// Where [`decode_into`] creates an entry's files; names are relative to
/// the entry (`body.txt`, `attachments`, `attachments/report.pdf`). The
/// implementation decides the files' modes and where they live; this module
/// writes only through it.
pub trait Files {
    /// What a created file is written through.
    type File: Write;
    /// A new file, readable by the service's group; never an existing one.
    fn create_file(&self, name: &str) -> io::Result<Self::File>;
    /// A new directory the service's group may empty (README, "The spool").
    fn create_dir(&self, name: &str) -> io::Result<()>;
}

/// `mime = yes`: decodes `raw` and writes the body and attachments into `dir`
/// (an existing, empty entry directory), through the spool's plain-directory
/// [`Files`]. See [`decode_into`].
pub fn decode(raw: &[u8], opts: &Options, dir: &Path) -> io::Result<Decoded> {
    decode_into(raw, opts, dir)
}

/// [`decode`] for a message in a file: see [`decode_file_into`].
pub fn decode_file(file: File, opts: &Options, dir: &Path) -> io::Result<Decoded> {
    decode_file_into(file, opts, dir)
}

/// Decodes `raw` and writes the body and attachments through `files`. Every
/// file is new. Returns an error only for I/O failures in `files`.
pub fn decode_into<F: Files + ?Sized>(
    raw: &[u8],
    opts: &Options,
    files: &F,
) -> io::Result<Decoded> {
    decode_from(&raw, opts, files)
}

/// [`decode_into`] for a message in a file (`message.eml`), read in bounded
/// chunks: memory does not grow with the message. The entry is
/// byte-identical to what [`decode_into`] makes of the same bytes.
pub fn decode_file_into<F: Files + ?Sized>(
    file: File,
    opts: &Options,
    files: &F,
) -> io::Result<Decoded> {
    decode_from(&FileSource::new(file)?, opts, files)
}

fn decode_from<F: Files + ?Sized>(
    src: &dyn Source,
    opts: &Options,
    files: &F,
) -> io::Result<Decoded> {
    let a = analyze(src, opts)?;
    let mut out = Decoded {
        headers: a.headers,
        kind: a.kind,
        body: None,
        attachments: Vec::new(),
        report: a.report,
        problems: a.problems,
        quarantine: a.quarantine,
        files: Vec::new(),
        dirs: Vec::new(),
    };
    if a.kind == Kind::Undecodable {
        return Ok(out);
    }
    let tree = &a.tree;
    let mut w = Writer {
        src,
        files,
        names: UniqueNames::default(),
        attachments_dir: false,
    };
    let mut attachment_parts = a.attachments;
    if let Some(b) = a.body {
        let part = &tree.parts[b];
        match w.write_body(part, &mut out)? {
            true => {}
            false => {
                out.problems.push(format!(
                    "{}: selected as body but not text; saved as an attachment",
                    part.label()
                ));
                attachment_parts.push(b);
                attachment_parts.sort_by_key(|&i| tree.parts[i].leaf);
            }
        }
    }
    if attachment_parts.len() > MAX_ATTACHMENTS {
        out.problems.push(format!(
            "{} attachments; only the first {MAX_ATTACHMENTS} were written, the rest are in message.eml",
            attachment_parts.len()
        ));
        attachment_parts.truncate(MAX_ATTACHMENTS);
    }
    for &p in &attachment_parts {
        let att = w.write_attachment(&tree.parts[p], &mut out)?;
        out.attachments.push(att);
    }
    if out.kind == Kind::Message && !out.attachments.is_empty() {
        out.kind = Kind::File;
    }
    log::debug!(
        "mime: kind {:?}, body {:?}, {} attachments, {} problems",
        out.kind,
        out.body.as_ref().map(|b| b.file.as_str()),
        out.attachments.len(),
        out.problems.len()
    );
    Ok(out)
}

struct Analysis {
    tree: Tree,
    headers: Headers,
    kind: Kind,
    body: Option<usize>,
    attachments: Vec<usize>,
    report: Option<serde_json::Value>,
    quarantine: Option<String>,
    problems: Vec<String>,
}

fn analyze(src: &dyn Source, opts: &Options) -> io::Result<Analysis> {
    let mut tree = tree::build(src)?;
    let mut problems = std::mem::take(&mut tree.problems);
    let root_headers = tree.root_headers();
    let headers = extract_headers(&root_headers);
    let no_fields = root_headers.fields.is_empty();
    drop(root_headers);
    let explicit = opts.body_part_index != 0
        || opts
            .body_part_content_type
            .as_deref()
            .is_some_and(|t| !t.trim().is_empty());

    if no_fields {
        // Text without a header (the first line is not `name: value`) is a
        // message that lost its header: everything is body, as robust
        // readers show it. Nothing at all, or binary data, is no message.
        let body = tree.root().body;
        let mut controls = 0;
        src.read_span(body, &mut |c| {
            controls += text::count_controls(c);
            Ok(())
        })?;
        if !body.is_empty() && controls == 0 {
            problems
                .push("no header fields found: the whole message is read as its body".to_string());
        } else {
            problems.push(
                "no header fields found: not an RFC 5322 message; only message.eml holds it"
                    .to_string(),
            );
            return Ok(Analysis {
                tree,
                headers,
                kind: Kind::Undecodable,
                body: None,
                attachments: Vec::new(),
                report: None,
                quarantine: explicit
                    .then(|| "body part selection: the message could not be decoded".to_string()),
                problems,
            });
        }
    }

    let (body, quarantine) = match select::select(&tree, opts) {
        Ok(b) => (b, None),
        Err(reason) => (None, Some(reason)),
    };
    if body.is_none() && quarantine.is_none() {
        problems.push("the message has no body part".to_string());
    }
    let attachments = select::attachments(&tree, body);
    let report =
        (tree.root().ctype == "multipart/report").then(|| report::parse(&tree, src, &mut problems));
    let kind = if report.is_some() {
        Kind::Report
    } else if attachments.is_empty() {
        Kind::Message
    } else {
        Kind::File
    };
    Ok(Analysis {
        tree,
        headers,
        kind,
        body,
        attachments,
        report,
        quarantine,
        problems,
    })
}

fn extract_headers(h: &HeaderBlock<'_>) -> Headers {
    let all_addresses = |name: &str| -> Vec<String> {
        h.fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .flat_map(|f| address::addresses(f.value))
            .collect()
    };
    let joined = |name: &str| {
        let v = all_addresses(name);
        (!v.is_empty()).then(|| v.join(", "))
    };
    let date = h.text("date").filter(|d| !d.is_empty());
    Headers {
        message_id: h.raw_text("message-id").filter(|s| !s.is_empty()),
        date_iso: h.raw_text("date").and_then(|d| date::date_iso(&d)),
        date,
        from: joined("from"),
        to: all_addresses("to"),
        cc: all_addresses("cc"),
        reply_to: joined("reply-to"),
        subject: h.text("subject"),
        disposition_notification_to: joined("disposition-notification-to"),
        all: h.fields.iter().map(header::field).collect(),
    }
}

/// The bare `local@domain` of each address in an address-list field value
/// (as `headers.all` keeps it), groups flattened; nothing for text that is
/// no address list.
pub fn addr_specs(value: &str) -> Vec<String> {
    address::addr_specs(value.as_bytes())
}

/// The header block of a message as received (RFC 5322 section 2.1; see
/// the `header` module for a missing empty line).
pub fn header_block(raw: &[u8]) -> &[u8] {
    header::split(raw).0
}

/// Labels that mean "plain ASCII" and are in practice often mislabelled
/// UTF-8 or Latin-1.
fn is_ascii_label(label: &str) -> bool {
    matches!(
        label,
        "us-ascii" | "ascii" | "ansi_x3.4-1968" | "iso646-us" | "us" | "646" | "iso-ir-6" | "cp367"
    )
}

struct Writer<'d, F: Files + ?Sized> {
    src: &'d dyn Source,
    files: &'d F,
    names: UniqueNames,
    /// Whether `attachments/` exists yet.
    attachments_dir: bool,
}

impl<F: Files + ?Sized> Writer<'_, F> {
    /// Writes the body; returns false (writing nothing) when a non-text part
    /// was selected and does not decode as text.
    fn write_body(&mut self, part: &Part, out: &mut Decoded) -> io::Result<bool> {
        let declared = part.charset();
        let is_text = part.ctype.starts_with("text/");
        let (encoding, note) = if is_text {
            choose_encoding(self.src, part, declared.as_deref())?
        } else {
            // A non-text part is text only if it decodes cleanly in its
            // declared charset or UTF-8: the Latin-1 fallback would accept
            // any bytes.
            let enc = declared.as_deref().and_then(header::encoding_for);
            (enc.unwrap_or(UTF_8), None)
        };
        if !is_text {
            let mut probe = TextSink::new(encoding, io::sink());
            transfer::decode(&part.cte, (self.src, part.body), |c| {
                // A conversion error into io::sink() cannot happen.
                let _ = probe.write(c);
                Ok(())
            })?;
            let probe = probe.finish()?;
            if probe.replaced || probe.controls > 0 {
                return Ok(false);
            }
        }
        let name = if part.ctype == "text/html" {
            "body.html"
        } else {
            "body.txt"
        };
        let file = self.files.create_file(name)?;
        out.files.push(name.to_string());
        // The conversion buffer is sized to the part (a few KiB for most
        // bodies, at most one CHUNK): a small body is converted and written
        // in one piece, a large one a buffer-full at a time, so no write
        // buffer is needed on top.
        let mut sink = TextSink::for_input(encoding, file, part.body.len());
        let stats = transfer::decode(&part.cte, (self.src, part.body), |c| sink.write(c))?;
        let sink = sink.finish()?;
        let label = part.label();
        if let Some(n) = note {
            out.problems.push(format!("{label}: {n}"));
        }
        if sink.replaced {
            out.problems.push(format!(
                "{label}: bytes not valid in {} were replaced by U+FFFD",
                encoding.name()
            ));
        }
        out.problems.extend(
            stats
                .describe()
                .into_iter()
                .map(|p| format!("{label}: {p}")),
        );
        out.body = Some(Body {
            file: name.to_string(),
            content_type: part.ctype.clone(),
            charset: declared,
        });
        Ok(true)
    }

    fn write_attachment(&mut self, part: &Part, out: &mut Decoded) -> io::Result<Attachment> {
        let filename = part.filename();
        let leaf = part.leaf.unwrap_or(0);
        let generated = || {
            if part.ctype == "message/rfc822" || part.ctype == "message/global" {
                inner_subject(self.src, part)
                    .map(|s| s.replace(['/', '\\'], "_") + ".eml")
                    .and_then(|s| names::sanitize(&s))
                    .unwrap_or_else(|| "message.eml".to_string())
            } else {
                format!("part-{leaf}.{}", names::extension_for(&part.ctype))
            }
        };
        let mut base = filename
            .as_deref()
            .and_then(names::sanitize)
            .unwrap_or_else(generated);
        self.attachments_dir(out)?;
        let (file, rel) = loop {
            let name = self.names.claim(&base);
            // Defence in depth: whatever sanitize() let through, the file
            // must be a direct child of attachments/.
            let single = {
                let mut c = Path::new(&name).components();
                matches!(c.next(), Some(Component::Normal(_))) && c.next().is_none()
            };
            if !single {
                base = format!("part-{leaf}.bin");
                continue;
            }
            let rel = format!("{ATTACHMENTS_DIR}/{name}");
            match self.files.create_file(&rel) {
                Ok(f) => break (f, rel),
                // Only possible if something else writes into the entry;
                // claim() moves on to the next free name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        };
        out.files.push(rel.clone());
        let mut sink = HashingSink::new(file);
        let stats = transfer::decode(&part.cte, (self.src, part.body), |c| sink.write(c))?;
        let (size, sha256) = sink.finish()?;
        let label = part.label();
        out.problems.extend(
            stats
                .describe()
                .into_iter()
                .map(|p| format!("{label}: {p}")),
        );
        Ok(Attachment {
            file: rel,
            filename,
            content_type: part.ctype.clone(),
            size,
            sha256,
        })
    }

    fn attachments_dir(&mut self, out: &mut Decoded) -> io::Result<()> {
        if !self.attachments_dir {
            // Like the entry around it: the service's group may take the
            // entry away, which means deleting what is in here.
            self.files.create_dir(ATTACHMENTS_DIR)?;
            out.dirs.push(ATTACHMENTS_DIR.to_string());
            self.attachments_dir = true;
        }
        Ok(())
    }
}

/// The encoding to convert a body with, and a problem note when the declared
/// charset had to be guessed around. ASCII labels and a missing charset read
/// as UTF-8 when the bytes are valid UTF-8, else as Windows-1252 (Latin-1).
fn choose_encoding(
    src: &dyn Source,
    part: &Part,
    declared: Option<&str>,
) -> io::Result<(&'static Encoding, Option<String>)> {
    let known = declared.and_then(header::encoding_for);
    Ok(match (declared, known) {
        (Some(label), Some(enc)) if !is_ascii_label(label) => (enc, None),
        (Some(label), None) => {
            let enc = sniff_utf8(src, part)?;
            (
                enc,
                Some(format!("unknown charset {label:?}, read as {}", enc.name())),
            )
        }
        _ => (sniff_utf8(src, part)?, None),
    })
}

fn sniff_utf8(src: &dyn Source, part: &Part) -> io::Result<&'static Encoding> {
    let mut probe = TextSink::new(UTF_8, io::sink());
    transfer::decode(&part.cte, (src, part.body), |c| {
        // A conversion error into io::sink() cannot happen.
        let _ = probe.write(c);
        Ok(())
    })?;
    Ok(match probe.finish() {
        Ok(p) if !p.replaced => UTF_8,
        _ => WINDOWS_1252,
    })
}

/// Subject of an attached message, for its file name.
fn inner_subject(src: &dyn Source, part: &Part) -> Option<String> {
    let bytes = transfer::decode_prefix(&part.cte, src, part.body, MAX_HEADER_BYTES);
    let (head, _) = header::split(&bytes);
    header::parse_block(head)
        .text("subject")
        .filter(|s| !s.trim().is_empty())
}

/// Writes decoded attachment bytes while counting and hashing them.
struct HashingSink<W> {
    file: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingSink<W> {
    fn new(file: W) -> Self {
        HashingSink {
            file,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        self.file.write_all(chunk)
    }

    fn finish(self) -> io::Result<(u64, String)> {
        Ok((self.size, crate::hex::lower(&self.hasher.finish())))
    }
}
