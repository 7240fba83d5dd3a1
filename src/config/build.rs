//! Stage 2 of reading the configuration: scanned sections to the typed
//! [`Config`] and its [`Account`]s. Every value is parsed exactly once, the
//! `[global]` defaults are merged into each account, the defaults of
//! popspool.ini(5) fill the rest, and the rules that tie keys together are
//! checked (a client certificate needs its key, a secret sent in clear text
//! needs `allow_plaintext`, no two accounts share a spool). Also here: the
//! rule that a file holding a secret (a configuration with an inline
//! password, a `password_file`, a `tls_client_key`) must be private.
//!
//! Keys are read only through [`Key`] and a typed accessor, so a key the
//! table lacks does not compile and a key read as the wrong type fails the
//! unit tests.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::access;
use super::keys::Key;
use super::scan::{self, Entry, Scanned, Section};
use super::values::{self, FromVal, Val};
use super::{invalid, Account, Auth, Config, Delete, Error, MdnMode, SecretSource, Smtp, TlsMode};
use crate::mechanism::Mechanism;
use crate::smime;

/// Default global `spool`.
const DEFAULT_SPOOL: &str = "/var/spool/popspool";
/// Default global `state_dir`.
const DEFAULT_STATE_DIR: &str = "/var/lib/popspool";
/// POP3S (RFC 8314), the default port for `tls = implicit`.
const POP3S_PORT: u16 = 995;
/// POP3 (RFC 1939), the default port otherwise.
const POP3_PORT: u16 = 110;
/// Message submission over TLS (RFC 8314), the default `smtp_port` for
/// `smtp_tls = implicit`.
const SUBMISSIONS_PORT: u16 = 465;
/// Message submission (RFC 6409), the default `smtp_port` otherwise.
const SUBMISSION_PORT: u16 = 587;
// Account defaults, as popspool.ini(5) (ACCOUNT KEYS) and the README's
// "Configuration" table state them.
/// `poll_interval`.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// `max_backoff`.
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// `error_threshold`.
const DEFAULT_ERROR_THRESHOLD: u32 = 10;
/// `min_free_space`.
const DEFAULT_MIN_FREE_SPACE: u64 = 64 << 20;

