//! POP3 client: RFC 1939, with CAPA, response codes and PIPELINING (RFC 2449),
//! STLS (RFC 2595), the SYS and AUTH response codes (RFC 3206) and AUTH
//! (RFC 5034).
//!
//! The POP3 states are types. [`Client`] is the AUTHORIZATION state: it can
//! only ask for capabilities, upgrade with STLS, log in or quit. Logging in
//! consumes it and returns a [`Session`] (TRANSACTION); a failed login hands
//! the `Client` back with the error so another mechanism can be tried.
//! [`Session::quit`] consumes the session: the UPDATE state, where deletions
//! are committed.
//!
//! I/O is blocking over any `Read + Write`; the caller sets the socket's
//! inactivity timeouts. Every read is bounded: a status or listing line by
//! [`MAX_LINE`], a listing by [`MAX_LISTING_ENTRIES`], a message body by the
//! caller's `max_bytes`, and, when set, a whole response by the response
//! deadline. Message bodies stream to a sink and never sit in memory.
//!
//! After any error other than a `-ERR` reply or a rejected argument, the
//! connection may be out of step with the server (half a message still
//! unread, say), so every later command fails with [`Error::Unusable`]:
//! reconnect. The server rolls back deletions of a session that ends without
//! a successful QUIT.
//!
//! At `trace` level the dialogue is logged as `C: ...` / `S: ...` lines with
//! passwords, APOP digests and SASL exchanges redacted and message bodies
//! reduced to their size.

pub mod command;
#[cfg(test)]
pub(crate) mod mock;
pub mod proto;

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use log::trace;

pub use command::Command;
pub use proto::{Capabilities, Expire, Reply, RespCode, Uid, Unstuffer};

/// Longest status or listing line accepted, line end included. RFC 2449 §4
/// caps responses at 512 octets, but real servers exceed that with long
/// `-ERR` texts, IMPLEMENTATION strings or out-of-spec unique-ids; 8 KiB
/// tolerates them while a hostile server still cannot make us buffer without bound.
pub const MAX_LINE: usize = 8 * 1024;

/// Most entries accepted in one LIST or UIDL listing. Far beyond any
/// real maildrop, yet it holds a lying server's UIDL listing to roughly
/// 100 MB (unique-ids are at most 70 octets; invalid ones are cut to 80).
pub const MAX_LISTING_ENTRIES: usize = 1_000_000;

/// Most CAPA lines accepted. Servers list 10 to 20; CAPA lines are kept as
/// strings of up to [`MAX_LINE`] each, so this caps them at 8 MiB.
const MAX_CAPA_LINES: usize = 1000;

/// Socket read size. A message body streams through a buffer this big, so
/// this is what a RETR costs in memory whatever the message size.
const READ_BUF_SIZE: usize = 16 * 1024;

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

/// Challenges allowed in one AUTH exchange. Real mechanisms need at most
/// three; a server that keeps challenging must not hold us (lettre also stops at 10).
const MAX_SASL_ROUNDS: usize = 10;

/// Server text shown in an error message, in characters: enough to read,
/// short enough for one log line.
const MAX_SHOWN_TEXT: usize = 200;

/// A malformed line quoted in a protocol error, in characters: enough to recognise it.
const MAX_QUOTED_LINE: usize = 80;

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking POP3.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the socket failed.
    Io(io::Error),
    /// Writing a RETR/TOP body to the caller's sink failed (disk full, say);
    /// the rest of the message is unread, so the session is [`Error::Unusable`].
    Sink(io::Error),
    /// A read or write timed out, or a response missed its deadline.
    Timeout,
    /// The server closed the connection.
    ConnectionLost,
    /// The server answered `-ERR`; the connection is still in step.
    Server {
        /// The command refused (`"connection"` for the greeting).
        command: &'static str,
        /// The reply, with its response code.
        reply: Reply,
    },
    /// A reply that does not follow the protocol: which command, what was wrong.
    Protocol(String),
    /// A status or listing line longer than [`MAX_LINE`].
    LineTooLong,
    /// A listing longer than [`MAX_LISTING_ENTRIES`] (CAPA: 1000 lines).
    ListingTooLong,
    /// A RETR/TOP body would have exceeded the caller's `max_bytes`. The rest
    /// of the message is still unread, so the session is [`Error::Unusable`].
    MessageTooLarge {
        /// The `max_bytes` given.
        limit: u64,
    },
    /// An argument that cannot be sent (CR, LF, NUL, too long, ...); nothing was sent.
    InvalidArgument(&'static str),
    /// The server sent bytes after its `+OK` to STLS, before the TLS
    /// handshake: they would be taken as protected data (CVE-2011-0411 class).
    StlsBufferNotEmpty,
    /// The APOP timestamp is not a `<local@domain>` msg-id; nothing was sent.
    BadApopTimestamp,
    /// An earlier error left the connection out of step with the server.
    Unusable,
}

impl Error {
    /// Whether trying again later may work: network trouble, or a server
    /// saying `[IN-USE]`, `[LOGIN-DELAY]` or `[SYS/TEMP]`.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Io(_) | Self::Sink(_) | Self::Timeout | Self::ConnectionLost | Self::Unusable => {
                true
            }
            Self::Server { reply, .. } => matches!(
                reply.code,
                Some(RespCode::InUse | RespCode::LoginDelay | RespCode::SysTemp)
            ),
            _ => false,
        }
    }

    /// Whether the credentials were refused: `[AUTH]`, or a `-ERR` to USER,
    /// PASS, APOP or AUTH without a code that blames something else (RFC 3206
    /// `SYS/*`, `IN-USE`, `LOGIN-DELAY`).
    pub fn is_auth_failure(&self) -> bool {
        let Self::Server { command, reply } = self else {
            return false;
        };
        match reply.code {
            Some(RespCode::Auth) => true,
            Some(
                RespCode::InUse | RespCode::LoginDelay | RespCode::SysTemp | RespCode::SysPerm,
            ) => false,
            _ => matches!(*command, "USER" | "PASS" | "APOP" | "AUTH"),
        }
    }

    fn malformed(command: &str, what: proto::Malformed, line: &[u8]) -> Self {
        let quoted = proto::sanitize(&String::from_utf8_lossy(line), MAX_QUOTED_LINE);
        Self::Protocol(format!("{command}: {what}: \"{quoted}\""))
    }

    /// Whether the error leaves us unsure where the server's replies stand.
    fn breaks_sync(&self) -> bool {
        !matches!(
            self,
            Self::Server { .. }
                | Self::InvalidArgument(_)
                | Self::BadApopTimestamp
                | Self::Unusable
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |s: &str| proto::sanitize(s, MAX_SHOWN_TEXT);
        match self {
            Self::Io(e) => write!(f, "i/o error: {e}"),
            Self::Sink(e) => write!(f, "writing the message failed: {e}"),
            Self::Timeout => f.write_str("timed out waiting for the server"),
            Self::ConnectionLost => f.write_str("connection closed by the server"),
            Self::Server { command, reply } => {
                write!(f, "server refused {command}")?;
                if let Some(code) = &reply.code {
                    write!(f, " [{}]", shown(code.as_str()))?;
                }
                if !reply.text.is_empty() {
                    write!(f, ": {}", shown(&reply.text))?;
                }
                Ok(())
            }
            Self::Protocol(what) => write!(f, "protocol error: {}", shown(what)),
            Self::LineTooLong => f.write_str("server sent an over-long line"),
            Self::ListingTooLong => f.write_str("server listing has too many entries"),
            Self::MessageTooLarge { limit } => write!(f, "message larger than {limit} bytes"),
            Self::InvalidArgument(why) => write!(f, "invalid argument: {why}"),
            Self::StlsBufferNotEmpty => {
                f.write_str("server sent data right after its STLS reply (possible injection)")
            }
            Self::BadApopTimestamp => f.write_str("APOP timestamp is not a <local@domain> msg-id"),
            Self::Unusable => f.write_str("connection unusable after an earlier error"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) | Self::Sink(e) => Some(e),
            _ => None,
        }
    }
}

