//! A scripted stream for unit tests, after rust-imap's `MockStream`, and the
//! clients and sessions on it that the tests of every POP3 file share.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::thread;
use std::time::Duration;

use super::conn::Limits;
use super::{Client, Session};

/// What the client wrote, shared so it can be inspected after the client is consumed.
#[derive(Debug, Default)]
pub struct Written {
    /// Every byte written, in order.
    pub bytes: Vec<u8>,
    /// How many `write` calls carried data.
    pub calls: usize,
    /// In [`MockStream::gated`] mode: the most commands ever written whose
    /// replies had not been read to their last byte (the pipelining window).
    pub max_ahead: usize,
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
    /// Gated mode: where the greeting ends and where each reply ends in
    /// `script`; reply `i` can be read only once the client has written
    /// `i + 1` command lines.
    gates: Option<(usize, Vec<usize>)>,
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
            gates: None,
        }
    }

    /// A server that answers only what it was asked: `greeting` is readable
    /// at once, `replies[i]` once the client has sent its `i + 1`th command
    /// line, as with a real server. Reading when nothing is released is an
    /// error (`WouldBlock`: a real server would leave the client waiting
    /// forever), and [`Written::max_ahead`] records how far the client ran
    /// ahead of the replies.
    pub fn gated(greeting: &[u8], replies: &[&[u8]]) -> Self {
        let mut ends = Vec::new();
        let mut end = greeting.len();
        for r in replies {
            end += r.len();
            ends.push(end);
        }
        let mut s = Self::new([&[greeting][..], replies].concat().concat());
        s.gates = Some((greeting.len(), ends));
        s
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
        let mut limit = self.script.len();
        if let Some((greeting, gates)) = &self.gates {
            let asked = count_lines(&self.written.borrow().bytes);
            limit = match asked {
                0 => *greeting,
                n => gates.get(n - 1).copied().unwrap_or(self.script.len()),
            };
            if self.pos >= limit && limit < self.script.len() {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "client waits for a reply to a command it has not sent",
                ));
            }
        }
        let left = &self.script[self.pos..limit];
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

fn count_lines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| **b == b'\n').count()
}

impl Write for MockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut w = self.written.borrow_mut();
        if !buf.is_empty() {
            w.calls += 1;
        }
        w.bytes.extend_from_slice(buf);
        if let Some((_, gates)) = &self.gates {
            // Replies read to their last byte are answered; the rest are in flight.
            let answered = gates.iter().filter(|end| **end <= self.pos).count();
            let ahead = count_lines(&w.bytes).saturating_sub(answered);
            w.max_ahead = w.max_ahead.max(ahead);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(super) const GREETING: &[u8] = b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n";
pub(super) const LOGIN_OK: &[u8] = b"+OK\r\n+OK logged in\r\n";

/// What the client wrote, as [`MockStream::written`] hands it out.
pub(super) type Log = Rc<RefCell<Written>>;

pub(super) fn mock(parts: &[&[u8]], one_byte: bool) -> MockStream {
    let stream = MockStream::new(parts.concat());
    if one_byte {
        stream.one_byte_reads()
    } else {
        stream
    }
}

pub(super) fn sent(log: &Log) -> String {
    String::from_utf8_lossy(&log.borrow().bytes).into_owned()
}

/// A client past the greeting whose server then plays `script`.
pub(super) fn client_with(script: &[u8], one_byte: bool) -> (Client<MockStream>, Log) {
    let stream = mock(&[GREETING, script], one_byte);
    let log = stream.written();
    let (client, _) = Client::connect(stream).unwrap();
    (client, log)
}

/// A logged-in session whose server then plays `script`; the log starts empty.
pub(super) fn session_with(
    script: &[u8],
    one_byte: bool,
    limits: Limits,
) -> (Session<MockStream>, Log) {
    let stream = mock(&[GREETING, LOGIN_OK, script], one_byte);
    let log = stream.written();
    let (client, _) = Client::connect_with(stream, limits, None).unwrap();
    let session = client.user_pass("u", "p").unwrap();
    *log.borrow_mut() = Written::default();
    (session, log)
}

pub(super) fn session(script: &[u8]) -> (Session<MockStream>, Log) {
    session_with(script, false, Limits::default())
}

/// A logged-in session with a server that answers only what was asked
/// ([`MockStream::gated`]); the log keeps the login (`USER u`, `PASS p`).
pub(super) fn gated_session(replies: &[&[u8]]) -> (Session<MockStream>, Log) {
    let mut all: Vec<&[u8]> = vec![b"+OK\r\n", b"+OK logged in\r\n"];
    all.extend_from_slice(replies);
    let stream = MockStream::gated(GREETING, &all);
    let log = stream.written();
    let (client, _) = Client::connect(stream).unwrap();
    (client.user_pass("u", "p").unwrap(), log)
}
