//! S/MIME (RFC 8551), the first step of decoding a message (README,
//! "S/MIME"): its layers are unwrapped before MIME decoding, inside the
//! decoder's panic guard, and what they said becomes `meta.json`'s `smime`
//! object and, under `smime_policy`, the entry's way to `quarantine/`.
//!
//! A layer is an envelope (`application/pkcs7-mime` or `x-pkcs7-mime`
//! holding CMS `EnvelopedData` or `AuthEnvelopedData`, also a `.p7m` sent
//! as the whole body), an opaque signature (the same media types holding
//! `SignedData`) or a detached one (`multipart/signed` with
//! `application/pkcs7-signature` or `x-pkcs7-signature`). What a layer
//! holds may be another layer (sign-then-encrypt, encrypt-then-sign); they
//! are unwrapped to [`MAX_LAYERS`]. The innermost message is decoded as any
//! message; what an envelope held is written as `decrypted.eml` (that of
//! the innermost envelope, when there are several).
//!
//! - `keys`: the account's recipient key, certificate and trust anchors;
//! - `decrypt`: one envelope; `verify`: one signature;
//! - `disk`: the step for a message too big to hold, read from its file;
//! - `ffi`: the one OpenSSL call the `openssl` crate lacks.

mod decrypt;
mod der;
mod disk;
mod ffi;
pub mod keys;
mod verify;

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use openssl::x509::store::X509Store;
use serde::Serialize;

use self::ffi::Content;
use crate::mime::{self, entity};
use crate::spool;

pub use disk::decode_step_file;
pub use verify::Signer;

/// Most S/MIME layers unwrapped from one message. Real mail has one or two
/// (sign-then-encrypt); a third is already unusual (a signing list server
/// re-signing a signed message). Each layer may hold a copy of the whole
/// message, so the cap bounds the work a hostile message can ask for; what
/// lies beyond stays wrapped and `smime.error` says so.
pub const MAX_LAYERS: usize = 4;

/// The file a decrypted message is written to, in the entry.
pub const DECRYPTED_FILE: &str = "decrypted.eml";

/// `smime_policy`: which messages go to `quarantine/` instead of `new/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Everything is delivered to `new/` (a message that cannot be
    /// decrypted still goes to quarantine).
    #[default]
    Accept,
    /// Unsigned mail goes to quarantine.
    RequireSigned,
    /// Unsigned mail and invalid or untrusted signatures go to quarantine.
    RequireValid,
}

impl Policy {
    /// Every value with its name in the `smime_policy` key.
    pub const ALL: [(&'static str, Policy); 3] = [
        ("accept", Policy::Accept),
        ("require-signed", Policy::RequireSigned),
        ("require-valid", Policy::RequireValid),
    ];

    /// The name as written in the key.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("accept", |(n, _)| n)
    }
}

/// `smime.signature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Signature {
    /// No signature was found.
    #[default]
    None,
    /// Every signature matches and chains to a trusted root.
    Valid,
    /// A signature matches, but its certificate does not chain to a
    /// trusted root, has expired, or may not sign mail.
    Untrusted,
    /// The content was altered, or the signature is broken.
    Invalid,
}

impl Signature {
    fn name(self) -> &'static str {
        match self {
            Signature::None => "none",
            Signature::Valid => "valid",
            Signature::Untrusted => "untrusted",
            Signature::Invalid => "invalid",
        }
    }
}

/// `meta.json`'s `smime` object (README, "S/MIME" and "The spool").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// An envelope was found.
    pub encrypted: bool,
    /// It was opened (and `decrypted.eml` written, with `mime = yes`).
    pub decrypted: bool,
    /// A signature was found.
    pub signed: bool,
    /// The worst of the signatures found.
    pub signature: Signature,
    /// Every signer, outermost layer first.
    pub signers: Vec<Signer>,
    /// One signer's e-mail address is one of `From`'s (compared
    /// case-insensitively).
    pub signer_matches_from: bool,
    /// Why a layer could not be opened or a signature is not valid.
    pub error: Option<String>,
}

