//! Configuration: INI text → validated [`Config`] (spec section 2).
//!
//! Two stages, as ripgrep's `LowArgs` → `HiArgs`: `scan` cuts the text into
//! sections and `key = value` entries, remembering the line of each, and
//! rejects everything structural (a line that is not INI, an unknown section
//! or key, a duplicate); then each value is parsed into its type exactly once,
//! and the `[global]` defaults are merged into every account.
//!
//! The scanner, not rust-ini, is the authority: rust-ini reports no line
//! numbers, accepts `key: value`, joins a line ending in `\` with the next and
//! turns an indented comment into part of the following key. It still reads
//! the significant lines as a cross-check, so that a value (a password above
//! all) can never mean one thing to popspool and another to the INI reader the
//! product is documented to use.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::mechanism::Mechanism;
use crate::secret::{self, Password};

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
    /// The sysexits.h status for this error (spec section 1).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Unreadable { .. } => 66, // EX_NOINPUT
            Error::Invalid { .. } => 78,    // EX_CONFIG
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

/// Default global `spool`.
const DEFAULT_SPOOL: &str = "/var/spool/popspool";
/// Default global `state_dir`.
const DEFAULT_STATE_DIR: &str = "/var/lib/popspool";
/// POP3S (RFC 8314), the default port for `tls = implicit`.
const POP3S_PORT: u16 = 995;
/// POP3 (RFC 1939), the default port otherwise.
const POP3_PORT: u16 = 110;
/// Account defaults from the table in spec section 2.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(3600);
const DEFAULT_ERROR_THRESHOLD: u32 = 10;
const DEFAULT_MIN_FREE_SPACE: u64 = 64 << 20;
/// A configuration is a few kilobytes; the cap keeps `-c /dev/zero` from eating memory.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Ten years. Durations are added to `Instant`s elsewhere, which panics on
/// overflow; nobody means a longer interval.
const MAX_DURATION_SECS: u64 = 10 * 365 * 86_400;
/// The name becomes a directory and file name and appears in every log line.
const MAX_ACCOUNT_NAME: usize = 64;
/// A value is echoed in error messages at most this long, so a pasted blob
/// does not flood the terminal.
const MAX_SHOWN_VALUE: usize = 60;

/// Keys only `[global]` may hold.
pub const GLOBAL_KEYS: &[&str] = &["spool", "state_dir", "log_level"];
/// Keys of an account. Each may also sit in `[global]` as the default for
/// every account, except `spool`: there it is the root under which each
/// account gets its own directory.
pub const ACCOUNT_KEYS: &[&str] = &[
    "host",
    "port",
    "tls",
    "ca_file",
    "tls_fingerprint",
    "tls_client_cert",
    "tls_client_key",
    "user",
    "password",
    "password_file",
    "password_command",
    "auth",
    "allow_plaintext",
    "poll_interval",
    "timeout",
    "spool",
    "delete",
    "max_message_size",
    "mime",
    "body_part_index",
    "body_part_content_type",
    "error_threshold",
    "max_backoff",
    "min_free_space",
    "source_ip",
];
/// Account keys of features still to come (S/MIME, MDN). The spec wants them
/// refused by name rather than ignored.
pub const LATER_KEYS: &[&str] = &[
    "smime_cert",
    "smime_key",
    "smime_pkcs12",
    "smime_pkcs12_password_file",
    "smime_ca_file",
    "smime_policy",
    "mdn",
    "smtp_host",
    "smtp_port",
    "smtp_tls",
    "smtp_user",
    "smtp_password",
    "smtp_password_file",
    "smtp_password_command",
    "mdn_from",
];
/// Keys whose values never appear in a message (a command line may carry a
/// passphrase too).
const SECRET_KEYS: &[&str] = &[
    "password",
    "smtp_password",
    "password_command",
    "smtp_password_command",
];
/// Keys that put a secret into the file itself, which must then be private.
const INLINE_SECRET_KEYS: &[&str] = &["password", "smtp_password"];
/// The ways to give the password; a section sets at most one.
const SECRET_SOURCE_KEYS: &[&str] = &["password", "password_file", "password_command"];

/// rust-ini options under which `p;a#s\"s` stays literal.
const PARSE_OPTION: ini::ParseOption = ini::ParseOption {
    enabled_quote: false,
    enabled_escape: false,
    enabled_indented_mutiline_value: false,
    enabled_preserve_key_leading_whitespace: false,
};

/// Read and validate `path`.
pub fn load(path: &Path) -> Result<Config, Error> {
    let unreadable = |source| Error::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(unreadable)?;
    // fstat the handle we read, so the mode checked is that of the bytes parsed.
    let meta = file.metadata().map_err(unreadable)?;
    let mut bytes = Vec::new();
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
    if holds_inline_secret(text) {
        let ok = match effective_gid() {
            Some(egid) => secret_mode_ok(meta.mode(), meta.gid(), egid),
            None => meta.mode() & 0o077 == 0,
        };
        if !ok {
            let message = format!(
                "holds a password but is readable by other users (mode {:04o}); \
                 run 'chmod 600 {}' or move the password to a password_file",
                meta.mode() & 0o7777,
                path.display()
            );
            return Err(invalid(path, 0, None, message));
        }
    }
    load_str(text, path)
}

/// Validate configuration text as if read from `path` (which only names the
/// file in messages and anchors relative paths); no permission check.
pub fn load_str(text: &str, path: &Path) -> Result<Config, Error> {
    // Editors on other systems may leave a byte order mark; it is not part of the first line.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let scanned = scan(text, path)?;
    cross_check(&scanned, path)?;

    let base = path.parent().unwrap_or(Path::new(""));
    let global = typed(&scanned.global, path, base)?;
    let top = Merged {
        own: &global,
        global: &[],
    };
    let spool = pick!(top, "spool", Val::Path).unwrap_or_else(|| DEFAULT_SPOOL.into());
    let state_dir = pick!(top, "state_dir", Val::Path).unwrap_or_else(|| DEFAULT_STATE_DIR.into());
    let log_level = pick!(top, "log_level", Val::Level);

    let mut accounts = Vec::with_capacity(scanned.accounts.len());
    for section in &scanned.accounts {
        let values = typed(section, path, base)?;
        let acct = account(section, &values, &global, &spool, path)?;
        // Each account's poll cleans its spool's tmp/ and owns what is in
        // it: two accounts in one spool would remove each other's work.
        if let Some(other) = accounts.iter().find(|a: &&Account| a.spool == acct.spool) {
            let message = format!(
                "[account {}] uses the same spool directory as [account {}]; give each account its own",
                acct.name, other.name
            );
            return Err(invalid(path, section.line, Some("spool"), message));
        }
        accounts.push(acct);
    }
    Ok(Config {
        path: path.to_path_buf(),
        spool,
        state_dir,
        log_level,
        accounts,
    })
}

/// Whether a file holding an inline secret is private enough: nothing for
/// others, and group access only for the group popspool itself runs as (a
/// `root:popspool 0640` file is fine for a daemon running as group popspool).
fn secret_mode_ok(mode: u32, file_gid: u32, egid: u32) -> bool {
    mode & 0o007 == 0 && (mode & 0o070 == 0 || file_gid == egid)
}

