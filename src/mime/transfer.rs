//! Content-Transfer-Encoding (RFC 2045 section 6), decoded in bounded chunks.
//!
//! mailparse's `get_body_raw()` returns the whole decoded body as one Vec; a
//! 38 MiB attachment would then sit in memory next to the 50 MiB raw message.
//! These decoders read the encoded slice (borrowed from the raw message) and
//! hand decoded output to a sink [`CHUNK`] bytes at a time.

use std::io;

use super::source::{Source, Span};
use crate::hex::digit;

/// Size of the output buffer handed to sinks. 64 KiB keeps the number of
/// write(2) calls low while staying negligible next to the memory bound.
pub const CHUNK: usize = 64 * 1024;

/// A part's transfer encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cte {
    /// 7bit, 8bit, binary, or absent.
    Identity,
    Base64,
    QuotedPrintable,
    /// Anything else (x-uuencode, typos): passed through undecoded.
    Unknown(String),
}

impl Cte {
    pub fn from_header(value: Option<&str>) -> Cte {
        let Some(v) = value else {
            return Cte::Identity;
        };
        let v = v.trim().trim_matches('"').to_ascii_lowercase();
        match v.as_str() {
            "" | "7bit" | "8bit" | "binary" | "7-bit" | "8-bit" => Cte::Identity,
            "base64" => Cte::Base64,
            "quoted-printable" => Cte::QuotedPrintable,
            _ => Cte::Unknown(v),
        }
    }
}

/// What went wrong while decoding, for `problems`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Base64: characters outside the alphabet (whitespace excluded), skipped.
    pub invalid_chars: u64,
    /// Base64: the data ended with a single leftover character (truncated).
    pub dangling: bool,
    /// Quoted-printable: `=` not followed by two hex digits, kept literally.
    pub bad_escapes: u64,
}

impl Stats {
    /// Human-readable descriptions, empty when the data was clean.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.invalid_chars > 0 {
            out.push(format!(
                "{} characters invalid in base64 were skipped",
                self.invalid_chars
            ));
        }
        if self.dangling {
            out.push("base64 data ends in the middle of a byte (truncated?)".to_string());
        }
        if self.bad_escapes > 0 {
            out.push(format!(
                "{} malformed quoted-printable escapes were kept as written",
                self.bad_escapes
            ));
        }
        out
    }
}

/// Longest run of whitespace held back while it may still turn out to be
/// quoted-printable transport padding (RFC 2045 section 6.7, rule 3: it is
/// dropped at the end of a line). Lines are at most 76 characters; a longer
/// run is data, written out as it is, so memory stays bounded.
const MAX_QP_PADDING: usize = 256;

/// Input handed to the quoted-printable decoder at a time, so that one
/// sink call stays within [`CHUNK`] plus a little.
const QP_STEP: usize = 512;

/// What [`decode`] reads: a slice, or a span of a [`Source`].
pub trait Input {
    /// Its length in bytes.
    fn len(&self) -> usize;
    /// Hands its bytes to `f`, at most [`CHUNK`] at a time.
    fn read(self, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()>;
}

impl Input for &[u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn read(self, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        self.chunks(CHUNK).try_for_each(f)
    }
}

impl<S: Source + ?Sized> Input for (&S, Span) {
    fn len(&self) -> usize {
        self.1.len()
    }

