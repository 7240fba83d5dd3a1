//! What the suite's private POP3 servers (Dovecot, GNU Mailutils pop3d)
//! share: running their harness scripts (a fresh directory, start on free
//! loopback ports, stop and clean up when the value drops), Maildir delivery
//! as an MDA does it, and [`TestServer`], what a scenario needs of a server
//! so that one test body runs against either.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{chown, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{self, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::dovecot::disk_form;

/// A private POP3 server as the scenarios see it: two ports, the CA that
/// signed its certificate, users with Maildir mailboxes.
pub trait TestServer {
    /// Plain POP3; a client must upgrade with STLS.
    fn pop3_port(&self) -> u16;
    /// Implicit-TLS POP3S.
    fn pop3s_port(&self) -> u16;
    /// PEM of the test CA that signed the server certificate (`localhost`).
    fn ca_file(&self) -> PathBuf;
    /// Adds `user` with an empty mailbox; returns the name to log in with.
    fn add_mailbox(&self, user: &str, password: &str) -> String;
    /// The user's Maildir (`tmp/`, `new/`, `cur/`).
    fn maildir(&self, user: &str) -> PathBuf;
    /// Delivers messages into the user's `new/`, in order.
    fn deliver_many(&self, user: &str, msgs: &[Vec<u8>]);
    /// Messages in the user's mailbox (deleted ones are gone after QUIT).
    fn count(&self, user: &str) -> usize;
    /// The mechanism popspool's `auth = auto` picks on this server over TLS.
    fn auto_mechanism(&self) -> &'static str;
    /// A spool entry's message without what this server adds when it sends
    /// a message (checked to be there): compare it with
    /// [`stored_form`](crate::common::dovecot::stored_form) of what was
    /// delivered. `uidl` is the entry's, from `meta.json`.
    fn as_delivered(&self, message: &[u8], uidl: &str) -> Vec<u8>;
}

/// One of the harness scripts, `tests/<name>/<name>.sh`.
pub struct Script {
    /// `dovecot`, `mailutils`: the script's name, its directory's and the
    /// prefix of the server directories it makes.
    pub name: &'static str,
}

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

impl Script {
    fn path(&self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/{0}/{0}.sh", self.name))
    }

    /// `bash <script>`: works even if the executable bit got lost in a copy.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(self.path());
        cmd
    }

    /// Runs the script with `args`, panics with its stderr if it fails,
    /// returns its stdout.
    pub fn run(&self, args: &[&OsStr]) -> String {
        let mut cmd = self.cmd();
        cmd.args(args);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        if !out.status.success() {
            panic!(
                "{cmd:?} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8(out.stdout).expect("script output is UTF-8")
    }

    /// `<script> start DIR <extra> --watch-pid <us>` in a fresh directory
    /// under the system temp dir; returns it with the POP3 and POP3S ports.
    /// Panics with the script's stderr if the server does not come up.
    pub fn start(&self, extra: &[&str]) -> (PathBuf, u16, u16) {
        let dir = loop {
            let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("popspool-{}-{}-{n}", self.name, process::id()));
            match fs::create_dir(&dir) {
                Ok(()) => break dir,
                // Left over from an earlier process that had our pid.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create {}: {e}", dir.display()),
            }
        };
        let mut cmd = self.cmd();
        cmd.arg("start").arg(&dir).args(extra);
        // If this test process dies without running destructors, the
        // script's watchdog stops the server and removes the directory.
        cmd.arg("--watch-pid").arg(process::id().to_string());
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        if !out.status.success() {
            let _ = fs::remove_dir_all(&dir);
            panic!(
                "{}.sh start failed ({}):\n{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let port = |key: &str| -> u16 {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {key}=N in {}.sh output: {stdout}", self.name))
        };
        (dir, port("POP3_PORT"), port("POP3S_PORT"))
    }

    /// For `Drop`: stops the server and removes `dir` (kept if the variable
    /// `keep_env` is set). Never panics (a second panic while unwinding
    /// aborts the run); if the test is failing, shows the tail of `log`.
    pub fn stop(&self, dir: &Path, log: &Path, keep_env: &str) {
        if std::thread::panicking() {
            let text = fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- last lines of {}:\n{}",
                log.display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        match self.cmd().arg("stop").arg(dir).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "{}.sh stop {} failed: {}",
                self.name,
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("cannot run {}.sh stop: {e}", self.name),
        }
        if std::env::var_os(keep_env).is_some() {
            eprintln!("{keep_env} set: keeping {}", dir.display());
        } else if let Err(e) = fs::remove_dir_all(dir) {
            eprintln!("cannot remove {}: {e}", dir.display());
        }
    }
}

/// How a delivered file is named after its unique base name.
pub enum MaildirName {
    /// Just the base name.
    Plain,
    /// Dovecot's `,S=<size>,W=<CRLF size>`, which spares it a stat and a
    /// read per message.
    DovecotSizes,
}

/// Delivers messages into `md/new` as an MDA does: stored with LF line ends
/// ([`disk_form`]), written in `tmp/`, owned by `uid:gid`, renamed into
/// `new/`. Message `i` sorts before message `i + 1`.
pub fn deliver_to_maildir<'a>(
    md: &Path,
    user: &str,
    (uid, gid): (u32, u32),
    naming: MaildirName,
    msgs: impl IntoIterator<Item = &'a [u8]>,
) {
    assert!(
        md.join("new").is_dir(),
        "no mailbox for user {user:?}: add the user first"
    );
    for raw in msgs {
        let stored = disk_form(raw);
        let base = unique_base_name();
        let tmp = md.join("tmp").join(&base);
        let fail = |what: &str, e: io::Error| -> ! {
            panic!("deliver to {user}: {what} {}: {e}", tmp.display())
        };
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .unwrap_or_else(|e| fail("create", e));
        f.write_all(&stored).unwrap_or_else(|e| fail("write", e));
        drop(f);
        chown(&tmp, Some(uid), Some(gid)).unwrap_or_else(|e| fail("chown", e));
        let name = match naming {
            MaildirName::Plain => base,
            MaildirName::DovecotSizes => format!(
                "{base},S={},W={}",
                stored.len(),
                crate::common::dovecot::listed_size(raw)
            ),
        };
        fs::rename(&tmp, md.join("new").join(name)).unwrap_or_else(|e| fail("rename", e));
    }
}

/// Messages in a Maildir's `new/` and `cur/` (dot files are a server's
/// own, such as Mailutils' `.mu-prop`).
pub fn maildir_count(md: &Path) -> usize {
    ["new", "cur"]
        .iter()
        .map(|sub| {
            let dir = md.join(sub);
            fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .count()
        })
        .sum()
}

/// Maildir base names sort by (seconds, microseconds), which is how Dovecot
/// orders new mail, so each name gets a strictly later time than the last.
fn unique_base_name() -> String {
    static LAST_USEC: Mutex<u64> = Mutex::new(0);
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64;
    let t = {
        let mut last = LAST_USEC.lock().unwrap_or_else(|e| e.into_inner());
        *last = now.max(*last + 1);
        *last
    };
    format!(
        "{}.M{:06}P{}Q{}.popspool-harness",
        t / 1_000_000,
        t % 1_000_000,
        process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}
