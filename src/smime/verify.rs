//! Checking one S/MIME signature layer (RFC 8551, RFC 5652 section 5):
//! opaque `signed-data`, or a detached signature over the exact bytes of a
//! `multipart/signed` first part. Two questions are asked apart, so the
//! answer says which failed (README, "S/MIME"):
//!
//! 1. does the signature match the content, with the signer's own
//!    certificate? If not, the signature is `invalid`;
//! 2. does that certificate chain to a trusted root (the system store plus
//!    `smime_ca_file`, intermediates taken from the message), is it within
//!    its validity, and may it sign mail (key usage, extended key usage)?
//!    If not, it is `untrusted`.
//!
//! OpenSSL does both (`CMS_verify`); its reason is kept for `smime.error`.

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::nid::Nid;
use openssl::x509::store::X509StoreRef;
use openssl::x509::X509;
use serde::Serialize;

use super::ffi::{self, Content};
use super::keys::{reason, subject_text};
use super::Signature;

/// One signer, for `smime.signers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signer {
    /// The certificate's subject, `CN=..., O=...`.
    pub subject: String,
    /// Its e-mail address (subjectAltName rfc822Name, else the subject's
    /// emailAddress), if it has one.
    pub email: Option<String>,
}

/// What one signature layer says.
#[derive(Debug)]
pub struct Checked {
    /// `valid`, `invalid` or `untrusted`.
    pub signature: Signature,
    /// Who signed, as far as the message says.
    pub signers: Vec<Signer>,
    /// OpenSSL's reason when the signature is not valid.
    pub error: Option<String>,
    /// The signed content of an opaque signature that came with it
    /// (absent when the caller handed the content over as `detached`, and
    /// when the structure could not be read at all).
    pub content: Option<Vec<u8>>,
}

/// Check the signature `der` (a CMS `SignedData`), over `detached` when
/// the content travels beside it, against `trust`.
pub fn check(
    der: &[u8],
    detached: Option<Content<'_>>,
    trust: Result<&X509StoreRef, &str>,
) -> Checked {
    let mut cms = match CmsContentInfo::from_der(der) {
        Ok(c) => c,
        Err(e) => {
            return Checked {
                signature: Signature::Invalid,
                signers: Vec::new(),
                error: Some(format!("the signature cannot be read: {}", reason(&e))),
                content: None,
            }
        }
    };
    // BINARY: the content is digested exactly as it is, never translated
    // (a detached part is already canonical, RFC 8551 section 3.1.1).
    let binary = CMSOptions::BINARY;
    let mut content = Vec::new();
    // The content is collected only when it is not the caller's already.
    let own = match detached {
        Some(d) => ffi::verify(&cms, None, Some(d), binary | CMSOptions::NOVERIFY),
        None => cms.verify(
            None,
            None,
            None,
            Some(&mut content),
            binary | CMSOptions::NOVERIFY,
        ),
    };
    let signers: Vec<Signer> = ffi::signers(&cms).iter().map(signer).collect();
    let content = detached.is_none().then(|| {
        if own.is_err() {
            // A broken signature still has content: consumers see what
            // was sent, and `invalid` says not to believe it.
            let _ = cms.verify(
                None,
                None,
                None,
                Some(&mut content),
                binary | CMSOptions::NOVERIFY | CMSOptions::NOSIGS,
            );
        }
        content
    });
    if let Err(e) = own {
        // Without the signer's certificate nothing says the content was
        // altered: the signature cannot be checked, which is not trust.
        let missing = e
            .errors()
            .iter()
            .any(|x| x.reason() == Some("signer certificate not found"));
        return Checked {
            signature: if missing {
                Signature::Untrusted
            } else {
                Signature::Invalid
            },
            signers,
            error: Some(reason(&e)),
            content,
        };
    }
    let (signature, error) = match trust {
        Err(why) => (Signature::Untrusted, Some(why.to_string())),
        Ok(store) => match ffi::verify(&cms, Some(store), detached, binary) {
            Ok(()) => (Signature::Valid, None),
            Err(e) => (Signature::Untrusted, Some(reason(&e))),
        },
    };
    Checked {
        signature,
        signers,
        error,
        content,
    }
}

/// A certificate as `smime.signers` lists it.
fn signer(cert: &X509) -> Signer {
    let alt = cert
        .subject_alt_names()
        .and_then(|names| names.iter().find_map(|n| n.email().map(str::to_string)));
    let email = alt.or_else(|| {
        cert.subject_name()
            .entries_by_nid(Nid::PKCS9_EMAILADDRESS)
            .find_map(|e| e.data().to_string().ok())
    });
    Signer {
        subject: subject_text(cert),
        email,
    }
}
