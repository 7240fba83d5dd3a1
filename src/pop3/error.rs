//! What can go wrong talking POP3, and what it means for the caller: the
//! [`Error`] type, whether an error is worth a retry
//! ([`Error::is_transient`]) or blames the credentials
//! ([`Error::is_auth_failure`]), and whether it leaves the connection out of
//! step with the server. Server text in messages goes through
//! [`crate::text::printable`]; the reply and its response code are parsed in
//! [`proto`](super::proto).

use std::fmt;
use std::io;

use super::pace::Stall;
use super::proto::{Malformed, Reply, RespCode};
use crate::text;

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
    /// A read or write timed out.
    Timeout,
    /// The server kept the connection alive but too slow to finish: a reply
    /// past its deadline or its phase's end, or data under the minimum rate.
    Stalled(Box<Stall>),
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
    /// A status or listing line longer than [`MAX_LINE`](super::MAX_LINE).
    LineTooLong,
    /// A listing longer than [`MAX_LISTING_ENTRIES`](super::MAX_LISTING_ENTRIES) (CAPA: 1000 lines).
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
            Self::Io(_)
            | Self::Sink(_)
            | Self::Timeout
            | Self::Stalled(_)
            | Self::ConnectionLost
            | Self::Unusable => true,
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

    /// A protocol error for `command` quoting the offending line, made printable and cut.
    pub(super) fn malformed(command: &str, what: Malformed, line: &[u8]) -> Self {
        let quoted = text::printable_bytes(line, MAX_QUOTED_LINE);
        Self::Protocol(format!("{command}: {what}: \"{quoted}\""))
    }

    /// Whether the error leaves us unsure where the server's replies stand.
    pub(super) fn breaks_sync(&self) -> bool {
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
        let shown = |s: &str| text::printable(s, MAX_SHOWN_TEXT);
        match self {
            Self::Io(e) => write!(f, "i/o error: {e}"),
            Self::Sink(e) => write!(f, "writing the message failed: {e}"),
            Self::Timeout => f.write_str("timed out waiting for the server"),
            Self::Stalled(stall) => write!(f, "{stall}"),
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
pub(super) fn net_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout,
        io::ErrorKind::UnexpectedEof => Error::ConnectionLost,
        _ => Error::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pop3::mock::MockStream;
    use crate::pop3::{proto, Client};

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
}
