//! Parsing one configuration value by the [`Kind`] its key has in the key
//! table: durations, sizes, booleans, keywords, ports, fingerprints, paths,
//! MIME types, addresses and the three ways to give the password. Messages
//! say what is wrong and, unless the key is secret, show the value.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::keys::{Key, Kind, Secrecy};
use super::{Auth, Delete, MdnMode, SecretSource, TlsMode};
use crate::secret::{self, Password};
use crate::smime::Policy;

/// Ten years. Durations are added to `Instant`s elsewhere, which panics on
/// overflow; nobody means a longer interval.
pub(super) const MAX_DURATION_SECS: u64 = 10 * 365 * 86_400;
/// A value is echoed in error messages at most this long, so a pasted blob
/// does not flood the terminal.
const MAX_SHOWN_VALUE: usize = 60;
/// The variable systemd sets for a service with `LoadCredential=`: the
/// directory holding the credentials, readable by the service alone.
const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// A parsed value; which variant a [`Kind`] yields is fixed by [`parse`].
#[derive(Debug)]
pub(super) enum Val {
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
    Ip(IpAddr),
    Mdn(MdnMode),
    SmimePolicy(Policy),
}

/// A Rust type some kinds of value parse into, so the builder can ask for a
/// key's value by the type of the field it fills.
pub(super) trait FromVal: Sized {
    /// Whether keys of `kind` parse into this type (a wrong pairing in the
    /// builder fails the unit tests rather than reading as unset).
    fn reads(kind: Kind) -> bool;
    /// The value, if `val` holds this type.
    fn from_val(val: &Val) -> Option<Self>;
}

macro_rules! from_val {
    ($($t:ty => $variant:ident for $($kind:path)|+;)*) => {$(
        impl FromVal for $t {
            fn reads(kind: Kind) -> bool {
                matches!(kind, $($kind)|+)
            }
            fn from_val(val: &Val) -> Option<Self> {
                match val {
                    Val::$variant(v) => Some(v.clone()),
                    _ => None,
                }
            }
        }
    )*};
}

from_val! {
    String => Text for Kind::Host | Kind::User | Kind::ContentType | Kind::Mailbox;
    PathBuf => Path for Kind::Path;
    u16 => Port for Kind::Port;
    TlsMode => Tls for Kind::Tls;
    [u8; 32] => Fingerprint for Kind::Fingerprint;
    SecretSource => Secret for Kind::Password | Kind::PasswordFile | Kind::PasswordCommand;
    Auth => Auth for Kind::Auth;
    bool => Bool for Kind::Bool;
    Duration => Duration for Kind::Interval;
    Delete => Delete for Kind::Delete;
    u64 => Size for Kind::MessageSize | Kind::Size;
    u32 => Count for Kind::Index | Kind::Threshold;
    log::LevelFilter => Level for Kind::LogLevel;
    IpAddr => Ip for Kind::Ip;
    MdnMode => Mdn for Kind::Mdn;
    Policy => SmimePolicy for Kind::SmimePolicy;
}

/// The value of `key`, or the message saying why `v` is not one; relative
/// paths are taken from `base`.
pub(super) fn parse(key: Key, v: &str, base: &Path) -> Result<Val, String> {
    match key.kind() {
        _ if v.is_empty() => Err("has no value".into()),
        kind => parse_kind(kind, v, base)
            .map_err(|reason| format!("bad value{}: {reason}", shown(key, v))),
    }
}

/// ` 'VALUE'` for messages, or nothing for a secret.
fn shown(key: Key, value: &str) -> String {
    if key.secrecy() != Secrecy::Open {
        return String::new();
    }
    format!(" '{}'", crate::text::escaped(value, MAX_SHOWN_VALUE))
}

