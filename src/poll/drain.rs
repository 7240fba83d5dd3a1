//! Draining one mailbox: which listed messages to download, the retrieval
//! loop (pipelined when the server allows it), and the batch commit that
//! makes entries durable and published before anything is deleted.
//!
//! The order is the delivery guarantee (README "Delivery guarantee"): each
//! entry complete in `tmp/` (see `entry`), then per batch one round of
//! fsyncs, a "pending" journal record, one rename each into `new/` or
//! `quarantine/`, an fsync of those directories, a "delivered" record.
//! Only then does [`Drain::after_durable`] run for each entry: it is logged,
//! counted and queued for DELE. An MDN owed to the sender is journaled with
//! the entry's "pending" record, so it is owed exactly when the entry is
//! published, and sent after the POP3 session (`mdns`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::{Account, Delete};
use crate::journal::{self, Journal};
use crate::pop3::{self, Plan, Retr, Retrieval, Session};
use crate::spool::{self, Dest, Spool};
use crate::timefmt;
use crate::tls::Stream;

use super::deletes::Deletes;
use super::entry::{self, Done, Job, Staged};
use super::listing::{due_for_delete, tag, Listed, Listing};
use super::{check_space, Error, Memo, Outcome};

/// Commit after this many entries: enough to share the fsyncs of `new/` and
/// the journal, few enough that an interruption re-downloads little.
const BATCH_MESSAGES: usize = 64;
/// ... or after this many bytes, so a batch of large messages does not hold
/// hundreds of megabytes unpublished.
const BATCH_BYTES: u64 = 32 << 20;
/// A server may send a little more than it announced in LIST (some count
/// LF line ends); far more is a broken or hostile server.
const RETR_SLACK_BYTES: u64 = 1 << 20;
/// Free space is checked again once this much has been downloaded since the
/// last check (and before the first message): a statvfs per small message
/// costs ~2% of the work, and 1 MiB past the check is nothing next to
/// `min_free_space` (64 MiB by default).
const SPACE_CHECK_BYTES: u64 = 1 << 20;
/// Records the journal makes room for before a drain: a first drain of a
/// big mailbox does not rehash the journal's tables at every doubling, and
/// a listing of a million messages does not reserve tables for a million
/// records before the first one arrives.
const JOURNAL_RESERVE: usize = 1 << 14;
/// After a shutdown request, how long to keep reading replies already asked
/// for (pipelined RETRs) so that QUIT can still delete this session's
/// delivered messages; past it the session is abandoned, and the next poll
/// deletes them. Well inside systemd's 90 s stop timeout.
const STOP_DRAIN: Duration = Duration::from_secs(2);

/// One drain of one mailbox in progress.
pub(super) struct Drain<'a> {
    acct: &'a Account,
    spool: &'a Spool,
    journal: &'a mut Journal,
    server: &'a str,
    batch: Vec<Staged>,
    batch_bytes: u64,
    /// Copies of content staged in `batch`, with their message numbers:
    /// journaled when the batch is.
    copies: Vec<(u32, journal::Fact)>,
    /// What is delivered and to be deleted on the server.
    deletes: Deletes,
    /// Lines of a committed batch go out in one write.
    log: crate::logging::Output,
    /// The last message's buffer, reused for the next: a few KiB per
    /// message is past malloc's per-thread cache, so each fresh one took
    /// its slow path.
    spare: Vec<u8>,
    out: &'a mut Outcome,
    /// Where owed MDNs are written before their batch is journaled.
    outbox: &'a std::path::Path,
}

impl<'a> Drain<'a> {
    /// A drain of `acct` into `spool`, recorded in `journal`.
    pub fn new(
        acct: &'a Account,
        spool: &'a Spool,
        journal: &'a mut Journal,
        server: &'a str,
        log: crate::logging::Output,
        out: &'a mut Outcome,
        outbox: &'a std::path::Path,
    ) -> Self {
        Drain {
            acct,
            spool,
            journal,
            server,
            batch: Vec::new(),
            batch_bytes: 0,
            copies: Vec::new(),
            deletes: Deletes::default(),
            log,
            spare: Vec::new(),
            out,
            outbox,
        }
    }

    /// Download every listed message not delivered before, committing in
    /// batches; queue for deletion what is delivered and due.
    pub fn fetch_all(
        &mut self,
        session: &mut Session<Stream>,
        listed: &Listing,
        pipelining: bool,
        stop: &AtomicBool,
        memo: &mut Memo,
    ) -> Result<(), Error> {
        let wanted = self.select(listed, memo);
        memo.reported_too_large.settle();
        if wanted.is_empty() {
            return Ok(());
        }
        self.journal.reserve(wanted.len().min(JOURNAL_RESERVE));
        let r = self.retrieve_all(session, listed, &wanted, pipelining, stop, memo);
        memo.reported_refused.settle();
        r
    }

