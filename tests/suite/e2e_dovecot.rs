//! popspool against a real, private Dovecot: what a user relies on.

use std::path::Path;

use crate::common::dovecot::{stored_form, Dovecot};
use crate::common::mail;
use crate::common::popspool::{entries, sorted, stderr, tmp_count, Setup};

fn account(name: &str, dc: &Dovecot, user: &str, extra: &str) -> String {
    format!(
        "[account {name}]\nhost = localhost\nport = {}\ntls = implicit\nca_file = {}\nuser = {user}\n\
         password = secret-{user}\n{extra}\n",
        dc.pop3s_port,
        dc.ca_file().display()
    )
}

fn starttls_account(name: &str, dc: &Dovecot, user: &str, extra: &str) -> String {
    format!(
        "[account {name}]\nhost = localhost\nport = {}\ntls = starttls\nca_file = {}\nuser = {user}\n\
         password = secret-{user}\n{extra}\n",
        dc.pop3_port,
        dc.ca_file().display()
    )
}

fn add(dc: &Dovecot, user: &str) {
    dc.add_user(user, &format!("secret-{user}"));
}

/// The main promise (README, "Delivery guarantee"), at scale: 1,000
/// mixed messages over POP3S, byte-exact, none lost or doubled, server
/// empty, and a second run adds nothing.
#[test]
#[ignore = "needs root and Dovecot"]
fn drains_a_thousand_mixed_messages_over_pop3s_exactly_once() {
    let dc = Dovecot::start();
    add(&dc, "bulk");
    let msgs = mail::mixed(1000, 7);
    dc.deliver_many("bulk", &msgs);
    let s = Setup::new("bulk");
    s.write_config(&account("bulk", &dc, "bulk", ""));
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let spool = s.account_spool("bulk");
    let got = entries(&spool, "new");
    assert_eq!(got.len(), 1000);
    let want = sorted(msgs.iter().map(|m| stored_form(m)).collect());
    assert!(
        sorted(got.iter().map(|e| e.message.clone()).collect()) == want,
        "byte-exact"
    );
    assert_eq!(dc.count("bulk"), 0, "server emptied");
    assert_eq!(tmp_count(&spool), 0);
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        entries(&spool, "new").len(),
        1000,
        "second run adds nothing"
    );
}

