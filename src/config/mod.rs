//! Configuration: the INI file (popspool.ini(5), and the README's
//! "Configuration") turned into a validated, immutable [`Config`]. This
//! module owns the public types and [`load`]; the work is done in stages, as
//! ripgrep's `LowArgs` → `HiArgs`:
//!
//! - `keys`: the one table of keys (name, sections, value kind, secrecy);
//! - `scan`: text to sections and raw `key = value` entries with their
//!   lines, refusing everything structural;
//! - `values`: one value to its type;
//! - `build`: the typed [`Config`], with `[global]` defaults, the defaults of
//!   popspool.ini(5), the rules between keys and the private-file rule.
//!
//! Configuration names mechanisms and secret sources; it runs nothing and
//! connects nowhere (`secret` runs a password command, `tls` connects).

mod access;
mod build;
mod keys;
mod scan;
#[cfg(test)]
mod testkit;
mod values;

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exit::Exit;
use crate::mechanism::Mechanism;
use crate::secret::Password;

pub use keys::{ACCOUNT_KEYS, GLOBAL_KEYS};
pub use values::mailbox_address;

/// Where the configuration lives when `-c` is not given.
pub const DEFAULT_PATH: &str = "/etc/popspool/popspool.ini";

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages).
    pub path: PathBuf,
    /// Global `spool` (default `/var/spool/popspool`).
    pub spool: PathBuf,
    /// Global `state_dir` (default `/var/lib/popspool`).
    pub state_dir: PathBuf,
    /// Global `log_level`, if set.
    pub log_level: Option<log::LevelFilter>,
    /// Accounts in file order.
    pub accounts: Vec<Account>,
}

/// `tls = implicit | starttls | none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// POP3S: TLS from the first byte (port 995).
    Implicit,
    /// STLS (RFC 2595) after the greeting; fail if not offered.
    StartTls,
    /// No TLS at all.
    None,
}

/// `auth = ...`: `auto` or the one mechanism to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// The strongest the server offers that policy allows.
    Auto,
    /// Exactly this mechanism.
    Only(Mechanism),
}

impl Auth {
    /// Every value with its name in the `auth` key.
    pub const ALL: [(&'static str, Auth); 12] = {
        let mut all = [("auto", Auth::Auto); 12];
        let mut i = 0;
        while i < Mechanism::ALL.len() {
            let m = Mechanism::ALL[i];
            all[i + 1] = (m.name(), Auth::Only(m));
            i += 1;
        }
        all
    };

    /// The name as written in the `auth` key.
    pub fn name(self) -> &'static str {
        match self {
            Auth::Auto => "auto",
            Auth::Only(m) => m.name(),
        }
    }
}

/// Where the password comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// No secret: `auth = external`, where the TLS client certificate is the credential.
    None,
    /// `password = ...` inline.
    Inline(Password),
    /// `password_file = PATH`: first line of the file, read fresh on each use.
    File(PathBuf),
    /// `password_command = ...`: argv (split without a shell), first line of stdout.
    Command(Vec<String>),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::None => f.write_str("None"),
            SecretSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            SecretSource::File(p) => f.debug_tuple("File").field(p).finish(),
            SecretSource::Command(argv) => f.debug_tuple("Command").field(argv).finish(),
        }
    }
}

/// `mdn = never | auto` (README, "Acknowledgments (MDN)").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MdnMode {
    /// Never answer a `Disposition-Notification-To` request.
    Never,
    /// Answer each request once its entry is durable, at most once.
    Auto,
}

/// Where and as whom MDNs are sent (`smtp_*`, `mdn_from`).
#[derive(Debug, Clone)]
pub struct Smtp {
    /// `smtp_host`.
    pub host: String,
    /// `smtp_port`: 587, or 465 for `smtp_tls = implicit`.
    pub port: u16,
    /// `smtp_tls`: `starttls` unless set.
    pub tls: TlsMode,
    /// `smtp_ca_file`, else the account's `ca_file`.
    pub ca_file: Option<PathBuf>,
    /// `smtp_user`; without it nothing logs in.
    pub user: Option<String>,
    /// The SMTP password's source; `SecretSource::None` without `smtp_user`.
    pub secret: SecretSource,
    /// `mdn_from`, as written (`Name <local@domain>` or `local@domain`).
    pub from: Option<String>,
}

/// `delete = yes | no | <duration>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delete {
    /// Delete as soon as the entry is durable.
    Yes,
    /// Never delete; skip UIDLs already delivered.
    No,
    /// Leave on the server this long after delivery, then delete.
    After(Duration),
}

