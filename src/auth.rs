//! Choosing and running the login: USER/PASS, APOP (RFC 1939) and the SASL
//! mechanisms of [`crate::sasl`] over `AUTH` (RFC 5034).
//!
//! Policy (mpop's, tightened): no login happens on a connection without
//! TLS unless the account says `allow_plaintext = yes`, and that is decided
//! before a single byte of the login (even the user name) is sent. Every
//! mechanism hands a passive listener either the secret (password, bearer
//! token) or what cracks offline to it (an APOP or CRAM-MD5 digest, an
//! NTLM response, a SCRAM proof with its salt); the configuration refuses
//! `tls = none` without `allow_plaintext` (README "Logging in"), and this
//! module refuses it again. `auto` never picks NTLM, XOAUTH2, OAUTHBEARER or EXTERNAL: they need a
//! domain account, a token or a certificate that only explicit
//! configuration implies.
//!
//! `auto` ranks what the server offers ([`AUTO_ORDER_TLS`],
//! [`AUTO_ORDER_CLEAR`]) and, when the server refuses the first choice,
//! tries the next one on the same connection, once
//! ([`MAX_LOGIN_ATTEMPTS`]): servers advertise mechanisms they cannot run
//! for a user (CRAM-MD5 without a stored secret, an APOP timestamp in the
//! greeting without an APOP password), and a login that works with another
//! offered mechanism must not fail over that. More than one extra attempt
//! would look like guessing to the server and can get accounts locked; a
//! refusal after that is permanent, and the daemon backs off at once.

use std::fmt;
use std::io::{Read, Write};

use crate::config::{Account, Auth};
use crate::mechanism::Mechanism;
use crate::pop3::{self, Capabilities, Client, Command, Greeting, Session};
use crate::sasl::{self, crypto, Exchange};
use crate::secret::Password;

/// What `auto` tries inside TLS, best first. SCRAM proves the password
/// without revealing it and makes the server prove that it knows it too,
/// which adds to TLS. A challenge-response that does not authenticate the
/// server (CRAM-MD5, APOP) adds nothing inside TLS, and these are what
/// servers advertise without being able to run them (Courier with authpam,
/// Cyrus with saslauthd, GNU Mailutils' greeting timestamp): last. PLAIN
/// before LOGIN before USER: one round trip instead of two, then the oldest
/// form.
pub const AUTO_ORDER_TLS: [Mechanism; 7] = [
    Mechanism::ScramSha256,
    Mechanism::ScramSha1,
    Mechanism::Plain,
    Mechanism::Login,
    Mechanism::User,
    Mechanism::CramMd5,
    Mechanism::Apop,
];

/// What `auto` tries without TLS (only with `allow_plaintext = yes`), best
/// first: here a challenge-response keeps the password itself from a
/// listener, so it comes before what sends the password.
pub const AUTO_ORDER_CLEAR: [Mechanism; 7] = [
    Mechanism::ScramSha256,
    Mechanism::ScramSha1,
    Mechanism::CramMd5,
    Mechanism::Apop,
    Mechanism::Plain,
    Mechanism::Login,
    Mechanism::User,
];

/// Logins per connection with `auto`: the first choice and, after a
/// refusal, the next one. A wrong password so costs at most one extra
/// attempt per poll.
pub const MAX_LOGIN_ATTEMPTS: usize = 2;

/// Why the login did not happen or did not succeed. Never holds a secret.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The login would expose the password or token on a connection without TLS.
    Insecure {
        /// The mechanism (or, for `auto`, the mechanisms offered) refused.
        mechanism: String,
    },
    /// The mechanism asked for is not offered by the server.
    NotOffered {
        /// What `auth` asked for.
        wanted: &'static str,
        /// What the server does offer, in the `auth` key's names.
        offered: Vec<String>,
    },
    /// We ended the exchange: the server misbehaved or could not prove itself.
    Mechanism {
        /// The `auth` name of the mechanism.
        mechanism: &'static str,
        /// What was wrong.
        source: sasl::Error,
    },
    /// The server refused the login, or the connection failed during it.
    Refused {
        /// The `auth` name of the mechanism.
        mechanism: &'static str,
        /// The POP3 error (a `-ERR` with its response code, or I/O).
        source: pop3::Error,
        /// What the server explained in the exchange (an OAuth status).
        detail: Option<String>,
    },
    /// `auto` tried more than one mechanism, or stopped with offered ones
    /// untried: each failure in order, and what was not tried.
    Attempts {
        /// The mechanisms tried and why each failed, in order (at least one).
        failures: Vec<(Mechanism, Error)>,
        /// Offered and allowed mechanisms not tried, in `auth` names.
        untried: Vec<&'static str>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Insecure { mechanism } => write!(
                f,
                "refusing {mechanism} login without TLS: the password, or what cracks \
                 offline to it, would cross the network in the clear (use tls = implicit \
                 or starttls, or set allow_plaintext = yes)"
            ),
            Error::NotOffered { wanted, offered } if offered.is_empty() => write!(
                f,
                "the server does not offer {wanted} login, nor any other this version supports"
            ),
            Error::NotOffered { wanted, offered } => write!(
                f,
                "the server does not offer {wanted} login; it offers: {}",
                offered.join(", ")
            ),
            Error::Mechanism { mechanism, source } => {
                write!(f, "login with {mechanism} abandoned: {source}")
            }
            Error::Refused {
                mechanism,
                source,
                detail,
            } => {
                write!(f, "login failed with {mechanism}: {source}")?;
                if let Some(d) = detail {
                    write!(f, " (server said: {d})")?;
                }
                if source.is_auth_failure() && matches!(*mechanism, "xoauth2" | "oauthbearer") {
                    f.write_str("; is the access token current and for this user and scope?")?;
                }
                Ok(())
            }
            Error::Attempts { failures, untried } => {
                for (i, (_, e)) in failures.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; then ")?;
                    }
                    write!(f, "{e}")?;
                }
                if !untried.is_empty() {
                    write!(f, "; not tried: {}", untried.join(", "))?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Refused { source, .. } => Some(source),
            Error::Mechanism { source, .. } => Some(source),
            Error::Attempts { failures, .. } => failures.last().map(|(_, e)| e as _),
            _ => None,
        }
    }
}

