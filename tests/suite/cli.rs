//! The command line contract (README, "Command line") and the service's
//! signals, using the real binary.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::dovecot::Dovecot;
use crate::common::fake::{FakeServer, Faults};
use crate::common::mail;
use crate::common::popspool::{bin, entries, signal, stderr, Setup};

#[test]
fn version_help_and_usage_errors() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("popspool "));
    let out = Command::new(bin()).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--probe"));
    let out = Command::new(bin()).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = Command::new(bin())
        .args(["--once", "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = Command::new(bin())
        .args(["--log-level", "loud"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn config_errors_have_their_exit_codes() {
    let s = Setup::new("cfgerr");
    let out = Command::new(bin())
        .args(["-c", "/nonexistent/popspool.ini", "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(66));
    s.write_config("[account a]\nhost = h\nuser = u\npassword = p\nbogus = 1\n");
    let out = s.run(&["--check"]);
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}:10:", s.config.display())) && err.contains("bogus"),
        "{err}"
    );
    // A password readable by other users is refused, and not shown.
    s.write_config("[account a]\nhost = h\nuser = u\npassword = hunter2\n");
    fs::set_permissions(&s.config, fs::Permissions::from_mode(0o644)).unwrap();
    let out = s.run(&["--check"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(!stderr(&out).contains("hunter2"));
}

#[test]
fn secret_files_readable_by_others_are_refused() {
    let s = Setup::new("secretfiles");
    let pw = s.dir.join("pw");
    fs::write(&pw, "hunter2\n").unwrap();
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o644)).unwrap();
    s.write_config(&format!(
        "[account a]\nhost = 127.0.0.1\nport = 9\nuser = u\npassword_file = {}\n",
        pw.display()
    ));
    for args in [&["--check"][..], &["--once"]] {
        let out = s.run(args);
        assert_eq!(out.status.code(), Some(78), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("key 'password_file'")
                && err.contains(&format!("{} holds a password", pw.display()))
                && err.contains("readable by other users (mode 0644)")
                && err.contains(&format!("chmod 600 {}", pw.display())),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
    let out = s.run(&["--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let key = s.dir.join("client.key");
    fs::write(&key, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o604)).unwrap();
    s.write_config(&format!(
        "[account a]\nhost = 127.0.0.1\nport = 9\nuser = u\nauth = external\n\
         tls_client_cert = {}\ntls_client_key = {}\n",
        s.dir.join("client.pem").display(),
        key.display()
    ));
    let out = s.run(&["--check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("key 'tls_client_key'")
            && err.contains(&format!("{} holds a private key", key.display()))
            && err.contains("(mode 0604)")
            && err.contains(&format!("chmod 600 {}", key.display())),
        "{err}"
    );
    assert!(!err.contains("c2VjcmV0"), "{err}");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let out = s.run(&["--check"]);
    assert!(
        !stderr(&out).contains("readable by other users"),
        "{}",
        stderr(&out)
    );
}

/// `-a` polls fewer accounts, but popspool.prom keeps them all (README,
/// "Troubleshooting"): the others come from their status records.
#[test]
fn metrics_keep_every_account_when_polling_one() {
    let crlf = |m: Vec<u8>| String::from_utf8(m).unwrap().replace('\n', "\r\n");
    let msg = |i, subject| crlf(mail::simple(i, subject, "x\n")).into_bytes();
    let one = FakeServer::start(vec![msg(1, "one")], Faults::default());
    let two = FakeServer::start(vec![msg(2, "two")], Faults::default());
    let s = Setup::new("promall");
    s.write_config(&format!(
        "{}\n{}",
        one.account("one", ""),
        two.account("two", "")
    ));
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let polls_of_two = two.connections();
    let out = s.run(&["--once", "-a", "one"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(two.connections(), polls_of_two, "-a one leaves two alone");
    let prom = fs::read_to_string(s.state.join("popspool.prom")).unwrap();
    for name in ["one", "two"] {
        let line = format!("popspool_messages_delivered_total{{account=\"{name}\"}} 1\n");
        assert!(prom.contains(&line), "{line} not in {prom}");
    }
}

#[test]
fn unusable_spool_directory_exits_73() {
    let s = Setup::new("spool73");
    fs::write(s.dir.join("file"), b"not a directory").unwrap();
    s.write_config(&format!(
        "[account a]\nhost = 127.0.0.1\nport = 9\nuser = u\npassword = p\nspool = {}/file/sub\n",
        s.dir.display()
    ));
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(73), "{}", stderr(&out));
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The service polls at start, on SIGUSR1, survives a broken SIGHUP reload,
/// and exits 0 promptly on SIGTERM, writing status and metrics.
#[test]
#[ignore = "needs root and Dovecot"]
fn service_signals() {
    let dc = Dovecot::start();
    dc.add_user("svc", "secret-svc");
    dc.deliver("svc", &mail::simple(1, "first", "x\n"));
    let s = Setup::new("svc");
    let acct = format!(
        "[account svc]\nhost = localhost\nport = {}\nca_file = {}\nuser = svc\npassword = secret-svc\npoll_interval = 1h\n",
        dc.pop3s_port,
        dc.ca_file().display()
    );
    s.write_config(&acct);
    let mut child = Command::new(bin())
        .arg("-c")
        .arg(&s.config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let spool = s.account_spool("svc");
    wait_for("first poll", Duration::from_secs(20), || {
        entries(&spool, "new").len() == 1
    });
    dc.deliver("svc", &mail::simple(2, "second", "x\n"));
    signal(pid, "USR1");
    wait_for("poll on SIGUSR1", Duration::from_secs(20), || {
        entries(&spool, "new").len() == 2
    });
    fs::write(&s.config, "[account svc\nbroken").unwrap();
    signal(pid, "HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running after a bad reload"
    );
    dc.deliver("svc", &mail::simple(3, "third", "x\n"));
    signal(pid, "USR1");
    wait_for("old config still polls", Duration::from_secs(20), || {
        entries(&spool, "new").len() == 3
    });
    let t0 = Instant::now();
    signal(pid, "TERM");
    let status = child.wait().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("keeping the previous configuration"), "{log}");
    assert!(
        log.contains(&format!("{}:1", s.config.display())),
        "reload error names file and line: {log}"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&fs::read(s.state.join("svc.status.json")).unwrap()).unwrap();
    assert_eq!(status["messages_delivered"], 3);
    assert_eq!(status["consecutive_failures"], 0);
    let prom = fs::read_to_string(s.state.join("popspool.prom")).unwrap();
    assert!(
        prom.contains("popspool_messages_delivered_total{account=\"svc\"} 3"),
        "{prom}"
    );
}
