//! The one table of configuration keys: each key's name, the sections that
//! may hold it, the syntax of its value and whether that value may be shown.
//! The scanner accepts exactly these names, the value parser and the builder
//! name keys only through [`Key`], and the lists popspool.ini(5) documents
//! ([`GLOBAL_KEYS`], [`ACCOUNT_KEYS`]) are derived from it; a
//! misspelt key is therefore a compile error, never a silent default.

/// A configuration key; [`Key::TABLE`] says everything else about it.
// Variants spell the key names (`tls_client_key` is `TlsClientKey`).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Spool,
    StateDir,
    LogLevel,
    Host,
    Port,
    Tls,
    CaFile,
    TlsFingerprint,
    TlsClientCert,
    TlsClientKey,
    User,
    Password,
    PasswordFile,
    PasswordCommand,
    Auth,
    AllowPlaintext,
    PollInterval,
    Timeout,
    Delete,
    MaxMessageSize,
    Mime,
    BodyPartIndex,
    BodyPartContentType,
    ErrorThreshold,
    MaxBackoff,
    MinFreeSpace,
    SourceIp,
    SmimeCert,
    SmimeKey,
    SmimePkcs12,
    SmimePkcs12PasswordFile,
    SmimeCaFile,
    SmimePolicy,
    Mdn,
    SmtpHost,
    SmtpPort,
    SmtpTls,
    SmtpUser,
    SmtpPassword,
    SmtpPasswordFile,
    SmtpPasswordCommand,
    MdnFrom,
    SmtpCaFile,
}

/// Which sections may hold a key (popspool.ini(5), DESCRIPTION: "Any account
/// key set in [global] is the default for every account").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Only `[global]`: a setting of the whole process.
    Global,
    /// An account key; in `[global]` it is the default for every account.
    Account,
    /// A global setting and an account key with meanings of their own
    /// (`spool`: the root in `[global]`, the account's directory in an account).
    Both,
}

/// The syntax and rule of a key's value (parsed in `values`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A path, relative to the configuration file's directory.
    Path,
    /// A `log` level name.
    LogLevel,
    /// A server name or address.
    Host,
    /// 1 to 65535.
    Port,
    /// `implicit`, `starttls` or `none`.
    Tls,
    /// A SHA-256 certificate fingerprint.
    Fingerprint,
    /// A login sent on a POP3 command line.
    User,
    /// An inline password.
    Password,
    /// A file holding the password.
    PasswordFile,
    /// A command printing the password.
    PasswordCommand,
    /// `auto` or a mechanism.
    Auth,
    /// yes or no.
    Bool,
    /// A duration greater than zero.
    Interval,
    /// yes, no or a duration.
    Delete,
    /// A size greater than zero.
    MessageSize,
    /// A size, zero included.
    Size,
    /// A whole number, zero included.
    Index,
    /// A whole number, at least 1.
    Threshold,
    /// A MIME `type/subtype`.
    ContentType,
    /// An IPv4 or IPv6 address.
    Ip,
    /// `never` or `auto`.
    Mdn,
    /// A mail address, `local@domain` or `Name <local@domain>`.
    Mailbox,
    /// `accept`, `require-signed` or `require-valid`.
    SmimePolicy,
}

/// Whether a value may appear in a message, and what it demands of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Secrecy {
    /// May be echoed (escaped and cut) in an error message.
    Open,
    /// Never echoed: a command line may carry a passphrase.
    Hidden,
    /// A secret in the file itself: never echoed, and the file must be
    /// private (popspool.ini(5), under `password`).
    Inline,
}

use Place::{Account, Both, Global};
use Secrecy::{Hidden, Inline, Open};