/// An account's S/MIME settings: policy, key files and what was loaded
/// from them. The trust store is built at the first signature after each
/// (re)load of the configuration, so SIGHUP reads the system store again.
#[derive(Clone, Default)]
pub struct Settings {
    /// `smime_policy`.
    pub policy: Policy,
    /// The `smime_*` files.
    pub files: keys::Files,
    /// What the files held; loaded by the configuration read from a file
    /// (none for configuration text checked without its files).
    pub loaded: Option<Arc<keys::Loaded>>,
    trust: Arc<OnceLock<Result<X509Store, String>>>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("policy", &self.policy)
            .field("files", &self.files)
            .field("loaded", &self.loaded)
            .finish()
    }
}

impl Settings {
    /// Settings not yet loaded.
    pub fn new(policy: Policy, files: keys::Files) -> Settings {
        Settings {
            policy,
            files,
            ..Settings::default()
        }
    }

    fn identity(&self) -> Option<&keys::Identity> {
        self.loaded.as_ref().and_then(|l| l.identity.as_ref())
    }

    fn trust(&self) -> Result<&X509Store, &str> {
        let anchors = self.loaded.as_ref().map_or(&[][..], |l| &l.anchors[..]);
        self.trust
            .get_or_init(|| {
                crate::tls::smime_store(anchors)
                    .map_err(|e| format!("the trust store cannot be read: {}", keys::reason(&e)))
            })
            .as_ref()
            .map_err(String::as_str)
    }
}

/// What unwrapping a message found.
#[derive(Debug, Default)]
pub struct Unwrapped<'a> {
    /// The `smime` object; `None` for a message without any S/MIME layer.
    pub facts: Option<Facts>,
    /// The innermost message, when a layer was removed (a part of the
    /// message itself when only a detached signature was).
    pub inner: Option<Cow<'a, [u8]>>,
    /// Why `smime_policy` (or an envelope that cannot be opened) sends the
    /// entry to `quarantine/`.
    pub quarantine: Option<String>,
}

/// One S/MIME layer, with what it wraps.
enum Layer {
    /// CMS `EnvelopedData` or `AuthEnvelopedData`, DER.
    Enveloped(Vec<u8>),
    /// CMS `SignedData`, DER, and where in the entity the content lies
    /// when it is detached (the first part of a `multipart/signed`).
    Signed {
        der: Vec<u8>,
        detached: Option<Range<usize>>,
    },
}

/// What the S/MIME step makes of a message: the decoder's result and the
/// `smime` facts (`None` for a message without S/MIME).
pub type Decoded = (mime::Decoded, Option<Facts>);

/// The decode stage's S/MIME step for the message `raw`: unwraps it,
/// writes `decrypted.eml` (with `mime`), decodes the innermost message
/// with `decode` (the ordinary MIME path, or headers only) and applies the
/// policy. The headers in `meta.json` stay those of the message as
/// received: an inner message rarely repeats them. A message too big to
/// hold takes [`decode_step_file`], with the same results.
pub fn decode_step<F>(
    raw: &[u8],
    settings: &Settings,
    mime: bool,
    entry: &spool::Entry<'_>,
    decode: F,
) -> io::Result<Decoded>
where
    F: FnOnce(&[u8]) -> io::Result<mime::Decoded>,
{
    let u = unwrap(raw, settings, mime.then_some(entry))?;
    let decoded = match (&u.inner, mime) {
        (Some(inner), true) => inner_decoded(decode(inner)?, mime::headers_only(raw)),
        // `mime = no`: the facts are recorded, no content is written.
        _ => decode(raw)?,
    };
    Ok(finish(decoded, u.quarantine, u.facts, entry))
}

/// What the innermost message `d` decodes to, with the headers of the
/// message as received (`outer`).
fn inner_decoded(d: mime::Decoded, outer: mime::Decoded) -> mime::Decoded {
    mime::Decoded {
        kind: d.kind,
        body: d.body,
        attachments: d.attachments,
        report: d.report,
        problems: d.problems,
        quarantine: d.quarantine,
        files: d.files,
        dirs: d.dirs,
        ..outer
    }
}

/// The step's result, with the entry sent to quarantine when unwrapping
/// said so.
fn finish(
    mut decoded: mime::Decoded,
    quarantine: Option<String>,
    facts: Option<Facts>,
    entry: &spool::Entry<'_>,
) -> Decoded {
    if let Some(why) = quarantine {
        log::warn!("entry {}: {why}; it goes to quarantine/", entry.id());
        decoded.quarantine = Some(why);
    }
    (decoded, facts)
}

