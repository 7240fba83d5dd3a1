//! The login mechanisms popspool knows, by name: one list shared by the
//! configuration (which names them in `auth`), the login policy in `auth`
//! (which ranks and runs them) and the SASL exchanges in `sasl`. Names are
//! those of popspool.ini(5) and, for SASL, of the IANA registry (RFC 4422).

/// A way to log in to a POP3 server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// USER/PASS (RFC 1939 section 7).
    User,
    /// APOP (RFC 1939 section 7).
    Apop,
    /// SASL PLAIN (RFC 4616).
    Plain,
    /// SASL LOGIN (draft-murchison-sasl-login).
    Login,
    /// SASL CRAM-MD5 (RFC 2195).
    CramMd5,
    /// SASL SCRAM-SHA-1 (RFC 5802).
    ScramSha1,
    /// SASL SCRAM-SHA-256 (RFC 7677).
    ScramSha256,
    /// SASL NTLM, NTLMv2 responses only (BizTalk's "SPA").
    Ntlm,
    /// SASL XOAUTH2, with an access token as the secret.
    XOAuth2,
    /// SASL OAUTHBEARER (RFC 7628), with an access token as the secret.
    OAuthBearer,
    /// SASL EXTERNAL: the TLS client certificate is the credential.
    External,
}

impl Mechanism {
    /// Every mechanism with its name in the `auth` key and, for SASL, its
    /// IANA name as in CAPA `SASL` and `AUTH`.
    const NAMES: [(Mechanism, &'static str, Option<&'static str>); 11] = [
        (Mechanism::User, "user", None),
        (Mechanism::Apop, "apop", None),
        (Mechanism::Plain, "plain", Some("PLAIN")),
        (Mechanism::Login, "login", Some("LOGIN")),
        (Mechanism::CramMd5, "cram-md5", Some("CRAM-MD5")),
        (Mechanism::ScramSha1, "scram-sha-1", Some("SCRAM-SHA-1")),
        (
            Mechanism::ScramSha256,
            "scram-sha-256",
            Some("SCRAM-SHA-256"),
        ),
        (Mechanism::Ntlm, "ntlm", Some("NTLM")),
        (Mechanism::XOAuth2, "xoauth2", Some("XOAUTH2")),
        (Mechanism::OAuthBearer, "oauthbearer", Some("OAUTHBEARER")),
        (Mechanism::External, "external", Some("EXTERNAL")),
    ];

    /// Every mechanism.
    pub const ALL: [Mechanism; 11] = {
        let mut all = [Mechanism::User; 11];
        let mut i = 0;
        while i < all.len() {
            all[i] = Self::NAMES[i].0;
            i += 1;
        }
        all
    };

    const fn entry(self) -> &'static (Mechanism, &'static str, Option<&'static str>) {
        // NAMES holds every variant, in declaration order.
        &Self::NAMES[self as usize]
    }

    /// The name in the `auth` key (`cram-md5`).
    pub const fn name(self) -> &'static str {
        self.entry().1
    }

    /// The mechanism an `auth` value names (exactly, lowercase).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Self::NAMES.iter().find(|e| e.1 == name).map(|e| e.0)
    }

    /// The IANA SASL name (`CRAM-MD5`); `None` for USER and APOP, which are
    /// POP3 commands of their own.
    pub const fn sasl_name(self) -> Option<&'static str> {
        self.entry().2
    }

    /// The SASL mechanism a server names in CAPA (any case, RFC 4422 §3.1).
    pub fn from_sasl_name(name: &str) -> Option<Mechanism> {
        Self::NAMES
            .iter()
            .find(|e| e.2.is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .map(|e| e.0)
    }

    /// Whether it runs over `AUTH` (RFC 5034).
    pub fn is_sasl(self) -> bool {
        self.sasl_name().is_some()
    }

    /// Whether the secret itself crosses the wire, so that TLS or
    /// `allow_plaintext` is required even when asked for explicitly.
    pub fn sends_secret(self) -> bool {
        matches!(
            self,
            Mechanism::User
                | Mechanism::Plain
                | Mechanism::Login
                | Mechanism::XOAuth2
                | Mechanism::OAuthBearer
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Mechanism;

    #[test]
    fn table_is_in_declaration_order() {
        for (i, m) in Mechanism::ALL.iter().enumerate() {
            assert_eq!(*m as usize, i, "{m:?}");
            assert_eq!(Mechanism::from_name(m.name()), Some(*m));
            if let Some(sasl) = m.sasl_name() {
                assert_eq!(Mechanism::from_sasl_name(sasl), Some(*m));
                assert_eq!(Mechanism::from_sasl_name(&sasl.to_lowercase()), Some(*m));
                assert_eq!(sasl.to_lowercase(), m.name());
            }
        }
        assert_eq!(Mechanism::from_name("auto"), None);
        assert_eq!(Mechanism::from_name("PLAIN"), None);
        assert_eq!(Mechanism::from_sasl_name("USER"), None);
        assert_eq!(Mechanism::from_sasl_name("GSSAPI"), None);
        assert!(!Mechanism::User.is_sasl() && !Mechanism::Apop.is_sasl());
    }
}
