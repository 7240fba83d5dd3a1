//! One poll of one account: lock, recover, connect, log in, list, drain
//! what is new into the spool, delete, quit.
//!
//! The order is the delivery guarantee (README "Delivery guarantee"): a
//! message is written and fsynced in `tmp/`, journaled as pending, renamed
//! into `new/` (or `quarantine/`), journaled as delivered, and only then
//! `DELE`d; the journal forgets it only after a `+OK` to `QUIT`.
//!
//! The jobs, each in its own module: [`connect`] sets a session up (shared
//! with `--probe`); `listing` turns LIST/UIDL into journal keys; `entry`
//! takes one message through download, decode and staging; `drain` runs the
//! retrieval loop and commits batches; `deletes` is the one queue of DELEs.

mod connect;
mod deletes;
mod drain;
mod entry;
mod listing;
mod mdns;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::auth;
use crate::config::{Account, Delete};
use crate::journal::{self, Journal};
use crate::pop3::{self, Session};
use crate::secret;
use crate::spool::Spool;
use crate::timefmt;
use crate::tls::{self, Stream};

pub use connect::{connect, log_in, open, stls_only, Connected, Opened};
use drain::Drain;
use listing::listing;
pub use mdns::MdnOutcome;

/// What a successful poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Entries published to `new/`.
    pub delivered: u64,
    /// Entries published to `quarantine/`.
    pub quarantined: u64,
    /// Bytes of raw messages published.
    pub bytes: u64,
    /// Messages deleted on the server (committed by QUIT).
    pub deleted: u64,
    /// Messages left on the server because of `max_message_size`.
    pub too_large: u64,
    /// Messages the server refused to send (`-ERR` to RETR), left there.
    pub refused: u64,
    /// The poll stopped early for a shutdown request.
    pub interrupted: bool,
    /// What became of the MDNs owed (README, "Acknowledgments (MDN)").
    pub mdn: MdnOutcome,
}

/// Why a poll failed. Nothing is deleted on the server for a message that
/// was not stored, whatever the error.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Lock or journal.
    State(journal::Error),
    /// The spool directory cannot be created or written.
    Spool {
        /// The path involved.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Another process holds the spool's lock (README, "The spool").
    SpoolInUse {
        /// The spool.
        path: PathBuf,
    },
    /// Less free space than `min_free_space`.
    LowSpace {
        /// The spool.
        path: PathBuf,
        /// Bytes free.
        free: u64,
        /// The configured minimum.
        min: u64,
    },
    /// The password could not be obtained.
    Secret(secret::Error),
    /// Connection or TLS.
    Tls(tls::Error),
    /// `tls = starttls` and the server does not offer STLS.
    StlsNotOffered,
    /// Login.
    Auth(auth::Error),
    /// The POP3 conversation failed.
    Pop3(pop3::Error),
    /// `delete = no` or a duration needs UIDL, and the server lacks it.
    NoUidl,
    /// A shutdown request abandoned a download; nothing was lost.
    Interrupted,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::State(e) => write!(f, "state: {e}"),
            Error::Spool { path, source } if journal::is_no_space(source) => write!(
                f,
                "spool {} is full ({source}); nothing was deleted on the server, will retry",
                path.display()
            ),
            Error::Spool { path, source } => write!(f, "spool {}: {source}", path.display()),
            Error::SpoolInUse { path } => write!(
                f,
                "spool {} is in use by another popspool process; not touching it",
                path.display()
            ),
            Error::LowSpace { path, free, min } => write!(
                f,
                "spool {} has {} free, below min_free_space {}; not downloading until there is room",
                path.display(),
                human(*free),
                human(*min)
            ),
            Error::Secret(e) => write!(f, "password: {e}"),
            Error::Tls(e) => write!(f, "{e}"),
            Error::StlsNotOffered => write!(
                f,
                "tls = starttls but the server does not offer STLS; refusing to continue without TLS"
            ),
            Error::Auth(e) => write!(f, "{e}"),
            Error::Pop3(e) => write!(f, "{e}"),
            Error::Interrupted => write!(f, "download abandoned for shutdown; the message stays on the server"),
            Error::NoUidl => write!(
                f,
                "the server does not support UIDL, which delete = no / delete = <duration> need \
                 to recognise messages already delivered; use delete = yes for this server"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// Whether the same poll may succeed later without anyone changing
    /// anything: network trouble, a busy or temporarily failing server, a
    /// full disk. Wrong credentials, certificates or settings are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Tls(e) => e.is_transient(),
            Error::Auth(e) => e.is_transient(),
            Error::Pop3(e) => e.is_transient(),
            Error::Spool { source, .. } => journal::is_no_space(source),
            Error::State(e) => matches!(e, journal::Error::Locked { .. }) || e.is_no_space(),
            Error::LowSpace { .. } | Error::SpoolInUse { .. } | Error::Interrupted => true,
            Error::Secret(_) | Error::StlsNotOffered | Error::NoUidl => false,
        }
    }

    /// Whether only a person can fix it (credentials refused, no acceptable
    /// mechanism, a server that failed to prove itself): the daemon backs
    /// off at once instead of trying again every `poll_interval`.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::Auth(e) if e.is_permanent())
    }

    /// Whether the failure is the local spool or state directory being
    /// unusable (exit 73), rather than the network or the server.
    pub fn is_local_dir(&self) -> bool {
        match self {
            Error::Spool { source, .. } => !journal::is_no_space(source),
            Error::State(journal::Error::Io { source, .. }) => !journal::is_no_space(source),
            _ => false,
        }
    }
}

