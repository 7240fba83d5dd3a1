//! Secrets: turn a [`SecretSource`] into the password, fresh on each use.
//!
//! A password file is re-read and a password command re-run every time, so a
//! rotated secret takes effect at the next poll without a reload. Errors name
//! the file or the program (argv\[0\] only: later arguments may carry a
//! passphrase), never what the file held or the command printed. A
//! command's stderr says why it failed, but it may echo what it was given:
//! it goes to the log only, as one short line with the secret cut out, and
//! never into an error (which reaches `status.json`) ([`command`] runs it).
//!
//! Buffers that held a secret are wiped when dropped ([`Password`], the
//! file and pipe buffers), so a secret does not linger in freed memory.

mod command;

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use zeroize::{Zeroize, Zeroizing};

use crate::config::SecretSource;
use crate::text::printable_bytes;

pub use command::{ENV_KEPT, PATH as COMMAND_PATH};

/// A secret string whose `Debug` never shows it (and which has no
/// `Display`, so it cannot be printed by mistake); wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wrap a secret.
    pub fn new(s: String) -> Self {
        Password(s)
    }
    /// The secret itself; call only where it is sent to the server.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// No real password comes close; the cap bounds memory when a file or
/// command yields something unexpected (`/dev/zero`, a log file).
const MAX_SECRET_BYTES: usize = 64 * 1024;
/// How much of a command's stderr is read and kept: enough to find the
/// line that says why it failed.
const STDERR_KEPT: usize = 4096;
/// The logged summary of a command's stderr: one line, short enough that
/// a chatty helper cannot flood the journal.
const STDERR_SHOWN: usize = 200;
/// What stands in the logged stderr for anything the command printed on stdout.
const REDACTED: &str = "<redacted>";

