//! One message into its spool entry, the stages of the entry pipeline:
//!
//! 1. **download**: the next RETR streams into `message.eml` in `tmp/`,
//!    hashed on the way (the journal recognises delivered content by it);
//! 2. **decode**: the message's structure into the entry (body,
//!    attachments, report), inside a guard so that a panic in the decoder
//!    delivers the message raw instead of stopping the mailbox. Steps that
//!    transform the message before MIME decoding (unwrapping S/MIME) belong
//!    in [`decode`], inside the same guard;
//! 3. **stage**: `meta.json` is written last; the entry is complete in
//!    `tmp/` and waits for its batch's commit (see the `drain` module, which
//!    also runs what happens once an entry is durable).

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::Account;
use crate::journal;
use crate::meta::{self, Meta};
use crate::mime;
use crate::pop3::Retrieval;
use crate::smime;
use crate::spool::{self, Dest};
use crate::timefmt;
use crate::tls::Stream;

use super::listing::Listed;
use super::Error;

/// A message up to this size is kept in memory while it streams to
/// `message.eml`, so decoding does not read it back. Nearly all mail is far
/// smaller; bigger messages are decoded from `message.eml` in bounded
/// chunks (from the page cache, which costs little next to their download),
/// so memory does not grow with them. Only one message is in memory at a
/// time.
const TEE_MAX_BYTES: usize = 1 << 20;

/// Write buffer once a message is too big to keep: few system calls, little memory.
const SINK_BUF_BYTES: usize = 64 << 10;

/// A complete entry in `tmp/`, waiting for its batch's commit.
pub(super) struct Staged {
    /// What the journal records for it.
    pub fact: journal::Fact,
    /// The entry's ID.
    pub id: String,
    /// `new/`, or `quarantine/` when the decoder says so.
    pub dest: Dest,
    /// Its message number in this session.
    pub n: u32,
    /// Bytes of `message.eml`.
    pub bytes: u64,
    /// The MDN owed once the entry is durable (`mdn = auto`).
    pub mdn: Option<crate::mdn::Owed>,
}

/// A downloaded message, to be decoded into its entry.
pub(super) struct Job<'s> {
    /// The entry in `tmp/`, holding `message.eml`.
    pub entry: spool::Entry<'s>,
    /// What the journal will record for it.
    pub fact: journal::Fact,
    /// Its message number in this session.
    pub n: u32,
    /// Its UIDL, for `meta.json`.
    pub uidl: Option<String>,
    /// Bytes downloaded.
    pub bytes: u64,
    /// The message, if it was small enough to keep ([`TEE_MAX_BYTES`]).
    pub raw: Option<Vec<u8>>,
}

/// A complete entry, or the failure and the ID of the entry to discard.
pub(super) type Done = Result<Staged, Box<(String, Error)>>;

/// What a finished download hands over: size, SHA-256 (the journal keeps
/// it to recognise content it has delivered) and the message when kept.
pub(super) struct Downloaded {
    /// Bytes written to `message.eml`.
    pub bytes: u64,
    /// SHA-256 of them, hex.
    pub sha: String,
    /// The message, when kept ([`TEE_MAX_BYTES`]).
    pub raw: Option<Vec<u8>>,
}