/// Which [`Val`] each kind gives, and the rule each value must meet.
fn parse_kind(kind: Kind, v: &str, base: &Path) -> Result<Val, String> {
    Ok(match kind {
        Kind::Path => Val::Path(base.join(v)),
        Kind::LogLevel => Val::Level(keyword(
            v,
            &[
                ("error", log::LevelFilter::Error),
                ("warn", log::LevelFilter::Warn),
                ("info", log::LevelFilter::Info),
                ("debug", log::LevelFilter::Debug),
                ("trace", log::LevelFilter::Trace),
            ],
        )?),
        Kind::Host => {
            if v.contains(|c: char| c.is_whitespace() || c.is_control()) {
                return Err("must not contain spaces or control characters".into());
            }
            Val::Text(v.to_owned())
        }
        Kind::Port => {
            let n = number(v)?;
            Val::Port(
                u16::try_from(n)
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or("must be from 1 to 65535")?,
            )
        }
        Kind::Tls => Val::Tls(keyword(
            v,
            &[
                ("implicit", TlsMode::Implicit),
                ("starttls", TlsMode::StartTls),
                ("none", TlsMode::None),
            ],
        )?),
        Kind::Fingerprint => Val::Fingerprint(fingerprint(v)?),
        Kind::User => {
            // USER sends it on a command line; the INI reader already trimmed it,
            // but a user name with a CR/LF could inject a POP3 command.
            if v.contains(['\r', '\n', '\0']) || v.trim() != v {
                return Err("must not contain CR, LF, NUL or leading/trailing spaces".into());
            }
            Val::Text(v.to_owned())
        }
        Kind::Password => {
            if v.contains('\0') {
                return Err("contains a NUL character".into());
            }
            Val::Secret(SecretSource::Inline(Password::new(v.to_owned())))
        }
        Kind::PasswordFile => Val::Secret(SecretSource::File(password_file(
            v,
            base,
            std::env::var_os(CREDENTIALS_DIRECTORY).as_deref(),
        )?)),
        Kind::PasswordCommand => Val::Secret(SecretSource::Command(secret::split_command(v)?)),
        Kind::Auth => Val::Auth(keyword(v, &Auth::ALL)?),
        Kind::Bool => Val::Bool(boolean(v)?),
        Kind::Interval => {
            let d = duration(v)?;
            if d.is_zero() {
                return Err("must be greater than zero".into());
            }
            Val::Duration(d)
        }
        Kind::Delete => Val::Delete(match boolean(v) {
            // A bare 0 or 1 could be read as "no"/"yes" or as seconds; either misreading can lose or keep mail.
            _ if v == "0" || v == "1" => {
                return Err("is ambiguous; write yes, no, or a duration such as 7d".into())
            }
            Ok(true) => Delete::Yes,
            Ok(false) => Delete::No,
            Err(_) => Delete::After(duration(v).map_err(|e| format!("{e}, or yes or no"))?),
        }),
        Kind::MessageSize => {
            let n = size(v)?;
            if n == 0 {
                return Err("must be greater than zero".into());
            }
            Val::Size(n)
        }
        Kind::Size => Val::Size(size(v)?),
        Kind::Index => Val::Count(u32::try_from(number(v)?).map_err(|_| "is too large")?),
        Kind::Threshold => {
            let n = u32::try_from(number(v)?).map_err(|_| "is too large")?;
            if n == 0 {
                return Err("must be at least 1".into());
            }
            Val::Count(n)
        }
        Kind::ContentType => Val::Text(content_type(v)?),
        Kind::Ip => Val::Ip(v.parse().map_err(|_| "must be an IPv4 or IPv6 address")?),
        Kind::Mdn => Val::Mdn(keyword(
            v,
            &[("never", MdnMode::Never), ("auto", MdnMode::Auto)],
        )?),
        Kind::Mailbox => {
            mailbox_address(v)?;
            Val::Text(v.to_owned())
        }
        Kind::SmimePolicy => Val::SmimePolicy(keyword(v, &Policy::ALL)?),
    })
}

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

/// The `local@domain` of a `mdn_from` value: the value itself, or what
/// stands between `<` and `>` after a display name. It goes into a header
/// field and an SMTP command, so it must be one plain address.
pub fn mailbox_address(v: &str) -> Result<&str, String> {
    if v.contains(|c: char| c.is_control()) {
        return Err("must not contain control characters".into());
    }
    let addr = match v.find('<') {
        Some(open) => v[open + 1..]
            .strip_suffix('>')
            .ok_or("must be local@domain or Name <local@domain>")?,
        None => v,
    };
    let plain = |s: &str| {
        !s.is_empty()
            && !s
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '<' | '>' | '@' | ',' | '"'))
    };
    match addr.split_once('@') {
        Some((local, domain)) if plain(local) && plain(domain) => Ok(addr),
        _ => Err("must be local@domain or Name <local@domain>".into()),
    }
}

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
    let bad = || "must be a SHA-256 fingerprint: 64 hexadecimal digits, colons optional".into();
    let hex: Vec<u8> = v.bytes().filter(|&b| b != b':').collect();
    let mut out = [0u8; 32];
    if hex.len() != 2 * out.len() {
        return Err(bad());
    }
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (Some(hi), Some(lo)) = (crate::hex::digit(pair[0]), crate::hex::digit(pair[1])) else {
            return Err(bad());
        };
        *byte = hi << 4 | lo;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testkit::{acct, cfg, check, fail, MIN};

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
    fn long_values_are_cut_when_shown() {
        let long = "x".repeat(MAX_SHOWN_VALUE + 5);
        let (_, _, m) = fail(&format!("{MIN}port = {long}\n"));
        assert!(
            m.contains(&format!("'{}…'", "x".repeat(MAX_SHOWN_VALUE))),
            "{m}"
        );
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
            format!("{m}password = p\nsmtp_password = hunter2\0\n"),
            format!("{m}password = p\nsmtp_password_command = hunter2 'x\n"),
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
    fn keyword_keys_name_their_values() {
        check(
            &format!("{MIN}smime_policy = require-everything\n"),
            5,
            Some("smime_policy"),
            "must be one of accept, require-signed, require-valid",
        );
        check(
            &format!("{MIN}mdn = x\n"),
            5,
            Some("mdn"),
            "must be one of never, auto",
        );
        acct("smime_policy = accept\nmdn = never\n");
        acct("smime_policy = require-valid\n");
    }
}
