//! The S/MIME key material of an account (README, "S/MIME"; popspool.ini(5),
//! `smime_*`): the recipient certificate and private key that decrypt (PEM,
//! PKCS#8 or traditional, optionally encrypted; or PKCS#12), the extra
//! trust anchors of `smime_ca_file`, and OpenSSL 3's legacy provider, which
//! old PKCS#12 exports (RC2-40, 3DES) and RC2 envelopes need and which is
//! loaded only when one of them turns up.
//!
//! Everything here is read once, when the configuration is loaded (at
//! start-up and at SIGHUP); a message never waits for a file. Errors name
//! the file and what is wrong with it, never a passphrase.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::provider::Provider;
use openssl::x509::X509;

use crate::config::SecretSource;
use crate::secret;

/// A certificate, key or PKCS#12 file is a few KiB (a bundle of CAs some
/// hundred); the cap keeps a misnamed log file or device from filling memory.
const MAX_KEY_FILE_BYTES: u64 = 4 << 20;

/// How long reading a passphrase file may take (it is a file, so at once;
/// the value only satisfies the secret module's interface, which also runs
/// commands).
const PASSPHRASE_TIMEOUT: Duration = Duration::from_secs(10);

/// `--check` warns when the certificate expires within this many days: a
/// month leaves time to have a new one issued and deployed.
pub const EXPIRY_WARNING_DAYS: i32 = 30;

/// The files an account names (`smime_cert`, `smime_key`, `smime_pkcs12`,
/// `smime_pkcs12_password_file`, `smime_ca_file`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Files {
    /// PEM recipient certificate.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// PKCS#12 with both.
    pub pkcs12: Option<PathBuf>,
    /// Passphrase of `pkcs12`, or of an encrypted `key`.
    pub password_file: Option<PathBuf>,
    /// Extra PEM trust anchors for signatures.
    pub ca_file: Option<PathBuf>,
}

/// Which key a loading error concerns, so the configuration error names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// `smime_cert`.
    Cert,
    /// `smime_key`.
    Key,
    /// `smime_pkcs12`.
    Pkcs12,
    /// `smime_pkcs12_password_file`.
    PasswordFile,
    /// `smime_ca_file`.
    CaFile,
}

/// The recipient's certificate and private key.
#[derive(Clone)]
pub struct Identity {
    /// The certificate: CMS decryption is always told which recipient it is.
    pub cert: X509,
    /// Its private key.
    pub key: PKey<Private>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("subject", &subject_text(&self.cert))
            .field("key", &"<redacted>")
            .finish()
    }
}

/// What the configuration loaded for an account.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The decryption identity, when one is configured.
    pub identity: Option<Identity>,
    /// `smime_ca_file`'s certificates.
    pub anchors: Vec<X509>,
}

/// Load what `files` names. The private key files must already have
/// passed the configuration's permission rule.
pub fn load(files: &Files) -> Result<Loaded, (Which, String)> {
    let passphrase = || -> Result<Option<secret::Password>, (Which, String)> {
        match &files.password_file {
            None => Ok(None),
            Some(p) => secret::resolve(&SecretSource::File(p.clone()), PASSPHRASE_TIMEOUT)
                .map(Some)
                .map_err(|e| (Which::PasswordFile, e.to_string())),
        }
    };
    let identity = match (&files.cert, &files.key, &files.pkcs12) {
        (Some(cert), Some(key), None) => {
            let cert_pem = read(cert).map_err(|e| (Which::Cert, e))?;
            let cert = X509::from_pem(&cert_pem).map_err(|e| {
                (
                    Which::Cert,
                    format!("{}: not a PEM certificate: {e}", cert.display()),
                )
            })?;
            let key_pem = read(key).map_err(|e| (Which::Key, e))?;
            let pass = passphrase()?;
            let pkey = match &pass {
                // PKCS#8 (encrypted or not) and traditional PEM alike.
                Some(p) => PKey::private_key_from_pem_passphrase(&key_pem, p.expose().as_bytes()),
                None => PKey::private_key_from_pem(&key_pem),
            }
            .map_err(|e| {
                let hint = if pass.is_none() && String::from_utf8_lossy(&key_pem).contains("ENCRYPTED") {
                    "; it is encrypted: set smime_pkcs12_password_file to a file holding its passphrase"
                } else {
                    ""
                };
                (Which::Key, format!("{}: not a usable PEM private key ({}){hint}", key.display(), reason(&e)))
            })?;
            Some(matched(Identity { cert, key: pkey }, key).map_err(|e| (Which::Key, e))?)
        }
        (None, None, Some(p12)) => {
            let pass = passphrase()?;
            let der = read(p12).map_err(|e| (Which::Pkcs12, e))?;
            Some(
                pkcs12(&der, pass.as_ref().map_or("", |p| p.expose()), p12)
                    .map_err(|e| (Which::Pkcs12, e))?,
            )
        }
        _ => None,
    };
    // Said at start-up and at every reload, so an expiring certificate is
    // in the log in time, not only under `--check`.
    if let Some((_, Some(warning))) = identity.as_ref().map(describe) {
        log::warn!("{warning}");
    }
    let anchors = match &files.ca_file {
        None => Vec::new(),
        Some(path) => {
            let pem = read(path).map_err(|e| (Which::CaFile, e))?;
            let certs = X509::stack_from_pem(&pem).unwrap_or_default();
            if certs.is_empty() {
                return Err((
                    Which::CaFile,
                    format!("{}: no PEM certificate in it", path.display()),
                ));
            }
            certs
        }
    };
    Ok(Loaded { identity, anchors })
}