/// The next RETR straight into `message.eml`, and its SHA-256.
pub(super) fn download(
    retrieval: &mut Retrieval<'_, Stream>,
    m: &Listed,
    stop: &AtomicBool,
    entry: &spool::Entry<'_>,
    mut buf: Vec<u8>,
) -> Result<Downloaded, Error> {
    let path = || entry.dir().join("message.eml");
    let file = entry.create("message.eml").map_err(|source| Error::Spool {
        path: path(),
        source,
    })?;
    let expect = usize::try_from(m.size).unwrap_or(usize::MAX);
    buf.clear();
    buf.reserve(expect.saturating_add(64).min(TEE_MAX_BYTES));
    let mut sink = Sink {
        file,
        buf,
        written: 0,
        tee: true,
        hasher: openssl::sha::Sha256::new(),
        stop,
        local: None,
    };
    let bytes = match (retrieval.read_next(&mut sink), sink.local.take()) {
        (Ok(b), _) => b,
        // The failure was on our side of the sink: the disk, or a shutdown.
        (Err(_), Some(Local::Stopped)) => return Err(Error::Interrupted),
        (Err(_), Some(Local::Io(source))) => {
            return Err(Error::Spool {
                path: path(),
                source,
            })
        }
        (Err(e), None) => return Err(Error::Pop3(e)),
    };
    // Not synced here: the batch is made durable at once in commit().
    sink.flush().map_err(|source| Error::Spool {
        path: path(),
        source,
    })?;
    let Sink {
        buf, tee, hasher, ..
    } = sink;
    Ok(Downloaded {
        bytes,
        sha: crate::hex::lower(&hasher.finish()),
        raw: tee.then_some(buf),
    })
}

/// Decode and write meta.json; the entry is then complete in `tmp/`, and
/// made durable with its batch in [`Run::commit`]. Hands the message's
/// buffer back for reuse.
pub(super) fn finish_entry(acct: &Account, server: &str, job: Job<'_>) -> (Done, Option<Vec<u8>>) {
    let Job {
        entry,
        fact,
        n,
        uidl,
        bytes,
        raw,
    } = job;
    let fail = |source: io::Error| Error::Spool {
        path: entry.dir(),
        source,
    };
    let mut kept = None;
    let result = (|| {
        let on_disk = entry.dir().join("message.eml");
        let message = match raw {
            Some(raw) if !from_file_for_tests() => Message::Kept(kept.insert(raw)),
            Some(raw) => {
                kept = Some(raw);
                Message::OnDisk(&on_disk)
            }
            None => Message::OnDisk(&on_disk),
        };
        let (decoded, smime) = decode(message, acct, &entry).map_err(fail)?;
        let meta = Meta {
            version: meta::VERSION,
            id: entry.id(),
            account: &acct.name,
            uidl: uidl.as_deref(),
            size: bytes,
            server,
            retrieved_at: timefmt::rfc3339(timefmt::unix_now()),
            decoded: &decoded,
            smime: smime.as_ref(),
            quarantine: decoded.quarantine.as_deref(),
        };
        let json = meta.to_json().map_err(|e| fail(io::Error::other(e)))?;
        // meta.json last: its presence means the entry is complete.
        entry.write_file("meta.json", &json).map_err(fail)?;
        let mdn = owed_mdn(acct, &decoded, message, entry.id()).map_err(fail)?;
        let dest = if decoded.quarantine.is_some() {
            Dest::Quarantine
        } else {
            Dest::New
        };
        Ok((dest, mdn))
    })();
    let id = entry.into_id();
    let done = match result {
        Ok((dest, mdn)) => Ok(Staged {
            fact,
            id,
            dest,
            n,
            bytes,
            mdn,
        }),
        Err(e) => Err(Box::new((id, e))),
    };
    (done, kept)
}

/// The MDN this message asks for, if one is owed (`mdn = auto`). It needs
/// only the header block: a message on disk is not read whole for it.
fn owed_mdn(
    acct: &Account,
    decoded: &mime::Decoded,
    message: Message<'_>,
    id: &str,
) -> io::Result<Option<crate::mdn::Owed>> {
    if acct.mdn != crate::config::MdnMode::Auto {
        return Ok(None);
    }
    let prefix;
    let raw = match message {
        Message::Kept(raw) => raw,
        Message::OnDisk(path) => {
            // A header block longer than what an MDN attaches is cut off
            // here, and then too long to attach: nothing else uses it.
            let limit = crate::mdn::MAX_ATTACHED_HEADER_BYTES as u64 + 2;
            let mut buf = Vec::new();
            io::Read::read_to_end(&mut io::Read::take(fs::File::open(path)?, limit), &mut buf)?;
            prefix = buf;
            &prefix
        }
    };
    Ok(super::mdns::owed(acct, decoded, raw, id))
}

