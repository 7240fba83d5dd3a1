//! The S/MIME step for a message too big to keep in memory, read from
//! `message.eml` (README, "S/MIME", Memory). Each layer is found from its
//! header block and read from its file: an envelope's or an opaque
//! signature's DER is decoded from the body in bounded chunks (the one big
//! thing held, about three quarters of the message); what a layer holds
//! goes into a file of the entry (`decrypted.eml` or a temporary one), and
//! the next layer, or the innermost message, is read from there. A detached
//! signature is checked over a copy of the signed part in a file, read by
//! OpenSSL as it digests it. The results are those of the in-memory step
//! ([`super::decode_step`]) on the same bytes.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::ffi::Content;
use super::{classify, decrypt, der, policy_reason, verify, Facts, Layer, Settings};
use super::{DECRYPTED_FILE, MAX_LAYERS};
use crate::mime::{self, entity::FileEntity};
use crate::spool;

/// [`super::decode_step`] for the message in the file `path`: `decode`
/// gets the innermost message's file (with `mime`) or the message's own.
/// `None` when the message's header block is too long to tell what it is
/// from its first bytes ([`FileEntity::open`]): the caller reads it whole.
pub fn decode_step_file<F>(
    path: &Path,
    settings: &Settings,
    mime: bool,
    entry: &spool::Entry<'_>,
    decode: F,
) -> io::Result<Option<super::Decoded>>
where
    F: FnOnce(File) -> io::Result<mime::Decoded>,
{
    let Some(outer) = FileEntity::open(File::open(path)?)? else {
        return Ok(None);
    };
    let mut temps = Temps {
        entry,
        made: 0,
        live: Vec::new(),
    };
    let result = (|| -> io::Result<super::Decoded> {
        let u = unwrap(outer, settings, mime, entry, &mut temps)?;
        let decoded = match (&u.inner, mime) {
            (Some(inner), true) => super::inner_decoded(
                decode(File::open(inner)?)?,
                mime::headers_only_file(File::open(path)?)?,
            ),
            // `mime = no`: the facts are recorded, no content is written.
            _ => decode(File::open(path)?)?,
        };
        Ok(super::finish(decoded, u.quarantine, u.facts, entry))
    })();
    // Temporary files never stay in the entry, whatever happened.
    let removed = temps.remove_all();
    let decoded = result?;
    removed?;
    Ok(Some(decoded))
}

/// What unwrapping a message in a file found.
struct Unwrapped {
    facts: Option<Facts>,
    /// The file holding the innermost message, when a layer was removed.
    inner: Option<PathBuf>,
    quarantine: Option<String>,
}

