//! One poll of one account: connect, log in, download what is new into the
//! spool, commit, delete, quit.
//!
//! The order is the delivery guarantee (spec §4, README "Delivery
//! guarantee"): a message is written and fsynced in `tmp/`, journaled as
//! pending, renamed into `new/` (or `quarantine/`), journaled as delivered,
//! and only then `DELE`d; the journal forgets it only after a `+OK` to
//! `QUIT`. Entries are committed in batches so one round of directory and
//! journal fsyncs covers many messages.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::auth;
use crate::config::{Account, Delete, TlsMode};
use crate::journal::{self, Journal};
use crate::mime;
use crate::pop3::{self, Capabilities, Client, Greeting, Retr, Retrieval, Session};
use crate::secret;
use crate::spool::{self, Dest, Spool};
use crate::timefmt;
use crate::tls::{self, Stream};

/// Commit after this many entries: enough to share the fsyncs of `new/` and
/// the journal, few enough that an interruption re-downloads little.
const BATCH_MESSAGES: usize = 64;
/// ... or after this many bytes, so a batch of large messages does not hold
/// hundreds of megabytes unpublished.
const BATCH_BYTES: u64 = 32 << 20;
/// A server may send a little more than it announced in LIST (some count
/// LF line ends); far more is a broken or hostile server.
const RETR_SLACK_BYTES: u64 = 1 << 20;
/// The slowest transfer rate a response may average before the per-response
/// deadline trips: 4 KiB/s is a poor GPRS link. Each response also gets the
/// full `timeout` on top.
const MIN_RATE_BYTES_PER_SEC: u64 = 4096;
/// A message up to this size is kept in memory while it streams to
/// `message.eml`, so decoding does not read it back. Nearly all mail is far
/// smaller; bigger messages are read back from the page cache, which costs
/// little next to their download. Only one message is in memory at a time.
const TEE_MAX_BYTES: usize = 1 << 20;
/// Free space is checked again once this much has been downloaded since the
/// last check (and before the first message): a statvfs per small message
/// costs ~2% of the work, and 1 MiB past the check is nothing next to
/// `min_free_space` (64 MiB by default).
const SPACE_CHECK_BYTES: u64 = 1 << 20;
/// After a shutdown request, how long to keep reading replies already asked
/// for (pipelined RETRs) so that QUIT can still delete this session's
/// delivered messages; past it the session is abandoned, and the next poll
/// deletes them. Well inside systemd's 90 s stop timeout.
const STOP_DRAIN: Duration = Duration::from_secs(2);

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
            Error::LowSpace { .. } | Error::Interrupted => true,
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
    reported_too_large: HashSet<String>,
    reported_refused: HashSet<String>,
}

/// Everything `poll` needs besides the account.
pub struct Context<'a> {
    /// `state_dir`.
    pub state_dir: &'a Path,
    /// Set by SIGTERM/SIGINT: finish what is safe, then stop.
    pub stop: &'a AtomicBool,
    /// Where a committed batch's lines go out together.
    pub log: crate::logging::Output,
}

/// A logged-in session and what was learned on the way.
pub struct Opened {
    /// TRANSACTION state.
    pub session: Session<Stream>,
    /// CAPA (after STLS, if any).
    pub caps: Capabilities,
    /// The greeting.
    pub greeting: Greeting,
    /// The mechanism that logged in.
    pub mechanism: crate::mechanism::Mechanism,
}

/// A connection secured as the account says, before login.
pub struct Connected {
    /// AUTHORIZATION state.
    pub client: Client<Stream>,
    /// The greeting.
    pub greeting: Greeting,
    /// CAPA (after STLS, if any).
    pub caps: Capabilities,
}

