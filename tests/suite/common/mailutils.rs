//! A private, real GNU Mailutils pop3d for integration tests: the suite's
//! second server next to Dovecot.
//!
//! [`Mailutils::start`] runs `tests/mailutils/mailutils.sh start` in a fresh
//! directory under the system temp dir: its own configuration, the test CA
//! and server certificate, users in a private virtual-domain file (logging
//! in as `<user>@popspool.test`), Maildir mailboxes, POP3 that requires STLS
//! and POP3S on free loopback ports. Dropping the value stops the server and
//! removes the directory. Each call gets its own server.
//!
//! Needs root and Debian's `mailutils-pop3d` (`tests/deps.sh` installs it);
//! the tests that start one are `#[ignore = "needs root and Mailutils"]`.
//! The header of `tests/mailutils/mailutils.sh` has the set-up and what this
//! server does differently from Dovecot: an APOP timestamp in every greeting
//! but no APOP secrets, no SASL, and an `X-UIDL` header it adds to every
//! message it sends ([`without_x_uidl`]).

use std::ffi::OsStr;
use std::fs;
use std::path::PathBuf;

use crate::common::dovecot::{MAIL_GID, MAIL_UID};
use crate::common::server::{deliver_to_maildir, maildir_count, MaildirName, Script, TestServer};

/// The virtual domain of every user: the login name is `<user>@DOMAIN`.
pub const DOMAIN: &str = "popspool.test";

/// Set this variable to keep the server's directory after the test (the
/// server is still stopped) for a look at `pop3d.log` and the mail.
pub const KEEP_ENV: &str = "POPSPOOL_KEEP_MAILUTILS";

const SCRIPT: Script = Script { name: "mailutils" };

/// A running private Mailutils pop3d; dropping it stops the server and
/// removes `dir`.
pub struct Mailutils {
    /// Everything of this server lives here: `pop3d.conf`, `pop3d.log`,
    /// `ca.pem`, `virtdomain/`, `mail/<user>/INBOX`, ...
    pub dir: PathBuf,
    /// Plain POP3 port; requires STLS before a login.
    pub pop3_port: u16,
    /// Implicit-TLS POP3S port.
    pub pop3s_port: u16,
}

impl Mailutils {
    /// Starts a fresh server in a new directory; panics (with the script's
    /// stderr and the log tail) if it does not come up.
    pub fn start() -> Mailutils {
        let (dir, pop3_port, pop3s_port) = SCRIPT.start(&[]);
        Mailutils {
            dir,
            pop3_port,
            pop3s_port,
        }
    }

    /// Adds a user (`A-Z a-z 0-9 . _ -`) with an empty Maildir; the
    /// password is stored as a SHA-512 crypt hash, so USER/PASS is the one
    /// way in. Returns the login name, [`login`]`(user)`.
    pub fn add_user(&self, user: &str, password: &str) -> String {
        SCRIPT.run(&[
            OsStr::new("adduser"),
            self.dir.as_os_str(),
            OsStr::new(user),
            OsStr::new(password),
        ]);
        login(user)
    }

    /// Delivers messages in order into the user's `INBOX/new`, as an MDA
    /// does (LF line ends, `tmp/` then `new/`).
    pub fn deliver_many(&self, user: &str, msgs: &[Vec<u8>]) {
        deliver_to_maildir(
            &self.maildir(user),
            user,
            (MAIL_UID, MAIL_GID),
            MaildirName::Plain,
            msgs.iter().map(Vec::as_slice),
        );
    }

    /// Messages in the user's `new/` and `cur/`; deleted ones disappear at
    /// QUIT.
    pub fn count(&self, user: &str) -> usize {
        maildir_count(&self.maildir(user))
    }

    /// PEM of the test CA that signed the server certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The user's Maildir: Mailutils' virtual users have theirs at
    /// `<home>/INBOX`.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.join("mail").join(user).join("INBOX")
    }

    /// pop3d's log so far (logins, failures, sessions ending).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pop3d.log")).unwrap_or_default()
    }
}

/// The name `user` logs in with.
pub fn login(user: &str) -> String {
    format!("{user}@{DOMAIN}")
}

/// `message` (as RETR returned it, dot-unstuffed) without the
/// `X-UIDL: <uidl>` line Mailutils adds as its last header line; panics if
/// that line is not there exactly so. What is left is the message as
/// delivered, in [`stored_form`](crate::common::dovecot::stored_form).
pub fn without_x_uidl(message: &[u8], uidl: &str) -> Vec<u8> {
    let line = format!("X-UIDL: {uidl}\r\n");
    // The header ends at the first empty line (a message delivered without
    // a header gets the X-UIDL line as its only one).
    let header_end = find(message, b"\r\n\r\n").map_or(message.len(), |i| i + 2);
    let header = &message[..header_end];
    let at = header_end.checked_sub(line.len());
    assert!(
        at.is_some_and(|at| &header[at..] == line.as_bytes()),
        "no {line:?} at the end of the header of {:?}",
        String::from_utf8_lossy(&header[..header.len().min(2000)])
    );
    let x_uidl_lines = header
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"X-UIDL:"))
        .count();
    assert_eq!(x_uidl_lines, 1, "{:?}", String::from_utf8_lossy(header));
    let at = at.unwrap_or_default();
    [&message[..at], &message[header_end..]].concat()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl TestServer for Mailutils {
    fn pop3_port(&self) -> u16 {
        self.pop3_port
    }
    fn pop3s_port(&self) -> u16 {
        self.pop3s_port
    }
    fn ca_file(&self) -> PathBuf {
        Mailutils::ca_file(self)
    }
    fn add_mailbox(&self, user: &str, password: &str) -> String {
        self.add_user(user, password)
    }
    fn maildir(&self, user: &str) -> PathBuf {
        Mailutils::maildir(self, user)
    }
    fn deliver_many(&self, user: &str, msgs: &[Vec<u8>]) {
        Mailutils::deliver_many(self, user, msgs)
    }
    fn count(&self, user: &str) -> usize {
        Mailutils::count(self, user)
    }
    /// No SASL; inside TLS popspool ranks USER before APOP.
    fn auto_mechanism(&self) -> &'static str {
        "user"
    }
    fn as_delivered(&self, message: &[u8], uidl: &str) -> Vec<u8> {
        without_x_uidl(message, uidl)
    }
}

impl Drop for Mailutils {
    fn drop(&mut self) {
        SCRIPT.stop(&self.dir, &self.dir.join("pop3d.log"), KEEP_ENV);
    }
}
