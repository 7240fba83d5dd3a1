//! Where the decoder reads a message from: a slice in memory (a message
//! small enough to keep while it downloads) or `message.eml` on disk, read
//! in bounded chunks with `pread(2)` so that decoding a message of any size
//! needs a few buffers, never the message (README, "Performance").
//!
//! Both sources give the structure walker (`tree`) the same lines, so that
//! both decode a message into byte-identical entries: a line longer than
//! [`MAX_LINE_VIEW`] is seen as its first bytes plus a marker, in memory as
//! on disk.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::transfer::CHUNK;
use super::MAX_HEADER_BYTES;

/// Most bytes of one line the structure walker looks at. Longer lines are
/// body data (a base64 attachment without line breaks, say): only their
/// start can make them a delimiter (a boundary comes from a header block,
/// so it is shorter than [`MAX_HEADER_BYTES`]) or a header field, and a
/// header block is cut at `MAX_HEADER_BYTES` anyway. The cap keeps one
/// line's copy bounded.
pub const MAX_LINE_VIEW: usize = MAX_HEADER_BYTES + 64;

/// Marker after a cut line whose rest holds more than whitespace: it keeps
/// the view from trimming down to a delimiter the whole line is not.
const CUT_MARK: u8 = b'x';

/// A byte range of the message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One line as the structure walker sees it.
pub struct Line<'a> {
    /// Where the line starts in the message.
    pub pos: usize,
    /// Its bytes without the `\n` (cut at [`MAX_LINE_VIEW`]).
    pub view: &'a [u8],
    /// Where the next line starts.
    pub next: usize,
    /// Its last byte (before the `\n`) is `\r`.
    pub cr: bool,
    /// It ends with `\n` (only the message's last line may not).
    pub nl: bool,
}

/// Lines, one at a time.
pub trait Lines {
    fn next_line(&mut self) -> Option<Line<'_>>;
    /// The read error that ended the lines early, if one did.
    fn take_error(&mut self) -> Option<io::Error>;
}

/// A message to decode.
pub trait Source {
    /// Its size in bytes.
    fn size(&self) -> usize;
    /// Hands the bytes of `span` to `f`, at most [`CHUNK`] at a time.
    fn read_span(&self, span: Span, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()>;
    /// Its lines from `pos` (a line start) on.
    fn lines_from(&self, pos: usize) -> Box<dyn Lines + '_>;
}

impl Source for &[u8] {
    fn size(&self) -> usize {
        self.len()
    }

    fn read_span(&self, span: Span, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let end = span.end.min(self.len());
        let start = span.start.min(end);
        for chunk in self[start..end].chunks(CHUNK) {
            f(chunk)?;
        }
        Ok(())
    }

    fn lines_from(&self, pos: usize) -> Box<dyn Lines + '_> {
        Box::new(SliceLines {
            raw: self,
            pos,
            cut: Vec::new(),
        })
    }
}

struct SliceLines<'a> {
    raw: &'a [u8],
    pos: usize,
    /// The view of a cut line.
    cut: Vec<u8>,
}

impl Lines for SliceLines<'_> {
    fn next_line(&mut self) -> Option<Line<'_>> {
        let raw = self.raw;
        let pos = self.pos;
        if pos >= raw.len() {
            return None;
        }
        let (end, next, nl) = match memchr::memchr(b'\n', &raw[pos..]) {
            Some(o) => (pos + o, pos + o + 1, true),
            None => (raw.len(), raw.len(), false),
        };
        self.pos = next;
        let line = &raw[pos..end];
        let cr = line.last() == Some(&b'\r');
        let view = if line.len() <= MAX_LINE_VIEW {
            line
        } else {
            self.cut.clear();
            self.cut.extend_from_slice(&line[..MAX_LINE_VIEW]);
            if !all_blank(&line[MAX_LINE_VIEW..]) {
                self.cut.push(CUT_MARK);
            }
            &self.cut
        };
        Some(Line {
            pos,
            view,
            next,
            cr,
            nl,
        })
    }

    fn take_error(&mut self) -> Option<io::Error> {
        None
    }
}

/// `message.eml` on disk, read with `pread(2)`: each reader keeps its own
/// position, so a look-ahead does not disturb the main pass.
pub struct FileSource {
    file: File,
    size: usize,
}

impl FileSource {
    pub fn new(file: File) -> io::Result<FileSource> {
        let size = usize::try_from(file.metadata()?.len())
            .map_err(|_| io::Error::other("message too large for this platform"))?;
        Ok(FileSource { file, size })
    }
}

impl Source for FileSource {
    fn size(&self) -> usize {
        self.size
    }

    fn read_span(&self, span: Span, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let end = span.end.min(self.size);
        let mut pos = span.start.min(end);
        let mut buf = vec![0; span.len().clamp(1, CHUNK)];
        while pos < end {
            let want = (end - pos).min(buf.len());
            let n = read_at(&self.file, &mut buf[..want], pos)?;
            f(&buf[..n])?;
            pos += n;
        }
        Ok(())
    }