/// Connect and secure the connection as the account says; nothing of the
/// login has been sent yet.
pub fn connect(acct: &Account) -> Result<Connected, Error> {
    let tls_cfg = match acct.tls {
        TlsMode::None => None,
        _ => Some(tls::Tls::new(acct).map_err(Error::Tls)?),
    };
    match connect_with(acct, tls_cfg.as_ref()) {
        Err(Error::Tls(e)) if e.is_verification_failure() => {
            // Read on demand, the system store is its hashed directory; a
            // CA found only in the bundle must still be trusted.
            let whole = tls_cfg.as_ref().and_then(|t| t.whole_store(acct));
            let Some(whole) = whole else {
                return Err(explain_tls(acct, e));
            };
            let whole = whole.map_err(Error::Tls)?;
            let r = connect_with(acct, Some(&whole));
            if r.is_ok() {
                log::warn!(
                    "{}: the server's CA is in the system certificate bundle but not in the \
                     hashed certificate directory; reading the whole bundle from now on \
                     (run update-ca-certificates or c_rehash to fix the directory)",
                    acct.name
                );
            }
            r.map_err(|e| match e {
                Error::Tls(e) => explain_tls(acct, e),
                e => e,
            })
        }
        Err(Error::Tls(e)) => Err(explain_tls(acct, e)),
        r => r,
    }
}

/// [`connect`] with a given TLS configuration; a failed handshake is
/// returned as it is, for the caller to explain.
fn connect_with(acct: &Account, tls_cfg: Option<&tls::Tls>) -> Result<Connected, Error> {
    let tcp =
        tls::connect(&acct.host, acct.port, acct.source_ip, acct.timeout).map_err(Error::Tls)?;
    let stream = match (tls_cfg, acct.tls) {
        (Some(t), TlsMode::Implicit) => t
            .handshake(&acct.host, acct.port, tcp)
            .map_err(Error::Tls)?,
        _ => Stream::Plain(tcp),
    };
    let deadline = Some(acct.timeout * 2);
    let (mut client, greeting) =
        Client::connect_with_deadline(stream, deadline).map_err(Error::Pop3)?;
    let mut caps = client.capa().map_err(Error::Pop3)?;
    if let (Some(t), TlsMode::StartTls) = (tls_cfg, acct.tls) {
        if !caps.stls {
            let _ = client.quit();
            return Err(Error::StlsNotOffered);
        }
        let plain = client.stls().map_err(Error::Pop3)?;
        let tcp = match plain {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(_) => unreachable!("STLS is only offered before TLS"),
        };
        let secured = t
            .handshake(&acct.host, acct.port, tcp)
            .map_err(Error::Tls)?;
        // RFC 2595 section 4: forget the capabilities learned before TLS.
        // The greeting's APOP timestamp is kept: a forged one gains an
        // attacker nothing, since the digest then travels inside TLS.
        client = Client::from_upgraded(secured);
        client.set_response_deadline(deadline);
        caps = client.capa().map_err(Error::Pop3)?;
    }
    Ok(Connected {
        client,
        greeting,
        caps,
    })
}

/// A certificate that did not verify: fetch it over a second, unverified
/// connection that carries nothing else, so the error can say what it is
/// and what to pin or trust. The failed session is never continued.
fn explain_tls(acct: &Account, e: tls::Error) -> Error {
    if !e.is_verification_failure() {
        return Error::Tls(e);
    }
    let cert = tls::inspect(acct, &|tcp| stls_only(acct, tcp)).and_then(|side| side.cert);
    Error::Tls(e.with_presented(cert))
}

/// The plain-text prelude of a side connection: for STLS, greeting and
/// `STLS`; nothing at all for implicit TLS.
pub fn stls_only(acct: &Account, tcp: std::net::TcpStream) -> Option<std::net::TcpStream> {
    if acct.tls != TlsMode::StartTls {
        return Some(tcp);
    }
    let (client, _) = Client::connect(tcp).ok()?;
    client.stls().ok()
}

/// Connect, secure and log in, following the account's policy.
pub fn open(acct: &Account, password: &crate::secret::Password) -> Result<Opened, Error> {
    let Connected {
        client,
        greeting,
        caps,
    } = connect(acct)?;
    let tls_active = client.get_ref().is_tls();
    let mechanism = match auth::choose(acct, &greeting, &caps, tls_active) {
        Ok(m) => m,
        Err(e) => {
            let _ = client.quit();
            return Err(Error::Auth(e));
        }
    };
    let session = auth::login(client, mechanism, acct, password, &greeting).map_err(Error::Auth)?;
    Ok(Opened {
        session,
        caps,
        greeting,
        mechanism,
    })
}

