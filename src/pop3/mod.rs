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
//! caller's `max_bytes`, and, when set, time by the [`Pacing`]: each
//! reply's status line by a deadline, a [`Phase`] by its end, and the data
//! of a message or listing by a minimum rate, whatever size it announces. Message bodies stream to a sink the caller implements
//! (`std::io::Write`) and never sit in memory; this layer touches neither
//! the configuration nor the disk.
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
//!
//! One file per job: `proto` parses what the server sends and `command`
//! renders what we send (both without I/O), `error` says what went wrong,
//! `conn` is the buffered connection both states share, `client` the
//! AUTHORIZATION state, `session` the TRANSACTION state, `pipeline` the
//! windowed runs of RETR and DELE, and `pace` the time limits.

mod client;
pub mod command;
mod conn;
mod error;
#[cfg(test)]
pub(crate) mod mock;
mod pace;
mod pipeline;
pub mod proto;
mod session;

pub use client::{Client, Greeting};
pub use command::Command;
pub use conn::{Phase, MAX_LINE, MAX_LISTING_ENTRIES};
pub use error::{Error, Result};
pub use pace::{Pacing, Pulse, RateWindow, Stall, StallKind};
pub use pipeline::{Plan, Retr, Retrieval, DELE_WINDOW, PIPELINE_WINDOW, PIPELINE_WINDOW_BYTES};
pub use proto::{Capabilities, Expire, Reply, RespCode, Uid, Unstuffer};
pub use session::{ListingSink, Session, SizeListing, UidListing};
