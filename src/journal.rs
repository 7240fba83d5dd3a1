//! The per-account delivery journal and lock in `state_dir`.
//!
//! The journal is what makes delivery exactly-once. It is an append-only
//! text file, one record per line:
//!
//! ```text
//! popspool-journal 2 <identity>                    header: hash of host and user
//! P <key> <id> <dest> <time> <size> <sha256>       entry <id> is complete and durable in tmp/, about to go to <dest>
//! D <key> <time> <size> <sha256>                   the message <key> is published (since <time>)
//! F <key>                                          forget <key>: it is gone from the server
//! M <id> <state> <time> <rcpt>                     the MDN for entry <id>, to <rcpt> (see below)
//! ```
//!
//! `<key>` is a [`Key`]: `u:<UIDL>` or, when the server has no usable UIDL
//! for a message, `h:<SHA-256 of the message>`. `<size>` is the size the server
//! listed, `<sha256>` the hash of what was stored: together they recognise a
//! UIDL the server gave to a different message (the size differs) and a
//! message the server renumbered (its content is already delivered). A `P`
//! record is fsynced after the entry and `tmp/` are durable and before the
//! rename; on start-up a `P`
//! without `D` is settled by looking at `tmp/<id>`: still there means the
//! rename never happened (finish it now), gone means it did. Either way the
//! message is delivered once, and only a delivered message is ever deleted
//! from the server. A consumer emptying `new/` changes nothing here.
//!
//! MDNs (README, "Acknowledgments (MDN)") are keyed by entry ID, which no
//! other message ever gets, and outlive the message's own records. An
//! `M <id> pending` goes into the same fsynced append as the entry's `P`,
//! after it, so an MDN is owed only for an entry that is published. Before
//! the final `.` of DATA an `M <id> sending` is fsynced: found at start-up,
//! it means the MDN may or may not have gone out, and it becomes `unsure`
//! and is never sent again (at most once). `sent`, `failed` (refused for
//! good) and `unsure` are final and dropped at the next compaction.
//! Journals written before MDNs existed have no `M` lines and load as they
//! are.
//!
//! A torn last line (a crash mid-append) is ignored: the append's fsync never
//! returned, so nothing that depends on it happened. The file is rewritten
//! from memory (atomically) once dead records outnumber live ones, so it
//! stays proportional to the mailbox.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::fsafe;
use crate::spool::{self, Dest, Spool};

const MAGIC: &str = "popspool-journal 2";
const STATE_MODE: u32 = 0o600;
/// Compact when the file holds this many more lines than live records; a
/// floor keeps small mailboxes from rewriting the file on every poll.
const COMPACT_SLACK: usize = 1024;

/// A failure reading or writing the journal or the lock.
#[derive(Debug)]
pub enum Error {
    /// I/O on a state file.
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// A record in the middle of the file cannot be read.
    Damaged {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// Another popspool process holds the account.
    Locked {
        /// The lock file.
        path: PathBuf,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Damaged { path, line } => write!(
                f,
                "{}:{line}: journal record damaged; move the file aside to start over \
                 (messages still on the server may then be delivered again)",
                path.display()
            ),
            Error::Locked { path } => write!(
                f,
                "account is being polled by another popspool process (lock {})",
                path.display()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    /// Whether the underlying failure is the disk being full.
    pub fn is_no_space(&self) -> bool {
        matches!(self, Error::Io { source, .. } if is_no_space(source))
    }
}

/// ENOSPC or EDQUOT.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An exclusive hold on one account, released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Take the account's lock without waiting.
pub fn lock(state_dir: &Path, account: &str) -> Result<Lock, Error> {
    let path = state_dir.join(format!("{account}.lock"));
    let flags = libc::O_WRONLY | libc::O_CREAT;
    let file = fsafe::open_regular(&path, flags, STATE_MODE).map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(Lock { _file: file }),
        Err(fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(fs::TryLockError::Error(e)) => Err(Error::Io { path, source: e }),
    }
}

/// What the journal knows about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Pending { id: String, dest: Dest },
    Delivered,
}

#[derive(Debug, Clone)]
struct Record {
    state: State,
    time: u64,
    size: u64,
    hash: String,
}

/// How the journal names a message: by the server's UIDL, or by its content
/// when the server gave it no usable one. Held in its on-disk form
/// (`u:<UIDL>`, `h:<sha256>`), which is also its order in a compacted file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

/// What a [`Key`] is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A UIDL, unique on the server when the key was made.
    Uidl,
    /// The SHA-256 of the message, lowercase hex.
    Hash,
}

const UIDL_PREFIX: &str = "u:";
const HASH_PREFIX: &str = "h:";

impl Key {
    /// The key of a message with a usable, unique UIDL.
    pub fn uidl(uidl: &str) -> Key {
        Key(format!("{UIDL_PREFIX}{uidl}"))
    }

