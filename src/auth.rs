//! Choosing and running the login.
//!
//! Policy (mpop's, tightened): a password never crosses a connection without
//! TLS unless the account says `allow_plaintext = yes`, and that is decided
//! before a single byte of the login (even the user name) is sent. APOP
//! keeps the password off the wire but its MD5 challenge is weak, so `auto`
//! picks it only under TLS or with `allow_plaintext`; asked for explicitly
//! it is used anyway.

use std::fmt;
use std::io::{Read, Write};

use crate::config::{Account, AuthMethod, Password};
use crate::pop3::{self, Capabilities, Client, Greeting, Session};

/// Why the login did not happen or did not succeed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The login would expose the password on a connection without TLS.
    Insecure {
        /// The mechanism that was refused.
        mechanism: &'static str,
    },
    /// The mechanism asked for is not offered by the server.
    NotOffered {
        /// What `auth` asked for.
        wanted: &'static str,
        /// What the server does offer.
        offered: Vec<String>,
    },
    /// The server refused the login or the connection failed during it.
    Pop3(pop3::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Insecure { mechanism } => write!(
                f,
                "refusing {mechanism} login without TLS: the password would cross the network \
                 in the clear (use tls = implicit or starttls, or set allow_plaintext = yes)"
            ),
            Error::NotOffered { wanted, offered } if offered.is_empty() => {
                write!(
                    f,
                    "the server does not offer {wanted} login, nor any other this version supports"
                )
            }
            Error::NotOffered { wanted, offered } => write!(
                f,
                "the server does not offer {wanted} login; it offers: {}",
                offered.join(", ")
            ),
            Error::Pop3(e) => write!(f, "login failed: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Pop3(e) => Some(e),
            _ => None,
        }
    }
}

impl Error {
    /// Whether trying again later may help without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Pop3(e) if e.is_transient())
    }
}

/// A login method this version can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// APOP (RFC 1939 section 7).
    Apop,
    /// USER/PASS.
    User,
}

impl Mechanism {
    /// Name as used in the `auth` key.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Apop => "apop",
            Mechanism::User => "user",
        }
    }
}

/// What the server offers, in the names of the `auth` key.
pub fn offered(greeting: &Greeting, caps: &Capabilities) -> Vec<String> {
    let mut v = Vec::new();
    if greeting.apop_timestamp.is_some() {
        v.push("apop".to_string());
    }
    if caps.user || caps.raw.is_empty() {
        // RFC 2449: a server without CAPA still must support USER/PASS.
        v.push("user".to_string());
    }
    v.extend(
        caps.sasl
            .iter()
            .map(|m| format!("sasl {}", m.to_ascii_lowercase())),
    );
    v
}

/// Pick the mechanism for `acct` according to the policy above.
pub fn choose(
    acct: &Account,
    greeting: &Greeting,
    caps: &Capabilities,
    tls: bool,
) -> Result<Mechanism, Error> {
    let cleartext_ok = tls || acct.allow_plaintext;
    let has_apop = greeting.apop_timestamp.is_some();
    match acct.auth {
        AuthMethod::User if !cleartext_ok => Err(Error::Insecure {
            mechanism: "USER/PASS",
        }),
        AuthMethod::User => Ok(Mechanism::User),
        AuthMethod::Apop if has_apop => Ok(Mechanism::Apop),
        AuthMethod::Apop => Err(Error::NotOffered {
            wanted: "APOP",
            offered: offered(greeting, caps),
        }),
        AuthMethod::Auto if has_apop && cleartext_ok => Ok(Mechanism::Apop),
        AuthMethod::Auto if !cleartext_ok => Err(Error::Insecure {
            mechanism: "USER/PASS",
        }),
        AuthMethod::Auto => Ok(Mechanism::User),
    }
}

/// Log in on `client` with `mech`.
pub fn login<S: Read + Write>(
    client: Client<S>,
    mech: Mechanism,
    user: &str,
    password: &Password,
    greeting: &Greeting,
) -> Result<Session<S>, (Error, Client<S>)> {
    let r = match (mech, &greeting.apop_timestamp) {
        (Mechanism::Apop, Some(ts)) => client.apop(user, password, ts),
        (Mechanism::Apop, None) => {
            return Err((
                Error::NotOffered {
                    wanted: "APOP",
                    offered: vec![],
                },
                client,
            ))
        }
        (Mechanism::User, _) => client.user_pass(user, password),
    };
    r.map_err(|(e, c)| (Error::Pop3(e), c))
}