/// The configuration `scanned` (from `path`) describes. With
/// `check_files`, each account's `password_file` and `tls_client_key` must
/// be private as well (see [`check_secret_file`]).
pub(super) fn config(
    scanned: &Scanned<'_>,
    path: &Path,
    check_files: bool,
) -> Result<Config, Error> {
    let base = path.parent().unwrap_or(Path::new(""));
    let global = typed(&scanned.global, path, base)?;
    let top = Merged {
        own: &global,
        global: &[],
    };
    let spool = top
        .get(Key::Spool)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SPOOL));
    let state_dir = top
        .get(Key::StateDir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let log_level = top.get(Key::LogLevel);
    if check_files {
        warn_state_readers(&state_dir);
    }

    let mut accounts = Vec::with_capacity(scanned.accounts.len());
    for section in &scanned.accounts {
        let values = typed(section, path, base)?;
        let mut acct = account(section, &values, &global, &spool, path)?;
        if check_files {
            let m = Merged {
                own: &values,
                global: &global,
            };
            let file_of = |s: &'_ SecretSource| match s {
                SecretSource::File(p) => Some(p.clone()),
                _ => None,
            };
            let smtp_password_file = acct.smtp.as_ref().and_then(|s| file_of(&s.secret));
            let sm = &acct.smime.files;
            for (key, file) in [
                (Key::PasswordFile, file_of(&acct.secret).as_ref()),
                (Key::TlsClientKey, acct.tls_client_key.as_ref()),
                (Key::SmtpPasswordFile, smtp_password_file.as_ref()),
                (Key::SmimeKey, sm.key.as_ref()),
                (Key::SmimePkcs12, sm.pkcs12.as_ref()),
                (Key::SmimePkcs12PasswordFile, sm.password_file.as_ref()),
            ] {
                if let (Some(file), Some(line)) = (file, m.line(key)) {
                    check_secret_file(key, file, path, line)?;
                }
            }
            load_smime(&mut acct, &m, path, section.line)?;
        }
        // Each account's poll cleans its spool's tmp/ and owns what is in
        // it: two accounts in one spool would remove each other's work.
        // Compared as the file system resolves them (symlinks, `..`).
        let spool = crate::fsafe::canonical(&acct.spool);
        if let Some(other) = accounts
            .iter()
            .find(|a: &&Account| crate::fsafe::canonical(&a.spool) == spool)
        {
            let message = format!(
                "[account {}] uses the same spool directory as [account {}]; give each account its own",
                acct.name, other.name
            );
            return Err(invalid(
                path,
                section.line,
                Some(Key::Spool.name()),
                message,
            ));
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

/// One parsed entry.
struct Typed {
    key: Key,
    line: usize,
    val: Val,
}

/// Parse every value of a section, so a bad `[global]` default is reported
/// even when every account overrides it.
fn typed(section: &Section<'_>, path: &Path, base: &Path) -> Result<Vec<Typed>, Error> {
    let mut out = Vec::with_capacity(section.entries.len());
    for &Entry { key, value, line } in &section.entries {
        let val = values::parse(key, value, base)
            .map_err(|message| invalid(path, line, Some(key.name()), message))?;
        out.push(Typed { key, line, val });
    }
    Ok(out)
}

/// An account's own values in front of the `[global]` defaults.
struct Merged<'a> {
    own: &'a [Typed],
    global: &'a [Typed],
}

impl<'a> Merged<'a> {
    fn entry(&self, key: Key) -> Option<&'a Typed> {
        self.own.iter().chain(self.global).find(|t| t.key == key)
    }

    /// The merged value of `key`, if set.
    fn get<T: FromVal>(&self, key: Key) -> Option<T> {
        debug_assert!(
            T::reads(key.kind()),
            "{key:?} is read as {}",
            std::any::type_name::<T>()
        );
        self.entry(key).and_then(|t| T::from_val(&t.val))
    }

    /// The account's own value of `key`, ignoring `[global]`.
    fn own<T: FromVal>(&self, key: Key) -> Option<T> {
        Merged {
            own: self.own,
            global: &[],
        }
        .get(key)
    }

    fn line(&self, key: Key) -> Option<usize> {
        self.entry(key).map(|t| t.line)
    }

    /// The password source: the account's own, else `[global]`'s. It is
    /// chosen as a whole: an account's password_file replaces a global
    /// password rather than conflicting with it.
    fn secret(&self) -> Option<SecretSource> {
        self.secret_of(Key::is_secret_source)
    }

    /// [`Merged::secret`] for the keys `is_source` picks.
    fn secret_of(&self, is_source: fn(Key) -> bool) -> Option<SecretSource> {
        let of = |list: &'a [Typed]| list.iter().find(|t| is_source(t.key));
        of(self.own)
            .or_else(|| of(self.global))
            .and_then(|t| SecretSource::from_val(&t.val))
    }
}