/// One message on the server, as listed.
#[derive(Debug)]
struct Listed {
    n: u32,
    size: u64,
    /// `u:<UIDL>` when the server gave this message a usable, unique UIDL.
    key: Option<journal::Key>,
    uidl: Option<String>,
}

fn listing(
    session: &mut Session<Stream>,
    caps: &Capabilities,
) -> Result<(Vec<Listed>, bool), Error> {
    // A -ERR to UIDL means the server has none (RFC 1939: optional).
    let (list, uidls) = if caps.uidl || caps.raw.is_empty() {
        session
            .list_and_uidl(caps.pipelining)
            .map_err(Error::Pop3)?
    } else {
        (session.list().map_err(Error::Pop3)?, None)
    };
    let has_uidl = uidls.is_some();
    // RFC 1939 section 7: a UIDL is 1 to 70 characters in 0x21..=0x7E;
    // anything else (Uid::Invalid) is no stable identity and never a journal key.
    let uidls = uidls.unwrap_or_default();
    let mut by_n: HashMap<u32, &str> = HashMap::with_capacity(uidls.len());
    let mut seen: HashMap<&str, u32> = HashMap::with_capacity(uidls.len());
    for (n, u) in &uidls {
        if let Some(u) = u.as_valid() {
            *seen.entry(u).or_default() += 1;
            by_n.insert(*n, u);
        }
    }
    let out = list
        .into_iter()
        .map(|(n, size)| {
            let uidl = by_n.remove(&n).map(str::to_string);
            // Two messages with one UIDL: neither can be told apart by it,
            // so both fall back to their content hash.
            let key = uidl
                .as_deref()
                .filter(|u| seen.get(*u) == Some(&1))
                .map(journal::Key::uidl);
            Listed { n, size, key, uidl }
        })
        .collect();
    Ok((out, has_uidl))
}

fn due_for_delete(policy: Delete, delivered_at: u64, now: u64) -> bool {
    match policy {
        Delete::Yes => true,
        Delete::No => false,
        Delete::After(d) => now.saturating_sub(delivered_at) >= d.as_secs(),
    }
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
    let _lock = journal::lock(ctx.state_dir, &acct.name).map_err(Error::State)?;
    let spool_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Spool { path, source }
    };
    let spool = Spool::open(&acct.spool).map_err(spool_err(&acct.spool))?;
    let identity = journal::identity(&acct.host, &acct.user);
    let mut journal = Journal::open(ctx.state_dir, &acct.name, &identity).map_err(Error::State)?;
    let recovered = journal
        .recover(&spool, timefmt::unix_now())
        .map_err(Error::State)?;
    out.delivered += recovered as u64;
    check_space(&spool, acct.min_free_space)?;
    let password = secret::resolve(&acct.secret, acct.timeout).map_err(Error::Secret)?;
    let Opened {
        mut session, caps, ..
    } = open(acct, &password)?;
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
        let present: HashSet<&journal::Key> =
            listed.iter().filter_map(|l| l.key.as_ref()).collect();
        journal
            .keys()
            .filter(|k| k.kind() == journal::KeyKind::Uidl && !present.contains(k))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    log::debug!("{}: {} message(s) on the server", acct.name, listed.len());

    let server = format!("{}:{}", acct.host, acct.port);
    let mut run = Run {
        acct,
        spool: &spool,
        journal: &mut journal,
        server: &server,
        batch: Vec::new(),
        batch_bytes: 0,
        copies: Vec::new(),
        to_delete: Vec::new(),
        dele_sent: 0,
        spare: Vec::new(),
        out,
        log: ctx.log,
    };
    let result = run.fetch_all(&mut session, &listed, caps.pipelining, ctx.stop, memo);
    // Whatever happened, entries already complete in tmp/ are published:
    // that is local work and saves downloading them again.
    let committed = run.commit();
    let numbers = run.unsent_deletes();
    let to_delete = std::mem::take(&mut run.to_delete);
    match (result, committed) {
        (Err(e), _) => {
            // The session may be out of step (an aborted RETR): no QUIT, so
            // no deletion happens; the journal makes the next poll DELE them.
            drop(session);
            journal.sync().map_err(Error::State)?;
            return Err(e);
        }
        (Ok(()), Err(e)) => {
            // Without QUIT the server deletes nothing, committed or not.
            drop(session);
            return Err(e);
        }
        (Ok(()), Ok(())) => {}
    }
    // The last RETR may have stretched the deadline; DELE and QUIT are short.
    session.set_response_deadline(Some(acct.timeout * 2));
    if !numbers.is_empty() {
        if let Err(e) = session.dele_many(&numbers, caps.pipelining) {
            drop(session);
            journal.sync().map_err(Error::State)?;
            return Err(Error::Pop3(e));
        }
    }
    match session.quit() {
        Ok(()) => {
            out.deleted = to_delete.len() as u64;
            let mut keys: Vec<journal::Key> = to_delete.into_iter().map(|(_, k)| k).collect();
            keys.extend(gone);
            journal.forget(&keys).map_err(Error::State)?;
        }
        Err(e) => {
            journal.sync().map_err(Error::State)?;
            return Err(Error::Pop3(e));
        }
    }
    journal.sync().map_err(Error::State)?;
    journal.maybe_compact().map_err(Error::State)
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

