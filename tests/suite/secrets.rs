//! Secrets through the real binary: what a `password_command` gets (a
//! minimal environment) and leaves behind (no process, no thread, no stderr
//! in `status.json`), and logins that need `allow_plaintext` without TLS
//! (README "Secrets", "Logging in").

use std::fs;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::popspool::{bin, signal, stderr, Setup};

/// An account whose password comes from `helper` (run by /bin/sh with the
/// setup's directory as its argument), on a closed port: the poll fails
/// at the password or, past it, at once at the connection.
fn account(s: &Setup, helper: &str) -> String {
    let script = s.dir.join("helper.sh");
    fs::write(&script, helper).unwrap();
    format!(
        "[account lab]\nhost = 127.0.0.1\nport = 9\ntls = none\nallow_plaintext = yes\nuser = u\n\
         timeout = 1s\npoll_interval = 1h\npassword_command = /bin/sh {} {}\n",
        script.display(),
        s.dir.display()
    )
}

fn status(s: &Setup) -> Option<serde_json::Value> {
    serde_json::from_slice(&fs::read(s.state.join("lab.status.json")).ok()?).ok()
}

fn failures(s: &Setup) -> u64 {
    status(s).map_or(0, |v| v["consecutive_failures"].as_u64().unwrap_or(0))
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Live processes whose command line holds `marker` (SIGKILL lands a
/// moment after kill(2) returns, so absence is awaited briefly).
fn processes_with(marker: &str) -> Vec<String> {
    let t0 = Instant::now();
    loop {
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmd) = fs::read(entry.path().join("cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.contains(marker) {
                    found.push(cmd);
                }
            }
        }
        if found.is_empty() || t0.elapsed() > Duration::from_secs(2) {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn threads(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).unwrap().count()
}

/// The names of the variables in an `env` dump.
fn names(env: &str) -> Vec<&str> {
    env.lines().filter_map(|l| l.split('=').next()).collect()
}

#[test]
fn hung_password_command_leaves_nothing_behind() {
    let s = Setup::new("hung-helper");
    let marker = format!("999.{}3", std::process::id());
    // Records its environment, says something secret-looking on stderr,
    // starts a background child holding the pipes, and hangs.
    s.write_config(&account(
        &s,
        &format!(
            "env >\"$1/env.txt\"\necho 'need login: fake-secret-on-stderr' >&2\n\
             sleep {marker} &\nsleep {marker}\n"
        ),
    ));
    let notify = s.dir.join("notify.sock");
    let _socket = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    let mut child = Command::new(bin())
        .arg("-c")
        .arg(&s.config)
        .env("NOTIFY_SOCKET", &notify)
        .env("POPSPOOL_TEST_UNRELATED", "x")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_for("the first poll", || failures(&s) >= 1);
    assert_eq!(processes_with(&marker), Vec::<String>::new());
    let after_first = threads(pid);
    for n in 2..=3 {
        signal(pid, "USR1");
        wait_for("another poll", || failures(&s) >= n);
        assert_eq!(processes_with(&marker), Vec::<String>::new());
        assert_eq!(threads(pid), after_first, "threads after poll {n}");
    }
    assert_eq!(after_first, 1, "popspool is one thread between polls");
    signal(pid, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();

    let status = fs::read_to_string(s.state.join("lab.status.json")).unwrap();
    assert!(
        status.contains("password command '/bin/sh' did not finish within 1s; killed"),
        "{status}"
    );
    assert!(!status.contains("fake-secret"), "{status}");
    assert!(
        log.contains(
            "password command '/bin/sh' said on stderr: need login: fake-secret-on-stderr"
        ),
        "{log}"
    );
    let env = fs::read_to_string(s.dir.join("env.txt")).unwrap();
    for name in names(&env) {
        assert!(
            ["PATH", "PWD", "SHLVL", "_"].contains(&name)
                || popspool::secret::ENV_KEPT.contains(&name),
            "{name} in the helper's environment:\n{env}"
        );
    }
    assert!(!env.contains("NOTIFY_SOCKET"), "{env}");
    assert!(
        env.contains(&format!("PATH={}\n", popspool::secret::COMMAND_PATH)),
        "{env}"
    );
}

#[test]
fn failed_password_command_stderr_is_logged_redacted_not_stored() {
    let s = Setup::new("failed-helper");
    s.write_config(&account(
        &s,
        "echo s3cret-on-stdout\necho \"no entry; got s3cret-on-stdout\" >&2\nexit 3\n",
    ));
    let out = s.run(&["--once"]);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{log}");
    assert!(
        log.contains("said on stderr: no entry; got <redacted>"),
        "{log}"
    );
    assert!(!log.contains("s3cret"), "{log}");
    let status = status(&s).unwrap();
    assert_eq!(
        status["last_error"],
        "password: password command '/bin/sh' failed (exit status: 3)"
    );
}

/// Without TLS every login hands a listener the password or material to
/// crack offline: each needs `allow_plaintext = yes`, and `auto` without
/// it has nothing left to try.
#[test]
fn every_login_without_tls_needs_allow_plaintext() {
    for auth in [
        "auto",
        "user",
        "apop",
        "cram-md5",
        "ntlm",
        "scram-sha-1",
        "scram-sha-256",
        "xoauth2",
    ] {
        let s = Setup::new("plaintext");
        let acct = format!(
            "[account lab]\nhost = 127.0.0.1\nport = 9\ntls = none\nuser = u\npassword = p\nauth = {auth}\n"
        );
        s.write_config(&acct);
        let out = s.run(&["--check"]);
        let err = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert_eq!(out.status.code(), Some(78), "auth = {auth}: {err}");
        assert!(
            err.contains("allow_plaintext = yes"),
            "auth = {auth}: {err}"
        );
        s.write_config(&format!("{acct}allow_plaintext = yes\n"));
        let out = s.run(&["--check"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "auth = {auth} with allow_plaintext"
        );
    }
}
