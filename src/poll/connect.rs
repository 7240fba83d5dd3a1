//! Setting up a session, shared by a poll and `--probe`: connect, secure
//! the connection as the account says (POP3S, or STLS per RFC 2595),
//! explain a certificate that did not verify, and log in by the account's
//! policy (see `auth`). Every phase is held to its limit (see
//! [`crate::deadline`]) and tells the `pulse`, if any, when it starts.

use crate::auth;
use crate::config::{Account, TlsMode};
use crate::deadline;
use crate::pop3::{Capabilities, Client, Greeting, Pulse, Session};
use crate::secret::Password;
use crate::tls::{self, Stream};

use super::Error;

/// A logged-in session and what was learned on the way.
pub struct Opened {
    /// TRANSACTION state.
    pub session: Session<Stream>,
    /// CAPA (after STLS, if any).
    pub caps: Capabilities,
    /// The greeting.
    pub greeting: Greeting,
    /// The mechanism that logged in.
    pub mechanism: crate::mechanism::Mechanism,
}

/// A connection secured as the account says, before login.
pub struct Connected {
    /// AUTHORIZATION state.
    pub client: Client<Stream>,
    /// The greeting.
    pub greeting: Greeting,
    /// CAPA (after STLS, if any).
    pub caps: Capabilities,
}

/// Connect and secure the connection as the account says; nothing of the
/// login has been sent yet. `pulse` hears of every sign of progress (see
/// [`Pulse`]).
pub fn connect(
    acct: &Account,
    connectors: &tls::Connectors,
    pulse: Option<&Pulse>,
) -> Result<Connected, Error> {
    let settings = tls::Settings::of(acct);
    let tls_cfg = match acct.tls {
        TlsMode::None => None,
        _ => Some(connectors.get(&settings).map_err(Error::Tls)?),
    };
    match connect_with(acct, tls_cfg.as_ref(), pulse) {
        Err(Error::Tls(e)) if e.is_verification_failure() => {
            // Read on demand, the system store is its hashed directory; a
            // CA found only in the bundle must still be trusted.
            let whole = tls_cfg
                .as_ref()
                .and_then(|t| connectors.whole_store(t, &settings));
            let Some(whole) = whole else {
                return Err(explain_tls(acct, e, pulse));
            };
            let whole = whole.map_err(Error::Tls)?;
            let r = connect_with(acct, Some(&whole), pulse);
            if r.is_ok() {
                log::warn!(
                    "{}: the server's CA is in the system certificate bundle but not in the \
                     hashed certificate directory; reading the whole bundle from now on \
                     (run update-ca-certificates or c_rehash to fix the directory)",
                    acct.name
                );
            }
            r.map_err(|e| match e {
                Error::Tls(e) => explain_tls(acct, e, pulse),
                e => e,
            })
        }
        Err(Error::Tls(e)) => Err(explain_tls(acct, e, pulse)),
        r => r,
    }
}