#[test]
#[ignore = "needs root and Dovecot"]
fn meta_json_describes_the_message() {
    let dc = Dovecot::start();
    add(&dc, "meta");
    dc.deliver(
        "meta",
        &mail::simple(1, "=?UTF-8?Q?Gr=C3=BC=C3=9Fe?=", "hi\n"),
    );
    let s = Setup::new("meta");
    s.write_config(&account("meta", &dc, "meta", ""));
    assert_eq!(s.run(&["--once"]).status.code(), Some(0));
    let e = &entries(&s.account_spool("meta"), "new")[0];
    let m = &e.meta;
    assert_eq!(m["version"], 1);
    assert_eq!(m["id"], e.id.as_str());
    assert_eq!(m["account"], "meta");
    assert_eq!(m["size"], e.message.len() as u64);
    assert_eq!(m["server"], format!("localhost:{}", dc.pop3s_port).as_str());
    assert!(m["uidl"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(m["retrieved_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(m["headers"]["subject"], "Grüße");
    assert_eq!(m["headers"]["message_id"], "<msg-1@example.org>");
    assert!(m["headers"]["from"]
        .as_str()
        .unwrap()
        .contains("sender1@example.org"));
    assert_eq!(m["kind"], "message");
}

#[test]
#[ignore = "needs root and Dovecot"]
fn starttls_with_apop_and_user_pass() {
    let dc = Dovecot::start();
    let cases = [("apopu", "apop"), ("useru", "user"), ("autou", "auto")];
    for (user, _) in cases {
        add(&dc, user);
    }
    for (user, auth) in cases {
        let msgs: Vec<Vec<u8>> = (0..5).map(|i| mail::simple(i, user, "body\n")).collect();
        dc.deliver_many(user, &msgs);
        let s = Setup::new(user);
        s.write_config(&starttls_account(
            user,
            &dc,
            user,
            &format!("auth = {auth}"),
        ));
        let out = s.run(&["--once", "--log-level", "trace"]);
        assert_eq!(out.status.code(), Some(0), "{auth}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            !err.contains(&format!("secret-{user}")),
            "password in the trace log"
        );
        assert!(err.contains("STLS"), "trace shows the upgrade");
        let got = entries(&s.account_spool(user), "new");
        assert_eq!(
            sorted(got.into_iter().map(|e| e.message).collect()),
            sorted(msgs.iter().map(|m| stored_form(m)).collect())
        );
        assert_eq!(dc.count(user), 0);
    }
}

/// Every refusal leaves the mailbox untouched and the spool empty.
#[test]
#[ignore = "needs root and Dovecot"]
fn refusals_delete_nothing() {
    let dc = Dovecot::start();
    add(&dc, "keep");
    dc.deliver_many(
        "keep",
        &[mail::simple(1, "a", "b\n"), mail::simple(2, "c", "d\n")],
    );
    let wrong_ca = format!(
        "[account keep]\nhost = localhost\nport = {}\nca_file = {}\nuser = keep\npassword = secret-keep\n",
        dc.pop3s_port,
        dc.wrong_ca_file().display()
    );
    let wrong_pin = format!(
        "[account keep]\nhost = localhost\nport = {}\ntls_fingerprint = {}\nuser = keep\npassword = secret-keep\n",
        dc.pop3s_port,
        "00".repeat(32)
    );
    let cases = [
        ("wrong CA", wrong_ca, "TLS handshake"),
        ("wrong pin", wrong_pin, "does not match tls_fingerprint"),
        (
            "wrong password",
            account("keep", &dc, "keep", "").replace("password = secret-keep", "password = nope"),
            "login failed",
        ),
        // Without TLS every login needs allow_plaintext (tests/e2e_auth.rs
        // proves with a recording relay that nothing is sent without it).
        (
            "apop without TLS",
            format!("[account keep]\nhost = 127.0.0.1\nport = {}\ntls = none\nallow_plaintext = yes\nauth = apop\nuser = keep\npassword = nope\n", dc.pop3_port),
            "login failed with apop",
        ),
        // From another address Dovecot hides USER/PLAIN/LOGIN without TLS,
        // so popspool refuses before sending the user name.
        (
            "server refuses cleartext from another address",
            format!(
                "[account keep]\nhost = 127.0.0.1\nport = {}\ntls = none\nallow_plaintext = yes\nauth = user\nsource_ip = 127.0.0.2\n\
                 user = keep\npassword = secret-keep\n",
                dc.pop3_port
            ),
            "the server does not offer user login; it offers: apop, cram-md5, scram-sha-1, scram-sha-256",
        ),
    ];
    for (what, cfg, needle) in cases {
        let s = Setup::new("refuse");
        s.write_config(&cfg);
        let out = s.run(&["--once"]);
        assert_eq!(out.status.code(), Some(75), "{what}");
        let err = stderr(&out);
        assert!(err.contains(needle), "{what}: {err}");
        assert!(!err.contains("secret-keep"), "{what}: secret in log");
        assert_eq!(dc.count("keep"), 2, "{what}: nothing deleted");
        assert!(
            entries(&s.account_spool("keep"), "new").is_empty(),
            "{what}"
        );
    }
}

#[test]
#[ignore = "needs root and Dovecot"]
fn right_pin_trusts_a_server_without_ca_file() {
    let dc = Dovecot::start();
    add(&dc, "pin");
    dc.deliver("pin", &mail::simple(1, "pinned", "x\n"));
    let s = Setup::new("pin");
    s.write_config(&format!(
        "[account pin]\nhost = 127.0.0.1\nport = {}\ntls_fingerprint = {}\nuser = pin\npassword = secret-pin\n",
        dc.pop3s_port,
        dc.fingerprint()
    ));
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(entries(&s.account_spool("pin"), "new").len(), 1);
}

#[test]
#[ignore = "needs root and Dovecot"]
fn delete_no_leaves_mail_and_never_delivers_twice() {
    let dc = Dovecot::start();
    add(&dc, "keepall");
    dc.deliver_many(
        "keepall",
        &(0..3)
            .map(|i| mail::simple(i, "k", "x\n"))
            .collect::<Vec<_>>(),
    );
    let s = Setup::new("keepall");
    s.write_config(&account("keepall", &dc, "keepall", "delete = no"));
    assert_eq!(s.run(&["--once"]).status.code(), Some(0));
    assert_eq!(dc.count("keepall"), 3);
    assert_eq!(s.run(&["--once"]).status.code(), Some(0));
    assert_eq!(entries(&s.account_spool("keepall"), "new").len(), 3);
    dc.deliver("keepall", &mail::simple(9, "late", "y\n"));
    assert_eq!(s.run(&["--once"]).status.code(), Some(0));
    let got = entries(&s.account_spool("keepall"), "new");
    assert_eq!(got.len(), 4);
    assert_eq!(got[3].meta["headers"]["subject"], "late");
    assert_eq!(dc.count("keepall"), 4);
}

#[test]
#[ignore = "needs root and Dovecot"]
fn oversized_messages_stay_on_the_server() {
    let dc = Dovecot::start();
    add(&dc, "big");
    dc.deliver_many(
        "big",
        &[
            mail::simple(1, "small", "x\n"),
            mail::simple(2, "large", &"y".repeat(20_000)),
        ],
    );
    let s = Setup::new("big");
    s.write_config(&account("big", &dc, "big", "max_message_size = 10K"));
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("max_message_size"));
    let got = entries(&s.account_spool("big"), "new");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].meta["headers"]["subject"], "small");
    assert_eq!(dc.count("big"), 1);
}

#[test]
#[ignore = "needs root and Dovecot"]
fn account_selection_and_check_and_probe() {
    let dc = Dovecot::start();
    add(&dc, "one");
    add(&dc, "two");
    dc.deliver("one", &mail::simple(1, "1", "x\n"));
    dc.deliver("two", &mail::simple(2, "2", "x\n"));
    let s = Setup::new("sel");
    s.write_config(&format!(
        "{}{}",
        account("one", &dc, "one", ""),
        account("two", &dc, "two", "")
    ));
    let out = s.run(&["--check"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[account one]") && text.contains("[account two]"));
    assert!(!text.contains("secret-"), "no secret in --check");
    let out = s.run(&["--probe", "-a", "two"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 message(s)"), "{text}");
    assert!(text.contains("sha256") && text.contains(&dc.fingerprint()[..2].to_uppercase()));
    assert_eq!(dc.count("two"), 1, "probe changes nothing");
    assert_eq!(s.run(&["--once", "-a", "two"]).status.code(), Some(0));
    assert_eq!(dc.count("one"), 1);
    assert_eq!(dc.count("two"), 0);
    assert_eq!(s.run(&["--once", "-a", "nosuch"]).status.code(), Some(64));
}

/// A systemd service has no SSL_CERT_FILE/SSL_CERT_DIR: the system store
/// must be found on its own. In a private mount namespace, /etc/ssl/certs is
/// replaced by a store that holds the test CA (needs root, as the suite has).
/// A store without hash links is read whole; a hashed one is read on demand,
/// and a CA that is in the bundle but missing from the hashed directory is
/// still trusted (the connection is tried again against the whole bundle).
#[test]
#[ignore = "needs root and Dovecot"]
fn system_trust_store_is_used_without_ssl_environment() {
    let dc = Dovecot::start();
    add(&dc, "sys");
    let s = Setup::new("sysstore");
    s.write_config(&format!(
        "[account sys]\nhost = localhost\nport = {}\nuser = sys\npassword = secret-sys\n",
        dc.pop3s_port
    ));
    let run = |store: Option<&Path>| {
        let script = if store.is_some() {
            "mount --bind \"$1\" /etc/ssl/certs && exec \"$2\" -c \"$3\" --once --log-level debug"
        } else {
            "exec \"$2\" -c \"$3\" --once --log-level debug"
        };
        let out = std::process::Command::new("unshare")
            .args(["--mount", "--", "sh", "-c", script, "sh"])
            .arg(store.unwrap_or(Path::new("/nonexistent")))
            .arg(crate::common::popspool::bin())
            .arg(&s.config)
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .output()
            .unwrap();
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        out
    };
    let hash_of = |pem: &Path| {
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-subject_hash", "-in"])
            .arg(pem)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    // Some other CA of the real system store, under its hash name.
    let other = std::fs::read_dir("/etc/ssl/certs")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "pem"))
        .expect("a CA in the system store");
    let store = |name: &str, bundle: bool, hashed: &[&Path]| {
        let d = s.dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        if bundle {
            std::fs::copy(dc.ca_file(), d.join("ca-certificates.crt")).unwrap();
        }
        for pem in hashed {
            std::fs::copy(pem, d.join(format!("{}.0", hash_of(pem)))).unwrap();
        }
        d
    };
    let mut mail = 0;
    let mut deliver = || {
        mail += 1;
        dc.deliver(
            "sys",
            &mail::simple(mail, "trusted by the system store", "x\n"),
        );
    };
    deliver();
    // The real system store does not know the test CA.
    let out = run(None);
    assert_eq!(out.status.code(), Some(75));
    assert!(stderr(&out).contains("TLS handshake"));
    assert_eq!(dc.count("sys"), 1);
    // A bundle without hash links: read whole.
    let out = run(Some(&store("bundle", true, &[])));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("read whole"));
    assert_eq!(entries(&s.account_spool("sys"), "new").len(), 1);
    assert_eq!(dc.count("sys"), 0);
    // A hashed directory with the CA: read on demand.
    deliver();
    let out = run(Some(&store("hashed", true, &[&dc.ca_file()])));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("read on demand"));
    assert!(!stderr(&out).contains("reading the whole bundle"));
    assert_eq!(entries(&s.account_spool("sys"), "new").len(), 2);
    // The CA only in the bundle, another one in the hashed directory: the
    // on-demand lookup misses, the whole bundle is read and trusted.
    deliver();
    let out = run(Some(&store("partial", true, &[&other])));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("read on demand"));
    assert!(stderr(&out).contains("reading the whole bundle"));
    assert_eq!(entries(&s.account_spool("sys"), "new").len(), 3);
    // Neither has it: refused, after the second try.
    deliver();
    let out = run(Some(&store("neither", false, &[&other])));
    assert_eq!(out.status.code(), Some(75));
    assert!(stderr(&out).contains("TLS handshake"));
    assert!(!stderr(&out).contains("reading the whole bundle"));
    assert_eq!(dc.count("sys"), 1);
}

/// Entries get their documented modes whatever the umask: directories 0770
/// (the service's group takes them away), files 0640. popspool switches the
/// umask only around each entry directory's mkdirat; the journal it writes
/// meanwhile keeps 0600.
#[test]
#[ignore = "needs root and Dovecot"]
fn entry_modes_hold_under_any_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dc = Dovecot::start();
    add(&dc, "modes");
    // The 50th of a mixed set is a multipart with a base64 attachment.
    let msgs: Vec<Vec<u8>> = mail::mixed(50, 3).into_iter().skip(48).collect();
    dc.deliver_many("modes", &msgs);
    let s = Setup::new("modes");
    s.write_config(&account("modes", &dc, "modes", ""));
    for umask in ["077", "000", "027"] {
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("umask {umask}; exec \"$0\" -c \"$1\" --once"),
            ])
            .arg(crate::common::popspool::bin())
            .arg(&s.config)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let new = s.account_spool("modes").join("new");
        let got = entries(&s.account_spool("modes"), "new");
        assert_eq!(got.len(), 2, "umask {umask}");
        let mut attachments = 0;
        for e in &got {
            let dir = new.join(&e.id);
            assert_eq!(mode(&dir), 0o770, "umask {umask}");
            for f in ["message.eml", "meta.json", "body.txt"] {
                assert_eq!(mode(&dir.join(f)), 0o640, "{f}, umask {umask}");
            }
            if let Ok(rd) = std::fs::read_dir(dir.join("attachments")) {
                assert_eq!(mode(&dir.join("attachments")), 0o770, "umask {umask}");
                for a in rd {
                    assert_eq!(mode(&a.unwrap().path()), 0o640, "umask {umask}");
                    attachments += 1;
                }
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
        assert_eq!(attachments, 1, "umask {umask}");
        let journal = s.state.join("modes.journal");
        assert_eq!(mode(&journal), 0o600, "umask {umask}");
        // Written after the poll: the process's own umask is back by then.
        let status = s.state.join("modes.status.json");
        let masked = 0o644 & !u32::from_str_radix(umask, 8).unwrap();
        assert_eq!(mode(&status), masked, "umask {umask}");
        dc.deliver_many("modes", &msgs);
    }
}
