//! What the server has and what is due: the listing (LIST and UIDL, RFC
//! 1939) turned into journal keys, and the `delete` policy.

use std::cmp::Ordering;

use crate::config::Delete;
use crate::journal;
use crate::pop3::{self, Capabilities, ListingSink, Session};
use crate::tls::Stream;

use super::Error;

/// One message on the server, as listed, materialised from the [`Listing`]
/// for the message being worked on.
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

/// What names a message in the log's "reported once" memory: its journal
/// key, else its number in this session.
pub(super) fn tag(key: Option<&journal::Key>, n: u32) -> String {
    match key {
        Some(k) => k.to_string(),
        None => format!("#{n}"),
    }
}

/// One listed message in 16 bytes, so that a mailbox of a million messages
/// (the most [`pop3::MAX_LISTING_ENTRIES`] accepts) lists in 16 MB plus its
/// UIDLs: no String, Vec or hash table entry per message.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Its size as LIST gives it; [`UNLISTED`] while only UIDL named it.
    size: u64,
    n: u32,
    /// Where its UIDL is in [`Listing::arena`], or [`NO_UIDL`].
    uidl: u32,
}

/// [`Entry::uidl`] of a message without a valid UIDL.
const NO_UIDL: u32 = u32::MAX;

/// [`Entry::size`] of a UIDL entry LIST has not named (yet).
const UNLISTED: u64 = u64::MAX;

/// In the length byte before a UIDL in the arena (a UIDL is at most 70
/// bytes): another message has the same UIDL, so it is no journal key.
const SHARED: u8 = 0x80;

/// The mailbox as listed: entries in message-number order, and their UIDLs
/// back to back in one arena, each after a length byte.
#[derive(Debug, Default)]
pub(super) struct Listing {
    entries: Vec<Entry>,
    arena: Vec<u8>,
    /// UIDL entries so far came in ascending message numbers (as every
    /// server sends them): no sort is needed before LIST is matched.
    unsorted: bool,
    /// How many entries came from UIDL, once LIST has started.
    uids: Option<usize>,
}

impl Listing {
    /// How many messages the server listed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Message `i`'s number and size.
    pub fn n(&self, i: usize) -> u32 {
        self.entries[i].n
    }

    pub fn size(&self, i: usize) -> u64 {
        self.entries[i].size
    }

    /// Message `i`'s valid UIDL, and whether it is unique on the server.
    fn uidl_unique(&self, i: usize) -> Option<(&str, bool)> {
        let off = self.entries[i].uidl;
        if off == NO_UIDL {
            return None;
        }
        let off = off as usize;
        let head = self.arena[off];
        let len = usize::from(head & !SHARED);
        // Only valid (printable ASCII) UIDLs are stored.
        let uidl = std::str::from_utf8(&self.arena[off + 1..off + 1 + len]).ok()?;
        Some((uidl, head & SHARED == 0))
    }

    /// `u:<UIDL>` when message `i` has a valid UIDL no other message shares
    /// (two messages with one UIDL cannot be told apart by it: both fall
    /// back to their content hash).
    pub fn key(&self, i: usize) -> Option<journal::Key> {
        self.uidl_unique(i)
            .filter(|&(_, unique)| unique)
            .map(|(u, _)| journal::Key::uidl(u))
    }

    /// Message `i`, for working on it.
    pub fn get(&self, i: usize) -> Listed {
        Listed {
            n: self.n(i),
            size: self.size(i),
            key: self.key(i),
            uidl: self.uidl_unique(i).map(|(u, _)| u.to_string()),
        }
    }

    /// The unique UIDLs listed, sorted, for asking which journal keys the
    /// server still has: 4 bytes a message while it is used.
    pub fn present(&self) -> Present<'_> {
        let mut order: Vec<u32> = (0..self.entries.len())
            .filter(|&i| self.uidl_unique(i).is_some_and(|(_, unique)| unique))
            .map(|i| i as u32)
            .collect();
        order.sort_unstable_by(|&a, &b| self.cmp_uidl(a as usize, b as usize));
        Present {
            listing: self,
            order,
        }
    }

    fn uidl_bytes(&self, i: usize) -> &[u8] {
        self.arena_bytes(self.entries[i].uidl)
    }

    /// The UIDL at `off` in the arena; nothing for [`NO_UIDL`].
    fn arena_bytes(&self, off: u32) -> &[u8] {
        if off == NO_UIDL {
            return &[];
        }
        let off = off as usize;
        let len = usize::from(self.arena[off] & !SHARED);
        &self.arena[off + 1..off + 1 + len]
    }

    fn cmp_uidl(&self, a: usize, b: usize) -> Ordering {
        self.uidl_bytes(a).cmp(self.uidl_bytes(b))
    }

    /// Both listings are in: marks shared UIDLs, drops UIDL entries LIST
    /// did not name, and puts the rest in message-number order.
    fn finish(mut self) -> Listing {
        // Shared UIDLs (UIDL entries LIST did not name included): sorted
        // by UIDL in place, equal neighbours share theirs.
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_unstable_by(|a, b| self.arena_bytes(a.uidl).cmp(self.arena_bytes(b.uidl)));
        for i in 1..entries.len() {
            let (a, b) = (entries[i - 1].uidl, entries[i].uidl);
            if a != NO_UIDL && self.arena_bytes(a) == self.arena_bytes(b) {
                self.arena[a as usize] |= SHARED;
                self.arena[b as usize] |= SHARED;
            }
        }
        entries.retain(|e| e.size != UNLISTED);
        entries.sort_unstable_by_key(|e| (e.n, e.uidl));
        entries.shrink_to_fit();
        self.arena.shrink_to_fit();
        self.entries = entries;
        self
    }
}

