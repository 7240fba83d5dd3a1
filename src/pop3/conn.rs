//! The buffered connection both POP3 states share: writing commands (one at
//! a time or several in one write), reading status lines, listings and
//! dot-stuffed bodies, each bounded in size, and held to the [`Pacing`]
//! (each reply's deadline, the phase's end, the minimum data rate). It
//! remembers when an error has left it out of step with the server and
//! then refuses every later exchange ([`Error::Unusable`]).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use log::trace;

use super::command::Command;
use super::error::{net_error, Error, Result};
use super::pace::{Pacing, RateWindow, Stall, StallKind};
use super::proto::{self, Reply, Unstuffer};

/// Longest status or listing line accepted, line end included. RFC 2449 §4
/// caps responses at 512 octets, but real servers exceed that with long
/// `-ERR` texts, IMPLEMENTATION strings or out-of-spec unique-ids; 8 KiB
/// tolerates them while a hostile server still cannot make us buffer without bound.
pub const MAX_LINE: usize = 8 * 1024;

/// Most entries accepted in one LIST or UIDL listing. Far beyond any
/// real maildrop, yet it holds a lying server's UIDL listing to roughly
/// 100 MB (unique-ids are at most 70 octets; invalid ones are cut to 80).
pub const MAX_LISTING_ENTRIES: usize = 1_000_000;

/// Socket read size. A message body streams through a buffer this big, so
/// this is what a RETR costs in memory whatever the message size.
const READ_BUF_SIZE: usize = 16 * 1024;

/// The bounds on what the server may send; tests shrink them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Longest line, line end included.
    pub(super) line: usize,
    /// Most entries in one listing.
    pub(super) entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            line: MAX_LINE,
            entries: MAX_LISTING_ENTRIES,
        }
    }
}

/// Passes writes through until `left` would go negative.
struct Limited<'a> {
    inner: &'a mut dyn Write,
    left: u64,
    exceeded: bool,
}

impl Write for Limited<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            self.exceeded = true;
            return Err(io::Error::other("message size limit exceeded"));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A stretch of the session with a wall-clock end of its own: the greeting
/// and the login together, say, so that a server answering each of a dozen
/// exchanges just inside its deadline still cannot hold the poll.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    /// As a person calls it, for the error message.
    pub name: &'static str,
    /// No reply may be read past this.
    pub end: Instant,
    /// How long it was given, for the error message.
    pub allowed: Duration,
}

impl Phase {
    /// `name`, from now until `allowed` has passed.
    pub fn starting_now(name: &'static str, allowed: Duration) -> Self {
        let now = Instant::now();
        Self {
            name,
            // A duration too large to add means no end.
            end: now
                .checked_add(allowed)
                .unwrap_or(now + Duration::from_secs(1 << 40)),
            allowed,
        }
    }
}

/// Which limit `Conn::due` is.
#[derive(Debug, Clone, Copy)]
enum Due {
    Reply(Duration),
    Phase(Phase),
}

/// The connection shared by both states; deliberately not reachable from
/// outside, so each state exposes only its own commands.
pub(super) struct Conn<S> {
    pub(super) reader: BufReader<S>,
    pub(super) limits: Limits,
    /// The time allowed for each reply's status line (all of a one-line
    /// reply); `None` leaves only the socket's inactivity timeout.
    pub(super) deadline: Option<Duration>,
    /// The rest of the rules; `deadline` is its `response` once set.
    pub(super) pace: Pacing,
    /// The phase under way, if it has an end.
    pub(super) phase: Option<Phase>,
    due: Option<(Instant, Due)>,
    /// The rate rule's window, while multi-line data is read.
    window: Option<RateWindow>,
    /// The command whose reply is being read, for a [`Stall`].
    awaiting: &'static str,
    /// An earlier error left us out of step with the server.
    pub(super) unusable: bool,
    /// The last status line's buffer, reused: a drain reads two status
    /// lines per message.
    spare_line: Vec<u8>,
}

impl<S: Read + Write> Conn<S> {
    /// Wraps `stream`; nothing is read or written yet.
    pub(super) fn new(stream: S, limits: Limits, deadline: Option<Duration>) -> Self {
        Self {
            reader: BufReader::with_capacity(READ_BUF_SIZE, stream),
            limits,
            deadline,
            pace: Pacing::default(),
            phase: None,
            due: None,
            window: None,
            awaiting: "connection",
            unusable: false,
            spare_line: Vec::new(),
        }
    }

