//! Bearer-token mechanisms: XOAUTH2 (Google's and Microsoft's) and
//! OAUTHBEARER (RFC 7628).
//!
//! popspool does not obtain tokens: `password_file` or `password_command`
//! supplies a current access token, read fresh at every poll. The token is
//! checked to look like one (RFC 6750 `b64token`), so a password
//! configured by mistake is not sent to a server as a token, and a helper
//! that prints an error message instead of a token is caught here.
//!
//! On failure the server sends a challenge holding a JSON status (RFC 7628
//! §3.2.2); the client must answer it (XOAUTH2: empty, OAUTHBEARER: `%x01`)
//! and then gets the `-ERR`. The status is kept to explain that `-ERR`.

use super::{quoted, Error, Exchange};

/// Control-A, the field separator of both formats.
const KVSEP: char = '\x01';

/// RFC 6750 §2.1: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn check_token(token: &str) -> Result<(), Error> {
    let body = token.trim_end_matches('=');
    let ok = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if !ok {
        return Err(Error::Credentials {
            what: "access token",
            reason: "is not an OAuth bearer token (RFC 6750 allows letters, digits and \
                     -._~+/ then '='); check what password_file or password_command yields",
        });
    }
    Ok(())
}

fn check_user(user: &str) -> Result<(), Error> {
    if user.contains(KVSEP) {
        return Err(Error::Credentials {
            what: "user name",
            reason: "contains a control-A character",
        });
    }
    Ok(())
}

/// The useful part of a failure challenge: `status` and `scope` of the
/// JSON object when it is one, else the text itself.
fn explain(challenge: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(challenge).ok();
    let field =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    match parsed {
        Some(v) if v.is_object() => {
            let mut parts = Vec::new();
            if let Some(s) = field(&v, "status") {
                parts.push(format!("status {s}"));
            }
            if let Some(s) = field(&v, "scope") {
                parts.push(format!("scope {s}"));
            }
            if parts.is_empty() {
                quoted(challenge)
            } else {
                quoted(parts.join(", ").as_bytes())
            }
        }
        _ => quoted(challenge),
    }
}

/// A bearer-token login: the whole message in the initial response; the
/// only challenge that can follow is the server's JSON error status, which
/// the client acknowledges so the server sends its final `-ERR`.
pub struct Bearer {
    message: Vec<u8>,
    /// What the client answers the error status with.
    error_reply: &'static [u8],
    explanation: Option<String>,
}

impl Drop for Bearer {
    /// The secret is wiped with the exchange (README "Secrets").
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.message);
    }
}

impl Bearer {
    /// XOAUTH2: `user=USER ^A auth=Bearer TOKEN ^A ^A`. Checks the token's shape.
    pub fn xoauth2(user: &str, token: &str) -> Result<Self, Error> {
        check_user(user)?;
        check_token(token)?;
        let message = format!("user={user}{KVSEP}auth=Bearer {token}{KVSEP}{KVSEP}");
        // An empty answer asks for the final -ERR.
        Ok(Bearer::new(message, b""))
    }

    /// OAUTHBEARER (RFC 7628 §3.1): GS2 header with the authzid, then
    /// `host`, `port` and `auth` key-value pairs. Checks the token's shape.
    pub fn oauthbearer(user: &str, token: &str, host: &str, port: u16) -> Result<Self, Error> {
        check_user(user)?;
        check_token(token)?;
        let message = format!(
            "n,a={},{KVSEP}host={host}{KVSEP}port={port}{KVSEP}auth=Bearer {token}{KVSEP}{KVSEP}",
            saslname(user)
        );
        // RFC 7628 §3.2.3: the client answers the error with a single %x01.
        Ok(Bearer::new(message, b"\x01"))
    }

    fn new(message: String, error_reply: &'static [u8]) -> Self {
        Bearer {
            message: message.into_bytes(),
            error_reply,
            explanation: None,
        }
    }
}

impl Exchange for Bearer {
    fn initial(&mut self) -> Result<Option<Vec<u8>>, Error> {
        Ok(Some(self.message.clone()))
    }

    fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, Error> {
        if self.explanation.is_some() {
            return Err(Error::UnexpectedChallenge);
        }
        self.explanation = Some(explain(challenge));
        Ok(self.error_reply.to_vec())
    }

    fn server_explanation(&self) -> Option<String> {
        self.explanation.clone()
    }
}

/// RFC 5801 `saslname`: `,` and `=` escaped.
fn saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Google's and Microsoft's documented example (token "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg").
    #[test]
    fn xoauth2_documented_example() {
        let mut ex = Bearer::xoauth2(
            "someuser@example.com",
            "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg",
        )
        .unwrap();
        let first = ex.initial().unwrap().unwrap();
        assert_eq!(
            crate::sasl::crypto::b64_encode(&first),
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
        );
        let json = br#"{"status":"401","schemes":"bearer mac","scope":"https://mail.google.com/"}"#;
        assert_eq!(ex.respond(json).unwrap(), b"");
        assert_eq!(
            ex.server_explanation().unwrap(),
            "status 401, scope https://mail.google.com/"
        );
        assert_eq!(ex.respond(b"x"), Err(Error::UnexpectedChallenge));
    }

    /// RFC 7628 §4.1 (the exchange) and §4.3 (failure).
    #[test]
    fn oauthbearer_rfc7628_examples() {
        let mut ex = Bearer::oauthbearer(
            "user@example.com",
            "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==",
            "server.example.com",
            143,
        )
        .unwrap();
        assert_eq!(
            ex.initial().unwrap().unwrap(),
            b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
        );
        let failure = br#"{"status":"invalid_token","scope":"example_scope","openid-configuration":"https://example.com/.well-known/openid-configuration"}"#;
        assert_eq!(ex.respond(failure).unwrap(), b"\x01");
        assert_eq!(
            ex.server_explanation().unwrap(),
            "status invalid_token, scope example_scope"
        );
        let ex = Bearer::oauthbearer("a,b=c", "t", "h", 1).unwrap();
        assert!(ex.message.starts_with(b"n,a=a=2Cb=3Dc,\x01"));
    }

    #[test]
    fn tokens_are_checked_without_quoting_them() {
        for bad in ["", "my secret password", "tok\x01en", "a==b", "tök"] {
            let e = Bearer::xoauth2("u", bad).err().unwrap();
            assert!(
                matches!(
                    e,
                    Error::Credentials {
                        what: "access token",
                        ..
                    }
                ),
                "{bad:?}"
            );
            if !bad.is_empty() {
                assert!(!e.to_string().contains(bad));
            }
            assert!(Bearer::oauthbearer("u", bad, "h", 1).is_err());
        }
        assert!(Bearer::xoauth2("u\x01", "tok").is_err());
        assert!(Bearer::xoauth2("u", "abc-._~+/==").is_ok());
        assert_eq!(explain(b"not json\x1b"), "not json?");
    }
}
