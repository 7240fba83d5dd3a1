//! What the server has and what is due: the listing (LIST and UIDL, RFC
//! 1939) turned into journal keys, and the `delete` policy.

use std::collections::HashMap;

use crate::config::Delete;
use crate::journal;
use crate::pop3::{Capabilities, Session};
use crate::tls::Stream;

use super::Error;

/// One message on the server, as listed.
#[derive(Debug)]
pub(super) struct Listed {
    /// Its message number in this session.
    pub n: u32,
    /// Its size as LIST gives it.
    pub size: u64,
    /// `u:<UIDL>` when the server gave this message a usable, unique UIDL.
    pub key: Option<journal::Key>,
    /// Its UIDL, when valid (RFC 1939 section 7), for `meta.json`.
    pub uidl: Option<String>,
}

impl Listed {
    /// What names the message in the log's "reported once" memory: its
    /// journal key, else its number in this session.
    pub fn tag(&self) -> String {
        match &self.key {
            Some(k) => k.to_string(),
            None => format!("#{}", self.n),
        }
    }
}

/// The mailbox as listed, and whether the server has UIDL.
pub(super) fn listing(
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

/// Whether a message delivered at `delivered_at` is to be deleted at `now`.
pub(super) fn due_for_delete(policy: Delete, delivered_at: u64, now: u64) -> bool {
    match policy {
        Delete::Yes => true,
        Delete::No => false,
        Delete::After(d) => now.saturating_sub(delivered_at) >= d.as_secs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn delete_policy() {
        assert!(due_for_delete(Delete::Yes, 100, 100));
        assert!(!due_for_delete(Delete::No, 0, u64::MAX));
        let week = Delete::After(Duration::from_secs(7 * 86400));
        assert!(!due_for_delete(week, 1000, 1000 + 7 * 86400 - 1));
        assert!(due_for_delete(week, 1000, 1000 + 7 * 86400));
    }
}
