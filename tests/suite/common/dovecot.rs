//! A private, real Dovecot POP3 server for integration tests.
//!
//! [`Dovecot::start`] runs `tests/dovecot/dovecot.sh start` in a fresh
//! directory under the system temp dir: its own CA and server certificate,
//! its own users (uid 5000), plain POP3 (with STLS) and POP3S on free
//! loopback ports. Dropping the value stops the server and removes the
//! directory. Each call gets its own server, so tests run in parallel freely.
//!
//! Needs root and Debian's `dovecot-core`, `dovecot-pop3d`, `openssl` and
//! `python3` (`tests/deps.sh` installs them); the tests that start one are
//! `#[ignore = "needs root and Dovecot"]`. How the server is set up (its
//! configuration, certificates, users and delivery) is in the header and
//! the comments of `tests/dovecot/dovecot.sh`.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::server::{deliver_to_maildir, maildir_count, MaildirName, Script, TestServer};

/// Owner of every test mailbox. Dovecot refuses uid 0 for mail access; 5000
/// needs no `/etc/passwd` entry.
pub const MAIL_UID: u32 = 5000;
/// Group of every test mailbox.
pub const MAIL_GID: u32 = 5000;

/// The server's loopback address. Connections from 127.0.0.1 to here count
/// as "secured" for Dovecot, so cleartext logins are allowed.
pub const HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The server also listens on 127.0.0.2, same ports. A client connecting to
/// it comes from 127.0.0.1, a different address, so Dovecot treats the
/// connection as NOT secured: no USER/PLAIN/LOGIN without TLS. The server
/// certificate does not name 127.0.0.2, which makes this address handy for
/// hostname-mismatch tests too.
pub const INSECURE_HOST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Set this variable to keep the server's directory after the test (the
/// server is still stopped) for a look at `dovecot.log` and the mail.
pub const KEEP_ENV: &str = "POPSPOOL_KEEP_DOVECOT";

/// A running private Dovecot; dropping it stops the server and removes `dir`.
pub struct Dovecot {
    /// Everything of this server lives here: `dovecot.conf`, `dovecot.log`,
    /// `ca.pem`, `server.pem`, `passwd`, `mail/<user>/Maildir`, ...
    pub dir: PathBuf,
    /// Plain POP3 port; offers STLS.
    pub pop3_port: u16,
    /// Implicit-TLS POP3S port.
    pub pop3s_port: u16,
}

const SCRIPT: Script = Script { name: "dovecot" };

impl Dovecot {
    /// Starts a fresh server in a new directory; panics (with the script's
    /// stderr and the log tail) if it does not come up.
    pub fn start() -> Dovecot {
        Self::start_inner(None)
    }

    /// Like [`Dovecot::start`], offering only `mechanisms` (Dovecot's
    /// `auth_mechanisms`, e.g. `"plain login"`; APOP only if `apop` is listed).
    pub fn start_with_mechanisms(mechanisms: &str) -> Dovecot {
        Self::start_inner(Some(mechanisms))
    }

    fn start_inner(mechanisms: Option<&str>) -> Dovecot {
        let extra = match mechanisms {
            Some(m) => vec!["--mechanisms", m],
            None => vec![],
        };
        let (dir, pop3_port, pop3s_port) = SCRIPT.start(&extra);
        Dovecot {
            dir,
            pop3_port,
            pop3s_port,
        }
    }

    /// Adds a user who can log in at once with any mechanism (USER/PASS,
    /// APOP, PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256; EXTERNAL
    /// for `certuser` with [`Self::client_cert`]). Names may
    /// use `A-Z a-z 0-9 . _ @ -`; passwords anything but `:`, CR and LF.
    pub fn add_user(&self, user: &str, password: &str) {
        SCRIPT.run(&[
            OsStr::new("adduser"),
            self.dir.as_os_str(),
            OsStr::new(user),
            OsStr::new(password),
        ]);
    }

    /// A user whose password is stored only as a crypt hash: Dovecot then
    /// refuses SCRAM and CRAM-MD5 for it although it advertises them.
    pub fn add_user_hashed(&self, user: &str, password: &str) {
        SCRIPT.run(&[
            OsStr::new("adduser"),
            self.dir.as_os_str(),
            OsStr::new(user),
            OsStr::new(password),
            OsStr::new("--hashed"),
        ]);
    }

    /// Delivers one message into the user's `Maildir/new`, as an MDA does.
    /// RETR will return [`stored_form`]`(raw)`.
    pub fn deliver(&self, user: &str, raw: &[u8]) {
        self.deliver_all(user, std::iter::once(raw));
    }

    /// Delivers messages in order: message `i` gets POP3 number `i + 1` (when
    /// the mailbox was empty). Done in-process, not by forking the script.
    pub fn deliver_many(&self, user: &str, msgs: &[Vec<u8>]) {
        self.deliver_all(user, msgs.iter().map(Vec::as_slice));
    }