    /// The key of a message known by its content (lowercase hex SHA-256).
    pub fn hash(sha256_hex: &str) -> Key {
        Key(format!("{HASH_PREFIX}{sha256_hex}"))
    }

    /// A key as written in the journal; `None` for anything popspool never
    /// writes.
    fn parse(s: &str) -> Option<Key> {
        let rest = s
            .strip_prefix(UIDL_PREFIX)
            .or_else(|| s.strip_prefix(HASH_PREFIX))?;
        (!rest.is_empty()).then(|| Key(s.to_string()))
    }

    /// What the key is made from.
    pub fn kind(&self) -> KeyKind {
        if self.0.starts_with(UIDL_PREFIX) {
            KeyKind::Uidl
        } else {
            KeyKind::Hash
        }
    }

    /// The on-disk form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The UIDL, for a key made from one.
    pub fn as_uidl(&self) -> Option<&str> {
        self.0.strip_prefix(UIDL_PREFIX)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Key> for String {
    fn from(k: Key) -> String {
        k.0
    }
}

/// A message as the journal identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    /// Its key.
    pub key: Key,
    /// The size the server listed.
    pub size: u64,
    /// SHA-256 of the stored message, lowercase hex.
    pub hash: String,
}

/// What the journal knows of a delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Unix time of delivery.
    pub at: u64,
    /// The size the server listed then.
    pub size: u64,
}

/// Where an entry's MDN stands (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MdnState {
    /// Owed and not yet sent.
    Pending,
    /// The final `.` of DATA is about to go (or went) out.
    Sending,
    /// The SMTP server took it.
    Sent,
    /// Refused for good (5xx); never retried.
    Failed,
    /// Interrupted while sending: it may have gone out; never retried.
    Unsure,
}

impl MdnState {
    const ALL: [(MdnState, &'static str); 5] = [
        (MdnState::Pending, "pending"),
        (MdnState::Sending, "sending"),
        (MdnState::Sent, "sent"),
        (MdnState::Failed, "failed"),
        (MdnState::Unsure, "unsure"),
    ];

    fn name(self) -> &'static str {
        MdnState::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("pending", |(_, n)| n)
    }

    fn from_name(n: &str) -> Option<MdnState> {
        MdnState::ALL
            .iter()
            .find(|(_, name)| *name == n)
            .map(|(s, _)| *s)
    }

    /// Whether nothing more will ever be done about it.
    fn is_final(self) -> bool {
        matches!(self, MdnState::Sent | MdnState::Failed | MdnState::Unsure)
    }
}

#[derive(Debug, Clone)]
struct MdnRecord {
    state: MdnState,
    time: u64,
    rcpt: String,
}

/// One account's journal, loaded.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    identity: String,
    file: File,
    records: HashMap<Key, Record>,
    /// MDNs by entry ID, which sorts in retrieval order.
    mdns: BTreeMap<String, MdnRecord>,
    /// How many records carry each content hash.
    hashes: HashMap<String, usize>,
    lines: usize,
}

/// A short stable hash of who the mailbox belongs to, so a journal is never
/// applied to a different mailbox after the account is re-pointed.
pub fn identity(host: &str, user: &str) -> String {
    let mut data = host.to_ascii_lowercase().into_bytes();
    data.push(0);
    data.extend_from_slice(user.as_bytes());
    crate::hex::lower(&openssl::sha::sha256(&data)[..12])
}

impl Record {
    fn fact(&self, key: &Key) -> Fact {
        Fact {
            key: key.clone(),
            size: self.size,
            hash: self.hash.clone(),
        }
    }
}