/// A PKCS#12 file's key and certificate. Files from old Windows exports
/// encrypt with RC2-40 and 3DES, which OpenSSL 3 keeps in its legacy
/// provider: when the default provider cannot open the file, the legacy
/// provider is loaded and the file tried again.
fn pkcs12(der: &[u8], pass: &str, path: &Path) -> Result<Identity, String> {
    let bad = |e: &openssl::error::ErrorStack| {
        format!(
            "{}: cannot open the PKCS#12 file ({}); is smime_pkcs12_password_file right?",
            path.display(),
            reason(e)
        )
    };
    let parsed = match Pkcs12::from_der(der).and_then(|p| p.parse2(pass)) {
        Ok(p) => p,
        Err(first) => {
            if !legacy_provider() {
                return Err(bad(&first));
            }
            Pkcs12::from_der(der)
                .and_then(|p| p.parse2(pass))
                .map_err(|e| bad(&e))?
        }
    };
    match (parsed.cert, parsed.pkey) {
        (Some(cert), Some(key)) => matched(Identity { cert, key }, path),
        _ => Err(format!(
            "{}: the PKCS#12 file lacks a certificate or its private key",
            path.display()
        )),
    }
}

/// The identity, if its key belongs to its certificate.
fn matched(id: Identity, key_path: &Path) -> Result<Identity, String> {
    let ok = id
        .cert
        .public_key()
        .map(|pk| pk.public_eq(&id.key))
        .unwrap_or(false);
    if ok {
        Ok(id)
    } else {
        Err(format!(
            "{}: the private key does not belong to the certificate {}",
            key_path.display(),
            subject_text(&id.cert)
        ))
    }
}

/// OpenSSL 3's legacy provider with the default one, once loaded.
static LEGACY: OnceLock<Option<(Provider, Provider)>> = OnceLock::new();

/// Whether loading the legacy provider was tried already.
pub fn legacy_loaded() -> bool {
    LEGACY.get().is_some()
}

/// Load OpenSSL 3's legacy provider (RC2, DES, RC4...) next to the
/// default one, once per process; whether it is there.
pub fn legacy_provider() -> bool {
    LEGACY
        .get_or_init(|| {
            // Loading any provider explicitly turns off the implicit default
            // one, so it is loaded explicitly too.
            let default = Provider::try_load(None, "default", true).ok()?;
            match Provider::try_load(None, "legacy", true) {
                Ok(legacy) => {
                    log::debug!("S/MIME: OpenSSL's legacy provider loaded");
                    Some((default, legacy))
                }
                Err(e) => {
                    log::warn!(
                        "S/MIME: OpenSSL's legacy provider is not available: {}",
                        reason(&e)
                    );
                    None
                }
            }
        })
        .is_some()
}

/// A file's bytes, at most [`MAX_KEY_FILE_BYTES`].
fn read(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_KEY_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(format!(
            "{} is larger than {MAX_KEY_FILE_BYTES} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

/// OpenSSL's reasons, without the library's internal file names.
pub fn reason(e: &openssl::error::ErrorStack) -> String {
    let mut out: Vec<String> = Vec::new();
    for err in e.errors() {
        let mut r = err.reason().unwrap_or("unknown error").to_string();
        if let Some(d) = err.data().filter(|d| !d.is_empty()) {
            r.push_str(": ");
            r.push_str(d);
        }
        if !out.contains(&r) {
            out.push(r);
        }
    }
    if out.is_empty() {
        "unknown OpenSSL error".into()
    } else {
        out.join("; ")
    }
}

/// `CN=..., O=...` of a certificate's subject.
pub fn subject_text(cert: &X509) -> String {
    crate::tls::name_text(cert.subject_name())
}

/// `--check`'s lines about an identity: subject and expiry, and a warning
/// when it expires within [`EXPIRY_WARNING_DAYS`] or has expired.
pub fn describe(id: &Identity) -> (String, Option<String>) {
    let cert = &id.cert;
    let line = format!(
        "certificate {}, expires {}",
        subject_text(cert),
        cert.not_after()
    );
    let warning = Asn1Time::days_from_now(0)
        .ok()
        .and_then(|now| now.diff(cert.not_after()).ok())
        .and_then(|d| {
            if d.days < 0 || (d.days == 0 && d.secs < 0) {
                Some(format!(
                    "the S/MIME certificate expired on {}",
                    cert.not_after()
                ))
            } else if d.days < EXPIRY_WARNING_DAYS {
                Some(format!(
                    "the S/MIME certificate expires in {} day(s), on {}",
                    d.days,
                    cert.not_after()
                ))
            } else {
                None
            }
        });
    (line, warning)
}
