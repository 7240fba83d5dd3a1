//! The command line contract (README, "Command line") and the service's
//! signals, using the real binary.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::dovecot::Dovecot;
use crate::common::mail;
use crate::common::popspool::{bin, entries, stderr, Setup};

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

fn kill(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
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
    kill(pid, "USR1");
    wait_for("poll on SIGUSR1", Duration::from_secs(20), || {
        entries(&spool, "new").len() == 2
    });
    fs::write(&s.config, "[account svc\nbroken").unwrap();
    kill(pid, "HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running after a bad reload"
    );
    dc.deliver("svc", &mail::simple(3, "third", "x\n"));
    kill(pid, "USR1");
    wait_for("old config still polls", Duration::from_secs(20), || {
        entries(&spool, "new").len() == 3
    });
    let t0 = Instant::now();
    kill(pid, "TERM");
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