struct Staged {
    fact: journal::Fact,
    id: String,
    dest: Dest,
    n: u32,
    bytes: u64,
}

/// A downloaded message, to be decoded into its entry.
struct Job<'s> {
    entry: spool::Entry<'s>,
    fact: journal::Fact,
    n: u32,
    uidl: Option<String>,
    bytes: u64,
    /// The message, if it was small enough to keep ([`TEE_MAX_BYTES`]).
    raw: Option<Vec<u8>>,
}

/// A complete entry, or the failure and the ID of the entry to discard.
type Done = Result<Staged, Box<(String, Error)>>;

/// What a finished download hands over: size, SHA-256 (the journal keeps
/// it to recognise content it has delivered) and the message when kept.
struct Downloaded {
    bytes: u64,
    sha: String,
    raw: Option<Vec<u8>>,
}

struct Run<'a> {
    acct: &'a Account,
    spool: &'a Spool,
    journal: &'a mut Journal,
    server: &'a str,
    batch: Vec<Staged>,
    batch_bytes: u64,
    /// Copies of content staged in `batch`, with their message numbers:
    /// journaled when the batch is.
    copies: Vec<(u32, journal::Fact)>,
    /// (message number, journal key) to DELE once committed.
    to_delete: Vec<(u32, journal::Key)>,
    /// How many of `to_delete` have been sent as DELE already.
    dele_sent: usize,
    /// The last message's buffer, reused for the next: a few KiB per
    /// message is past malloc's per-thread cache, so each fresh one took
    /// its slow path.
    spare: Vec<u8>,
    out: &'a mut Outcome,
    /// Lines of a committed batch go out in one write.
    log: crate::logging::Output,
}

impl<'a> Run<'a> {
    fn fetch_all(
        &mut self,
        session: &mut Session<Stream>,
        listed: &[Listed],
        pipelining: bool,
        stop: &AtomicBool,
        memo: &mut Memo,
    ) -> Result<(), Error> {
        let wanted = self.select(listed, memo);
        if wanted.is_empty() {
            return Ok(());
        }
        self.journal.reserve(wanted.len());
        self.retrieve_all(session, wanted, pipelining, stop, memo)
    }

