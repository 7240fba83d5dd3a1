//! Logins against a real, private Dovecot (README, "Logging in"): every
//! mechanism it serves over implicit TLS and STLS, and every refusal, with a
//! recording relay proving that no password left the machine where none
//! should.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::dovecot::{Dovecot, HOST, INSECURE_HOST};
use crate::common::mail;
use crate::common::popspool::{entries, stderr, write_private, Setup};
use crate::common::relay::{b64_decode, b64_encode, Relay};

/// `password = secret-<user>`, TLS as `mode` says, CA of this Dovecot.
fn account(dc: &Dovecot, mode: &str, user: &str, extra: &str) -> String {
    let port = match mode {
        "implicit" => dc.pop3s_port,
        _ => dc.pop3_port,
    };
    format!(
        "[account {user}]\nhost = localhost\nport = {port}\ntls = {mode}\nca_file = {}\n\
         user = {user}\npassword = secret-{user}\ntimeout = 10s\n{extra}\n",
        dc.ca_file().display()
    )
}

/// An account reaching Dovecot's plain port through `relay`, without TLS.
fn relayed(relay: &Relay, user: &str, password: &str, extra: &str) -> String {
    format!(
        "[account {user}]\nhost = 127.0.0.1\nport = {}\ntls = none\nuser = {user}\n\
         password = {password}\ntimeout = 10s\n{extra}\n",
        relay.port
    )
}

fn plain_port(dc: &Dovecot) -> SocketAddr {
    SocketAddr::from((HOST, dc.pop3_port))
}

/// Dovecot's name for the method in its "Login:" log line.
fn dovecot_method(auth: &str) -> &'static str {
    match auth {
        "user" | "plain" => "PLAIN",
        "apop" => "APOP",
        "login" => "LOGIN",
        "cram-md5" => "CRAM-MD5",
        "scram-sha-1" => "SCRAM-SHA-1",
        "scram-sha-256" | "auto" => "SCRAM-SHA-256",
        "external" => "EXTERNAL",
        other => panic!("{other}"),
    }
}

#[test]
#[ignore = "needs root and Dovecot"]
fn every_mechanism_dovecot_serves_over_implicit_tls_and_stls() {
    let dc = Dovecot::start();
    dc.add_user("certuser", "secret-certuser");
    let mechanisms = [
        "user",
        "apop",
        "plain",
        "login",
        "cram-md5",
        "scram-sha-1",
        "scram-sha-256",
        "auto",
        "external",
    ];
    let (cert, key) = dc.client_cert();
    for mode in ["implicit", "starttls"] {
        for auth in mechanisms {
            let user = if auth == "external" {
                "certuser".to_string()
            } else {
                let u = format!("{}-{mode}", auth.replace('-', ""));
                dc.add_user(&u, &format!("secret-{u}"));
                u
            };
            let msg = mail::simple(1, &format!("{auth} over {mode}"), "x\n");
            dc.deliver(&user, &msg);
            let s = Setup::new("mech");
            let extra = match auth {
                "external" => format!(
                    "auth = external\ntls_client_cert = {}\ntls_client_key = {}",
                    cert.display(),
                    key.display()
                ),
                _ => format!("auth = {auth}"),
            };
            let mut cfg = account(&dc, mode, &user, &extra);
            if auth == "external" {
                // The certificate is the credential: no password at all.
                cfg = cfg.replace("password = secret-certuser\n", "");
            }
            s.write_config(&cfg);
            let out = s.run(&["--once", "--log-level", "trace"]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(0), "{auth} over {mode}: {err}");
            assert!(
                !err.contains(&format!("secret-{user}")),
                "{auth}: password in the log"
            );
            let got = entries(&s.account_spool(&user), "new");
            assert_eq!(got.len(), 1, "{auth} over {mode}");
            assert_eq!(dc.count(&user), 0);
            dc.wait_log(&format!(
                "Login: user=<{user}>, method={}",
                dovecot_method(auth)
            ));
            if mode == "starttls" {
                assert!(err.contains("C: STLS"), "{auth}: {err}");
            }
        }
    }
}

#[test]
#[ignore = "needs root and Dovecot"]
fn auto_without_tls_takes_scram_and_the_password_never_crosses() {
    let dc = Dovecot::start();
    dc.add_user("nossl", "secret-nossl");
    dc.deliver("nossl", &mail::simple(1, "over plain TCP", "x\n"));
    let relay = Relay::start(plain_port(&dc));
    let s = Setup::new("nossl");
    s.write_config(&relayed(
        &relay,
        "nossl",
        "secret-nossl",
        "allow_plaintext = yes",
    ));
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(entries(&s.account_spool("nossl"), "new").len(), 1);
    assert!(
        relay.client_text().contains("AUTH SCRAM-SHA-256 "),
        "{}",
        relay.client_text()
    );
    relay.assert_never_sent("secret-nossl");
}

