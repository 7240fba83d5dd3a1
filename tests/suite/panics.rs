//! Internal errors and live reconfiguration, through the real binary: a
//! panic in the MIME decoder delivers the message raw and the poll goes on;
//! a panic anywhere else ends the process with EX_SOFTWARE (70) and one log
//! line; SIGHUP applies a changed `log_level` (popspool(8), SIGNALS and
//! EXIT STATUS). The panics come from test-only fault hooks that exist only
//! in debug builds, which is what the integration tests run.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::fake::{FakeServer, Faults};
use crate::common::popspool::{bin, entries, signal, sorted, stderr, tmp_count, Setup};

fn messages(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            String::from_utf8(crate::common::mail::simple(
                i,
                &format!("m{i}"),
                &format!("body {i}\n"),
            ))
            .unwrap()
            .replace('\n', "\r\n")
            .into_bytes()
        })
        .collect()
}

/// `popspool --once` with `var` set in its environment.
fn once_with(s: &Setup, var: &str) -> std::process::Output {
    let out = Command::new(bin())
        .arg("-c")
        .arg(&s.config)
        .arg("--once")
        .env(var, "1")
        .output()
        .unwrap();
    eprintln!(
        "popspool --once ({var}) -> {:?}\n--- stderr\n{}",
        out.status.code(),
        stderr(&out)
    );
    out
}

#[test]
fn a_panic_in_the_decoder_delivers_every_message_raw() {
    let msgs = messages(3);
    let srv = FakeServer::start(msgs.clone(), Faults::default());
    let s = Setup::new("decoder-panic");
    s.write_config(&srv.account("d", ""));
    let out = once_with(&s, "POPSPOOL_TEST_PANIC_IN_DECODER");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(srv.remaining(), 0, "the poll went on to the end");
    let spool = s.account_spool("d");
    let got = entries(&spool, "new");
    assert_eq!(got.len(), 3);
    assert!(
        sorted(got.iter().map(|e| e.message.clone()).collect()) == sorted(msgs),
        "message.eml byte-exact"
    );
    for e in &got {
        assert_eq!(e.meta["kind"], "undecodable", "{}", e.meta);
        assert_eq!(
            e.meta["problems"],
            serde_json::json!(["internal error in the MIME decoder; the message is delivered raw"]),
            "{}",
            e.meta
        );
        assert!(e.meta["body"].is_null(), "{}", e.meta);
        // Nothing parsed after the panic, not even the headers.
        assert!(e.meta["headers"]["subject"].is_null(), "{}", e.meta);
    }
    assert_eq!(tmp_count(&spool), 0);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("panic")).collect();
    assert_eq!(lines.len(), 3, "one line per message: {err}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("MIME decoder failed on a message")
                && l.contains("POPSPOOL_TEST_PANIC_IN_DECODER")),
        "{err}"
    );
    assert!(!err.contains("panicked at"), "{err}");
    assert!(!err.contains("RUST_BACKTRACE"), "{err}");
}

#[test]
fn a_panic_elsewhere_exits_70_with_one_line() {
    let srv = FakeServer::start(messages(1), Faults::default());
    let s = Setup::new("poll-panic");
    s.write_config(&srv.account("p", ""));
    let out = once_with(&s, "POPSPOOL_TEST_PANIC_IN_POLL");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(70), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("panic")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("internal error") && lines[0].contains("POPSPOOL_TEST_PANIC_IN_POLL"),
        "{err}"
    );
    assert!(!err.contains("panicked at"), "{err}");
    assert!(!err.contains("RUST_BACKTRACE"), "{err}");
    assert_eq!(srv.connections(), 0, "it panicked before connecting");
    assert_eq!(srv.remaining(), 1);
}

/// The service, killed should the test fail before it is stopped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the service logs when started with `log_level = warn` in the file
/// (and `args`), after the file is changed to `log_level = debug`, SIGHUP,
/// and SIGUSR1 for a second poll. `until` is awaited in the log (when
/// given) before SIGTERM.
fn log_after_reload(tag: &str, args: &[&str], until: Option<&str>) -> String {
    let srv = FakeServer::start(messages(1), Faults::default());
    let s = Setup::new(tag);
    let account = srv.account("r", "poll_interval = 1h");
    let set_level = |level: &str| {
        s.write_config(&account);
        let text = fs::read_to_string(&s.config).unwrap();
        let text = text.replacen("[global]\n", &format!("[global]\nlog_level = {level}\n"), 1);
        fs::write(&s.config, text).unwrap();
    };
    set_level("warn");
    let log = s.dir.join("stderr");
    let mut child = Reaped(
        Command::new(bin())
            .arg("-c")
            .arg(&s.config)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap(),
    );
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let pid = child.0.id();
    let signal = |sig: &str| signal(pid, sig);
    // The first poll: the signal handlers are installed by then.
    wait_for("the first poll", &|| srv.remaining() == 0);
    set_level("debug");
    signal("HUP");
    std::thread::sleep(Duration::from_millis(200));
    signal("USR1");
    wait_for("the second poll", &|| srv.connections() == 2);
    match until {
        Some(needle) => wait_for(needle, &|| {
            fs::read_to_string(&log).unwrap().contains(needle)
        }),
        None => std::thread::sleep(Duration::from_millis(500)),
    }
    signal("TERM");
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
    let text = fs::read_to_string(&log).unwrap();
    eprintln!("--- stderr\n{text}");
    text
}

#[test]
fn sighup_applies_a_changed_log_level() {
    let text = log_after_reload("hup-level", &[], Some("r: 0 message(s) on the server"));
    assert!(
        !text.contains("r: 1 message(s) on the server"),
        "no debug line before the reload: {text}"
    );
    assert!(text.contains("SIGHUP: configuration reloaded"), "{text}");
}

#[test]
fn sighup_keeps_the_command_line_log_level() {
    let text = log_after_reload("hup-cli-level", &["--log-level", "warn"], None);
    assert!(!text.contains("message(s) on the server"), "{text}");
    assert!(!text.contains("SIGHUP"), "{text}");
}