    /// The listed messages to download: not delivered before (those due
    /// for deletion are queued for DELE instead) and within
    /// `max_message_size` (larger ones are reported once and left).
    fn select<'l>(&mut self, listed: &'l [Listed], memo: &mut Memo) -> Vec<&'l Listed> {
        let now = timefmt::unix_now();
        let mut wanted = Vec::new();
        for m in listed {
            if let Some(key) = &m.key {
                match self.journal.delivered(key) {
                    Some(d) if d.size == m.size => {
                        if due_for_delete(self.acct.delete, d.at, now) {
                            self.to_delete.push((m.n, key.clone()));
                        }
                        continue;
                    }
                    // Same UIDL, another size: the server gave the UIDL of a
                    // message that is gone to a new one. Download it; its
                    // content hash decides whether it is really new.
                    Some(d) => log::warn!(
                        "{}: UIDL of message {} was delivered before as {} bytes, now {}: \
                         treating it as a new message",
                        self.acct.name,
                        m.n,
                        d.size,
                        m.size
                    ),
                    None => {}
                }
            }
            if let Some(max) = self.acct.max_message_size {
                if m.size > max {
                    self.out.too_large += 1;
                    let tag = m
                        .key
                        .clone()
                        .map(String::from)
                        .unwrap_or_else(|| format!("#{}", m.n));
                    if memo.reported_too_large.insert(tag) {
                        log::warn!(
                            "{}: message {} is {} bytes, over max_message_size {max}; left on the server",
                            self.acct.name,
                            m.n,
                            m.size
                        );
                    }
                    continue;
                }
            }
            wanted.push(m);
        }
        wanted
    }

    /// Downloads `wanted` in order (pipelined when the server allows it),
    /// committing in batches and sending each batch's DELEs as soon as it
    /// is committed.
    fn retrieve_all(
        &mut self,
        session: &mut Session<Stream>,
        wanted: Vec<&Listed>,
        pipelining: bool,
        stop: &AtomicBool,
        memo: &mut Memo,
    ) -> Result<(), Error> {
        // RETRs are pipelined when the server allows it (pop3::Retrieval):
        // the server sends the next messages while this one is decoded and
        // written. Each message still streams into its own entry, in order.
        let plan = wanted
            .iter()
            .map(|m| Retr {
                n: m.n,
                size: m.size,
                max_bytes: m.size.saturating_mul(2).saturating_add(RETR_SLACK_BYTES),
                deadline: Some(
                    self.acct.timeout + Duration::from_secs(m.size / MIN_RATE_BYTES_PER_SEC),
                ),
            })
            .collect();
        let mut retrieval = session.retrieve(plan, pipelining).map_err(Error::Pop3)?;
        let mut unchecked = None;
        for m in wanted {
            if stop.load(Ordering::Relaxed) {
                self.out.interrupted = true;
                break;
            }
            let since = unchecked.map_or(u64::MAX, |b: u64| b.saturating_add(m.size));
            if since >= SPACE_CHECK_BYTES {
                check_space(self.spool, self.acct.min_free_space)?;
                unchecked = Some(0);
            }
            unchecked = unchecked.map(|b| b.saturating_add(m.size));
            match self.fetch_one(&mut retrieval, m, stop) {
                Ok(Some(job)) => {
                    let (done, raw) = finish_entry(self.acct, self.server, job);
                    if let Some(raw) = raw {
                        self.spare = raw;
                    }
                    self.take(done)?
                }
                Ok(None) => {}
                // The server refuses this one message (damaged in its store,
                // or deleted by another session): the rest of the mailbox
                // must not wait for it. It stays on the server.
                Err(Error::Pop3(e @ pop3::Error::Server { .. })) => {
                    self.out.refused += 1;
                    let tag = m
                        .key
                        .clone()
                        .map(String::from)
                        .unwrap_or_else(|| format!("#{}", m.n));
                    if memo.reported_refused.insert(tag) {
                        log::warn!(
                            "{}: message {} not retrieved: {e}; left on the server",
                            self.acct.name,
                            m.n
                        );
                    }
                }
                Err(e) => return Err(e),
            }
            if self.batch.len() >= BATCH_MESSAGES || self.batch_bytes >= BATCH_BYTES {
                self.commit()?;
                // Committed: their DELEs travel among the RETRs still
                // coming, so the server does that work now, not at the end.
                let unsent = self.unsent_deletes();
                self.dele_sent += retrieval.delete(&unsent).map_err(Error::Pop3)?;
            }
        }
        if self.out.interrupted {
            // Read what was already asked for, for a little while, so QUIT
            // can still delete what this session delivered.
            return retrieval
                .finish(Some(STOP_DRAIN))
                .map_err(|_| Error::Interrupted);
        }
        retrieval.finish(None).map_err(Error::Pop3)
    }

    /// Message numbers of `to_delete` not sent as DELE yet.
    fn unsent_deletes(&self) -> Vec<u32> {
        self.to_delete[self.dele_sent..]
            .iter()
            .map(|(n, _)| *n)
            .collect()
    }

    /// A decoded entry is staged; a failed one is discarded.
    fn take(&mut self, done: Done) -> Result<(), Error> {
        match done {
            Ok(staged) => {
                self.batch_bytes += staged.bytes;
                self.batch.push(staged);
                Ok(())
            }
            Err(failed) => {
                let (id, e) = *failed;
                let _ = self.spool.discard(&id);
                Err(e)
            }
        }
    }

    /// Downloads the next message into a new entry; returns it for decoding,
    /// or `None` when it was delivered before (and is dropped).
    fn fetch_one(
        &mut self,
        retrieval: &mut Retrieval<'_, Stream>,
        m: &Listed,
        stop: &AtomicBool,
    ) -> Result<Option<Job<'a>>, Error> {
        let entry = self
            .spool
            .begin(spool::new_id())
            .map_err(|source| Error::Spool {
                path: self.spool.root().join("tmp"),
                source,
            })?;
        let spare = std::mem::take(&mut self.spare);
        let got = match download(retrieval, m, stop, &entry, spare) {
            Ok(v) => v,
            Err(e) => {
                let _ = self.spool.discard(entry.id());
                return Err(e);
            }
        };
        let fact = journal::Fact {
            key: m
                .key
                .clone()
                .unwrap_or_else(|| journal::Key::hash(&got.sha)),
            size: m.size,
            hash: got.sha,
        };
        // The batch is short (BATCH_MESSAGES): a scan costs less than
        // keeping a set of its keys and hashes.
        let in_batch = self
            .batch
            .iter()
            .any(|s| s.fact.key == fact.key || s.fact.hash == fact.hash);
        if in_batch || self.journal.has_hash(&fact.hash) {
            // This content was delivered before: a server without UIDL that
            // kept the message after an interrupted QUIT, or one that
            // renumbered its UIDLs. Never twice; remember the new key.
            log::info!(
                "{}: message {} was already delivered; not delivering it again",
                self.acct.name,
                m.n
            );
            let _ = self.spool.discard(entry.id());
            if in_batch {
                // Its twin is not journaled yet: the copy is recorded with
                // the twin's batch, never before it.
                self.copies.push((m.n, fact));
            } else {
                self.record_copies(vec![(m.n, fact)], timefmt::unix_now())?;
            }
            return Ok(None);
        }
        Ok(Some(Job {
            entry,
            fact,
            n: m.n,
            uidl: m.uidl.clone(),
            bytes: got.bytes,
            raw: got.raw,
        }))
    }

    /// Journal server copies of delivered content as delivered under their
    /// own keys, and queue them for DELE when `delete = yes`: left alone,
    /// a copy would be downloaded again once its twin's key is forgotten.
    fn record_copies(&mut self, copies: Vec<(u32, journal::Fact)>, now: u64) -> Result<(), Error> {
        let facts: Vec<&journal::Fact> = copies.iter().map(|(_, f)| f).collect();
        self.journal
            .mark_delivered(&facts, now)
            .map_err(Error::State)?;
        if self.acct.delete == Delete::Yes {
            self.to_delete
                .extend(copies.into_iter().map(|(n, f)| (n, f.key)));
        }
        Ok(())
    }

    /// Publish the staged batch: the entries and tmp/ made durable (one
    /// round of syncs for all of them), pending records, renames,
    /// destination fsyncs, delivered records. Then the batch may be deleted.
    fn commit(&mut self) -> Result<(), Error> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let spool_err = |source| Error::Spool {
            path: self.spool.root().to_path_buf(),
            source,
        };
        let ids: Vec<&str> = self.batch.iter().map(|s| s.id.as_str()).collect();
        self.spool.make_durable(&ids).map_err(spool_err)?;
        let now = timefmt::unix_now();
        let items: Vec<(&journal::Fact, &str, Dest)> = self
            .batch
            .iter()
            .map(|s| (&s.fact, s.id.as_str(), s.dest))
            .collect();
        self.journal
            .add_pending(&items, now)
            .map_err(Error::State)?;
        let mut dests = HashSet::new();
        for s in &self.batch {
            self.spool.publish(&s.id, s.dest).map_err(spool_err)?;
            dests.insert(s.dest);
        }
        for d in dests {
            self.spool.sync_dest(d).map_err(spool_err)?;
        }
        let facts: Vec<&journal::Fact> = self.batch.iter().map(|s| &s.fact).collect();
        self.journal
            .mark_delivered(&facts, now)
            .map_err(Error::State)?;
        // One write for the batch's lines (see logging.rs).
        let _batch = self.log.batch();
        for s in self.batch.drain(..) {
            log::info!(
                "{}: message {} ({} bytes) delivered to {}/{}",
                self.acct.name,
                s.n,
                s.bytes,
                s.dest.dir_name(),
                s.id
            );
            self.out.bytes += s.bytes;
            match s.dest {
                Dest::New => self.out.delivered += 1,
                Dest::Quarantine => self.out.quarantined += 1,
            }
            if due_for_delete(self.acct.delete, now, now) {
                self.to_delete.push((s.n, s.fact.key));
            }
        }
        self.batch_bytes = 0;
        let copies = std::mem::take(&mut self.copies);
        self.record_copies(copies, now)
    }
}

