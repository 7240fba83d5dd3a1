//! Explaining a certificate: what a server presented ([`CertInfo`]: names,
//! validity, the SHA-256 to pin), why OpenSSL rejected it in a few words,
//! what the operator can do about it, and the unverified side handshake
//! ([`inspect`]) that fetches the certificate after a verification failure
//! and tells `--probe` the protocol version and cipher.

use std::fmt;
use std::net::{IpAddr, TcpStream};

use openssl::hash::MessageDigest;
use openssl::ssl::{SslFiletype, SslVerifyMode};
use openssl::x509::X509;

use super::connector::{client_context, session};
use super::net::{connect, Socket, Stream};
use super::Settings;

/// What a certificate says about itself, for messages and `--probe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// `CN=..., O=...`.
    pub subject: String,
    /// The issuer's name.
    pub issuer: String,
    /// Start of validity, as OpenSSL prints it.
    pub not_before: String,
    /// End of validity, as OpenSSL prints it.
    pub not_after: String,
    /// Whether `not_after` has passed.
    pub expired: bool,
    /// Whether `not_before` is still to come.
    pub not_yet_valid: bool,
    /// Subject alternative names (`DNS:x`, `IP:y`): the names it is valid for.
    pub names: Vec<String>,
    /// SHA-256 of the DER, `AB:CD:...`: the value for `tls_fingerprint`.
    pub sha256: String,
}

/// Longest certificate text shown (subject, issuer, one name), in
/// characters: the certificate is the server's text, so it is bounded and
/// stripped of control characters like any other.
const MAX_CERT_TEXT: usize = 200;

/// Most subject alternative names listed: a CDN certificate can carry
/// hundreds, and a message needs only enough to recognise the host.
const MAX_NAMES_SHOWN: usize = 10;

impl CertInfo {
    /// Reads `cert`.
    pub fn of(cert: &X509) -> CertInfo {
        let shown = |s: String| crate::text::printable(&s, MAX_CERT_TEXT);
        let now = openssl::asn1::Asn1Time::days_from_now(0).ok();
        let (expired, not_yet_valid) = match &now {
            Some(now) => (cert.not_after() < *now, cert.not_before() > *now),
            None => (false, false),
        };
        let names = cert
            .subject_alt_names()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| {
                        n.dnsname().map(|d| format!("DNS:{d}")).or_else(|| {
                            n.ipaddress().and_then(|ip| match ip.len() {
                                4 => <[u8; 4]>::try_from(ip)
                                    .ok()
                                    .map(|a| format!("IP:{}", IpAddr::from(a))),
                                16 => <[u8; 16]>::try_from(ip)
                                    .ok()
                                    .map(|a| format!("IP:{}", IpAddr::from(a))),
                                _ => None,
                            })
                        })
                    })
                    .map(shown)
                    .collect()
            })
            .unwrap_or_default();
        CertInfo {
            subject: shown(name_text(cert.subject_name())),
            issuer: shown(name_text(cert.issuer_name())),
            not_before: cert.not_before().to_string(),
            not_after: cert.not_after().to_string(),
            expired,
            not_yet_valid,
            names,
            sha256: crate::hex::upper_colon(&fingerprint(cert)),
        }
    }

    /// The names, at most `MAX_NAMES_SHOWN` of them.
    pub fn names_text(&self) -> String {
        let mut v: Vec<&str> = self
            .names
            .iter()
            .take(MAX_NAMES_SHOWN)
            .map(String::as_str)
            .collect();
        if self.names.len() > MAX_NAMES_SHOWN {
            v.push("...");
        }
        v.join(", ")
    }
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "subject {}; issuer {}; valid {} to {}",
            self.subject, self.issuer, self.not_before, self.not_after
        )?;
        if self.expired {
            f.write_str(" (EXPIRED)")?;
        }
        if self.not_yet_valid {
            f.write_str(" (NOT YET VALID)")?;
        }
        if !self.names.is_empty() {
            write!(f, "; names {}", self.names_text())?;
        }
        write!(f, "; SHA-256 {}", self.sha256)
    }
}

/// OpenSSL's "error:0A000086:SSL routines:...:certificate verify
/// failed:../ssl/statem/statem_clnt.c:1889: (unable to get local issuer
/// certificate)" reduced to "certificate verify failed (unable to get local
/// issuer certificate)": the function and source file help nobody here.
pub(super) fn short_reason(message: &str) -> String {
    match (
        message.contains("certificate verify failed"),
        message.rfind(" ("),
    ) {
        (true, Some(i)) => format!("certificate verify failed{}", &message[i..]),
        (true, None) => "certificate verify failed".into(),
        _ => message.to_string(),
    }
}

/// What to do about a certificate that did not verify, in words.
pub(super) fn advice(message: &str, cert: &CertInfo, host: &str) -> String {
    if cert.expired || cert.not_yet_valid {
        return format!(
            "The certificate is outside its validity period (check this machine's clock; \
             otherwise the server must renew it). To accept exactly this certificate \
             anyway, pin it: tls_fingerprint = {}",
            cert.sha256
        );
    }
    if message.to_ascii_lowercase().contains("hostname mismatch")
        || message.contains("IP address mismatch")
    {
        return format!(
            "The certificate is not valid for host = {host}; it names {}. Set host to one \
             of those names, or pin the certificate: tls_fingerprint = {}",
            if cert.names.is_empty() {
                "no alternative names".to_string()
            } else {
                cert.names_text()
            },
            cert.sha256
        );
    }
    format!(
        "Its issuer is not trusted here: if \"{}\" is your organisation's CA, put that CA's \
         certificate into ca_file; to trust exactly this certificate (self-signed servers), \
         set tls_fingerprint = {}",
        cert.issuer, cert.sha256
    )
}