impl Error {
    /// Whether trying again later may help without anyone changing anything:
    /// network trouble, or `[IN-USE]`, `[LOGIN-DELAY]`, `[SYS/TEMP]`.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Refused { source, .. } => source.is_transient(),
            Error::Mechanism { source, .. } => source.is_transient(),
            Error::Attempts { failures, .. } => {
                failures.last().is_some_and(|(_, e)| e.is_transient())
            }
            _ => false,
        }
    }

    /// Whether only a change of configuration, credentials or server can
    /// help: the credentials were refused (`[AUTH]`), the policy forbids
    /// every mechanism offered, or the server failed to prove itself.
    /// Retrying at the poll interval would only hammer the server (and can
    /// get the account locked), so the daemon backs off at once.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Insecure { .. } | Error::NotOffered { .. } => true,
            Error::Mechanism { source, .. } => !source.is_transient(),
            Error::Refused { source, .. } => source.is_auth_failure(),
            Error::Attempts { failures, .. } => {
                failures.last().is_some_and(|(_, e)| e.is_permanent())
            }
        }
    }

    /// The mechanisms this login tried, in order, in `auth` names.
    pub fn tried(&self) -> Vec<&'static str> {
        match self {
            Error::Mechanism { mechanism, .. } | Error::Refused { mechanism, .. } => {
                vec![mechanism]
            }
            Error::Attempts { failures, .. } => failures.iter().map(|(m, _)| m.name()).collect(),
            Error::Insecure { .. } | Error::NotOffered { .. } => Vec::new(),
        }
    }

    /// The failures of one login, as one error: a single failure with
    /// nothing left untried stays as it is.
    fn combine(mut failures: Vec<(Mechanism, Error)>, untried: Vec<&'static str>) -> Error {
        if failures.len() == 1 && untried.is_empty() {
            if let Some((_, e)) = failures.pop() {
                return e;
            }
        }
        Error::Attempts { failures, untried }
    }
}

/// Whether the server offers `m` on this connection.
fn offers(m: Mechanism, greeting: &Greeting, caps: &Capabilities) -> bool {
    match m {
        Mechanism::Apop => greeting.apop_timestamp.is_some(),
        // RFC 2449: a server without CAPA still must support USER/PASS.
        Mechanism::User => caps.user || caps.raw.is_empty(),
        m => m.sasl_name().is_some_and(|name| caps.has_sasl(name)),
    }
}

/// A mechanism name from CAPA shown in a message, in characters: RFC 4422
/// names have at most 20, so a longer one is the server's nonsense, cut.
const MAX_MECHANISM_SHOWN: usize = 24;

/// What the server offers, in the names of the `auth` key; SASL mechanisms
/// this version lacks are listed as `NAME (unsupported)`. Server text is
/// sanitised.
pub fn offered(greeting: &Greeting, caps: &Capabilities) -> Vec<String> {
    let mut v = Vec::new();
    for m in [Mechanism::Apop, Mechanism::User] {
        if offers(m, greeting, caps) {
            v.push(m.name().to_string());
        }
    }
    for name in &caps.sasl {
        match Mechanism::from_sasl_name(name) {
            Some(m) => v.push(m.name().to_string()),
            None => v.push(format!(
                "{} (unsupported)",
                crate::text::printable(name, MAX_MECHANISM_SHOWN)
            )),
        }
    }
    v
}

fn auto_order(tls: bool) -> [Mechanism; 7] {
    if tls {
        AUTO_ORDER_TLS
    } else {
        AUTO_ORDER_CLEAR
    }
}

/// What `auto` would try on this connection, in order (empty if nothing).
pub fn auto_candidates(
    greeting: &Greeting,
    caps: &Capabilities,
    tls: bool,
    allow_plaintext: bool,
) -> Vec<Mechanism> {
    let cleartext_ok = tls || allow_plaintext;
    auto_order(tls)
        .into_iter()
        .filter(|&m| offers(m, greeting, caps) && cleartext_ok)
        .collect()
}