/// The effective gid, from the second field of `Gid:` in /proc/self/status;
/// std has no getegid and this crate has no libc.
fn effective_gid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let gids = status.lines().find_map(|l| l.strip_prefix("Gid:"))?;
    gids.split_whitespace().nth(1)?.parse().ok()
}

/// Whether any line sets an inline secret, in whatever section.
fn holds_inline_secret(text: &str) -> bool {
    text.split('\n')
        .any(|l| matches!(classify(l), Line::Pair(k, _) if INLINE_SECRET_KEYS.contains(&k)))
}

fn invalid(path: &Path, line: usize, key: Option<&str>, message: String) -> Error {
    Error::Invalid {
        path: path.to_path_buf(),
        line,
        key: key.map(str::to_owned),
        message,
    }
}

// ---------------------------------------------------------------------------
// Stage 1: lines → sections and entries

/// What one line of the file is.
enum Line<'t> {
    /// Blank or a comment.
    Blank,
    /// `[...]`, with the text between the brackets trimmed.
    Section(&'t str),
    /// `key = value`, both trimmed; the value is everything after the first `=`.
    Pair(&'t str, &'t str),
    /// None of these.
    Junk,
}

fn classify(line: &str) -> Line<'_> {
    let t = line.trim();
    if t.is_empty() || t.starts_with([';', '#']) {
        Line::Blank
    } else if let Some(inner) = t.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .map_or(Line::Junk, |s| Line::Section(s.trim()))
    } else if let Some((k, v)) = t.split_once('=') {
        Line::Pair(k.trim(), v.trim())
    } else {
        Line::Junk
    }
}

struct Entry<'t> {
    key: &'t str,
    value: &'t str,
    line: usize,
}

struct Section<'t> {
    /// `None` for `[global]`.
    account: Option<&'t str>,
    /// The text between the brackets, as rust-ini names the section.
    header: &'t str,
    /// 0 for a `[global]` that is not in the file.
    line: usize,
    entries: Vec<Entry<'t>>,
}

impl<'t> Section<'t> {
    fn get(&self, key: &str) -> Option<&Entry<'t>> {
        self.entries.iter().find(|e| e.key == key)
    }
}

struct Scanned<'t> {
    global: Section<'t>,
    accounts: Vec<Section<'t>>,
    /// The text with comments blanked and indentation removed, line for line:
    /// what rust-ini gets to read for the cross-check.
    significant: String,
}

fn scan<'t>(text: &'t str, path: &Path) -> Result<Scanned<'t>, Error> {
    let mut global = Section {
        account: None,
        header: "global",
        line: 0,
        entries: Vec::new(),
    };
    let mut accounts: Vec<Section<'t>> = Vec::new();
    let mut in_global = false;
    let mut significant = String::with_capacity(text.len());

    for (index, raw) in text.split('\n').enumerate() {
        let n = index + 1;
        let err = |key: Option<&str>, message: String| invalid(path, n, key, message);
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.contains('\r') {
            // INI readers disagree on whether a lone CR ends a line.
            return Err(err(None, "carriage return inside a line".into()));
        }
        let kind = classify(line);
        if !matches!(kind, Line::Blank) {
            significant.push_str(line.trim());
        }
        significant.push('\n');
        match kind {
            Line::Blank => {}
            Line::Junk => {
                return Err(err(
                    None,
                    "line without '=' (expected [section], key = value, or a comment)".into(),
                ));
            }
            Line::Section("global") => {
                if global.line > 0 {
                    return Err(err(
                        None,
                        format!("duplicate [global]; first on line {}", global.line),
                    ));
                }
                if !accounts.is_empty() {
                    return Err(err(
                        None,
                        "[global] must come before the first [account]".into(),
                    ));
                }
                global.line = n;
                in_global = true;
            }
            Line::Section(header) => {
                let name = match header.strip_prefix("account") {
                    Some("") => return Err(err(None, "[account] needs a name".into())),
                    Some(rest) if rest.starts_with(char::is_whitespace) => rest.trim_start(),
                    _ => {
                        let msg = format!(
                            "unknown section '[{header}]'; expected [global] or [account NAME]"
                        );
                        return Err(err(None, msg));
                    }
                };
                if let Some(problem) = account_name_problem(name) {
                    return Err(err(None, format!("bad account name '{name}': {problem}")));
                }
                if let Some(first) = accounts.iter().find(|s| s.account == Some(name)) {
                    return Err(err(
                        None,
                        format!("duplicate account '{name}'; first on line {}", first.line),
                    ));
                }
                accounts.push(Section {
                    account: Some(name),
                    header,
                    line: n,
                    entries: Vec::new(),
                });
                in_global = false;
            }
            Line::Pair("", _) => return Err(err(None, "line has no key before '='".into())),
            Line::Pair(key, value) => {
                let err = |message: String| err(Some(key), message);
                let section = match accounts.last_mut() {
                    _ if in_global => &mut global,
                    Some(section) => section,
                    None => {
                        return Err(err(
                            "outside any section; put it under [global] or [account NAME]".into(),
                        ))
                    }
                };
                let allowed = ACCOUNT_KEYS.contains(&key)
                    || LATER_KEYS.contains(&key)
                    || (in_global && GLOBAL_KEYS.contains(&key));
                if !allowed {
                    return Err(err(if GLOBAL_KEYS.contains(&key) {
                        "is only allowed in [global]".into()
                    } else {
                        "unknown key".into()
                    }));
                }
                if value.ends_with('\\') {
                    return Err(err(
                        "value ends with '\\', which INI readers take as a line continuation \
                         (a password ending in '\\' can go in a password_file)"
                            .into(),
                    ));
                }
                if let Some(first) = section.get(key) {
                    return Err(err(format!(
                        "set twice in this section; first on line {}",
                        first.line
                    )));
                }
                if SECRET_SOURCE_KEYS.contains(&key) {
                    if let Some(other) = section
                        .entries
                        .iter()
                        .find(|e| SECRET_SOURCE_KEYS.contains(&e.key))
                    {
                        return Err(err(format!(
                            "conflicts with '{}' on line {}; set only one of password, password_file, \
                             password_command",
                            other.key, other.line
                        )));
                    }
                }
                section.entries.push(Entry {
                    key,
                    value,
                    line: n,
                });
            }
        }
    }
    if accounts.is_empty() {
        return Err(invalid(
            path,
            0,
            None,
            "no [account NAME] section; there is nothing to poll".into(),
        ));
    }
    Ok(Scanned {
        global,
        accounts,
        significant,
    })
}