/// Each refusal: nothing deleted, nothing spooled, and the relay proves the
/// password (in any encoding a mechanism would use) never crossed.
#[test]
#[ignore = "needs root and Dovecot"]
fn refusals_without_tls_send_no_password() {
    // A server that offers only mechanisms sending the password itself.
    let cleartext_only = Dovecot::start_with_mechanisms("plain login");
    cleartext_only.add_user("keep", "secret-keep");
    cleartext_only.deliver("keep", &mail::simple(1, "stays", "x\n"));
    let full = Dovecot::start();
    full.add_user("keep", "secret-keep");
    full.deliver("keep", &mail::simple(1, "stays", "x\n"));

    let cases = [
        // Without TLS every login needs allow_plaintext: caught by the
        // configuration check, before any connection.
        (
            "auto without TLS",
            &cleartext_only,
            "",
            "auth = auto with tls = none hands a listener the password or what cracks offline",
            "secret-keep",
        ),
        (
            "explicit cleartext with tls = none",
            &cleartext_only,
            "auth = user\nallow_plaintext = no",
            "auth = user with tls = none hands a listener the password;",
            "secret-keep",
        ),
        (
            "explicit digest with tls = none",
            &full,
            "auth = cram-md5",
            "auth = cram-md5 with tls = none hands a listener what cracks offline to the password;",
            "secret-keep",
        ),
        (
            "mechanism not offered",
            &cleartext_only,
            "auth = cram-md5\nallow_plaintext = yes",
            "does not offer cram-md5 login; it offers: user, plain, login",
            "secret-keep",
        ),
        (
            "wrong password",
            &full,
            "allow_plaintext = yes",
            "login failed with scram-sha-256: server refused AUTH [AUTH]",
            "wrong-password",
        ),
        (
            "wrong password, cram-md5",
            &full,
            "auth = cram-md5\nallow_plaintext = yes",
            "login failed with cram-md5",
            "wrong-password",
        ),
    ];
    for (what, dc, extra, needle, password) in cases {
        let relay = Relay::start(plain_port(dc));
        let s = Setup::new("refuse");
        s.write_config(&relayed(&relay, "keep", password, extra));
        let out = s.run(&["--once"]);
        let err = stderr(&out);
        if needle.contains("with tls = none hands a listener") {
            // Caught by the configuration check: not even a connection.
            assert_eq!(out.status.code(), Some(78), "{what}: {err}");
            assert!(err.contains(needle), "{what}: {err}");
            assert_eq!(relay.connections(), 0, "{what}");
            continue;
        }
        assert_eq!(out.status.code(), Some(75), "{what}: {err}");
        assert!(err.contains(needle), "{what}: {err}");
        assert!(!err.contains(password), "{what}: secret in the log");
        relay.assert_never_sent(password);
        assert_eq!(dc.count("keep"), 1, "{what}: nothing deleted");
        assert!(
            entries(&s.account_spool("keep"), "new").is_empty(),
            "{what}"
        );
        if !what.starts_with("wrong password") {
            // Refused before a single byte of the login: not even USER.
            assert_eq!(relay.client_text(), "CAPA\r\nQUIT\r\n", "{what}");
        }
    }
}

/// Replaces SCRAM's server-final message (`v=...`) with a forged signature:
/// what an impostor that relays a real server but lacks the keys can send.
fn forge_server_signature(line: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(line).ok()?;
    let payload = text.strip_prefix("+ ")?.trim_end();
    let decoded = b64_decode(payload)?;
    if !decoded.starts_with(b"v=") {
        return None;
    }
    let forged = format!("v={}", b64_encode(&[0u8; 32]));
    Some(format!("+ {}\r\n", b64_encode(forged.as_bytes())).into_bytes())
}