/// The mechanisms to try for `acct`, in order, by the policy above: the
/// one `auth` names, or what `auto` ranks. Nothing has been sent when this
/// fails.
pub fn candidates(
    acct: &Account,
    greeting: &Greeting,
    caps: &Capabilities,
    tls: bool,
) -> Result<Vec<Mechanism>, Error> {
    let cleartext_ok = tls || acct.allow_plaintext;
    let Auth::Only(wanted) = acct.auth else {
        let ranked = auto_candidates(greeting, caps, tls, acct.allow_plaintext);
        if !ranked.is_empty() {
            return Ok(ranked);
        }
        let usable: Vec<&str> = auto_order(tls)
            .iter()
            .filter(|&&m| offers(m, greeting, caps))
            .map(|m| m.name())
            .collect();
        if usable.is_empty() {
            return Err(Error::NotOffered {
                wanted: "any automatically chosen",
                offered: offered(greeting, caps),
            });
        }
        return Err(Error::Insecure {
            mechanism: usable.join("/"),
        });
    };
    if !offers(wanted, greeting, caps) {
        return Err(Error::NotOffered {
            wanted: wanted.name(),
            offered: offered(greeting, caps),
        });
    }
    // EXTERNAL without TLS has no certificate to stand on; config refuses
    // `tls = none` with it, so this only guards against a future path.
    let needs_tls = wanted == Mechanism::External && !tls;
    if needs_tls || !cleartext_ok {
        return Err(Error::Insecure {
            mechanism: wanted.name().to_string(),
        });
    }
    Ok(vec![wanted])
}

/// What a server must store to check a login, which decides whether a
/// refused mechanism says anything about the next one: a server without
/// SCRAM keys for the user refuses every SCRAM variant, one without the
/// cleartext secret refuses both CRAM-MD5 and APOP, and one that checks
/// passwords (PAM, LDAP binds) takes PLAIN, LOGIN and USER alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    ScramKeys,
    CleartextSecret,
    Password,
    Other,
}

fn needs(m: Mechanism) -> Needs {
    match m {
        Mechanism::ScramSha1 | Mechanism::ScramSha256 => Needs::ScramKeys,
        Mechanism::CramMd5 | Mechanism::Apop => Needs::CleartextSecret,
        Mechanism::Plain | Mechanism::Login | Mechanism::User => Needs::Password,
        _ => Needs::Other,
    }
}

/// Log in on `client` as `acct.user` with the first of `candidates`. When
/// the server refuses the credentials, the next candidate that a server
/// checks differently (see `fallback`) is tried on the same connection, up
/// to [`MAX_LOGIN_ATTEMPTS`] in all. Anything else ends the login at once:
/// a network error, a temporary refusal (`[IN-USE]`, `[SYS/TEMP]`), or a
/// mechanism that failed (a SCRAM server that could not prove itself must
/// never be answered with the password). On failure the client is sent
/// QUIT (no deletion can be pending) and only the error comes back.
///
/// Without TLS (`tls` false) the fallback never sends the password itself:
/// an attacker on the path could fake the refusal of a digest mechanism
/// to get it.
pub fn login<S: Read + Write>(
    client: Client<S>,
    candidates: &[Mechanism],
    tls: bool,
    acct: &Account,
    password: &Password,
    greeting: &Greeting,
) -> Result<(Session<S>, Mechanism), Error> {
    let Some(&first) = candidates.first() else {
        let _ = client.quit();
        return Err(Error::NotOffered {
            wanted: "any automatically chosen",
            offered: Vec::new(),
        });
    };
    let mut failures: Vec<(Mechanism, Error)> = Vec::new();
    let mut next = Some((first, client));
    while let Some((m, client)) = next.take() {
        let (e, kept) = match attempt(client, m, acct, password, greeting) {
            Ok(session) => {
                if !failures.is_empty() {
                    log::info!(
                        "{}: logged in with {} after the server refused {}",
                        acct.name,
                        m.name(),
                        names(failures.iter().map(|(m, _)| *m))
                    );
                }
                return Ok((session, m));
            }
            Err(failed) => failed,
        };
        let refused = matches!(&e, Error::Refused { source, .. } if source.is_auth_failure());
        failures.push((m, e));
        let tried: Vec<Mechanism> = failures.iter().map(|(m, _)| *m).collect();
        let after = match refused && tried.len() < MAX_LOGIN_ATTEMPTS {
            true => fallback(candidates, &tried, tls),
            false => None,
        };
        match (after, kept) {
            (Some(after), Some(c)) => {
                log::info!(
                    "{}: the server refused {}; trying {}",
                    acct.name,
                    m.name(),
                    after.name()
                );
                next = Some((after, c));
            }
            (_, kept) => {
                if let Some(c) = kept {
                    let _ = c.quit();
                }
            }
        }
    }
    let untried = candidates
        .iter()
        .filter(|c| !failures.iter().any(|(m, _)| m == *c))
        .map(|c| c.name())
        .collect();
    Err(Error::combine(failures, untried))
}

