//! A small synchronous SMTP submission client for MDNs (README,
//! "Acknowledgments (MDN)"): connect, secure (implicit TLS, RFC 8314, or
//! STARTTLS, RFC 3207) with the same trust store and certificate checks as
//! POP3 (`tls`), log in with the SASL mechanisms of `sasl` (RFC 4954), and
//! submit one message at a time with a null reverse path.
//!
//! Written here rather than taken from lettre: it reuses the TLS, trust
//! store and SASL code popspool already has; lettre's blocking SMTP
//! transport alone would have added 332 KiB and taken the binary past its
//! 2 MiB budget (Cargo.toml has the measurements).
//!
//! - `proto`: replies, EHLO keywords, commands, dot-stuffing; no I/O.
//! - `client`: the dialogue over any stream, unit-tested on scripted bytes.
//! - here: the socket, TLS, errors, and what `--probe` reports.

mod client;
pub mod proto;

use std::fmt;
use std::io;
use std::net::{IpAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::config::TlsMode;
use crate::mechanism::Mechanism;
use crate::sasl;
use crate::tls::{self, Stream};

pub use client::Conn;
pub use proto::{Ehlo, Reply};

/// Where an SMTP server is and how to secure the connection to it.
#[derive(Debug, Clone, Copy)]
pub struct Server<'a> {
    /// `smtp_host`.
    pub host: &'a str,
    /// `smtp_port`.
    pub port: u16,
    /// `smtp_tls`.
    pub tls: TlsMode,
    /// `smtp_ca_file` (or the account's `ca_file`).
    pub ca_file: Option<&'a Path>,
    /// The account's `source_ip`.
    pub source_ip: Option<IpAddr>,
    /// The account's `timeout`, per read and write.
    pub timeout: Duration,
}

impl<'a> Server<'a> {
    /// The SMTP server of `acct`, when `smtp_host` is set.
    pub fn of(acct: &'a crate::config::Account) -> Option<Server<'a>> {
        let s = acct.smtp.as_ref()?;
        Some(Server {
            host: &s.host,
            port: s.port,
            tls: s.tls,
            ca_file: s.ca_file.as_deref(),
            source_ip: acct.source_ip,
            timeout: acct.timeout,
        })
    }

    /// What the TLS layer needs: no pin and no client certificate (the
    /// SMTP server is trusted through the store and `smtp_ca_file`).
    pub fn tls_settings(&self) -> tls::Settings<'a> {
        tls::Settings {
            host: self.host,
            port: self.port,
            source_ip: self.source_ip,
            timeout: self.timeout,
            ca_file: self.ca_file,
            pin: None,
            client: None,
        }
    }
}

/// What went wrong talking to the SMTP server. Nothing here carries a
/// password or a SASL payload.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Connecting or the TLS handshake.
    Tls(tls::Error),
    /// The connection broke or timed out.
    Io(io::Error),
    /// The server does not speak SMTP as we understand it.
    Protocol(&'static str),
    /// The server answered with a failure code.
    Refused {
        /// Which step: `greeting`, `EHLO`, `STARTTLS`, `AUTH`, `MAIL FROM`,
        /// `RCPT TO`, `DATA`, `end of DATA`.
        stage: &'static str,
        /// Code and text, printable.
        reply: String,
        /// 5xx: the same message will be refused again.
        permanent: bool,
    },
    /// `smtp_tls = starttls` and the server does not offer STARTTLS.
    StartTlsNotOffered,
    /// None of the mechanisms popspool has for SMTP is offered.
    NoMechanism {
        /// What the server offers (EHLO `AUTH`), or "nothing".
        offered: String,
    },
    /// Inside the SASL exchange.
    Sasl(sasl::Error),
    /// The recipient is not a plain `local@domain`.
    Address(String),
    /// The server's answer to the end of the message never came: whether
    /// it took the message is unknown.
    Unknown(Box<Error>),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Tls(e) => write!(f, "{e}"),
            Error::Io(e) => write!(f, "SMTP connection: {e}"),
            Error::Protocol(what) => write!(f, "SMTP protocol error: {what}"),
            Error::Refused { stage, reply, .. } => {
                write!(f, "SMTP server refused {stage}: {reply}")
            }
            Error::StartTlsNotOffered => f.write_str(
                "smtp_tls = starttls but the SMTP server does not offer STARTTLS; refusing to \
                 continue without TLS",
            ),
            Error::NoMechanism { offered } => write!(
                f,
                "the SMTP server offers no login popspool can use (scram-sha-256, scram-sha-1, \
                 plain, login, cram-md5); it offers: {offered}"
            ),
            Error::Sasl(e) => write!(f, "SMTP login: {e}"),
            Error::Address(a) => {
                write!(f, "cannot send to {a:?}: not a plain local@domain address")
            }
            Error::Unknown(e) => write!(
                f,
                "the connection failed after the end of the message was sent ({e}); the server \
                 may or may not have accepted it"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The step a refusal answered; empty for other errors.
    pub fn stage(&self) -> &'static str {
        match self {
            Error::Refused { stage, .. } => stage,
            _ => "",
        }
    }

    /// Whether sending the same message again can never succeed without
    /// someone changing something: a 5xx to the message's recipient or
    /// content (not to the login or the null sender, which concern every
    /// message and the configuration), or a recipient that cannot be
    /// written.
    pub fn is_permanent_for_message(&self) -> bool {
        match self {
            Error::Refused {
                stage: "RCPT TO" | "DATA" | "end of DATA",
                permanent,
                ..
            } => *permanent,
            Error::Address(_) => true,
            _ => false,
        }
    }
}

