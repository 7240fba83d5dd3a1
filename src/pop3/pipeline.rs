//! Pipelining (RFC 2449 §6.6): RETRs and DELEs sent ahead of their replies
//! in bounded windows, so a mailbox drains in a few round trips instead of
//! one per message, while neither side can block writing into a full socket
//! buffer. [`Retrieval`] is a run of RETRs with DELEs travelling among them;
//! [`dele_windowed`] is a run of DELEs alone. [`Session`](super::Session)
//! starts both.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use super::command::Command;
use super::conn::{Conn, Phase};
use super::error::{Error, Result};

/// RETR commands in flight when pipelining (RFC 2449 §6.6). Client and
/// server deadlock if both block writing into full socket buffers; we
/// write only these short commands (at most ~3 KiB at once), which any
/// send buffer takes without waiting for the server to read, and read
/// replies as they come. With half the window topped up at a time, 128 to
/// 256 requests are in flight: 4 KiB messages over a 50 ms round trip then
/// arrive at ~15 MiB/s, so latency costs two or three round trips for a
/// few hundred messages instead of one per message.
pub const PIPELINE_WINDOW: usize = 256;

/// DELE commands in flight when pipelining: they are ~12 bytes and their
/// replies ~30, so 512 of them (~6 KiB written, ~15 KiB answered) still
/// fit the smallest socket buffers with room to spare, and a whole
/// mailbox is deleted in a round trip or two.
pub const DELE_WINDOW: usize = 512;

/// Announced bytes (LIST sizes) of the RETRs in flight, at most; a larger
/// message goes alone. Bounds how much a shutdown has to read and discard
/// before it can send QUIT (see [`Retrieval::finish`]), and what the server
/// queues towards us. 1 MiB per 50 ms round trip is still 20 MiB/s.
pub const PIPELINE_WINDOW_BYTES: u64 = 1 << 20;

/// One message of a [`Session::retrieve`](super::Session::retrieve) plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retr {
    /// The message number.
    pub n: u32,
    /// Its size as LIST announced it: what the byte window counts.
    pub size: u64,
    /// Most body bytes accepted, as for [`Session::retr`](super::Session::retr).
    /// No deadline depends on the size: the body is held to the minimum
    /// rate of the session's [`Pacing`](super::Pacing) instead.
    pub max_bytes: u64,
}

/// The messages of a retrieval run, by position. A `Vec<Retr>` is one; a
/// caller with a large mailbox can instead compute each from its own
/// compact listing, so that a plan of a million messages is not a million
/// `Retr`s in memory.
pub trait Plan {
    /// How many messages.
    fn len(&self) -> usize;
    /// Message `i` (below [`len`](Self::len)).
    fn get(&self, i: usize) -> Retr;
    /// No message at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Plan for Vec<Retr> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn get(&self, i: usize) -> Retr {
        self[i]
    }
}

/// The sliding window of a pipelined run: which commands are sent and
/// which are answered. Commands go out in order; `answered <= sent`.
#[derive(Debug)]
struct Window {
    size: usize,
    bytes: u64,
    sent: usize,
    answered: usize,
    bytes_in_flight: u64,
}

impl Window {
    fn new(size: usize, bytes: u64) -> Self {
        Self {
            size,
            bytes,
            sent: 0,
            answered: 0,
            bytes_in_flight: 0,
        }
    }

    fn in_flight(&self) -> usize {
        self.sent - self.answered
    }

    /// The commands (indexes below `total`) to send now. Nothing while more
    /// than half the window is in flight, so commands go out in batches
    /// (one write, one TLS record) instead of one per reply; then as many as
    /// fit the count and the byte bound, always at least one when nothing is
    /// in flight, so a message larger than the byte bound still goes alone.
    fn admit(&mut self, total: usize, cost: impl Fn(usize) -> u64) -> std::ops::Range<usize> {
        let start = self.sent;
        if self.in_flight() * 2 > self.size {
            return start..start;
        }
        while self.sent < total && self.in_flight() < self.size {
            let c = cost(self.sent);
            if self.in_flight() > 0 && self.bytes_in_flight.saturating_add(c) > self.bytes {
                break;
            }
            self.bytes_in_flight = self.bytes_in_flight.saturating_add(c);
            self.sent += 1;
        }
        start..self.sent
    }