impl Journal {
    /// Load `<state_dir>/<account>.journal`, creating it if absent.
    pub fn open(state_dir: &Path, account: &str, identity: &str) -> Result<Journal, Error> {
        let path = state_dir.join(format!("{account}.journal"));
        // One descriptor, read and then appended to: what is read is what
        // is extended, and neither a symlink nor a FIFO is opened.
        let flags = libc::O_RDWR | libc::O_APPEND | libc::O_CREAT;
        let mut file = fsafe::open_regular(&path, flags, STATE_MODE).map_err(io_err(&path))?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(io_err(&path))?;
        let (records, mdns, lines, file_identity) = parse(&text, &path)?;
        let mut j = Journal {
            path,
            identity: identity.to_string(),
            file,
            hashes: HashMap::new(),
            records,
            mdns,
            lines,
        };
        // A torn tail or a missing header: rewrite from what was read, so
        // appends start on a clean line.
        if file_identity.is_none() || !text.is_empty() && !text.ends_with(b"\n") {
            j.compact()?;
        }
        if let Some(old) = file_identity.filter(|f| f != identity) {
            log::warn!(
                "{}: journal belongs to another host/user ({old}); pending entries are settled, \
                 delivery history starts over",
                j.path.display()
            );
            j.records
                .retain(|_, r| matches!(r.state, State::Pending { .. }));
            j.compact()?;
        }
        for r in j.records.values() {
            *j.hashes.entry(r.hash.clone()).or_default() += 1;
        }
        j.settle_interrupted_mdns()?;
        Ok(j)
    }

    /// An MDN left `sending` by an interrupted run may have reached the
    /// server: it becomes `unsure` and is never sent again.
    fn settle_interrupted_mdns(&mut self) -> Result<(), Error> {
        let sending: Vec<String> = self
            .mdns
            .iter()
            .filter(|(_, m)| m.state == MdnState::Sending)
            .map(|(id, _)| id.clone())
            .collect();
        let now = crate::timefmt::unix_now();
        for id in &sending {
            log::warn!(
                "{}: the MDN for entry {id} may or may not have been sent (the run sending it \
                 was interrupted before the server answered); it is not sent again",
                self.path.display()
            );
            self.set_mdn(id, MdnState::Unsure, now)?;
        }
        if !sending.is_empty() {
            self.sync()?;
        }
        Ok(())
    }

    /// MDNs still owed, oldest entry first, with their recipients.
    pub fn pending_mdns(&self) -> Vec<(String, String)> {
        self.mdns
            .iter()
            .filter(|(_, m)| m.state == MdnState::Pending)
            .map(|(id, m)| (id.clone(), m.rcpt.clone()))
            .collect()
    }

    /// Where the MDN for entry `id` stands, if one was ever owed.
    pub fn mdn_state(&self, id: &str) -> Option<MdnState> {
        self.mdns.get(id).map(|m| m.state)
    }

    /// Record a new state for the MDN of entry `id` (which must be owed).
    /// `sending` is fsynced here, before the caller sends the final dot;
    /// the others ride with the next sync.
    pub fn set_mdn(&mut self, id: &str, state: MdnState, now: u64) -> Result<(), Error> {
        let Some(m) = self.mdns.get(id) else {
            return Ok(());
        };
        let line = format!("M {id} {} {now} {}\n", state.name(), m.rcpt);
        self.append(&line, 1)?;
        if state == MdnState::Sending {
            self.sync()?;
        }
        if let Some(m) = self.mdns.get_mut(id) {
            m.state = state;
            m.time = now;
        }
        Ok(())
    }

    /// Settle every `P` without `D` (see the module docs) and remove
    /// unfinished downloads from `tmp/`. Returns how many entries this
    /// published.
    pub fn recover(&mut self, spool: &Spool, now: u64) -> Result<usize, Error> {
        let pending: Vec<(Fact, String, Dest)> = self
            .records
            .iter()
            .filter_map(|(k, r)| match &r.state {
                State::Pending { id, dest } => Some((r.fact(k), id.clone(), *dest)),
                State::Delivered => None,
            })
            .collect();
        let mut published = 0;
        let mut settled = Vec::new();
        for (fact, id, dest) in pending {
            if spool.tmp_path(&id).exists() {
                spool.publish(&id, dest).map_err(io_err(spool.root()))?;
                spool.sync_dest(dest).map_err(io_err(spool.root()))?;
                log::info!("published {id} left pending by an interrupted run");
                published += 1;
            }
            settled.push(fact);
        }
        self.mark_delivered(&settled, now)?;
        self.sync()?;
        let tmp = spool.tmp_entries().map_err(io_err(spool.root()))?;
        for id in tmp {
            log::debug!("removing unfinished download tmp/{id}");
            spool.discard(&id).map_err(io_err(spool.root()))?;
        }
        Ok(published)
    }

    /// What is known of `key`'s delivery, if it was delivered.
    pub fn delivered(&self, key: &Key) -> Option<Delivered> {
        match self.records.get(key) {
            Some(
                r @ Record {
                    state: State::Delivered,
                    ..
                },
            ) => Some(Delivered {
                at: r.time,
                size: r.size,
            }),
            _ => None,
        }
    }

