//! Opening one S/MIME envelope (RFC 8551 section 3.3): CMS `EnvelopedData`
//! (AES-128/192/256-CBC, 3DES, RC2) and `AuthEnvelopedData` (AES-GCM,
//! RFC 5083 and 5084), which PKCS#7 cannot read and CMS can.
//!
//! OpenSSL is always told which recipient certificate to decrypt for. Left
//! to try every recipient, it answers a wrong key with random bytes rather
//! than an error (its defence against Bleichenbacher's attack on RSA
//! PKCS#1 v1.5), and those would be written out as the message. With the
//! certificate, a message for another recipient fails with "no matching
//! recipient", and a corrupt envelope fails too: nothing is written then.

use openssl::cms::CmsContentInfo;

use super::keys::{self, reason, Identity};
use crate::mime::entity;

/// The plaintext inside the envelope `der`, or why it cannot be had.
pub fn open(der: &[u8], id: Option<&Identity>) -> Result<Vec<u8>, String> {
    let Some(id) = id else {
        return Err(
            "cannot decrypt: no smime_cert and smime_key (or smime_pkcs12) \
                    are configured for this account"
                .into(),
        );
    };
    let cms = CmsContentInfo::from_der(der).map_err(|e| {
        format!(
            "cannot decrypt: the envelope cannot be read: {}",
            reason(&e)
        )
    })?;
    let legacy_before = keys::legacy_loaded();
    let plain = match cms.decrypt(&id.key, &id.cert) {
        Ok(plain) => plain,
        // OpenSSL 3.0 fails without a reason when no recipient of the
        // envelope is this certificate.
        Err(e) if e.errors().is_empty() => {
            return Err("cannot decrypt: no matching recipient: the message is not \
                        encrypted for this account's certificate"
                .into())
        }
        Err(e) => {
            let first = reason(&e);
            // RC2 and DES live in OpenSSL 3's legacy provider, loaded only
            // when an envelope needs one: then the envelope is tried again.
            let unsupported = e.errors().iter().any(|x| {
                x.reason()
                    .is_some_and(|r| r.contains("unsupported") || r.contains("initialisation"))
            });
            if !(unsupported && !legacy_before && keys::legacy_provider()) {
                return Err(format!("cannot decrypt: {first}"));
            }
            cms.decrypt(&id.key, &id.cert)
                .map_err(|e| format!("cannot decrypt: {}", reason(&e)))?
        }
    };
    // A damaged encrypted key makes RSA decryption yield a random content
    // key rather than an error (implicit rejection); CBC then "succeeds"
    // about once in 256 tries, with random bytes. Those are never a MIME
    // entity, and never written out as the message.
    if !entity::opens_with_header(&plain) {
        return Err("cannot decrypt: what came out is not a MIME entity \
                    (the envelope is corrupt or the key is not this recipient's)"
            .into());
    }
    Ok(plain)
}