    fn answer(&mut self, cost: u64) {
        self.answered += 1;
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(cost);
    }
}

/// DELE for each of `msgs`, up to `size` in flight: the first window in one
/// write, then the next half whenever half has been answered. After a `-ERR`
/// nothing more is sent, the replies already asked for are still read (so
/// the connection stays in step), and the first `-ERR` is returned.
pub(super) fn dele_windowed<S: Read + Write>(
    c: &mut Conn<S>,
    msgs: &[u32],
    size: usize,
) -> Result<()> {
    // Check every number first so a bad one cannot leave a batch half sent.
    for &n in msgs {
        Command::Dele(n).check()?;
    }
    let mut window = Window::new(size, u64::MAX);
    let mut refused = None;
    while window.answered < msgs.len() {
        if refused.is_none() {
            let send = window.admit(msgs.len(), |_| 0);
            c.write_commands(msgs[send].iter().map(|&n| Command::Dele(n)))?;
        }
        if window.in_flight() == 0 {
            break;
        }
        match c.read_status("DELE") {
            Ok(_) => {}
            Err(e @ Error::Server { .. }) => {
                refused.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
        window.answer(0);
    }
    refused.map_or(Ok(()), Err)
}

/// A run of RETRs from [`Session::retrieve`](super::Session::retrieve), read
/// back in plan order.
///
/// Dropping it with replies still unread leaves the connection out of step:
/// the session is then [`Error::Unusable`] (no QUIT, so nothing is deleted).
/// [`finish`](Self::finish) reads and discards them instead.
pub struct Retrieval<'a, S: Read + Write> {
    conn: &'a mut Conn<S>,
    plan: Box<dyn Plan + 'a>,
    window: Window,
    saved_phase: Option<Phase>,
    /// DELEs sent and not yet answered, each with the number of RETRs sent
    /// before it: their replies come before those of the RETRs sent after.
    deles: VecDeque<(usize, u32)>,
    /// The first `-ERR` to one of [`delete`](Self::delete)'s DELEs.
    dele_refused: Option<Error>,
}

impl<S: Read + Write> fmt::Debug for Retrieval<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retrieval")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl<'a, S: Read + Write> Retrieval<'a, S> {
    /// A run of `plan` with a window of `size` commands and `bytes`
    /// announced bytes; nothing is sent yet.
    pub(super) fn start(
        conn: &'a mut Conn<S>,
        plan: Box<dyn Plan + 'a>,
        size: usize,
        bytes: u64,
    ) -> Result<Self> {
        conn.exec(|_| {
            // Every number is checked before any is sent.
            (0..plan.len()).try_for_each(|i| Command::Retr(plan.get(i).n).check())
        })?;
        let saved_phase = conn.phase;
        Ok(Self {
            conn,
            plan,
            window: Window::new(size.max(1), bytes),
            saved_phase,
            deles: VecDeque::new(),
            dele_refused: None,
        })
    }

    /// The message whose reply [`read_next`](Self::read_next) reads, if any is left.
    pub fn peek(&self) -> Option<Retr> {
        let i = self.window.answered;
        (i < self.plan.len()).then(|| self.plan.get(i))
    }

    /// Announced bytes of the RETRs sent but not yet read.
    pub fn bytes_in_flight(&self) -> u64 {
        self.window.bytes_in_flight
    }

    /// DELE for messages while the run goes on (messages the caller has
    /// already stored); returns how many of `msgs`, from the front, were sent.
    /// Pipelined, they go out in one write, as many as keep
    /// [`DELE_WINDOW`] DELEs in flight (the rest wait for a later call, as
    /// the client must never write so much that it blocks while the server
    /// waits for it to read), and their replies are read in turn among the
    /// RETRs'. Lock-step, each is answered before this returns. A `-ERR`
    /// does not stop the run: it is kept, no further DELE is sent, and
    /// [`finish`](Self::finish) returns it, so the caller does not QUIT and
    /// nothing is deleted.
    pub fn delete(&mut self, msgs: &[u32]) -> Result<usize> {
        if self.dele_refused.is_some() || msgs.is_empty() {
            return Ok(0);
        }
        let Self {
            conn,
            window,
            deles,
            dele_refused,
            ..
        } = self;
        conn.exec(|c| {
            // Every number is checked before any is sent.
            for &n in msgs {
                Command::Dele(n).to_bytes()?;
            }
            // A window of one is lock-step (see Session::retrieve).
            if window.size == 1 {
                for (i, &n) in msgs.iter().enumerate() {
                    c.send(&Command::Dele(n))?;
                    if let Err(e) = c.read_status("DELE") {
                        if !matches!(e, Error::Server { .. }) {
                            return Err(e);
                        }
                        dele_refused.get_or_insert(e);
                        return Ok(i + 1);
                    }
                }
                return Ok(msgs.len());
            }
            let now = &msgs[..msgs.len().min(DELE_WINDOW.saturating_sub(deles.len()))];
            c.write_commands(now.iter().map(|&n| Command::Dele(n)))?;
            deles.extend(now.iter().map(|&n| (window.sent, n)));
            Ok(now.len())
        })
    }

    /// Reads the replies to the DELEs sent before the `retrs`-th RETR went
    /// out (all of them for `usize::MAX`).
    fn read_deles(&mut self, retrs: usize) -> Result<()> {
        while let Some(&(before, _)) = self.deles.front() {
            if before > retrs {
                break;
            }
            self.deles.pop_front();
            let refused = &mut self.dele_refused;
            let r = self.conn.exec(|c| c.read_status("DELE"));
            match r {
                Ok(_) => {}
                Err(e @ Error::Server { .. }) => {
                    refused.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Tops up the pipeline, then streams the next message's body, unstuffed,
    /// into `sink` and returns its length, as [`Session::retr`](super::Session::retr) does. A
    /// `-ERR` for this message ([`Error::Server`]) keeps the run in step:
    /// the next call reads the next message. Any other error makes the
    /// session unusable.
    pub fn read_next(&mut self, sink: &mut dyn Write) -> Result<u64> {
        let Some(r) = self.peek() else {
            return Err(Error::Protocol("RETR: no message left to read".into()));
        };
        self.read_deles(self.window.answered)?;
        let Self {
            conn, plan, window, ..
        } = self;
        let result = conn.exec(|c| {
            let send = window.admit(plan.len(), |i| plan.get(i).size);
            c.write_commands(send.map(|i| Command::Retr(plan.get(i).n)))?;
            c.read_status("RETR")?;
            c.read_body(sink, r.max_bytes)
        });
        // Not counted if the exchange was refused before its RETR went out.
        if window.in_flight() > 0 {
            window.answer(r.size);
        }
        result
    }

    /// Stops here: sends nothing more, reads and discards the replies already
    /// asked for (at most [`PIPELINE_WINDOW_BYTES`] announced, or one larger
    /// message), so the session can go on to DELE and QUIT. With `within`,
    /// gives up after that long ([`Error::Timeout`]; the session is then
    /// unusable).
    pub fn finish(mut self, within: Option<Duration>) -> Result<()> {
        if let Some(d) = within {
            // A phase of its own, so that a message body, which has no
            // deadline but the rate rule, cannot outlast it either.
            self.conn.phase = Some(Phase::starting_now(
                "reading the replies already asked for",
                d,
            ));
        }
        let over = |conn: &Conn<S>| {
            conn.phase
                .is_some_and(|p| within.is_some() && Instant::now() >= p.end)
        };
        while self.window.in_flight() > 0 {
            self.read_deles(self.window.answered)?;
            let r = self.plan.get(self.window.answered);
            if over(self.conn) {
                return Err(Error::Timeout);
            }
            let result = self.conn.exec(|c| {
                c.read_status("RETR")?;
                c.read_body(&mut io::sink(), r.max_bytes)
            });
            self.window.answer(r.size);
            match result {
                Ok(_) | Err(Error::Server { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if over(self.conn) && !self.deles.is_empty() {
            return Err(Error::Timeout);
        }
        self.read_deles(usize::MAX)?;
        self.dele_refused.take().map_or(Ok(()), Err)
    }
}

impl<S: Read + Write> Drop for Retrieval<'_, S> {
    fn drop(&mut self) {
        if self.window.in_flight() > 0 || !self.deles.is_empty() {
            // Replies we asked for are still coming: out of step for good.
            self.conn.unusable = true;
        }
        self.conn.phase = self.saved_phase;
    }
}

#[cfg(test)]
mod tests {
    use crate::pop3::conn::Limits;
    use crate::pop3::mock::{gated_session, sent, session, session_with, MockStream};

    use super::*;

    #[test]
    fn pipelined_dele_is_one_write_and_keeps_sync_after_err() {
        let (mut s, log) = session(b"+OK\r\n-ERR no such message\r\n+OK\r\n+OK\r\n");
        let err = s.dele_many(&[1, 2, 3], true).unwrap_err();
        assert!(matches!(
            err,
            Error::Server {
                command: "DELE",
                ..
            }
        ));
        assert_eq!(log.borrow().calls, 1);
        s.noop().unwrap();
        assert_eq!(sent(&log), "DELE 1\r\nDELE 2\r\nDELE 3\r\nNOOP\r\n");
    }

    #[test]
    fn pipelined_dele_goes_in_windows() {
        let msgs: Vec<u32> = (1..=130).collect();
        let (mut s, log) = session(&b"+OK\r\n".repeat(130));
        s.dele_windowed(&msgs, 64).unwrap();
        // 64 at once, then 32 whenever half the window is answered, then the last 2.
        assert_eq!(log.borrow().calls, 4);
        assert!(sent(&log).ends_with("DELE 129\r\nDELE 130\r\n"));

        let n = DELE_WINDOW * 2 + 10;
        let many: Vec<u32> = (1..=n as u32).collect();
        let ok = b"+OK\r\n".repeat(n);
        let replies: Vec<&[u8]> = ok.chunks(5).collect();
        let (mut s, log) = gated_session(&replies);
        s.dele_many(&many, true).unwrap();
        assert_eq!(log.borrow().max_ahead, DELE_WINDOW);

        // A -ERR stops the sending; what is in flight is still read.
        let mut replies = vec![&b"+OK\r\n"[..]; 130];
        replies[4] = b"-ERR no such message\r\n";
        let (mut s, log) = gated_session(&replies);
        let err = s.dele_windowed(&msgs, 64).unwrap_err();
        assert!(matches!(
            err,
            Error::Server {
                command: "DELE",
                ..
            }
        ));
        assert_eq!(sent(&log).matches("DELE").count(), 64);

        let (mut s, log) = session(b"");
        let err = s.dele_many(&[1, 0], true).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        assert_eq!(sent(&log), "");
        s.dele_many(&[], true).unwrap();
    }

    fn plan(sizes: &[u64]) -> Vec<Retr> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| Retr {
                n: i as u32 + 1,
                size,
                max_bytes: 1 << 20,
            })
            .collect()
    }

    /// `+OK` and a body `<n>-<text>` of message n, dot-stuffed, and what RETR yields.
    fn retr_reply(n: usize) -> (Vec<u8>, Vec<u8>) {
        let body = format!("Subject: {n}\r\n\r\n.dot {n}\r\n");
        let wire = format!(
            "+OK {} octets\r\nSubject: {n}\r\n\r\n..dot {n}\r\n.\r\n",
            body.len()
        );
        (wire.into_bytes(), body.into_bytes())
    }

    fn read_all(r: &mut Retrieval<'_, MockStream>) -> Vec<Result<Vec<u8>>> {
        let mut out = Vec::new();
        while r.peek().is_some() {
            let mut body = Vec::new();
            out.push(r.read_next(&mut body).map(|_| body));
        }
        out
    }

    #[test]
    fn pipelined_retr_keeps_a_bounded_window() {
        let (wires, bodies): (Vec<_>, Vec<_>) = (1..=10).map(retr_reply).unzip();
        let replies: Vec<&[u8]> = wires.iter().map(Vec::as_slice).collect();
        let (mut s, log) = gated_session(&replies);
        let mut r = s.retrieve_windowed(plan(&[100; 10]), 4, u64::MAX).unwrap();
        let got: Vec<Vec<u8>> = read_all(&mut r).into_iter().map(Result::unwrap).collect();
        drop(r);
        assert_eq!(got, bodies);
        s.noop().unwrap_err(); // the gated server has no reply scripted for it
        let log = log.borrow();
        assert_eq!(log.max_ahead, 4);
        let wire = String::from_utf8_lossy(&log.bytes);
        let retrs: Vec<String> = (1..=10).map(|n| format!("RETR {n}\r\n")).collect();
        assert_eq!(
            wire,
            format!("USER u\r\nPASS p\r\n{}NOOP\r\n", retrs.concat())
        );
        // USER, PASS, RETR 1-4, then 5-6, 7-8, 9-10 as half the window frees, NOOP.
        assert_eq!(log.calls, 2 + 4 + 1);
    }

    #[test]
    fn pipelined_retr_counts_announced_bytes() {
        let (wires, bodies): (Vec<_>, Vec<_>) = (1..=5).map(retr_reply).unzip();
        let replies: Vec<&[u8]> = wires.iter().map(Vec::as_slice).collect();
        let (mut s, log) = gated_session(&replies);
        // 400 + 400 fit 1000 bytes; 5000 goes alone; then 10 + 10.
        let mut r = s
            .retrieve_windowed(plan(&[400, 400, 400, 5000, 10]), 8, 1000)
            .unwrap();
        assert_eq!(r.bytes_in_flight(), 0);
        let mut first = Vec::new();
        r.read_next(&mut first).unwrap();
        assert_eq!(r.bytes_in_flight(), 400);
        let rest: Vec<Vec<u8>> = read_all(&mut r).into_iter().map(Result::unwrap).collect();
        assert_eq!([vec![first], rest].concat(), bodies);
        drop(r);
        assert_eq!(log.borrow().max_ahead, 2);
    }

    #[test]
    fn real_window_and_lock_step() {
        let n = PIPELINE_WINDOW * 2 + 10;
        let (wires, bodies): (Vec<_>, Vec<_>) = (1..=n).map(retr_reply).unzip();
        let replies: Vec<&[u8]> = wires.iter().map(Vec::as_slice).collect();
        for (pipelined, ahead) in [(true, PIPELINE_WINDOW), (false, 1)] {
            let (mut s, log) = gated_session(&replies);
            let mut r = s.retrieve(plan(&vec![100; n]), pipelined).unwrap();
            let got: Vec<Vec<u8>> = read_all(&mut r).into_iter().map(Result::unwrap).collect();
            drop(r);
            assert_eq!(got, bodies);
            assert_eq!(log.borrow().max_ahead, ahead, "pipelined {pipelined}");
        }
    }

    #[test]
    fn deletes_travel_among_the_retrs() {
        let (wires, bodies): (Vec<_>, Vec<_>) = (1..=4).map(retr_reply).unzip();
        // On the wire: RETR 1, RETR 2, DELE 1, RETR 3, DELE 2, RETR 4, DELE 3, DELE 4.
        let ok: &[u8] = b"+OK\r\n";
        let replies: Vec<&[u8]> = vec![
            &wires[0], &wires[1], ok, &wires[2], ok, &wires[3], ok, ok, ok,
        ];
        let (mut s, log) = gated_session(&replies);
        let mut r = s.retrieve_windowed(plan(&[100; 4]), 2, u64::MAX).unwrap();
        let mut got = Vec::new();
        for n in 1..=4u32 {
            let mut body = Vec::new();
            r.read_next(&mut body).unwrap();
            got.push(body);
            r.delete(&[n]).unwrap();
        }
        r.finish(None).unwrap();
        s.noop().unwrap();
        assert_eq!(got, bodies);
        assert_eq!(
            sent(&log).trim_start_matches("USER u\r\nPASS p\r\n"),
            "RETR 1\r\nRETR 2\r\nDELE 1\r\nRETR 3\r\nDELE 2\r\nRETR 4\r\nDELE 3\r\nDELE 4\r\nNOOP\r\n"
        );

        // A -ERR to a DELE: the RETRs go on, no DELE is sent once it is read
        // (DELE 9 went out before), finish reports it, and the session stays
        // in step (the caller then does not QUIT).
        let replies: Vec<&[u8]> = vec![
            &wires[0],
            &wires[1],
            b"-ERR [SYS/TEMP] busy\r\n",
            &wires[2],
            ok,
            &wires[3],
            ok,
        ];
        let (mut s, log) = gated_session(&replies);
        let mut r = s.retrieve_windowed(plan(&[100; 4]), 2, u64::MAX).unwrap();
        let mut body = Vec::new();
        r.read_next(&mut body).unwrap();
        r.delete(&[1]).unwrap();
        for _ in 2..=4 {
            body.clear();
            r.read_next(&mut body).unwrap();
            r.delete(&[9]).unwrap();
        }
        assert!(matches!(
            r.finish(None),
            Err(Error::Server {
                command: "DELE",
                ..
            })
        ));
        s.noop().unwrap();
        assert_eq!(
            sent(&log).trim_start_matches("USER u\r\nPASS p\r\n"),
            "RETR 1\r\nRETR 2\r\nDELE 1\r\nRETR 3\r\nDELE 9\r\nRETR 4\r\nNOOP\r\n"
        );
        // Lock-step: each DELE is answered at once; after a -ERR no more go out.
        let lock_step: Vec<&[u8]> = vec![&wires[0], b"-ERR no\r\n", &wires[1], ok];
        let (mut s, log) = gated_session(&lock_step);
        let mut r = s.retrieve_windowed(plan(&[100; 2]), 1, u64::MAX).unwrap();
        let mut body = Vec::new();
        r.read_next(&mut body).unwrap();
        r.delete(&[1, 2]).unwrap();
        r.read_next(&mut body).unwrap();
        assert!(r.finish(None).is_err());
        s.noop().unwrap();
        assert_eq!(
            sent(&log).trim_start_matches("USER u\r\nPASS p\r\n"),
            "RETR 1\r\nDELE 1\r\nRETR 2\r\nNOOP\r\n"
        );

        // No more than DELE_WINDOW in flight: the rest wait for the caller.
        let (mut s, log) = gated_session(&[&wires[0]]);
        let mut r = s.retrieve_windowed(plan(&[100]), 2, u64::MAX).unwrap();
        r.read_next(&mut body).unwrap();
        let many: Vec<u32> = (1..=DELE_WINDOW as u32 + 10).collect();
        assert_eq!(r.delete(&many[..10]).unwrap(), 10);
        assert_eq!(r.delete(&many[10..]).unwrap(), DELE_WINDOW - 10);
        assert_eq!(r.delete(&many).unwrap(), 0);
        assert_eq!(log.borrow().calls, 2 + 1 + 2);
        drop(r);

        // Dropped with a DELE reply still to come: out of step.
        let (mut s, _) = gated_session(&[&wires[0], ok, ok]);
        let mut r = s.retrieve_windowed(plan(&[100]), 2, u64::MAX).unwrap();
        r.read_next(&mut body).unwrap();
        r.delete(&[1]).unwrap();
        drop(r);
        assert!(matches!(s.noop(), Err(Error::Unusable)));
    }

    #[test]
    fn pipelined_retr_err_mid_window_keeps_sync() {
        let (one, body1) = retr_reply(1);
        let (three, body3) = retr_reply(3);
        let script = [
            &one[..],
            b"-ERR [SYS/TEMP] message 2 vanished\r\n",
            &three,
            b"+OK\r\n",
        ];
        for one_byte in [false, true] {
            let (mut s, log) = session_with(&script.concat(), one_byte, Limits::default());
            let mut r = s.retrieve_windowed(plan(&[100; 3]), 3, u64::MAX).unwrap();
            let got = read_all(&mut r);
            drop(r);
            assert_eq!(got[0].as_ref().unwrap(), &body1);
            assert!(matches!(
                got[1],
                Err(Error::Server {
                    command: "RETR",
                    ..
                })
            ));
            assert_eq!(got[2].as_ref().unwrap(), &body3);
            s.noop().unwrap();
            assert_eq!(sent(&log), "RETR 1\r\nRETR 2\r\nRETR 3\r\nNOOP\r\n");
        }
    }

    #[test]
    fn pipelined_retr_eof_mid_window() {
        let (one, body1) = retr_reply(1);
        let (two, _) = retr_reply(2);
        for cut in [0, 5, two.len() - 3] {
            let script = [&one[..], &two[..cut]].concat();
            let (mut s, _) = session(&script);
            let mut r = s.retrieve_windowed(plan(&[100; 3]), 3, u64::MAX).unwrap();
            let mut body = Vec::new();
            r.read_next(&mut body).unwrap();
            assert_eq!(body, body1);
            assert!(matches!(
                r.read_next(&mut Vec::new()),
                Err(Error::ConnectionLost)
            ));
            assert!(matches!(r.read_next(&mut Vec::new()), Err(Error::Unusable)));
            drop(r);
            assert!(matches!(s.noop(), Err(Error::Unusable)), "cut {cut}");
        }
    }

    #[test]
    fn pipelined_retr_replies_in_one_read() {
        // Every reply (and the next command's) arrives in one read, or byte by
        // byte: each message takes exactly its own bytes.
        let (wires, bodies): (Vec<_>, Vec<_>) = (1..=6).map(retr_reply).unzip();
        let script = [wires.concat(), b"+OK 1 2\r\n".to_vec()].concat();
        for one_byte in [false, true] {
            let (mut s, log) = session_with(&script, one_byte, Limits::default());
            let mut r = s.retrieve(plan(&[100; 6]), true).unwrap();
            let got: Vec<Vec<u8>> = read_all(&mut r).into_iter().map(Result::unwrap).collect();
            drop(r);
            assert_eq!(got, bodies);
            assert_eq!(s.stat().unwrap(), (1, 2));
            assert_eq!(
                log.borrow().calls,
                2,
                "all six RETRs in one write, then STAT"
            );
        }
    }

    #[test]
    fn finishing_early_drains_what_was_asked() {
        let (wires, _) = (1..=5).map(retr_reply).unzip::<_, _, Vec<_>, Vec<_>>();
        let mut replies: Vec<&[u8]> = wires.iter().take(4).map(Vec::as_slice).collect();
        replies.push(b"+OK\r\n");
        let (mut s, log) = gated_session(&replies);
        let mut r = s.retrieve_windowed(plan(&[100; 5]), 4, u64::MAX).unwrap();
        r.read_next(&mut Vec::new()).unwrap();
        r.finish(None).unwrap();
        s.noop().unwrap();
        let wire = sent(&log);
        assert!(
            wire.ends_with("RETR 1\r\nRETR 2\r\nRETR 3\r\nRETR 4\r\nNOOP\r\n"),
            "{wire}"
        );

        // Dropped with replies in flight: out of step, no QUIT possible.
        let (mut s, _) = gated_session(&replies);
        let mut r = s.retrieve_windowed(plan(&[100; 5]), 4, u64::MAX).unwrap();
        r.read_next(&mut Vec::new()).unwrap();
        drop(r);
        assert!(matches!(s.noop(), Err(Error::Unusable)));
    }

    #[test]
    fn pipelined_retr_checks_numbers_first() {
        let (mut s, log) = session(b"");
        let mut bad = plan(&[1, 1]);
        bad[1].n = 0;
        assert!(matches!(
            s.retrieve(bad, true),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(sent(&log), "");
        let mut r = s.retrieve(Vec::new(), true).unwrap();
        assert!(r.peek().is_none());
        assert!(matches!(
            r.read_next(&mut Vec::new()),
            Err(Error::Protocol(_))
        ));
        r.finish(None).unwrap();
    }

    #[test]
    fn pipelined_retr_size_limit_breaks_sync() {
        let (one, _) = retr_reply(1);
        let (two, _) = retr_reply(2);
        let (mut s, _) = session(&[one, two].concat());
        let mut p = plan(&[100; 2]);
        p[0].max_bytes = 3;
        let mut r = s.retrieve(p, true).unwrap();
        assert!(matches!(
            r.read_next(&mut Vec::new()),
            Err(Error::MessageTooLarge { limit: 3 })
        ));
        drop(r);
        assert!(matches!(s.noop(), Err(Error::Unusable)));
    }
}
