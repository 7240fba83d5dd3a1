//! SCRAM-SHA-1 (RFC 5802) and SCRAM-SHA-256 (RFC 7677), without channel
//! binding (GS2 header `n,,`): the `-PLUS` variants are not implemented.
//!
//! What this client insists on, beyond computing the proof:
//! - the server nonce must extend ours (RFC 5802 §5.1), else a replayed or
//!   forged exchange is refused before the proof is sent;
//! - the iteration count must be within [`MIN_ITERATIONS`] and
//!   [`MAX_ITERATIONS`];
//! - the server's final message must carry the right `v=` signature, which
//!   only a server that holds the password's keys can produce; a `+OK`
//!   without it is refused too ([`Error::Incomplete`]).

use super::crypto::{b64_decode, b64_encode, hash, hmac, pbkdf2, random, Hash};
use super::saslprep::saslprep;
use super::{quoted, Error, Exchange};

/// RFC 7677 §4 and RFC 5802 §5.1: the iteration count "SHOULD be at least
/// 4096". Below that an impostor would make the proof we send cheaper to
/// attack offline, so it is refused. Dovecot uses 4096.
pub const MIN_ITERATIONS: u32 = 4096;

/// A server (or an impostor) could ask for billions of PBKDF2 rounds and
/// stall a poll for hours. Real servers use 4096 to about 600,000 (OWASP's
/// advice for PBKDF2-SHA-256 in 2023); one million takes about half a
/// second on a current x86 core and a few seconds on a small ARM board.
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// Random bytes in our nonce: 144 bits, far beyond guessing, printed as 24
/// base64 characters (which never include the `,` a nonce may not contain).
const NONCE_BYTES: usize = 18;

/// GS2 header: no channel binding, no authzid.
const GS2_HEADER: &str = "n,,";

enum State {
    Start,
    SentFirst,
    SentFinal { server_signature: Vec<u8> },
    Verified,
    Done,
}

/// One SCRAM exchange.
pub struct Scram {
    alg: Hash,
    password: String,
    nonce: String,
    client_first_bare: String,
    state: State,
}

impl Drop for Scram {
    /// The secret is wiped with the exchange (README "Secrets").
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
    }
}

impl Scram {
    /// SASLpreps user name and password (RFC 5802 §5.1, §2.2) and picks a nonce.
    pub fn new(alg: Hash, user: &str, password: &str) -> Result<Self, Error> {
        let nonce = b64_encode(&random(NONCE_BYTES)?);
        Self::with_nonce(alg, user, password, &nonce)
    }

    fn with_nonce(alg: Hash, user: &str, password: &str, nonce: &str) -> Result<Self, Error> {
        let user = saslprep(user).map_err(|p| Error::Credentials {
            what: "user name",
            reason: p.0,
        })?;
        let password = saslprep(password).map_err(|p| Error::Credentials {
            what: "password",
            reason: p.0,
        })?;
        if user.is_empty() {
            return Err(Error::Credentials {
                what: "user name",
                reason: "is empty after SASLprep",
            });
        }
        // RFC 5802 §5.1 `saslname`: `=` and `,` are escaped.
        let name = user.replace('=', "=3D").replace(',', "=2C");
        Ok(Scram {
            alg,
            client_first_bare: format!("n={name},r={nonce}"),
            password,
            nonce: nonce.to_owned(),
            state: State::Start,
        })
    }

    fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, Error> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| Error::BadChallenge("SCRAM server-first-message is not UTF-8"))?;
        let mut attrs = server_first.split(',');
        let mut next = |key: &str, missing: &'static str| -> Result<&str, Error> {
            let attr = attrs.next().ok_or(Error::BadChallenge(missing))?;
            if attr.starts_with("m=") {
                return Err(Error::Unsupported("a mandatory SCRAM extension (m=)"));
            }
            if let Some(e) = attr.strip_prefix("e=") {
                return Err(Error::ServerSaid(quoted(e.as_bytes())));
            }
            attr.strip_prefix(key).ok_or(Error::BadChallenge(missing))
        };
        let nonce = next("r=", "SCRAM server-first-message lacks r=")?;
        let salt = next("s=", "SCRAM server-first-message lacks s=")?;
        let count = next("i=", "SCRAM server-first-message lacks i=")?;

        let printable = nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',');
        if !printable || !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(Error::NonceMismatch);
        }
        let salt = b64_decode(salt).map_err(|_| Error::BadChallenge("SCRAM salt is not base64"))?;
        if salt.is_empty() {
            return Err(Error::BadChallenge("SCRAM salt is empty"));
        }
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::BadChallenge("SCRAM iteration count is not a number"));
        }
        let count: u64 = count.parse().unwrap_or(u64::MAX);
        let iterations = u32::try_from(count)
            .ok()
            .filter(|i| (MIN_ITERATIONS..=MAX_ITERATIONS).contains(i))
            .ok_or(Error::IterationCount { count })?;

        let without_proof = format!("c={},r={nonce}", b64_encode(GS2_HEADER.as_bytes()));
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let salted = pbkdf2(self.alg, self.password.as_bytes(), &salt, iterations)?;
        let client_key = hmac(self.alg, &salted, b"Client Key")?;
        let stored_key = hash(self.alg, &client_key)?;
        let client_signature = hmac(self.alg, &stored_key, auth_message.as_bytes())?;
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(self.alg, &salted, b"Server Key")?;
        let server_signature = hmac(self.alg, &server_key, auth_message.as_bytes())?;
        self.state = State::SentFinal { server_signature };
        Ok(format!("{without_proof},p={}", b64_encode(&proof)).into_bytes())
    }

    fn verify(&mut self, server_final: &[u8], expected: &[u8]) -> Result<Vec<u8>, Error> {
        let text = std::str::from_utf8(server_final)
            .map_err(|_| Error::BadChallenge("SCRAM server-final-message is not UTF-8"))?;
        let first = text.split(',').next().unwrap_or("");
        if let Some(e) = first.strip_prefix("e=") {
            return Err(Error::ServerSaid(quoted(e.as_bytes())));
        }
        let given = first
            .strip_prefix("v=")
            .ok_or(Error::BadChallenge("SCRAM server-final-message lacks v="))?;
        let given = b64_decode(given).map_err(|_| Error::ServerSignature)?;
        // Constant time: how much of a forged signature matched is nobody's business.
        if given.len() != expected.len() || !openssl::memcmp::eq(&given, expected) {
            return Err(Error::ServerSignature);
        }
        self.state = State::Verified;
        // POP3 has no "additional data with success": the server sent v= as
        // a challenge, and an empty answer lets it say +OK (RFC 5034 §4).
        Ok(Vec::new())
    }
}

impl Exchange for Scram {
    fn initial(&mut self) -> Result<Option<Vec<u8>>, Error> {
        self.state = State::SentFirst;
        Ok(Some(
            format!("{GS2_HEADER}{}", self.client_first_bare).into_bytes(),
        ))
    }

    fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, Error> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::SentFirst => self.client_final(challenge),
            State::SentFinal { server_signature } => self.verify(challenge, &server_signature),
            _ => Err(Error::UnexpectedChallenge),
        }
    }

    fn finish(&self) -> Result<(), Error> {
        match self.state {
            State::Verified => Ok(()),
            _ => Err(Error::Incomplete),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(alg: Hash, nonce: &str, server_first: &str, client_final: &str, server_final: &str) {
        let mut ex = Scram::with_nonce(alg, "user", "pencil", nonce).unwrap();
        assert_eq!(
            String::from_utf8(ex.initial().unwrap().unwrap()).unwrap(),
            format!("n,,n=user,r={nonce}")
        );
        let answer = ex.respond(server_first.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(answer).unwrap(), client_final);
        assert_eq!(ex.finish(), Err(Error::Incomplete));
        assert_eq!(ex.respond(server_final.as_bytes()).unwrap(), b"");
        assert_eq!(ex.finish(), Ok(()));
        assert_eq!(ex.respond(b"v=x"), Err(Error::UnexpectedChallenge));
    }

    /// RFC 5802 §5.
    #[test]
    fn rfc5802_scram_sha1_example() {
        run(
            Hash::Sha1,
            "fyko+d2lbbFgONRv9qkxdawL",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        );
    }

    /// RFC 7677 §3.
    #[test]
    fn rfc7677_scram_sha256_example() {
        run(
            Hash::Sha256,
            "rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        );
    }

    fn after_first(server_first: &str) -> Result<Vec<u8>, Error> {
        let mut ex = Scram::with_nonce(Hash::Sha1, "user", "pencil", "abc").unwrap();
        ex.initial().unwrap();
        ex.respond(server_first.as_bytes())
    }

    #[test]
    fn hostile_server_first_messages() {
        assert_eq!(
            after_first("r=xyzdef,s=QSXCR+Q6sek8bf92,i=4096"),
            Err(Error::NonceMismatch)
        );
        assert_eq!(
            after_first("r=abc,s=QSXCR+Q6sek8bf92,i=4096"),
            Err(Error::NonceMismatch)
        );
        assert_eq!(
            after_first("r=abc\x01d,s=QSXCR+Q6sek8bf92,i=4096"),
            Err(Error::NonceMismatch)
        );
        assert_eq!(
            after_first("r=abcd,s=QSXCR+Q6sek8bf92,i=4095"),
            Err(Error::IterationCount { count: 4095 })
        );
        assert_eq!(
            after_first("r=abcd,s=QSXCR+Q6sek8bf92,i=4294967296"),
            Err(Error::IterationCount { count: 4294967296 })
        );
        assert_eq!(
            after_first("r=abcd,s=QSXCR+Q6sek8bf92,i=1000001"),
            Err(Error::IterationCount { count: 1_000_001 })
        );
        assert!(matches!(
            after_first("r=abcd,s=,i=4096"),
            Err(Error::BadChallenge(_))
        ));
        assert!(matches!(
            after_first("r=abcd,s=!!,i=4096"),
            Err(Error::BadChallenge(_))
        ));
        assert!(matches!(
            after_first("r=abcd,s=QSXC,i=+4096"),
            Err(Error::BadChallenge(_))
        ));
        assert!(matches!(
            after_first("s=QSXC,r=abcd,i=4096"),
            Err(Error::BadChallenge(_))
        ));
        assert!(matches!(
            after_first("r=abcd,s=QSXC"),
            Err(Error::BadChallenge(_))
        ));
        assert!(matches!(
            after_first("m=ext,r=abcd,s=QSXC,i=4096"),
            Err(Error::Unsupported(_))
        ));
        assert_eq!(
            after_first("e=unknown-user"),
            Err(Error::ServerSaid("unknown-user".into()))
        );
        assert!(after_first("r=abcd,s=QSXC,i=4096,x=ext").is_ok());
        assert!(after_first("r=abcd,s=QSXC,i=1000000").is_ok());
    }

    #[test]
    fn wrong_or_missing_server_signature() {
        let start = || {
            let mut ex =
                Scram::with_nonce(Hash::Sha1, "user", "pencil", "fyko+d2lbbFgONRv9qkxdawL")
                    .unwrap();
            ex.initial().unwrap();
            ex.respond(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
                .unwrap();
            ex
        };
        for forged in ["v=rmF9pqV8S7suAoZWja4dJRkFsKA=", "v=AAAA", "v=!!", "v="] {
            let mut ex = start();
            assert_eq!(
                ex.respond(forged.as_bytes()),
                Err(Error::ServerSignature),
                "{forged}"
            );
            assert_eq!(ex.finish(), Err(Error::Incomplete));
        }
        let mut ex = start();
        assert_eq!(
            ex.respond(b"e=invalid-proof"),
            Err(Error::ServerSaid("invalid-proof".into()))
        );
        let mut ex = start();
        assert!(matches!(ex.respond(b"x=1"), Err(Error::BadChallenge(_))));
    }

    #[test]
    fn names_are_escaped_and_prepared() {
        let mut ex = Scram::with_nonce(Hash::Sha256, "a,b=c\u{00A0}d", "p\u{00AD}w", "n").unwrap();
        assert_eq!(ex.initial().unwrap().unwrap(), b"n,,n=a=2Cb=3Dc d,r=n");
        assert_eq!(ex.password, "pw");
        assert!(Scram::with_nonce(Hash::Sha1, "user", "pa\u{7}ss", "n").is_err());
        assert!(Scram::with_nonce(Hash::Sha1, "\u{00AD}", "pass", "n").is_err());
        let fresh = Scram::new(Hash::Sha1, "u", "p").unwrap();
        assert_eq!(fresh.nonce.len(), 24);
        assert!(!fresh.nonce.contains(','));
    }
}
