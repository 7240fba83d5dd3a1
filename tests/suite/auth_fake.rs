//! Logins Dovecot 2.3 cannot serve in a test (it needs an OAuth2
//! introspection server for XOAUTH2/OAUTHBEARER, and Debian's build has no
//! NTLM), against the scripted fake server playing Microsoft 365 and Gmail.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use crate::common::fake::{FakeServer, Faults, Sasl};
use crate::common::popspool::{entries, stderr, write_private, Setup};
use crate::common::relay::b64_decode;

const TOKEN: &str =
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJzY3AiOiJQT1AuQWNjZXNzQXNVc2VyLkFsbCJ9.c2lnbmF0dXJl";

fn message() -> Vec<Vec<u8>> {
    vec![b"Subject: oauth\r\n\r\nbody\r\n".to_vec()]
}

fn server(sasl: Sasl) -> FakeServer {
    FakeServer::start(
        message(),
        Faults {
            sasl: Some(sasl),
            ..Faults::default()
        },
    )
}

/// The fake's account, with `auth` and the secret replaced.
fn account(fake: &FakeServer, auth: &str, secret: &str) -> String {
    fake.account("a", &format!("auth = {auth}"))
        .replace("auth = user\n", "")
        .replace("password = pw\n", &format!("{secret}\n"))
}