/// The candidate to try after the server refused all of `tried`: the
/// first that a server checks differently from each of them and, without
/// TLS, one that does not send the secret itself.
pub fn fallback(candidates: &[Mechanism], tried: &[Mechanism], tls: bool) -> Option<Mechanism> {
    candidates
        .iter()
        .copied()
        .filter(|c| tls || !c.sends_secret())
        .find(|c| !tried.iter().any(|t| needs(*t) == needs(*c)))
}

fn names(ms: impl Iterator<Item = Mechanism>) -> String {
    ms.map(Mechanism::name).collect::<Vec<_>>().join(" and ")
}

/// One login with `mech`. On failure, the client comes back when the
/// server refused with `-ERR` and the connection is still in step, for the
/// caller to try another mechanism or QUIT.
fn attempt<S: Read + Write>(
    client: Client<S>,
    mech: Mechanism,
    acct: &Account,
    password: &Password,
    greeting: &Greeting,
) -> Result<Session<S>, (Error, Option<Client<S>>)> {
    log::debug!("{}: logging in with {}", acct.name, mech.name());
    let refused = |source| Error::Refused {
        mechanism: mech.name(),
        source,
        detail: None,
    };
    let result = match (mech, &greeting.apop_timestamp) {
        (Mechanism::Apop, Some(ts)) => client.apop(&acct.user, password.expose(), ts),
        (Mechanism::Apop, None) => {
            let e = Error::NotOffered {
                wanted: "apop",
                offered: vec![],
            };
            return Err((e, Some(client)));
        }
        (Mechanism::User, _) => client.user_pass(&acct.user, password.expose()),
        (m, _) => return sasl_login(client, m, acct, password),
    };
    result.map_err(|(e, client)| (refused(e), Some(client)))
}