fn human(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else {
        format!("{n} bytes")
    }
}

/// What a poll remembers between polls of the same account in one process,
/// so a message left on the server is reported once, not every minute.
#[derive(Debug, Default)]
pub struct Memo {
    reported_too_large: Reported,
    reported_refused: Reported,
    /// After a failed SMTP attempt: failures in a row and when to try
    /// again. A `--once` run starts without it, so it always tries.
    mdn_retry: Option<(u32, std::time::Instant)>,
}

/// Messages already reported, by a 64-bit hash of their tag (see
/// `listing::tag`): 8 bytes each in one sorted Vec, so a mailbox of a
/// million messages over `max_message_size` costs 8 MB, not a String and a
/// hash table entry each. Two tags with one hash would cost a warning,
/// once in 2^64.
#[derive(Debug, Default)]
struct Reported {
    /// Sorted.
    seen: Vec<u64>,
    /// Reported in this poll, merged into `seen` by [`Reported::settle`]
    /// (a tag occurs once in a poll: it names one listed message).
    new: Vec<u64>,
}

impl Reported {
    /// True the first time `tag` is offered.
    fn first(&mut self, tag: &str) -> bool {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        tag.hash(&mut h);
        let h = h.finish();
        if self.seen.binary_search(&h).is_ok() {
            return false;
        }
        self.new.push(h);
        true
    }

    /// Makes this poll's reports part of the sorted memory.
    fn settle(&mut self) {
        if self.new.is_empty() {
            return;
        }
        if self.seen.is_empty() {
            // The first poll's reports become the memory as they are.
            std::mem::swap(&mut self.seen, &mut self.new);
        } else {
            self.seen.append(&mut self.new);
            self.new = Vec::new();
        }
        self.seen.sort_unstable();
        self.seen.dedup();
    }
}

/// Everything `poll` needs besides the account.
pub struct Context<'a> {
    /// `state_dir`.
    pub state_dir: &'a Path,
    /// Set by SIGTERM/SIGINT: finish what is safe, then stop.
    pub stop: &'a AtomicBool,
    /// The TLS connectors and the system trust store decision.
    pub tls: &'a tls::Connectors,
    /// Where a committed batch's lines go out together.
    pub log: crate::logging::Output,
    /// Told of progress during the poll (the service watchdog's keep-alive).
    pub pulse: Option<pop3::Pulse>,
}

/// Poll `acct` once. The outcome counts what was done even when the poll
/// then failed (entries published before a connection dropped).
pub fn poll(acct: &Account, ctx: &Context, memo: &mut Memo) -> (Outcome, Result<(), Error>) {
    let mut out = Outcome::default();
    let r = poll_into(acct, ctx, memo, &mut out);
    (out, r)
}

fn poll_into(
    acct: &Account,
    ctx: &Context,
    memo: &mut Memo,
    out: &mut Outcome,
) -> Result<(), Error> {
    // Test-only fault hook, absent from release builds: the integration
    // tests (which run the debug binary) panic here to prove that a panic
    // outside the MIME decoder ends the process with EX_SOFTWARE and one
    // log line (src/main.rs).
    #[cfg(debug_assertions)]
    if std::env::var_os("POPSPOOL_TEST_PANIC_IN_POLL").is_some() {
        panic!("test fault: POPSPOOL_TEST_PANIC_IN_POLL is set");
    }
    let _lock = journal::lock(ctx.state_dir, &acct.name).map_err(Error::State)?;
    // Held until the poll ends: another process's recovery would remove
    // entries this one has staged in tmp/.
    let spool = Spool::open(&acct.spool).map_err(|source| match source.kind() {
        io::ErrorKind::WouldBlock => Error::SpoolInUse {
            path: acct.spool.clone(),
        },
        _ => Error::Spool {
            path: acct.spool.clone(),
            source,
        },
    })?;
    let identity = journal::identity(&acct.host, &acct.user);
    let mut journal = Journal::open(ctx.state_dir, &acct.name, &identity).map_err(Error::State)?;
    let recovered = journal
        .recover(&spool, timefmt::unix_now())
        .map_err(Error::State)?;
    out.delivered += recovered as u64;
    let r = retrieve(acct, ctx, memo, out, &spool, &mut journal);
    // MDNs go after the POP3 session, whatever became of it: SMTP never
    // holds up retrieval, and an MDN owed is not held up by a POP3
    // server that is down. Not after a journal failure: the journal is
    // what makes them at most once.
    if !matches!(r, Err(Error::State(_))) {
        out.mdn = mdns::send_pending(acct, ctx.state_dir, ctx.tls, &mut journal, memo, ctx.stop);
    }
    r
}