impl ListingSink for Listing {
    fn uid(&mut self, n: u32, uid: &[u8]) {
        if !pop3::proto::is_valid_uid(uid) {
            // No stable identity: the message is listed by LIST alone.
            return;
        }
        let Ok(off) = u32::try_from(self.arena.len()) else {
            return;
        };
        if self.entries.last().is_some_and(|e| e.n > n) {
            self.unsorted = true;
        }
        // Valid UIDLs are 1 to 70 bytes: the length fits below SHARED.
        self.arena.push(uid.len() as u8);
        self.arena.extend_from_slice(uid);
        self.entries.push(Entry {
            size: UNLISTED,
            n,
            uidl: off,
        });
    }

    fn size(&mut self, n: u32, size: u64) {
        // A size of u64::MAX would read as "unlisted"; it is far past any
        // limit anyway.
        let size = size.min(UNLISTED - 1);
        let uids = *self.uids.get_or_insert_with(|| {
            if self.unsorted {
                // Stable: of two UIDL entries for one number, the last
                // one counts.
                self.entries.sort_by_key(|e| e.n);
            }
            self.entries.len()
        });
        // The last UIDL entry for `n`, if LIST has not named it already.
        let after = self.entries[..uids].partition_point(|e| e.n <= n);
        match after.checked_sub(1) {
            Some(i) if self.entries[i].n == n && self.entries[i].size == UNLISTED => {
                self.entries[i].size = size;
            }
            _ => self.entries.push(Entry {
                size,
                n,
                uidl: NO_UIDL,
            }),
        }
    }
}

/// The unique UIDLs of a [`Listing`], sorted.
pub(super) struct Present<'l> {
    listing: &'l Listing,
    order: Vec<u32>,
}

impl Present<'_> {
    /// Whether the server lists `uidl` for exactly one message.
    pub fn contains(&self, uidl: &str) -> bool {
        self.order
            .binary_search_by(|&i| self.listing.uidl_bytes(i as usize).cmp(uidl.as_bytes()))
            .is_ok()
    }
}

/// The mailbox as listed, and whether the server has UIDL.
pub(super) fn listing(
    session: &mut Session<Stream>,
    caps: &Capabilities,
) -> Result<(Listing, bool), Error> {
    let mut listing = Listing::default();
    // A -ERR to UIDL means the server has none (RFC 1939: optional).
    let has_uidl = if caps.uidl || caps.raw.is_empty() {
        session
            .list_and_uidl_into(caps.pipelining, &mut listing)
            .map_err(Error::Pop3)?
    } else {
        session.list_into(&mut listing).map_err(Error::Pop3)?;
        false
    };
    Ok((listing.finish(), has_uidl))
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

    /// The listing built as popspool built it before it was compact (one
    /// hash table by number, one counting UIDLs): the oracle.
    fn oracle(
        uids: &[(u32, Vec<u8>)],
        sizes: &[(u32, u64)],
    ) -> Vec<(u32, u64, Option<String>, Option<String>)> {
        use std::collections::HashMap;
        let mut by_n: HashMap<u32, String> = HashMap::new();
        let mut seen: HashMap<String, u32> = HashMap::new();
        for (n, u) in uids {
            if let pop3::Uid::Valid(u) = pop3::Uid::from_bytes(u) {
                *seen.entry(u.clone()).or_default() += 1;
                by_n.insert(*n, u);
            }
        }
        sizes
            .iter()
            .map(|&(n, size)| {
                let uidl = by_n.remove(&n);
                let key = uidl
                    .as_deref()
                    .filter(|u| seen.get(*u) == Some(&1))
                    .map(|u| journal::Key::uidl(u).to_string());
                (n, size, key, uidl)
            })
            .collect()
    }

    fn compact(uids: &[(u32, Vec<u8>)], sizes: &[(u32, u64)]) -> Listing {
        let mut l = Listing::default();
        for (n, u) in uids {
            l.uid(*n, u);
        }
        for &(n, size) in sizes {
            ListingSink::size(&mut l, n, size);
        }
        l.finish()
    }

    #[test]
    fn compact_listing_matches_the_plain_one() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        let names: [&[u8]; 6] = [b"a", b"b", b"c", b"", b"bad\x7f", &[b'x'; 71]];
        for round in 0..2000 {
            let count = next(12) as u32;
            let (mut uids, mut sizes) = (Vec::new(), Vec::new());
            for n in 1..=count {
                if next(8) != 0 {
                    uids.push((n, names[next(6) as usize].to_vec()));
                }
                if next(8) != 0 {
                    sizes.push((n, next(5000)));
                }
            }
            // LIST in order, as servers send it; UIDL shuffled, with a
            // number repeated or one LIST lacks.
            if round % 5 == 0 && uids.len() > 1 {
                uids.swap(0, 1);
            }
            if round % 7 == 0 {
                uids.push((count + 1, b"a".to_vec()));
            }
            if round % 11 == 0 {
                if let Some(&(n, _)) = uids.first() {
                    uids.push((n, b"late".to_vec()));
                }
            }
            let want = oracle(&uids, &sizes);
            let l = compact(&uids, &sizes);
            let got: Vec<_> = (0..l.len())
                .map(|i| {
                    let m = l.get(i);
                    (m.n, m.size, m.key.map(|k| k.to_string()), m.uidl)
                })
                .collect();
            assert_eq!(got, want, "round {round}: {uids:?} {sizes:?}");
            let present = l.present();
            for (_, _, key, uidl) in &want {
                if let Some(u) = uidl {
                    assert_eq!(present.contains(u), key.is_some(), "round {round}: {u}");
                }
            }
            assert!(!present.contains("nowhere"));
        }
    }

    #[test]
    fn sixteen_bytes_a_message() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
    }
}