/// Unwrap the S/MIME layers of `raw`, check signatures, open envelopes
/// (into `entry`'s `decrypted.eml`, when given) and decide what the policy
/// says. Fails only when the entry cannot be written.
pub fn unwrap<'a>(
    raw: &'a [u8],
    settings: &Settings,
    entry: Option<&spool::Entry<'_>>,
) -> io::Result<Unwrapped<'a>> {
    let mut cur: Cow<'a, [u8]> = Cow::Borrowed(raw);
    let mut facts = Facts::default();
    let mut errors: Vec<String> = Vec::new();
    let mut layers = 0;
    let mut sealed = false;
    // Reading a slice cannot fail.
    while let Some(layer) = classify(&*cur).unwrap_or_default() {
        if layers == MAX_LAYERS {
            errors.push(format!(
                "more than {MAX_LAYERS} nested S/MIME layers; the rest is left as it is"
            ));
            break;
        }
        layers += 1;
        match layer {
            Layer::Enveloped(der) => {
                facts.encrypted = true;
                match decrypt::open(der, settings.identity(), entry)? {
                    Ok(plain) => {
                        facts.decrypted = true;
                        cur = Cow::Owned(plain);
                    }
                    Err(e) => {
                        errors.push(e);
                        sealed = true;
                        break;
                    }
                }
            }
            Layer::Signed { der, detached } => {
                facts.signed = true;
                let trust = settings.trust().map(|s| &**s);
                // Opaque: the content is handed to OpenSSL where it lies
                // in `der`, and becomes the next layer in place (no copy of
                // a big signed message); BER it cannot split is parsed whole.
                let split = match &detached {
                    Some(_) => None,
                    None => der::split_signed(&der),
                };
                let c = match (&detached, &split) {
                    (Some(range), _) => {
                        verify::check(&der, Some(Content::Bytes(&cur[range.clone()])), trust)
                    }
                    (None, Some(sp)) => verify::check(
                        &sp.head,
                        Some(Content::Bytes(&der[sp.content.clone()])),
                        trust,
                    ),
                    (None, None) => verify::check(&der, None, trust),
                };
                facts.signature = facts.signature.max(c.signature);
                facts.signers.extend(c.signers);
                errors.extend(c.error);
                cur = match (detached, split, c.content) {
                    (Some(range), _, _) => narrow(cur, range),
                    (None, Some(sp), _) => narrow(Cow::Owned(der), sp.content),
                    (None, None, Some(content)) => Cow::Owned(content),
                    (None, None, None) => break,
                };
            }
        }
    }
    if layers == 0 {
        return Ok(Unwrapped {
            quarantine: policy_reason(settings.policy, &facts, None),
            ..Unwrapped::default()
        });
    }
    let from = entity::from_addresses(raw);
    let quarantine = conclude(&mut facts, &from, errors, sealed, settings.policy);
    let inner = (cur.len() != raw.len() || cur.as_ptr() != raw.as_ptr()).then_some(cur);
    Ok(Unwrapped {
        facts: Some(facts),
        inner,
        quarantine,
    })
}

/// The facts once every layer is unwrapped: whether a signer is the
/// sender (one of the `from` addresses), the errors met, and why the entry
/// goes to quarantine, if it does.
fn conclude(
    facts: &mut Facts,
    from: &[String],
    errors: Vec<String>,
    sealed: bool,
    policy: Policy,
) -> Option<String> {
    facts.signer_matches_from = facts.signers.iter().any(|s| {
        s.email
            .as_deref()
            .is_some_and(|e| from.iter().any(|f| f.eq_ignore_ascii_case(e)))
    });
    facts.error = (!errors.is_empty()).then(|| errors.join("; "));
    if sealed {
        Some(format!(
            "S/MIME: {}",
            facts.error.as_deref().unwrap_or("cannot decrypt")
        ))
    } else {
        policy_reason(policy, facts, facts.error.as_deref())
    }
}