/// One row of [`Key::TABLE`].
type Row = (Key, &'static str, Place, Kind, Secrecy);

impl Key {
    /// Every key, in declaration order, with its name as written in the file.
    // One row a line, so the table reads as one.
    #[rustfmt::skip]
    const TABLE: [Row; 43] = [
        (Key::Spool,                   "spool",                      Both,    Kind::Path,            Open),
        (Key::StateDir,                "state_dir",                  Global,  Kind::Path,            Open),
        (Key::LogLevel,                "log_level",                  Global,  Kind::LogLevel,        Open),
        (Key::Host,                    "host",                       Account, Kind::Host,            Open),
        (Key::Port,                    "port",                       Account, Kind::Port,            Open),
        (Key::Tls,                     "tls",                        Account, Kind::Tls,             Open),
        (Key::CaFile,                  "ca_file",                    Account, Kind::Path,            Open),
        (Key::TlsFingerprint,          "tls_fingerprint",            Account, Kind::Fingerprint,     Open),
        (Key::TlsClientCert,           "tls_client_cert",            Account, Kind::Path,            Open),
        (Key::TlsClientKey,            "tls_client_key",             Account, Kind::Path,            Open),
        (Key::User,                    "user",                       Account, Kind::User,            Open),
        (Key::Password,                "password",                   Account, Kind::Password,        Inline),
        (Key::PasswordFile,            "password_file",              Account, Kind::PasswordFile,    Open),
        (Key::PasswordCommand,         "password_command",           Account, Kind::PasswordCommand, Hidden),
        (Key::Auth,                    "auth",                       Account, Kind::Auth,            Open),
        (Key::AllowPlaintext,          "allow_plaintext",            Account, Kind::Bool,            Open),
        (Key::PollInterval,            "poll_interval",              Account, Kind::Interval,        Open),
        (Key::Timeout,                 "timeout",                    Account, Kind::Interval,        Open),
        (Key::Delete,                  "delete",                     Account, Kind::Delete,          Open),
        (Key::MaxMessageSize,          "max_message_size",           Account, Kind::MessageSize,     Open),
        (Key::Mime,                    "mime",                       Account, Kind::Bool,            Open),
        (Key::BodyPartIndex,           "body_part_index",            Account, Kind::Index,           Open),
        (Key::BodyPartContentType,     "body_part_content_type",     Account, Kind::ContentType,     Open),
        (Key::ErrorThreshold,          "error_threshold",            Account, Kind::Threshold,       Open),
        (Key::MaxBackoff,              "max_backoff",                Account, Kind::Interval,        Open),
        (Key::MinFreeSpace,            "min_free_space",             Account, Kind::Size,            Open),
        (Key::SourceIp,                "source_ip",                  Account, Kind::Ip,              Open),
        (Key::SmimeCert,               "smime_cert",                 Account, Kind::Path,            Open),
        (Key::SmimeKey,                "smime_key",                  Account, Kind::Path,            Open),
        (Key::SmimePkcs12,             "smime_pkcs12",               Account, Kind::Path,            Open),
        (Key::SmimePkcs12PasswordFile, "smime_pkcs12_password_file", Account, Kind::Path,            Open),
        (Key::SmimeCaFile,             "smime_ca_file",              Account, Kind::Path,            Open),
        (Key::SmimePolicy,             "smime_policy",               Account, Kind::SmimePolicy,     Open),
        (Key::Mdn,                     "mdn",                        Account, Kind::Mdn,             Open),
        (Key::SmtpHost,                "smtp_host",                  Account, Kind::Host,            Open),
        (Key::SmtpPort,                "smtp_port",                  Account, Kind::Port,            Open),
        (Key::SmtpTls,                 "smtp_tls",                   Account, Kind::Tls,             Open),
        (Key::SmtpUser,                "smtp_user",                  Account, Kind::User,            Open),
        (Key::SmtpPassword,            "smtp_password",              Account, Kind::Password,        Inline),
        (Key::SmtpPasswordFile,        "smtp_password_file",         Account, Kind::PasswordFile,    Open),
        (Key::SmtpPasswordCommand,     "smtp_password_command",      Account, Kind::PasswordCommand, Hidden),
        (Key::MdnFrom,                 "mdn_from",                   Account, Kind::Mailbox,         Open),
        (Key::SmtpCaFile,              "smtp_ca_file",               Account, Kind::Path,            Open),
    ];

    const fn row(self) -> &'static Row {
        // TABLE holds every variant, in declaration order (checked by a test).
        &Self::TABLE[self as usize]
    }

    /// The name as written in the file.
    pub(crate) const fn name(self) -> &'static str {
        self.row().1
    }

    /// The sections that may hold it.
    pub(crate) const fn place(self) -> Place {
        self.row().2
    }

    /// The syntax and rule of its value.
    pub(crate) const fn kind(self) -> Kind {
        self.row().3
    }

    /// Whether its value may be shown.
    pub(crate) const fn secrecy(self) -> Secrecy {
        self.row().4
    }

    /// The key `name` names, exactly (keys are case-sensitive).
    pub(crate) fn from_name(name: &str) -> Option<Key> {
        Self::TABLE.iter().find(|r| r.1 == name).map(|r| r.0)
    }

    /// Whether it is one of the ways to give the POP3 password, of which a
    /// section sets at most one.
    pub(crate) fn is_secret_source(self) -> bool {
        matches!(
            self,
            Key::Password | Key::PasswordFile | Key::PasswordCommand
        )
    }

    /// Whether it is one of the ways to give the SMTP password (for MDNs),
    /// of which a section sets at most one, as for POP3.
    pub(crate) fn is_smtp_secret_source(self) -> bool {
        matches!(
            self,
            Key::SmtpPassword | Key::SmtpPasswordFile | Key::SmtpPasswordCommand
        )
    }
}