/// Connects again, without verifying anything, just to read the
/// certificate the server presents after a verification failure, so the
/// error can say what to pin or which CA to add.
///
/// Nothing is sent over this connection after the handshake (no POP3
/// command, no credential); it is shut down at once. `upgrade` performs the
/// plain-text part first when the account uses STLS.
///
/// It is held to the limit of the real connection's first phase: all of
/// it, `upgrade` included, ends within `crate::deadline::CONNECT_TIMEOUTS`
/// × `timeout` (`upgrade` may hear more, but the handshake does not start
/// after it), so a server that drips its certificate cannot hold the poll
/// here either.
pub fn inspect(s: &Settings, upgrade: &dyn Fn(TcpStream) -> Option<TcpStream>) -> Option<CertInfo> {
    let end = crate::deadline::connect_end(s.timeout);
    let tcp = connect(s.host, s.port, s.source_ip, s.timeout, end).ok()?;
    let tcp = upgrade(tcp)?;
    let mut socket = Socket::new(tcp);
    socket.hold_to(Some(end)).ok()?;
    let mut b = client_context().ok()?;
    b.set_verify(SslVerifyMode::NONE);
    // A server that demands a client certificate would end the handshake
    // without one: offer the account's, as the real connection does.
    if let Some((cert, key)) = s.client {
        b.set_certificate_chain_file(cert).ok()?;
        b.set_private_key_file(key, SslFiletype::PEM).ok()?;
    }
    let ctx = b.build();
    let mut stream = session(&ctx, s.host, false).ok()?.connect(socket).ok()?;
    let cert = stream.ssl().peer_certificate().map(|c| CertInfo::of(&c));
    let _ = stream.shutdown();
    Stream::Tls(stream).shutdown();
    cert
}

/// SHA-256 of the certificate's DER encoding.
pub(super) fn fingerprint(cert: &X509) -> Vec<u8> {
    cert.digest(MessageDigest::sha256())
        .map(|d| d.to_vec())
        .unwrap_or_default()
}

/// `CN=x, O=y` for a certificate name (also S/MIME signers' subjects).
pub fn name_text(name: &openssl::x509::X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let val = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{key}={val}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::{Ended, Error};
    use super::*;

    /// A self-signed certificate for `cn` with `sans`, valid between the
    /// two Unix times.
    fn cert(cn: &str, sans: &[&str], from: i64, to: i64) -> X509 {
        use openssl::asn1::Asn1Time;
        use openssl::ec::{EcGroup, EcKey};
        use openssl::nid::Nid;
        use openssl::pkey::PKey;
        use openssl::x509::extension::SubjectAlternativeName;
        use openssl::x509::X509NameBuilder;
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::from_unix(from).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(to).unwrap()).unwrap();
        let mut san = SubjectAlternativeName::new();
        for s in sans {
            match s.strip_prefix("IP:") {
                Some(ip) => san.ip(ip),
                None => san.dns(s),
            };
        }
        let ext = san.build(&b.x509v3_context(None, None)).unwrap();
        b.append_extension(ext).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        b.build()
    }

    #[test]
    fn certificate_descriptions_and_advice() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let good = CertInfo::of(&cert(
            "pop.example.com",
            &["pop.example.com", "IP:192.0.2.1"],
            now - 10,
            now + 86400,
        ));
        assert_eq!(good.subject, "CN=pop.example.com");
        assert_eq!(good.names, ["DNS:pop.example.com", "IP:192.0.2.1"]);
        assert!(!good.expired && !good.not_yet_valid);
        assert_eq!(good.sha256.len(), 32 * 3 - 1);
        let text = good.to_string();
        assert!(
            text.starts_with("subject CN=pop.example.com; issuer CN=pop.example.com; valid "),
            "{text}"
        );
        assert!(text.ends_with(&format!(
            "; names DNS:pop.example.com, IP:192.0.2.1; SHA-256 {}",
            good.sha256
        )));

        let old = CertInfo::of(&cert("old\x1b[2J", &[], now - 86400 * 10, now - 86400));
        assert!(old.expired && old.to_string().contains("(EXPIRED)"));
        assert!(!old.subject.contains('\x1b'), "server text is sanitised");
        let advice_for = |msg, c: &CertInfo| advice(msg, c, "10.0.0.5");
        assert!(advice_for("x", &old).starts_with("The certificate is outside its validity period"));
        assert!(advice_for("... (Hostname mismatch)", &good)
            .starts_with("The certificate is not valid for host = 10.0.0.5; it names DNS:pop.example.com, IP:192.0.2.1."));
        assert!(
            advice_for("... (unable to get local issuer certificate)", &good)
                .contains("put that CA's certificate into ca_file")
        );

        let many: Vec<String> = (0..15).map(|i| format!("h{i}.example")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let big = CertInfo::of(&cert("cdn", &refs, now - 10, now + 10));
        assert!(big.names_text().ends_with("DNS:h9.example, ..."));

        assert_eq!(
            short_reason("error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed:../ssl/statem/statem_clnt.c:1889: (self-signed certificate)"),
            "certificate verify failed (self-signed certificate)"
        );
        assert_eq!(short_reason("connection reset"), "connection reset");
        let e = Error::Handshake {
            target: "h:995".into(),
            message: "certificate verify failed".into(),
            ended: Ended::Tls,
            presented: None,
        };
        assert!(e.is_verification_failure());
        let e = e.with_presented(Some(good.clone()));
        assert!(!e.is_verification_failure(), "explained once");
        assert!(e
            .to_string()
            .contains(&format!("set tls_fingerprint = {}", good.sha256)));
    }
}