/// The next RETR straight into `message.eml`, and its SHA-256.
fn download(
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
fn finish_entry(acct: &Account, server: &str, job: Job<'_>) -> (Done, Option<Vec<u8>>) {
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
        let raw = match raw {
            Some(raw) => kept.insert(raw),
            None => &fs::read(entry.dir().join("message.eml")).map_err(fail)?,
        };
        let decoded = decode(raw, acct, &entry).map_err(fail)?;
        let meta = Meta {
            version: 1,
            id: entry.id(),
            account: &acct.name,
            uidl: uidl.as_deref(),
            size: bytes,
            server,
            retrieved_at: timefmt::rfc3339(timefmt::unix_now()),
            decoded: &decoded,
            smime: None,
            quarantine: decoded.quarantine.as_deref(),
        };
        // Sized for a typical meta.json, so it is not grown step by step.
        let mut json = Vec::with_capacity(META_JSON_BYTES);
        serde_json::to_writer_pretty(&mut json, &meta).map_err(|e| fail(io::Error::other(e)))?;
        json.push(b'\n');
        // meta.json last: its presence means the entry is complete.
        entry.write_file("meta.json", &json).map_err(fail)?;
        Ok(if decoded.quarantine.is_some() {
            Dest::Quarantine
        } else {
            Dest::New
        })
    })();
    let id = entry.into_id();
    let done = match result {
        Ok(dest) => Ok(Staged {
            fact,
            id,
            dest,
            n,
            bytes,
        }),
        Err(e) => Err(Box::new((id, e))),
    };
    (done, kept)
}