    /// Same rules as `dovecot.sh deliver`: stored with LF line ends, written
    /// in `tmp/`, owned by 5000:5000, renamed into `new/` as
    /// `<secs>.M<usecs>P<pid>Q<n>.popspool-harness,S=<size>,W=<CRLF size>`.
    fn deliver_all<'a>(&self, user: &str, msgs: impl IntoIterator<Item = &'a [u8]>) {
        deliver_to_maildir(
            &self.maildir(user),
            user,
            (MAIL_UID, MAIL_GID),
            MaildirName::DovecotSizes,
            msgs,
        );
    }

    /// Messages in the user's `new/` and `cur/` (what a POP3 STAT would count
    /// once Dovecot has looked; deleted messages disappear at QUIT).
    pub fn count(&self, user: &str) -> usize {
        maildir_count(&self.maildir(user))
    }

    /// PEM of the test CA that signed the server certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// PEM of an unrelated CA: verification against it must fail.
    pub fn wrong_ca_file(&self) -> PathBuf {
        self.dir.join("wrong-ca.pem")
    }

    /// PEM client certificate and key with CN `certuser`, signed by the
    /// test CA: Dovecot logs it in as `certuser` with SASL EXTERNAL.
    pub fn client_cert(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("client.pem"), self.dir.join("client.key"))
    }

    /// A client certificate for `certuser` signed by the wrong CA.
    pub fn wrong_client_cert(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.join("wrong-client.pem"),
            self.dir.join("wrong-client.key"),
        )
    }

    /// SHA-256 of the server certificate (DER), lowercase hex, no colons.
    pub fn fingerprint(&self) -> String {
        let path = self.dir.join("server.sha256");
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// The user's Maildir (with `tmp/`, `new/`, `cur/`).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.join("mail").join(user).join("Maildir")
    }

    /// Dovecot's log so far (logins with mechanism, auth failures, errors).
    /// It lags: processes log through Dovecot's log process, so a line may
    /// appear a little after the client saw the reply; see [`Self::wait_log`].
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }

    /// Waits (up to 5 s) until the log contains `needle`; returns the log.
    /// Panics with the log on timeout.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            if Instant::now() > deadline {
                panic!(
                    "{needle:?} not in {}/dovecot.log:\n{log}",
                    self.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl TestServer for Dovecot {
    fn pop3_port(&self) -> u16 {
        self.pop3_port
    }
    fn pop3s_port(&self) -> u16 {
        self.pop3s_port
    }
    fn ca_file(&self) -> PathBuf {
        Dovecot::ca_file(self)
    }
    fn add_mailbox(&self, user: &str, password: &str) -> String {
        self.add_user(user, password);
        user.to_owned()
    }
    fn maildir(&self, user: &str) -> PathBuf {
        Dovecot::maildir(self, user)
    }
    fn deliver_many(&self, user: &str, msgs: &[Vec<u8>]) {
        Dovecot::deliver_many(self, user, msgs)
    }
    fn count(&self, user: &str) -> usize {
        Dovecot::count(self, user)
    }
    fn auto_mechanism(&self) -> &'static str {
        "scram-sha-256"
    }
    /// Dovecot sends the stored message as it is.
    fn as_delivered(&self, message: &[u8], _uidl: &str) -> Vec<u8> {
        message.to_vec()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        SCRIPT.stop(&self.dir, &self.dir.join("dovecot.log"), KEEP_ENV);
    }
}

/// What is written to disk: every CRLF becomes LF (left to right, like
/// `perl -pe 's/\r\n/\n/g'` in the script); lone CRs stay.
pub fn disk_form(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\r' && raw.get(i + 1) == Some(&b'\n') {
            out.push(b'\n');
            i += 2;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    out
}

/// Dovecot's wire form of the stored bytes: a CR before every LF that lacks
/// one. Shared by [`stored_form`] and [`listed_size`].
fn crlf_form(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.len() + stored.len() / 16);
    for (i, &b) in stored.iter().enumerate() {
        if b == b'\n' && (i == 0 || stored[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// The exact bytes a POP3 client gets from RETR for a message delivered as
/// `raw`, after dot-unstuffing and without the terminating `.` line.
///
/// Lines end in CRLF whatever `raw` used (CRLF or LF). A last line without
/// a line end gets CRLF appended (Dovecot always ends the data with CRLF
/// before the `.` line); an empty message comes back as a single CRLF.
pub fn stored_form(raw: &[u8]) -> Vec<u8> {
    let stored = disk_form(raw);
    let mut out = crlf_form(&stored);
    if stored.last() != Some(&b'\n') {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The message size Dovecot reports in LIST and STAT (and in RETR's
/// "+OK N octets"): the CRLF size of the stored message, without the CRLF
/// Dovecot adds to a last line that has none. It is the `W=` of the name.
pub fn listed_size(raw: &[u8]) -> usize {
    crlf_form(&disk_form(raw)).len()
}

/// Connects to `dst` from the local address `src` (e.g. 127.0.0.2 to
/// 127.0.0.1, which Dovecot does not count as secured). std cannot bind a
/// client socket before connecting; socket2 can.
pub fn connect_from(src: Ipv4Addr, dst: SocketAddrV4) -> io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&std::net::SocketAddr::from((src, 0)).into())?;
    sock.connect(&std::net::SocketAddr::V4(dst).into())?;
    Ok(sock.into())
}
