//! S/MIME through the real binary (README, "S/MIME"): every message kind
//! `tests/smime/make-pki.sh` makes with the openssl CLI goes through a
//! private Dovecot and `popspool --once`, and its entry says what it should:
//! decrypted (CBC, GCM, 3DES, RC2, `x-pkcs7-mime`, a `.p7m` body) or
//! "cannot decrypt" and quarantined; signatures (opaque, detached, RSA
//! PKCS#1 v1.5, RSA-PSS, ECDSA, SHA-1 to SHA-512) valid, invalid or
//! untrusted; layers nested both ways and beyond the limit; `smime_policy`
//! routing, also when popspool is killed mid-drain; and every key format
//! under `--check`. The PKI and messages are made once per test run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::dovecot::Dovecot;
use crate::common::mail;
use crate::common::popspool::{bin, entries, once_measured, signal, stderr, tmp_count, Setup};

/// The PKI and the messages, made once per run of the test binary.
fn pki() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Under the target directory, so runs do not litter /tmp.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("smime-pki-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smime/make-pki.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .output()
            .expect("run make-pki.sh");
        assert!(
            out.status.success(),
            "make-pki.sh failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(dir.join("openssl.log")).unwrap_or_default()
        );
        dir
    })
}

fn pki_file(name: &str) -> String {
    pki().join("pki").join(name).display().to_string()
}

fn message(name: &str) -> Vec<u8> {
    fs::read(pki().join("msg").join(format!("{name}.eml"))).unwrap()
}

/// The keys of an account that decrypts with the PKCS#8 key and trusts
/// the test root, plus `extra`.
fn smime_keys(extra: &str) -> String {
    format!(
        "smime_cert = {}\nsmime_key = {}\nsmime_ca_file = {}\n{extra}",
        pki_file("recipient.crt"),
        pki_file("recipient.key"),
        pki_file("root.crt")
    )
}

fn account(name: &str, dc: &Dovecot, extra: &str) -> String {
    format!(
        "[account {name}]\nhost = localhost\nport = {}\ntls = implicit\nca_file = {}\nuser = {name}\n\
         password = secret-{name}\n{extra}\n",
        dc.pop3s_port,
        dc.ca_file().display()
    )
}

/// One entry of a spool: where it is, its meta.json and its directory.
struct Got {
    dest: &'static str,
    meta: Value,
    dir: PathBuf,
}

/// Every entry of `spool`, by subject.
fn by_subject(spool: &Path) -> std::collections::HashMap<String, Got> {
    let mut map = std::collections::HashMap::new();
    for dest in ["new", "quarantine"] {
        for e in entries(spool, dest) {
            let subject = e.meta["headers"]["subject"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let dir = spool.join(dest).join(&e.id);
            let old = map.insert(
                subject.clone(),
                Got {
                    dest,
                    meta: e.meta,
                    dir,
                },
            );
            assert!(old.is_none(), "two entries with subject {subject}");
        }
    }
    map
}

const ENCRYPTED: [&str; 11] = [
    "enc-aes128-cbc",
    "enc-aes192-cbc",
    "enc-aes256-cbc",
    "enc-des3",
    "enc-rc2",
    "enc-rc2-40",
    "enc-ber",
    "enc-aes128-gcm",
    "enc-aes256-gcm",
    "enc-x",
    "enc-p7m",
];
const VALID: [&str; 9] = [
    "sig-detached",
    "sig-opaque-ber",
    "sig-noprotocol",
    "sig-opaque",
    "sig-sha1",
    "sig-sha512",
    "sig-pss",
    "sig-ec",
    "sig-x",
];

/// Everything make-pki.sh makes, delivered to `user`; returns the subjects.
fn deliver_all(dc: &Dovecot, user: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut msgs = Vec::new();
    for e in fs::read_dir(pki().join("msg")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".eml") else {
            continue;
        };
        if stem == "inner" {
            continue;
        }
        names.push(stem.to_string());
        msgs.push(message(stem));
    }
    dc.deliver_many(user, &msgs);
    names
}

/// `encrypted`, `decrypted` and `signed` of an `smime` object.
fn layers(m: &Value) -> (Option<bool>, Option<bool>, Option<bool>) {
    let flag = |k: &str| m[k].as_bool();
    (flag("encrypted"), flag("decrypted"), flag("signed"))
}