/// Socket errors: Unix reports a read timeout as `WouldBlock`.
fn net_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout,
        io::ErrorKind::UnexpectedEof => Error::ConnectionLost,
        _ => Error::Io(e),
    }
}

/// The server's first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// The text after `+OK` (untrusted).
    pub text: String,
    /// A well-formed APOP timestamp, brackets included; `None` when absent or
    /// malformed, so APOP is not possible.
    pub apop_timestamp: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    line: usize,
    entries: usize,
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

/// The connection shared by both states; deliberately not reachable from
/// outside, so each state exposes only its own commands.
struct Conn<S> {
    reader: BufReader<S>,
    limits: Limits,
    deadline: Option<Duration>,
    due: Option<Instant>,
    unusable: bool,
    /// The last status line's buffer, reused: a drain reads two status
    /// lines per message.
    spare_line: Vec<u8>,
}

impl<S: Read + Write> Conn<S> {
    fn new(stream: S, limits: Limits, deadline: Option<Duration>) -> Self {
        Self {
            reader: BufReader::with_capacity(READ_BUF_SIZE, stream),
            limits,
            deadline,
            due: None,
            unusable: false,
            spare_line: Vec::new(),
        }
    }

    /// Runs one exchange, refusing if an earlier one broke sync.
    fn exec<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.unusable {
            return Err(Error::Unusable);
        }
        let result = f(self);
        if let Err(e) = &result {
            self.unusable |= e.breaks_sync();
        }
        result
    }

    fn send(&mut self, cmd: &Command<'_>) -> Result<()> {
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
    fn write_commands<'c>(&mut self, cmds: impl IntoIterator<Item = Command<'c>>) -> Result<()> {
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

    fn begin_response(&mut self) {
        self.due = self.deadline.map(|d| Instant::now() + d);
    }

    /// Makes `reader.buffer()` non-empty. The deadline is checked after each
    /// read: the socket's inactivity timeout bounds a single read, this
    /// bounds a server that drips bytes just often enough to beat it.
    fn fill(&mut self) -> Result<()> {
        loop {
            match self.reader.fill_buf() {
                Ok([]) => return Err(Error::ConnectionLost),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(net_error(e)),
            }
        }
        match self.due {
            Some(due) if Instant::now() > due => Err(Error::Timeout),
            _ => Ok(()),
        }
    }

    /// One line without its CRLF or LF, at most `limits.line` bytes with it.
    fn read_line(&mut self) -> Result<Vec<u8>> {
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
    fn read_status(&mut self, verb: &'static str) -> Result<Reply> {
        self.begin_response();
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

    fn command(&mut self, cmd: &Command<'_>) -> Result<Reply> {
        self.send(cmd)?;
        self.read_status(cmd.verb())
    }

    /// The lines of a multi-line response up to the `.` line, unstuffed and parsed.
    fn read_listing<T>(
        &mut self,
        verb: &'static str,
        max_entries: usize,
        mut parse: impl FnMut(&[u8]) -> Result<T, proto::Malformed>,
    ) -> Result<Vec<T>> {
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
    fn read_body(&mut self, sink: &mut dyn Write, max_bytes: u64) -> Result<u64> {
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

    fn capa(&mut self) -> Result<Capabilities> {
        match self.command(&Command::Capa) {
            Ok(_) => {}
            // RFC 2449 §5: a server without CAPA says -ERR; it simply offers nothing.
            Err(Error::Server { .. }) => return Ok(Capabilities::default()),
            Err(e) => return Err(e),
        }
        let max = self.limits.entries.min(MAX_CAPA_LINES);
        let lines =
            self.read_listing("CAPA", max, |l| Ok(String::from_utf8_lossy(l).into_owned()))?;
        Ok(proto::parse_capa(lines))
    }

    fn sasl(
        &mut self,
        mechanism: &str,
        initial: Option<&str>,
        respond: &mut dyn FnMut(&str) -> Option<String>,
    ) -> Result<Reply> {
        self.send(&Command::Auth { mechanism, initial })?;
        let mut rounds = 0;
        let mut cancelled = false;
        // An answer we refused to send; reported once the server has ended the exchange.
        let mut bad_answer = None;
        loop {
            self.begin_response();
            let line = self.read_line()?;
            let Some(challenge) = proto::sasl_challenge(&line) else {
                trace!("S: {}", line.escape_ascii());
                let reply =
                    proto::parse_status(&line).map_err(|m| Error::malformed("AUTH", m, &line))?;
                return match (reply.ok, cancelled) {
                    (true, false) => Ok(reply),
                    (true, true) => Err(Error::Protocol(
                        "AUTH: server accepted a cancelled exchange".into(),
                    )),
                    (false, _) => Err(bad_answer.unwrap_or(Error::Server {
                        command: "AUTH",
                        reply,
                    })),
                };
            };
            trace!("S: + <redacted>");
            if cancelled {
                return Err(Error::Protocol(
                    "AUTH: server challenged again after the exchange was cancelled".into(),
                ));
            }
            rounds += 1;
            if rounds > MAX_SASL_ROUNDS {
                return Err(Error::Protocol(format!(
                    "AUTH: server still challenging after {MAX_SASL_ROUNDS} rounds"
                )));
            }
            let challenge = String::from_utf8_lossy(challenge);
            let sent = match respond(&challenge) {
                Some(answer) => match self.send(&Command::SaslResponse(&answer)) {
                    Ok(()) => true,
                    Err(e @ Error::InvalidArgument(_)) => {
                        bad_answer = Some(e);
                        false
                    }
                    Err(e) => return Err(e),
                },
                None => false,
            };
            if !sent {
                // Cancelling keeps the connection in step, unlike walking away.
                cancelled = true;
                self.send(&Command::SaslResponse("*"))?;
            }
        }
    }
}

/// AUTHORIZATION state.
pub struct Client<S> {
    // Boxed so that `(Error, Client)` stays small to move around.
    conn: Box<Conn<S>>,
}

impl<S> fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl<S: Read + Write> Client<S> {
    /// Reads the greeting. A `-ERR` greeting is [`Error::Server`] for `"connection"`.
    pub fn connect(stream: S) -> Result<(Self, Greeting)> {
        Self::connect_with(stream, Limits::default(), None)
    }

    /// [`connect`](Self::connect) with a response deadline, which also bounds the greeting.
    pub fn connect_with_deadline(
        stream: S,
        deadline: Option<Duration>,
    ) -> Result<(Self, Greeting)> {
        Self::connect_with(stream, Limits::default(), deadline)
    }

    fn connect_with(
        stream: S,
        limits: Limits,
        deadline: Option<Duration>,
    ) -> Result<(Self, Greeting)> {
        let mut conn = Box::new(Conn::new(stream, limits, deadline));
        let reply = conn.exec(|c| c.read_status("connection"))?;
        let apop_timestamp = proto::apop_timestamp(&reply.text).map(str::to_owned);
        let greeting = Greeting {
            text: reply.text,
            apop_timestamp,
        };
        Ok((Self { conn }, greeting))
    }

    /// Continues on the stream [`stls`](Self::stls) returned, once TLS is up.
    /// No greeting follows STLS; ask [`capa`](Self::capa) again (RFC 2595 §4),
    /// and set the response deadline again.
    pub fn from_upgraded(stream: S) -> Self {
        Self {
            conn: Box::new(Conn::new(stream, Limits::default(), None)),
        }
    }

    /// Bounds the time for each complete response; `None` leaves only the
    /// socket's own inactivity timeout.
    pub fn set_response_deadline(&mut self, deadline: Option<Duration>) {
        self.conn.deadline = deadline;
    }

    /// The underlying stream, e.g. to read TLS details.
    pub fn get_ref(&self) -> &S {
        self.conn.reader.get_ref()
    }

    /// CAPA. A `-ERR` means the server has no CAPA: empty capabilities.
    pub fn capa(&mut self) -> Result<Capabilities> {
        self.conn.exec(Conn::capa)
    }

    /// STLS: on `+OK`, the raw stream, ready for the TLS handshake. Fails if
    /// the server sent anything past the `+OK` line: those bytes arrived
    /// before TLS and must not be read as if they came through it.
    pub fn stls(mut self) -> Result<S> {
        self.conn.exec(|c| c.command(&Command::Stls))?;
        if !self.conn.reader.buffer().is_empty() {
            return Err(Error::StlsBufferNotEmpty);
        }
        Ok(self.conn.reader.into_inner())
    }

    /// USER then PASS. On failure the client comes back with the error; if
    /// USER was refused, PASS was not sent.
    pub fn user_pass(mut self, user: &str, password: &str) -> Result<Session<S>, (Error, Self)> {
        let pass = Command::Pass(password);
        let result = self.conn.exec(|c| {
            // A password that cannot be sent must not leave the server expecting one.
            pass.to_bytes()?;
            c.command(&Command::User(user))?;
            c.command(&pass)
        });
        self.logged_in(result)
    }

    /// APOP with the greeting's timestamp (RFC 1939 §7). The timestamp is
    /// checked again here: see [`proto::is_valid_apop_timestamp`].
    pub fn apop(
        mut self,
        user: &str,
        password: &str,
        timestamp: &str,
    ) -> Result<Session<S>, (Error, Self)> {
        if !proto::is_valid_apop_timestamp(timestamp) {
            return Err((Error::BadApopTimestamp, self));
        }
        let digest = proto::apop_digest(timestamp, password);
        let result = self.conn.exec(|c| {
            c.command(&Command::Apop {
                user,
                digest: &digest,
            })
        });
        self.logged_in(result)
    }

    /// AUTH (RFC 5034). `respond` gets each challenge as base64 text and
    /// returns the base64 answer, or `None` to cancel (the server's `-ERR` is
    /// then the error). Challenges and answers are never logged.
    pub fn auth<F>(
        mut self,
        mechanism: &str,
        initial: Option<&str>,
        mut respond: F,
    ) -> Result<Session<S>, (Error, Self)>
    where
        F: FnMut(&str) -> Option<String>,
    {
        let result = self.conn.exec(|c| c.sasl(mechanism, initial, &mut respond));
        self.logged_in(result)
    }

    /// QUIT without logging in.
    pub fn quit(mut self) -> Result<()> {
        self.conn.exec(|c| c.command(&Command::Quit)).map(drop)
    }

    fn logged_in(self, result: Result<Reply>) -> Result<Session<S>, (Error, Self)> {
        match result {
            Ok(_) => Ok(Session { conn: self.conn }),
            Err(e) => Err((e, self)),
        }
    }
}

/// TRANSACTION state.
pub struct Session<S> {
    conn: Box<Conn<S>>,
}

impl<S> fmt::Debug for Session<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl<S: Read + Write> Session<S> {
    /// Bounds the time for each complete response, a whole RETR included.
    pub fn set_response_deadline(&mut self, deadline: Option<Duration>) {
        self.conn.deadline = deadline;
    }

    /// The underlying stream, e.g. to read TLS details.
    pub fn get_ref(&self) -> &S {
        self.conn.reader.get_ref()
    }

    /// CAPA again: some values (LOGIN-DELAY, EXPIRE) may differ after login.
    pub fn capa(&mut self) -> Result<Capabilities> {
        self.conn.exec(Conn::capa)
    }

    /// STAT: message count and maildrop size in octets.
    pub fn stat(&mut self) -> Result<(u32, u64)> {
        self.conn.exec(|c| {
            let reply = c.command(&Command::Stat)?;
            proto::parse_stat(reply.text.as_bytes())
                .map_err(|m| Error::malformed("STAT", m, reply.text.as_bytes()))
        })
    }

    /// LIST: `(message number, size)` for every message not marked deleted.
    pub fn list(&mut self) -> Result<Vec<(u32, u64)>> {
        self.conn.exec(|c| {
            c.command(&Command::List(None))?;
            c.read_listing("LIST", c.limits.entries, proto::parse_list_entry)
        })
    }

    /// LIST, then UIDL as [`uidl`](Self::uidl) does, except that a `-ERR`
    /// to UIDL (the server has none: RFC 1939 makes it optional) is `None`.
    /// With `pipelined` both go out in one write: one round trip, not two.
    pub fn list_and_uidl(&mut self, pipelined: bool) -> Result<(SizeListing, Option<UidListing>)> {
        if !pipelined {
            let list = self.list()?;
            return match self.uidl() {
                Ok(u) => Ok((list, Some(u))),
                Err(Error::Server { .. }) => Ok((list, None)),
                Err(e) => Err(e),
            };
        }
        self.conn.exec(|c| {
            c.write_commands([Command::List(None), Command::Uidl(None)])?;
            // A -ERR to LIST still leaves UIDL's reply to read.
            let list = c
                .read_status("LIST")
                .and_then(|_| c.read_listing("LIST", c.limits.entries, proto::parse_list_entry));
            let uidl = match c.read_status("UIDL") {
                Ok(_) => Some(c.read_listing("UIDL", c.limits.entries, proto::parse_uidl_entry)?),
                Err(Error::Server { .. }) => None,
                Err(e) => return Err(e),
            };
            Ok((list?, uidl))
        })
    }

    /// `LIST n`: the size of message `n`.
    pub fn list_one(&mut self, n: u32) -> Result<u64> {
        self.conn.exec(|c| {
            let reply = c.command(&Command::List(Some(n)))?;
            let (got, size) = proto::parse_list_entry(reply.text.as_bytes())
                .map_err(|m| Error::malformed("LIST", m, reply.text.as_bytes()))?;
            check_number("LIST", n, got)?;
            Ok(size)
        })
    }

    /// UIDL: `(message number, unique-id)`; see [`Uid`] for out-of-spec ids.
    pub fn uidl(&mut self) -> Result<Vec<(u32, Uid)>> {
        self.conn.exec(|c| {
            c.command(&Command::Uidl(None))?;
            c.read_listing("UIDL", c.limits.entries, proto::parse_uidl_entry)
        })
    }

    /// `UIDL n`: the unique-id of message `n`.
    pub fn uidl_one(&mut self, n: u32) -> Result<Uid> {
        self.conn.exec(|c| {
            let reply = c.command(&Command::Uidl(Some(n)))?;
            let (got, uid) = proto::parse_uidl_entry(reply.text.as_bytes())
                .map_err(|m| Error::malformed("UIDL", m, reply.text.as_bytes()))?;
            check_number("UIDL", n, got)?;
            Ok(uid)
        })
    }

    /// RETR: streams message `n`, dot-unstuffed and otherwise byte for byte,
    /// into `sink`; returns the bytes written. More than `max_bytes` is
    /// [`Error::MessageTooLarge`] (and the session is then unusable).
    pub fn retr(&mut self, n: u32, sink: &mut dyn Write, max_bytes: u64) -> Result<u64> {
        self.conn.exec(|c| {
            c.command(&Command::Retr(n))?;
            c.read_body(sink, max_bytes)
        })
    }

    /// TOP: the header and the first `lines` body lines of message `n`, as [`retr`](Self::retr).
    pub fn top(&mut self, n: u32, lines: u32, sink: &mut dyn Write, max_bytes: u64) -> Result<u64> {
        self.conn.exec(|c| {
            c.command(&Command::Top(n, lines))?;
            c.read_body(sink, max_bytes)
        })
    }

    /// DELE: marks message `n`; only a successful [`quit`](Self::quit) removes it.
    pub fn dele(&mut self, n: u32) -> Result<()> {
        self.conn.exec(|c| c.command(&Command::Dele(n))).map(drop)
    }

    /// DELE for each message, stopping at the first `-ERR` (returned).
    ///
    /// With `pipelined` (only if CAPA listed PIPELINING) up to
    /// [`DELE_WINDOW`] commands are in flight: the first window goes out
    /// in one write, and whenever half of it has been answered the next half
    /// follows, so the server never waits for us. After a `-ERR` nothing more
    /// is sent, the replies already asked for are still read (the session
    /// stays usable), and the first `-ERR` is returned.
    pub fn dele_many(&mut self, msgs: &[u32], pipelined: bool) -> Result<()> {
        if !pipelined {
            return msgs.iter().try_for_each(|&n| self.dele(n));
        }
        self.dele_windowed(msgs, DELE_WINDOW)
    }

    fn dele_windowed(&mut self, msgs: &[u32], size: usize) -> Result<()> {
        self.conn.exec(|c| {
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
        })
    }

    /// RETR for each message of `plan`, in order, read back one at a time
    /// with [`Retrieval::read_next`].
    ///
    /// With `pipelined` (only if CAPA listed PIPELINING) up to
    /// [`PIPELINE_WINDOW`] RETRs, announcing at most
    /// [`PIPELINE_WINDOW_BYTES`] between them, are in flight, topped up in
    /// one write whenever half the window has been answered; otherwise one
    /// at a time (lock-step). Bodies still stream straight into the caller's
    /// sink, one after the other, so memory does not grow with the window.
    pub fn retrieve(&mut self, plan: Vec<Retr>, pipelined: bool) -> Result<Retrieval<'_, S>> {
        let (size, bytes) = match pipelined {
            true => (PIPELINE_WINDOW, PIPELINE_WINDOW_BYTES),
            false => (1, u64::MAX),
        };
        self.retrieve_windowed(plan, size, bytes)
    }

    fn retrieve_windowed(
        &mut self,
        plan: Vec<Retr>,
        size: usize,
        bytes: u64,
    ) -> Result<Retrieval<'_, S>> {
        self.conn.exec(|_| {
            // Every number is checked before any is sent.
            plan.iter().try_for_each(|r| Command::Retr(r.n).check())
        })?;
        let saved_deadline = self.conn.deadline;
        Ok(Retrieval {
            conn: &mut self.conn,
            plan,
            window: Window::new(size.max(1), bytes),
            saved_deadline,
            deles: VecDeque::new(),
            dele_refused: None,
        })
    }

    /// RSET: unmarks every message marked deleted.
    pub fn rset(&mut self) -> Result<()> {
        self.conn.exec(|c| c.command(&Command::Rset)).map(drop)
    }

    /// NOOP, e.g. to keep the session alive.
    pub fn noop(&mut self) -> Result<()> {
        self.conn.exec(|c| c.command(&Command::Noop)).map(drop)
    }

    /// QUIT, entering UPDATE. `Ok` only on `+OK`: only then were all the
    /// deletions committed. After an error, any subset of the marked messages
    /// may be gone (RFC 1939 §6 lets a `-ERR` mean "some not removed"):
    /// trust the next UIDL listing.
    pub fn quit(mut self) -> Result<()> {
        self.conn.exec(|c| c.command(&Command::Quit)).map(drop)
    }
}

/// A LIST listing: `(message number, size)`.
pub type SizeListing = Vec<(u32, u64)>;

/// A UIDL listing: `(message number, unique-id)`.
pub type UidListing = Vec<(u32, Uid)>;

/// One message of a [`Session::retrieve`] plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retr {
    /// The message number.
    pub n: u32,
    /// Its size as LIST announced it: what the byte window counts.
    pub size: u64,
    /// Most body bytes accepted, as for [`Session::retr`].
    pub max_bytes: u64,
    /// The deadline for its whole reply (see [`Session::set_response_deadline`]).
    pub deadline: Option<Duration>,
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

/// A run of RETRs from [`Session::retrieve`], read back in plan order.
///
/// Dropping it with replies still unread leaves the connection out of step:
/// the session is then [`Error::Unusable`] (no QUIT, so nothing is deleted).
/// [`finish`](Self::finish) reads and discards them instead.
pub struct Retrieval<'a, S: Read + Write> {
    conn: &'a mut Conn<S>,
    plan: Vec<Retr>,
    window: Window,
    saved_deadline: Option<Duration>,
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

impl<S: Read + Write> Retrieval<'_, S> {
    /// The message whose reply [`read_next`](Self::read_next) reads, if any is left.
    pub fn peek(&self) -> Option<&Retr> {
        self.plan.get(self.window.answered)
    }

    /// Announced bytes of the RETRs sent but not yet read.
    pub fn bytes_in_flight(&self) -> u64 {
        self.window.bytes_in_flight
    }

    /// DELE for messages while the run goes on (their messages are safe in
    /// the spool); returns how many of `msgs`, from the front, were sent.
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
    /// into `sink` and returns its length, as [`Session::retr`] does. A
    /// `-ERR` for this message ([`Error::Server`]) keeps the run in step:
    /// the next call reads the next message. Any other error makes the
    /// session unusable.
    pub fn read_next(&mut self, sink: &mut dyn Write) -> Result<u64> {
        let Some(&r) = self.peek() else {
            return Err(Error::Protocol("RETR: no message left to read".into()));
        };
        self.read_deles(self.window.answered)?;
        let Self {
            conn, plan, window, ..
        } = self;
        let result = conn.exec(|c| {
            let send = window.admit(plan.len(), |i| plan[i].size);
            c.write_commands(plan[send].iter().map(|r| Command::Retr(r.n)))?;
            c.deadline = r.deadline;
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
        let end = within.map(|d| Instant::now() + d);
        while self.window.in_flight() > 0 {
            self.read_deles(self.window.answered)?;
            let r = self.plan[self.window.answered];
            let deadline = match end {
                None => r.deadline,
                Some(end) => {
                    let left = end.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout);
                    }
                    Some(r.deadline.map_or(left, |d| d.min(left)))
                }
            };
            let result = self.conn.exec(|c| {
                c.deadline = deadline;
                c.read_status("RETR")?;
                c.read_body(&mut io::sink(), r.max_bytes)
            });
            self.window.answer(r.size);
            match result {
                Ok(_) | Err(Error::Server { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(end) = end {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() && !self.deles.is_empty() {
                return Err(Error::Timeout);
            }
            self.conn.deadline = Some(left);
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
        self.conn.deadline = self.saved_deadline;
    }
}

fn check_number(verb: &str, asked: u32, got: u32) -> Result<()> {
    if asked != got {
        return Err(Error::Protocol(format!(
            "{verb}: asked about message {asked}, got an answer for {got}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::mock::{MockStream, Written};
    use super::*;

    const GREETING: &[u8] = b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n";
    const LOGIN_OK: &[u8] = b"+OK\r\n+OK logged in\r\n";

    type Log = Rc<RefCell<Written>>;

    fn mock(parts: &[&[u8]], one_byte: bool) -> MockStream {
        let stream = MockStream::new(parts.concat());
        if one_byte {
            stream.one_byte_reads()
        } else {
            stream
        }
    }

    fn sent(log: &Log) -> String {
        String::from_utf8_lossy(&log.borrow().bytes).into_owned()
    }

    /// A client past the greeting whose server then plays `script`.
    fn client_with(script: &[u8], one_byte: bool) -> (Client<MockStream>, Log) {
        let stream = mock(&[GREETING, script], one_byte);
        let log = stream.written();
        let (client, _) = Client::connect(stream).unwrap();
        (client, log)
    }

    /// A logged-in session whose server then plays `script`; the log starts empty.
    fn session_with(script: &[u8], one_byte: bool, limits: Limits) -> (Session<MockStream>, Log) {
        let stream = mock(&[GREETING, LOGIN_OK, script], one_byte);
        let log = stream.written();
        let (client, _) = Client::connect_with(stream, limits, None).unwrap();
        let session = client.user_pass("u", "p").unwrap();
        *log.borrow_mut() = Written::default();
        (session, log)
    }

    fn session(script: &[u8]) -> (Session<MockStream>, Log) {
        session_with(script, false, Limits::default())
    }

    fn show<T: fmt::Debug>(result: Result<T>) -> Result<String> {
        result.map(|v| format!("{v:?}"))
    }

    fn body(read: impl FnOnce(&mut dyn Write) -> Result<u64>) -> Result<String> {
        let mut out = Vec::new();
        let n = read(&mut out)?;
        Ok(format!("({n}, {:?})", String::from_utf8_lossy(&out)))
    }

    struct Case {
        sent: &'static str,
        ok: &'static [u8],
        expect: &'static str,
        call: fn(&mut Session<MockStream>) -> Result<String>,
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                sent: "STAT\r\n",
                ok: b"+OK 2 320\r\n",
                expect: "(2, 320)",
                call: |s| show(s.stat()),
            },
            Case {
                sent: "LIST\r\n",
                ok: b"+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n",
                expect: "[(1, 120), (2, 200)]",
                call: |s| show(s.list()),
            },
            Case {
                sent: "LIST 2\r\n",
                ok: b"+OK 2 200\r\n",
                expect: "200",
                call: |s| show(s.list_one(2)),
            },
            Case {
                sent: "UIDL\r\n",
                ok: b"+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n.\r\n",
                expect: r#"[(1, Valid("whqtswO00WBw418f9t5JxYwZ")), (2, Valid("QhdPYR:00WBw1Ph7x7"))]"#,
                call: |s| show(s.uidl()),
            },
            Case {
                sent: "UIDL 2\r\n",
                ok: b"+OK 2 QhdPYR:00WBw1Ph7x7\r\n",
                expect: r#"Valid("QhdPYR:00WBw1Ph7x7")"#,
                call: |s| show(s.uidl_one(2)),
            },
            Case {
                sent: "RETR 1\r\n",
                ok: b"+OK 20 octets\r\nSubject: x\r\n\r\n..dot\r\n.\r\n",
                expect: r#"(20, "Subject: x\r\n\r\n.dot\r\n")"#,
                call: |s| body(|sink| s.retr(1, sink, 1000)),
            },
            Case {
                sent: "TOP 1 0\r\n",
                ok: b"+OK\r\nSubject: x\r\n\r\n.\r\n",
                expect: r#"(14, "Subject: x\r\n\r\n")"#,
                call: |s| body(|sink| s.top(1, 0, sink, 1000)),
            },
            Case {
                sent: "DELE 1\r\n",
                ok: b"+OK message 1 deleted\r\n",
                expect: "()",
                call: |s| show(s.dele(1)),
            },
            Case {
                sent: "DELE 3\r\n",
                ok: b"+OK\r\n",
                expect: "()",
                call: |s| show(s.dele_many(&[3], true)),
            },
            Case {
                sent: "RSET\r\n",
                ok: b"+OK maildrop has 2 messages\r\n",
                expect: "()",
                call: |s| show(s.rset()),
            },
            Case {
                sent: "NOOP\r\n",
                ok: b"+OK\r\n",
                expect: "()",
                call: |s| show(s.noop()),
            },
            Case {
                sent: "CAPA\r\n",
                ok: b"+OK\r\nTOP\r\nEXPIRE 30 USER\r\n.\r\n",
                expect: "true Some(Days(30))",
                call: |s| s.capa().map(|c| format!("{} {:?}", c.top, c.expire)),
            },
        ]
    }

    #[test]
    fn session_verbs_succeed_with_any_read_size() {
        for case in cases() {
            for one_byte in [false, true] {
                let (mut s, log) = session_with(case.ok, one_byte, Limits::default());
                assert_eq!((case.call)(&mut s).unwrap(), case.expect, "{}", case.sent);
                assert_eq!(sent(&log), case.sent);
                assert!(
                    s.conn.reader.buffer().is_empty(),
                    "{} left bytes",
                    case.sent
                );
            }
        }
    }

    #[test]
    fn session_verbs_report_err_and_stay_usable() {
        for case in cases().into_iter().filter(|c| c.sent != "CAPA\r\n") {
            let verb = case.sent.split([' ', '\r']).next().unwrap();
            let (mut s, log) = session(b"-ERR [SYS/TEMP] try later\r\n+OK\r\n");
            let err = (case.call)(&mut s).unwrap_err();
            match &err {
                Error::Server { command, reply } => {
                    assert_eq!(*command, verb);
                    assert_eq!(reply.code, Some(RespCode::SysTemp));
                    assert_eq!(reply.text, "try later");
                }
                other => panic!("{verb}: {other:?}"),
            }
            assert!(err.is_transient() && !err.is_auth_failure());
            s.noop().unwrap();
            assert_eq!(sent(&log), format!("{}NOOP\r\n", case.sent));
        }
    }

    #[test]
    fn session_verbs_fail_cleanly_on_eof_anywhere() {
        for case in cases() {
            for cut in 0..case.ok.len() {
                let (mut s, _) = session(&case.ok[..cut]);
                let result = (case.call)(&mut s);
                assert!(
                    matches!(result, Err(Error::ConnectionLost)),
                    "{} cut at {cut}: {result:?}",
                    case.sent
                );
                assert!(matches!(s.noop(), Err(Error::Unusable)));
            }
        }
    }

    #[test]
    fn capa_err_means_no_capabilities() {
        let (mut client, log) = client_with(b"-ERR unknown command\r\n+OK bye\r\n", false);
        assert_eq!(client.capa().unwrap(), Capabilities::default());
        client.quit().unwrap();
        assert_eq!(sent(&log), "CAPA\r\nQUIT\r\n");
    }

    #[test]
    fn capa_before_login() {
        let script = b"+OK Capability list follows\r\nUSER\r\nSTLS\r\nSASL PLAIN\r\n..odd\r\n.\r\n";
        for one_byte in [false, true] {
            let (mut client, log) = client_with(script, one_byte);
            let caps = client.capa().unwrap();
            assert!(caps.user && caps.stls && caps.has_sasl("PLAIN"));
            assert_eq!(caps.raw, ["USER", "STLS", "SASL PLAIN", ".odd"]);
            assert_eq!(sent(&log), "CAPA\r\n");
        }
        for cut in 0..script.len() {
            let (mut client, _) = client_with(&script[..cut], false);
            assert!(
                matches!(client.capa(), Err(Error::ConnectionLost)),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn greeting() {
        for one_byte in [false, true] {
            let (_, greeting) = Client::connect(mock(&[GREETING], one_byte)).unwrap();
            assert_eq!(
                greeting.text,
                "POP3 server ready <1896.697170952@dbc.mtview.ca.us>"
            );
            assert_eq!(
                greeting.apop_timestamp.as_deref(),
                Some("<1896.697170952@dbc.mtview.ca.us>")
            );
        }
        let (_, greeting) = Client::connect(mock(&[b"+OK ready <a b@c>\r\n"], false)).unwrap();
        assert_eq!(greeting.apop_timestamp, None);

        match Client::connect(mock(&[b"-ERR [SYS/TEMP] overloaded\r\n"], false)) {
            Err(e @ Error::Server { .. }) => {
                assert!(e.is_transient());
                assert_eq!(
                    e.to_string(),
                    "server refused connection [SYS/TEMP]: overloaded"
                );
            }
            other => panic!("{other:?}"),
        }
        for cut in 0..GREETING.len() {
            let result = Client::connect(mock(&[&GREETING[..cut]], false));
            assert!(matches!(result, Err(Error::ConnectionLost)), "cut {cut}");
        }
        assert!(matches!(
            Client::connect(mock(&[b"* OK IMAP4 ready\r\n"], false)),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn user_pass() {
        for one_byte in [false, true] {
            let (client, log) = client_with(LOGIN_OK, one_byte);
            client.user_pass("mrose", "tanstaaf").unwrap();
            assert_eq!(sent(&log), "USER mrose\r\nPASS tanstaaf\r\n");
        }
        for cut in 0..LOGIN_OK.len() {
            let (client, _) = client_with(&LOGIN_OK[..cut], false);
            let (err, _) = client.user_pass("mrose", "tanstaaf").unwrap_err();
            assert!(matches!(err, Error::ConnectionLost), "cut {cut}");
        }
    }

    #[test]
    fn refused_user_returns_the_client() {
        let (client, log) = client_with(b"-ERR no such mailbox\r\n+OK bye\r\n", false);
        let (err, client) = client.user_pass("nobody", "x").unwrap_err();
        assert!(matches!(
            err,
            Error::Server {
                command: "USER",
                ..
            }
        ));
        assert!(err.is_auth_failure() && !err.is_transient());
        client.quit().unwrap();
        assert_eq!(sent(&log), "USER nobody\r\nQUIT\r\n");
    }

    #[test]
    fn refused_password() {
        let (client, _) = client_with(b"+OK\r\n-ERR [AUTH] invalid login\r\n", false);
        let (err, _) = client.user_pass("mrose", "wrong").unwrap_err();
        assert!(matches!(
            err,
            Error::Server {
                command: "PASS",
                ..
            }
        ));
        assert!(err.is_auth_failure() && !err.is_transient());

        let (client, _) = client_with(b"+OK\r\n-ERR [IN-USE] maildrop locked\r\n", false);
        let (err, _) = client.user_pass("mrose", "right").unwrap_err();
        assert!(err.is_transient() && !err.is_auth_failure());

        let (client, _) = client_with(b"+OK\r\n-ERR [SYS/PERM] mailbox corrupt\r\n", false);
        let (err, _) = client.user_pass("mrose", "right").unwrap_err();
        assert!(!err.is_transient() && !err.is_auth_failure());
    }

    #[test]
    fn injection_is_rejected_before_anything_is_sent() {
        let (client, log) = client_with(LOGIN_OK, false);
        let (err, client) = client.user_pass("bob\r\nDELE 1", "p").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        let (err, _) = client.user_pass("bob", "p\r\nDELE 1").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        assert_eq!(sent(&log), "");
    }

    #[test]
    fn apop() {
        let stamp = "<1896.697170952@dbc.mtview.ca.us>";
        for one_byte in [false, true] {
            let (client, log) = client_with(b"+OK maildrop has 1 message\r\n", one_byte);
            client.apop("mrose", "tanstaaf", stamp).unwrap();
            assert_eq!(
                sent(&log),
                "APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"
            );
        }
        let (client, _) = client_with(b"-ERR permission denied\r\n", false);
        let (err, _) = client.apop("mrose", "x", stamp).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Server {
                    command: "APOP",
                    ..
                }
            ) && err.is_auth_failure()
        );

        let (client, _) = client_with(b"+OK", false);
        let (err, _) = client.apop("mrose", "x", stamp).unwrap_err();
        assert!(matches!(err, Error::ConnectionLost));

        let (client, log) = client_with(b"+OK\r\n", false);
        let (err, _) = client.apop("mrose", "x", "<no-at-sign>").unwrap_err();
        assert!(matches!(err, Error::BadApopTimestamp));
        assert_eq!(sent(&log), "");
    }

    #[test]
    fn auth_with_initial_response() {
        let (client, log) = client_with(b"+OK\r\n", false);
        client
            .auth("PLAIN", Some("AHUAcA=="), |_| {
                panic!("no challenge expected")
            })
            .unwrap();
        assert_eq!(sent(&log), "AUTH PLAIN AHUAcA==\r\n");
    }

    #[test]
    fn auth_challenges() {
        let script = b"+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n+OK welcome\r\n";
        for one_byte in [false, true] {
            let (client, log) = client_with(script, one_byte);
            let mut seen = Vec::new();
            client
                .auth("LOGIN", None, |challenge| {
                    seen.push(challenge.to_owned());
                    Some(if seen.len() == 1 { "dQ==" } else { "cA==" }.into())
                })
                .unwrap();
            assert_eq!(seen, ["VXNlcm5hbWU6", "UGFzc3dvcmQ6"]);
            assert_eq!(sent(&log), "AUTH LOGIN\r\ndQ==\r\ncA==\r\n");
        }
        for cut in 0..script.len() {
            let (client, _) = client_with(&script[..cut], false);
            let (err, _) = client
                .auth("LOGIN", None, |_| Some("eA==".into()))
                .unwrap_err();
            assert!(matches!(err, Error::ConnectionLost), "cut {cut}");
        }
    }

    #[test]
    fn auth_cancel_and_refusal() {
        let (client, log) = client_with(b"+ Y2hhbGxlbmdl\r\n-ERR [AUTH] cancelled\r\n", false);
        let (err, _) = client.auth("CRAM-MD5", None, |_| None).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Server {
                    command: "AUTH",
                    ..
                }
            ) && err.is_auth_failure()
        );
        assert_eq!(sent(&log), "AUTH CRAM-MD5\r\n*\r\n");

        let (client, _) = client_with(b"-ERR unknown mechanism\r\n", false);
        let (err, _) = client
            .auth("XOAUTH2", Some("dG9rZW4="), |_| None)
            .unwrap_err();
        assert!(matches!(
            err,
            Error::Server {
                command: "AUTH",
                ..
            }
        ));

        let (client, log) = client_with(b"+ eA==\r\n-ERR cancelled\r\n+OK bye\r\n", false);
        let (err, client) = client
            .auth("LOGIN", None, |_| Some("a\r\nDELE 1".into()))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        client.quit().unwrap();
        assert_eq!(sent(&log), "AUTH LOGIN\r\n*\r\nQUIT\r\n");

        let (client, _) = client_with(b"+ eA==\r\n+ eA==\r\n", false);
        let (err, _) = client.auth("LOGIN", None, |_| None).unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err:?}");

        let endless = b"+ eA==\r\n".repeat(MAX_SASL_ROUNDS + 1);
        let (client, log) = client_with(&endless, false);
        let (err, client) = client
            .auth("LOGIN", None, |_| Some("eQ==".into()))
            .unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err:?}");
        assert_eq!(sent(&log).matches("eQ==").count(), MAX_SASL_ROUNDS);
        assert!(matches!(client.quit(), Err(Error::Unusable)));
    }

    #[test]
    fn stls_hands_back_the_stream() {
        let (client, log) = client_with(b"+OK begin TLS\r\n", false);
        let stream = client.stls().unwrap();
        assert_eq!(sent(&log), "STLS\r\n");

        // With 1-byte reads nothing is buffered past the +OK, so the dialogue
        // continues on the upgraded stream (in real life, the TLS stream).
        let (client, log) = client_with(b"+OK begin TLS\r\n+OK\r\nUIDL\r\n.\r\n", true);
        let mut client = Client::from_upgraded(client.stls().unwrap());
        assert!(client.capa().unwrap().uidl);
        assert_eq!(sent(&log), "STLS\r\nCAPA\r\n");
        drop(stream);
    }

    #[test]
    fn stls_rejects_bytes_injected_before_the_handshake() {
        let (client, _) = client_with(b"+OK begin TLS\r\n-ERR injected\r\n", false);
        assert!(matches!(client.stls(), Err(Error::StlsBufferNotEmpty)));

        let (client, _) = client_with(b"-ERR TLS not available\r\n", false);
        assert!(matches!(
            client.stls(),
            Err(Error::Server {
                command: "STLS",
                ..
            })
        ));

        let (client, _) = client_with(b"+OK begin", false);
        assert!(matches!(client.stls(), Err(Error::ConnectionLost)));
    }

    #[test]
    fn quit_commits_only_on_ok() {
        for one_byte in [false, true] {
            let (s, log) = session_with(
                b"+OK dewey POP3 server signing off\r\n",
                one_byte,
                Limits::default(),
            );
            s.quit().unwrap();
            assert_eq!(sent(&log), "QUIT\r\n");
        }
        let (s, _) = session(b"-ERR some deleted messages not removed\r\n");
        assert!(matches!(
            s.quit(),
            Err(Error::Server {
                command: "QUIT",
                ..
            })
        ));
        for cut in [0, 3] {
            let (s, _) = session(&b"+OK bye\r\n"[..cut]);
            assert!(matches!(s.quit(), Err(Error::ConnectionLost)));
        }
        let (client, log) = client_with(b"+OK bye\r\n", true);
        client.quit().unwrap();
        assert_eq!(sent(&log), "QUIT\r\n");
        let (client, _) = client_with(b"-ERR no\r\n", false);
        assert!(matches!(
            client.quit(),
            Err(Error::Server {
                command: "QUIT",
                ..
            })
        ));
        let (client, _) = client_with(b"+OK by", false);
        assert!(matches!(client.quit(), Err(Error::ConnectionLost)));
    }

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
    fn plain_dele_many_stops_at_first_err() {
        let (mut s, log) = session(b"+OK\r\n-ERR no such message\r\n");
        assert!(s.dele_many(&[1, 2, 3], false).is_err());
        assert_eq!(sent(&log), "DELE 1\r\nDELE 2\r\n");
        assert_eq!(log.borrow().calls, 2);
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

    /// A logged-in session with a server that answers only what was asked
    /// ([`MockStream::gated`]); the log keeps the login (`USER u`, `PASS p`).
    fn gated_session(replies: &[&[u8]]) -> (Session<MockStream>, Log) {
        let mut all: Vec<&[u8]> = vec![b"+OK\r\n", b"+OK logged in\r\n"];
        all.extend_from_slice(replies);
        let stream = MockStream::gated(GREETING, &all);
        let log = stream.written();
        let (client, _) = Client::connect(stream).unwrap();
        (client.user_pass("u", "p").unwrap(), log)
    }

    fn plan(sizes: &[u64]) -> Vec<Retr> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| Retr {
                n: i as u32 + 1,
                size,
                max_bytes: 1 << 20,
                deadline: None,
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
    fn list_and_uidl_in_one_round_trip() {
        let list = b"+OK\r\n1 120\r\n2 200\r\n.\r\n";
        let uidl = b"+OK\r\n1 a\r\n2 b\r\n.\r\n";
        let want_uidl = vec![(1, Uid::Valid("a".into())), (2, Uid::Valid("b".into()))];
        for pipelined in [true, false] {
            let (mut s, log) = gated_session(&[list, uidl, b"+OK\r\n"]);
            let (l, u) = s.list_and_uidl(pipelined).unwrap();
            assert_eq!(l, [(1, 120), (2, 200)]);
            assert_eq!(u.as_ref(), Some(&want_uidl));
            assert_eq!(log.borrow().max_ahead, if pipelined { 2 } else { 1 });
            s.noop().unwrap();

            let (mut s, _) = gated_session(&[list, b"-ERR no UIDL here\r\n", b"+OK\r\n"]);
            assert_eq!(s.list_and_uidl(pipelined).unwrap().1, None);
            s.noop().unwrap();
        }
        // A -ERR to LIST is the error, and the session stays in step.
        let (mut s, _) = session(b"-ERR busy\r\n+OK\r\n1 a\r\n.\r\n+OK\r\n");
        assert!(matches!(
            s.list_and_uidl(true),
            Err(Error::Server {
                command: "LIST",
                ..
            })
        ));
        s.noop().unwrap();
        // Cut off inside UIDL's listing: out of step.
        let (mut s, _) = session(b"+OK\r\n.\r\n+OK\r\n1 a\r\n");
        assert!(matches!(s.list_and_uidl(true), Err(Error::ConnectionLost)));
        assert!(matches!(s.noop(), Err(Error::Unusable)));
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

    #[test]
    fn malformed_replies() {
        let (mut s, _) = session(b"+OK two 320\r\n");
        let err = s.stat().unwrap_err();
        assert_eq!(
            err.to_string(),
            "protocol error: STAT: bad message count: \"two 320\""
        );
        let (mut s, _) = session(b"+OK\r\n1 abc\r\n.\r\n");
        assert!(matches!(s.uidl(), Ok(v) if v == [(1, Uid::Valid("abc".into()))]));
        let (mut s, _) = session(b"+OK\r\nx abc\r\n.\r\n");
        assert!(matches!(s.uidl(), Err(Error::Protocol(_))));
        let (mut s, _) = session(b"+OK 3 abc\r\n");
        assert!(matches!(s.uidl_one(2), Err(Error::Protocol(_))));
        let (mut s, _) = session(b"+OK\r\n1 bad uid\r\n.\r\n");
        let listing = s.uidl().unwrap();
        assert_eq!(listing, [(1, Uid::Invalid(b"bad uid".to_vec()))]);
    }

    #[test]
    fn socket_timeouts_and_errors() {
        for kind in [io::ErrorKind::WouldBlock, io::ErrorKind::TimedOut] {
            let stream = MockStream::new(&b"+OK POP3 re"[..]).with_err(kind);
            let err = Client::connect(stream).unwrap_err();
            assert!(
                matches!(err, Error::Timeout) && err.is_transient(),
                "{kind:?}"
            );
        }
        let stream = MockStream::new(Vec::new()).with_err(io::ErrorKind::ConnectionReset);
        let err = Client::connect(stream).unwrap_err();
        assert!(matches!(err, Error::Io(_)) && err.is_transient());
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn response_deadline_stops_a_dripping_server() {
        let drip = |script: &[u8]| {
            MockStream::new(script)
                .one_byte_reads()
                .with_read_delay(Duration::from_millis(3))
        };
        let slow = b"+OK dripping greeting\r\n";
        assert!(matches!(
            Client::connect_with_deadline(drip(slow), Some(Duration::from_millis(15))),
            Err(Error::Timeout)
        ));
        let (mut client, _) = Client::connect_with_deadline(
            drip(b"+OK hi\r\n+OK\r\nTOP\r\n.\r\n"),
            Some(Duration::from_secs(10)),
        )
        .unwrap();
        client.set_response_deadline(Some(Duration::from_millis(15)));
        assert!(matches!(client.capa(), Err(Error::Timeout)));
        assert!(matches!(client.capa(), Err(Error::Unusable)));
    }

    #[test]
    fn error_display_sanitizes_server_text() {
        let err = Error::Server {
            command: "PASS",
            reply: proto::parse_status(
                format!("-ERR [AUTH] bad\x1b[2J{}", "x".repeat(500)).as_bytes(),
            )
            .unwrap(),
        };
        let shown = err.to_string();
        assert!(shown.starts_with("server refused PASS [AUTH]: bad?[2Jxxx"));
        assert!(!shown.chars().any(char::is_control));
        assert!(shown.chars().count() < 250);
        assert_eq!(
            Error::MessageTooLarge { limit: 5 }.to_string(),
            "message larger than 5 bytes"
        );
    }

    /// Collects log records with the thread that made them, so a test sees only its own.
    struct Capture(std::sync::Mutex<Vec<(std::thread::ThreadId, String)>>);

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            let line = format!("{} {}", record.level(), record.args());
            if let Ok(mut lines) = self.0.lock() {
                lines.push((std::thread::current().id(), line));
            }
        }
        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture(std::sync::Mutex::new(Vec::new()));

    #[test]
    fn logs_never_show_secrets() {
        // Only this test installs a logger, so the `Err` of a second install cannot happen here.
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(log::LevelFilter::Trace);
        let secret = "s3cret-Pa55";
        let stamp = "<1896.697170952@dbc.mtview.ca.us>";
        let script = [
            &b"+OK\r\n-ERR [AUTH] nope\r\n"[..],
            b"-ERR [AUTH] no\r\n",
            b"+ Y2hhbA==\r\n+OK\r\n",
            b"+OK\r\nBODY-TEXT\r\n.\r\n",
        ]
        .concat();
        let (client, _) = client_with(&script, false);
        let (_, client) = client.user_pass("mrose", secret).unwrap_err();
        let (_, client) = client.apop("mrose", secret, stamp).unwrap_err();
        let mut session = client
            .auth("PLAIN", Some("c2VjcmV0"), |_| Some("cmVzcG9uc2U=".into()))
            .unwrap();
        session.retr(1, &mut Vec::new(), 100).unwrap();

        let me = std::thread::current().id();
        let lines: Vec<String> = CAPTURE
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(thread, _)| *thread == me)
            .map(|(_, line)| line.clone())
            .collect();
        for expected in [
            "TRACE C: USER mrose",
            "TRACE C: PASS <redacted>",
            "TRACE S: -ERR [AUTH] nope",
            "TRACE C: APOP mrose <redacted>",
            "TRACE C: AUTH PLAIN <redacted>",
            "TRACE S: + <redacted>",
            "TRACE C: <redacted>",
            "TRACE C: RETR 1",
            "TRACE S: <11 bytes>",
        ] {
            assert!(
                lines.iter().any(|l| l == expected),
                "{expected} not in {lines:#?}"
            );
        }
        let digest = proto::apop_digest(stamp, secret);
        for line in &lines {
            for leak in [secret, &digest, "c2VjcmV0", "Y2hhbA", "cmVzcG9uc2U", "BODY"] {
                assert!(!line.contains(leak), "{line}");
            }
        }
    }
}