    /// The listed messages to download: not delivered before (those due
    /// for deletion are queued for DELE instead) and within
    /// `max_message_size` (larger ones are reported once and left). Their
    /// positions in `listed`: 4 bytes each.
    fn select(&mut self, listed: &Listing, memo: &mut Memo) -> Vec<u32> {
        let now = timefmt::unix_now();
        let mut wanted = Vec::new();
        for i in 0..listed.len() {
            let (n, size) = (listed.n(i), listed.size(i));
            let key = listed.key(i);
            if let Some(key) = key.as_ref() {
                match self.journal.delivered(key) {
                    Some(d) if d.size == size => {
                        if due_for_delete(self.acct.delete, d.at, now) {
                            self.deletes.push(n, key.clone());
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
                        n,
                        d.size,
                        size
                    ),
                    None => {}
                }
            }
            if let Some(max) = self.acct.max_message_size {
                if size > max {
                    self.out.too_large += 1;
                    if memo.reported_too_large.first(&tag(key.as_ref(), n)) {
                        log::warn!(
                            "{}: message {} is {} bytes, over max_message_size {max}; left on the server",
                            self.acct.name,
                            n,
                            size
                        );
                    }
                    continue;
                }
            }
            wanted.push(i as u32);
        }
        wanted
    }

    /// Downloads `wanted` in order (pipelined when the server allows it),
    /// committing in batches and sending each batch's DELEs as soon as it
    /// is committed.
    fn retrieve_all(
        &mut self,
        session: &mut Session<Stream>,
        listed: &Listing,
        wanted: &[u32],
        pipelining: bool,
        stop: &AtomicBool,
        memo: &mut Memo,
    ) -> Result<(), Error> {
        // RETRs are pipelined when the server allows it (pop3::Retrieval):
        // the server sends the next messages while this one is decoded and
        // written. Each message still streams into its own entry, in order.
        let plan = Wanted { listed, wanted };
        let mut retrieval = session.retrieve(plan, pipelining).map_err(Error::Pop3)?;
        let mut unchecked = None;
        for &i in wanted {
            let m = &listed.get(i as usize);
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
                    let (done, raw) = entry::finish_entry(self.acct, self.server, job);
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
                    if memo.reported_refused.first(&tag(m.key.as_ref(), m.n)) {
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
                // Committed: their DELEs travel among the RETRs still coming.
                self.deletes
                    .send_during(&mut retrieval)
                    .map_err(Error::Pop3)?;
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
        let got = match entry::download(retrieval, m, stop, &entry, spare) {
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
            for (n, f) in copies {
                self.deletes.push(n, f.key);
            }
        }
        Ok(())
    }

    /// Publish the staged batch: the entries and tmp/ made durable (one
    /// round of syncs for all of them), pending records, renames,
    /// destination fsyncs, delivered records. Then the batch may be deleted.
    pub fn commit(&mut self) -> Result<(), Error> {
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
        // Owed MDNs are in the outbox before the journal owes them.
        let mdns: Vec<(&str, &str)> = self
            .batch
            .iter()
            .filter_map(|s| Some((s.id.as_str(), s.mdn.as_ref()?)))
            .filter(|(id, owed)| super::mdns::stored(self.outbox, &self.acct.name, id, owed))
            .map(|(id, owed)| (id, owed.rcpt.as_str()))
            .collect();
        self.journal
            .add_pending_with_mdns(&items, &mdns, now)
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
        // Taken and put back, so the batch's allocation is reused.
        let mut batch = std::mem::take(&mut self.batch);
        self.after_durable(&mut batch, now);
        self.batch = batch;
        self.batch_bytes = 0;
        let copies = std::mem::take(&mut self.copies);
        self.record_copies(copies, now)
    }

    /// What follows once entries are durable in `new/` or `quarantine/`
    /// and journaled as delivered: one log line each (written together),
    /// the counts, and DELE when the policy says so.
    fn after_durable(&mut self, batch: &mut Vec<Staged>, now: u64) {
        // One write for the batch's lines (see logging.rs).
        let _batch = self.log.batch();
        for s in batch.drain(..) {
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
                self.deletes.push(s.n, s.fact.key);
            }
        }
    }

    /// The delete queue, once the drain is over.
    pub fn into_deletes(self) -> Deletes {
        self.deletes
    }
}

/// The retrieval plan of a drain, computed message by message from the
/// listing rather than built as a `Retr` for each (a million of those is
/// 40 MB).
struct Wanted<'l> {
    listed: &'l Listing,
    wanted: &'l [u32],
}

impl Plan for Wanted<'_> {
    fn len(&self) -> usize {
        self.wanted.len()
    }

    fn get(&self, i: usize) -> Retr {
        let at = self.wanted[i] as usize;
        let size = self.listed.size(at);
        Retr {
            n: self.listed.n(at),
            size,
            max_bytes: size.saturating_mul(2).saturating_add(RETR_SLACK_BYTES),
        }
    }
}
