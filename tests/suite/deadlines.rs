//! No server can hold a poll (popspool.ini(5), `timeout`), through the real
//! binary: a server that drips the TLS handshake, the greeting, the login
//! or a message it announced as huge, each just inside the inactivity timeout,
//! is abandoned within a few `timeout`s with nothing stored and no DELE;
//! the watchdog is fed during a long but healthy download and not while
//! nothing arrives; a second
//! SIGTERM exits at once with status 0 and loses nothing.
//!
//! The dripping servers are scripted here, one connection each. The drip
//! tests use `timeout = 2s` (each drip interval 1.5 s, inside it);
//! `DEADLINES_TIMEOUT=10 cargo test --test suite deadlines::drip -- --nocapture`
//! measures them with another `timeout` and prints the seconds each took.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::fake::{Drip, FakeServer, Faults};
use crate::common::popspool::{bin, entries, signal, sorted, stderr, tmp_count, Setup};

/// The `timeout` the drip tests use (seconds), and the pause between two
/// dripped bytes: a little inside it, so the inactivity timeout never fires.
fn drip_timing() -> (u64, Duration) {
    let t: u64 = std::env::var("DEADLINES_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    (t, Duration::from_millis(t * 1000 * 3 / 4))
}

/// Sends `bytes` one at a time, `every` apart, until done or the client is gone.
fn drip(w: &mut TcpStream, bytes: &[u8], every: Duration) {
    for b in bytes {
        if w.write_all(&[*b]).is_err() {
            return;
        }
        thread::sleep(every);
    }
}

/// Which part of the session the scripted server drips.
#[derive(Clone, Copy)]
enum Dripping {
    /// Drip the greeting itself.
    Greeting,
    /// Answer USER and PASS each just inside a reply's deadline, so that
    /// only the login phase's end stops them.
    Login,
    /// Log in, list one message as 100 MB, then drip its body.
    HugeRetr,
}

/// A one-connection POP3 server playing `script`; returns its port and the
/// command lines it received.
fn scripted(script: Dripping, every: Duration) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let rec = Arc::clone(&received);
    thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        let greeting = b"+OK scripted POP3 server ready, very slowly\r\n";
        if let Dripping::Greeting = script {
            drip(&mut w, greeting, every);
            return;
        }
        w.write_all(greeting).unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let cmd = line.trim_end().to_string();
            rec.lock().unwrap().push(cmd.clone());
            let verb = cmd.split(' ').next().unwrap_or("");
            if let (Dripping::Login, "USER" | "PASS") = (script, verb) {
                // 5 bytes half an interval apart: 2.5 x 0.75 x timeout.
                drip(&mut w, b"+OK\r\n", every / 2);
                continue;
            }
            let reply: &[u8] = match verb {
                "CAPA" => b"+OK\r\nUSER\r\nUIDL\r\n.\r\n",
                "USER" | "PASS" | "NOOP" => b"+OK\r\n",
                "STAT" => b"+OK 1 100000000\r\n",
                "LIST" => b"+OK\r\n1 100000000\r\n.\r\n",
                "UIDL" => b"+OK\r\n1 huge-one\r\n.\r\n",
                "RETR" => {
                    w.write_all(b"+OK 100000000 octets\r\n").unwrap();
                    drip(&mut w, b"Subject: a byte at a time\r\n\r\nbody\r\n", every);
                    return;
                }
                "QUIT" => b"+OK bye\r\n",
                _ => b"-ERR unknown\r\n",
            };
            if w.write_all(reply).is_err() {
                return;
            }
        }
    });
    (port, received)
}

/// Runs `popspool --once` for `account`; returns its output and how long it took.
fn once(s: &Setup, account: &str) -> (std::process::Output, Duration) {
    s.write_config(account);
    let t0 = Instant::now();
    let out = s.run(&["--once"]);
    (out, t0.elapsed())
}

/// [`once`] for an account on the plain-text scripted server at `port`.
fn once_plain(s: &Setup, port: u16) -> (std::process::Output, Duration) {
    let (t, _) = drip_timing();
    once(
        s,
        &format!(
            "[account d]\nhost = 127.0.0.1\nport = {port}\ntls = none\nallow_plaintext = yes\n\
             auth = user\nuser = u\npassword = pw\ntimeout = {t}s\n"
        ),
    )
}

/// A dripping server was abandoned: exit 75, within `bound` timeouts, the
/// log naming the server and saying `phase`.
fn assert_abandoned(
    what: &str,
    out: &std::process::Output,
    took: Duration,
    bound: u64,
    phase: &str,
    port: u16,
) {
    let (t, _) = drip_timing();
    eprintln!(
        "MEASURED {what}: abandoned after {:.1}s with timeout = {t}s",
        took.as_secs_f64()
    );
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(
        took < Duration::from_secs(bound * t + 3),
        "{what}: {took:?} is over {bound} x timeout"
    );
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains(phase), "{err}");
    assert!(err.contains("temporary, will retry"), "{err}");
}