    fn lines_from(&self, pos: usize) -> Box<dyn Lines + '_> {
        Box::new(FileLines {
            src: self,
            buf: vec![0; CHUNK],
            buf_pos: pos,
            head: 0,
            tail: 0,
            line: Vec::new(),
            error: None,
        })
    }
}

/// `pread` of as many bytes as are there, up to `buf`'s length; an early
/// end of file is an error (the file is ours and does not shrink).
fn read_at(file: &File, buf: &mut [u8], pos: usize) -> io::Result<usize> {
    loop {
        match file.read_at(buf, pos as u64) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

struct FileLines<'a> {
    src: &'a FileSource,
    /// Read buffer: `buf[head..tail]` is unread; `buf[0]` is the file's
    /// byte at `buf_pos`.
    buf: Vec<u8>,
    buf_pos: usize,
    head: usize,
    tail: usize,
    /// The current line's view.
    line: Vec<u8>,
    error: Option<io::Error>,
}

impl FileLines<'_> {
    /// Refills the buffer once it is read; false at the end of the file or
    /// on an error.
    fn fill(&mut self) -> bool {
        self.buf_pos += self.tail;
        self.head = 0;
        self.tail = 0;
        let left = self.src.size.saturating_sub(self.buf_pos);
        if left == 0 {
            return false;
        }
        let want = left.min(self.buf.len());
        match read_at(&self.src.file, &mut self.buf[..want], self.buf_pos) {
            Ok(n) => {
                self.tail = n;
                true
            }
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }
}

impl Lines for FileLines<'_> {
    fn next_line(&mut self) -> Option<Line<'_>> {
        if self.error.is_some() || (self.head == self.tail && !self.fill()) {
            return None;
        }
        let pos = self.buf_pos + self.head;
        self.line.clear();
        let (mut len, mut nl, mut cr, mut blank_tail) = (0usize, false, false, true);
        loop {
            if self.head == self.tail && !self.fill() {
                break;
            }
            let avail = &self.buf[self.head..self.tail];
            let (take, found) = match memchr::memchr(b'\n', avail) {
                Some(o) => (o, true),
                None => (avail.len(), false),
            };
            let part = &avail[..take];
            let room = MAX_LINE_VIEW.saturating_sub(self.line.len());
            self.line.extend_from_slice(&part[..take.min(room)]);
            if take > room {
                blank_tail &= all_blank(&part[room..]);
            }
            if let Some(&last) = part.last() {
                cr = last == b'\r';
            }
            len += take;
            self.head += take;
            if found {
                self.head += 1;
                nl = true;
                break;
            }
        }
        if self.error.is_some() {
            return None;
        }
        if len > MAX_LINE_VIEW && !blank_tail {
            self.line.push(CUT_MARK);
        }
        let next = pos + len + usize::from(nl);
        Some(Line {
            pos,
            view: &self.line,
            next,
            cr,
            nl,
        })
    }

    fn take_error(&mut self) -> Option<io::Error> {
        self.error.take()
    }
}

/// Only whitespace a delimiter line may end with.
fn all_blank(b: &[u8]) -> bool {
    b.iter().all(|&c| matches!(c, b' ' | b'\t' | b'\r'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

    /// Every line's position, view and ending, as a source gives them.
    fn lines(src: &dyn Source, from: usize) -> Vec<(usize, Vec<u8>, usize, bool, bool)> {
        let mut it = src.lines_from(from);
        let mut out = Vec::new();
        while let Some(l) = it.next_line() {
            out.push((l.pos, l.view.to_vec(), l.next, l.cr, l.nl));
        }
        assert!(it.take_error().is_none());
        out
    }

    #[test]
    fn file_and_slice_give_the_same_lines() {
        let mut raw = Vec::new();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for i in 0..3000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 200) as usize + if i % 1000 == 999 { MAX_LINE_VIEW } else { 0 };
            let fill = if i % 2 == 0 { b' ' } else { b'a' };
            raw.extend(std::iter::repeat_n(fill, len));
            raw.extend_from_slice(match seed % 3 {
                0 => &b"\r\n"[..],
                1 => b"\n",
                _ => b"\r\r\n",
            });
        }
        raw.extend_from_slice(b"last, unterminated\r");
        let path = std::env::temp_dir().join(format!("popspool-source-{}", std::process::id()));
        fs::File::create(&path).unwrap().write_all(&raw).unwrap();
        let file = FileSource::new(fs::File::open(&path).unwrap()).unwrap();
        fs::remove_file(&path).unwrap();
        let slice: &[u8] = &raw;
        let want = lines(&slice, 0);
        assert_eq!(want.len(), 3001);
        assert!(want.iter().any(|l| l.1.len() > MAX_LINE_VIEW));
        assert_eq!(lines(&file, 0), want);
        let from = want[1500].0;
        assert_eq!(lines(&file, from), lines(&slice, from));
        let mut a = Vec::new();
        file.read_span(Span::new(10, raw.len() - 5), &mut |c| {
            assert!(c.len() <= CHUNK);
            a.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        assert!(a == raw[10..raw.len() - 5]);
    }
}
