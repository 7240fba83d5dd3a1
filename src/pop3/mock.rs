//! A scripted stream for unit tests, after rust-imap's `MockStream`.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::thread;
use std::time::Duration;

/// What the client wrote, shared so it can be inspected after the client is consumed.
#[derive(Debug, Default)]
pub struct Written {
    /// Every byte written, in order.
    pub bytes: Vec<u8>,
    /// How many `write` calls carried data.
    pub calls: usize,
}

/// Reads come from a script; writes are captured. When the script runs out,
/// reads return EOF (0 bytes), or the error set with [`MockStream::with_err`].
pub struct MockStream {
    script: Vec<u8>,
    pos: usize,
    written: Rc<RefCell<Written>>,
    one_byte: bool,
    end: Option<io::ErrorKind>,
    delay: Option<Duration>,
}

impl MockStream {
    pub fn new(script: impl Into<Vec<u8>>) -> Self {
        Self {
            script: script.into(),
            pos: 0,
            written: Rc::default(),
            one_byte: false,
            end: None,
            delay: None,
        }
    }

    /// Each read returns at most one byte, to exercise every split.
    pub fn one_byte_reads(mut self) -> Self {
        self.one_byte = true;
        self
    }

    /// After the script, reads fail with `kind` instead of returning EOF.
    pub fn with_err(mut self, kind: io::ErrorKind) -> Self {
        self.end = Some(kind);
        self
    }

    /// Every read first sleeps this long: a slow or dripping server.
    pub fn with_read_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// A handle on the captured writes.
    pub fn written(&self) -> Rc<RefCell<Written>> {
        Rc::clone(&self.written)
    }
}

impl Read for MockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(delay) = self.delay {
            thread::sleep(delay);
        }
        let left = &self.script[self.pos..];
        if left.is_empty() {
            return match self.end {
                Some(kind) => Err(io::Error::new(kind, "scripted error")),
                None => Ok(0),
            };
        }
        let n = left
            .len()
            .min(buf.len())
            .min(if self.one_byte { 1 } else { usize::MAX });
        buf[..n].copy_from_slice(&left[..n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for MockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut w = self.written.borrow_mut();
        if !buf.is_empty() {
            w.calls += 1;
        }
        w.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