#[test]
fn drip_tls_handshake_is_abandoned_at_its_deadline() {
    let (t, every) = drip_timing();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut hello = [0u8; 4096];
        let _ = s.read(&mut hello);
        // A handshake record header announcing 16 KiB, then its body a
        // byte at a time: OpenSSL waits for the whole record.
        drip(&mut s, &[0x16, 0x03, 0x03, 0x40, 0x00], Duration::ZERO);
        drip(&mut s, &[0x02; 16384], every);
    });
    let s = Setup::new("drip-tls");
    let (out, took) = once(
        &s,
        &format!(
            "[account d]\nhost = 127.0.0.1\nport = {port}\ntls = implicit\nuser = u\n\
             password = pw\ntimeout = {t}s\n"
        ),
    );
    // Connecting and the handshake get 2 x timeout, enforced to the read.
    assert_abandoned("TLS handshake", &out, took, 3, "TLS handshake with", port);
    assert!(took >= Duration::from_secs(2 * t), "{took:?}");
    assert!(
        stderr(&out).contains("not finished within"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn drip_greeting_is_abandoned_at_its_deadline() {
    let (_, every) = drip_timing();
    let (port, received) = scripted(Dripping::Greeting, every);
    let s = Setup::new("drip-greeting");
    let (out, took) = once_plain(&s, port);
    // A reply's deadline is 2 x timeout, noticed at the next byte.
    assert_abandoned(
        "greeting",
        &out,
        took,
        3,
        "the greeting was not complete",
        port,
    );
    assert!(received.lock().unwrap().is_empty(), "nothing was sent");
}

#[test]
fn drip_login_is_abandoned_at_the_end_of_its_phase() {
    let (_, every) = drip_timing();
    let (port, received) = scripted(Dripping::Login, every);
    let s = Setup::new("drip-login");
    let (out, took) = once_plain(&s, port);
    // The greeting and login get 3 x timeout, noticed at the next byte.
    assert_abandoned(
        "login",
        &out,
        took,
        4,
        "greeting and login not finished within",
        port,
    );
    assert!(entries(&s.account_spool("d"), "new").is_empty());
    let got = received.lock().unwrap().clone();
    assert_eq!(
        got,
        ["CAPA", "USER u", "PASS pw"],
        "nothing after the login"
    );
}

#[test]
fn drip_of_a_huge_message_is_abandoned_whatever_size_it_announced() {
    let (_, every) = drip_timing();
    let (port, received) = scripted(Dripping::HugeRetr, every);
    let s = Setup::new("drip-retr");
    let (out, took) = once_plain(&s, port);
    // The status line at once, then one window of `timeout` and one read.
    assert_abandoned(
        "RETR body",
        &out,
        took,
        3,
        "below the minimum of 1024 bytes/s",
        port,
    );
    let spool = s.account_spool("d");
    assert!(entries(&spool, "new").is_empty());
    assert_eq!(tmp_count(&spool), 0, "nothing left in tmp/");
    let got = received.lock().unwrap().clone();
    assert!(got.iter().any(|c| c == "RETR 1"), "{got:?}");
    assert!(
        !got.iter().any(|c| c.starts_with("DELE") || c == "QUIT"),
        "{got:?}"
    );
}

fn crlf_messages(n: usize, body_bytes: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut m = String::from_utf8(crate::common::mail::simple(i, &format!("m{i}"), ""))
                .unwrap()
                .replace('\n', "\r\n")
                .into_bytes();
            while m.len() < body_bytes {
                m.extend_from_slice(b"0123456789abcdefghijklmnopqrstuvwxyz0123456789\r\n");
            }
            m
        })
        .collect()
}

/// The service for `s` under a fake systemd asking for a 1 s watchdog, run
/// until its first poll's status line (`status` starts it); then SIGTERM.
/// Returns the times of the pings, the exit status and what it logged.
fn first_poll_pings(s: &Setup, status: &str) -> (Vec<Instant>, Option<i32>, String) {
    let path = s.dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(bin())
        .arg("-c")
        .arg(&s.config)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pings = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.recv(&mut buf).expect("notifications in time");
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        if m == "WATCHDOG=1" {
            pings.push(Instant::now());
        } else if m.starts_with(status) {
            break;
        }
    }
    signal(child.id(), "TERM");
    let code = child.wait().unwrap().code();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    eprintln!("{err}");
    (pings, code, err)
}

/// The longest time between two pings.
fn longest_gap(pings: &[Instant]) -> Duration {
    pings
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or_default()
}

