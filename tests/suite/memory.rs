//! popspool's memory does not grow with what the server holds (README,
//! "Performance", "Memory"): the real binary, measured by GNU time's
//! maximum resident set size, against a private Dovecot with a big message,
//! and against a scripted server claiming a huge mailbox. Bounded versions
//! of the full-size cases, which tests/bench/memory.sh runs by setting
//! [`FULL_ENV`] (and `POPSPOOL_MEMORY_BIN` to the release binary).

use std::fs;
use std::io::Write;

use crate::common::bigbox::{self, BigBox};
use crate::common::dovecot::{listed_size, Dovecot};
use crate::common::mail::big_message;
use crate::common::popspool::{entries, once_measured, Setup};

/// The bound the README promises for `--once`, in KiB.
const MAX_RSS_KIB: u64 = 64 << 10;

/// Set: the full-size cases (a 300 MiB message, a million-message listing).
pub const FULL_ENV: &str = "POPSPOOL_MEMORY_FULL";

fn full() -> bool {
    std::env::var_os(FULL_ENV).is_some()
}

fn dovecot_account(name: &str, dc: &Dovecot, extra: &str) -> String {
    format!(
        "[account {name}]\nhost = localhost\nport = {}\ntls = implicit\nca_file = {}\nuser = {name}\n\
         password = secret-{name}\n{extra}\n",
        dc.pop3s_port,
        dc.ca_file().display()
    )
}

/// A 59 MiB message with a 43 MiB base64 attachment (full size: 301 MiB,
/// 220 MiB) is decoded (and, with `mime = no`, its headers read) from
/// `message.eml` in bounded chunks: peak RSS of the whole `--once` stays
/// under 64 MiB, and the attachment is exact.
#[test]
#[ignore = "needs root and Dovecot"]
fn a_big_message_takes_bounded_memory() {
    let data_len = if full() { 220 << 20 } else { 43 << 20 };
    let (raw, sha) = big_message(data_len);
    let dc = Dovecot::start();
    for user in ["decoded", "headers"] {
        dc.add_user(user, &format!("secret-{user}"));
        dc.deliver(user, &raw);
    }
    let size = listed_size(&raw) as u64;
    for (user, mime) in [("decoded", "yes"), ("headers", "no")] {
        let s = Setup::new(&format!("memory-{user}"));
        s.write_config(&dovecot_account(user, &dc, &format!("mime = {mime}")));
        let (code, err, rss) = once_measured(&s);
        assert_eq!(code, Some(0), "{err}");
        let got = entries(&s.account_spool(user), "new");
        assert_eq!(got.len(), 1, "{err}");
        let e = &got[0];
        assert_eq!(e.message.len() as u64, size);
        assert_eq!(e.meta["headers"]["subject"], "big");
        assert_eq!(e.meta["kind"], "file");
        let dir = s.account_spool(user).join("new").join(&e.id);
        if mime == "yes" {
            let att = &e.meta["attachments"][0];
            assert_eq!(att["sha256"], sha.as_str());
            assert_eq!(att["size"], data_len as u64);
            let file = fs::read(dir.join("attachments/big.bin")).unwrap();
            assert_eq!(popspool::hex::lower(&openssl::sha::sha256(&file)), sha);
            assert_eq!(
                fs::read_to_string(dir.join("body.txt")).unwrap(),
                "see attached"
            );
        } else {
            assert!(!dir.join("attachments").exists());
        }
        eprintln!(
            "mime = {mime}: {} MiB message, peak RSS {rss} KiB",
            size >> 20
        );
        assert!(rss <= MAX_RSS_KIB, "mime = {mime}: peak RSS {rss} KiB");
    }
    let _ = std::io::stderr().flush();
}

/// A server listing 200,000 messages (full size: 1,000,000) in UIDL and
/// LIST: every message is seen (those over `max_message_size` are reported
/// once each, RETR goes to exactly the others), those are delivered under
/// their own UIDL, and peak RSS stays within a bound that grows by at most
/// 48 bytes a listed message (64 MiB for a million, the
/// bound README "Performance" holds it to, what the binary needs before
/// it lists anything included).
#[test]
fn a_huge_listing_takes_bounded_memory() {
    let count: u32 = if full() { 1_000_000 } else { 200_000 };
    let served = |n: u32| n % 1000 == 7;
    let fake = BigBox::start(count, served);
    let s = Setup::new("memory-listing");
    s.write_config(&fake.account("big", "delete = no\nmax_message_size = 1000"));
    let (code, err, rss) = once_measured(&s);
    assert_eq!(code, Some(0), "{}", err.lines().last().unwrap_or(""));
    let want: Vec<u32> = (1..=count).filter(|&n| served(n)).collect();
    assert!(
        fake.retrieved() == want,
        "RETR not sent for exactly the served messages"
    );
    let left = err
        .lines()
        .filter(|l| l.contains("over max_message_size"))
        .count();
    assert_eq!(
        left,
        (count as usize) - want.len(),
        "messages reported as too large"
    );
    let mut delivered: Vec<(u32, String)> = entries(&s.account_spool("big"), "new")
        .iter()
        .map(|e| {
            let subject = e.meta["headers"]["subject"].as_str().unwrap();
            let n: u32 = subject.strip_prefix("m ").unwrap().parse().unwrap();
            assert_eq!(e.message, bigbox::message(n).as_bytes());
            (n, e.meta["uidl"].as_str().unwrap().to_string())
        })
        .collect();
    delivered.sort();
    let want: Vec<(u32, String)> = want.into_iter().map(|n| (n, bigbox::uidl(n))).collect();
    assert!(
        delivered == want,
        "delivered {} of {}",
        delivered.len(),
        want.len()
    );
    let bound = 16 * 1024 + u64::from(count) * 48 / 1024;
    eprintln!("{count} messages listed: peak RSS {rss} KiB (bound {bound} KiB)");
    assert!(rss <= bound.min(MAX_RSS_KIB), "peak RSS {rss} KiB");
}
