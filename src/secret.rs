//! Secrets: turn a [`SecretSource`] into the password, fresh on each use.
//!
//! A password file is re-read and a password command re-run every time, so a
//! rotated secret takes effect at the next poll without a reload. Errors name
//! the file or the program (argv\[0\] only: later arguments may carry a
//! passphrase), never what the file held or the command printed on stdout.
//! A command's stderr is kept, because it says why the command failed.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::SecretSource;
use crate::text::one_line;

/// A secret string whose `Debug` never shows it (and which has no `Display`, so it cannot be printed by mistake).
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

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// No real password comes close; the cap bounds memory when a file or
/// command yields something unexpected (`/dev/zero`, a log file).
const MAX_SECRET_BYTES: usize = 64 * 1024;
/// Enough of a command's stderr to say why it failed, short enough for one log line.
const STDERR_KEPT: usize = 512;
/// How often to check whether the command has exited: little latency added
/// to a fast command, no busy loop for a slow one.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// Read size for the command's pipes.
const CHUNK: usize = 8192;
/// After killing a command that timed out, how long its last stderr bytes
/// get to reach our reader thread before we show what arrived.
const STDERR_GRACE: Duration = Duration::from_millis(50);

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
    /// The command (or something it left running with our pipes) outlived the timeout.
    Timeout {
        /// argv\[0\].
        program: String,
        /// The limit.
        timeout: Duration,
        /// The start of what it said on stderr before it was killed (a
        /// token helper waiting for an interactive login says so there).
        stderr: String,
    },
    /// The command exited unsuccessfully; `stderr` is the start of what it said there.
    Failed {
        /// argv\[0\].
        program: String,
        /// Its exit status.
        status: ExitStatus,
        /// The start of its stderr (never its stdout, which is the secret).
        stderr: String,
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
            Error::Timeout {
                program,
                timeout,
                stderr,
            } => {
                write!(
                    f,
                    "password command '{program}' did not finish within {timeout:?}; killed"
                )?;
                if !stderr.is_empty() {
                    write!(f, "; it said: {stderr}")?;
                }
                Ok(())
            }
            Error::Failed {
                program,
                status,
                stderr,
            } => {
                write!(f, "password command '{program}' failed ({status})")?;
                if !stderr.is_empty() {
                    write!(f, ": {stderr}")?;
                }
                Ok(())
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
            let mut bytes = Vec::new();
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

/// Run `argv` without a shell and take the first line it prints.
fn run(argv: &[String], timeout: Duration) -> Result<Password, Error> {
    let Some(program) = argv.first() else {
        return Err(Error::Unusable {
            origin: "password command".into(),
            reason: "is empty",
        });
    };
    let io_error = |source| Error::Command {
        program: program.clone(),
        source,
    };
    let timed_out = |stderr: String| Error::Timeout {
        program: program.clone(),
        timeout,
        stderr,
    };
    // No deadline only for a timeout too large to add, which no caller means.
    let deadline = Instant::now().checked_add(timeout);

    let mut child = Command::new(program)
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_error)?;
    // A thread per pipe: a command that fills one pipe while we wait on the
    // other, or on its exit, would otherwise never finish.
    let started = capture(child.stdout.take(), MAX_SECRET_BYTES + 1).and_then(|stdout| {
        let stderr = capture(child.stderr.take(), STDERR_KEPT + 1)?;
        Ok((stdout, stderr, wait_until(&mut child, deadline)?))
    });
    let (stdout, stderr, status) = match started {
        Ok(started) => started,
        Err(e) => {
            kill(&mut child);
            return Err(io_error(e));
        }
    };
    let Some(status) = status else {
        // Killed: its stderr pipe closes, unless something it started holds it.
        // Whatever it said so far: its stderr may stay open in a grandchild.
        thread::sleep(STDERR_GRACE);
        return Err(timed_out(one_line(&so_far(&stderr), STDERR_KEPT)));
    };

    if !status.success() {
        let said = collect(&stderr, deadline)
            .and_then(Result::ok)
            .unwrap_or_default();
        return Err(Error::Failed {
            program: program.clone(),
            status,
            stderr: one_line(&said, STDERR_KEPT),
        });
    }
    // The command has exited; if stdout is still open, something it started holds it.
    let out = collect(&stdout, deadline)
        .ok_or_else(|| timed_out(String::new()))?
        .map_err(io_error)?;
    first_line(&out, || format!("output of password command '{program}'"))
}

/// Poll until the child exits (`Some`) or the deadline passes (`None`, child killed).
fn wait_until(child: &mut Child, deadline: Option<Instant>) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            kill(child);
            return Ok(None);
        }
        thread::sleep(POLL_EVERY);
    }
}

