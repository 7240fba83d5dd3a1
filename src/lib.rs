//! popspool: a POP3 receive appliance.
//!
//! Data flow, one account at a time, one thread:
//!
//! `main` builds what every run shares: the TLS connectors and trust-store
//! decision ([`tls::Connectors`]) and the log output ([`logging::Output`]).
//! [`config`] turns the INI file into an immutable [`config::Config`]. A
//! [`poll`] takes the account's lock ([`journal::Lock`]) and the spool's
//! ([`spool::Spool::open`]), finishes whatever
//! a previous run left half-published ([`journal::Journal::recover`]),
//! resolves the secret ([`secret`]), connects ([`tls`]), logs in ([`auth`]
//! over [`pop3::Client`]), lists the mailbox ([`pop3::Session`]) and takes
//! every message not yet delivered through the entry pipeline: download
//! into the spool's `tmp/` ([`spool`]), decode ([`mime`]), `meta.json`
//! ([`meta`]) written last. A batch of finished entries is then committed:
//! fsync, a "pending" record in the journal, one rename each into `new/`,
//! fsync of `new/`, a "delivered" record. Only then are the messages
//! deleted on the server, and only a `+OK` to `QUIT` lets the journal forget
//! them. [`status`] records how each poll went for monitoring, [`notify`]
//! tells systemd (readiness, status line, watchdog), and [`logging`] puts
//! one line per event on stderr. The README's "Where the code is" maps the
//! modules.

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod auth;
pub mod config;
pub mod daemon;
pub mod deadline;
pub mod exit;
pub mod fsafe;
pub mod hex;
pub mod journal;
pub mod logging;
pub mod mdn;
pub mod mechanism;
pub mod meta;
pub mod mime;
pub mod notify;
pub mod poll;
pub mod pop3;
pub mod probe;
pub mod sasl;
pub mod secret;
pub mod smime;
pub mod smtp;
pub mod spool;
pub mod status;
pub mod text;
pub mod timefmt;
pub mod tls;