/// Build one account: its own values, else `[global]`'s, else the defaults.
fn account(
    section: &Section<'_>,
    own: &[Typed],
    global: &[Typed],
    root: &Path,
    path: &Path,
) -> Result<Account, Error> {
    let m = Merged { own, global };
    let name = section.account.unwrap_or_default();
    let err = |line, key: Key, message: String| invalid(path, line, Some(key.name()), message);
    let required = |key: Key| {
        err(
            section.line,
            key,
            format!("is required in [account {name}] or [global]"),
        )
    };

    let host = m.get(Key::Host).ok_or_else(|| required(Key::Host))?;
    let user = m.get(Key::User).ok_or_else(|| required(Key::User))?;
    let auth = m.get(Key::Auth).unwrap_or(Auth::Auto);
    let secret = match m.secret() {
        Some(s) => s,
        // The certificate is the credential; a password given anyway is never used.
        None if auth == Auth::Only(Mechanism::External) => SecretSource::None,
        None => {
            let message = format!(
                "one of {}, {} or {} is required",
                Key::Password.name(),
                Key::PasswordFile.name(),
                Key::PasswordCommand.name()
            );
            return Err(err(section.line, Key::Password, message));
        }
    };

    let tls = m.get(Key::Tls).unwrap_or(TlsMode::Implicit);
    let port = m.get(Key::Port).unwrap_or(if tls == TlsMode::Implicit {
        POP3S_PORT
    } else {
        POP3_PORT
    });
    let tls_client_cert: Option<PathBuf> = m.get(Key::TlsClientCert);
    let tls_client_key = m.get(Key::TlsClientKey);
    for (have, lacks) in [
        (Key::TlsClientCert, Key::TlsClientKey),
        (Key::TlsClientKey, Key::TlsClientCert),
    ] {
        if let (Some(line), None) = (m.line(have), m.line(lacks)) {
            return Err(err(line, have, format!("needs {} as well", lacks.name())));
        }
    }
    let allow_plaintext = m.get(Key::AllowPlaintext).unwrap_or(false);
    let auth_line = m.line(Key::Auth).unwrap_or(section.line);
    // Every login but EXTERNAL (which needs TLS, below) hands a listener on
    // a link without TLS the secret or what cracks offline to it: the
    // password, a token, an APOP or CRAM-MD5 digest, an NTLM response, a
    // SCRAM proof with its salt.
    let external = auth == Auth::Only(Mechanism::External);
    if tls == TlsMode::None && !allow_plaintext && !external {
        let exposed = match auth {
            Auth::Only(Mechanism::XOAuth2 | Mechanism::OAuthBearer) => "the access token",
            Auth::Only(m) if m.sends_secret() => "the password",
            Auth::Only(_) => "what cracks offline to the password",
            Auth::Auto => "the password or what cracks offline to it, whatever it chooses",
        };
        let message = format!(
            "{} = {} with {} = none hands a listener {exposed}; \
             set {} = yes to allow that, or use TLS",
            Key::Auth.name(),
            auth.name(),
            Key::Tls.name(),
            Key::AllowPlaintext.name()
        );
        let (line, key) = match m.line(Key::Auth) {
            Some(line) => (line, Key::Auth),
            None => (m.line(Key::Tls).unwrap_or(section.line), Key::Tls),
        };
        return Err(err(line, key, message));
    }
    if auth == Auth::Only(Mechanism::External) {
        let external = format!("{} = {}", Key::Auth.name(), auth.name());
        if tls == TlsMode::None {
            let message = format!("{external} needs TLS: the client certificate is the credential");
            return Err(err(auth_line, Key::Auth, message));
        }
        if tls_client_cert.is_none() {
            let message = format!(
                "{external} needs {} and {}",
                Key::TlsClientCert.name(),
                Key::TlsClientKey.name()
            );
            return Err(err(auth_line, Key::Auth, message));
        }
    }
    let smime = smime_settings(&m, &err)?;
    // `spool` in [global] is the root, not a default shared by every account.
    let spool = m.own(Key::Spool).unwrap_or_else(|| root.join(name));
    let mdn = m.get(Key::Mdn).unwrap_or(MdnMode::Never);
    let smtp = smtp(&m, section, name, mdn, allow_plaintext, path)?;

    Ok(Account {
        name: name.to_owned(),
        host,
        port,
        tls,
        ca_file: m.get(Key::CaFile),
        tls_fingerprint: m.get(Key::TlsFingerprint),
        tls_client_cert,
        tls_client_key,
        user,
        secret,
        auth,
        allow_plaintext,
        poll_interval: m.get(Key::PollInterval).unwrap_or(DEFAULT_POLL_INTERVAL),
        timeout: m.get(Key::Timeout).unwrap_or(DEFAULT_TIMEOUT),
        spool,
        delete: m.get(Key::Delete).unwrap_or(Delete::Yes),
        max_message_size: m.get(Key::MaxMessageSize),
        mime: m.get(Key::Mime).unwrap_or(true),
        body_part_index: m.get(Key::BodyPartIndex).unwrap_or(0),
        body_part_content_type: m.get(Key::BodyPartContentType),
        error_threshold: m
            .get(Key::ErrorThreshold)
            .unwrap_or(DEFAULT_ERROR_THRESHOLD),
        max_backoff: m.get(Key::MaxBackoff).unwrap_or(DEFAULT_MAX_BACKOFF),
        min_free_space: m.get(Key::MinFreeSpace).unwrap_or(DEFAULT_MIN_FREE_SPACE),
        source_ip: m.get(Key::SourceIp),
        mdn,
        smtp,
        smime,
    })
}

