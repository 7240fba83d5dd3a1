//! The one-step mechanisms: PLAIN (RFC 4616), LOGIN
//! (draft-murchison-sasl-login-00), CRAM-MD5 (RFC 2195) and EXTERNAL
//! (RFC 4422 appendix A).

use super::crypto::hmac_md5;
use super::{Error, Exchange};
use crate::hex;

fn no_nul(what: &'static str, s: &str) -> Result<(), Error> {
    if s.contains('\0') {
        return Err(Error::Credentials {
            what,
            reason: "contains a NUL character, which PLAIN cannot carry",
        });
    }
    Ok(())
}

/// PLAIN: `authzid NUL authcid NUL passwd`, with an empty authzid (log in
/// as the user whose password this is).
pub struct Plain {
    message: Vec<u8>,
}

impl Drop for Plain {
    /// The secret is wiped with the exchange (README "Secrets").
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.message);
    }
}

impl Plain {
    /// Refuses a user name or password containing NUL, the field separator.
    pub fn new(user: &str, password: &str) -> Result<Self, Error> {
        no_nul("user name", user)?;
        no_nul("password", password)?;
        let mut message = Vec::with_capacity(user.len() + password.len() + 2);
        message.push(0);
        message.extend_from_slice(user.as_bytes());
        message.push(0);
        message.extend_from_slice(password.as_bytes());
        Ok(Plain { message })
    }
}

impl Exchange for Plain {
    fn initial(&mut self) -> Result<Option<Vec<u8>>, Error> {
        Ok(Some(self.message.clone()))
    }

    fn respond(&mut self, _: &[u8]) -> Result<Vec<u8>, Error> {
        Err(Error::UnexpectedChallenge)
    }
}

/// LOGIN: the server prompts twice (`Username:`, `Password:`); the answers
/// go by position, since servers word the prompts differently.
pub struct Login {
    user: String,
    password: String,
    step: u8,
}

impl Drop for Login {
    /// The secret is wiped with the exchange (README "Secrets").
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
    }
}

impl Login {
    /// A LOGIN exchange.
    pub fn new(user: &str, password: &str) -> Self {
        Login {
            user: user.to_owned(),
            password: password.to_owned(),
            step: 0,
        }
    }
}

impl Exchange for Login {
    fn initial(&mut self) -> Result<Option<Vec<u8>>, Error> {
        // The draft allows the user name as initial response, but servers
        // differ in whether they take it; the prompted form always works.
        Ok(None)
    }

    fn respond(&mut self, _prompt: &[u8]) -> Result<Vec<u8>, Error> {
        self.step += 1;
        match self.step {
            1 => Ok(self.user.as_bytes().to_vec()),
            2 => Ok(self.password.as_bytes().to_vec()),
            _ => Err(Error::UnexpectedChallenge),
        }
    }
}

/// CRAM-MD5: `user SP hex(HMAC-MD5(password, challenge))`.
pub struct CramMd5 {
    user: String,
    password: String,
    answered: bool,
}

impl Drop for CramMd5 {
    /// The secret is wiped with the exchange (README "Secrets").
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
    }
}

impl CramMd5 {
    /// A CRAM-MD5 exchange.
    pub fn new(user: &str, password: &str) -> Self {
        CramMd5 {
            user: user.to_owned(),
            password: password.to_owned(),
            answered: false,
        }
    }
}

impl Exchange for CramMd5 {
    fn initial(&mut self) -> Result<Option<Vec<u8>>, Error> {
        Ok(None)
    }

    fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, Error> {
        if self.answered {
            return Err(Error::UnexpectedChallenge);
        }
        if challenge.is_empty() {
            // An empty challenge would make the digest a constant: replayable.
            return Err(Error::BadChallenge("CRAM-MD5 challenge is empty"));
        }
        self.answered = true;
        let digest = hmac_md5(self.password.as_bytes(), challenge);
        Ok(format!("{} {}", self.user, hex::lower(&digest)).into_bytes())
    }
}

/// EXTERNAL: the TLS client certificate is the credential; the initial
/// response is the authorization identity, here the configured `user`
/// (servers such as Dovecot accept it when it is the certificate's own
/// identity, and refuse to act for anyone else).
pub struct External {
    authzid: Vec<u8>,
}

impl External {
    /// An EXTERNAL exchange asking to act as `user`.
    pub fn new(user: &str) -> Self {
        External {
            authzid: user.as_bytes().to_vec(),
        }
    }
}

impl Exchange for External {
    fn initial(&mut self) -> Result<Option<Vec<u8>>, Error> {
        Ok(Some(self.authzid.clone()))
    }

    fn respond(&mut self, _: &[u8]) -> Result<Vec<u8>, Error> {
        Err(Error::UnexpectedChallenge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2195 §2's example.
    #[test]
    fn cram_md5_rfc2195_example() {
        let mut ex = CramMd5::new("tim", "tanstaaftanstaaf");
        assert_eq!(ex.initial().unwrap(), None);
        let answer = ex
            .respond(b"<1896.697170952@postoffice.reston.mci.net>")
            .unwrap();
        assert_eq!(answer, b"tim b913a602c7eda7a495b4e6e7334d3890");
        assert_eq!(ex.respond(b"again"), Err(Error::UnexpectedChallenge));
        let mut ex = CramMd5::new("tim", "x");
        assert!(matches!(ex.respond(b""), Err(Error::BadChallenge(_))));
    }

    /// RFC 4616 §4's example, minus the authzid.
    #[test]
    fn plain() {
        let mut ex = Plain::new("tim", "tanstaaftanstaaf").unwrap();
        assert_eq!(ex.initial().unwrap().unwrap(), b"\0tim\0tanstaaftanstaaf");
        assert_eq!(ex.respond(b""), Err(Error::UnexpectedChallenge));
        assert!(Plain::new("tim", "a\0b").is_err());
        assert!(Plain::new("t\0m", "ab").is_err());
        let e = Plain::new("tim", "sec\0ret").err().unwrap().to_string();
        assert!(!e.contains("sec"), "{e}");
    }

    #[test]
    fn login_answers_by_position() {
        let mut ex = Login::new("bob", "pw");
        assert_eq!(ex.initial().unwrap(), None);
        assert_eq!(ex.respond(b"Username:").unwrap(), b"bob");
        assert_eq!(ex.respond(b"Password:").unwrap(), b"pw");
        assert_eq!(ex.respond(b"More?"), Err(Error::UnexpectedChallenge));
        let mut ex = Login::new("bob", "pw");
        assert_eq!(ex.respond(b"User Name\0").unwrap(), b"bob");
    }

    #[test]
    fn external_sends_the_authorization_identity() {
        let mut ex = External::new("certuser");
        assert_eq!(ex.initial().unwrap().unwrap(), b"certuser");
        assert_eq!(ex.respond(b"x"), Err(Error::UnexpectedChallenge));
    }
}
