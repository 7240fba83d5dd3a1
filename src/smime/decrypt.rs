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

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use openssl::cms::CmsContentInfo;
use openssl::error::ErrorStack;

use super::keys::{self, reason, Identity};
use super::{der, ffi, DECRYPTED_FILE};
use crate::mime::{self, entity};
use crate::spool;

/// Open the envelope `der` for `id`. With `entry`, the plaintext goes
/// straight into its `decrypted.eml` (replacing an outer envelope's) and is
/// read back from there (see [`open_into`]); without, it is decrypted in
/// memory and written nowhere (`mime = no`, for a message small enough to
/// keep). The outer `Err` is an I/O failure of the entry; the inner one
/// says why the envelope cannot be opened, and then nothing of it is left
/// in the entry.
pub fn open(
    der: Vec<u8>,
    id: Option<&Identity>,
    entry: Option<&spool::Entry<'_>>,
) -> io::Result<Result<Vec<u8>, String>> {
    let Some(entry) = entry else {
        let id = match identity(id) {
            Ok(id) => id,
            Err(e) => return Ok(Err(e)),
        };
        let cms = match parse(&der) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        drop(der);
        let legacy_before = keys::legacy_loaded();
        let mut r = cms.decrypt(&id.key, &id.cert);
        if matches!(&r, Err(e) if retry_with_legacy(e, legacy_before)) {
            r = cms.decrypt(&id.key, &id.cert);
        }
        return Ok(r
            .map_err(|e| explain(&e))
            .and_then(|plain| mime_entity(&plain).map(|()| plain)));
    };
    let replace = || remove_if_there(&entry.dir().join(DECRYPTED_FILE));
    Ok(match open_into(der, id, entry, DECRYPTED_FILE, replace)? {
        Ok(()) => Ok(fs::read(entry.dir().join(DECRYPTED_FILE))?),
        Err(e) => Err(e),
    })
}

/// Open the envelope `der` for `id` into the file `name` of `entry`
/// (replaced if it exists), as OpenSSL produces the plaintext: OpenSSL
/// parses only the envelope's structure and reads the encrypted content
/// where it lies in `der` (README, "S/MIME", Memory), so memory holds `der`
/// and little else. `replace` runs once the envelope is read, before
/// anything is decrypted: an outer envelope's `decrypted.eml` goes then,
/// whether or not this one opens. The outer `Err` is an I/O failure of the
/// entry; the inner one says why the envelope cannot be opened, and then
/// the file is not left behind.
pub fn open_into(
    der: Vec<u8>,
    id: Option<&Identity>,
    entry: &spool::Entry<'_>,
    name: &str,
    replace: impl FnOnce() -> io::Result<()>,
) -> io::Result<Result<(), String>> {
    let id = match identity(id) {
        Ok(id) => id,
        Err(e) => return Ok(Err(e)),
    };
    let split = der::split_envelope(&der);
    let cms = match &split {
        Some(sp) => parse(&sp.head),
        None => parse(&der),
    };
    let cms = match cms {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    // Parsed whole, `der` can go once its parsed copy exists.
    let der = if split.is_some() { der } else { Vec::new() };
    let detached = split.map(|sp| &der[sp.content]);
    let legacy_before = keys::legacy_loaded();
    let path = entry.dir().join(name);
    replace()?;
    let mut file = entry.create(name)?;
    let mut r = ffi::decrypt_into(&cms, &id.key, &id.cert, detached, &file);
    if matches!(&r, Err(e) if retry_with_legacy(e, legacy_before)) {
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        r = ffi::decrypt_into(&cms, &id.key, &id.cert, detached, &file);
    }
    drop(cms);
    drop(der);
    drop(file);
    let opened = match r {
        Ok(()) => checked(&path)?,
        Err(e) => Err(explain(&e)),
    };
    if opened.is_err() {
        fs::remove_file(&path)?;
    }
    Ok(opened)
}

/// Removes the file `path` if it exists.
pub fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The account's identity, or why there is none.
fn identity(id: Option<&Identity>) -> Result<&Identity, String> {
    id.ok_or_else(|| {
        "cannot decrypt: no smime_cert and smime_key (or smime_pkcs12) \
         are configured for this account"
            .into()
    })
}

/// The envelope parsed, or why it cannot be.
fn parse(der: &[u8]) -> Result<CmsContentInfo, String> {
    CmsContentInfo::from_der(der).map_err(|e| {
        format!(
            "cannot decrypt: the envelope cannot be read: {}",
            reason(&e)
        )
    })
}

/// Whether decryption failing with `e` is worth one more try: it failed
/// for want of a cipher (RC2 and DES live in OpenSSL 3's legacy provider,
/// loaded only when an envelope needs one), the legacy provider was not
/// loaded before this envelope (`legacy_before`), and it loads now.
fn retry_with_legacy(e: &ErrorStack, legacy_before: bool) -> bool {
    let unsupported = e.errors().iter().any(|x| {
        x.reason()
            .is_some_and(|r| r.contains("unsupported") || r.contains("initialisation"))
    });
    unsupported && !legacy_before && keys::legacy_provider()
}

/// Why decryption failed, in words.
fn explain(e: &ErrorStack) -> String {
    if e.errors().is_empty() {
        // OpenSSL 3.0 fails without a reason when no recipient of the
        // envelope is this certificate.
        "cannot decrypt: no matching recipient: the message is not encrypted \
         for this account's certificate"
            .into()
    } else {
        format!("cannot decrypt: {}", reason(e))
    }
}

/// Whether the plaintext starting with `first` is a MIME entity. A damaged encrypted
/// key makes RSA decryption yield a random content key rather than an
/// error (implicit rejection); CBC then "succeeds" about once in 256 tries,
/// with random bytes. Those are never a MIME entity, and never published as
/// the message. Its first line decides.
fn mime_entity(first: &[u8]) -> Result<(), String> {
    if entity::opens_with_header(first) {
        Ok(())
    } else {
        Err("cannot decrypt: what came out is not a MIME entity \
             (the envelope is corrupt or the key is not this recipient's)"
            .into())
    }
}

/// [`mime_entity`] for the plaintext in the file `path`, read up to
/// [`mime::MAX_HEADER_BYTES`] (a field name is far shorter than its first
/// line may be).
fn checked(path: &Path) -> io::Result<Result<(), String>> {
    let mut first = Vec::new();
    fs::File::open(path)?
        .take(mime::MAX_HEADER_BYTES as u64)
        .read_to_end(&mut first)?;
    Ok(mime_entity(&first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_mime_entity_counts_as_decrypted() {
        assert_eq!(
            mime_entity(b"Content-Type: text/plain\r\n\r\nhello\r\n"),
            Ok(())
        );
        // What a wrong content key makes of CBC data: random bytes.
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect();
        assert!(mime_entity(&random).is_err_and(|e| e.contains("not a MIME entity")));
        assert!(mime_entity(b"").is_err());
    }

    #[test]
    fn no_key_no_decryption() {
        let e = open(b"\x30\x00".to_vec(), None, None).unwrap().unwrap_err();
        assert!(e.contains("no smime_cert"), "{e}");
    }
}