fn kill(child: &mut Child) {
    // Either can fail only because the child is already gone, which is the goal.
    let _ = child.kill();
    let _ = child.wait();
}

/// A pipe being read on its own thread: `done` reports the end (or an
/// error); `kept` fills as bytes arrive, so a timeout can still show what
/// a command said so far.
struct Captured {
    done: Receiver<io::Result<()>>,
    kept: Arc<Mutex<Vec<u8>>>,
}

/// Read `pipe` to its end on a thread of its own, keeping the first `keep`
/// bytes and discarding the rest so the child never blocks on a full pipe.
fn capture<R: Read + Send + 'static>(pipe: Option<R>, keep: usize) -> io::Result<Captured> {
    let (tx, done) = mpsc::channel();
    let kept = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&kept);
    thread::Builder::new()
        .name("secret-pipe".into())
        .spawn(move || {
            let result = pipe.map_or(Ok(()), |p| drain(p, keep, &sink));
            // The receiver is gone only if resolve already gave up.
            let _ = tx.send(result);
        })?;
    Ok(Captured { done, kept })
}

fn drain(mut pipe: impl Read, keep: usize, kept: &Mutex<Vec<u8>>) -> io::Result<()> {
    let mut buf = [0u8; CHUNK];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // A poisoned lock means the reading side panicked: stop quietly.
        let Ok(mut kept) = kept.lock() else {
            return Ok(());
        };
        let room = keep.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

/// What a reader thread kept, once the pipe ended; `None` if it stayed open
/// past the deadline.
fn collect(c: &Captured, deadline: Option<Instant>) -> Option<io::Result<Vec<u8>>> {
    let ended = match deadline {
        Some(d) => c
            .done
            .recv_timeout(d.saturating_duration_since(Instant::now()))
            .ok()?,
        None => c.done.recv().ok()?,
    };
    Some(ended.map(|()| so_far(c)))
}

/// What the pipe delivered so far, taken out of the shared buffer.
fn so_far(c: &Captured) -> Vec<u8> {
    c.kept
        .lock()
        .map(|mut k| std::mem::take(&mut *k))
        .unwrap_or_default()
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
    String::from_utf8(line.to_vec())
        .map(Password::new)
        .map_err(|_| unusable("first line is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn command_failure_shows_stderr_not_stdout() {
        let e = get(&sh("echo topsecret; echo 'no such entry' >&2; exit 3")).unwrap_err();
        assert!(matches!(&e, Error::Failed { status, .. } if status.code() == Some(3)));
        let e = e.to_string();
        assert_eq!(
            e,
            "password command '/bin/sh' failed (exit status: 3): no such entry"
        );
        let e = get(&sh("head -c 100000 /dev/zero | tr '\\0' x >&2; exit 1"))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with(&format!("{}…", "x".repeat(STDERR_KEPT))), "{e}");
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
    fn command_timeout_kills() {
        let start = Instant::now();
        let e = resolve(&sh("sleep 5"), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(e.to_string().contains("did not finish within 200ms"), "{e}");
        // What it said before being killed is kept: a token helper waiting
        // for an interactive login says so on stderr.
        let e = resolve(
            &sh("echo 'open https://example.com/device and enter ABCD' >&2; sleep 5"),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .ends_with("killed; it said: open https://example.com/device and enter ABCD"),
            "{e}"
        );
        // Exited, but a background child keeps stdout open past the deadline.
        let start = Instant::now();
        let e = resolve(&sh("sleep 5 & echo pw"), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
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
