//! What the service does for systemd, with the real binary: sd_notify
//! messages on NOTIFY_SOCKET (readiness, status, watchdog, stopping), and
//! `${CREDENTIALS_DIRECTORY}` in `password_file` for `LoadCredential=`,
//! and log priorities on the journal stream named by `JOURNAL_STREAM`.
//! The variables are set on the child process only.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::fake::{FakeServer, Faults};
use crate::common::popspool::{bin, signal, stderr, write_private, Setup};

/// An account whose server port is closed: every poll fails at once.
const CLOSED_PORT_ACCOUNT: &str =
    "[account lab]\nhost = 127.0.0.1\nport = 9\nuser = u\npassword = p\npoll_interval = 1h\n";

/// A NOTIFY_SOCKET for the child in the setup's directory, and its path.
fn notify_socket(s: &Setup) -> (UnixDatagram, PathBuf) {
    let path = s.dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (socket, path)
}

fn recv(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification in time");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[test]
fn service_notifies_readiness_status_watchdog_and_stopping() {
    let s = Setup::new("notify");
    s.write_config(CLOSED_PORT_ACCOUNT);
    let (socket, path) = notify_socket(&s);
    let mut child = Command::new(bin())
        .arg("-c")
        .arg(&s.config)
        .env("NOTIFY_SOCKET", &path)
        // 400 ms: the idle service must ping at least every 200 ms.
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    assert_eq!(recv(&socket), "READY=1");
    assert_eq!(recv(&socket), "STATUS=1 account(s), no poll yet");
    // The first poll, bracketed by pings, then its status line.
    let mut status = String::new();
    while status.is_empty() {
        match recv(&socket) {
            m if m == "WATCHDOG=1" => {}
            m if m.starts_with("STATUS=") => status = m,
            m => panic!("unexpected {m:?}"),
        }
    }
    assert!(
        status.starts_with("STATUS=1 account(s) (1 failing), last poll ")
            && status.contains(" UTC: lab failed: "),
        "{status}"
    );
    // Idle until the next poll in an hour: the watchdog keeps being fed.
    let t0 = Instant::now();
    let mut pings = 0;
    while t0.elapsed() < Duration::from_millis(1500) {
        assert_eq!(recv(&socket), "WATCHDOG=1");
        pings += 1;
    }
    assert!(pings >= 5, "{pings} pings in 1.5 s");

    signal(child.id(), "TERM");
    let mut last = String::new();
    while last != "STOPPING=1" {
        last = recv(&socket);
        assert!(last == "WATCHDOG=1" || last == "STOPPING=1", "{last}");
    }
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn no_watchdog_pings_when_meant_for_another_process() {
    let s = Setup::new("notify-pid");
    s.write_config(CLOSED_PORT_ACCOUNT);
    let (socket, path) = notify_socket(&s);
    let mut child = Command::new(bin())
        .arg("-c")
        .arg(&s.config)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        // PID 1 is never the child: the variables were meant for someone else.
        .env("WATCHDOG_PID", "1")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(recv(&socket), "READY=1");
    assert_eq!(recv(&socket), "STATUS=1 account(s), no poll yet");
    assert!(recv(&socket).starts_with("STATUS=1 account(s) (1 failing)"));
    socket
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let mut buf = [0u8; 64];
    let quiet = socket.recv(&mut buf);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        quiet.is_err(),
        "unexpected {:?}",
        quiet.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    );
}

#[test]
fn password_file_in_the_credentials_directory() {
    let s = Setup::new("creds");
    s.write_config(
        "[account lab]\nhost = 127.0.0.1\nport = 9\nuser = u\n\
         password_file = ${CREDENTIALS_DIRECTORY}/lab.password\n",
    );
    let creds = s.dir.join("credentials");
    fs::create_dir(&creds).unwrap();
    write_private(&creds.join("lab.password"), "credential-secret\n");

    let out = Command::new(bin())
        .arg("-c")
        .arg(&s.config)
        .arg("--check")
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", stderr(&out));
    assert!(stdout.contains("secret   ok"), "{stdout}");
    assert!(
        stdout.contains(&creds.join("lab.password").display().to_string()),
        "{stdout}"
    );
    assert!(!stdout.contains("credential-secret"));

    let out = Command::new(bin())
        .arg("-c")
        .arg(&s.config)
        .arg("--check")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("password_file") && err.contains("CREDENTIALS_DIRECTORY"),
        "{err}"
    );
}

/// `popspool --once` over three accounts (one delivers, one finds its port
/// closed, one has its password refused) with stderr in a file and
/// `JOURNAL_STREAM` set to `journal_stream(file)`; the log it wrote.
fn once_with_journal_stream(tag: &str, journal_stream: impl Fn(&fs::Metadata) -> String) -> String {
    let fake = FakeServer::start(
        vec![b"Subject: hi\r\n\r\nbody\r\n".to_vec()],
        Faults::default(),
    );
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Setup::new(tag);
    s.write_config(&format!(
        "{}{}{}",
        fake.account("good", ""),
        fake.account("closed", "").replace(
            &format!("port = {}", fake.port),
            &format!("port = {closed}")
        ),
        fake.account("refused", "")
            .replace("password = pw", "password = wrong"),
    ));
    let log = s.dir.join("stderr");
    let file = fs::File::create(&log).unwrap();
    let stream = journal_stream(&file.metadata().unwrap());
    let out = Command::new(bin())
        .arg("-c")
        .arg(&s.config)
        .args(["--once", "--log-level", "debug"])
        .env("JOURNAL_STREAM", stream)
        .stderr(file)
        .output()
        .unwrap();
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(out.status.code(), Some(75), "{text}");
    text
}

/// The line that mentions `what`.
fn line_with<'a>(log: &'a str, what: &str) -> &'a str {
    log.lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no line with {what:?} in:\n{log}"))
}

#[test]
fn journal_stream_lines_carry_their_priority() {
    let log = once_with_journal_stream("journal", |m| format!("{}:{}", m.dev(), m.ino()));
    assert!(line_with(&log, "[INFO] good:").starts_with("<6>"), "{log}");
    assert!(
        line_with(&log, "[WARN] closed:").starts_with("<4>"),
        "{log}"
    );
    assert!(
        line_with(&log, "[ERROR] refused:").starts_with("<3>"),
        "{log}"
    );
    assert!(line_with(&log, "[DEBUG]").starts_with("<7>"), "{log}");
    for line in log.lines() {
        let prefixed = ["<3>", "<4>", "<6>", "<7>"]
            .iter()
            .any(|p| line.starts_with(p));
        assert!(prefixed, "{line:?} in:\n{log}");
    }
}

#[test]
fn no_priorities_when_the_journal_stream_is_another() {
    let log = once_with_journal_stream("notjournal", |m| format!("{}:{}", m.dev(), m.ino() + 1));
    assert!(line_with(&log, "[INFO] good:").starts_with("20"), "{log}");
    assert!(line_with(&log, "[WARN] closed:").starts_with("20"), "{log}");
    assert!(
        line_with(&log, "[ERROR] refused:").starts_with("20"),
        "{log}"
    );
    assert!(!log.lines().any(|l| l.starts_with('<')), "{log}");
}