/// [`connect`] with a given TLS configuration; a failed handshake is
/// returned as it is, for the caller to explain.
fn connect_with(
    acct: &Account,
    tls_cfg: Option<&tls::Tls>,
    pulse: Option<&Pulse>,
) -> Result<Connected, Error> {
    let beat = || {
        if let Some(p) = pulse {
            p();
        }
    };
    beat();
    let end = deadline::connect_end(acct.timeout);
    let tcp = tls::connect(&acct.host, acct.port, acct.source_ip, acct.timeout, end)
        .map_err(Error::Tls)?;
    let stream = match (tls_cfg, acct.tls) {
        (Some(t), TlsMode::Implicit) => t
            .handshake(&acct.host, acct.port, tcp, end)
            .map_err(Error::Tls)?,
        _ => Stream::Plain(tcp),
    };
    beat();
    let pacing = deadline::pacing(
        acct.timeout,
        format!("{}:{}", acct.host, acct.port),
        pulse.cloned(),
    );
    let phase = deadline::login_phase(acct.timeout);
    let (mut client, greeting) =
        Client::connect_paced(stream, pacing.clone(), Some(phase)).map_err(Error::Pop3)?;
    let mut caps = client.capa().map_err(Error::Pop3)?;
    if let (Some(t), TlsMode::StartTls) = (tls_cfg, acct.tls) {
        if !caps.stls {
            let _ = client.quit();
            return Err(Error::StlsNotOffered);
        }
        let plain = client.stls().map_err(Error::Pop3)?;
        let tcp = match plain {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(_) => unreachable!("STLS is only offered before TLS"),
        };
        // The handshake belongs to the login phase.
        let secured = t
            .handshake(&acct.host, acct.port, tcp, phase.end)
            .map_err(Error::Tls)?;
        beat();
        // RFC 2595 section 4: forget the capabilities learned before TLS.
        // The greeting's APOP timestamp is kept: a forged one gains an
        // attacker nothing, since the digest then travels inside TLS.
        client = Client::from_upgraded(secured);
        client.set_pacing(pacing);
        client.set_phase(Some(phase));
        caps = client.capa().map_err(Error::Pop3)?;
    }
    Ok(Connected {
        client,
        greeting,
        caps,
    })
}

/// A certificate that did not verify: fetch it over a second, unverified
/// connection that carries nothing else, so the error can say what it is
/// and what to pin or trust. The failed session is never continued.
fn explain_tls(acct: &Account, e: tls::Error, pulse: Option<&Pulse>) -> Error {
    if !e.is_verification_failure() {
        return Error::Tls(e);
    }
    if let Some(p) = pulse {
        p();
    }
    let cert = tls::inspect(&tls::Settings::of(acct), &|tcp| {
        stls_prelude(acct, tcp, pulse)
    });
    Error::Tls(e.with_presented(cert))
}

/// The plain-text prelude of a side connection: for STLS, greeting and
/// `STLS`, held to the limits of a login; nothing at all for implicit TLS.
pub fn stls_only(acct: &Account, tcp: std::net::TcpStream) -> Option<std::net::TcpStream> {
    stls_prelude(acct, tcp, None)
}

/// [`stls_only`], telling `pulse` of progress.
fn stls_prelude(
    acct: &Account,
    tcp: std::net::TcpStream,
    pulse: Option<&Pulse>,
) -> Option<std::net::TcpStream> {
    if acct.tls != TlsMode::StartTls {
        return Some(tcp);
    }
    let pacing = deadline::pacing(acct.timeout, String::new(), pulse.cloned());
    let phase = deadline::login_phase(acct.timeout);
    let (client, _) = Client::connect_paced(tcp, pacing, Some(phase)).ok()?;
    client.stls().ok()
}

/// Connect, secure and log in, following the account's policy.
pub fn open(
    acct: &Account,
    password: &Password,
    connectors: &tls::Connectors,
    pulse: Option<&Pulse>,
) -> Result<Opened, Error> {
    log_in(connect(acct, connectors, pulse)?, acct, password)
}

/// Log in on a connection by the account's policy (see `auth`): the
/// mechanism `auth` names, or what `auto` ranks first and, after a
/// refusal, one other.
pub fn log_in(conn: Connected, acct: &Account, password: &Password) -> Result<Opened, Error> {
    let Connected {
        client,
        greeting,
        caps,
    } = conn;
    let tls_active = client.get_ref().is_tls();
    let candidates = match auth::candidates(acct, &greeting, &caps, tls_active) {
        Ok(c) => c,
        Err(e) => {
            let _ = client.quit();
            return Err(Error::Auth(e));
        }
    };
    let (session, mechanism) =
        auth::login(client, &candidates, tls_active, acct, password, &greeting)
            .map_err(Error::Auth)?;
    Ok(Opened {
        session,
        caps,
        greeting,
        mechanism,
    })
}