    fn read(self, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        self.0.read_span(self.1, f)
    }
}

/// Decodes `input` and feeds the result to `sink` in chunks of at most
/// [`CHUNK`] bytes (plus a little for quoted-printable). Only I/O errors
/// (the sink's, or reading a [`Source`]) are returned. The input is
/// streamed, so the result does not depend on how it is cut up.
pub fn decode<I, F>(cte: &Cte, input: I, mut sink: F) -> io::Result<Stats>
where
    I: Input,
    F: FnMut(&[u8]) -> io::Result<()>,
{
    let mut stats = Stats::default();
    match cte {
        Cte::Identity | Cte::Unknown(_) => input.read(&mut sink)?,
        Cte::Base64 => {
            let mut dec = Base64::default();
            let mut out = Vec::with_capacity(input.len().min(CHUNK));
            // 4 encoded bytes make at most 3 decoded ones, so CHUNK input
            // bytes never overflow the CHUNK output buffer.
            input.read(&mut |chunk| {
                dec.feed(chunk, &mut out);
                if !out.is_empty() {
                    sink(&out)?;
                    out.clear();
                }
                Ok(())
            })?;
            dec.finish(&mut out);
            if !out.is_empty() {
                sink(&out)?;
            }
            stats.invalid_chars = dec.invalid;
            stats.dangling = dec.dangling;
        }
        Cte::QuotedPrintable => {
            let mut dec = Qp::default();
            let mut out = Vec::with_capacity(input.len().min(CHUNK) + 1024);
            input.read(&mut |chunk| {
                for step in chunk.chunks(QP_STEP) {
                    dec.feed(step, &mut out);
                    if out.len() >= CHUNK {
                        sink(&out)?;
                        out.clear();
                    }
                }
                Ok(())
            })?;
            dec.end_line(b"", &mut out);
            if !out.is_empty() {
                sink(&out)?;
            }
            stats.bad_escapes = dec.bad;
        }
    }
    Ok(stats)
}

/// Decodes everything into a Vec, stopping once `limit` bytes are out (for
/// small structured parts: report bodies, attached headers).
pub fn decode_prefix<S: Source + ?Sized>(cte: &Cte, src: &S, span: Span, limit: usize) -> Vec<u8> {
    // Enough encoded input for `limit` decoded bytes in any encoding here.
    let span = Span::new(
        span.start,
        span.end
            .min(span.start.saturating_add(limit.saturating_mul(3))),
    );
    let mut out = Vec::new();
    let _ = decode(cte, (src, span), |c| {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&c[..c.len().min(room)]);
        Ok(())
    });
    out
}

/// A pending `=` escape.
#[derive(Default, Clone, Copy)]
enum Esc {
    #[default]
    None,
    /// `=` seen.
    Eq,
    /// `=` and one hex digit (as written) seen.
    Digit(u8),
}

/// Streaming quoted-printable, line by line in effect: trailing whitespace
/// is transport padding, a final `=` is a soft break, a hard break keeps
/// the line ending it had, and `=` not followed by two hex digits is kept
/// literally. Whitespace and an escape are held back until what follows
/// shows what they are.
#[derive(Default)]
struct Qp {
    esc: Esc,
    /// Whitespace that is padding if the line ends after it.
    ws: Vec<u8>,
    /// The last byte of the line so far was `\r`.
    cr: bool,
    bad: u64,
}

impl Qp {
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &c in input {
            match c {
                b'\n' => {
                    let eol: &[u8] = if self.cr { b"\r\n" } else { b"\n" };
                    self.end_line(eol, out);
                    continue;
                }
                b' ' | b'\t' | b'\r' => {
                    if self.ws.len() >= MAX_QP_PADDING {
                        self.flush_pending(out);
                    }
                    self.ws.push(c);
                }
                _ => {
                    if !self.ws.is_empty() {
                        self.flush_pending(out);
                    }
                    self.byte(c, out);
                }
            }
            self.cr = c == b'\r';
        }
    }

    /// What follows the held-back bytes is data: they are too.
    fn flush_pending(&mut self, out: &mut Vec<u8>) {
        self.bad_escape(out);
        out.extend_from_slice(&self.ws);
        self.ws.clear();
    }

    /// A pending escape that did not get its two hex digits is kept as written.
    fn bad_escape(&mut self, out: &mut Vec<u8>) {
        match std::mem::take(&mut self.esc) {
            Esc::None => {}
            Esc::Eq => {
                self.bad += 1;
                out.push(b'=');
            }
            Esc::Digit(h) => {
                self.bad += 1;
                out.extend_from_slice(&[b'=', h]);
            }
        }
    }

    fn byte(&mut self, c: u8, out: &mut Vec<u8>) {
        match self.esc {
            Esc::None if c == b'=' => self.esc = Esc::Eq,
            Esc::None => out.push(c),
            Esc::Eq if digit(c).is_some() => self.esc = Esc::Digit(c),
            Esc::Digit(h) if digit(c).is_some() => {
                let v = digit(h).unwrap_or(0) << 4 | digit(c).unwrap_or(0);
                out.push(v);
                self.esc = Esc::None;
            }
            Esc::Eq | Esc::Digit(_) => {
                self.bad_escape(out);
                self.byte(c, out);
            }
        }
    }

    /// The line ends with `eol` (empty at the end of the data): padding is
    /// dropped, a final `=` joins the next line.
    fn end_line(&mut self, eol: &[u8], out: &mut Vec<u8>) {
        self.ws.clear();
        self.cr = false;
        if let Esc::Eq = self.esc {
            self.esc = Esc::None;
            return;
        }
        self.bad_escape(out);
        out.extend_from_slice(eol);
    }
}

const INVALID: u8 = 0xff;
const SKIP: u8 = 0xfe;
const PAD: u8 = 0xfd;