/// A secured connection after EHLO, ready to log in or send.
pub struct Session {
    /// The dialogue.
    pub conn: Conn<Stream>,
    /// The greeting.
    pub greeting: Reply,
    /// What EHLO offered (after STARTTLS, if any).
    pub ehlo: Ehlo,
    /// Whether the connection is encrypted.
    pub tls: bool,
}

/// Connect to `server`, secure the connection as configured, and say EHLO.
pub fn open(server: &Server<'_>, connectors: &tls::Connectors) -> Result<Session, Error> {
    let settings = server.tls_settings();
    let tls_cfg = match server.tls {
        TlsMode::None => None,
        _ => Some(connectors.get(&settings).map_err(Error::Tls)?),
    };
    match open_with(server, tls_cfg.as_ref()) {
        // As for POP3 (poll::connect): a CA only the whole bundle has.
        Err(Error::Tls(e)) if e.is_verification_failure() => {
            match tls_cfg.and_then(|t| connectors.whole_store(&t, &settings)) {
                Some(whole) => open_with(server, Some(&whole.map_err(Error::Tls)?)),
                None => Err(Error::Tls(e)),
            }
        }
        r => r,
    }
}

fn open_with(server: &Server<'_>, tls_cfg: Option<&tls::Tls>) -> Result<Session, Error> {
    let end = crate::deadline::connect_end(server.timeout);
    let tcp = tls::connect(
        server.host,
        server.port,
        server.source_ip,
        server.timeout,
        end,
    )
    .map_err(Error::Tls)?;
    let me = helo_name(&tcp);
    let stream = match (tls_cfg, server.tls) {
        (Some(t), TlsMode::Implicit) => t
            .handshake(server.host, server.port, tcp, end)
            .map_err(Error::Tls)?,
        _ => Stream::Plain(tcp),
    };
    // As for POP3 (README, "Configuration": `timeout`): each reply must
    // also be complete within twice the inactivity timeout.
    let deadline = Some(server.timeout * 2);
    let (mut conn, greeting) = Conn::greet(stream, deadline)?;
    let mut ehlo = conn.ehlo(&me)?;
    if let (Some(t), TlsMode::StartTls) = (tls_cfg, server.tls) {
        if !ehlo.starttls {
            conn.quit();
            return Err(Error::StartTlsNotOffered);
        }
        conn.starttls()?;
        let Some(Stream::Plain(tcp)) = conn.into_inner() else {
            return Err(Error::Protocol(
                "the server sent more after its reply to STARTTLS",
            ));
        };
        let secured = t
            .handshake(
                server.host,
                server.port,
                tcp,
                crate::deadline::connect_end(server.timeout),
            )
            .map_err(Error::Tls)?;
        conn = Conn::upgraded(secured, deadline);
        // RFC 3207 section 4.2: forget what was learned before TLS.
        ehlo = conn.ehlo(&me)?;
    }
    let tls = tls_cfg.is_some();
    Ok(Session {
        conn,
        greeting,
        ehlo,
        tls,
    })
}

/// The EHLO argument: our address as a literal (RFC 5321 section 4.1.3),
/// which is always valid syntax, unlike a host name that may not resolve.
fn helo_name(tcp: &TcpStream) -> String {
    match tcp.local_addr().map(|a| a.ip()) {
        Ok(IpAddr::V4(ip)) => format!("[{ip}]"),
        Ok(IpAddr::V6(ip)) => format!("[IPv6:{ip}]"),
        Err(_) => "[127.0.0.1]".to_string(),
    }
}

impl Session {
    /// Log in as `user` with the best mechanism offered; returns it.
    pub fn login(
        &mut self,
        server: &Server<'_>,
        user: &str,
        password: &str,
    ) -> Result<Mechanism, Error> {
        let mech = proto::choose_mechanism(&self.ehlo.auth).ok_or_else(|| Error::NoMechanism {
            offered: if self.ehlo.auth.is_empty() {
                "nothing".to_string()
            } else {
                self.ehlo.auth.join(", ")
            },
        })?;
        let creds = sasl::Credentials {
            user,
            secret: password,
            host: server.host,
            port: server.port,
        };
        self.conn.auth(mech, &creds)?;
        Ok(mech)
    }
}