/// Test-only hook, constant false in release builds: the integration
/// tests (which run the debug binary) have every message decoded from its
/// file, as a big one is, to show that both ways give the same entry.
fn from_file_for_tests() -> bool {
    cfg!(debug_assertions) && std::env::var_os("POPSPOOL_TEST_DECODE_FROM_FILE").is_some()
}

/// The message to decode: kept in memory, or only in its file.
#[derive(Clone, Copy)]
enum Message<'a> {
    Kept(&'a [u8]),
    /// `message.eml`, read in bounded chunks.
    OnDisk(&'a Path),
}

/// The decode stage, with a last line of defence: a panic inside it must
/// not stop the mailbox; the message is still delivered raw.
fn decode(message: Message<'_>, acct: &Account, entry: &spool::Entry<'_>) -> io::Result<Decoded> {
    let guarded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_steps(message, acct, entry)
    }));
    match guarded {
        Ok(r) => r,
        Err(payload) => {
            // The panic hook (src/main.rs) prints nothing; this line is
            // the panic's one report.
            log::error!(
                "MIME decoder failed on a message (panic: {}); delivering it raw",
                crate::logging::panic_message(&*payload)
            );
            for e in fs::read_dir(entry.dir())?.flatten() {
                let name = e.file_name();
                if name != "message.eml" {
                    let p = e.path();
                    if p.is_dir() {
                        fs::remove_dir_all(&p)?;
                    } else {
                        fs::remove_file(&p)?;
                    }
                }
            }
            let mut raw_only = undecodable();
            if acct.smime.policy != smime::Policy::Accept {
                // The policy could not be checked: not let through to new/.
                raw_only.quarantine = Some(format!(
                    "smime_policy = {}: the message could not be checked \
                     (internal error in the decoder)",
                    acct.smime.policy.name()
                ));
            }
            Ok((raw_only, None))
        }
    }
}

/// What `meta.json` says of a message the decoder panicked on. Built
/// without looking at the message: parsing its headers again here, outside
/// the guard, could panic the same way and stop the mailbox after all.
fn undecodable() -> mime::Decoded {
    mime::Decoded {
        headers: mime::Headers::default(),
        kind: mime::Kind::Undecodable,
        body: None,
        attachments: Vec::new(),
        report: None,
        problems: vec!["internal error in the MIME decoder; the message is delivered raw".into()],
        quarantine: None,
        files: Vec::new(),
        dirs: Vec::new(),
    }
}

/// What the decode stage makes of a message: the decoder's result and the
/// S/MIME facts (`None` for a message without S/MIME).
type Decoded = (mime::Decoded, Option<smime::Facts>);