    /// Whether a message with this content is in the journal (delivered or
    /// about to be).
    pub fn has_hash(&self, hash: &str) -> bool {
        self.hashes.contains_key(hash)
    }

    /// Room for `n` more records, so that a large first drain does not
    /// rehash its tables again and again.
    pub fn reserve(&mut self, n: usize) {
        self.records.reserve(n);
        self.hashes.reserve(n);
    }

    /// Every key the journal holds.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.records.keys()
    }

    /// Record entries about to be renamed out of `tmp/`, durably.
    pub fn add_pending<F: Borrow<Fact>, I: AsRef<str>>(
        &mut self,
        items: &[(F, I, Dest)],
        now: u64,
    ) -> Result<(), Error> {
        self.add_pending_with_mdns(items, &[] as &[(&str, &str)], now)
    }

    /// [`Journal::add_pending`], and in the same fsynced append, after the
    /// entries, the MDNs owed for some of them: `(entry ID, recipient)`.
    /// The recipient is a plain address (no spaces: `smtp::proto`).
    pub fn add_pending_with_mdns<F: Borrow<Fact>, I: AsRef<str>, M: AsRef<str>>(
        &mut self,
        items: &[(F, I, Dest)],
        mdns: &[(M, M)],
        now: u64,
    ) -> Result<(), Error> {
        let mut buf = String::new();
        for (f, id, dest) in items {
            let (f, id, d) = (f.borrow(), id.as_ref(), dest.dir_name());
            let _ = writeln!(buf, "P {} {id} {d} {now} {} {}", f.key, f.size, f.hash);
        }
        for (id, rcpt) in mdns {
            let (id, rcpt) = (id.as_ref(), rcpt.as_ref());
            let _ = writeln!(buf, "M {id} pending {now} {rcpt}");
        }
        self.append(&buf, items.len() + mdns.len())?;
        self.sync()?;
        for (id, rcpt) in mdns {
            let m = MdnRecord {
                state: MdnState::Pending,
                time: now,
                rcpt: rcpt.as_ref().to_string(),
            };
            self.mdns.insert(id.as_ref().to_string(), m);
        }
        for (f, id, dest) in items {
            let state = State::Pending {
                id: id.as_ref().to_string(),
                dest: *dest,
            };
            self.insert(f.borrow(), state, now);
        }
        Ok(())
    }

    /// Keys and hashes are copied only when new: every delivered message
    /// passes here twice (pending, then delivered), the second time with
    /// the same key and hash.
    fn insert(&mut self, f: &Fact, state: State, time: u64) {
        if let Some(r) = self.records.get_mut(&f.key) {
            r.state = state;
            r.time = time;
            r.size = f.size;
            if r.hash == f.hash {
                return;
            }
            let old = std::mem::replace(&mut r.hash, f.hash.clone());
            self.unindex(&old);
        } else {
            let r = Record {
                state,
                time,
                size: f.size,
                hash: f.hash.clone(),
            };
            self.records.insert(f.key.clone(), r);
        }
        match self.hashes.get_mut(&f.hash) {
            Some(n) => *n += 1,
            None => {
                self.hashes.insert(f.hash.clone(), 1);
            }
        }
    }

    fn unindex(&mut self, hash: &str) {
        if let Some(n) = self.hashes.get_mut(hash) {
            *n -= 1;
            if *n == 0 {
                self.hashes.remove(hash);
            }
        }
    }

    /// Record published messages. Not fsynced on its own: a lost `D` is
    /// re-derived from the `P` before it.
    pub fn mark_delivered<F: Borrow<Fact>>(&mut self, facts: &[F], now: u64) -> Result<(), Error> {
        if facts.is_empty() {
            return Ok(());
        }
        let mut buf = String::new();
        for f in facts {
            let f = f.borrow();
            let _ = writeln!(buf, "D {} {now} {} {}", f.key, f.size, f.hash);
        }
        self.append(&buf, facts.len())?;
        for f in facts {
            let f = f.borrow();
            // A repeated D for the same content keeps the first delivery
            // time: delete = <duration> counts from it.
            let time = match self.records.get(&f.key) {
                Some(r) if r.state == State::Delivered && r.hash == f.hash => r.time,
                _ => now,
            };
            self.insert(f, State::Delivered, time);
        }
        Ok(())
    }

    /// Drop keys for messages that are no longer on the server.
    pub fn forget(&mut self, keys: &[Key]) -> Result<(), Error> {
        let keys: Vec<&Key> = keys
            .iter()
            .filter(|k| self.records.contains_key(*k))
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let mut buf = String::new();
        for k in &keys {
            let _ = writeln!(buf, "F {k}");
        }
        self.append(&buf, keys.len())?;
        for k in keys {
            if let Some(old) = self.records.remove(k) {
                self.unindex(&old.hash);
            }
        }
        Ok(())
    }

    /// fsync the journal.
    pub fn sync(&mut self) -> Result<(), Error> {
        self.file.sync_data().map_err(io_err(&self.path))
    }

    /// Rewrite the file from memory if it has grown well past what is live.
    pub fn maybe_compact(&mut self) -> Result<(), Error> {
        if self.lines > 2 * (self.records.len() + self.mdns.len()) + COMPACT_SLACK {
            self.compact()?;
        }
        Ok(())
    }

    fn compact(&mut self) -> Result<(), Error> {
        let mut keys: Vec<&Key> = self.records.keys().collect();
        keys.sort();
        let mut buf = format!("{MAGIC} {}\n", self.identity);
        for k in keys {
            let r = &self.records[k];
            let (t, size, hash) = (r.time, r.size, &r.hash);
            match &r.state {
                State::Pending { id, dest } => {
                    let d = dest.dir_name();
                    buf.push_str(&format!("P {k} {id} {d} {t} {size} {hash}\n"))
                }
                State::Delivered => buf.push_str(&format!("D {k} {t} {size} {hash}\n")),
            }
        }
        // Final MDN states are history: only what is still owed (or, in
        // the middle of a send, `sending`) is kept.
        self.mdns.retain(|_, m| !m.state.is_final());
        for (id, m) in &self.mdns {
            let (state, t, rcpt) = (m.state.name(), m.time, &m.rcpt);
            buf.push_str(&format!("M {id} {state} {t} {rcpt}\n"));
        }
        spool::write_atomic(&self.path, buf.as_bytes(), STATE_MODE).map_err(io_err(&self.path))?;
        let flags = libc::O_WRONLY | libc::O_APPEND;
        self.file = fsafe::open_regular(&self.path, flags, 0).map_err(io_err(&self.path))?;
        self.lines = self.records.len() + self.mdns.len() + 1;
        Ok(())
    }

    fn append(&mut self, buf: &str, n: usize) -> Result<(), Error> {
        self.file
            .write_all(buf.as_bytes())
            .map_err(io_err(&self.path))?;
        self.lines += n;
        Ok(())
    }
}

