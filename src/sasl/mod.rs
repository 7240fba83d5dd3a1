//! SASL client mechanisms (RFC 4422) for POP3 `AUTH` (RFC 5034), without I/O.
//!
//! Each mechanism is an [`Exchange`]: it may produce an initial response,
//! answers the server's challenges one at a time, and says at the end
//! whether it is satisfied (SCRAM is only once the server has proved that
//! it knows the password). Bytes in, bytes out; base64 and the POP3 dialogue
//! are [`crate::auth`]'s business, so every mechanism is tested here against
//! its RFC's example exchange.
//!
//! Secrets: exchanges hold the password or token for their lifetime and
//! put it (or a digest of it) into the responses they return; nothing here
//! logs, and no [`Error`] carries or quotes server or client payloads,
//! only what was wrong with them.
//!
//! | mechanism | spec | what crosses the wire |
//! |---|---|---|
//! | PLAIN | RFC 4616 | the password (TLS needed) |
//! | LOGIN | draft-murchison-sasl-login | the password (TLS needed) |
//! | CRAM-MD5 | RFC 2195 | HMAC-MD5 of a challenge |
//! | SCRAM-SHA-1, SCRAM-SHA-256 | RFC 5802, RFC 7677 | a salted proof; the server proves itself too |
//! | NTLM | MS-NLMP (NTLMv2 only) | HMAC-MD5 of the challenge with the NT hash |
//! | XOAUTH2 | Google/Microsoft | a bearer token (TLS needed) |
//! | OAUTHBEARER | RFC 7628 | a bearer token (TLS needed) |
//! | EXTERNAL | RFC 4422 appendix A | nothing: the TLS client certificate is the credential |

pub mod crypto;
pub mod md4;
pub mod ntlm;
pub mod oauth;
pub mod saslprep;
pub mod scram;
pub mod simple;

use std::fmt;

use crate::mechanism::Mechanism;

/// Server text quoted in an error (an OAuth status, a SCRAM `e=` value), in
/// characters: enough to act on, short enough for one log line.
const MAX_QUOTED: usize = 200;