/// One `[account NAME]` with `[global]` defaults applied.
#[derive(Debug, Clone)]
pub struct Account {
    /// NAME of `[account NAME]`.
    pub name: String,
    /// Server name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// How the connection is secured.
    pub tls: TlsMode,
    /// Extra PEM trust anchors.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 of the server certificate (DER).
    pub tls_fingerprint: Option<[u8; 32]>,
    /// PEM client certificate.
    pub tls_client_cert: Option<PathBuf>,
    /// PEM (PKCS#8) key of the client certificate.
    pub tls_client_key: Option<PathBuf>,
    /// Mailbox login.
    pub user: String,
    /// Where the password comes from.
    pub secret: SecretSource,
    /// Login method.
    pub auth: Auth,
    /// Whether a password may cross a connection without TLS.
    pub allow_plaintext: bool,
    /// Time between polls.
    pub poll_interval: Duration,
    /// Socket inactivity timeout.
    pub timeout: Duration,
    /// This account's spool directory.
    pub spool: PathBuf,
    /// When delivered messages are deleted on the server.
    pub delete: Delete,
    /// Larger messages (LIST size) stay on the server.
    pub max_message_size: Option<u64>,
    /// Decode body and attachments into the entry.
    pub mime: bool,
    /// Which part is the body (0: BizTalk's cascade).
    pub body_part_index: u32,
    /// Content type of the body part.
    pub body_part_content_type: Option<String>,
    /// Failed polls in a row before the account is reported failed.
    pub error_threshold: u32,
    /// The longest backoff interval.
    pub max_backoff: Duration,
    /// No download below this much free space in the spool.
    pub min_free_space: u64,
    /// Extension: the local address to connect from.
    pub source_ip: Option<std::net::IpAddr>,
    /// `mdn`: whether MDN requests are answered.
    pub mdn: MdnMode,
    /// The SMTP side, when `smtp_host` is set (always with `mdn = auto`).
    pub smtp: Option<Smtp>,
    /// S/MIME: `smime_policy`, the `smime_*` files and what they hold.
    pub smime: crate::smime::Settings,
}

/// Everything that can be wrong with a configuration.
#[derive(Debug)]
pub enum Error {
    /// The file cannot be opened or read (exit 66).
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// Anything else (exit 78); `line` is 1-based, 0 when not tied to a line.
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line, 0 for the file as a whole.
        line: usize,
        /// The key concerned, if any.
        key: Option<String>,
        /// What is wrong, never showing a secret.
        message: String,
    },
}