type Parsed = (
    HashMap<Key, Record>,
    BTreeMap<String, MdnRecord>,
    usize,
    Option<String>,
);

fn parse(text: &[u8], path: &Path) -> Result<Parsed, Error> {
    let mut records = HashMap::new();
    let mut mdns = BTreeMap::new();
    let mut identity = None;
    let mut lines = 0;
    let complete = match text.iter().rposition(|&b| b == b'\n') {
        Some(i) => &text[..=i],
        None => &text[..0],
    };
    for (i, raw) in complete.split(|&b| b == b'\n').enumerate() {
        if raw.is_empty() {
            continue;
        }
        lines += 1;
        let damaged = || Error::Damaged {
            path: path.to_path_buf(),
            line: i + 1,
        };
        let line = std::str::from_utf8(raw).map_err(|_| damaged())?;
        if i == 0 {
            if let Some(id) = line.strip_prefix(MAGIC).and_then(|r| r.strip_prefix(' ')) {
                identity = Some(id.to_string());
                continue;
            }
        }
        let f: Vec<&str> = line.split(' ').collect();
        let num = |s: &str| s.parse::<u64>().map_err(|_| damaged());
        let hash = |s: &str| {
            let ok = s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
            ok.then(|| s.to_string()).ok_or_else(damaged)
        };
        let key = |s: &str| Key::parse(s).ok_or_else(damaged);
        match f.as_slice() {
            ["P", k, id, dest, t, size, h] if spool::is_valid_id(id) => {
                let dest = Dest::from_dir_name(dest).ok_or_else(damaged)?;
                let state = State::Pending {
                    id: id.to_string(),
                    dest,
                };
                let r = Record {
                    state,
                    time: num(t)?,
                    size: num(size)?,
                    hash: hash(h)?,
                };
                records.insert(key(k)?, r);
            }
            ["D", k, t, size, h] => {
                let k = key(k)?;
                // A repeated D for the same content keeps the first delivery
                // time (delete = <duration> counts from it).
                let hash = hash(h)?;
                let time = match records.get(&k) {
                    Some(
                        r @ Record {
                            state: State::Delivered,
                            ..
                        },
                    ) if r.hash == hash => r.time,
                    _ => num(t)?,
                };
                let r = Record {
                    state: State::Delivered,
                    time,
                    size: num(size)?,
                    hash,
                };
                records.insert(k, r);
            }
            ["F", k] => {
                records.remove(&key(k)?);
            }
            ["M", id, state, t, rcpt] if spool::is_valid_id(id) && !rcpt.is_empty() => {
                let m = MdnRecord {
                    state: MdnState::from_name(state).ok_or_else(damaged)?,
                    time: num(t)?,
                    rcpt: rcpt.to_string(),
                };
                mdns.insert(id.to_string(), m);
            }
            _ => return Err(damaged()),
        }
    }
    Ok((records, mdns, lines, identity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex::lower as hex;

    /// A key in its on-disk form.
    fn k(s: &str) -> Key {
        Key::parse(s).unwrap()
    }

    fn dirs(tag: &str) -> (PathBuf, Spool) {
        let d = std::env::temp_dir().join(format!("popspool-journal-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("state")).unwrap();
        let sp = Spool::open(&d.join("spool")).unwrap();
        (d, sp)
    }

    fn fact(key: &str, n: u8) -> Fact {
        Fact {
            key: k(key),
            size: 100 + u64::from(n),
            hash: hex(&[n; 32]),
        }
    }

    fn at(j: &Journal, key: &str) -> Option<u64> {
        j.delivered(&k(key)).map(|d| d.at)
    }

    fn make_entry(sp: &Spool) -> String {
        let id = spool::new_id();
        let e = sp.begin(id.clone()).unwrap();
        e.write_file("message.eml", b"x").unwrap();
        id
    }

    #[test]
    fn pending_with_tmp_entry_is_published_once() {
        let (d, sp) = dirs("pub");
        let st = d.join("state");
        let id = make_entry(&sp);
        {
            let mut j = Journal::open(&st, "a", "idn").unwrap();
            j.add_pending(&[(fact("u:1", 1), id.clone(), Dest::New)], 5)
                .unwrap();
            // crash before rename
        }
        let mut j = Journal::open(&st, "a", "idn").unwrap();
        assert_eq!(at(&j, "u:1"), None);
        assert_eq!(j.recover(&sp, 9).unwrap(), 1);
        assert!(sp.final_path(Dest::New, &id).join("message.eml").exists());
        assert_eq!(at(&j, "u:1"), Some(9));
        drop(j);
        let mut j = Journal::open(&st, "a", "idn").unwrap();
        assert_eq!(j.recover(&sp, 10).unwrap(), 0);
        assert_eq!(at(&j, "u:1"), Some(9));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn pending_without_tmp_entry_counts_as_delivered_and_strays_are_removed() {
        let (d, sp) = dirs("gone");
        let st = d.join("state");
        let id = make_entry(&sp);
        let stray = make_entry(&sp);
        {
            let mut j = Journal::open(&st, "a", "idn").unwrap();
            j.add_pending(&[(fact("u:1", 1), id.clone(), Dest::Quarantine)], 5)
                .unwrap();
            sp.publish(&id, Dest::Quarantine).unwrap();
            // a consumer takes it away at once
            fs::remove_dir_all(sp.final_path(Dest::Quarantine, &id)).unwrap();
        }
        let mut j = Journal::open(&st, "a", "idn").unwrap();
        assert_eq!(j.recover(&sp, 7).unwrap(), 0);
        assert_eq!(at(&j, "u:1"), Some(7));
        assert!(!sp.tmp_path(&stray).exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn torn_tail_is_ignored_and_damage_is_reported() {
        let (d, _sp) = dirs("torn");
        let st = d.join("state");
        let p = st.join("a.journal");
        let h = hex(&[7; 32]);
        fs::write(
            &p,
            format!("{MAGIC} idn\nD u:1 3 9 {h}\nD u:2 4 9 {h}\nF u:1\nD u:3"),
        )
        .unwrap();
        let j = Journal::open(&st, "a", "idn").unwrap();
        assert_eq!(at(&j, "u:1"), None);
        assert_eq!(at(&j, "u:2"), Some(4));
        assert_eq!(at(&j, "u:3"), None, "torn line");
        drop(j);
        assert!(fs::read_to_string(&p).unwrap().ends_with('\n'));
        fs::write(
            &p,
            format!("{MAGIC} idn\nD u:1 3 9 {h}\nD u:2 4 9 nothex\nD u:2 4 9 {h}\n"),
        )
        .unwrap();
        let e = Journal::open(&st, "a", "idn").unwrap_err();
        assert!(e.to_string().contains("a.journal:3"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn other_identity_starts_over_and_compaction_bounds_size() {
        let (d, _sp) = dirs("ident");
        let st = d.join("state");
        {
            let mut j = Journal::open(&st, "a", "one").unwrap();
            j.mark_delivered(&[fact("u:1", 1)], 1).unwrap();
        }
        let mut j = Journal::open(&st, "a", "two").unwrap();
        assert_eq!(at(&j, "u:1"), None);
        for round in 0..5u64 {
            let keys: Vec<Key> = (0..1000)
                .map(|i| Key::uidl(&format!("{round}-{i}")))
                .collect();
            let facts: Vec<Fact> = keys.iter().map(|k| fact(k.as_str(), round as u8)).collect();
            j.mark_delivered(&facts, round).unwrap();
            j.forget(&keys).unwrap();
            j.maybe_compact().unwrap();
        }
        let lines = fs::read_to_string(st.join("a.journal"))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 2 * COMPACT_SLACK + 1, "{lines}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn content_hashes_are_indexed_and_first_delivery_time_kept() {
        let (d, _sp) = dirs("hash");
        let st = d.join("state");
        let mut j = Journal::open(&st, "a", "idn").unwrap();
        j.mark_delivered(&[fact("u:1", 1)], 10).unwrap();
        assert!(j.has_hash(&hex(&[1; 32])));
        j.mark_delivered(&[fact("u:1", 1)], 20).unwrap();
        assert_eq!(at(&j, "u:1"), Some(10), "same content: first time kept");
        j.mark_delivered(&[fact("u:1", 2)], 30).unwrap();
        assert_eq!(at(&j, "u:1"), Some(30), "UIDL reused for new content");
        assert!(!j.has_hash(&hex(&[1; 32])));
        assert!(j.has_hash(&hex(&[2; 32])));
        drop(j);
        let mut j = Journal::open(&st, "a", "idn").unwrap();
        assert_eq!(
            j.delivered(&k("u:1")),
            Some(Delivered { at: 30, size: 102 })
        );
        assert!(j.has_hash(&hex(&[2; 32])));
        // Two keys with one content: the hash stays known until both go.
        j.add_pending(&[(fact("u:9", 2), "x", Dest::New)], 40)
            .unwrap();
        j.mark_delivered(&[&fact("u:9", 2)], 40).unwrap();
        j.forget(&[k("u:1")]).unwrap();
        assert!(j.has_hash(&hex(&[2; 32])));
        j.forget(&[k("u:9")]).unwrap();
        assert!(!j.has_hash(&hex(&[2; 32])));
        fs::remove_dir_all(&d).unwrap();
    }

    /// A journal as popspool 2 writes it loads, its keys keep their kind,
    /// and compaction writes the same records back.
    #[test]
    fn current_on_disk_form_loads_and_round_trips() {
        let (d, _sp) = dirs("disk");
        let st = d.join("state");
        let p = st.join("a.journal");
        let h = hex(&[9; 32]);
        let id = "01795311924.991169.0021518";
        let text = format!(
            "{MAGIC} idn\nD h:{h} 3 9 {h}\nP u:000000026b024934 {id} quarantine 5 10 {h}\nD u:x!~ 4 11 {h}\n"
        );
        fs::write(&p, &text).unwrap();
        let mut j = Journal::open(&st, "a", "idn").unwrap();
        assert_eq!(
            j.delivered(&Key::hash(&h)),
            Some(Delivered { at: 3, size: 9 })
        );
        assert_eq!(
            j.delivered(&Key::uidl("x!~")),
            Some(Delivered { at: 4, size: 11 })
        );
        let mut kinds: Vec<(String, KeyKind)> =
            j.keys().map(|k| (k.to_string(), k.kind())).collect();
        kinds.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            kinds,
            [
                (format!("h:{h}"), KeyKind::Hash),
                ("u:000000026b024934".to_string(), KeyKind::Uidl),
                ("u:x!~".to_string(), KeyKind::Uidl),
            ]
        );
        j.compact().unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), text);
        for bad in ["x:1", "u:", "h:", "1"] {
            fs::write(&p, format!("{MAGIC} idn\nD {bad} 3 9 {h}\n")).unwrap();
            assert!(Journal::open(&st, "a", "idn").is_err(), "{bad}");
        }
        fs::remove_dir_all(&d).unwrap();
    }

    /// MDN states: owed with the entry's `P`, kept across restarts, never
    /// sent again once `sending` was recorded, dropped once final.
    #[test]
    fn mdn_states_survive_restarts_and_sending_means_at_most_once() {
        let (d, _sp) = dirs("mdn");
        let st = d.join("state");
        let p = st.join("a.journal");
        let (a, b, c) = (
            "01795311924.000001.0000001",
            "01795311924.000002.0000002",
            "01795311924.000003.0000003",
        );
        {
            let mut j = Journal::open(&st, "a", "idn").unwrap();
            let items = [
                (fact("u:1", 1), a, Dest::New),
                (fact("u:2", 2), b, Dest::Quarantine),
                (fact("u:3", 3), c, Dest::New),
            ];
            let mdns = [
                (a, "x@example.net"),
                (b, "y@example.net"),
                (c, "z@example.net"),
            ];
            j.add_pending_with_mdns(&items, &mdns, 5).unwrap();
            assert_eq!(j.pending_mdns().len(), 3);
            j.set_mdn(a, MdnState::Sent, 6).unwrap();
            j.set_mdn(b, MdnState::Sending, 6).unwrap();
            // killed here, before the server's answer to the final dot
        }
        let text = fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // P before M in one append: an owed MDN implies a published entry.
        assert!(lines[1].starts_with("P ") && lines[4] == format!("M {a} pending 5 x@example.net"));
        assert_eq!(
            lines.last().unwrap(),
            &format!("M {b} sending 6 y@example.net")
        );
        let mut j = Journal::open(&st, "a", "idn").unwrap();
        assert_eq!(j.mdn_state(a), Some(MdnState::Sent));
        assert_eq!(j.mdn_state(b), Some(MdnState::Unsure), "never resent");
        assert_eq!(
            j.pending_mdns(),
            [(c.to_string(), "z@example.net".to_string())]
        );
        j.set_mdn(c, MdnState::Failed, 7).unwrap();
        assert!(j.pending_mdns().is_empty());
        j.compact().unwrap();
        assert!(!fs::read_to_string(&p).unwrap().contains("\nM "));
        // A new message's MDN, and a journal whose identity changes, keeps it.
        j.add_pending_with_mdns(
            &[(fact("u:4", 4), "01795311924.000004.0000004", Dest::New)],
            &[("01795311924.000004.0000004", "w@example.net")],
            8,
        )
        .unwrap();
        drop(j);
        let j = Journal::open(&st, "a", "other").unwrap();
        assert_eq!(j.pending_mdns().len(), 1);
        drop(j);
        for bad in [
            format!("M {a} maybe 5 x@y"),
            format!("M {a} pending x x@y"),
            format!("M {a} pending 5"),
            "M ../x pending 5 x@y".to_string(),
        ] {
            fs::write(&p, format!("{MAGIC} idn\n{bad}\n")).unwrap();
            assert!(Journal::open(&st, "a", "idn").is_err(), "{bad}");
        }
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn full_disk_and_quota_are_recognised() {
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::EDQUOT)));
        assert!(!is_no_space(&io::Error::from_raw_os_error(libc::EACCES)));
    }

    #[test]
    fn lock_is_exclusive() {
        let (d, _sp) = dirs("lock");
        let st = d.join("state");
        let l = lock(&st, "a").unwrap();
        assert!(matches!(lock(&st, "a"), Err(Error::Locked { .. })));
        drop(l);
        lock(&st, "a").unwrap();
        fs::remove_dir_all(&d).unwrap();
    }

    /// A symlink or a FIFO where a state file belongs is neither followed
    /// nor waited on: an error naming the file, at once.
    #[test]
    fn state_files_are_regular_files_only() {
        let (d, _sp) = dirs("planted");
        let st = d.join("state");
        let victim = d.join("victim");
        fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, st.join("a.lock")).unwrap();
        let ok = std::process::Command::new("mkfifo")
            .arg(st.join("a.journal"))
            .status()
            .unwrap();
        assert!(ok.success());
        let e = lock(&st, "a").unwrap_err();
        assert!(e.to_string().contains("a.lock"), "{e}");
        let e = Journal::open(&st, "a", "idn").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        fs::remove_dir_all(&d).unwrap();
    }
}