/// The `range` of `bytes`, in place: a slice of borrowed bytes, or owned
/// bytes cut down without a copy.
fn narrow(bytes: Cow<'_, [u8]>, range: Range<usize>) -> Cow<'_, [u8]> {
    match bytes {
        Cow::Borrowed(b) => Cow::Borrowed(&b[range]),
        Cow::Owned(mut v) => {
            v.truncate(range.end);
            v.drain(..range.start);
            Cow::Owned(v)
        }
    }
}

/// Why `policy` refuses a message with these facts, if it does.
fn policy_reason(policy: Policy, facts: &Facts, error: Option<&str>) -> Option<String> {
    let name = policy.name();
    match policy {
        Policy::Accept => None,
        _ if !facts.signed => Some(format!("smime_policy = {name}: the message is not signed")),
        Policy::RequireValid if facts.signature != Signature::Valid => Some(format!(
            "smime_policy = {name}: the signature is {}{}",
            facts.signature.name(),
            error.map(|e| format!(": {e}")).unwrap_or_default()
        )),
        _ => None,
    }
}

/// Whether a message whose first bytes (its header block) are `head` may
/// be S/MIME at its top level: the types [`classify`] looks into.
pub fn may_be_smime(head: &[u8]) -> bool {
    names_a_candidate_type(head)
        && matches!(
            entity::entity(head).content_type.as_str(),
            "application/pkcs7-mime"
                | "application/x-pkcs7-mime"
                | "application/octet-stream"
                | "multipart/signed"
        )
}

/// Whether a header block mentions a type [`classify`] looks into: a byte
/// scan, so that the header of a message that is not S/MIME (most mail) is
/// not parsed a second time. A MIME type is a token (RFC 2045), never
/// encoded or split by a comment, so a header without `pkcs7`, `signed` or
/// `octet-stream` in any case cannot name one.
fn names_a_candidate_type(head: &[u8]) -> bool {
    let at = |i: usize, w: &[u8]| {
        head.get(i..i + w.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(w))
    };
    // One pass looking at each byte once; a word is compared only where
    // its first letter stands.
    head.iter().enumerate().any(|(i, b)| match b | 0x20 {
        b'p' => at(i, b"pkcs7"),
        b's' => at(i, b"signed"),
        b'o' => at(i, b"octet-stream"),
        _ => false,
    })
}

/// A message (or what a layer held) as [`classify`] reads it: in memory,
/// or in a file (`mime::entity::FileEntity`) when too big to hold.
trait Outer {
    /// Its header block.
    fn head(&self) -> &[u8];
    /// Its header facts.
    fn entity(&self) -> entity::Entity<'_>;
    /// The body of `e` (its own entity) without the transfer encoding.
    fn decoded_body(&self, e: &entity::Entity<'_>) -> io::Result<Vec<u8>>;
    /// Where the body parts of the multipart `e` lie in the message.
    fn parts(&self, e: &entity::Entity<'_>, boundary: &str) -> io::Result<Vec<Range<usize>>>;
    /// The bytes of `range`.
    fn bytes(&self, range: Range<usize>) -> io::Result<Cow<'_, [u8]>>;
}

impl Outer for [u8] {
    fn head(&self) -> &[u8] {
        mime::header_block(self)
    }

    fn entity(&self) -> entity::Entity<'_> {
        entity::entity(self)
    }

    fn decoded_body(&self, e: &entity::Entity<'_>) -> io::Result<Vec<u8>> {
        Ok(e.decoded_body())
    }

    fn parts(&self, e: &entity::Entity<'_>, boundary: &str) -> io::Result<Vec<Range<usize>>> {
        // The parts lie inside `self`: their places, not copies.
        let at = |p: &[u8]| p.as_ptr() as usize - self.as_ptr() as usize;
        Ok(entity::parts(e.body, boundary)
            .into_iter()
            .map(|p| at(p)..at(p) + p.len())
            .collect())
    }

    fn bytes(&self, range: Range<usize>) -> io::Result<Cow<'_, [u8]>> {
        Ok(Cow::Borrowed(&self[range]))
    }
}

impl Outer for entity::FileEntity {
    fn head(&self) -> &[u8] {
        entity::FileEntity::head(self)
    }

    fn entity(&self) -> entity::Entity<'_> {
        entity::FileEntity::entity(self)
    }

    fn decoded_body(&self, e: &entity::Entity<'_>) -> io::Result<Vec<u8>> {
        entity::FileEntity::decoded_body(self, e)
    }

    fn parts(&self, _: &entity::Entity<'_>, boundary: &str) -> io::Result<Vec<Range<usize>>> {
        entity::FileEntity::parts(self, boundary)
    }

    fn bytes(&self, range: Range<usize>) -> io::Result<Cow<'_, [u8]>> {
        self.read(range).map(Cow::Owned)
    }
}