/// A service with a 1 s watchdog: during a download of about 4 s that
/// keeps making progress, it pings about every half second, and it
/// warns that `timeout` allows longer silences than `WatchdogSec=`.
#[test]
fn watchdog_is_fed_while_a_long_download_progresses() {
    // 400 KiB at 8 KiB per 80 ms: about 4 s, 100 KiB/s, far above the minimum rate.
    let msgs = crlf_messages(1, 400 << 10);
    let srv = FakeServer::start(
        msgs.clone(),
        Faults {
            drip: Some(Drip {
                delay: Duration::from_millis(80),
                chunk: 8 << 10,
                connections_before: usize::MAX,
            }),
            ..Faults::default()
        },
    );
    let s = Setup::new("watchdog-poll");
    s.write_config(&srv.account("w", "timeout = 2s\npoll_interval = 1h"));
    let (pings, code, err) = first_poll_pings(&s, "STATUS=1 account(s), last poll");
    assert_eq!(code, Some(0));
    assert_eq!(srv.remaining(), 0, "the download finished: {err}");
    let got = entries(&s.account_spool("w"), "new");
    assert_eq!(
        sorted(got.into_iter().map(|e| e.message).collect()),
        msgs,
        "delivered once"
    );
    // From the ping before the poll to the one after it.
    let span = pings.last().unwrap().duration_since(pings[0]);
    let gap = longest_gap(&pings);
    assert!(span > Duration::from_secs(3), "the poll took {span:?}");
    // At most every 0.5 s by design; the slack is for a loaded machine.
    // Without pings during the poll, the gap would be the whole poll.
    assert!(
        gap < Duration::from_millis(1500) && pings.len() >= 6,
        "{} pings over {span:?}, longest gap {gap:?}",
        pings.len()
    );
    assert!(err.contains("raise WatchdogSec or lower timeout"), "{err}");
}

/// The other side of the keep-alive: while nothing arrives (a server that
/// accepted and says nothing, for `timeout`), a poll does not ping, which
/// is how systemd would see a poll stuck where no deadline reaches.
#[test]
fn watchdog_is_not_fed_while_nothing_arrives() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        thread::sleep(Duration::from_secs(5));
        drop(s);
    });
    let s = Setup::new("watchdog-silent");
    s.write_config(&format!(
        "[account q]\nhost = 127.0.0.1\nport = {port}\ntls = none\nallow_plaintext = yes\n\
         auth = user\nuser = u\npassword = pw\ntimeout = 3s\npoll_interval = 1h\n"
    ));
    let (pings, _, _) = first_poll_pings(&s, "STATUS=1 account(s) (1 failing), last poll");
    server.join().unwrap();
    let gap = longest_gap(&pings);
    // The greeting's read waits out the 3 s inactivity timeout unpinged.
    assert!(
        gap > Duration::from_millis(2500),
        "{} pings, longest gap {gap:?}",
        pings.len()
    );
}

/// The first SIGTERM waits for a silent server (up to `timeout`); a second
/// one ends the process at once, with status 0, and the next poll delivers
/// every message exactly once.
#[test]
fn a_second_sigterm_exits_at_once_with_status_0_and_loses_nothing() {
    let msgs = crlf_messages(3, 2000);
    // Connection 0 sends 100 bytes of each RETR reply, then nothing for 4 s.
    let srv = FakeServer::start(
        msgs.clone(),
        Faults {
            drip: Some(Drip {
                delay: Duration::from_secs(4),
                chunk: 100,
                connections_before: 1,
            }),
            ..Faults::default()
        },
    );
    let s = Setup::new("sigterm2");
    s.write_config(&srv.account("t", "timeout = 30s"));
    let mut child = s.spawn_once();
    let t0 = Instant::now();
    while !srv.received().iter().any(|c| c == "RETR 1") {
        assert!(t0.elapsed() < Duration::from_secs(10), "no RETR");
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(200));
    let pid = child.id().to_string();
    let term = || Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(term().success());
    thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first SIGTERM waits for the message in flight"
    );
    assert!(term().success());
    let t1 = Instant::now();
    let status = child.wait().unwrap();
    assert!(t1.elapsed() < Duration::from_secs(1), "{:?}", t1.elapsed());
    assert_eq!(status.code(), Some(0));
    assert_eq!(srv.remaining(), 3, "nothing deleted without QUIT");
    // The next poll (a healthy connection) delivers each message once.
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(srv.remaining(), 0);
    let spool = s.account_spool("t");
    let got = entries(&spool, "new");
    assert_eq!(
        sorted(got.into_iter().map(|e| e.message).collect()),
        sorted(msgs)
    );
    assert_eq!(tmp_count(&spool), 0);
}