/// `smime_*`: a certificate comes with its key, and either those or a
/// PKCS#12 file, not both (README, "S/MIME").
fn smime_settings(
    m: &Merged<'_>,
    err: &dyn Fn(usize, Key, String) -> Error,
) -> Result<smime::Settings, Error> {
    for (have, lacks) in [
        (Key::SmimeCert, Key::SmimeKey),
        (Key::SmimeKey, Key::SmimeCert),
    ] {
        if let (Some(line), None) = (m.line(have), m.line(lacks)) {
            return Err(err(line, have, format!("needs {} as well", lacks.name())));
        }
    }
    if let (Some(line), Some(_)) = (m.line(Key::SmimePkcs12), m.line(Key::SmimeCert)) {
        let message = format!(
            "give either {} or {} and {}, not both",
            Key::SmimePkcs12.name(),
            Key::SmimeCert.name(),
            Key::SmimeKey.name()
        );
        return Err(err(line, Key::SmimePkcs12, message));
    }
    let files = smime::keys::Files {
        cert: m.get(Key::SmimeCert),
        key: m.get(Key::SmimeKey),
        pkcs12: m.get(Key::SmimePkcs12),
        password_file: m.get(Key::SmimePkcs12PasswordFile),
        ca_file: m.get(Key::SmimeCaFile),
    };
    let policy = m.get(Key::SmimePolicy).unwrap_or_default();
    Ok(smime::Settings::new(policy, files))
}

/// Load the account's S/MIME keys, certificate and trust anchors, so a
/// file that cannot be used is a configuration error at start-up, at
/// SIGHUP (the old configuration stays) and under `--check`.
fn load_smime(acct: &mut Account, m: &Merged<'_>, path: &Path, line: usize) -> Result<(), Error> {
    use smime::keys::Which;
    let loaded = smime::keys::load(&acct.smime.files).map_err(|(which, message)| {
        let key = match which {
            Which::Cert => Key::SmimeCert,
            Which::Key => Key::SmimeKey,
            Which::Pkcs12 => Key::SmimePkcs12,
            Which::PasswordFile => Key::SmimePkcs12PasswordFile,
            Which::CaFile => Key::SmimeCaFile,
        };
        invalid(path, m.line(key).unwrap_or(line), Some(key.name()), message)
    })?;
    acct.smime.loaded = Some(std::sync::Arc::new(loaded));
    Ok(())
}