/// Why no password could be had.
#[derive(Debug)]
pub enum Error {
    /// The password file cannot be opened or read.
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The command cannot be started, waited for, or read from.
    Command {
        /// argv\[0\] only: later arguments may hold a passphrase.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// The command (or something it left running with our pipes) outlived
    /// the timeout; its whole process group was killed.
    Timeout {
        /// argv\[0\].
        program: String,
        /// The limit.
        timeout: Duration,
    },
    /// The command exited unsuccessfully (what it said on stderr is in the log).
    Failed {
        /// argv\[0\].
        program: String,
        /// Its exit status.
        status: ExitStatus,
    },
    /// The file or the command's output holds no usable password.
    Unusable {
        /// The file or program.
        origin: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::File { path, source } => {
                write!(f, "cannot read password file {}: {source}", path.display())
            }
            Error::Command { program, source } => {
                write!(f, "cannot run password command '{program}': {source}")
            }
            Error::Timeout { program, timeout } => write!(
                f,
                "password command '{program}' did not finish within {timeout:?}; killed"
            ),
            Error::Failed { program, status } => {
                write!(f, "password command '{program}' failed ({status})")
            }
            Error::Unusable { origin, reason } => write!(f, "{origin}: {reason}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::File { source, .. } | Error::Command { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The password `src` stands for; a command gets `timeout` to print it.
pub fn resolve(src: &SecretSource, timeout: Duration) -> Result<Password, Error> {
    match src {
        // `auth = external`: the certificate is the credential.
        SecretSource::None => Ok(Password::new(String::new())),
        SecretSource::Inline(password) => Ok(password.clone()),
        SecretSource::File(path) => {
            let mut bytes = Zeroizing::new(Vec::new());
            File::open(path)
                .and_then(|f| f.take(MAX_SECRET_BYTES as u64 + 1).read_to_end(&mut bytes))
                .map_err(|source| Error::File {
                    path: path.clone(),
                    source,
                })?;
            first_line(&bytes, || format!("password file {}", path.display()))
        }
        SecretSource::Command(argv) => run(argv, timeout),
    }
}

/// Split a `password_command` value into argv, without a shell: whitespace
/// separates words, `"..."` and `'...'` group (single quotes literally), and
/// a backslash outside single quotes takes the next character literally.
pub fn split_command(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    // `Some` once a word has begun, so that `""` is an (empty) word.
    let mut word: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unbalanced single quote".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => w.push(chars.next().ok_or("unbalanced double quote")?),
                        Some(c) => w.push(c),
                        None => return Err("unbalanced double quote".into()),
                    }
                }
            }
            '\\' => word
                .get_or_insert_with(String::new)
                .push(chars.next().ok_or("backslash at the end")?),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    match words.first() {
        None => Err("no command".into()),
        Some(program) if program.is_empty() => Err("empty program name".into()),
        Some(_) => Ok(words),
    }
}

/// Run `argv` without a shell and take the first line it prints; log a
/// short summary of its stderr when it fails.
fn run(argv: &[String], timeout: Duration) -> Result<Password, Error> {
    let Some(program) = argv.first() else {
        return Err(Error::Unusable {
            origin: "password command".into(),
            reason: "is empty",
        });
    };
    let ran = command::run(argv, timeout, MAX_SECRET_BYTES + 1, STDERR_KEPT).map_err(|source| {
        Error::Command {
            program: program.clone(),
            source,
        }
    })?;
    let failed = match ran.status {
        None => Error::Timeout {
            program: program.clone(),
            timeout,
        },
        Some(status) if !status.success() => Error::Failed {
            program: program.clone(),
            status,
        },
        Some(_) => {
            if let Some(said) = stderr_summary(&ran.stderr, &ran.stdout) {
                log::debug!("password command '{program}' said on stderr: {said}");
            }
            return first_line(&ran.stdout, || {
                format!("output of password command '{program}'")
            });
        }
    };
    if let Some(said) = stderr_summary(&ran.stderr, &ran.stdout) {
        log::warn!("password command '{program}' said on stderr: {said}");
    }
    Err(failed)
}

/// The first non-blank line of `stderr`, made printable and cut to
/// [`STDERR_SHOWN`] characters, with every non-blank line of `stdout` (the
/// secret, or what the command meant as one) replaced by [`REDACTED`].
fn stderr_summary(stderr: &[u8], stdout: &[u8]) -> Option<String> {
    let line = stderr
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .find(|l| l.iter().any(|b| !b.is_ascii_whitespace()))?;
    let mut line = Zeroizing::new(line.to_vec());
    for secret in stdout.split(|&b| b == b'\n') {
        let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
        if !secret.is_empty() {
            *line = replace_all(&line, secret, REDACTED.as_bytes());
        }
    }
    let shown = printable_bytes(&line, STDERR_SHOWN);
    Some(shown.trim().to_owned())
}

/// `haystack` with every occurrence of `needle` (not empty) replaced.
fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while !rest.is_empty() {
        if rest.starts_with(needle) {
            out.extend_from_slice(with);
            rest = &rest[needle.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// The first line of `bytes` without its line ending, as a password.
fn first_line(bytes: &[u8], origin: impl Fn() -> String) -> Result<Password, Error> {
    let unusable = |reason| Error::Unusable {
        origin: origin(),
        reason,
    };
    let line = match bytes.iter().position(|&b| b == b'\n') {
        Some(end) => &bytes[..end],
        None if bytes.len() > MAX_SECRET_BYTES => return Err(unusable("first line is too long")),
        None => bytes,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(unusable("first line is empty"));
    }
    // Checked in place: a failed `String::from_utf8` would drop an unwiped copy.
    std::str::from_utf8(line)
        .map(|s| Password::new(s.to_owned()))
        .map_err(|_| unusable("first line is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn sh(script: &str) -> SecretSource {
        SecretSource::Command(vec!["/bin/sh".into(), "-c".into(), script.into()])
    }

    fn get(src: &SecretSource) -> Result<String, Error> {
        resolve(src, Duration::from_secs(5)).map(|p| p.expose().to_owned())
    }

    /// A temporary password file, removed on drop.
    struct Temp(PathBuf);

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn file(name: &str, body: &[u8]) -> (Temp, SecretSource) {
        let path = std::env::temp_dir().join(format!("h-secret-{}-{name}", std::process::id()));
        std::fs::write(&path, body).unwrap_or_else(|e| panic!("{e}"));
        (Temp(path.clone()), SecretSource::File(path))
    }

    #[test]
    fn inline_and_files() {
        let inline = SecretSource::Inline(Password::new("x y".into()));
        assert_eq!(get(&inline).ok().as_deref(), Some("x y"));
        assert_eq!(
            get(&file("crlf", b"s3cret\r\nsecond\r\n").1)
                .ok()
                .as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            get(&file("lf", b" s p \nsecond").1).ok().as_deref(),
            Some(" s p ")
        );
        assert_eq!(
            get(&file("bare", b"s3cret").1).ok().as_deref(),
            Some("s3cret")
        );
        for (name, body, reason) in [
            ("empty", &b""[..], "first line is empty"),
            ("blank", b"\nsecret\n", "first line is empty"),
            ("latin1", b"caf\xe9\n", "not valid UTF-8"),
        ] {
            let e = get(&file(name, body).1).unwrap_err().to_string();
            assert!(
                e.starts_with("password file /") && e.ends_with(reason),
                "{e}"
            );
        }
        let long = vec![b'a'; MAX_SECRET_BYTES + 10];
        assert!(get(&file("long", &long).1)
            .unwrap_err()
            .to_string()
            .ends_with("too long"));
        let missing = SecretSource::File("/nonexistent/pw".into());
        let e = get(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot read password file /nonexistent/pw: "),
            "{e}"
        );
    }

    #[test]
    fn file_is_read_fresh() {
        let (_temp, src) = file("rotating", b"one\n");
        assert_eq!(get(&src).ok().as_deref(), Some("one"));
        if let SecretSource::File(p) = &src {
            std::fs::write(p, "two\n").unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(get(&src).ok().as_deref(), Some("two"));
    }

    #[test]
    fn command_success_takes_first_line() {
        assert_eq!(
            get(&sh(r#"printf "s3cret\nignored""#)).ok().as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            get(&sh(r#"printf 'crlf\r\n'"#)).ok().as_deref(),
            Some("crlf")
        );
        // Far more output than a pipe buffer holds, on both pipes, must not deadlock.
        let flood = "printf 'pw\\n'; head -c 300000 /dev/zero; head -c 300000 /dev/zero >&2";
        assert_eq!(get(&sh(flood)).ok().as_deref(), Some("pw"));
        let e = get(&sh("true")).unwrap_err().to_string();
        assert_eq!(
            e,
            "output of password command '/bin/sh': first line is empty"
        );
    }

    #[test]
    fn command_failure_keeps_stderr_out_of_the_error() {
        let e = get(&sh("echo topsecret; echo 'no such entry' >&2; exit 3")).unwrap_err();
        assert!(matches!(&e, Error::Failed { status, .. } if status.code() == Some(3)));
        assert_eq!(
            e.to_string(),
            "password command '/bin/sh' failed (exit status: 3)"
        );
        let absent = SecretSource::Command(vec!["/nonexistent/pass".into(), "hunter2".into()]);
        let e = get(&absent).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot run password command '/nonexistent/pass': "),
            "{e}"
        );
        assert!(!e.contains("hunter2"));
        let e = get(&SecretSource::Command(Vec::new()))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "password command: is empty");
    }

    #[test]
    fn stderr_summary_is_one_short_redacted_line() {
        let said = stderr_summary(
            b"\n  \r\nno entry for s3cret\x1b[2J here\nmore\n",
            b"s3cret\n",
        );
        assert_eq!(said.as_deref(), Some("no entry for <redacted>?[2J here"));
        let long = vec![b'x'; 10_000];
        let said = stderr_summary(&long, b"").unwrap_or_default();
        assert_eq!(said, format!("{}…", "x".repeat(STDERR_SHOWN)));
        assert_eq!(stderr_summary(b" \n\t\n", b"pw"), None);
        // Every line of stdout counts as secret, not only the first.
        let said = stderr_summary(b"tok1 and tok2 rejected", b"tok1\r\ntok2\n");
        assert_eq!(said.as_deref(), Some("<redacted> and <redacted> rejected"));
    }

    /// Processes whose command line holds `marker`, once SIGKILL had a
    /// moment to land (kill(2) returns before the target is gone).
    fn processes_with(marker: &str) -> Vec<String> {
        let give_up = Instant::now() + Duration::from_secs(2);
        loop {
            let found = processes_now(marker);
            if found.is_empty() || Instant::now() > give_up {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn processes_now(marker: &str) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) {
                found.push(format!(
                    "{}: {cmdline}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
        found
    }

    #[test]
    fn command_timeout_kills_the_whole_group() {
        let start = Instant::now();
        let e = resolve(&sh("sleep 5"), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(
            e.to_string(),
            "password command '/bin/sh' did not finish within 200ms; killed"
        );
        // A helper that starts children, one in the background holding the
        // pipes and one in the foreground, and hangs: all of them go.
        let marker = format!("999.{}7", std::process::id());
        let script = format!("echo waiting >&2; sleep {marker} & sleep {marker}; echo pw");
        let start = Instant::now();
        let e = resolve(&sh(&script), Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(processes_with(&marker), Vec::<String>::new());
        // Exited, but a background child keeps stdout open past the deadline.
        let marker = format!("998.{}7", std::process::id());
        let e = resolve(
            &sh(&format!("sleep {marker} & echo pw")),
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert_eq!(processes_with(&marker), Vec::<String>::new());
        // Succeeded and closed its pipes, but left a child behind: swept too.
        let marker = format!("997.{}7", std::process::id());
        let script = format!("sleep {marker} >/dev/null 2>&1 </dev/null & echo pw");
        assert_eq!(get(&sh(&script)).ok().as_deref(), Some("pw"));
        assert_eq!(processes_with(&marker), Vec::<String>::new());
    }

    #[test]
    fn command_gets_a_minimal_environment() {
        let env = get(&sh("env | sort | tr '\\n' ' '")).unwrap_or_default();
        for var in env.split_whitespace() {
            let name = var.split('=').next().unwrap_or_default();
            // sh itself sets PWD (and dash OLDPWD-free); nothing else may come from us.
            assert!(
                name == "PATH" || name == "PWD" || ENV_KEPT.contains(&name),
                "unexpected {var} in {env}"
            );
        }
        assert!(env.contains(&format!("PATH={COMMAND_PATH} ")), "{env}");
    }

    #[test]
    fn split_command_cases() {
        let ok = |s: &str, want: &[&str]| {
            assert_eq!(
                split_command(s),
                Ok(want.iter().map(|w| w.to_string()).collect()),
                "{s}"
            )
        };
        ok("pass show mail", &["pass", "show", "mail"]);
        ok("  a \t b  ", &["a", "b"]);
        ok(r#""a b" c"#, &["a b", "c"]);
        ok(r#"'a "b' c"#, &["a \"b", "c"]);
        ok(r"'a\b'", &[r"a\b"]);
        ok(r"a\ b", &["a b"]);
        ok(r#""a\"b\\""#, &[r#"a"b\"#]);
        ok(r#"a"b c"d"#, &["ab cd"]);
        ok(r#"x "" ''"#, &["x", "", ""]);
        ok("gpg -d ~/.pw.gpg", &["gpg", "-d", "~/.pw.gpg"]);
        for bad in [r#""a"#, "'a", r"a\", r#""a\"#, "", "   ", r#""" x"#] {
            assert!(split_command(bad).is_err(), "{bad}");
        }
    }
}