/// A token helper as a user would write one: prints the current token.
fn helper(s: &Setup, token: &str) -> std::path::PathBuf {
    let path = s.dir.join("token-helper");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "#!/bin/sh\necho '{token}'").unwrap();
    drop(f);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn microsoft_365_xoauth2_two_step_with_a_token_command() {
    let fake = server(Sasl {
        mechanisms: vec!["XOAUTH2"],
        tokens: vec![TOKEN.into()],
        no_initial_response: true,
        ..Sasl::default()
    });
    let s = Setup::new("m365");
    let cmd = helper(&s, TOKEN);
    s.write_config(&account(
        &fake,
        "xoauth2",
        &format!("password_command = {}", cmd.display()),
    ));
    let out = s.run(&["--once", "--log-level", "trace"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(entries(&s.account_spool("a"), "new").len(), 1);
    let lines = fake.received();
    let at = lines
        .iter()
        .position(|l| l == "AUTH XOAUTH2")
        .expect("AUTH XOAUTH2 alone");
    let sent = b64_decode(&lines[at + 1]).unwrap();
    assert_eq!(
        sent,
        format!("user=u\x01auth=Bearer {TOKEN}\x01\x01").as_bytes()
    );
    assert!(
        !err.contains(TOKEN) && !err.contains(&lines[at + 1]),
        "token in the log"
    );
    assert!(
        err.contains("C: AUTH XOAUTH2\n") || err.contains("C: AUTH XOAUTH2"),
        "{err}"
    );
}

#[test]
fn microsoft_365_refusal_is_reported_without_the_token() {
    let fake = server(Sasl {
        mechanisms: vec!["XOAUTH2"],
        tokens: vec!["the-right-one".into()],
        no_initial_response: true,
        ..Sasl::default()
    });
    let s = Setup::new("m365bad");
    let cmd = helper(&s, TOKEN);
    s.write_config(&account(
        &fake,
        "xoauth2",
        &format!("password_command = {}", cmd.display()),
    ));
    let out = s.run(&["--once"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(
        err.contains("login failed with xoauth2: server refused AUTH: Authentication failure"),
        "{err}"
    );
    assert!(err.contains("is the access token current"), "{err}");
    assert!(!err.contains(TOKEN));
    assert_eq!(fake.remaining(), 1);
}

#[test]
fn gmail_xoauth2_failure_status_is_answered_and_shown() {
    let fake = server(Sasl {
        mechanisms: vec!["PLAIN", "XOAUTH2", "OAUTHBEARER"],
        tokens: vec!["ya29.fresh".into()],
        json_failure: true,
        ..Sasl::default()
    });
    let s = Setup::new("gmail");
    let file = s.dir.join("token");
    write_private(&file, "ya29.expired\n");
    s.write_config(&account(
        &fake,
        "xoauth2",
        &format!("password_file = {}", file.display()),
    ));
    let out = s.run(&["--once"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(
        err.contains("(server said: status 401, scope https://mail.google.com/)"),
        "{err}"
    );
    assert!(
        !err.contains("protocol violation"),
        "the JSON challenge was answered: {err}"
    );
    assert!(!err.contains("ya29.expired"));
    // The helper (here: whoever rewrites the file) refreshed the token: the
    // next poll reads it fresh and gets in.
    std::fs::write(&file, "ya29.fresh\n").unwrap();
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(entries(&s.account_spool("a"), "new").len(), 1);
}

#[test]
fn oauthbearer_success_and_failure() {
    let fake = server(Sasl {
        mechanisms: vec!["OAUTHBEARER"],
        tokens: vec!["good.token".into()],
        ..Sasl::default()
    });
    let s = Setup::new("bearer");
    s.write_config(&account(&fake, "oauthbearer", "password = bad.token"));
    let out = s.run(&["--once"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("status 401"), "{err}");
    assert!(
        !err.contains("protocol violation"),
        "answered with ^A: {err}"
    );
    s.write_config(&account(&fake, "oauthbearer", "password = good.token"));
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let auth = fake
        .received()
        .into_iter()
        .find(|l| l.starts_with("AUTH OAUTHBEARER "))
        .unwrap();
    let sent = b64_decode(auth.rsplit(' ').next().unwrap()).unwrap();
    let sent = String::from_utf8(sent).unwrap();
    assert!(
        sent.starts_with("n,a=u,\x01host=127.0.0.1\x01port="),
        "{sent:?}"
    );
}

#[test]
fn a_password_is_not_sent_as_a_token() {
    let fake = server(Sasl {
        mechanisms: vec!["XOAUTH2"],
        tokens: vec![TOKEN.into()],
        ..Sasl::default()
    });
    let s = Setup::new("notatoken");
    s.write_config(&account(&fake, "xoauth2", "password = my secret password"));
    let out = s.run(&["--once"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("is not an OAuth bearer token"), "{err}");
    assert!(!err.contains("my secret password"));
    assert!(
        !fake.received().iter().any(|l| l.starts_with("AUTH")),
        "nothing sent"
    );
}

#[test]
fn ntlm_v2_login_verified_independently() {
    let fake = server(Sasl {
        mechanisms: vec!["NTLM", "PLAIN"],
        ntlm_password: Some("Pa55-w0rd".into()),
        ..Sasl::default()
    });
    for (password, code) in [("wrong", 75), ("Pa55-w0rd", 0)] {
        let s = Setup::new("ntlm");
        s.write_config(&account(&fake, "ntlm", &format!("password = {password}")));
        let out = s.run(&["--once"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{password}: {err}");
        if code == 0 {
            assert_eq!(entries(&s.account_spool("a"), "new").len(), 1);
        } else {
            assert!(err.contains("login failed with ntlm"), "{err}");
        }
    }
    let lines = fake.received();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("AUTH NTLM TlRMTVNTUAAB")),
        "{lines:?}"
    );
}

#[test]
fn failing_token_command_is_logged_with_its_stderr() {
    let fake = server(Sasl {
        mechanisms: vec!["XOAUTH2"],
        ..Sasl::default()
    });
    let s = Setup::new("helperfail");
    let path = s.dir.join("helper");
    std::fs::write(
        &path,
        "#!/bin/sh\necho 'refresh token revoked' >&2\nexit 2\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    s.write_config(&account(
        &fake,
        "xoauth2",
        &format!("password_command = {} --account 'a b'", path.display()),
    ));
    let out = s.run(&["--once"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    // Its stderr in the log, apart from the error (which reaches status.json).
    assert!(
        err.contains("' said on stderr: refresh token revoked"),
        "{err}"
    );
    assert!(err.contains("' failed (exit status: 2) "), "{err}");
    let status = std::fs::read_to_string(s.state.join("a.status.json")).unwrap();
    assert!(!status.contains("revoked"), "{status}");
    assert_eq!(fake.connections(), 0, "no connection without a token");
}

/// Cyrus with saslauthd advertises SCRAM, CRAM-MD5 and more that it cannot
/// check. Without TLS (`allow_plaintext = yes`), `auto` tries SCRAM, then
/// once CRAM-MD5, and never falls back to sending the password: someone
/// on the path could fake those refusals to get it.
#[test]
fn without_tls_a_refused_digest_never_falls_back_to_the_password() {
    let fake = server(Sasl {
        mechanisms: vec![
            "SCRAM-SHA-512",
            "SCRAM-SHA-256",
            "SCRAM-SHA-1",
            "DIGEST-MD5",
            "CRAM-MD5",
            "NTLM",
            "PLAIN",
            "LOGIN",
        ],
        ..Sasl::default()
    });
    let s = Setup::new("cyrus");
    s.write_config(&account(&fake, "auto", "password = pw"));
    let out = s.run(&["--once"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    let auths: Vec<String> = fake
        .received()
        .into_iter()
        .filter(|l| l.starts_with("AUTH ") || l.starts_with("USER ") || l.starts_with("PASS "))
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(auths, ["AUTH SCRAM-SHA-256", "AUTH CRAM-MD5"], "{err}");
    assert!(
        err.contains("login failed with scram-sha-256")
            && err.contains("; then login failed with cram-md5")
            && err.contains("; not tried: scram-sha-1, apop, plain, login, user"),
        "{err}"
    );
    assert_eq!(fake.remaining(), 1);
}
