//! Content-Transfer-Encoding (RFC 2045 section 6), decoded in bounded chunks.
//!
//! mailparse's `get_body_raw()` returns the whole decoded body as one Vec; a
//! 38 MiB attachment would then sit in memory next to the 50 MiB raw message.
//! These decoders read the encoded slice (borrowed from the raw message) and
//! hand decoded output to a sink [`CHUNK`] bytes at a time.

use std::io;

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

/// Decodes `input` and feeds the result to `sink` in chunks of at most
/// [`CHUNK`] bytes. Only the sink's I/O errors are returned.
pub fn decode<F>(cte: &Cte, input: &[u8], mut sink: F) -> io::Result<Stats>
where
    F: FnMut(&[u8]) -> io::Result<()>,
{
    let mut stats = Stats::default();
    match cte {
        Cte::Identity | Cte::Unknown(_) => {
            for chunk in input.chunks(CHUNK) {
                sink(chunk)?;
            }
        }
        Cte::Base64 => {
            let mut dec = Base64::default();
            let mut out = Vec::with_capacity(input.len().min(CHUNK));
            // 4 encoded bytes make at most 3 decoded ones, so CHUNK input
            // bytes never overflow the CHUNK output buffer.
            for chunk in input.chunks(CHUNK) {
                dec.feed(chunk, &mut out);
                if !out.is_empty() {
                    sink(&out)?;
                    out.clear();
                }
            }
            dec.finish(&mut out);
            if !out.is_empty() {
                sink(&out)?;
            }
            stats.invalid_chars = dec.invalid;
            stats.dangling = dec.dangling;
        }
        Cte::QuotedPrintable => {
            let mut out = Vec::with_capacity(input.len().min(CHUNK) + 1024);
            let mut pos = 0;
            while pos < input.len() {
                let (line, eol, next) = next_line(input, pos);
                decode_qp_line(line, eol, &mut out, &mut stats.bad_escapes);
                if out.len() >= CHUNK {
                    sink(&out)?;
                    out.clear();
                }
                pos = next;
            }
            if !out.is_empty() {
                sink(&out)?;
            }
        }
    }
    Ok(stats)
}

/// Decodes everything into a Vec, stopping once `limit` bytes are out (for
/// small structured parts: report bodies, attached headers).
pub fn decode_prefix(cte: &Cte, input: &[u8], limit: usize) -> Vec<u8> {
    // Enough encoded input for `limit` decoded bytes in any encoding here.
    let input = &input[..input.len().min(limit.saturating_mul(3))];
    let mut out = Vec::new();
    let _ = decode(cte, input, |c| {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&c[..c.len().min(room)]);
        Ok(())
    });
    out
}

/// Returns (line without its ending, the ending, index after it).
fn next_line(input: &[u8], pos: usize) -> (&[u8], &[u8], usize) {
    match input[pos..].iter().position(|&b| b == b'\n') {
        Some(off) => {
            let nl = pos + off;
            if nl > pos && input[nl - 1] == b'\r' {
                (&input[pos..nl - 1], &input[nl - 1..nl + 1], nl + 1)
            } else {
                (&input[pos..nl], &input[nl..nl + 1], nl + 1)
            }
        }
        None => (&input[pos..], &input[input.len()..], input.len()),
    }
}

/// One quoted-printable line: trailing whitespace is transport padding, a final
/// `=` is a soft break, a hard break keeps the line ending it had.
fn decode_qp_line(line: &[u8], eol: &[u8], out: &mut Vec<u8>, bad: &mut u64) {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b' ' | b'\t' | b'\r') {
        end -= 1;
    }
    let mut line = &line[..end];
    let soft = line.last() == Some(&b'=');
    if soft {
        line = &line[..line.len() - 1];
    }
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        if c == b'=' {
            if let (Some(h), Some(l)) = (
                line.get(i + 1).and_then(|&x| digit(x)),
                line.get(i + 2).and_then(|&x| digit(x)),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            *bad += 1;
        }
        out.push(c);
        i += 1;
    }
    if !soft {
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