/// The S/MIME layer `m` is, if it is one. Fails only when reading a
/// message in a file fails.
fn classify(m: &(impl Outer + ?Sized)) -> io::Result<Option<Layer>> {
    if !names_a_candidate_type(m.head()) {
        return Ok(None);
    }
    let e = m.entity();
    let ct = e.content_type.as_str();
    let p7m = e
        .filename
        .as_deref()
        .is_some_and(|n| n.to_ascii_lowercase().ends_with(".p7m"));
    // `certs-only` is SignedData without a signer: certificates handed
    // over, not a signature (RFC 8551 section 3.6).
    let certs_only = e.smime_type.as_deref() == Some("certs-only");
    if (matches!(ct, "application/pkcs7-mime" | "application/x-pkcs7-mime")
        || (ct == "application/octet-stream" && p7m))
        && !certs_only
    {
        let der = m.decoded_body(&e)?;
        return Ok(match der::content_type(&der) {
            Some(der::Type::Enveloped) => Some(Layer::Enveloped(der)),
            Some(der::Type::Signed) => Some(Layer::Signed {
                der,
                detached: None,
            }),
            None => None,
        });
    }
    let pkcs7_signature = |t: &str| {
        matches!(
            t,
            "application/pkcs7-signature" | "application/x-pkcs7-signature"
        )
    };
    if ct == "multipart/signed" {
        let Some(boundary) = e.boundary.as_deref() else {
            return Ok(None);
        };
        let parts = m.parts(&e, boundary)?;
        let [content, sig, ..] = &parts[..] else {
            return Ok(None);
        };
        let sig = m.bytes(sig.clone())?;
        let sig = entity::entity(&sig);
        // The protocol parameter names the signature's type (RFC 1847);
        // without it, the signature part's own type decides.
        let ours = match e.protocol.as_deref() {
            Some(p) => pkcs7_signature(p),
            None => pkcs7_signature(&sig.content_type),
        };
        if !ours {
            return Ok(None);
        }
        return Ok(Some(Layer::Signed {
            der: sig.decoded_body(),
            detached: Some(content.clone()),
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_headers_naming_a_candidate_type_are_parsed() {
        for head in [
            &b"Content-Type: application/PKCS7-mime; smime-type=enveloped-data\r\n"[..],
            b"Content-Type: application/x-pkcs7-mime\r\n",
            b"Content-Type: multipart/Signed; boundary=x\r\n",
            b"Content-Type: application/octet-stream; name=m.p7m\r\n",
        ] {
            assert!(
                names_a_candidate_type(head),
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
        for head in [
            &b"Content-Type: text/plain\r\nSubject: pkcs\r\n"[..],
            b"Content-Type: multipart/mixed; boundary=x\r\n",
            b"",
            b"octet",
        ] {
            assert!(
                !names_a_candidate_type(head),
                "{:?}",
                String::from_utf8_lossy(head)
            );
            assert!(!may_be_smime(head));
        }
    }

    #[test]
    fn policy_names_and_reasons() {
        for (name, p) in Policy::ALL {
            assert_eq!(p.name(), name);
        }
        let mut f = Facts::default();
        assert_eq!(policy_reason(Policy::Accept, &f, None), None);
        assert!(policy_reason(Policy::RequireSigned, &f, None)
            .is_some_and(|r| r.contains("not signed")));
        f.signed = true;
        f.signature = Signature::Untrusted;
        assert_eq!(policy_reason(Policy::RequireSigned, &f, None), None);
        assert_eq!(
            policy_reason(Policy::RequireValid, &f, Some("expired")).as_deref(),
            Some("smime_policy = require-valid: the signature is untrusted: expired")
        );
        f.signature = Signature::Valid;
        assert_eq!(policy_reason(Policy::RequireValid, &f, None), None);
        assert!(
            Signature::Invalid > Signature::Untrusted && Signature::Untrusted > Signature::Valid
        );
    }

    #[test]
    fn plain_mail_has_no_smime_object() {
        let raw = b"From: a@b\r\nSubject: hi\r\n\r\nhello\r\n";
        let u = unwrap(raw, &Settings::default(), None).unwrap();
        assert!(u.facts.is_none() && u.inner.is_none() && u.quarantine.is_none());
        let strict = Settings::new(Policy::RequireSigned, keys::Files::default());
        assert!(unwrap(raw, &strict, None).unwrap().quarantine.is_some());
    }
}
