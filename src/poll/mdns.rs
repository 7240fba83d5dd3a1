//! Sending the MDNs an account owes (README, "Acknowledgments (MDN)"):
//! the outbox in `state_dir`, and one SMTP session after the POP3 work of
//! a poll is done, so retrieval never waits for SMTP.
//!
//! An MDN is composed when its message is decoded (`mdn`), written to
//! `<state_dir>/<account>.mdn/<ID>.eml` before the entry's batch is
//! journaled, and owed (`M <ID> pending`) in the same fsynced journal
//! append as the entry (`journal`). Here each owed MDN is sent once:
//! `sending` is fsynced before the final `.` of DATA; the server's answer
//! makes it `sent`, `failed` (5xx: never retried) or `pending` again (4xx);
//! no answer at all leaves it `unsure`, never sent again (at most once).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::{mailbox_address, Account, MdnMode, SecretSource};
use crate::journal::{Journal, MdnState};
use crate::mdn;
use crate::mime::Decoded;
use crate::secret;
use crate::smtp;
use crate::timefmt;

use super::Memo;

/// The first retry after a failed SMTP attempt comes after this long,
/// doubling each time up to the account's `max_backoff`: a submission
/// server that is down is not hammered every `poll_interval`.
const FIRST_RETRY: Duration = Duration::from_secs(60);

/// The outbox file's mode: it holds the original message's header block.
const OUTBOX_FILE_MODE: u32 = 0o600;

/// What the MDN step of one poll did, for the status record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MdnOutcome {
    /// Whether the MDN step ran (not after a journal failure).
    pub ran: bool,
    /// MDNs the SMTP server took.
    pub sent: u64,
    /// MDNs refused for good, or never to be sent (unsure, missing file).
    pub failed: u64,
    /// MDNs still owed after this poll.
    pub pending: u64,
    /// Why the last attempt failed, when it did.
    pub error: Option<String>,
}

/// `<state_dir>/<account>.mdn`.
pub(super) fn outbox(state_dir: &Path, account: &str) -> PathBuf {
    state_dir.join(format!("{account}.mdn"))
}

/// Writes an owed MDN into the outbox, durably, before it is journaled.
pub(super) fn store(dir: &Path, id: &str, message: &[u8]) -> io::Result<()> {
    if !dir.is_dir() {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new().mode(0o700).create(dir).or_else(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                Ok(())
            } else {
                Err(e)
            }
        })?;
    }
    crate::spool::write_atomic(&dir.join(format!("{id}.eml")), message, OUTBOX_FILE_MODE)
}

/// The MDN owed for a message just decoded into entry `id`, if the
/// account answers requests and RFC 8098 allows it; a request not
/// answered is logged with the reason.
pub(super) fn owed(acct: &Account, decoded: &Decoded, raw: &[u8], id: &str) -> Option<mdn::Owed> {
    if acct.mdn != MdnMode::Auto {
        return None;
    }
    let from = acct.smtp.as_ref()?.from.as_deref()?;
    let from_addr = mailbox_address(from).ok()?;
    let token = mdn::token();
    let sender = mdn::Sender {
        from,
        from_addr,
        now: timefmt::unix_now(),
        token: &token,
    };
    let head = crate::mime::header_block(raw);
    let quarantine = decoded.quarantine.as_deref();
    match mdn::decide(&decoded.headers, decoded.kind, head, quarantine, &sender) {
        mdn::Decision::NotAsked => None,
        mdn::Decision::Skip(why) => {
            log::info!(
                "{}: entry {id} asks for an MDN; not sending one: {why}",
                acct.name
            );
            None
        }
        mdn::Decision::Owe(o) => Some(o),
    }
}

/// [`store`], logging a failure: an MDN that cannot be stored is not
/// owed (the message is still delivered; retrieval never waits for MDNs).
pub(super) fn stored(dir: &Path, account: &str, id: &str, owed: &mdn::Owed) -> bool {
    match store(dir, id, &owed.message) {
        Ok(()) => true,
        Err(e) => {
            log::error!(
                "{account}: cannot store the MDN for entry {id} in {}: {e}; it will not be sent",
                dir.display()
            );
            false
        }
    }
}

/// Sends what the journal says is owed, once per poll (or later, while
/// backing off after a failure); never fails the poll.
pub(super) fn send_pending(
    acct: &Account,
    state_dir: &Path,
    tls: &crate::tls::Connectors,
    journal: &mut Journal,
    memo: &mut Memo,
    stop: &AtomicBool,
) -> MdnOutcome {
    let mut out = MdnOutcome {
        ran: true,
        ..MdnOutcome::default()
    };
    let dir = outbox(state_dir, &acct.name);
    let owed = journal.pending_mdns();
    remove_strays(&dir, journal);
    out.pending = owed.len() as u64;
    if owed.is_empty() {
        memo.mdn_retry = None;
        return out;
    }
    if acct.mdn != MdnMode::Auto {
        log::debug!(
            "{}: {} MDN(s) owed but mdn is not auto; they wait",
            acct.name,
            owed.len()
        );
        return out;
    }
    if acct.smtp.is_none() {
        log::debug!(
            "{}: {} MDN(s) owed but no smtp_host is set; they wait",
            acct.name,
            owed.len()
        );
        return out;
    }
    if let Some((_, next)) = memo.mdn_retry {
        if Instant::now() < next {
            return out;
        }
    }
    match send_all(acct, tls, journal, &dir, &owed, stop, &mut out) {
        Ok(()) => memo.mdn_retry = None,
        Err(e) => {
            let tries = memo.mdn_retry.map_or(1, |(n, _)| n.saturating_add(1));
            let wait = FIRST_RETRY
                .saturating_mul(1 << (tries - 1).min(16))
                .min(acct.max_backoff);
            log::warn!(
                "{}: sending MDNs: {e}; {} still owed, next try in {}s or later",
                acct.name,
                journal.pending_mdns().len(),
                wait.as_secs()
            );
            memo.mdn_retry = Some((tries, Instant::now() + wait));
            out.error = Some(e);
        }
    }
    if let Err(e) = journal.sync() {
        log::warn!("{}: journal: {e}", acct.name);
    }
    out.pending = journal.pending_mdns().len() as u64;
    out
}