/// The SMTP side of an account (README, "Acknowledgments (MDN)"): present
/// when `smtp_host` is set, required with `mdn = auto`, and never sending
/// a credential without TLS unless `allow_plaintext` says so.
fn smtp(
    m: &Merged<'_>,
    section: &Section<'_>,
    name: &str,
    mdn: MdnMode,
    allow_plaintext: bool,
    path: &Path,
) -> Result<Option<Smtp>, Error> {
    let err = |line, key: Key, message: String| invalid(path, line, Some(key.name()), message);
    let auto = mdn == MdnMode::Auto;
    let mdn_line = m.line(Key::Mdn).unwrap_or(section.line);
    let from: Option<String> = m.get(Key::MdnFrom);
    if auto && from.is_none() {
        let message = format!("mdn = auto needs {} (the MDN's From)", Key::MdnFrom.name());
        return Err(err(mdn_line, Key::MdnFrom, message));
    }
    let user: Option<String> = m.get(Key::SmtpUser);
    let secret = m.secret_of(Key::is_smtp_secret_source);
    let secret = match (&user, secret) {
        (Some(_), Some(s)) => s,
        (None, None) => SecretSource::None,
        (Some(_), None) => {
            let line = m.line(Key::SmtpUser).unwrap_or(section.line);
            let message = format!(
                "needs one of {}, {} or {}",
                Key::SmtpPassword.name(),
                Key::SmtpPasswordFile.name(),
                Key::SmtpPasswordCommand.name()
            );
            return Err(err(line, Key::SmtpUser, message));
        }
        (None, Some(_)) => {
            let key = [
                Key::SmtpPassword,
                Key::SmtpPasswordFile,
                Key::SmtpPasswordCommand,
            ]
            .into_iter()
            .find(|&k| m.line(k).is_some())
            .unwrap_or(Key::SmtpPassword);
            let line = m.line(key).unwrap_or(section.line);
            let message = format!("is given but {} is not", Key::SmtpUser.name());
            return Err(err(line, key, message));
        }
    };
    let Some(host) = m.get::<String>(Key::SmtpHost) else {
        if auto {
            let message = format!(
                "mdn = auto needs {} (where MDNs are sent), in [account {name}] or [global]",
                Key::SmtpHost.name()
            );
            return Err(err(mdn_line, Key::SmtpHost, message));
        }
        return Ok(None);
    };
    let tls = m.get(Key::SmtpTls).unwrap_or(TlsMode::StartTls);
    let port = m.get(Key::SmtpPort).unwrap_or(if tls == TlsMode::Implicit {
        SUBMISSIONS_PORT
    } else {
        SUBMISSION_PORT
    });
    if tls == TlsMode::None && user.is_some() && !allow_plaintext {
        let line = m.line(Key::SmtpTls).unwrap_or(section.line);
        let message = format!(
            "{} = none with {} would send the SMTP password in clear text; set {} = yes to \
             allow that",
            Key::SmtpTls.name(),
            Key::SmtpUser.name(),
            Key::AllowPlaintext.name()
        );
        return Err(err(line, Key::SmtpTls, message));
    }
    Ok(Some(Smtp {
        host,
        port,
        tls,
        ca_file: m.get(Key::SmtpCaFile).or_else(|| m.get(Key::CaFile)),
        user,
        secret,
        from,
    }))
}

/// Refuse a file that holds an inline secret yet others can read
/// (popspool.ini(5), under `password`). `meta` is that of the handle `text` was read
/// from, so the mode checked is that of the bytes parsed.
pub(super) fn check_private(text: &str, meta: &Metadata, path: &Path) -> Result<(), Error> {
    if !scan::holds_inline_secret(text) {
        return Ok(());
    }
    if private_enough(meta) {
        warn_group_readers(path, meta, "a password");
        return Ok(());
    }
    let message = format!(
        "holds a password but is readable by other users (mode {:04o}); \
         run 'chmod 600 {}' or move the password to a password_file",
        meta.mode() & 0o7777,
        path.display()
    );
    Err(invalid(path, 0, None, message))
}

/// Refuse a `password_file` or `tls_client_key` that others can read, by
/// the rule for a configuration holding a password (popspool.ini(5), under
/// `password_file` and `tls_client_key`). A file that cannot be examined is
/// left to the poll (or `--check`), which reads it and says why it cannot.
fn check_secret_file(key: Key, file: &Path, path: &Path, line: usize) -> Result<(), Error> {
    let Ok(meta) = std::fs::metadata(file) else {
        return Ok(());
    };
    let what = if matches!(key, Key::TlsClientKey | Key::SmimeKey | Key::SmimePkcs12) {
        "a private key"
    } else {
        "a password"
    };
    if private_enough(&meta) {
        warn_group_readers(file, &meta, what);
        return Ok(());
    }
    let message = format!(
        "{} holds {what} but is readable by other users (mode {:04o}); run 'chmod 600 {}'",
        file.display(),
        meta.mode() & 0o7777,
        file.display()
    );
    Err(invalid(path, line, Some(key.name()), message))
}