/// The key lists popspool.ini(5) documents, one per section of the page.
#[derive(Clone, Copy)]
enum List {
    /// GLOBAL KEYS.
    Global,
    /// ACCOUNT KEYS.
    Account,
}

const fn listed(row: &Row, list: List) -> bool {
    match list {
        List::Global => matches!(row.2, Global | Both),
        List::Account => matches!(row.2, Account | Both),
    }
}

const fn count(list: List) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < Key::TABLE.len() {
        if listed(&Key::TABLE[i], list) {
            n += 1;
        }
        i += 1;
    }
    n
}

const fn names<const N: usize>(list: List) -> [&'static str; N] {
    let mut out = [""; N];
    let (mut i, mut n) = (0, 0);
    while i < Key::TABLE.len() {
        if listed(&Key::TABLE[i], list) {
            out[n] = Key::TABLE[i].1;
            n += 1;
        }
        i += 1;
    }
    out
}

const GLOBAL_NAMES: [&str; count(List::Global)] = names(List::Global);
const ACCOUNT_NAMES: [&str; count(List::Account)] = names(List::Account);

/// Keys of `[global]` as a whole (popspool.ini(5), GLOBAL KEYS).
pub const GLOBAL_KEYS: &[&str] = &GLOBAL_NAMES;
/// Keys of an account (popspool.ini(5), ACCOUNT KEYS). Each may also sit in
/// `[global]` as the default for every account, except `spool`: there it is
/// the root under which each account gets its own directory.
pub const ACCOUNT_KEYS: &[&str] = &ACCOUNT_NAMES;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_declaration_order_and_names_are_unique() {
        for (i, row) in Key::TABLE.iter().enumerate() {
            assert_eq!(row.0 as usize, i, "{:?}", row.0);
            assert_eq!(Key::from_name(row.1), Some(row.0));
            assert_eq!(row.0.name(), row.1);
        }
        assert_eq!(Key::from_name("Host"), None);
        assert_eq!(Key::from_name("hots"), None);
    }

    #[test]
    fn documented_lists() {
        assert_eq!(GLOBAL_KEYS, ["spool", "state_dir", "log_level"]);
        assert_eq!(ACCOUNT_KEYS.len(), 41);
        assert!(ACCOUNT_KEYS.contains(&"spool") && !ACCOUNT_KEYS.contains(&"log_level"));
        let secret_sources: Vec<&str> = Key::TABLE
            .iter()
            .filter(|r| r.0.is_secret_source())
            .map(|r| r.1)
            .collect();
        assert_eq!(
            secret_sources,
            ["password", "password_file", "password_command"]
        );
        let smtp_sources: Vec<&str> = Key::TABLE
            .iter()
            .filter(|r| r.0.is_smtp_secret_source())
            .map(|r| r.1)
            .collect();
        assert_eq!(
            smtp_sources,
            [
                "smtp_password",
                "smtp_password_file",
                "smtp_password_command"
            ]
        );
    }
}