fn account_name_problem(name: &str) -> Option<&'static str> {
    if name == "." || name == ".." {
        Some("'.' and '..' are not allowed")
    } else if name.len() > MAX_ACCOUNT_NAME {
        Some("longer than 64 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    }
}

/// Have rust-ini read the significant lines and insist it sees the same
/// sections, keys and values. A mismatch is a scanner bug, but reporting it
/// beats polling with a password the user did not write.
fn cross_check(scanned: &Scanned<'_>, path: &Path) -> Result<(), Error> {
    let ini = ini::Ini::load_from_str_opt(&scanned.significant, PARSE_OPTION)
        .map_err(|e| invalid(path, e.line, None, format!("INI syntax error: {}", e.msg)))?;
    let disagree = |line, key: Option<&str>| {
        let message = "the INI library reads this line differently (internal consistency check; please report it)";
        invalid(path, line, key, message.into())
    };
    if !ini.general_section().is_empty() {
        return Err(disagree(0, None));
    }
    for section in std::iter::once(&scanned.global).chain(&scanned.accounts) {
        let theirs: Vec<(&str, &str)> = ini
            .section_all(Some(section.header))
            .next()
            .map(|p| p.iter().collect())
            .unwrap_or_default();
        let ours: Vec<(&str, &str)> = section.entries.iter().map(|e| (e.key, e.value)).collect();
        if theirs != ours {
            let bad = section
                .entries
                .iter()
                .zip(&theirs)
                .find(|(e, t)| (e.key, e.value) != **t);
            return Err(match bad {
                Some((e, _)) => disagree(e.line, Some(e.key)),
                None => disagree(section.line, None),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Stage 2: values → types, then [global] merged into each account

/// A parsed value; which variant a key yields is fixed by [`parse_value`].
enum Val {
    Text(String),
    Path(PathBuf),
    Port(u16),
    Tls(TlsMode),
    Fingerprint([u8; 32]),
    Secret(SecretSource),
    Auth(Auth),
    Bool(bool),
    Duration(Duration),
    Delete(Delete),
    Size(u64),
    Count(u32),
    Level(log::LevelFilter),
    Ip(std::net::IpAddr),
    /// A later-feature key set to its default, which changes nothing.
    Ignored,
}

struct Typed<'t> {
    key: &'t str,
    line: usize,
    val: Val,
}

/// An account's own values in front of the `[global]` defaults.
struct Merged<'a, 't> {
    own: &'a [Typed<'t>],
    global: &'a [Typed<'t>],
}

impl<'a, 't> Merged<'a, 't> {
    fn get(&self, key: &str) -> Option<&'a Typed<'t>> {
        self.own.iter().chain(self.global).find(|t| t.key == key)
    }
    fn line(&self, key: &str) -> Option<usize> {
        self.get(key).map(|t| t.line)
    }
}

/// The merged value of a key, if set; `$variant` is the one [`parse_value`] gives it.
macro_rules! pick {
    ($merged:expr, $key:literal, $variant:path) => {
        match $merged.get($key).map(|t| &t.val) {
            Some($variant(v)) => Some(v.clone()),
            _ => None,
        }
    };
}
// Makes the macro usable by path, so functions above its definition can call it.
use pick;

/// Parse every value of a section, so a bad `[global]` default is reported
/// even when every account overrides it.
fn typed<'t>(section: &Section<'t>, path: &Path, base: &Path) -> Result<Vec<Typed<'t>>, Error> {
    let mut out = Vec::with_capacity(section.entries.len());
    for &Entry { key, value, line } in &section.entries {
        let val = if LATER_KEYS.contains(&key) {
            later_key(key, value)
        } else if value.is_empty() {
            Err("has no value".into())
        } else {
            parse_value(key, value, base)
                .map_err(|reason| format!("bad value{}: {reason}", shown(key, value)))
        };
        let val = val.map_err(|message| invalid(path, line, Some(key), message))?;
        out.push(Typed { key, line, val });
    }
    Ok(out)
}

/// ` 'VALUE'` for messages, or nothing for a secret.
fn shown(key: &str, value: &str) -> String {
    if SECRET_KEYS.contains(&key) {
        return String::new();
    }
    let mut s: String = value
        .chars()
        .take(MAX_SHOWN_VALUE)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().nth(MAX_SHOWN_VALUE).is_some() {
        s.push_str("...");
    }
    format!(" '{s}'")
}

/// Keys of features to come: accepted only at a default that changes nothing.
fn later_key(key: &str, value: &str) -> Result<Val, String> {
    let (default, others): (&str, &[&str]) = match key {
        "smime_policy" => ("accept", &["require-signed", "require-valid"]),
        "mdn" => ("never", &["auto"]),
        _ => return Err("is not supported yet".into()),
    };
    if value == default {
        Ok(Val::Ignored)
    } else if others.contains(&value) {
        Err(format!("'{value}' is not supported yet"))
    } else {
        Err(format!(
            "bad value{}: must be {default} or {}",
            shown(key, value),
            others.join(" or ")
        ))
    }
}

/// The one table of which key has which type and which rule.
fn parse_value(key: &str, v: &str, base: &Path) -> Result<Val, String> {
    let path = || base.join(v);
    Ok(match key {
        "spool" | "state_dir" | "ca_file" | "tls_client_cert" | "tls_client_key" => {
            Val::Path(path())
        }
        "log_level" => Val::Level(keyword(
            v,
            &[
                ("error", log::LevelFilter::Error),
                ("warn", log::LevelFilter::Warn),
                ("info", log::LevelFilter::Info),
                ("debug", log::LevelFilter::Debug),
                ("trace", log::LevelFilter::Trace),
            ],
        )?),
        "host" => {
            if v.contains(|c: char| c.is_whitespace() || c.is_control()) {
                return Err("must not contain spaces or control characters".into());
            }
            Val::Text(v.to_owned())
        }
        "port" => {
            let n = number(v)?;
            Val::Port(
                u16::try_from(n)
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or("must be from 1 to 65535")?,
            )
        }
        "tls" => Val::Tls(keyword(
            v,
            &[
                ("implicit", TlsMode::Implicit),
                ("starttls", TlsMode::StartTls),
                ("none", TlsMode::None),
            ],
        )?),
        "tls_fingerprint" => Val::Fingerprint(fingerprint(v)?),
        "user" => {
            // USER sends it on a command line; the INI reader already trimmed it,
            // but a user name with a CR/LF could inject a POP3 command.
            if v.contains(['\r', '\n', '\0']) || v.trim() != v {
                return Err("must not contain CR, LF, NUL or leading/trailing spaces".into());
            }
            Val::Text(v.to_owned())
        }
        "password" => {
            if v.contains('\0') {
                return Err("contains a NUL character".into());
            }
            Val::Secret(SecretSource::Inline(Password::new(v.to_owned())))
        }
        "password_file" => Val::Secret(SecretSource::File(password_file(
            v,
            base,
            std::env::var_os(CREDENTIALS_DIRECTORY).as_deref(),
        )?)),
        "password_command" => Val::Secret(SecretSource::Command(secret::split_command(v)?)),
        "auth" => Val::Auth(keyword(v, &Auth::ALL)?),
        "allow_plaintext" | "mime" => Val::Bool(boolean(v)?),
        "poll_interval" | "timeout" | "max_backoff" => {
            let d = duration(v)?;
            if d.is_zero() {
                return Err("must be greater than zero".into());
            }
            Val::Duration(d)
        }
        "delete" => Val::Delete(match boolean(v) {
            // A bare 0 or 1 could be read as "no"/"yes" or as seconds; either misreading can lose or keep mail.
            _ if v == "0" || v == "1" => {
                return Err("is ambiguous; write yes, no, or a duration such as 7d".into())
            }
            Ok(true) => Delete::Yes,
            Ok(false) => Delete::No,
            Err(_) => Delete::After(duration(v).map_err(|e| format!("{e}, or yes or no"))?),
        }),
        "max_message_size" => {
            let n = size(v)?;
            if n == 0 {
                return Err("must be greater than zero".into());
            }
            Val::Size(n)
        }
        "min_free_space" => Val::Size(size(v)?),
        "body_part_index" => Val::Count(u32::try_from(number(v)?).map_err(|_| "is too large")?),
        "error_threshold" => {
            let n = u32::try_from(number(v)?).map_err(|_| "is too large")?;
            if n == 0 {
                return Err("must be at least 1".into());
            }
            Val::Count(n)
        }
        "body_part_content_type" => Val::Text(content_type(v)?),
        "source_ip" => Val::Ip(v.parse().map_err(|_| "must be an IPv4 or IPv6 address")?),
        _ => return Err("unknown key".into()),
    })
}

/// The variable systemd sets for a service with `LoadCredential=`: the
/// directory holding the credentials, readable by the service alone.
const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// The path a `password_file` value names. A value starting with
/// `${CREDENTIALS_DIRECTORY}/` (or `$CREDENTIALS_DIRECTORY/`) is a file in
/// systemd's credentials directory, `creds`; that prefix is the only
/// expansion, so any other `$` is part of the file name.
fn password_file(v: &str, base: &Path, creds: Option<&std::ffi::OsStr>) -> Result<PathBuf, String> {
    let Some(rest) = ["${CREDENTIALS_DIRECTORY}", "$CREDENTIALS_DIRECTORY"]
        .iter()
        .find_map(|prefix| v.strip_prefix(prefix))
    else {
        return Ok(base.join(v));
    };
    // Credential names are flat: LoadCredential=NAME:PATH puts NAME in the directory itself.
    let name = rest
        .strip_prefix('/')
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .ok_or("must be ${CREDENTIALS_DIRECTORY}/NAME, NAME being a credential's name")?;
    match creds.map(Path::new) {
        Some(dir) if dir.is_absolute() => Ok(dir.join(name)),
        Some(_) => Err("CREDENTIALS_DIRECTORY is not an absolute path".into()),
        None => Err(
            "uses ${CREDENTIALS_DIRECTORY}, which is not set: systemd sets it for a service \
             with LoadCredential=; outside the service set it by hand"
                .into(),
        ),
    }
}

/// Build one account: its own values, else `[global]`'s, else the defaults.
fn account(
    section: &Section<'_>,
    own: &[Typed<'_>],
    global: &[Typed<'_>],
    root: &Path,
    path: &Path,
) -> Result<Account, Error> {
    let m = Merged { own, global };
    let name = section.account.unwrap_or_default();
    let err = |line, key: &str, message: String| invalid(path, line, Some(key), message);
    let required = |key: &str| {
        err(
            section.line,
            key,
            format!("is required in [account {name}] or [global]"),
        )
    };

    let host = pick!(m, "host", Val::Text).ok_or_else(|| required("host"))?;
    let user = pick!(m, "user", Val::Text).ok_or_else(|| required("user"))?;
    // The password is chosen as a whole: an account's password_file replaces
    // a global password rather than conflicting with it.
    let is_secret = |t: &&Typed<'_>| SECRET_SOURCE_KEYS.contains(&t.key);
    let secret = match own
        .iter()
        .find(is_secret)
        .or_else(|| global.iter().find(is_secret))
    {
        Some(Typed {
            val: Val::Secret(s),
            ..
        }) => s.clone(),
        // The certificate is the credential; a password given anyway is never used.
        _ if pick!(m, "auth", Val::Auth) == Some(Auth::Only(Mechanism::External)) => SecretSource::None,
        _ => {
            let message = "one of password, password_file or password_command is required".into();
            return Err(err(section.line, "password", message));
        }
    };

    let tls = pick!(m, "tls", Val::Tls).unwrap_or(TlsMode::Implicit);
    let port = pick!(m, "port", Val::Port).unwrap_or(if tls == TlsMode::Implicit {
        POP3S_PORT
    } else {
        POP3_PORT
    });
    let tls_client_cert = pick!(m, "tls_client_cert", Val::Path);
    let tls_client_key = pick!(m, "tls_client_key", Val::Path);
    for (have, lacks) in [
        ("tls_client_cert", "tls_client_key"),
        ("tls_client_key", "tls_client_cert"),
    ] {
        if let (Some(line), None) = (m.line(have), m.get(lacks)) {
            return Err(err(line, have, format!("needs {lacks} as well")));
        }
    }
    let auth = pick!(m, "auth", Val::Auth).unwrap_or(Auth::Auto);
    let allow_plaintext = pick!(m, "allow_plaintext", Val::Bool).unwrap_or(false);
    let sends_secret = matches!(auth, Auth::Only(m) if m.sends_secret());
    if tls == TlsMode::None && sends_secret && !allow_plaintext {
        let line = m.line("auth").unwrap_or(section.line);
        let message = format!(
            "auth = {} with tls = none sends the {} in clear text; \
             set allow_plaintext = yes to allow that",
            auth.name(),
            if matches!(auth, Auth::Only(Mechanism::XOAuth2 | Mechanism::OAuthBearer)) {
                "access token"
            } else {
                "password"
            }
        );
        return Err(err(line, "auth", message));
    }
    if auth == Auth::Only(Mechanism::External) {
        let line = m.line("auth").unwrap_or(section.line);
        if tls == TlsMode::None {
            let message =
                "auth = external needs TLS: the client certificate is the credential".into();
            return Err(err(line, "auth", message));
        }
        if tls_client_cert.is_none() {
            let message = "auth = external needs tls_client_cert and tls_client_key".into();
            return Err(err(line, "auth", message));
        }
    }
    // `spool` in [global] is the root, not a default shared by every account.
    let spool = match own.iter().find(|t| t.key == "spool") {
        Some(Typed {
            val: Val::Path(p), ..
        }) => p.clone(),
        _ => root.join(name),
    };

    Ok(Account {
        name: name.to_owned(),
        host,
        port,
        tls,
        ca_file: pick!(m, "ca_file", Val::Path),
        tls_fingerprint: pick!(m, "tls_fingerprint", Val::Fingerprint),
        tls_client_cert,
        tls_client_key,
        user,
        secret,
        auth,
        allow_plaintext,
        poll_interval: pick!(m, "poll_interval", Val::Duration).unwrap_or(DEFAULT_POLL_INTERVAL),
        timeout: pick!(m, "timeout", Val::Duration).unwrap_or(DEFAULT_TIMEOUT),
        spool,
        delete: pick!(m, "delete", Val::Delete).unwrap_or(Delete::Yes),
        max_message_size: pick!(m, "max_message_size", Val::Size),
        mime: pick!(m, "mime", Val::Bool).unwrap_or(true),
        body_part_index: pick!(m, "body_part_index", Val::Count).unwrap_or(0),
        body_part_content_type: pick!(m, "body_part_content_type", Val::Text),
        error_threshold: pick!(m, "error_threshold", Val::Count).unwrap_or(DEFAULT_ERROR_THRESHOLD),
        max_backoff: pick!(m, "max_backoff", Val::Duration).unwrap_or(DEFAULT_MAX_BACKOFF),
        min_free_space: pick!(m, "min_free_space", Val::Size).unwrap_or(DEFAULT_MIN_FREE_SPACE),
        source_ip: pick!(m, "source_ip", Val::Ip),
    })
}

// ---------------------------------------------------------------------------
// Value syntaxes

/// A word from `table`, ignoring ASCII case.
fn keyword<T: Copy>(v: &str, table: &[(&str, T)]) -> Result<T, String> {
    table
        .iter()
        .find(|(word, _)| word.eq_ignore_ascii_case(v))
        .map(|&(_, t)| t)
        .ok_or_else(|| {
            let words: Vec<&str> = table.iter().map(|(w, _)| *w).collect();
            format!("must be one of {}", words.join(", "))
        })
}

fn boolean(v: &str) -> Result<bool, String> {
    keyword(
        v,
        &[
            ("yes", true),
            ("no", false),
            ("true", true),
            ("false", false),
            ("on", true),
            ("off", false),
            ("1", true),
            ("0", false),
        ],
    )
    .map_err(|_| "must be yes or no".into())
}

/// Decimal digits only: `str::parse` would also take a leading `+`.
fn number(v: &str) -> Result<u64, String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err("must be a whole number".into());
    }
    v.parse().map_err(|_| "is too large".into())
}

/// `45s`, `5m`, `2h`, `7d`, or bare seconds.
fn duration(v: &str) -> Result<Duration, String> {
    const UNITS: &[(char, u64)] = &[('s', 1), ('m', 60), ('h', 3600), ('d', 86_400)];
    let secs = scaled(
        v,
        UNITS,
        "must be a duration such as 45s, 5m, 2h, 7d or a number of seconds",
    )?;
    if secs > MAX_DURATION_SECS {
        return Err("is too long (at most 10 years)".into());
    }
    Ok(Duration::from_secs(secs))
}

/// `512K`, `50M`, `1G` (powers of 1024, either case), or bare bytes.
fn size(v: &str) -> Result<u64, String> {
    const UNITS: &[(char, u64)] = &[('K', 1 << 10), ('M', 1 << 20), ('G', 1 << 30)];
    scaled(
        &v.to_ascii_uppercase(),
        UNITS,
        "must be a size such as 512K, 50M, 1G or a number of bytes",
    )
}

/// A number with an optional one-letter unit from `units`.
fn scaled(v: &str, units: &[(char, u64)], syntax: &str) -> Result<u64, String> {
    let (digits, unit) = units
        .iter()
        .find_map(|&(c, unit)| v.strip_suffix(c).map(|d| (d, unit)))
        .unwrap_or((v, 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax.into());
    }
    number(digits)?
        .checked_mul(unit)
        .ok_or_else(|| "is too large".into())
}

/// 64 hex digits, any case, colons anywhere.
fn fingerprint(v: &str) -> Result<[u8; 32], String> {
    let hex: Vec<u8> = v.bytes().filter(|&b| b != b':').collect();
    let digit = |b: u8| char::from(b).to_digit(16);
    let mut out = [0u8; 32];
    if hex.len() != 2 * out.len() || !hex.iter().all(|&b| digit(b).is_some()) {
        return Err("must be a SHA-256 fingerprint: 64 hexadecimal digits, colons optional".into());
    }
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (hi, lo) = (digit(pair[0]).unwrap_or(0), digit(pair[1]).unwrap_or(0));
        *byte = (hi * 16 + lo) as u8;
    }
    Ok(out)
}