/// Warn, loudly and at every load, about a secret file that the mode rule
/// lets through because its group is popspool's, while that group has
/// other members (spool consumers) who can reach it (see [`access`]).
/// Refusing would stop a service that worked before an upgrade, and would
/// not make the file any less readable; the warning names the fix.
fn warn_group_readers(file: &Path, meta: &Metadata, what: &str) {
    let Some(me) = access::effective_uid() else {
        return;
    };
    if let Some((group, others)) = access::group_readers(file, meta, me) {
        log::warn!(
            "{} holds {what} and is readable by group {group}, which has other members ({}): \
             they can read it. Give the file to the user popspool runs as with mode 0600 \
             (chown; chmod 600 {}), or pass it as a systemd credential (README \"Secrets\")",
            file.display(),
            others.join(", "),
            file.display()
        );
    }
}

/// Warn, like [`warn_group_readers`], about a state directory that spool
/// consumers can enter: the status files say which servers and users
/// popspool polls and how it fails. systemd sets the directory's mode from
/// the unit's `StateDirectoryMode=` at every start.
fn warn_state_readers(dir: &Path) {
    let (Some(me), Ok(meta)) = (access::effective_uid(), std::fs::metadata(dir)) else {
        return;
    };
    if let Some((group, others)) = access::group_readers(dir, &meta, me) {
        log::warn!(
            "state_dir {} can be entered by group {group}, which has other members ({}): \
             they can read the status files. Run 'chmod 700 {}' (under systemd: \
             StateDirectoryMode=0700)",
            dir.display(),
            others.join(", "),
            dir.display()
        );
    }
}

/// [`secret_mode_ok`] for the process as it runs.
fn private_enough(meta: &Metadata) -> bool {
    match access::effective_gid() {
        Some(egid) => secret_mode_ok(meta.mode(), meta.gid(), egid),
        None => meta.mode() & 0o077 == 0,
    }
}