impl Error {
    /// How the process ends because of it (popspool(8), EXIT STATUS).
    pub fn exit_code(&self) -> Exit {
        match self {
            Error::Unreadable { .. } => Exit::NoInput,
            Error::Invalid { .. } => Exit::Config,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unreadable { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            Error::Invalid {
                path,
                line,
                key,
                message,
            } => {
                write!(f, "{}", path.display())?;
                if *line > 0 {
                    write!(f, ":{line}")?;
                }
                f.write_str(": ")?;
                if let Some(key) = key {
                    write!(f, "key '{key}': ")?;
                }
                f.write_str(message)
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Unreadable { source, .. } => Some(source),
            Error::Invalid { .. } => None,
        }
    }
}

/// A configuration is a few kilobytes; the cap keeps `-c /dev/zero` from eating memory.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Read and validate `path`.
pub fn load(path: &Path) -> Result<Config, Error> {
    let unreadable = |source| Error::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(unreadable)?;
    // fstat the handle we read, so the mode checked is that of the bytes parsed.
    let meta = file.metadata().map_err(unreadable)?;
    // The text may hold inline passwords: wiped when dropped.
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(invalid(
            path,
            0,
            None,
            format!("is larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        invalid(path, line, None, "is not valid UTF-8".into())
    })?;
    build::check_private(text, &meta, path)?;
    parse(text, path, true)
}

/// Validate configuration text as if read from `path` (which only names the
/// file in messages and anchors relative paths); no permission check.
pub fn load_str(text: &str, path: &Path) -> Result<Config, Error> {
    parse(text, path, false)
}

/// Validate `text`; with `check_files`, the files holding secrets must be
/// private too.
fn parse(text: &str, path: &Path, check_files: bool) -> Result<Config, Error> {
    // Editors on other systems may leave a byte order mark; it is not part of the first line.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let scanned = scan::scan(text, path)?;
    scan::cross_check(&scanned, path)?;
    build::config(&scanned, path, check_files)
}

/// A configuration error at `line` (0: the file as a whole) of `path`.
fn invalid(path: &Path, line: usize, key: Option<&str>, message: String) -> Error {
    Error::Invalid {
        path: path.to_path_buf(),
        line,
        key: key.map(str::to_owned),
        message,
    }
}

/// An account with every default, for unit tests elsewhere in the crate.
#[doc(hidden)]
pub fn test_account(host: &str, port: u16) -> Account {
    let text = format!("[account t]\nhost = {host}\nport = {port}\nuser = u\npassword = p\n");
    let mut cfg = load_str(&text, Path::new("/test.ini")).expect("test account parses");
    cfg.accounts.remove(0)
}

#[cfg(test)]
mod tests {
    use super::testkit::MIN;
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn error_display_and_exit_codes() {
        let p = PathBuf::from("/e/p.ini");
        let e = |line, key: Option<&str>| Error::Invalid {
            path: p.clone(),
            line,
            key: key.map(Into::into),
            message: "msg".into(),
        };
        assert_eq!(
            e(3, Some("port")).to_string(),
            "/e/p.ini:3: key 'port': msg"
        );
        assert_eq!(e(3, None).to_string(), "/e/p.ini:3: msg");
        assert_eq!(e(0, None).to_string(), "/e/p.ini: msg");
        assert_eq!(e(0, None).exit_code().code(), 78);
        let u = Error::Unreadable {
            path: p.clone(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(u.to_string(), "cannot read /e/p.ini: entity not found");
        assert_eq!(u.exit_code().code(), 66);
        assert!(std::error::Error::source(&u).is_some());
        let text = format!("{MIN}port = x\n");
        assert_eq!(
            load_str(&text, &p).map(drop).map_err(|e| e.to_string()),
            Err("/e/p.ini:5: key 'port': bad value 'x': must be a whole number".into())
        );
    }

    #[test]
    fn load_reads_checks_mode_and_reports() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("h-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let write = |name: &str, body: &[u8], mode: u32| {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap_or_else(|e| panic!("{e}"));
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("{e}"));
            p
        };
        let open = write("open.ini", MIN.as_bytes(), 0o644);
        let err = load(&open).map(drop).unwrap_err();
        assert_eq!(err.exit_code().code(), 78);
        assert!(
            err.to_string().contains("chmod 600") && err.to_string().contains("password_file"),
            "{err}"
        );
        assert!(!err.to_string().contains(":0:"), "{err}");
        let private = write("private.ini", MIN.as_bytes(), 0o600);
        assert_eq!(
            load(&private).map(|c| c.accounts[0].spool.clone()).ok(),
            Some("/var/spool/popspool/a".into())
        );
        let by_file = MIN.replace("password = pw", "password_file = pw");
        assert!(load(&write("file.ini", by_file.as_bytes(), 0o644)).is_ok());
        // The password file and the client key follow the same rule.
        let pw = write("pw", b"pw-secret\n", 0o644);
        let err = load(&dir.join("file.ini")).map(drop).unwrap_err();
        assert_eq!(err.exit_code().code(), 78);
        assert_eq!(
            err.to_string(),
            format!(
                "{}:4: key 'password_file': {} holds a password but is readable by other \
                 users (mode 0644); run 'chmod 600 {}'",
                dir.join("file.ini").display(),
                pw.display(),
                pw.display()
            )
        );
        write("pw", b"pw-secret\n", 0o600);
        assert!(load(&dir.join("file.ini")).is_ok());
        // The SMTP password file too.
        let smtp = format!("{MIN}smtp_host = h\nsmtp_user = m\nsmtp_password_file = smtp.pw\n");
        let smtp_ini = write("smtp.ini", smtp.as_bytes(), 0o600);
        write("smtp.pw", b"s\n", 0o644);
        let err = load(&smtp_ini).map(drop).unwrap_err().to_string();
        assert!(
            err.contains(":7: key 'smtp_password_file': ") && err.contains("chmod 600"),
            "{err}"
        );
        write("smtp.pw", b"s\n", 0o600);
        assert!(load(&smtp_ini).is_ok());
        let keyed = format!("{by_file}tls_client_cert = c.pem\ntls_client_key = k.pem\n");
        let keyed = write("keyed.ini", keyed.as_bytes(), 0o600);
        assert!(
            load(&keyed).is_ok(),
            "a key that is not there is left to the poll"
        );
        write("k.pem", b"key", 0o604);
        let err = load(&keyed).map(drop).unwrap_err().to_string();
        assert!(
            err.contains(":6: key 'tls_client_key': ")
                && err.contains("holds a private key but is readable by other users (mode 0604)")
                && err.contains("chmod 600"),
            "{err}"
        );
        write("k.pem", b"key", 0o400);
        assert!(load(&keyed).is_ok());
        let egid = access::effective_gid().unwrap_or(u32::MAX);
        let group = write("group.ini", MIN.as_bytes(), 0o640);
        assert_eq!(
            load(&group).is_ok(),
            std::fs::metadata(&group)
                .map(|m| m.gid() == egid)
                .unwrap_or(false)
        );
        let latin1 = write("latin1.ini", b"[account a]\n# caf\xe9\nhost = h\n", 0o600);
        assert_eq!(
            load(&latin1).map_err(|e| e.to_string()).map(drop),
            Err(format!("{}:2: is not valid UTF-8", latin1.display()))
        );
        let missing = load(&dir.join("missing.ini")).map(drop).unwrap_err();
        assert_eq!(missing.exit_code().code(), 66);
        assert!(
            missing.to_string().starts_with("cannot read /"),
            "{missing}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
