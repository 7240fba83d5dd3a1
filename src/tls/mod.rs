//! Connections: TCP with timeouts, then TLS (implicit or after STLS).
//!
//! Trust comes from the system store (OpenSSL's default paths, which is
//! what Debian's `ca-certificates` fills) plus the account's `ca_file`; with
//! `tls_fingerprint` set, the certificate's SHA-256 is the trust decision
//! and is checked before a single POP3 byte is read or written over TLS.
//!
//! Reading the system store is the most expensive thing a short poll does:
//! the bundle holds about 150 certificates. Where the system's certificate
//! directory is hashed (`c_rehash`, as Debian's `update-ca-certificates`
//! keeps `/etc/ssl/certs`), it is read on demand instead, and OpenSSL looks
//! up only the issuer a server's chain needs (README "The system trust
//! store"). That choice, and the connectors built so far, live in one
//! explicit [`Connectors`] value that `main` makes and lends down: there is
//! no process-wide state here, and the environment is never changed (the
//! contexts are built with the openssl crate, which lets the store be set
//! directly; `SSL_CERT_FILE`/`SSL_CERT_DIR` switched around each build would
//! race with any thread and leak into child processes).
//!
//! - `net`: TCP connections, the buffered socket, [`Stream`].
//! - `store`: which way the system store is read.
//! - `connector`: contexts from an account's settings, the cache, handshakes.
//! - `diagnose`: what a rejected certificate is and what to do about it.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Account;

mod connector;
mod diagnose;
mod net;
mod store;

pub use connector::{Connectors, Tls};
pub use diagnose::{inspect, name_text, CertInfo};
pub use net::{connect, Socket, Stream};
pub use store::smime_store;

use diagnose::{advice, short_reason};

/// What the TLS layer needs to know of an account: where to connect and
/// whom to trust.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// The server's name, for SNI and the certificate check.
    pub host: &'a str,
    /// Its port.
    pub port: u16,
    /// Local address to connect from (`source_ip`).
    pub source_ip: Option<IpAddr>,
    /// Connect, handshake and inactivity timeout.
    pub timeout: Duration,
    /// Extra PEM trust anchors (`ca_file`).
    pub ca_file: Option<&'a Path>,
    /// SHA-256 of the one certificate to accept (`tls_fingerprint`).
    pub pin: Option<[u8; 32]>,
    /// Client certificate and PKCS#8 key (`tls_client_cert`, `tls_client_key`).
    pub client: Option<(&'a Path, &'a Path)>,
}

impl<'a> Settings<'a> {
    /// The TLS settings of `acct`.
    pub fn of(acct: &'a Account) -> Settings<'a> {
        Settings {
            host: &acct.host,
            port: acct.port,
            source_ip: acct.source_ip,
            timeout: acct.timeout,
            ca_file: acct.ca_file.as_deref(),
            pin: acct.tls_fingerprint,
            client: match (&acct.tls_client_cert, &acct.tls_client_key) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                _ => None,
            },
        }
    }
}

/// What ended a failed TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The socket timed out: the server went silent.
    TimedOut,
    /// The server closed or reset the connection before the handshake was
    /// done, without a TLS alert: a server over its connection limit per
    /// client address (Courier's default), restarting, or behind a
    /// filter. Nothing about certificates can be told from it.
    Cut,
    /// TLS itself failed: a certificate that did not verify, no common
    /// protocol version or cipher, an alert from the server.
    Tls,
}

/// What went wrong while connecting or securing the connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The host name did not resolve.
    Resolve {
        /// `host:port` as configured.
        target: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// No resolved address accepted the connection.
    Connect {
        /// `host:port` as configured.
        target: String,
        /// The last address tried and its error.
        last: Option<(SocketAddr, io::Error)>,
    },
    /// A file named in the account (`ca_file`, client certificate) is unusable.
    File {
        /// The configured key.
        key: &'static str,
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The TLS handshake failed (certificate not trusted, name mismatch, protocol).
    Handshake {
        /// `host:port`.
        target: String,
        /// OpenSSL's account of it.
        message: String,
        /// What ended it, as far as the network tells.
        ended: Ended,
        /// On a verification failure, the certificate the server presented,
        /// fetched by a second, unverified handshake (see [`inspect`]).
        presented: Option<Box<CertInfo>>,
    },
    /// `tls_fingerprint` is set and the certificate is a different one.
    FingerprintMismatch {
        /// `host:port`.
        target: String,
        /// What the server presented, to pin if it is the right one.
        presented: Box<CertInfo>,
    },
    /// Socket option or other I/O failure after connecting.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Resolve { target, source } => write!(f, "cannot resolve {target}: {source}"),
            Error::Connect {
                target,
                last: Some((addr, e)),
            } => {
                write!(f, "cannot connect to {target} (last tried {addr}): {e}")
            }
            Error::Connect { target, last: None } => {
                write!(f, "cannot connect to {target}: no usable address")
            }
            Error::File { key, path, message } => {
                write!(f, "{key} {}: {message}", path.display())
            }
            Error::Handshake {
                target,
                message,
                ended: Ended::TimedOut,
                ..
            } => {
                write!(f, "TLS handshake with {target} timed out: {message}")
            }
            Error::Handshake {
                target,
                message,
                ended: Ended::Cut,
                ..
            } => write!(
                f,
                "TLS handshake with {target} was cut off by the server: {message} (a server \
                 over its limit of connections per client address, or restarting, does this; \
                 will retry)"
            ),
            Error::Handshake {
                target,
                message,
                presented: None,
                ..
            } => write!(
                f,
                "TLS handshake with {target} failed: {message} (if the server uses a private CA, \
                 set ca_file; for a self-signed certificate, pin it with tls_fingerprint; \
                 `popspool --probe` shows the certificate)"
            ),
            Error::Handshake {
                target,
                message,
                presented: Some(cert),
                ..
            } => {
                write!(
                    f,
                    "TLS handshake with {target} failed: {}. The server presented {cert}. ",
                    short_reason(message)
                )?;
                let host = target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h);
                f.write_str(&advice(message, cert, host))
            }
            Error::FingerprintMismatch { target, presented } => write!(
                f,
                "certificate of {target} does not match tls_fingerprint: the server presented \
                 {presented}. If the server's certificate was renewed on purpose, pin the new one: \
                 tls_fingerprint = {}",
                presented.sha256
            ),
            Error::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Resolve { source, .. } => Some(source),
            Error::Connect {
                last: Some((_, e)), ..
            } => Some(e),
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl Error {
    /// Whether the handshake failed because the certificate did not verify
    /// (untrusted issuer, wrong name, expired), as opposed to the network.
    pub fn is_verification_failure(&self) -> bool {
        matches!(self, Error::Handshake { message, presented: None, ended: Ended::Tls, .. }
            if message.contains("certificate verify failed"))
    }

    /// Attach the certificate a side handshake found (see [`inspect`]).
    pub fn with_presented(self, cert: Option<CertInfo>) -> Error {
        match (self, cert) {
            (
                Error::Handshake {
                    target,
                    message,
                    ended,
                    ..
                },
                Some(c),
            ) => Error::Handshake {
                target,
                message,
                ended,
                presented: Some(Box::new(c)),
            },
            (e, _) => e,
        }
    }

    /// Whether trying again later may help without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Resolve { .. } | Error::Connect { .. } | Error::Io(_)
        ) || matches!(
            self,
            Error::Handshake {
                ended: Ended::TimedOut | Ended::Cut,
                ..
            }
        )
    }
}