/// Drives one SASL exchange over `AUTH`.
///
/// The initial response goes on the `AUTH` line (RFC 5034 §4) when the
/// mechanism allows it and the line fits in 255 octets; otherwise `AUTH
/// MECH` alone, and the initial response answers the server's empty
/// challenge. Challenges are decoded, answered by the mechanism and
/// encoded; a mechanism error cancels the exchange with `*` and is what
/// gets reported, rather than the server's `-ERR` to the cancellation.
fn sasl_login<S: Read + Write>(
    client: Client<S>,
    m: Mechanism,
    acct: &Account,
    password: &Password,
) -> Result<Session<S>, (Error, Option<Client<S>>)> {
    let mech_err = |source| Error::Mechanism {
        mechanism: m.name(),
        source,
    };
    let creds = sasl::Credentials {
        user: &acct.user,
        secret: password.expose(),
        host: &acct.host,
        port: acct.port,
    };
    // sasl::start refuses USER and APOP, so the name is always there.
    let iana = m.sasl_name().unwrap_or_default();
    let started = sasl::start(m, &creds).and_then(|mut ex| Ok((ex.initial()?, ex)));
    let (first, mut ex): (Option<Vec<u8>>, Box<dyn Exchange>) = match started {
        Ok(v) => v,
        Err(e) => return Err((mech_err(e), Some(client))),
    };
    // RFC 5034 §4: an empty initial response is sent as "=".
    let encoded = first.as_ref().map(|b| {
        if b.is_empty() {
            "=".to_string()
        } else {
            crypto::b64_encode(b)
        }
    });
    let fits = |ir: &str| {
        Command::Auth {
            mechanism: iana,
            initial: Some(ir),
        }
        .to_bytes()
        .is_ok()
    };
    let (on_auth_line, mut pending) = match (encoded, first) {
        (Some(ir), _) if sasl::initial_response_on_auth_line(m) && fits(&ir) => (Some(ir), None),
        (_, first) => (None, first),
    };

    let mut failure: Option<sasl::Error> = None;
    let result = client.auth(iana, on_auth_line.as_deref(), |challenge| {
        if let Some(first) = pending.take() {
            // The server's (empty) challenge asks for the initial response.
            return Some(crypto::b64_encode(&first));
        }
        let answer = crypto::b64_decode(challenge).and_then(|c| ex.respond(&c));
        match answer {
            Ok(a) => Some(crypto::b64_encode(&a)),
            Err(e) => {
                failure = Some(e);
                None
            }
        }
    });
    match result {
        Ok(session) => match ex.finish() {
            Ok(()) => Ok(session),
            Err(e) => {
                // Logged in, but the server never proved itself: leave
                // without touching the mailbox (QUIT with nothing deleted).
                let _ = session.quit();
                Err((mech_err(e), None))
            }
        },
        Err((e, client)) => {
            let e = match failure {
                Some(f) => mech_err(f),
                None => Error::Refused {
                    mechanism: m.name(),
                    source: e,
                    detail: ex.server_explanation(),
                },
            };
            Err((e, Some(client)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pop3::mock::MockStream;
    use crate::pop3::proto::parse_capa;

    const GREETING: &str = "+OK ready <1.2@host>\r\n";

    fn greeting(apop: bool) -> Greeting {
        Greeting {
            text: "ready".into(),
            apop_timestamp: apop.then(|| "<1.2@host>".into()),
        }
    }

    fn caps(lines: &[&str]) -> Capabilities {
        parse_capa(lines)
    }

    fn account(auth: Auth, allow_plaintext: bool) -> Account {
        let mut a = crate::config::test_account("pop.example.com", 995);
        a.auth = auth;
        a.allow_plaintext = allow_plaintext;
        a
    }

    /// What `auto` (or the explicit `auth`) tries first.
    fn choose(
        acct: &Account,
        greeting: &Greeting,
        caps: &Capabilities,
        tls: bool,
    ) -> Result<Mechanism, Error> {
        candidates(acct, greeting, caps, tls).map(|c| c[0])
    }

    const DOVECOT: &[&str] = &[
        "USER",
        "SASL PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256 GSSAPI",
    ];

    #[test]
    fn auto_takes_the_strongest_allowed() {
        let g = greeting(true);
        let pick = |lines: &[&str], tls, plain| {
            choose(&account(Auth::Auto, plain), &g, &caps(lines), tls).map(Mechanism::name)
        };
        assert_eq!(pick(DOVECOT, true, false).unwrap(), "scram-sha-256");
        assert_eq!(pick(DOVECOT, false, true).unwrap(), "scram-sha-256");
        assert_eq!(
            pick(&["SASL SCRAM-SHA-1 PLAIN"], false, true).unwrap(),
            "scram-sha-1"
        );
        // Inside TLS a digest adds nothing: what checks the password comes first.
        assert_eq!(
            pick(&["SASL CRAM-MD5 PLAIN"], true, false).unwrap(),
            "plain"
        );
        assert_eq!(
            pick(&["USER", "SASL PLAIN LOGIN"], true, false).unwrap(),
            "plain"
        );
        assert_eq!(pick(&["SASL CRAM-MD5"], true, false).unwrap(), "cram-md5");
        // Without TLS it keeps the password from a listener.
        assert_eq!(
            pick(&["SASL CRAM-MD5 PLAIN"], false, true).unwrap(),
            "cram-md5"
        );
        assert_eq!(
            pick(&["USER", "SASL PLAIN LOGIN"], false, true).unwrap(),
            "apop"
        );
        let no_apop = Greeting {
            apop_timestamp: None,
            ..g.clone()
        };
        let pick2 = |lines: &[&str], tls| {
            choose(&account(Auth::Auto, false), &no_apop, &caps(lines), tls).map(Mechanism::name)
        };
        assert_eq!(pick2(&["USER", "SASL LOGIN PLAIN"], true).unwrap(), "plain");
        assert_eq!(pick2(&["USER", "SASL LOGIN"], true).unwrap(), "login");
        assert_eq!(pick2(&["USER"], true).unwrap(), "user");
        assert_eq!(
            pick2(&[], true).unwrap(),
            "user",
            "no CAPA at all: USER/PASS"
        );
        // Never chosen by auto, even when they are all there is.
        let e = pick2(&["SASL XOAUTH2 OAUTHBEARER EXTERNAL NTLM"], true).unwrap_err();
        assert!(matches!(e, Error::NotOffered { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "the server does not offer any automatically chosen login; it offers: \
             xoauth2, oauthbearer, external, ntlm"
        );
    }

    #[test]
    fn auto_without_tls_refuses_everything_without_allow_plaintext() {
        let e = choose(
            &account(Auth::Auto, false),
            &greeting(true),
            &caps(&["USER", "SASL SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN"]),
            false,
        )
        .unwrap_err();
        assert!(e.is_permanent());
        assert_eq!(
            e.to_string(),
            "refusing scram-sha-256/cram-md5/apop/plain/login/user login without TLS: the \
             password, or what cracks offline to it, would cross the network in the clear \
             (use tls = implicit or starttls, or set allow_plaintext = yes)"
        );
    }

    #[test]
    fn explicit_choices() {
        let g = greeting(false);
        let c = caps(DOVECOT);
        let pick = |auth, tls, plain| choose(&account(auth, plain), &g, &c, tls);
        for (auth, name) in [
            (Auth::Only(Mechanism::Plain), "plain"),
            (Auth::Only(Mechanism::Login), "login"),
            (Auth::Only(Mechanism::User), "user"),
        ] {
            assert_eq!(pick(auth, true, false).unwrap().name(), name);
            assert_eq!(pick(auth, false, true).unwrap().name(), name);
            let e = pick(auth, false, false).unwrap_err();
            assert!(matches!(e, Error::Insecure { .. }), "{e}");
        }
        // Proof-based mechanisms too hand a listener what cracks offline:
        // without TLS only with allow_plaintext.
        for m in [
            Mechanism::CramMd5,
            Mechanism::ScramSha1,
            Mechanism::ScramSha256,
        ] {
            assert_eq!(pick(Auth::Only(m), false, true).unwrap(), m);
            let e = pick(Auth::Only(m), false, false).unwrap_err();
            assert!(matches!(e, Error::Insecure { .. }), "{e}");
        }
        let e = pick(Auth::Only(Mechanism::Ntlm), true, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the server does not offer ntlm login; it offers: user, plain, login, cram-md5, \
             scram-sha-1, scram-sha-256, GSSAPI (unsupported)"
        );
        assert!(e.is_permanent());
        let e = pick(Auth::Only(Mechanism::Apop), true, false).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("the server does not offer apop login"));
        let oauth = caps(&["SASL XOAUTH2 OAUTHBEARER EXTERNAL"]);
        let pick = |auth, tls| choose(&account(auth, false), &g, &oauth, tls);
        assert_eq!(
            pick(Auth::Only(Mechanism::XOAuth2), true).unwrap().name(),
            "xoauth2"
        );
        assert!(matches!(
            pick(Auth::Only(Mechanism::OAuthBearer), false),
            Err(Error::Insecure { .. })
        ));
        assert_eq!(
            pick(Auth::Only(Mechanism::External), true).unwrap().name(),
            "external"
        );
        assert!(matches!(
            pick(Auth::Only(Mechanism::External), false),
            Err(Error::Insecure { .. })
        ));
        // USER needs CAPA USER (or no CAPA): Dovecot hides it when it would refuse it.
        let e = choose(
            &account(Auth::Only(Mechanism::User), true),
            &g,
            &caps(&["SASL PLAIN"]),
            true,
        );
        assert!(matches!(e, Err(Error::NotOffered { wanted: "user", .. })));
    }

    /// Runs `login` against a scripted server; returns the outcome and what was sent.
    fn run(mech: Mechanism, user: &str, secret: &str, script: &str) -> (Result<(), Error>, String) {
        let stream = MockStream::new(format!("{GREETING}{script}"));
        let log = stream.written();
        let (client, greeting) = Client::connect(stream).unwrap();
        let mut acct = account(Auth::Auto, true);
        acct.user = user.into();
        let r = login(
            client,
            &[mech],
            true,
            &acct,
            &Password::new(secret.into()),
            &greeting,
        )
        .map(drop);
        let sent = String::from_utf8(log.borrow().bytes.clone()).unwrap();
        (r, sent)
    }

    fn b64(s: &str) -> String {
        crypto::b64_encode(s.as_bytes())
    }

    #[test]
    fn plain_uses_the_initial_response_when_it_fits() {
        let (r, sent) = run(Mechanism::Plain, "tim", "tanstaaf", "+OK\r\n");
        r.unwrap();
        assert_eq!(sent, format!("AUTH PLAIN {}\r\n", b64("\0tim\0tanstaaf")));
        // Too long for the 255-octet AUTH line: empty challenge, then the response.
        let long = "p".repeat(300);
        let (r, sent) = run(Mechanism::Plain, "tim", &long, "+ \r\n+OK\r\n");
        r.unwrap();
        assert_eq!(
            sent,
            format!("AUTH PLAIN\r\n{}\r\n", b64(&format!("\0tim\0{long}")))
        );
    }

    #[test]
    fn xoauth2_always_waits_for_the_servers_go_ahead() {
        let token = "ya29.short";
        let (r, sent) = run(Mechanism::XOAuth2, "me@example.com", token, "+\r\n+OK\r\n");
        r.unwrap();
        let msg = format!("user=me@example.com\x01auth=Bearer {token}\x01\x01");
        assert_eq!(sent, format!("AUTH XOAUTH2\r\n{}\r\n", b64(&msg)));
        // A failure status comes as a challenge, answered empty, then -ERR.
        let json = b64(r#"{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}"#);
        let (r, sent) = run(
            Mechanism::XOAuth2,
            "me@example.com",
            token,
            &format!("+\r\n+ {json}\r\n-ERR [AUTH] Invalid credentials.\r\n+OK bye\r\n"),
        );
        let e = r.unwrap_err();
        assert!(e.is_permanent());
        assert_eq!(
            e.to_string(),
            "login failed with xoauth2: server refused AUTH [AUTH]: Invalid credentials. \
             (server said: status 400, scope https://mail.google.com/); is the access token \
             current and for this user and scope?"
        );
        assert!(sent.ends_with("\r\n\r\nQUIT\r\n"), "{sent:?}");
    }

    #[test]
    fn oauthbearer_answers_a_failure_with_control_a() {
        let json = b64(r#"{"status":"invalid_token"}"#);
        let (r, sent) = run(
            Mechanism::OAuthBearer,
            "u",
            "tok",
            &format!("+ {json}\r\n-ERR [AUTH] no\r\n+OK\r\n"),
        );
        assert!(r.unwrap_err().to_string().contains("status invalid_token"));
        let lines: Vec<&str> = sent.split("\r\n").collect();
        assert!(lines[0].starts_with("AUTH OAUTHBEARER "), "{sent}");
        assert_eq!(lines[1], "AQ==");
    }

    #[test]
    fn scram_session_is_refused_without_the_server_signature() {
        // The server says +OK right after the client-first message: it never
        // proved that it knows the password. The session is left at once.
        let (r, sent) = run(
            Mechanism::ScramSha256,
            "user",
            "pencil",
            "+OK\r\n+OK bye\r\n",
        );
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                Error::Mechanism {
                    source: sasl::Error::Incomplete,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.is_permanent());
        assert!(
            sent.starts_with("AUTH SCRAM-SHA-256 ") && sent.ends_with("\r\nQUIT\r\n"),
            "{sent}"
        );
        // A server nonce that does not extend ours: cancelled before any proof is sent.
        let server_first = b64("r=not-ours,s=QSXCR+Q6sek8bf92,i=4096");
        let (r, sent) = run(
            Mechanism::ScramSha1,
            "user",
            "pencil",
            &format!("+ {server_first}\r\n-ERR cancelled\r\n+OK\r\n"),
        );
        assert!(
            matches!(
                r,
                Err(Error::Mechanism {
                    source: sasl::Error::NonceMismatch,
                    ..
                })
            ),
            "{r:?}"
        );
        assert_eq!(sent.lines().nth(1), Some("*"), "{sent}");
        assert!(!sent.contains("p="), "no proof sent");
    }

    #[test]
    fn external_sends_the_user_as_authorization_identity() {
        let (r, sent) = run(Mechanism::External, "certuser", "", "+OK\r\n");
        r.unwrap();
        assert_eq!(sent, format!("AUTH EXTERNAL {}\r\n", b64("certuser")));
    }

    #[test]
    fn refusals_keep_their_codes_and_quit() {
        let (r, sent) = run(
            Mechanism::User,
            "u",
            "pw",
            "+OK\r\n-ERR [AUTH] bad\r\n+OK bye\r\n",
        );
        let e = r.unwrap_err();
        assert!(e.is_permanent() && !e.is_transient());
        assert_eq!(sent, "USER u\r\nPASS pw\r\nQUIT\r\n");
        for code in ["IN-USE", "LOGIN-DELAY", "SYS/TEMP"] {
            let (r, _) = run(
                Mechanism::Plain,
                "u",
                "pw",
                &format!("-ERR [{code}] later\r\n+OK\r\n"),
            );
            let e = r.unwrap_err();
            assert!(e.is_transient() && !e.is_permanent(), "{code}: {e}");
        }
        let (r, _) = run(Mechanism::Plain, "u", "pw\0x", "");
        let e = r.unwrap_err();
        assert!(matches!(e, Error::Mechanism { .. }));
        assert!(!e.to_string().contains("pw"), "{e}");
    }

    /// Runs `auto` with `candidates` against a scripted server; returns
    /// the mechanism that worked (or the error) and what was sent.
    fn run_auto(
        candidates: &[Mechanism],
        greeting: &str,
        script: &str,
    ) -> (Result<Mechanism, Error>, String) {
        let stream = MockStream::new(format!("{greeting}{script}"));
        let log = stream.written();
        let (client, greeting) = Client::connect(stream).unwrap();
        let acct = account(Auth::Auto, true);
        let r = login(
            client,
            candidates,
            true,
            &acct,
            &Password::new("pw".into()),
            &greeting,
        )
        .map(|(_, m)| m);
        let sent = String::from_utf8(log.borrow().bytes.clone()).unwrap();
        (r, sent)
    }

    /// The ranked list `auto` would try on `caps`.
    fn ranked(lines: &[&str], apop: bool, tls: bool, plain: bool) -> Vec<&'static str> {
        auto_candidates(&greeting(apop), &caps(lines), tls, plain)
            .into_iter()
            .map(Mechanism::name)
            .collect()
    }

    #[test]
    fn auto_ranks_by_what_each_adds() {
        assert_eq!(
            ranked(DOVECOT, true, true, false),
            [
                "scram-sha-256",
                "scram-sha-1",
                "plain",
                "login",
                "user",
                "cram-md5",
                "apop"
            ]
        );
        assert_eq!(
            ranked(DOVECOT, true, false, true),
            [
                "scram-sha-256",
                "scram-sha-1",
                "cram-md5",
                "apop",
                "plain",
                "login",
                "user"
            ]
        );
        // Without TLS and allow_plaintext, nothing (the configuration refuses it too).
        assert!(ranked(DOVECOT, true, false, false).is_empty());
        // Cyrus with saslauthd: SCRAM first, and PLAIN the first that checks
        // the password after a SCRAM refusal.
        let cyrus = [
            "SASL SCRAM-SHA-512 SCRAM-SHA-256 SCRAM-SHA-1 DIGEST-MD5 CRAM-MD5 NTLM PLAIN LOGIN",
            "USER",
        ];
        let c = auto_candidates(&greeting(false), &caps(&cyrus), true, false);
        assert_eq!(
            fallback(&c, &[Mechanism::ScramSha256], true),
            Some(Mechanism::Plain)
        );
        assert_eq!(
            fallback(&c, &[Mechanism::Plain], true),
            Some(Mechanism::ScramSha256)
        );
        let scram = [Mechanism::ScramSha256, Mechanism::ScramSha1];
        assert_eq!(fallback(&scram, &[Mechanism::ScramSha256], true), None);
        // Without TLS never to what sends the password: a listener on the
        // path could fake the refusal to get it.
        let clear = [Mechanism::ScramSha256, Mechanism::CramMd5, Mechanism::Plain];
        assert_eq!(
            fallback(&clear, &[Mechanism::ScramSha256], false),
            Some(Mechanism::CramMd5)
        );
        assert_eq!(
            fallback(&clear, &[Mechanism::CramMd5], false),
            Some(Mechanism::ScramSha256)
        );
        let apop_user = [Mechanism::Apop, Mechanism::User];
        assert_eq!(fallback(&apop_user, &[Mechanism::Apop], false), None);
        assert_eq!(
            fallback(&apop_user, &[Mechanism::Apop], true),
            Some(Mechanism::User)
        );
    }

    #[test]
    fn a_refused_first_choice_falls_back_once() {
        // Cyrus: SCRAM advertised, refused; PLAIN works.
        let (r, sent) = run_auto(
            &[
                Mechanism::ScramSha256,
                Mechanism::ScramSha1,
                Mechanism::Plain,
                Mechanism::User,
            ],
            GREETING,
            "-ERR [AUTH] Authentication failed\r\n+OK logged in\r\n",
        );
        assert_eq!(r.unwrap(), Mechanism::Plain);
        let commands: Vec<String> = sent
            .lines()
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(commands, ["AUTH SCRAM-SHA-256", "AUTH PLAIN"]);
        // GNU Mailutils: a timestamp in the greeting, no APOP secret; inside
        // TLS USER/PASS follows the refused APOP.
        let (r, sent) = run_auto(
            &[Mechanism::Apop, Mechanism::User],
            "+OK POP3 Ready <4918.1796562469@vm>\r\n",
            "-ERR [AUTH] Bad login\r\n+OK\r\n+OK\r\n",
        );
        assert_eq!(r.unwrap(), Mechanism::User);
        assert!(sent.starts_with("APOP u "), "{sent}");
        assert!(sent.ends_with("USER u\r\nPASS pw\r\n"), "{sent}");
    }

    #[test]
    fn a_wrong_password_costs_one_extra_attempt() {
        let (r, sent) = run_auto(
            &[
                Mechanism::ScramSha256,
                Mechanism::Plain,
                Mechanism::Login,
                Mechanism::User,
                Mechanism::CramMd5,
            ],
            GREETING,
            "-ERR [AUTH] Authentication failed\r\n-ERR [AUTH] Authentication failed\r\n+OK bye\r\n",
        );
        let e = r.unwrap_err();
        assert!(e.is_permanent() && !e.is_transient());
        assert_eq!(e.tried(), ["scram-sha-256", "plain"]);
        assert_eq!(
            e.to_string(),
            "login failed with scram-sha-256: server refused AUTH [AUTH]: Authentication failed; \
             then login failed with plain: server refused AUTH [AUTH]: Authentication failed; \
             not tried: login, user, cram-md5"
        );
        assert_eq!(sent.matches("AUTH ").count(), 2, "{sent}");
        assert!(sent.ends_with("QUIT\r\n"), "{sent}");
        assert!(!e.to_string().contains("pw"));
    }

    #[test]
    fn no_fallback_after_a_temporary_refusal_or_a_failed_proof() {
        // [IN-USE]: the server will refuse every mechanism now.
        let (r, sent) = run_auto(
            &[Mechanism::Plain, Mechanism::ScramSha256],
            GREETING,
            "-ERR [IN-USE] mailbox locked\r\n+OK bye\r\n",
        );
        let e = r.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().ends_with("; not tried: scram-sha-256"), "{e}");
        assert_eq!(sent.matches("AUTH ").count(), 1, "{sent}");
        // The same family says nothing new: SCRAM-SHA-1 after SCRAM-SHA-256.
        let (r, sent) = run_auto(
            &[Mechanism::ScramSha256, Mechanism::ScramSha1],
            GREETING,
            "-ERR [AUTH] no\r\n+OK bye\r\n",
        );
        assert_eq!(r.unwrap_err().tried(), ["scram-sha-256"]);
        assert_eq!(sent.matches("AUTH ").count(), 1, "{sent}");
        // A malformed challenge is the mechanism's failure, not a refusal:
        // the password is not offered to that server in another form.
        let (r, sent) = run_auto(
            &[Mechanism::ScramSha256, Mechanism::Plain],
            GREETING,
            "+ bm9uc2Vuc2U=\r\n-ERR cancelled\r\n+OK bye\r\n",
        );
        assert!(matches!(
            r.unwrap_err(),
            Error::Attempts { .. } | Error::Mechanism { .. }
        ));
        assert!(!sent.contains("AUTH PLAIN"), "{sent}");
    }
}