    /// Runs one exchange, refusing if an earlier one broke sync.
    pub(super) fn exec<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.unusable {
            return Err(Error::Unusable);
        }
        let result = f(self);
        if let Err(e) = &result {
            self.unusable |= e.breaks_sync();
        }
        result
    }

    /// Writes one command; the log shows it redacted.
    pub(super) fn send(&mut self, cmd: &Command<'_>) -> Result<()> {
        let bytes = cmd.to_bytes()?;
        trace!("C: {}", cmd.redacted());
        self.write_raw(&bytes)
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let stream = self.reader.get_mut();
        stream
            .write_all(bytes)
            .and_then(|()| stream.flush())
            .map_err(net_error)
    }

    /// Several commands in one write (pipelining); nothing is written for none.
    pub(super) fn write_commands<'c>(
        &mut self,
        cmds: impl IntoIterator<Item = Command<'c>>,
    ) -> Result<()> {
        let mut batch = Vec::new();
        for cmd in cmds {
            cmd.write_to(&mut batch)?;
            trace!("C: {}", cmd.redacted());
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.write_raw(&batch)
    }

    /// Holds later replies to `pace` (its `response` becomes the deadline).
    pub(super) fn set_pacing(&mut self, pace: Pacing) {
        self.deadline = pace.response;
        self.pace = pace;
    }

    /// Starts the clocks for the reply to `verb` about to be read: its
    /// deadline, or the phase's end if that comes first.
    pub(super) fn begin_response(&mut self, verb: &'static str) {
        self.awaiting = verb;
        self.window = None;
        let now = Instant::now();
        self.due = self
            .deadline
            .and_then(|d| Some((now.checked_add(d)?, Due::Reply(d))));
        self.bound_by_phase();
    }

    /// After a multi-line reply's status line: no deadline for the rest
    /// but the phase's end; the rate rule instead.
    fn begin_data(&mut self) {
        self.due = None;
        self.bound_by_phase();
        let now = Instant::now();
        self.window = self.pace.rate_window(now);
        if let Some(w) = &mut self.window {
            // What came with the status line counts: it is data too.
            let _ = w.arrived(self.reader.buffer().len() as u64, now);
        }
    }

    fn bound_by_phase(&mut self) {
        if let Some(p) = self.phase {
            if self.due.is_none_or(|(t, _)| p.end < t) {
                self.due = Some((p.end, Due::Phase(p)));
            }
        }
    }

    fn stalled(&self, kind: StallKind) -> Error {
        Error::Stalled(Box::new(Stall {
            server: self.pace.server.clone(),
            command: self.awaiting,
            kind,
        }))
    }

    /// Makes `reader.buffer()` non-empty. After each read the limits are
    /// checked: the socket's inactivity timeout bounds a single read, these
    /// bound a server that drips bytes just often enough to beat it.
    fn fill(&mut self) -> Result<()> {
        let had = self.reader.buffer().len();
        loop {
            match self.reader.fill_buf() {
                Ok([]) => return Err(Error::ConnectionLost),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(net_error(e)),
            }
        }
        if had > 0 {
            // Nothing was read: what is buffered arrived in time.
            return Ok(());
        }
        if let Some(pulse) = &self.pace.pulse {
            pulse();
        }
        let now = Instant::now();
        match self.due {
            Some((due, Due::Reply(d))) if now > due => {
                return Err(self.stalled(StallKind::Reply(d)))
            }
            Some((due, Due::Phase(p))) if now > due => {
                return Err(self.stalled(StallKind::Phase {
                    name: p.name,
                    allowed: p.allowed,
                }))
            }
            _ => {}
        }
        if let Some(w) = &mut self.window {
            let read = self.reader.buffer().len() as u64;
            if let Err(bytes) = w.arrived(read, now) {
                return Err(self.stalled(StallKind::Slow {
                    bytes,
                    window: self.pace.window,
                    min_rate: self.pace.min_rate,
                }));
            }
        }
        Ok(())
    }

    /// One line without its CRLF or LF, at most `limits.line` bytes with it.
    pub(super) fn read_line(&mut self) -> Result<Vec<u8>> {
        let mut line = std::mem::take(&mut self.spare_line);
        line.clear();
        loop {
            self.fill()?;
            let buf = self.reader.buffer();
            let (take, complete) = match buf.iter().position(|b| *b == b'\n') {
                Some(lf) => (lf + 1, true),
                None => (buf.len(), false),
            };
            if line.len() + take > self.limits.line {
                return Err(Error::LineTooLong);
            }
            line.extend_from_slice(&buf[..take]);
            self.reader.consume(take);
            if complete {
                let len = proto::trim_eol(&line).len();
                line.truncate(len);
                return Ok(line);
            }
        }
    }

    /// Reads a status line; `-ERR` becomes [`Error::Server`].
    pub(super) fn read_status(&mut self, verb: &'static str) -> Result<Reply> {
        self.begin_response(verb);
        let line = self.read_line()?;
        trace!("S: {}", line.escape_ascii());
        let reply = proto::parse_status(&line).map_err(|m| Error::malformed(verb, m, &line))?;
        self.spare_line = line;
        if reply.ok {
            Ok(reply)
        } else {
            Err(Error::Server {
                command: verb,
                reply,
            })
        }
    }

    /// One command and its status line.
    pub(super) fn command(&mut self, cmd: &Command<'_>) -> Result<Reply> {
        self.send(cmd)?;
        self.read_status(cmd.verb())
    }

    /// The lines of a multi-line response up to the `.` line, unstuffed and parsed.
    pub(super) fn read_listing<T>(
        &mut self,
        verb: &'static str,
        max_entries: usize,
        mut parse: impl FnMut(&[u8]) -> Result<T, proto::Malformed>,
    ) -> Result<Vec<T>> {
        self.begin_data();
        let mut entries = Vec::new();
        loop {
            let raw = self.read_line()?;
            trace!("S: {}", raw.escape_ascii());
            let line = match raw.as_slice() {
                b"." => return Ok(entries),
                [b'.', rest @ ..] => rest,
                line => line,
            };
            if entries.len() >= max_entries {
                return Err(Error::ListingTooLong);
            }
            entries.push(parse(line).map_err(|m| Error::malformed(verb, m, line))?);
        }
    }

    /// Streams a multi-line body into `sink` straight from the read buffer.
    pub(super) fn read_body(&mut self, sink: &mut dyn Write, max_bytes: u64) -> Result<u64> {
        self.begin_data();
        let mut unstuffer = Unstuffer::new();
        let mut limited = Limited {
            inner: sink,
            left: max_bytes,
            exceeded: false,
        };
        loop {
            self.fill()?;
            let progress = match unstuffer.feed(self.reader.buffer(), &mut limited) {
                Ok(progress) => progress,
                Err(_) if limited.exceeded => {
                    return Err(Error::MessageTooLarge { limit: max_bytes })
                }
                Err(e) => return Err(Error::Sink(e)),
            };
            self.reader.consume(progress.consumed);
            if progress.done {
                trace!("S: <{} bytes>", unstuffer.written());
                return Ok(unstuffer.written());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::time::Duration;

    use crate::pop3::mock::{mock, sent, session, session_with, MockStream};
    use crate::pop3::{Client, Error};

    use super::*;

    #[test]
    fn bytes_after_a_body_belong_to_the_next_reply() {
        // All replies arrive in one read; each response must take only its own bytes.
        let script = b"+OK\r\n+OK\r\n+OK 9\r\nA\r\n..\r\n.\r\n+OK 0\r\n.\r\n+OK 3 120\r\n";
        for one_byte in [false, true] {
            let (mut s, log) = session_with(script, one_byte, Limits::default());
            s.dele_many(&[1, 2], true).unwrap();
            let mut first = Vec::new();
            assert_eq!(s.retr(3, &mut first, 100).unwrap(), 6);
            assert_eq!(first, b"A\r\n.\r\n");
            let mut empty = Vec::new();
            assert_eq!(s.top(4, 0, &mut empty, 100).unwrap(), 0);
            assert!(empty.is_empty());
            assert_eq!(s.list_one(3).unwrap(), 120);
            assert_eq!(
                sent(&log),
                "DELE 1\r\nDELE 2\r\nRETR 3\r\nTOP 4 0\r\nLIST 3\r\n"
            );
        }
    }

    #[test]
    fn max_bytes_caps_the_message() {
        let script = b"+OK\r\n0123456789\r\n.\r\n+OK\r\n";
        let (mut s, _) = session(script);
        let mut out = Vec::new();
        assert_eq!(s.retr(1, &mut out, 12).unwrap(), 12);

        for one_byte in [false, true] {
            let (mut s, _) = session_with(script, one_byte, Limits::default());
            let mut out = Vec::new();
            let err = s.retr(1, &mut out, 11).unwrap_err();
            assert!(matches!(err, Error::MessageTooLarge { limit: 11 }));
            assert!(out.len() <= 11);
            assert!(matches!(s.noop(), Err(Error::Unusable)));
        }
    }

    #[test]
    fn sink_failure_is_its_own_error() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (mut s, _) = session(b"+OK\r\nbody\r\n.\r\n+OK\r\n");
        let err = s.retr(1, &mut Full, 100).unwrap_err();
        assert!(matches!(&err, Error::Sink(e) if e.kind() == io::ErrorKind::StorageFull));
        assert_eq!(err.to_string(), "writing the message failed: disk full");
        assert!(matches!(s.noop(), Err(Error::Unusable)));
    }

    #[test]
    fn line_length_is_bounded() {
        let limits = Limits {
            line: 64,
            ..Limits::default()
        };
        let stat_line = |len: usize| {
            let mut line = b"+OK 1 2 ".to_vec();
            line.resize(len - 2, b'x');
            line.extend_from_slice(b"\r\n");
            line
        };
        let script = [stat_line(64), stat_line(65)].concat();
        let (mut s, _) = session_with(&script, false, limits);
        assert_eq!(s.stat().unwrap(), (1, 2));
        assert!(matches!(s.stat(), Err(Error::LineTooLong)));
        assert!(matches!(s.noop(), Err(Error::Unusable)));

        let mut long = b"+OK ".to_vec();
        long.resize(MAX_LINE, b'x');
        long.extend_from_slice(b"\r\n");
        assert!(matches!(
            Client::connect(mock(&[&long], false)),
            Err(Error::LineTooLong)
        ));
        long.drain(4..6);
        assert!(Client::connect(mock(&[&long], false)).is_ok());
    }

    #[test]
    fn listing_length_is_bounded() {
        let limits = Limits {
            entries: 2,
            ..Limits::default()
        };
        let (mut s, _) = session_with(
            b"+OK\r\n1 1\r\n2 2\r\n.\r\n+OK\r\n1 1\r\n2 2\r\n3 3\r\n.\r\n",
            false,
            limits,
        );
        assert_eq!(s.list().unwrap().len(), 2);
        assert!(matches!(s.list(), Err(Error::ListingTooLong)));
    }

    /// A server sending `chunk` bytes of `data` every `every`.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        chunk: usize,
        every: Duration,
    }

    impl io::Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(self.every);
            let n = buf.len().min(self.chunk).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    impl io::Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn trickle(data: &[u8], chunk: usize, every_ms: u64) -> Trickle {
        Trickle {
            data: data.to_vec(),
            pos: 0,
            chunk,
            every: Duration::from_millis(every_ms),
        }
    }

    fn stall_kind(r: Result<impl std::fmt::Debug>) -> StallKind {
        match r {
            Err(Error::Stalled(s)) => s.kind,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn response_deadline_stops_a_dripping_server() {
        let drip = |script: &[u8]| {
            MockStream::new(script)
                .one_byte_reads()
                .with_read_delay(Duration::from_millis(3))
        };
        let slow = b"+OK dripping greeting\r\n";
        let ms = Duration::from_millis;
        assert_eq!(
            stall_kind(Client::connect_with_deadline(drip(slow), Some(ms(15))).map(drop)),
            StallKind::Reply(ms(15))
        );
        let (mut client, _) = Client::connect_with_deadline(
            drip(b"+OK hi\r\n+OK capability list follows\r\nTOP\r\n.\r\n"),
            Some(Duration::from_secs(10)),
        )
        .unwrap();
        client.set_response_deadline(Some(ms(15)));
        assert_eq!(stall_kind(client.capa()), StallKind::Reply(ms(15)));
        assert!(matches!(client.capa(), Err(Error::Unusable)));
    }

    #[test]
    fn a_phase_ends_however_prompt_each_reply_is() {
        let ms = Duration::from_millis;
        let pace = Pacing {
            response: Some(Duration::from_secs(1)),
            server: "pop.example:110".into(),
            ..Pacing::default()
        };
        // Each reply well inside its second; the phase is over after 40 ms.
        let script = b"+OK hi\r\n+OK\r\nTOP\r\n.\r\n";
        let phase = Phase::starting_now("greeting and login", ms(40));
        let t0 = Instant::now();
        let r = Client::connect_paced(trickle(script, 1, 3), pace.clone(), Some(phase))
            .and_then(|(mut c, _)| c.capa());
        match r {
            Err(Error::Stalled(s)) => {
                assert_eq!(s.server, "pop.example:110");
                assert_eq!(s.command, "CAPA");
                assert!(matches!(s.kind, StallKind::Phase { .. }));
            }
            other => panic!("{other:?}"),
        }
        assert!(t0.elapsed() < ms(500), "{:?}", t0.elapsed());

        // A login lifts the phase: the session's replies have their own limits.
        let phase = Phase::starting_now("greeting and login", ms(30));
        let (client, _) = Client::connect_paced(
            trickle(b"+OK\r\n+OK\r\n+OK\r\n+OK\r\n", 64, 0),
            pace,
            Some(phase),
        )
        .unwrap();
        let mut session = client.user_pass("u", "p").map_err(|(e, _)| e).unwrap();
        std::thread::sleep(ms(40));
        session.noop().unwrap();
    }

    #[test]
    fn message_data_is_held_to_a_rate_not_to_a_deadline() {
        let ms = Duration::from_millis;
        // 15 ms for a status line; then at least 2000 bytes/s over 20 ms windows.
        let pace = Pacing {
            response: Some(ms(15)),
            min_rate: 2000,
            window: ms(20),
            server: "pop.example:110".into(),
            pulse: None,
        };
        let mut script = b"+OK hi\r\n+OK\r\n+OK\r\n+OK 400 octets\r\n".to_vec();
        let body = "0123456789abcdefghijklmnopqrstuvwxyz012\r\n".repeat(10);
        script.extend_from_slice(body.as_bytes());
        script.extend_from_slice(b".\r\n");
        let retr = |stream: Trickle, pace: Pacing| {
            let (client, _) = Client::connect_paced(stream, pace, None)?;
            let mut s = client.user_pass("u", "p").map_err(|(e, _)| e)?;
            let mut out = Vec::new();
            s.retr(1, &mut out, 1 << 20).map(|_| out)
        };
        // 40 bytes every 5 ms (8000 bytes/s): the body takes far longer
        // than a status line may, and that is fine.
        let t0 = Instant::now();
        assert_eq!(
            retr(trickle(&script, 40, 5), pace.clone()).unwrap(),
            body.as_bytes()
        );
        assert!(t0.elapsed() > ms(30), "{:?}", t0.elapsed());
        // Pulses count the reads that brought data.
        let beats = std::rc::Rc::new(std::cell::Cell::new(0));
        let counter = std::rc::Rc::clone(&beats);
        let (client, _) = Client::connect_paced(
            trickle(&script, 40, 0),
            Pacing {
                pulse: Some(std::rc::Rc::new(move || counter.set(counter.get() + 1))),
                ..pace.clone()
            },
            None,
        )
        .unwrap();
        let mut s = client.user_pass("u", "p").map_err(|(e, _)| e).unwrap();
        s.retr(1, &mut io::sink(), 1 << 20).unwrap();
        assert_eq!(beats.get(), script.len().div_ceil(40));

        // A byte every 3 ms (about 330 bytes/s), status lines in time:
        // abandoned once the first window of the body has passed.
        let lenient = Pacing {
            response: Some(Duration::from_secs(1)),
            ..pace
        };
        let t0 = Instant::now();
        match retr(trickle(&script, 1, 3), lenient) {
            Err(Error::Stalled(s)) => {
                assert_eq!(s.command, "RETR");
                match s.kind {
                    StallKind::Slow { bytes, .. } => assert!(bytes < 40, "{bytes}"),
                    k => panic!("{k:?}"),
                }
                assert!(Error::Stalled(s).is_transient());
            }
            other => panic!("{other:?}"),
        }
        // Status lines (about 40 bytes) then one window and one read.
        assert!(t0.elapsed() < ms(400), "{:?}", t0.elapsed());
    }
}