/// A meta.json with a few headers and no attachments is about 1.2 KiB.
const META_JSON_BYTES: usize = 2048;

/// Decode with a last line of defence: a panic inside the MIME code must
/// not stop the mailbox; the message is still delivered raw.
fn decode(raw: &[u8], acct: &Account, entry: &spool::Entry<'_>) -> io::Result<mime::Decoded> {
    if !acct.mime {
        return Ok(mime::headers_only(raw));
    }
    let opts = mime::Options {
        body_part_index: acct.body_part_index,
        body_part_content_type: acct.body_part_content_type.clone(),
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        mime::decode_into(raw, &opts, entry)
    })) {
        Ok(r) => r,
        Err(_) => {
            log::error!("MIME decoder failed on a message; delivering it raw");
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
            let mut d = mime::headers_only(raw);
            d.kind = mime::Kind::Undecodable;
            d.problems
                .push("internal error in the MIME decoder; the message is delivered raw".into());
            Ok(d)
        }
    }
}

#[derive(Serialize)]
struct Meta<'a> {
    version: u32,
    id: &'a str,
    account: &'a str,
    uidl: Option<&'a str>,
    size: u64,
    server: &'a str,
    retrieved_at: String,
    #[serde(flatten)]
    decoded: &'a mime::Decoded,
    smime: Option<()>,
    /// Why the entry is in `quarantine/` (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    quarantine: Option<&'a str>,
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

/// Write buffer once a message is too big to keep: few system calls, little memory.
const SINK_BUF_BYTES: usize = 64 << 10;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_policy() {
        assert!(due_for_delete(Delete::Yes, 100, 100));
        assert!(!due_for_delete(Delete::No, 0, u64::MAX));
        let week = Delete::After(Duration::from_secs(7 * 86400));
        assert!(!due_for_delete(week, 1000, 1000 + 7 * 86400 - 1));
        assert!(due_for_delete(week, 1000, 1000 + 7 * 86400));
    }
}