#[test]
#[ignore = "needs root and Dovecot"]
fn scram_server_that_cannot_prove_itself_is_refused() {
    let dc = Dovecot::start();
    dc.add_user("victim", "secret-victim");
    dc.deliver("victim", &mail::simple(1, "not for impostors", "x\n"));
    let relay = Relay::start_with(plain_port(&dc), Some(forge_server_signature));
    let s = Setup::new("impostor");
    s.write_config(&relayed(
        &relay,
        "victim",
        "secret-victim",
        "auth = scram-sha-256\nallow_plaintext = yes",
    ));
    let out = s.run(&["--once"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(
        err.contains("could not prove that it knows the password"),
        "{err}"
    );
    assert!(
        relay.client_text().contains("\r\n*\r\n"),
        "exchange cancelled: {}",
        relay.client_text()
    );
    assert!(!relay.client_text().contains("RETR"), "mailbox untouched");
    assert_eq!(dc.count("victim"), 1);
    assert!(entries(&s.account_spool("victim"), "new").is_empty());
}

#[test]
#[ignore = "needs root and Dovecot"]
fn certificate_failures_say_what_to_fix() {
    let dc = Dovecot::start();
    dc.add_user("tlsu", "secret-tlsu");
    dc.deliver("tlsu", &mail::simple(1, "x", "y\n"));
    let pin = dc.fingerprint().to_uppercase();
    let pin_colon: String = pin
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let pin_line = format!("tls_fingerprint = {pin_colon}");
    let renewed = format!("pin the new one: {pin_line}");
    for mode in ["implicit", "starttls"] {
        let port = if mode == "implicit" {
            dc.pop3s_port
        } else {
            dc.pop3_port
        };
        let base = |host: &str, trust: String| {
            format!(
                "[account tlsu]\nhost = {host}\nport = {port}\ntls = {mode}\n{trust}\nuser = tlsu\n\
                 password = secret-tlsu\ntimeout = 10s\n"
            )
        };
        let cases = [
            (
                "wrong CA",
                base(
                    "localhost",
                    format!("ca_file = {}", dc.wrong_ca_file().display()),
                ),
                vec![
                    "certificate verify failed",
                    "issuer O=popspool tests, CN=popspool test CA",
                    "subject O=popspool tests, CN=localhost",
                    "names DNS:localhost, IP:127.0.0.1",
                    "put that CA's certificate into ca_file",
                    &pin_line,
                ],
            ),
            (
                "wrong host name",
                base(
                    &INSECURE_HOST.to_string(),
                    format!("ca_file = {}", dc.ca_file().display()),
                ),
                vec![
                    "not valid for host = 127.0.0.2; it names DNS:localhost, IP:127.0.0.1",
                    &pin_line,
                ],
            ),
            (
                "wrong pin",
                base(
                    "localhost",
                    format!("tls_fingerprint = {}", "00".repeat(32)),
                ),
                vec![
                    "does not match tls_fingerprint",
                    "issuer O=popspool tests, CN=popspool test CA",
                    &renewed,
                ],
            ),
        ];
        for (what, cfg, needles) in cases {
            let s = Setup::new("tlsfail");
            s.write_config(&cfg);
            let out = s.run(&["--once"]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(75), "{what} {mode}: {err}");
            for n in needles {
                assert!(err.contains(n), "{what} over {mode}: {n:?} not in {err}");
            }
            assert!(!err.contains("secret-tlsu"));
            assert_eq!(dc.count("tlsu"), 1, "{what}");
        }
    }
}

#[test]
#[ignore = "needs root and Dovecot"]
fn external_needs_a_certificate_the_server_trusts() {
    let dc = Dovecot::start();
    dc.add_user("certuser", "secret-certuser");
    dc.deliver("certuser", &mail::simple(1, "x", "y\n"));
    let (cert, key) = dc.wrong_client_cert();
    let s = Setup::new("extwrong");
    s.write_config(&format!(
        "[account certuser]\nhost = localhost\nport = {}\nca_file = {}\nuser = certuser\n\
         auth = external\ntls_client_cert = {}\ntls_client_key = {}\n",
        dc.pop3s_port,
        dc.ca_file().display(),
        cert.display(),
        key.display()
    ));
    let out = s.run(&["--once"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("login failed with external"), "{err}");
    assert_eq!(dc.count("certuser"), 1);
}

#[test]
#[ignore = "needs root and Dovecot"]
fn probe_reports_tls_mechanisms_and_the_auto_choice() {
    let dc = Dovecot::start();
    dc.add_user("probe", "secret-probe");
    dc.deliver("probe", &mail::simple(1, "x", "y\n"));
    for mode in ["implicit", "starttls"] {
        let s = Setup::new("probe");
        s.write_config(&account(&dc, mode, "probe", ""));
        let out = s.run(&["--probe"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
        for needle in [
            "  greeting Dovecot",
            "  tls      TLSv1.3, TLS_",
            "  subject  O=popspool tests, CN=localhost",
            "  issuer   O=popspool tests, CN=popspool test CA",
            "  names    DNS:localhost, IP:127.0.0.1",
            "  capa     ",
            "  offers   apop, user, plain, login, cram-md5, scram-sha-1, scram-sha-256, external",
            "  auto     would pick scram-sha-256, then plain if it is refused",
            "  login    ok with scram-sha-256 over TLS",
            "  mailbox  1 message(s), ",
        ] {
            assert!(text.contains(needle), "{mode}: {needle:?} not in\n{text}");
        }
        let fp = dc.fingerprint().to_uppercase();
        assert!(
            text.contains(&format!("  sha256   {}:{}:", &fp[..2], &fp[2..4])),
            "{text}"
        );
        assert!(!text.contains("secret-probe"));
    }
    // A failed login still shows what the server offers; nothing changes.
    let s = Setup::new("probe");
    s.write_config(&account(&dc, "implicit", "probe", "").replace("secret-probe", "wrong"));
    let out = s.run(&["--probe"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(75), "{text}");
    assert!(text.contains("  offers   apop, user"), "{text}");
    assert!(
        text.contains("  login    FAILED with scram-sha-256, then plain"),
        "{text}"
    );
    assert!(text.contains("[AUTH]"), "{text}");
    assert_eq!(dc.count("probe"), 1, "probe changes nothing");
}

/// A wrong password is permanent: the service backs off at once, says so
/// once, and recovers by itself when the password file is fixed (here
/// hurried along with SIGUSR1).
#[test]
#[ignore = "needs root and Dovecot"]
fn service_backs_off_after_a_refused_password() {
    let dc = Dovecot::start();
    dc.add_user("backoff", "secret-backoff");
    dc.deliver("backoff", &mail::simple(1, "x", "y\n"));
    let relay = Relay::start(SocketAddr::from((HOST, dc.pop3s_port)));
    let s = Setup::new("backoff");
    let pw = s.dir.join("pw");
    write_private(&pw, "wrong\n");
    s.write_config(&format!(
        "[account backoff]\nhost = localhost\nport = {}\nca_file = {}\nuser = backoff\n\
         password_file = {}\npoll_interval = 2s\nerror_threshold = 10\n",
        relay.port,
        dc.ca_file().display(),
        pw.display()
    ));
    let child = std::process::Command::new(crate::common::popspool::bin())
        .arg("-c")
        .arg(&s.config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("first attempt", &|| relay.connections() == 1);
    // Without backoff the next poll would come after 2 s; with it, after 4 s.
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(relay.connections(), 1, "retried before the backoff");
    std::fs::write(&pw, "secret-backoff\n").unwrap();
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
    };
    signal("USR1");
    wait_for("delivery after the fix", &|| dc.count("backoff") == 0);
    signal("TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("login failed with scram-sha-256").count(),
        1,
        "logged once per streak: {err}"
    );
    assert!(err.contains("SIGUSR1 retries at once"), "{err}");
    assert!(err.contains("recovered"), "{err}");
    assert!(!err.contains("secret-backoff"));
}

/// A server that advertises SCRAM and CRAM-MD5 but cannot run them for this
/// user (its password is stored as a crypt hash, as with PAM or LDAP
/// backends: Courier with authpam, Cyrus with saslauthd): `auto` logs in
/// with PLAIN after SCRAM is refused, and says so. A wrong password costs
/// exactly two attempts and names both, and what was not tried.
#[test]
#[ignore = "needs root and Dovecot"]
fn auto_falls_back_once_where_a_server_advertises_what_it_cannot_check() {
    let dc = Dovecot::start();
    dc.add_user_hashed("hashed", "secret-hashed");
    dc.deliver("hashed", &mail::simple(1, "fallback", "body\n"));
    for mode in ["implicit", "starttls"] {
        let s = Setup::new("fallback");
        s.write_config(&account(&dc, mode, "hashed", ""));
        let out = s.run(&["--once"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{mode}: {err}");
        assert!(
            err.contains("hashed: logged in with plain after the server refused scram-sha-256"),
            "{mode}: {err}"
        );
        assert_eq!(entries(&s.account_spool("hashed"), "new").len(), 1);
        dc.deliver("hashed", &mail::simple(2, "again", "body\n"));
    }
    let s = Setup::new("fallback");
    s.write_config(&account(&dc, "implicit", "hashed", "").replace("secret-hashed", "wrong"));
    let out = s.run(&["--once"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(
        err.contains("login failed with scram-sha-256: server refused AUTH"),
        "{err}"
    );
    assert!(
        err.contains("; then login failed with plain: server refused AUTH"),
        "{err}"
    );
    assert!(
        err.contains("; not tried: scram-sha-1, login, user, cram-md5"),
        "{err}"
    );
    assert_eq!(
        dc.count("hashed"),
        1,
        "nothing fetched with a wrong password"
    );
    // --probe shows the fallback before anything is sent.
    s.write_config(&account(&dc, "implicit", "hashed", ""));
    let out = s.run(&["--probe"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("  auto     would pick scram-sha-256, then plain if it is refused"),
        "{text}"
    );
    assert!(text.contains("  login    ok with plain over TLS"), "{text}");
}