/// What went wrong inside a mechanism. None of these quotes a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A server message that does not follow the mechanism: what was wrong with it.
    BadChallenge(&'static str),
    /// The server challenged again when the mechanism had nothing more to say.
    UnexpectedChallenge,
    /// SCRAM: the server's nonce does not extend the one we sent (RFC 5802 §5.1).
    NonceMismatch,
    /// SCRAM: an iteration count outside the accepted range.
    IterationCount {
        /// What the server asked for.
        count: u64,
    },
    /// SCRAM: the server's final signature is wrong, so it does not know the
    /// password: an impostor, or a server whose stored keys are broken.
    ServerSignature,
    /// SCRAM: the server ended the exchange with `e=`: its reason.
    ServerSaid(String),
    /// The server said `+OK` before the exchange was complete: for SCRAM,
    /// before proving itself, so the session is not trusted.
    Incomplete,
    /// The user name or secret cannot be sent with this mechanism.
    Credentials {
        /// `"user name"`, `"password"` or `"access token"`.
        what: &'static str,
        /// Why not.
        reason: &'static str,
    },
    /// The server asks for a variant this client does not implement.
    Unsupported(&'static str),
    /// OpenSSL failed (its error text names the function, not the data).
    Crypto(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadChallenge(what) => write!(f, "malformed server challenge: {what}"),
            Error::UnexpectedChallenge => f.write_str("server sent a challenge the mechanism does not expect"),
            Error::NonceMismatch => f.write_str(
                "server nonce does not extend ours (RFC 5802 section 5.1); possible replay or impostor",
            ),
            Error::IterationCount { count } => write!(
                f,
                "server asks for {count} PBKDF2 iterations; accepted are {} to {}",
                scram::MIN_ITERATIONS,
                scram::MAX_ITERATIONS
            ),
            Error::ServerSignature => f.write_str(
                "the server could not prove that it knows the password (wrong SCRAM server \
                 signature): it may be an impostor; nothing was fetched",
            ),
            Error::ServerSaid(e) => write!(f, "server ended the SCRAM exchange: {e}"),
            Error::Incomplete => f.write_str(
                "server accepted the login before proving that it knows the password; \
                 the session is not trusted",
            ),
            Error::Credentials { what, reason } => write!(f, "the {what} {reason}"),
            Error::Unsupported(what) => write!(f, "not supported: {what}"),
            Error::Crypto(e) => write!(f, "crypto library failure: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// Whether trying again later can help without anyone changing
    /// anything: only a failure of the crypto library itself. A server that
    /// fails to prove itself is not retried at the poll interval: each try
    /// would hand an impostor another proof to attack offline.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Crypto(_))
    }
}

/// Server text made safe for one log line: control characters become `?`.
fn quoted(text: &[u8]) -> String {
    crate::text::printable_bytes(text, MAX_QUOTED)
}

/// Whether `mech`'s initial response may go on the `AUTH` line (RFC 5034
/// §4, when it fits in 255 octets). XOAUTH2 never: Microsoft 365 requires
/// `AUTH XOAUTH2`, a `+` from the server, then the token on its own line,
/// and the others (Gmail) accept that form as every SASL server must.
pub fn initial_response_on_auth_line(mech: Mechanism) -> bool {
    !matches!(mech, Mechanism::XOAuth2)
}

/// Who logs in, with what, and where (OAUTHBEARER names the server).
pub struct Credentials<'a> {
    /// The `user` key.
    pub user: &'a str,
    /// Password or access token; empty for EXTERNAL.
    pub secret: &'a str,
    /// Server host name, as configured.
    pub host: &'a str,
    /// Server port.
    pub port: u16,
}

/// One run of a mechanism.
pub trait Exchange {
    /// The client's first message for a client-first mechanism (`Some`,
    /// possibly empty), `None` when the server speaks first. Called once.
    fn initial(&mut self) -> Result<Option<Vec<u8>>, Error>;

    /// The answer to one server challenge (already base64-decoded).
    fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, Error>;

    /// After the server's `+OK`: whether the exchange got as far as the
    /// mechanism requires (SCRAM: the server's signature was verified).
    fn finish(&self) -> Result<(), Error> {
        Ok(())
    }

    /// What the server explained in a failure challenge (OAuth's JSON
    /// status), to show next to its `-ERR`. Sanitised server text.
    fn server_explanation(&self) -> Option<String> {
        None
    }
}

/// A fresh exchange of `mech` for `creds`. Fails on credentials the
/// mechanism cannot carry, and for USER and APOP, which are not SASL.
pub fn start(mech: Mechanism, creds: &Credentials<'_>) -> Result<Box<dyn Exchange>, Error> {
    Ok(match mech {
        Mechanism::User | Mechanism::Apop => {
            return Err(Error::Unsupported("USER or APOP over AUTH"))
        }
        Mechanism::Plain => Box::new(simple::Plain::new(creds.user, creds.secret)?),
        Mechanism::Login => Box::new(simple::Login::new(creds.user, creds.secret)),
        Mechanism::CramMd5 => Box::new(simple::CramMd5::new(creds.user, creds.secret)),
        Mechanism::ScramSha1 => Box::new(scram::Scram::new(
            crypto::Hash::Sha1,
            creds.user,
            creds.secret,
        )?),
        Mechanism::ScramSha256 => Box::new(scram::Scram::new(
            crypto::Hash::Sha256,
            creds.user,
            creds.secret,
        )?),
        Mechanism::Ntlm => Box::new(ntlm::Ntlm::new(creds.user, creds.secret)?),
        Mechanism::XOAuth2 => Box::new(oauth::Bearer::xoauth2(creds.user, creds.secret)?),
        Mechanism::OAuthBearer => Box::new(oauth::Bearer::oauthbearer(
            creds.user,
            creds.secret,
            creds.host,
            creds.port,
        )?),
        Mechanism::External => Box::new(simple::External::new(creds.user)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_never_quote_payloads() {
        let e = Error::Credentials {
            what: "password",
            reason: "contains a NUL character, which PLAIN cannot carry",
        };
        assert_eq!(
            e.to_string(),
            "the password contains a NUL character, which PLAIN cannot carry"
        );
        assert!(Error::Crypto("x".into()).is_transient());
        assert!(!Error::ServerSignature.is_transient());
        assert_eq!(quoted(b"a\x1bb"), "a?b");
    }

    #[test]
    fn every_mechanism_starts() {
        let creds = Credentials {
            user: "u",
            secret: "tok3n",
            host: "h",
            port: 995,
        };
        for mech in Mechanism::ALL.into_iter().filter(|m| m.is_sasl()) {
            let mut ex = start(mech, &creds).unwrap();
            let first = ex.initial().unwrap();
            let client_first = !matches!(mech, Mechanism::Login | Mechanism::CramMd5);
            assert_eq!(first.is_some(), client_first, "{}", mech.name());
        }
        for not_sasl in [Mechanism::User, Mechanism::Apop] {
            assert!(start(not_sasl, &creds).is_err());
        }
    }
}