/// The POP3 part of a poll: log in, list, drain, delete, quit.
fn retrieve(
    acct: &Account,
    ctx: &Context,
    memo: &mut Memo,
    out: &mut Outcome,
    spool: &Spool,
    journal: &mut Journal,
) -> Result<(), Error> {
    check_space(spool, acct.min_free_space)?;
    let password = secret::resolve(&acct.secret, acct.timeout).map_err(Error::Secret)?;
    let Opened {
        mut session, caps, ..
    } = open(acct, &password, ctx.tls, ctx.pulse.as_ref())?;
    drop(password);
    let (listed, has_uidl) = listing(&mut session, &caps)?;
    if !has_uidl && acct.delete != Delete::Yes {
        let _ = session.quit();
        return Err(Error::NoUidl);
    }
    // A key the server no longer lists is gone for good. It is forgotten
    // at the end of a successful poll, not now: until then its content hash
    // still recognises a message the server has merely renumbered.
    let gone: Vec<journal::Key> = if has_uidl {
        let present = listed.present();
        journal
            .keys()
            .filter(|k| k.as_uidl().is_some_and(|u| !present.contains(u)))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    log::debug!("{}: {} message(s) on the server", acct.name, listed.len());

    let server = format!("{}:{}", acct.host, acct.port);
    let outbox = mdns::outbox(ctx.state_dir, &acct.name);
    let mut drain = Drain::new(acct, spool, journal, &server, ctx.log, out, &outbox);
    let fetched = drain.fetch_all(&mut session, &listed, caps.pipelining, ctx.stop, memo);
    // Whatever happened, entries already complete in tmp/ are published:
    // that is local work and saves downloading them again.
    let committed = drain.commit();
    let mut deletes = drain.into_deletes();
    // After a failed drain the session may be out of step (an aborted
    // RETR): no QUIT, so the server deletes nothing, and the journal makes
    // the next poll DELE what was delivered.
    if let Err(e) = fetched {
        return abandon(session, journal, e);
    }
    // Without QUIT the server deletes nothing, committed or not.
    committed?;
    if let Err(e) = deletes.send_rest(&mut session, caps.pipelining) {
        return abandon(session, journal, Error::Pop3(e));
    }
    let deleted = deletes.len();
    match session.quit() {
        Ok(()) => {
            out.deleted = deleted as u64;
            let mut keys = deletes.into_keys();
            keys.extend(gone);
            journal.forget(&keys).map_err(Error::State)?;
        }
        Err(e) => return keep_journal(journal, Error::Pop3(e)),
    }
    journal.sync().map_err(Error::State)?;
    journal.maybe_compact().map_err(Error::State)
}

/// Leave a session without QUIT, so the server deletes nothing, keeping
/// what the journal learned; returns `e`.
fn abandon(session: Session<Stream>, journal: &mut Journal, e: Error) -> Result<(), Error> {
    drop(session);
    keep_journal(journal, e)
}

/// Fail with `e`, keeping what the journal learned (after a failed QUIT,
/// or once the session is dropped).
fn keep_journal(journal: &mut Journal, e: Error) -> Result<(), Error> {
    journal.sync().map_err(Error::State)?;
    Err(e)
}

fn check_space(spool: &Spool, min: u64) -> Result<(), Error> {
    if min == 0 {
        return Ok(());
    }
    let free = spool.free_space().map_err(|source| Error::Spool {
        path: spool.root().to_path_buf(),
        source,
    })?;
    if free < min {
        return Err(Error::LowSpace {
            path: spool.root().to_path_buf(),
            free,
            min,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_once_across_polls() {
        let mut r = Reported::default();
        assert!(r.first("u:a") && r.first("#2"));
        r.settle();
        assert!(!r.first("u:a") && !r.first("#2"));
        assert!(r.first("u:b"));
        r.settle();
        assert!(!r.first("u:b") && !r.first("u:a"));
        assert_eq!(r.seen.len(), 3);
        assert!(r.seen.is_sorted() && r.new.is_empty());
    }
}