const fn b64_table() -> [u8; 256] {
    let mut t = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t[b' ' as usize] = SKIP;
    t[b'\t' as usize] = SKIP;
    t[b'\r' as usize] = SKIP;
    t[b'\n' as usize] = SKIP;
    t[b'=' as usize] = PAD;
    t
}

static B64: [u8; 256] = b64_table();

/// Lenient streaming base64: whitespace and stray characters are skipped,
/// padding may be missing or repeated, and decoding resumes after padding
/// (some mailers concatenate separately encoded blocks).
#[derive(Default)]
struct Base64 {
    acc: u32,
    n: u8,
    invalid: u64,
    dangling: bool,
}

impl Base64 {
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &c in input {
            let v = B64[c as usize];
            if v < 64 {
                self.acc = self.acc << 6 | u32::from(v);
                self.n += 1;
                if self.n == 4 {
                    out.extend_from_slice(&[
                        (self.acc >> 16) as u8,
                        (self.acc >> 8) as u8,
                        self.acc as u8,
                    ]);
                    self.acc = 0;
                    self.n = 0;
                }
            } else if v == PAD {
                self.flush_partial(out);
            } else if v == INVALID {
                self.invalid += 1;
            }
        }
    }

    fn flush_partial(&mut self, out: &mut Vec<u8>) {
        match self.n {
            2 => out.push((self.acc >> 4) as u8),
            3 => out.extend_from_slice(&[(self.acc >> 10) as u8, (self.acc >> 2) as u8]),
            1 => self.dangling = true,
            _ => {}
        }
        self.acc = 0;
        self.n = 0;
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.flush_partial(out);
    }
}

/// Whole-buffer lenient base64, for RFC 2047 "B" words.
pub fn decode_base64_into(input: &[u8], out: &mut Vec<u8>) {
    let mut d = Base64::default();
    d.feed(input, out);
    d.finish(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cte: &Cte, input: &[u8]) -> (Vec<u8>, Stats) {
        let mut out = Vec::new();
        let stats = decode(cte, input, |c| {
            assert!(c.len() <= CHUNK + 1024);
            out.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        (out, stats)
    }

    #[test]
    fn base64_lenient() {
        let ok = Stats::default();
        assert_eq!(
            run(&Cte::Base64, b"aGVsbG8gd29ybGQ="),
            (b"hello world".to_vec(), ok.clone())
        );
        // Line breaks, missing padding.
        assert_eq!(
            run(&Cte::Base64, b"aGVsbG8g\r\nd29ybGQ"),
            (b"hello world".to_vec(), ok.clone())
        );
        // Extra padding.
        assert_eq!(
            run(&Cte::Base64, b"aGk===\r\n"),
            (b"hi".to_vec(), ok.clone())
        );
        // Stray characters are skipped and counted.
        let (out, st) = run(&Cte::Base64, b"aGV*sbG8!");
        assert_eq!(out, b"hello");
        assert_eq!(st.invalid_chars, 2);
        // Concatenated blocks.
        assert_eq!(run(&Cte::Base64, b"aGk=aGk="), (b"hihi".to_vec(), ok));
        // Truncated.
        let (out, st) = run(&Cte::Base64, b"aGVsb");
        assert_eq!(out, b"hel");
        assert!(st.dangling);
    }

    #[test]
    fn base64_across_chunks() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut enc = Vec::new();
        for line in data.chunks(57) {
            let mut l = Vec::new();
            encode_b64(line, &mut l);
            enc.extend_from_slice(&l);
            enc.extend_from_slice(b"\r\n");
        }
        assert_eq!(run(&Cte::Base64, &enc).0, data);
    }

    fn encode_b64(data: &[u8], out: &mut Vec<u8>) {
        let a = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for c in data.chunks(3) {
            let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for k in 0..4 {
                if k <= c.len() {
                    out.push(a[(n >> (18 - 6 * k) & 63) as usize]);
                } else {
                    out.push(b'=');
                }
            }
        }
    }

    #[test]
    fn quoted_printable() {
        let (out, st) = run(
            &Cte::QuotedPrintable,
            b"caf=C3=A9 soft=\r\nbreak  \r\ntrailing=20 \r\n=3d=3D bad=zz end=",
        );
        assert_eq!(
            out,
            "café softbreak\r\ntrailing \r\n== bad=zz end".as_bytes()
        );
        assert_eq!(st.bad_escapes, 1);
        // Soft break with whitespace after the '='.
        assert_eq!(run(&Cte::QuotedPrintable, b"a= \nb\n").0, b"ab\n");
    }
}