/// `type/subtype` of RFC 2045 tokens, lowercased as MIME compares them.
fn content_type(v: &str) -> Result<String, String> {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
    };
    match v.split_once('/') {
        Some((t, s)) if token(t) && token(s) => Ok(v.to_ascii_lowercase()),
        _ => Err("must be a MIME type such as text/plain".into()),
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
    use super::*;

    /// Four lines; a test's extra lines start at line 5.
    const MIN: &str = "[account a]\nhost = pop.example.com\nuser = u\npassword = pw\n";

    fn path() -> &'static Path {
        Path::new("/etc/popspool/p.ini")
    }

    fn cfg(text: &str) -> Config {
        load_str(text, path()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn acct(extra: &str) -> Account {
        cfg(&format!("{MIN}{extra}")).accounts.remove(0)
    }

    fn fail(text: &str) -> (usize, Option<String>, String) {
        match load_str(text, path()) {
            Err(Error::Invalid {
                line, key, message, ..
            }) => (line, key, message),
            Err(e) => panic!("expected Invalid, got {e}"),
            Ok(_) => panic!("accepted:\n{text}"),
        }
    }

    /// Expect `text` to fail at `line` naming `key`, with `part` in the message.
    #[track_caller]
    fn check(text: &str, line: usize, key: Option<&str>, part: &str) {
        let (l, k, m) = fail(text);
        assert_eq!((l, k.as_deref()), (line, key), "{m}");
        assert!(m.contains(part), "{m:?} lacks {part:?}");
    }

    #[test]
    fn defaults() {
        let c = cfg(MIN);
        assert_eq!(c.path, path());
        assert_eq!(c.spool, Path::new("/var/spool/popspool"));
        assert_eq!(c.state_dir, Path::new("/var/lib/popspool"));
        assert_eq!(c.log_level, None);
        let a = &c.accounts[0];
        assert_eq!(
            (a.name.as_str(), a.host.as_str(), a.user.as_str()),
            ("a", "pop.example.com", "u")
        );
        assert_eq!(
            (a.port, a.tls, a.auth),
            (995, TlsMode::Implicit, Auth::Auto)
        );
        assert_eq!(a.secret, SecretSource::Inline(Password::new("pw".into())));
        assert_eq!((a.ca_file.as_ref(), a.tls_fingerprint), (None, None));
        assert_eq!(
            (a.tls_client_cert.as_ref(), a.tls_client_key.as_ref()),
            (None, None)
        );
        assert!(!a.allow_plaintext && a.mime);
        assert_eq!(
            (a.poll_interval, a.timeout),
            (Duration::from_secs(60), Duration::from_secs(60))
        );
        assert_eq!(a.spool, Path::new("/var/spool/popspool/a"));
        assert_eq!((a.delete, a.max_message_size), (Delete::Yes, None));
        assert_eq!(
            (a.body_part_index, a.body_part_content_type.as_ref()),
            (0, None)
        );
        assert_eq!(
            (a.error_threshold, a.max_backoff),
            (10, Duration::from_secs(3600))
        );
        assert_eq!(a.min_free_space, 64 * 1024 * 1024);
        assert_eq!(acct("tls = starttls\n").port, 110);
        assert_eq!(acct("tls = none\n").port, 110);
    }

    #[test]
    fn every_key_set() {
        let fp = "AB:".repeat(31) + "Cd";
        let a = acct(&format!(
            "port = 1995\ntls = STARTTLS\nca_file = ca.pem\ntls_fingerprint = {fp}\n\
             tls_client_cert = /k/c.pem\ntls_client_key = k.pem\nauth = apop\nallow_plaintext = on\n\
             poll_interval = 5m\ntimeout = 45\nspool = /srv/a\ndelete = 7d\nmax_message_size = 50M\n\
             mime = false\nbody_part_index = 2\nbody_part_content_type = Text/XML\n\
             error_threshold = 3\nmax_backoff = 2h\nmin_free_space = 1G\n"
        ));
        assert_eq!(
            (a.port, a.tls, a.auth),
            (1995, TlsMode::StartTls, Auth::Only(Mechanism::Apop))
        );
        assert_eq!(
            a.ca_file.as_deref(),
            Some(Path::new("/etc/popspool/ca.pem"))
        );
        let mut want = [0xab; 32];
        want[31] = 0xcd;
        assert_eq!(a.tls_fingerprint, Some(want));
        assert_eq!(a.tls_client_cert.as_deref(), Some(Path::new("/k/c.pem")));
        assert_eq!(
            a.tls_client_key.as_deref(),
            Some(Path::new("/etc/popspool/k.pem"))
        );
        assert!(a.allow_plaintext && !a.mime);
        assert_eq!(
            (a.poll_interval, a.timeout),
            (Duration::from_secs(300), Duration::from_secs(45))
        );
        assert_eq!(a.spool, Path::new("/srv/a"));
        assert_eq!(a.delete, Delete::After(Duration::from_secs(7 * 86_400)));
        assert_eq!(a.max_message_size, Some(50 << 20));
        assert_eq!(
            (a.body_part_index, a.body_part_content_type.as_deref()),
            (2, Some("text/xml"))
        );
        assert_eq!(
            (a.error_threshold, a.max_backoff),
            (3, Duration::from_secs(7200))
        );
        assert_eq!(a.min_free_space, 1 << 30);
        assert_eq!(acct("delete = no\n").delete, Delete::No);
        assert_eq!(acct("delete = YES\n").delete, Delete::Yes);
        assert_eq!(
            acct(&format!("tls_fingerprint = {}\n", "0f".repeat(32))).tls_fingerprint,
            Some([15; 32])
        );
    }

    #[test]
    fn bad_values_name_line_and_key() {
        let cases = [
            ("host = a b", "host", "spaces"),
            ("host =", "host", "has no value"),
            ("port = 0", "port", "1 to 65535"),
            ("port = 65536", "port", "1 to 65535"),
            ("port = +5", "port", "whole number"),
            ("port = 99999999999999999999999", "port", "too large"),
            ("tls = ssl", "tls", "implicit, starttls, none"),
            (
                "tls_fingerprint = abcd",
                "tls_fingerprint",
                "64 hexadecimal",
            ),
            ("tls_fingerprint = ", "tls_fingerprint", "has no value"),
            (
                "auth = kerberos",
                "auth",
                "auto, user, apop, plain, login, cram-md5",
            ),
            ("auth = gssapi", "auth", "oauthbearer, external"),
            ("allow_plaintext = maybe", "allow_plaintext", "yes or no"),
            ("mime = 2", "mime", "yes or no"),
            ("poll_interval = 0", "poll_interval", "greater than zero"),
            ("poll_interval = -5", "poll_interval", "45s"),
            ("poll_interval = 5 m", "poll_interval", "45s"),
            ("timeout = 0s", "timeout", "greater than zero"),
            ("max_backoff = 0m", "max_backoff", "greater than zero"),
            ("delete = 0", "delete", "ambiguous"),
            ("delete = 1", "delete", "ambiguous"),
            ("delete = sometimes", "delete", "yes or no"),
            (
                "max_message_size = 0",
                "max_message_size",
                "greater than zero",
            ),
            ("max_message_size = 10T", "max_message_size", "512K"),
            (
                "min_free_space = 99999999999G",
                "min_free_space",
                "too large",
            ),
            ("body_part_index = -1", "body_part_index", "whole number"),
            (
                "body_part_index = 4294967296",
                "body_part_index",
                "too large",
            ),
            (
                "body_part_content_type = text",
                "body_part_content_type",
                "MIME type",
            ),
            (
                "body_part_content_type = text/",
                "body_part_content_type",
                "MIME type",
            ),
            (
                "body_part_content_type = a b/c",
                "body_part_content_type",
                "MIME type",
            ),
            ("error_threshold = 0", "error_threshold", "at least 1"),
            ("user = a\0b", "user", "NUL"),
            ("ca_file =  ", "ca_file", "has no value"),
        ];
        for (line, key, part) in cases {
            // Drop the key from the minimal account so the bad line is not a duplicate.
            let own = format!("{key} ");
            let base: String = MIN
                .lines()
                .filter(|l| !l.starts_with(&own))
                .map(|l| format!("{l}\n"))
                .collect();
            check(
                &format!("{base}{line}\n"),
                base.lines().count() + 1,
                Some(key),
                part,
            );
        }
        // The offending value is shown, escaped, to help find it.
        let (_, _, m) = fail(&format!("{MIN}port = 7\u{1b}\n"));
        assert!(m.contains(r"'7\u{1b}'"), "{m}");
    }

    #[test]
    fn durations_and_sizes() {
        let secs = |v| duration(v).map(|d| d.as_secs());
        assert_eq!(secs("45s"), Ok(45));
        assert_eq!(secs("5m"), Ok(300));
        assert_eq!(secs("2h"), Ok(7200));
        assert_eq!(secs("7d"), Ok(604_800));
        assert_eq!(secs("90"), Ok(90));
        assert_eq!(secs("0"), Ok(0));
        assert_eq!(secs("3650d"), Ok(MAX_DURATION_SECS));
        for bad in ["", "s", "5M", "1.5h", "-5", "+5", "5s5", "5 s", "٣s", "1w"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
        for long in ["3651d", "315360001", "213503982334601d"] {
            assert_eq!(
                duration(long),
                Err("is too long (at most 10 years)".into()),
                "{long}"
            );
        }
        assert_eq!(
            duration("18446744073709551615d"),
            Err("is too large".into())
        );

        assert_eq!(size("512K"), Ok(512 << 10));
        assert_eq!(size("512k"), Ok(512 << 10));
        assert_eq!(size("50m"), Ok(50 << 20));
        assert_eq!(size("1G"), Ok(1 << 30));
        assert_eq!(size("0"), Ok(0));
        assert_eq!(size("1234"), Ok(1234));
        assert_eq!(size("17179869183G"), Ok(17_179_869_183 << 30));
        assert_eq!(size("17179869184G"), Err("is too large".into()));
        for bad in ["", "K", "1T", "1KB", "1.5M", "-1", " 1"] {
            assert!(size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn global_defaults_inherited_and_overridden() {
        let c = cfg(
            "# defaults\n[global]\nport = 1234\ntimeout = 5m\nhost = g.example\nuser = shared\n\
             password_file = pw.txt\nmime = no\n\
             [account a]\n\
             [account b]\nhost = b.example\nport = 99\nmime = yes\npassword = own\n",
        );
        let (a, b) = (&c.accounts[0], &c.accounts[1]);
        assert_eq!(
            (a.host.as_str(), a.port, a.timeout),
            ("g.example", 1234, Duration::from_secs(300))
        );
        assert_eq!(a.secret, SecretSource::File("/etc/popspool/pw.txt".into()));
        assert!(!a.mime);
        assert_eq!(
            (b.host.as_str(), b.port, b.user.as_str()),
            ("b.example", 99, "shared")
        );
        // The account's own password replaces the global password_file as a whole.
        assert_eq!(b.secret, SecretSource::Inline(Password::new("own".into())));
        assert!(b.mime);
        assert_eq!(b.timeout, Duration::from_secs(300));
        // Global tls changes the default port; an account's own tls too.
        let c = cfg("[global]\ntls = none\nallow_plaintext = yes\n[account a]\nhost=h\nuser=u\npassword=p\n\
             [account b]\nhost=h\nuser=u\npassword=p\ntls = implicit\n");
        assert_eq!((c.accounts[0].port, c.accounts[1].port), (110, 995));
    }

    #[test]
    fn global_spool_is_a_root_and_paths_resolve_beside_the_file() {
        let text = "[global]\nspool = spool\nstate_dir = /var/lib/x\nlog_level = DEBUG\n\
                    [account a]\nhost=h\nuser=u\npassword_file = ../pw\n\
                    [account b]\nhost=h\nuser=u\npassword=p\nspool = /elsewhere\n";
        let c = cfg(text);
        assert_eq!(c.spool, Path::new("/etc/popspool/spool"));
        assert_eq!(c.state_dir, Path::new("/var/lib/x"));
        assert_eq!(c.log_level, Some(log::LevelFilter::Debug));
        assert_eq!(c.accounts[0].spool, Path::new("/etc/popspool/spool/a"));
        assert_eq!(
            c.accounts[0].secret,
            SecretSource::File("/etc/popspool/../pw".into())
        );
        assert_eq!(c.accounts[1].spool, Path::new("/elsewhere"));
        // A file named without a directory: relative to the working directory, like the file itself.
        let c = load_str(&format!("{MIN}ca_file = ca.pem\n"), Path::new("p.ini"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.accounts[0].ca_file.as_deref(), Some(Path::new("ca.pem")));
        for level in ["error", "warn", "info", "trace"] {
            assert!(cfg(&format!("[global]\nlog_level = {level}\n{MIN}"))
                .log_level
                .is_some());
        }
        check(
            &format!("[global]\nlog_level = loud\n{MIN}"),
            2,
            Some("log_level"),
            "error, warn",
        );
    }

    #[test]
    fn structural_errors_name_the_line() {
        let m = MIN;
        check(&format!("{m}\n# c\nhost pop\n"), 7, None, "without '='");
        check(
            &format!("{m}[accounts x]\n"),
            5,
            None,
            "unknown section '[accounts x]'",
        );
        check(&format!("{m}[Global]\n"), 5, None, "unknown section");
        check(&format!("{m}[account]\n"), 5, None, "needs a name");
        check(&format!("{m}[account ..]\n"), 5, None, "'.' and '..'");
        check(
            &format!("{m}[account a/b]\n"),
            5,
            None,
            "bad account name 'a/b'",
        );
        check(
            &format!("{m}[account {}]\n", "x".repeat(65)),
            5,
            None,
            "longer than 64",
        );
        check(&format!("{m}[account b\n"), 5, None, "without '='");
        check(
            &format!("{m}[account  a ]\n"),
            5,
            None,
            "duplicate account 'a'; first on line 1",
        );
        check(
            &format!("{m}user = v\n"),
            5,
            Some("user"),
            "set twice in this section; first on line 3",
        );
        check(
            &format!("host = h\n{m}"),
            1,
            Some("host"),
            "outside any section",
        );
        check(
            &format!("{m}state_dir = /x\n"),
            5,
            Some("state_dir"),
            "only allowed in [global]",
        );
        check(&format!("{m}hots = x\n"), 5, Some("hots"), "unknown key");
        check(&format!("{m}Host = x\n"), 5, Some("Host"), "unknown key");
        check(&format!("{m}= x\n"), 5, None, "no key");
        check(&format!("{m}host: x\n"), 5, None, "without '='");
        check(
            "[global]\n[global]\n",
            2,
            None,
            "duplicate [global]; first on line 1",
        );
        check(
            &format!("{m}[global]\n"),
            5,
            None,
            "before the first [account]",
        );
        check("[global]\nhost = h\n", 0, None, "no [account NAME]");
        check("", 0, None, "no [account NAME]");
        check(
            &format!("{m}password_file = /p\n"),
            5,
            Some("password_file"),
            "conflicts with 'password' on line 4",
        );
        check(&format!("{m}\ruser = x\n"), 5, None, "carriage return");
        check(
            &format!("{m}ca_file = /x\\\n"),
            5,
            Some("ca_file"),
            "line continuation",
        );
        check(
            "[global]\npassword = a\npassword_command = b\n",
            3,
            Some("password_command"),
            "conflicts",
        );
    }

    #[test]
    fn missing_and_inconsistent_keys() {
        check(
            "# x\n[account a]\nuser = u\npassword = p\n",
            2,
            Some("host"),
            "is required in [account a] or [global]",
        );
        check(
            "[account a]\nhost = h\npassword = p\n",
            1,
            Some("user"),
            "is required",
        );
        check(
            "[account a]\nhost = h\nuser = u\n",
            1,
            Some("password"),
            "one of password, password_file",
        );
        check(
            &format!("{MIN}tls_client_cert = c\n"),
            5,
            Some("tls_client_cert"),
            "needs tls_client_key",
        );
        check(
            &format!("{MIN}tls_client_key = k\n"),
            5,
            Some("tls_client_key"),
            "needs tls_client_cert",
        );
        check(
            &format!("{MIN}tls = none\nauth = user\n"),
            6,
            Some("auth"),
            "allow_plaintext",
        );
        assert_eq!(
            acct("tls = none\nauth = user\nallow_plaintext = 1\n").auth,
            Auth::Only(Mechanism::User)
        );
        for (auth, what) in [
            ("plain", "password"),
            ("LOGIN", "password"),
            ("xoauth2", "access token"),
            ("oauthbearer", "access token"),
        ] {
            check(
                &format!("{MIN}tls = none\nauth = {auth}\n"),
                6,
                Some("auth"),
                &format!("sends the {what} in clear text"),
            );
        }
        // Proofs rather than secrets may cross a connection without TLS.
        for auth in [
            "apop",
            "cram-md5",
            "scram-sha-1",
            "scram-sha-256",
            "ntlm",
            "auto",
        ] {
            assert_eq!(
                acct(&format!("tls = none\nauth = {auth}\n")).auth.name(),
                auth
            );
        }
        // EXTERNAL: no password needed, but TLS and a client certificate are.
        let ext = "[account a]\nhost = h\nuser = u\nauth = external\n";
        let a = cfg(&format!(
            "{ext}tls_client_cert = c.pem\ntls_client_key = k.pem\n"
        ))
        .accounts
        .remove(0);
        assert_eq!(
            (a.auth, &a.secret),
            (Auth::Only(Mechanism::External), &SecretSource::None)
        );
        check(ext, 4, Some("auth"), "needs tls_client_cert");
        check(
            &format!("{ext}tls = none\ntls_client_cert = c\ntls_client_key = k\n"),
            4,
            Some("auth"),
            "needs TLS",
        );
        check(
            "[account a]\nhost = h\nuser = u\nauth = scram-sha-256\n",
            1,
            Some("password"),
            "one of password",
        );
        for (name, m) in Auth::ALL {
            assert_eq!(m.name(), name);
            let certs = "tls_client_cert = c\ntls_client_key = k\n";
            let text = format!("auth = {}\n{certs}", name.to_uppercase());
            assert_eq!(acct(&text).auth, m, "{name}");
        }
        // Pairs may be split between [global] and the account.
        let c = cfg(&format!(
            "[global]\ntls_client_key = k\n{MIN}tls_client_cert = c\n"
        ));
        assert!(c.accounts[0].tls_client_key.is_some());
        // A bad [global] default is an error even where every account overrides it.
        check(
            &format!("[global]\nport = x\n{MIN}port = 1\n"),
            2,
            Some("port"),
            "whole number",
        );
    }

    #[test]
    fn password_survives_byte_exact() {
        let pw = r#"p;a#s\"s'=x \\ y=;#"#;
        let want = SecretSource::Inline(Password::new(pw.into()));
        let text = format!(
            "[account a]\n  ; indented comment\n\thost = h\nuser = u\npassword =   {pw}  \n"
        );
        assert_eq!(cfg(&text).accounts[0].secret, want);
        assert_eq!(cfg(&text.replace('\n', "\r\n")).accounts[0].secret, want);
        assert_eq!(cfg(&format!("\u{feff}{text}")).accounts[0].secret, want);
        // rust-ini, read directly on these lines, agrees.
        let ini =
            ini::Ini::load_from_str_opt(&format!("[account a]\npassword = {pw}\n"), PARSE_OPTION)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ini.get_from(Some("account a"), "password"), Some(pw));
        // Everything after the first '=' is the value, '=' included.
        assert_eq!(
            acct("").secret,
            SecretSource::Inline(Password::new("pw".into()))
        );
        let a = cfg("[account a]\nhost=h\nuser=u\npassword==x=\n")
            .accounts
            .remove(0);
        assert_eq!(a.secret, SecretSource::Inline(Password::new("=x=".into())));
    }

    #[test]
    fn password_command_is_split() {
        let a = cfg(
            "[account a]\nhost=h\nuser=u\npassword_command = pass show \"mail/work acct\" 'a b'\n",
        );
        let argv = ["pass", "show", "mail/work acct", "a b"]
            .map(String::from)
            .to_vec();
        assert_eq!(a.accounts[0].secret, SecretSource::Command(argv));
        check(
            "[account a]\nhost=h\nuser=u\npassword_command = \"x\n",
            4,
            Some("password_command"),
            "unbalanced",
        );
    }

    #[test]
    fn secrets_never_echoed() {
        let m = "[account a]\nhost=h\nuser=u\n";
        for text in [
            format!("{m}password = hunter2\0\n"),
            format!("{m}password_command = hunter2 'x\n"),
            format!("{m}password = hunter2\nsmtp_password = hunter2\n"),
            format!("{m}password = hunter2\\\n"),
        ] {
            let (_, _, message) = fail(&text);
            assert!(!message.contains("hunter2"), "{message}");
        }
        let c = cfg(&format!("{m}password = hunter2\n"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn password_file_in_the_credentials_directory() {
        let base = Path::new("/etc/popspool");
        let creds = Some(std::ffi::OsStr::new("/run/credentials/popspool.service"));
        let in_creds = Path::new("/run/credentials/popspool.service/sales.password");
        for v in [
            "${CREDENTIALS_DIRECTORY}/sales.password",
            "$CREDENTIALS_DIRECTORY/sales.password",
        ] {
            assert_eq!(password_file(v, base, creds).unwrap(), in_creds);
        }
        // Nothing else is expanded, with or without the variable set.
        for creds in [creds, None] {
            assert_eq!(
                password_file("pw$HOME/${USER}", base, creds).unwrap(),
                Path::new("/etc/popspool/pw$HOME/${USER}")
            );
            assert_eq!(
                password_file("/abs/pw", base, creds).unwrap(),
                Path::new("/abs/pw")
            );
        }
        let unset = password_file("${CREDENTIALS_DIRECTORY}/pw", base, None).unwrap_err();
        assert!(
            unset.contains("not set") && unset.contains("LoadCredential="),
            "{unset}"
        );
        let relative = Some(std::ffi::OsStr::new("creds"));
        let e = password_file("${CREDENTIALS_DIRECTORY}/pw", base, relative).unwrap_err();
        assert!(e.contains("absolute"), "{e}");
        for bad in [
            "${CREDENTIALS_DIRECTORY}",
            "${CREDENTIALS_DIRECTORY}/",
            "${CREDENTIALS_DIRECTORY}pw",
            "${CREDENTIALS_DIRECTORY}/../shadow",
        ] {
            let e = password_file(bad, base, creds).unwrap_err();
            assert!(e.contains("${CREDENTIALS_DIRECTORY}/NAME"), "{bad}: {e}");
        }
        // In a file, the error names the line and the key.
        let text = "[account a]\nhost = h\nuser = u\npassword_file = ${CREDENTIALS_DIRECTORY}/\n";
        check(
            text,
            4,
            Some("password_file"),
            "${CREDENTIALS_DIRECTORY}/NAME",
        );
    }

    #[test]
    fn later_keys_not_supported_yet() {
        for key in LATER_KEYS {
            check(
                &format!("{MIN}{key} = x\n"),
                5,
                Some(key),
                if matches!(*key, "smime_policy" | "mdn") {
                    "must be"
                } else {
                    "is not supported yet"
                },
            );
        }
        check(
            &format!("{MIN}smime_policy = require-valid\n"),
            5,
            Some("smime_policy"),
            "not supported yet",
        );
        check(
            &format!("[global]\nmdn = auto\n{MIN}"),
            2,
            Some("mdn"),
            "not supported yet",
        );
        let (_, _, m) = fail(&format!("{MIN}smtp_password = hunter2\n"));
        assert!(!m.contains("hunter2"));
        acct("smime_policy = accept\nmdn = never\n");
    }

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
        assert_eq!(e(0, None).exit_code(), 78);
        let u = Error::Unreadable {
            path: p.clone(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(u.to_string(), "cannot read /e/p.ini: entity not found");
        assert_eq!(u.exit_code(), 66);
        assert!(std::error::Error::source(&u).is_some());
        let text = format!("{MIN}port = x\n");
        assert_eq!(
            load_str(&text, &p).map(drop).map_err(|e| e.to_string()),
            Err("/e/p.ini:5: key 'port': bad value 'x': must be a whole number".into())
        );
    }

    #[test]
    fn cross_check_reports_a_disagreement() {
        let section = |entries| Section {
            account: Some("a"),
            header: "account a",
            line: 1,
            entries,
        };
        let scanned = |value, significant: &str| Scanned {
            global: Section {
                account: None,
                header: "global",
                line: 0,
                entries: Vec::new(),
            },
            accounts: vec![section(vec![Entry {
                key: "host",
                value,
                line: 2,
            }])],
            significant: significant.into(),
        };
        assert!(cross_check(&scanned("h", "[account a]\nhost = h\n"), path()).is_ok());
        match cross_check(&scanned("h", "[account a]\nhost = h\\\nx\n"), path()) {
            Err(Error::Invalid {
                line: 2,
                key: Some(k),
                ..
            }) => assert_eq!(k, "host"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn secret_mode_rule() {
        assert!(secret_mode_ok(0o100600, 5, 7));
        assert!(secret_mode_ok(0o400, 5, 7));
        assert!(secret_mode_ok(0o640, 7, 7));
        assert!(secret_mode_ok(0o660, 7, 7));
        assert!(!secret_mode_ok(0o640, 5, 7));
        assert!(!secret_mode_ok(0o604, 7, 7));
        assert!(!secret_mode_ok(0o601, 7, 7));
        assert!(!secret_mode_ok(0o644, 7, 7));
        assert!(!secret_mode_ok(0o610, 5, 7));
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
        assert_eq!(err.exit_code(), 78);
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
        let egid = effective_gid().unwrap_or(u32::MAX);
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
        assert_eq!(missing.exit_code(), 66);
        assert!(
            missing.to_string().starts_with("cannot read /"),
            "{missing}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
