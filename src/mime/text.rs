//! Streaming charset conversion to UTF-8 for the selected body.

use std::io::{self, Write};

use encoding_rs::{Decoder, Encoding};

use super::transfer::CHUNK;

/// Converts bytes in one charset to UTF-8 and writes them to `W`, a chunk at a
/// time, noting replaced (undecodable) sequences and control characters.
pub struct TextSink<W: Write> {
    decoder: Decoder,
    buf: Vec<u8>,
    out: W,
    /// Some input was not valid in the charset and became U+FFFD.
    pub replaced: bool,
    /// C0 control characters other than tab, line feed, carriage return and
    /// form feed in the output: their presence means "binary, not text".
    pub controls: u64,
    /// UTF-8 bytes written.
    pub written: u64,
}

impl<W: Write> TextSink<W> {
    pub fn new(encoding: &'static Encoding, out: W) -> Self {
        Self::for_input(encoding, out, CHUNK)
    }

    /// For at most `input_len` bytes of input: the conversion buffer is no
    /// bigger than that needs (most bodies are a few KiB; zeroing a 64 KiB
    /// buffer per message showed up in profiles). More input still works,
    /// a buffer-full at a time.
    pub fn for_input(encoding: &'static Encoding, out: W, input_len: usize) -> Self {
        let decoder = encoding.new_decoder_with_bom_removal();
        let need = decoder
            .max_utf8_buffer_length(input_len)
            .unwrap_or(CHUNK)
            .clamp(16, CHUNK);
        TextSink {
            // A BOM of the declared charset is dropped; a BOM of another
            // charset is not allowed to override the declaration.
            decoder,
            buf: vec![0; need],
            out,
            replaced: false,
            controls: 0,
            written: 0,
        }
    }

    pub fn write(&mut self, input: &[u8]) -> io::Result<()> {
        self.convert(input, false)
    }

    /// Flushes the decoder's state and returns the writer.
    pub fn finish(mut self) -> io::Result<Self> {
        self.convert(&[], true)?;
        self.out.flush()?;
        Ok(self)
    }

    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.out
    }

    fn convert(&mut self, mut input: &[u8], last: bool) -> io::Result<()> {
        loop {
            let (res, read, written, replaced) =
                self.decoder.decode_to_utf8(input, &mut self.buf, last);
            self.replaced |= replaced;
            let chunk = &self.buf[..written];
            self.controls += count_controls(chunk);
            self.written += written as u64;
            self.out.write_all(chunk)?;
            input = &input[read..];
            if res == encoding_rs::CoderResult::InputEmpty {
                return Ok(());
            }
        }
    }
}

/// How many bytes of `chunk` are C0 controls other than tab, line feed,
/// form feed and carriage return. This runs over every body byte, so it is
/// written for the vectoriser: byte-wide lanes, no branches, a byte
/// counter per block of 255.
pub fn count_controls(chunk: &[u8]) -> u64 {
    chunk
        .chunks(255)
        .map(|block| {
            let mut n = 0u8;
            for &b in block {
                n +=
                    u8::from((b < 0x20) & (b != b'\t') & (b != b'\n') & (b != 0x0c) & (b != b'\r'));
            }
            u64::from(n)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_multibyte_across_writes() {
        let mut s = TextSink::new(encoding_rs::UTF_8, Vec::new());
        s.write(&[0xc3]).unwrap();
        s.write(&[0xa4, b'!']).unwrap();
        let s = s.finish().unwrap();
        assert!(!s.replaced);
        assert_eq!(s.into_inner(), "ä!".as_bytes());
    }

    #[test]
    fn control_count_matches_the_rule() {
        let all: Vec<u8> = (0..=255).collect();
        let slow = all
            .iter()
            .filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c))
            .count() as u64;
        assert_eq!(count_controls(&all), slow);
        assert_eq!(slow, 28);
        assert_eq!(count_controls(b"plain\ttext\r\n\x0c"), 0);
    }

    #[test]
    fn small_buffer_takes_more_input() {
        let text = "grüße ".repeat(5000);
        for hint in [0, 1, 10, 100_000] {
            let mut s = TextSink::for_input(encoding_rs::UTF_8, Vec::new(), hint);
            s.write(text.as_bytes()).unwrap();
            assert_eq!(
                s.finish().unwrap().into_inner(),
                text.as_bytes(),
                "hint {hint}"
            );
        }
    }

    #[test]
    fn replacement_and_controls() {
        let mut s = TextSink::new(encoding_rs::UTF_8, Vec::new());
        s.write(b"a\xffb\x00").unwrap();
        let s = s.finish().unwrap();
        assert!(s.replaced);
        assert_eq!(s.controls, 1);
    }
}