/// Outbox files for MDNs that are not owed (a crash between writing the
/// file and journaling the entry, or an MDN already settled).
fn remove_strays(dir: &Path, journal: &Journal) {
    let Ok(list) = fs::read_dir(dir) else { return };
    for e in list.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let owed = name
            .strip_suffix(".eml")
            .and_then(|id| journal.mdn_state(id))
            .is_some_and(|s| s == MdnState::Pending);
        if !owed {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// One SMTP session for everything owed. An error is a reason to retry
/// later (the MDNs concerned stay pending), as a printable message.
fn send_all(
    acct: &Account,
    tls: &crate::tls::Connectors,
    journal: &mut Journal,
    dir: &Path,
    owed: &[(String, String)],
    stop: &AtomicBool,
    out: &mut MdnOutcome,
) -> Result<(), String> {
    let smtp_cfg = acct.smtp.as_ref().ok_or("no smtp_host")?;
    let server = smtp::Server::of(acct).ok_or("no smtp_host")?;
    let password = match (&smtp_cfg.user, &smtp_cfg.secret) {
        (Some(_), s) if *s != SecretSource::None => {
            Some(secret::resolve(s, acct.timeout).map_err(|e| format!("SMTP password: {e}"))?)
        }
        _ => None,
    };
    let mut session = smtp::open(&server, tls).map_err(|e| e.to_string())?;
    if let (Some(user), Some(pw)) = (&smtp_cfg.user, &password) {
        if !session.tls && !acct.allow_plaintext {
            session.conn.quit();
            return Err("refusing to send the SMTP password without TLS".into());
        }
        session
            .login(&server, user, pw.expose())
            .map_err(|e| e.to_string())?;
    }
    drop(password);
    let mut last_error = None;
    for (id, rcpt) in owed {
        // A shutdown request: the rest stay owed for the next run.
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let path = dir.join(format!("{id}.eml"));
        let message = match crate::fsafe::read_regular(&path) {
            Ok(m) => m,
            Err(e) => {
                log::error!(
                    "{}: the MDN for entry {id} cannot be read from {} ({e}); it is not sent",
                    acct.name,
                    path.display()
                );
                settle(journal, id, MdnState::Failed, &path)?;
                out.failed += 1;
                continue;
            }
        };
        let now = timefmt::unix_now();
        let sent = session.conn.send(rcpt, &message, &mut || {
            journal.set_mdn(id, MdnState::Sending, now).map_err(|_| {
                smtp::Error::Protocol("the journal could not record the MDN as sending")
            })
        });
        match sent {
            Ok(()) => {
                log::info!("{}: MDN for entry {id} sent to {rcpt}", acct.name);
                settle(journal, id, MdnState::Sent, &path)?;
                out.sent += 1;
            }
            Err(e @ smtp::Error::Unknown(_)) => {
                log::warn!(
                    "{}: the MDN for entry {id} to {rcpt} may or may not have been sent: {e}; \
                     it is not sent again",
                    acct.name
                );
                settle(journal, id, MdnState::Unsure, &path)?;
                out.failed += 1;
                return Err(e.to_string());
            }
            Err(e) if e.is_permanent_for_message() => {
                log::warn!(
                    "{}: the MDN for entry {id} to {rcpt} was refused for good: {e}",
                    acct.name
                );
                settle(journal, id, MdnState::Failed, &path)?;
                out.failed += 1;
                session.conn.reset();
            }
            Err(e @ smtp::Error::Refused { .. }) if e.stage() != "MAIL FROM" => {
                // Refused for now (4xx): owed again, if "sending" was
                // already recorded; the next message may still go.
                if journal.mdn_state(id) == Some(MdnState::Sending) {
                    journal
                        .set_mdn(id, MdnState::Pending, timefmt::unix_now())
                        .map_err(|e| e.to_string())?;
                }
                last_error = Some(e.to_string());
                session.conn.reset();
            }
            // The connection is gone, or the journal failed: stop here.
            Err(e) => return Err(e.to_string()),
        }
    }
    session.conn.quit();
    match last_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A final state for the MDN of `id`; its outbox file goes.
fn settle(journal: &mut Journal, id: &str, state: MdnState, path: &Path) -> Result<(), String> {
    journal
        .set_mdn(id, state, timefmt::unix_now())
        .map_err(|e| e.to_string())?;
    let _ = fs::remove_file(path);
    Ok(())
}