/// What decoding does to one message, in order: S/MIME layers are
/// unwrapped (README, "S/MIME"); then, with `mime = no`, only the headers
/// are read; otherwise the (innermost) message's MIME structure is decoded
/// into the entry. A message only on disk is decoded from its file in
/// bounded chunks, S/MIME layers included (README, "S/MIME", Memory).
fn decode_steps(
    message: Message<'_>,
    acct: &Account,
    entry: &spool::Entry<'_>,
) -> io::Result<Decoded> {
    // Test-only fault hook, absent from release builds: the integration
    // tests (which run the debug binary) make the decoder panic on every
    // message to prove that the guard in [`decode`] delivers it raw.
    #[cfg(debug_assertions)]
    if std::env::var_os("POPSPOOL_TEST_PANIC_IN_DECODER").is_some() {
        panic!("test fault: POPSPOOL_TEST_PANIC_IN_DECODER is set");
    }
    let opts = mime::Options {
        body_part_index: acct.body_part_index,
        body_part_content_type: acct.body_part_content_type.clone(),
    };
    let decode_kept = |raw: &[u8]| {
        if !acct.mime {
            return Ok(mime::headers_only(raw));
        }
        mime::decode_into(raw, &opts, entry)
    };
    let path = match message {
        Message::Kept(raw) => {
            return smime::decode_step(raw, &acct.smime, acct.mime, entry, decode_kept)
        }
        Message::OnDisk(path) => path,
    };
    let file = fs::File::open(path)?;
    let head = head_of(&file)?;
    if smime::may_be_smime(&head) {
        // Unwrapped from the file, each layer's content into a file of its
        // own, and the innermost message decoded from there.
        let decode_file = |file| {
            if !acct.mime {
                return mime::headers_only_file(file);
            }
            mime::decode_file_into(file, &opts, entry)
        };
        if let Some(d) = smime::decode_step_file(path, &acct.smime, acct.mime, entry, decode_file)?
        {
            return Ok(d);
        }
        // A header block too long to tell what the message is from its
        // first bytes (an attack, not mail): read whole.
        let raw = fs::read(path)?;
        return smime::decode_step(&raw, &acct.smime, acct.mime, entry, decode_kept);
    }
    // Not S/MIME at its top: the step applies the policy, which the header
    // decides, and the message is decoded from its file.
    smime::decode_step(&head, &acct.smime, acct.mime, entry, |_| {
        if !acct.mime {
            return mime::headers_only_file(file);
        }
        mime::decode_file_into(file, &opts, entry)
    })
}

/// The first bytes of a message on disk: its header block, unless that is
/// longer than [`mime::MAX_HEADER_BYTES`].
fn head_of(file: &fs::File) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::new();
    file.take(mime::MAX_HEADER_BYTES as u64)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// Where RETR writes: the file, through `buf`, which also keeps the whole
/// message (`tee`) until it passes [`TEE_MAX_BYTES`] and is from then on
/// only a write buffer; a SHA-256 when the message needs one; and a
/// shutdown check so SIGTERM abandons a long download promptly (the message
/// stays on the server and is fetched again next time). A failure on this
/// side is kept in `local`, so it is not mistaken for the server's.
struct Sink<'a> {
    file: fs::File,
    buf: Vec<u8>,
    /// Bytes of a kept `buf` already in the file.
    written: usize,
    tee: bool,
    hasher: openssl::sha::Sha256,
    stop: &'a AtomicBool,
    local: Option<Local>,
}

impl Sink<'_> {
    /// Writes out `buf`; a kept message stays in it.
    fn write_out(&mut self) -> io::Result<()> {
        self.file.write_all(&self.buf[self.written..])?;
        if self.tee {
            self.written = self.buf.len();
        } else {
            self.buf.clear();
        }
        Ok(())
    }

    fn keep_error(&mut self, e: io::Error) -> io::Error {
        let copy = match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(e.kind(), e.to_string()),
        };
        self.local = Some(Local::Io(copy));
        e
    }
}

enum Local {
    Stopped,
    Io(io::Error),
}

impl Write for Sink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            self.local = Some(Local::Stopped);
            return Err(io::Error::other("shutdown requested"));
        }
        if self.tee && self.buf.len() + data.len() > TEE_MAX_BYTES {
            // Too big to keep: write out what we have, stream from here on.
            if let Err(e) = self.write_out() {
                return Err(self.keep_error(e));
            }
            self.tee = false;
            self.written = 0;
            self.buf = Vec::with_capacity(SINK_BUF_BYTES);
        }
        self.buf.extend_from_slice(data);
        if !self.tee && self.buf.len() >= SINK_BUF_BYTES {
            if let Err(e) = self.write_out() {
                return Err(self.keep_error(e));
            }
        }
        self.hasher.update(data);
        Ok(data.len())
    }

    /// Writes out what is buffered (the whole message, if it was kept).
    fn flush(&mut self) -> io::Result<()> {
        match self.write_out() {
            Ok(()) => Ok(()),
            Err(e) => Err(self.keep_error(e)),
        }
    }
}