/// [`super::unwrap`] for a message in a file, `outer`.
fn unwrap(
    outer: FileEntity,
    settings: &Settings,
    mime: bool,
    entry: &spool::Entry<'_>,
    temps: &mut Temps<'_, '_>,
) -> io::Result<Unwrapped> {
    let from = crate::mime::entity::from_addresses(outer.head());
    let mut facts = Facts::default();
    let mut errors: Vec<String> = Vec::new();
    let mut layers = 0;
    let mut sealed = false;
    // The file of the current layer; `None` is the message itself.
    let mut cur: Option<PathBuf> = None;
    let mut fe = outer;
    while let Some(layer) = classify(&fe)? {
        if layers == MAX_LAYERS {
            errors.push(format!(
                "more than {MAX_LAYERS} nested S/MIME layers; the rest is left as it is"
            ));
            break;
        }
        layers += 1;
        let next = match layer {
            Layer::Enveloped(der) => {
                facts.encrypted = true;
                let name = temps.name();
                let made = temps.adopt(name.clone());
                let decrypted = entry.dir().join(DECRYPTED_FILE);
                // As in memory, an outer envelope's `decrypted.eml` goes
                // once this one is read; if it is the current layer, its
                // content lives on under a temporary name.
                let replace = || {
                    if !mime {
                        return Ok(());
                    }
                    if cur.as_ref() == Some(&decrypted) {
                        let (moved, _) = temps.create()?;
                        fs::rename(&decrypted, &moved)?;
                        cur = Some(moved);
                        return Ok(());
                    }
                    decrypt::remove_if_there(&decrypted)
                };
                match decrypt::open_into(der, settings.identity(), entry, &name, replace)? {
                    Ok(()) if mime => {
                        facts.decrypted = true;
                        // The innermost envelope's content is the entry's
                        // `decrypted.eml`.
                        fs::rename(&made, &decrypted)?;
                        temps.forget(&made);
                        decrypted
                    }
                    Ok(()) => {
                        facts.decrypted = true;
                        made
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
                let (made, mut file) = temps.create()?;
                let (c, wrote) = match detached {
                    Some(range) => {
                        // The signed part, exactly as received, into its
                        // own file: OpenSSL digests it from there, and it
                        // is the next layer.
                        fe.copy(range, &mut file)?;
                        let content = File::open(&made)?;
                        (
                            verify::check(&der, Some(Content::File(&content)), trust),
                            true,
                        )
                    }
                    None => {
                        // Opaque: checked where the content lies in `der`,
                        // then written out; BER it cannot split is parsed
                        // whole, and OpenSSL hands the content over.
                        let split = der::split_signed(&der);
                        let c = match &split {
                            Some(sp) => verify::check(
                                &sp.head,
                                Some(Content::Bytes(&der[sp.content.clone()])),
                                trust,
                            ),
                            None => verify::check(&der, None, trust),
                        };
                        let content = match (&split, &c.content) {
                            (Some(sp), _) => Some(&der[sp.content.clone()]),
                            (None, Some(content)) => Some(&content[..]),
                            (None, None) => None,
                        };
                        if let Some(content) = content {
                            file.write_all(content)?;
                        }
                        let wrote = content.is_some();
                        (c, wrote)
                    }
                };
                facts.signature = facts.signature.max(c.signature);
                facts.signers.extend(c.signers);
                errors.extend(c.error);
                if !wrote {
                    break;
                }
                made
            }
        };
        if let Some(old) = cur.replace(next) {
            temps.remove(&old)?;
        }
        // What a layer held with a header block too long to read alone
        // (over 1 MiB: an attack, not mail) is left as it is.
        fe = match FileEntity::open(File::open(layer_path(&cur, entry))?)? {
            Some(fe) => fe,
            None => break,
        };
    }
    if layers == 0 {
        return Ok(Unwrapped {
            facts: None,
            inner: None,
            quarantine: policy_reason(settings.policy, &facts, None),
        });
    }
    let quarantine = super::conclude(&mut facts, &from, errors, sealed, settings.policy);
    Ok(Unwrapped {
        facts: Some(facts),
        inner: cur,
        quarantine,
    })
}

/// The file of the current layer.
fn layer_path(cur: &Option<PathBuf>, entry: &spool::Entry<'_>) -> PathBuf {
    cur.clone()
        .unwrap_or_else(|| entry.dir().join("message.eml"))
}

/// The temporary files of the step in the entry: what a signature layer
/// held, or an envelope with `mime = no`. Named `smime-<n>.tmp`; none is
/// left once the step is over.
struct Temps<'e, 's> {
    entry: &'e spool::Entry<'s>,
    made: usize,
    live: Vec<PathBuf>,
}

impl Temps<'_, '_> {
    /// The next name, not yet created.
    fn name(&mut self) -> String {
        self.made += 1;
        format!("smime-{}.tmp", self.made)
    }

    /// `name`, now created by someone else, as one of ours.
    fn adopt(&mut self, name: String) -> PathBuf {
        let p = self.entry.dir().join(name);
        self.live.push(p.clone());
        p
    }

    /// A new temporary file, for writing.
    fn create(&mut self) -> io::Result<(PathBuf, File)> {
        let name = self.name();
        let file = self.entry.create(&name)?;
        Ok((self.adopt(name), file))
    }

    /// `p` is no longer ours (renamed).
    fn forget(&mut self, p: &Path) {
        self.live.retain(|l| l != p);
    }

    /// Removes `p` if it is one of ours.
    fn remove(&mut self, p: &Path) -> io::Result<()> {
        if self.live.iter().any(|l| l == p) {
            self.forget(p);
            fs::remove_file(p)?;
        }
        Ok(())
    }

    fn remove_all(&mut self) -> io::Result<()> {
        for p in std::mem::take(&mut self.live) {
            match fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}