/// Whether a file holding an inline secret is private enough: nothing for
/// others, and group access only for the group popspool itself runs as (a
/// `root:popspool 0640` file passes for a daemon running as group popspool;
/// [`warn_group_readers`] then names that group's other members).
fn secret_mode_ok(mode: u32, file_gid: u32, egid: u32) -> bool {
    mode & 0o007 == 0 && (mode & 0o070 == 0 || file_gid == egid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::config::testkit::{acct, cfg, check, path, MIN};
    use crate::secret::Password;

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
        assert_eq!(acct("tls = none\nallow_plaintext = yes\n").port, 110);
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
        assert_eq!(
            acct("source_ip = 192.0.2.7\n").source_ip,
            Some(std::net::IpAddr::from([192, 0, 2, 7]))
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
        // Without TLS every login hands a listener the secret or what
        // cracks offline to it (README "Logging in").
        for (auth, what) in [
            ("plain", "the password;"),
            ("LOGIN", "the password;"),
            ("xoauth2", "the access token;"),
            ("oauthbearer", "the access token;"),
            ("apop", "what cracks offline to the password;"),
            ("cram-md5", "what cracks offline to the password;"),
            ("scram-sha-1", "what cracks offline to the password;"),
            ("scram-sha-256", "what cracks offline to the password;"),
            ("ntlm", "what cracks offline to the password;"),
        ] {
            check(
                &format!("{MIN}tls = none\nauth = {auth}\n"),
                6,
                Some("auth"),
                &format!("with tls = none hands a listener {what} set allow_plaintext = yes"),
            );
            let allowed = acct(&format!(
                "tls = none\nauth = {auth}\nallow_plaintext = yes\n"
            ));
            assert_eq!(allowed.auth.name(), auth.to_lowercase());
        }
        // `auto` has nothing left to try: the error names `tls`, where it is set.
        check(
            &format!("{MIN}tls = none\n"),
            5,
            Some("tls"),
            "auth = auto with tls = none hands a listener the password or what cracks offline",
        );
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
    fn mdn_and_smtp_keys() {
        let a = acct("");
        assert_eq!(a.mdn, MdnMode::Never);
        assert!(a.smtp.is_none());
        let smtp = "smtp_host = smtp.example.com\nmdn_from = Receipts <r@example.com>\n";
        let a = acct(&format!("mdn = auto\n{smtp}"));
        assert_eq!(a.mdn, MdnMode::Auto);
        let s = a.smtp.unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.tls, s.ca_file, s.user),
            ("smtp.example.com", 587, TlsMode::StartTls, None, None)
        );
        assert_eq!(s.secret, SecretSource::None);
        assert_eq!(s.from.as_deref(), Some("Receipts <r@example.com>"));
        let s = acct(&format!(
            "ca_file = pop.pem\nsmtp_tls = implicit\nsmtp_user = m\nsmtp_password_file = s.pw\n{smtp}"
        ))
        .smtp
        .unwrap();
        assert_eq!((s.port, s.tls), (465, TlsMode::Implicit));
        assert_eq!(
            s.ca_file.as_deref(),
            Some(Path::new("/etc/popspool/pop.pem"))
        );
        assert_eq!(s.secret, SecretSource::File("/etc/popspool/s.pw".into()));
        let s = acct(&format!("smtp_ca_file = s.pem\nsmtp_port = 2525\n{smtp}"))
            .smtp
            .unwrap();
        assert_eq!(
            (s.port, s.ca_file.as_deref()),
            (2525, Some(Path::new("/etc/popspool/s.pem")))
        );
        // The POP3 password and the SMTP password are separate choices.
        let a = acct(&format!("smtp_user = m\nsmtp_password = x\n{smtp}"));
        assert_eq!(a.secret, SecretSource::Inline(Password::new("pw".into())));
        assert_eq!(
            a.smtp.unwrap().secret,
            SecretSource::Inline(Password::new("x".into()))
        );
        check(
            &format!("{MIN}mdn = auto\n"),
            5,
            Some("mdn_from"),
            "mdn = auto needs",
        );
        check(
            &format!("{MIN}mdn = auto\nmdn_from = r@example.com\n"),
            5,
            Some("smtp_host"),
            "mdn = auto needs smtp_host",
        );
        check(
            &format!("{MIN}mdn = sometimes\n"),
            5,
            Some("mdn"),
            "never, auto",
        );
        check(
            &format!("{MIN}{smtp}smtp_user = m\n"),
            7,
            Some("smtp_user"),
            "needs one of smtp_password",
        );
        check(
            &format!("{MIN}{smtp}smtp_password = p\n"),
            7,
            Some("smtp_password"),
            "smtp_user is not",
        );
        check(
            &format!("{MIN}{smtp}smtp_password = p\nsmtp_password_command = x\n"),
            8,
            Some("smtp_password_command"),
            "set only one of smtp_password",
        );
        check(
            &format!("{MIN}{smtp}smtp_tls = none\nsmtp_user = m\nsmtp_password = p\n"),
            7,
            Some("smtp_tls"),
            "clear text",
        );
        let a = acct(&format!(
            "{smtp}smtp_tls = none\nsmtp_user = m\nsmtp_password = p\nallow_plaintext = yes\n"
        ));
        assert_eq!(a.smtp.unwrap().port, 587);
        for bad in ["r", "r@", "<r@x", "a b@x", "r@x\u{7}", "R <r@x> y", "a@b@c"] {
            let text = format!("{MIN}mdn_from = {bad}\n");
            let (line, key, _) = crate::config::testkit::fail(&text);
            assert_eq!((line, key.as_deref()), (5, Some("mdn_from")), "{bad}");
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

    /// Two spellings of one directory (`..`, a symlink) are one spool.
    #[test]
    fn accounts_never_share_a_spool_however_spelled() {
        let d = std::env::temp_dir().join(format!("popspool-samespool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("real")).unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("link")).unwrap();
        let two = |a: &str, b: &str| {
            format!(
                "[account a]\nhost=h\nuser=u\npassword=p\nspool = {}\n\
                 [account b]\nhost=h\nuser=u\npassword=p\nspool = {}\n",
                d.join(a).display(),
                d.join(b).display()
            )
        };
        for (a, b) in [
            ("real/s", "link/s"),
            ("real/s", "real/x/../s"),
            ("s", "real/../s"),
        ] {
            check(&two(a, b), 6, Some("spool"), "same spool directory");
        }
        cfg(&two("real/s", "link/t"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