/// The decoded inner message: its body and its attachment.
fn assert_inner_decoded(name: &str, g: &Got) {
    let body = fs::read_to_string(g.dir.join("body.txt"))
        .unwrap_or_else(|e| panic!("{name}: body.txt: {e}"));
    // (sig-tampered says TEST: the change its signature catches.)
    assert!(
        body.to_lowercase().contains("hello from the s/mime test."),
        "{name}: {body}"
    );
    let files: Vec<&str> = g.meta["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["file"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["attachments/report.pdf"], "{name}");
    assert_eq!(
        fs::read(g.dir.join("attachments/report.pdf")).unwrap(),
        b"%PDF-1.4 test report\n",
        "{name}"
    );
    assert_eq!(g.meta["kind"], "file", "{name}");
}

/// Every format and outcome of the README's "S/MIME" through Dovecot and
/// the binary, under `smime_policy = accept`.
#[test]
#[ignore = "needs root and Dovecot"]
fn every_format_and_outcome() {
    let dc = Dovecot::start();
    dc.add_user("smime", "secret-smime");
    let names = deliver_all(&dc, "smime");
    let s = Setup::new("smime");
    s.write_config(&account("smime", &dc, &smime_keys("")));
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(dc.count("smime"), 0, "every message left the server");
    let got = by_subject(&s.account_spool("smime"));
    assert_eq!(
        got.len(),
        names.len(),
        "{:?}",
        got.keys().collect::<Vec<_>>()
    );
    let inner = fs::read(pki().join("msg/inner.eml")).unwrap();
    let sm = |name: &str| &got[name].meta["smime"];

    for name in ENCRYPTED {
        let g = &got[name];
        assert_eq!(g.dest, "new", "{name}");
        let m = sm(name);
        assert_eq!(
            layers(m),
            (Some(true), Some(true), Some(false)),
            "{name}: {m}"
        );
        assert_eq!(m["signature"], "none", "{name}");
        assert!(m["error"].is_null(), "{name}: {m}");
        assert_eq!(
            fs::read(g.dir.join("decrypted.eml")).unwrap(),
            inner,
            "{name}"
        );
        assert_inner_decoded(name, g);
        // The original encrypted bytes stay in message.eml.
        assert!(
            fs::read_to_string(g.dir.join("message.eml"))
                .unwrap()
                .contains("pkcs7-mime")
                || name == "enc-p7m"
        );
    }
    for name in ["enc-other", "enc-corrupt"] {
        let g = &got[name];
        assert_eq!(g.dest, "quarantine", "{name}");
        let m = sm(name);
        assert_eq!(
            (m["encrypted"].as_bool(), m["decrypted"].as_bool()),
            (Some(true), Some(false))
        );
        let error = m["error"].as_str().unwrap();
        assert!(error.starts_with("cannot decrypt"), "{name}: {error}");
        assert!(g.meta["quarantine"]
            .as_str()
            .unwrap()
            .contains("cannot decrypt"));
        assert!(
            !g.dir.join("decrypted.eml").exists(),
            "{name}: nothing decrypted is written"
        );
        assert!(!g.dir.join("body.txt").exists(), "{name}");
    }
    let other = sm("enc-other")["error"].as_str().unwrap();
    assert!(other.contains("no matching recipient"), "{other}");

    for name in VALID.into_iter().chain(["sig-other-from"]) {
        let g = &got[name];
        assert_eq!(g.dest, "new", "{name}");
        let m = sm(name);
        assert_eq!(m["signed"], true, "{name}");
        assert_eq!(m["encrypted"], false, "{name}");
        assert_eq!(m["signature"], "valid", "{name}: {m}");
        assert!(m["error"].is_null(), "{name}: {m}");
        let signer = &m["signers"][0];
        assert_eq!(signer["email"], "sender@example.org", "{name}");
        assert!(
            signer["subject"].as_str().unwrap().contains("CN=signer"),
            "{name}: {signer}"
        );
        assert_eq!(m["signer_matches_from"], name != "sig-other-from", "{name}");
        assert!(
            !g.dir.join("decrypted.eml").exists(),
            "{name}: nothing was decrypted"
        );
        assert_inner_decoded(name, g);
    }
    for (name, verdict, reason) in [
        ("sig-tampered", "invalid", "content verify error"),
        ("sig-expired", "untrusted", "certificate has expired"),
        ("sig-usage", "untrusted", "unsuitable certificate purpose"),
        ("sig-self", "untrusted", "self-signed certificate"),
        ("sig-nocerts", "untrusted", "signer certificate not found"),
    ] {
        let g = &got[name];
        assert_eq!(g.dest, "new", "accept delivers {name}");
        let m = sm(name);
        assert_eq!(m["signature"], verdict, "{name}: {m}");
        let error = m["error"].as_str().unwrap();
        assert!(error.contains(reason), "{name}: {error}");
        if name != "sig-nocerts" {
            assert_eq!(m["signers"][0]["email"], "sender@example.org", "{name}");
        }
        assert_inner_decoded(name, g);
    }
    for name in ["sign-then-encrypt", "encrypt-then-sign"] {
        let g = &got[name];
        assert_eq!(g.dest, "new", "{name}");
        let m = sm(name);
        assert_eq!(
            layers(m),
            (Some(true), Some(true), Some(true)),
            "{name}: {m}"
        );
        assert_eq!(m["signature"], "valid", "{name}: {m}");
        assert_eq!(m["signer_matches_from"], true, "{name}");
        assert!(g.dir.join("decrypted.eml").exists(), "{name}");
        assert_inner_decoded(name, g);
    }
    let deep = sm("deep");
    assert!(
        deep["error"]
            .as_str()
            .unwrap()
            .contains("more than 4 nested S/MIME layers"),
        "{deep}"
    );
    // Its layers were signed without the intermediate certificate.
    assert_eq!(deep["signature"], "untrusted", "{deep}");
    assert!(sm("plain").is_null());
    assert!(sm("certs-only").is_null(), "certificates are no signature");
    assert_eq!(got["plain"].dest, "new");
}

/// Every message of [`every_format_and_outcome`] decoded from its file, as
/// one too big to keep in memory is (README, "S/MIME", Memory), gives the
/// entry it gives from memory: the same `meta.json`, files and
/// `decrypted.eml`, with `mime = yes` and `mime = no`, and no temporary
/// file left.
#[test]
#[ignore = "needs root and Dovecot"]
fn from_the_file_as_from_memory() {
    let dc = Dovecot::start();
    let mut seen = Vec::new();
    for mime in ["yes", "no"] {
        let mut runs = Vec::new();
        for way in ["memory", "file"] {
            let user = format!("{way}-{mime}");
            dc.add_user(&user, &format!("secret-{user}"));
            deliver_all(&dc, &user);
            let s = Setup::new(&format!("smime-{user}"));
            s.write_config(&account(&user, &dc, &smime_keys(&format!("mime = {mime}"))));
            let mut cmd = Command::new(bin());
            cmd.arg("-c").arg(&s.config).arg("--once");
            if way == "file" {
                cmd.env("POPSPOOL_TEST_DECODE_FROM_FILE", "1");
            }
            let out = cmd.output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            let mut entries = std::collections::BTreeMap::new();
            for (subject, g) in by_subject(&s.account_spool(&user)) {
                let mut meta = g.meta.clone();
                for volatile in ["id", "retrieved_at", "uidl", "account"] {
                    meta[volatile] = Value::Null;
                }
                let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(&g.dir)
                    .unwrap()
                    .map(|e| {
                        let e = e.unwrap();
                        let name = e.file_name().to_string_lossy().into_owned();
                        let bytes = if name == "decrypted.eml" {
                            fs::read(e.path()).unwrap()
                        } else {
                            Vec::new()
                        };
                        (name, bytes)
                    })
                    .collect();
                files.sort();
                entries.insert(subject, (g.dest, meta, files));
            }
            runs.push((s, entries));
        }
        let (memory, file) = (&runs[0].1, &runs[1].1);
        assert_eq!(memory.len(), file.len());
        for (subject, m) in memory {
            assert_eq!(Some(m), file.get(subject), "mime = {mime}: {subject}");
            assert!(!m.2.iter().any(|(n, _)| n.ends_with(".tmp")), "{subject}");
        }
        seen.push(memory.len());
        drop(runs);
    }
    assert!(seen.iter().all(|&n| n > 30), "{seen:?}");
}

/// `smime_policy` decides between `new/` and `quarantine/`, and says why;
/// with `mime = no` the facts are still recorded and nothing decrypted is
/// written.
#[test]
#[ignore = "needs root and Dovecot"]
fn policies_route_to_quarantine() {
    let dc = Dovecot::start();
    let cases = [
        "plain",
        "sig-detached",
        "sig-tampered",
        "sig-expired",
        "enc-aes128-cbc",
        "sign-then-encrypt",
        "enc-other",
    ];
    // (policy, mime, what goes to quarantine)
    let runs: [(&str, &str, &[&str]); 4] = [
        ("accept", "yes", &["enc-other"]),
        (
            "require-signed",
            "yes",
            &["plain", "enc-aes128-cbc", "enc-other"],
        ),
        (
            "require-valid",
            "yes",
            &[
                "plain",
                "sig-tampered",
                "sig-expired",
                "enc-aes128-cbc",
                "enc-other",
            ],
        ),
        (
            "require-valid",
            "no",
            &[
                "plain",
                "sig-tampered",
                "sig-expired",
                "enc-aes128-cbc",
                "enc-other",
            ],
        ),
    ];
    for (i, (policy, mime, quarantined)) in runs.iter().enumerate() {
        let user = format!("policy{i}");
        dc.add_user(&user, &format!("secret-{user}"));
        let msgs: Vec<Vec<u8>> = cases.iter().map(|c| message(c)).collect();
        dc.deliver_many(&user, &msgs);
        let s = Setup::new(&user);
        let extra = smime_keys(&format!("smime_policy = {policy}\nmime = {mime}\n"));
        s.write_config(&account(&user, &dc, &extra));
        let out = s.run(&["--once"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let got = by_subject(&s.account_spool(&user));
        assert_eq!(got.len(), cases.len());
        for c in cases {
            let g = &got[c];
            let want = if quarantined.contains(&c) {
                "quarantine"
            } else {
                "new"
            };
            assert_eq!(g.dest, want, "{policy}, mime = {mime}: {c}");
            let why = g.meta["quarantine"].as_str();
            assert_eq!(why.is_some(), want == "quarantine", "{c}: {why:?}");
            if want == "quarantine" && c != "enc-other" {
                assert!(
                    why.unwrap()
                        .starts_with(&format!("smime_policy = {policy}")),
                    "{why:?}"
                );
            }
            if *mime == "no" {
                assert!(!g.dir.join("decrypted.eml").exists() && !g.dir.join("body.txt").exists());
            }
        }
        let m = &got["sign-then-encrypt"].meta["smime"];
        assert_eq!(
            (m["decrypted"].as_bool(), m["signature"].as_str()),
            (Some(true), Some("valid"))
        );
        assert_eq!(got["sig-expired"].meta["smime"]["signature"], "untrusted");
        assert_eq!(dc.count(&user), 0);
    }
    // A panic in the decoder delivers the message raw; under a policy it
    // could not be checked, so it goes to quarantine/, not new/.
    dc.add_user("panicky", "secret-panicky");
    dc.deliver("panicky", &message("sig-detached"));
    let s = Setup::new("panicky");
    s.write_config(&account(
        "panicky",
        &dc,
        &smime_keys("smime_policy = require-signed\n"),
    ));
    let out = Command::new(bin())
        .arg("-c")
        .arg(&s.config)
        .arg("--once")
        .env("POPSPOOL_TEST_PANIC_IN_DECODER", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let q = entries(&s.account_spool("panicky"), "quarantine");
    assert_eq!(q.len(), 1);
    assert!(q[0].meta["quarantine"]
        .as_str()
        .unwrap()
        .contains("could not be checked"));
    assert_eq!(q[0].meta["kind"], "undecodable");
}

/// Killed mid-drain while every message is being quarantined, then polled
/// until the mailbox is empty: each message is in `quarantine/` exactly
/// once (README, "Delivery guarantee").
#[test]
#[ignore = "needs root and Dovecot"]
fn exactly_once_into_quarantine_when_killed() {
    let dc = Dovecot::start();
    dc.add_user("qkill", "secret-qkill");
    // Unsigned: all quarantined by require-signed. More than two batches.
    let msgs = mail::mixed(200, 11);
    dc.deliver_many("qkill", &msgs);
    let s = Setup::new("qkill");
    s.write_config(&account(
        "qkill",
        &dc,
        &smime_keys("smime_policy = require-signed\n"),
    ));
    let spool = s.account_spool("qkill");
    let count = |d: &str| fs::read_dir(spool.join(d)).map_or(0, |r| r.count());
    let mut child = s.spawn_once();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count("quarantine") == 0 && child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "nothing quarantined");
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    child.wait().unwrap();
    let after_kill = count("quarantine");
    assert!(
        after_kill < msgs.len(),
        "killed too late to interrupt anything"
    );
    let mut polls = 0;
    while dc.count("qkill") > 0 || polls == 0 {
        polls += 1;
        assert!(Instant::now() < deadline, "drain did not finish");
        let out = s.run(&["--once"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    eprintln!("{after_kill} quarantined before the kill, {polls} poll(s) after");
    assert_eq!(count("new"), 0);
    assert_eq!(tmp_count(&spool), 0);
    let mut got: Vec<Vec<u8>> = entries(&spool, "quarantine")
        .into_iter()
        .map(|e| e.message)
        .collect();
    let mut want: Vec<Vec<u8>> = msgs
        .iter()
        .map(|m| crate::common::dovecot::stored_form(m))
        .collect();
    got.sort();
    want.sort();
    assert!(
        got == want,
        "each message quarantined exactly once, byte-exact"
    );
}

/// `--check` with each way to give the key: PEM PKCS#8, traditional,
/// encrypted PKCS#8 with its passphrase file, PKCS#12 and a legacy
/// (RC2-40, 3DES) PKCS#12. It names the certificate and its expiry, warns
/// within 30 days of it, and refuses unusable or readable key files.
#[test]
fn check_loads_every_key_format() {
    let p = pki_file;
    let base = "[account k]\nhost = localhost\nuser = u\npassword = pw\n";
    let run = |extra: &str| {
        let s = Setup::new("smime-check");
        fs::write(&s.config, format!("{base}{extra}")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&s.config, fs::Permissions::from_mode(0o600)).unwrap();
        let out = s.run(&["--check"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let pem = |cert: &str, key: &str, more: &str| {
        format!("smime_cert = {}\nsmime_key = {}\n{more}", p(cert), p(key))
    };
    let pass = |f: &str| format!("smime_pkcs12_password_file = {}\n", p(f));
    for extra in [
        pem("recipient.crt", "recipient.key", ""),
        pem("recipient.crt", "recipient-trad.key", ""),
        pem("recipient.crt", "recipient-enc.key", &pass("key.pass")),
        format!(
            "smime_pkcs12 = {}\n{}",
            p("recipient.p12"),
            pass("p12.pass")
        ),
        format!(
            "smime_pkcs12 = {}\n{}",
            p("recipient-legacy.p12"),
            pass("p12.pass")
        ),
    ] {
        let (code, text) = run(&extra);
        assert_eq!(code, Some(0), "{extra}\n{text}");
        assert!(text.contains("smime    certificate CN=recipient"), "{text}");
        assert!(text.contains("expires"), "{text}");
        assert!(!text.contains("WARNING"), "{text}");
        assert!(
            !text.contains("p12-pass-1") && !text.contains("key-pass-1"),
            "{text}"
        );
    }
    let (code, text) = run(&pem("recipient-soon.crt", "recipient.key", ""));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("WARNING: the S/MIME certificate expires in"),
        "{text}"
    );
    // Also logged, as at start-up and at every reload.
    assert!(
        text.contains("[WARN] the S/MIME certificate expires in"),
        "{text}"
    );

    for (extra, want) in [
        (
            pem("recipient.crt", "recipient-enc.key", ""),
            "is encrypted",
        ),
        (
            pem("recipient.crt", "other.key", ""),
            "does not belong to the certificate",
        ),
        (
            format!(
                "smime_pkcs12 = {}\n{}",
                p("recipient.p12"),
                pass("key.pass")
            ),
            "key 'smime_pkcs12'",
        ),
        (
            format!("smime_cert = {}\n", p("recipient.crt")),
            "needs smime_key",
        ),
        (
            format!("smime_ca_file = {}\n", p("key.pass")),
            "no PEM certificate",
        ),
        ("smime_policy = sometimes\n".to_string(), "must be one of"),
    ] {
        let (code, text) = run(&extra);
        assert_eq!(code, Some(78), "{extra}\n{text}");
        assert!(text.contains(want), "{want}: {text}");
        assert!(
            !text.contains("p12-pass-1") && !text.contains("key-pass-1"),
            "{text}"
        );
    }
    // A key file others may read is refused, as a password file is.
    let open = Setup::new("smime-open-key");
    let key = open.dir.join("open.key");
    fs::copy(pki().join("pki/recipient.key"), &key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let (code, text) = run(&format!(
        "smime_cert = {}\nsmime_key = {}\n",
        p("recipient.crt"),
        key.display()
    ));
    assert_eq!(code, Some(78), "{text}");
    assert!(
        text.contains("holds a private key but is readable by other users"),
        "{text}"
    );
}

/// Keys are loaded at start-up and at SIGHUP: a reload with an unusable
/// key keeps the old configuration, a good one decrypts from the next poll.
#[test]
#[ignore = "needs root and Dovecot"]
fn sighup_reloads_the_keys() {
    let dc = Dovecot::start();
    dc.add_user("hup", "secret-hup");
    dc.deliver("hup", &message("enc-aes128-cbc"));
    let s = Setup::new("hup");
    let config = |extra: &str| account("hup", &dc, &format!("poll_interval = 1h\n{extra}"));
    s.write_config(&config(""));
    let mut child = Command::new(bin())
        .arg("-c")
        .arg(&s.config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let signal = |sig: &str| signal(pid, sig);
    let spool = s.account_spool("hup");
    let wait = |n: usize| {
        let t0 = Instant::now();
        while by_subject(&spool).len() < n {
            assert!(t0.elapsed() < Duration::from_secs(20), "no poll");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait(1);
    // A key that is not the certificate's: refused, the old configuration stays.
    s.write_config(&config(&format!(
        "smime_cert = {}\nsmime_key = {}\n",
        pki_file("recipient.crt"),
        pki_file("other.key")
    )));
    signal("HUP");
    dc.deliver("hup", &message("enc-aes256-gcm"));
    signal("USR1");
    wait(2);
    s.write_config(&config(&smime_keys("")));
    signal("HUP");
    dc.deliver("hup", &message("enc-des3"));
    signal("USR1");
    wait(3);
    signal("TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(log.contains("does not belong to the certificate"), "{log}");
    assert!(log.contains("keeping the previous configuration"), "{log}");
    let got = by_subject(&spool);
    for (name, dest) in [
        ("enc-aes128-cbc", "quarantine"),
        ("enc-aes256-gcm", "quarantine"),
        ("enc-des3", "new"),
    ] {
        assert_eq!(got[name].dest, dest, "{name}: {}", got[name].meta["smime"]);
    }
    assert!(got["enc-aes128-cbc"].meta["smime"]["error"]
        .as_str()
        .unwrap()
        .contains("no smime_cert"));
    assert!(got["enc-des3"].dir.join("decrypted.eml").exists());
}

/// Peak RSS allowed for an encrypted or signed message of `bytes`, in
/// KiB: its size and 14 MiB, which is README's 64 MiB at 50 MiB. What is
/// held is the envelope's or signature's DER, three quarters of the message
/// (README, "S/MIME", Memory: 48 MiB at 50 MiB); holding the message as
/// well, as popspool once did, needs about twice the size and 9 MiB (96 MiB
/// at 50 MiB, 47 MiB at 19), and with `mime = no` 3.4 times (180 MiB).
fn smime_rss_limit_kib(bytes: u64) -> u64 {
    (bytes + (14 << 20)) >> 10
}

/// The attachment of the big messages, in MiB: 10 (19 MiB messages) keeps
/// the suite quick; 27 (`SMIME_BIG_ATTACHMENT_MIB=27`, or
/// `POPSPOOL_MEMORY_FULL` as tests/bench/memory.sh sets) makes the
/// README's 50 MiB messages.
fn big_attachment_mib() -> u64 {
    if std::env::var_os(crate::memory::FULL_ENV).is_some() {
        return 27;
    }
    std::env::var("SMIME_BIG_ATTACHMENT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// Big encrypted, opaque signed and detached signed messages (an inner
/// message with one big attachment) through Dovecot and the binary, each
/// alone in a `popspool --once` under GNU time: decrypted into
/// `decrypted.eml`, verified and their attachment decoded with `mime =
/// yes`, their `smime` facts recorded and nothing decrypted written with
/// `mime = no`; no temporary file is left, and peak RSS stays within the
/// bound.
#[test]
#[ignore = "needs root and Dovecot"]
fn big_encrypted_message_in_bounded_memory() {
    let s = Setup::new("smime-big");
    // Made by the shell and the openssl CLI: this test's debug build would
    // spend seconds on it.
    let script = r#"set -euo pipefail
        head -c $(($2 << 20)) /dev/urandom >big.bin
        { printf 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
          printf 'Content-Type: text/plain\r\n\r\nbig\r\n--b\r\n'
          printf 'Content-Type: application/octet-stream; name="big.bin"\r\n'
          printf 'Content-Transfer-Encoding: base64\r\n\r\n'
          base64 -w 76 big.bin | sed 's/$/\r/'
          printf -- '--b--\r\n'; } >inner.eml
        export OPENSSL_CONF=/dev/null
        openssl cms -encrypt -binary -aes-256-cbc -subject big -in inner.eml "$1" >big.eml
        openssl cms -sign -nodetach -binary -signer "$3" -inkey "$4" -subject big-opaque \
            -in inner.eml >big-opaque.eml
        openssl cms -sign -binary -signer "$3" -inkey "$4" -subject big-detached \
            -in inner.eml >big-detached.eml"#;
    let made = Command::new("bash")
        .args(["-c", script, "bash", &pki_file("recipient.crt")])
        .arg(big_attachment_mib().to_string())
        .args([pki_file("signer.crt"), pki_file("signer.key")])
        .current_dir(&s.dir)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let dc = Dovecot::start();
    let same = |a: &Path, b: &str| fs::read(a).unwrap() == fs::read(s.dir.join(b)).unwrap();
    let mut over = Vec::new();
    for name in ["big", "big-opaque", "big-detached"] {
        let big = fs::read(s.dir.join(format!("{name}.eml"))).unwrap();
        let size = big.len() as u64;
        for mime in ["yes", "no"] {
            let user = format!("{name}-{mime}");
            dc.add_user(&user, &format!("secret-{user}"));
            dc.deliver(&user, &big);
            let run = Setup::new(&format!("smime-{user}"));
            run.write_config(&account(&user, &dc, &smime_keys(&format!("mime = {mime}"))));
            let (code, err, peak) = once_measured(&run);
            assert_eq!(code, Some(0), "{err}");
            eprintln!(
                "{name}, mime = {mime}: {:.1} MiB message, peak RSS {:.1} MiB",
                size as f64 / f64::from(1 << 20),
                peak as f64 / 1024.0
            );
            if peak >= smime_rss_limit_kib(size) {
                over.push(format!("{user}: peak RSS {peak} KiB"));
            }
            let got = by_subject(&run.account_spool(&user));
            let g = &got[name];
            assert_eq!(g.dest, "new", "{user}");
            let files: Vec<String> = fs::read_dir(&g.dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                !files.iter().any(|f| f.ends_with(".tmp")),
                "{user}: {files:?}"
            );
            let smime = &g.meta["smime"];
            if name == "big" {
                assert_eq!(smime["decrypted"], true, "{user}");
                assert_eq!(smime["encrypted"], true, "{user}");
            } else {
                assert_eq!(smime["signers"][0]["email"], "sender@example.org");
                assert_eq!(smime["signature"], "untrusted", "no intermediate");
            }
            let decrypted = g.dir.join("decrypted.eml");
            if mime == "yes" {
                assert!(
                    same(&g.dir.join("attachments/big.bin"), "big.bin"),
                    "{user}"
                );
                assert_eq!(name == "big", decrypted.exists(), "{user}");
                if name == "big" {
                    assert!(same(&decrypted, "inner.eml"));
                }
            } else {
                assert!(!decrypted.exists(), "{user}");
                assert!(!g.dir.join("attachments").exists(), "{user}");
            }
        }
    }
    assert!(over.is_empty(), "over the bound: {over:?}");
}
