//! The same end-to-end scenarios against both real servers of the suite,
//! Dovecot and GNU Mailutils pop3d (README, "Development"): a byte-exact
//! drain over POP3S and STLS, exactly-once delivery when popspool is killed
//! or its connection cut mid-drain, `delete = no`, and logging in. Each
//! scenario is one generic function; `on_both_servers!` makes a test of it
//! per server (`e2e_servers::dovecot::<name>`, `e2e_servers::mailutils::<name>`).
//! What only Mailutils does (its APOP timestamp without APOP secrets) has
//! tests of its own below.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::dovecot::{stored_form, Dovecot};
use crate::common::mail;
use crate::common::mailutils::Mailutils;
use crate::common::popspool::{entries, sorted, stderr, tmp_count, Setup};
use crate::common::proxy::Proxy;
use crate::common::server::TestServer;

/// How long a scenario keeps polling after a fault until the mailbox is
/// drained. Mailutils locks a mailbox for the session: until the session of
/// a killed popspool has noticed and ended, the next login gets `[IN-USE]`
/// (exit 75, temporary), so a few polls may be needed.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

macro_rules! on_both_servers {
    ($($scenario:ident),* $(,)?) => {
        mod dovecot {
            use super::*;
            $(
                #[test]
                #[ignore = "needs root and Dovecot"]
                fn $scenario() {
                    super::$scenario(&Dovecot::start());
                }
            )*
        }
        mod mailutils {
            use super::*;
            $(
                #[test]
                #[ignore = "needs root and Mailutils"]
                fn $scenario() {
                    super::$scenario(&Mailutils::start());
                }
            )*
        }
    };
}

on_both_servers!(
    drains_byte_exact_over_pop3s_and_stls,
    exactly_once_when_killed_or_cut_mid_drain,
    delete_no_leaves_mail_and_never_delivers_twice,
    user_and_auto_log_in_over_tls,
    wrong_password_fails_clearly_and_changes_nothing,
);

/// `mode` is popspool's `tls`: `implicit` (the POP3S port) or `starttls`.
fn account<S: TestServer>(srv: &S, name: &str, mode: &str, login: &str, extra: &str) -> String {
    let port = match mode {
        "implicit" => srv.pop3s_port(),
        _ => srv.pop3_port(),
    };
    account_at(srv, name, port, mode, login, extra)
}

/// An account at `port` (the server's, or a proxy's in front of it);
/// `password = secret-<name>`.
fn account_at<S: TestServer>(
    srv: &S,
    name: &str,
    port: u16,
    mode: &str,
    login: &str,
    extra: &str,
) -> String {
    format!(
        "[account {name}]\nhost = localhost\nport = {port}\ntls = {mode}\nca_file = {}\n\
         user = {login}\npassword = secret-{name}\ntimeout = 10s\n{extra}\n",
        srv.ca_file().display()
    )
}

/// A user named like its account, with `secret-<name>` as password.
fn add<S: TestServer>(srv: &S, name: &str) -> String {
    srv.add_mailbox(name, &format!("secret-{name}"))
}

/// Messages that have tripped up POP3 stacks: 8-bit text and bytes that are
/// no UTF-8, control characters, a 12,000-byte line, lines that need
/// dot-stuffing (a lone `.` among them), no final newline.
fn awkward_messages() -> Vec<Vec<u8>> {
    let mut eight_bit = mail::simple(1, "8-bit", "Grüße aus Köln — €100\n");
    eight_bit.extend_from_slice(b"not UTF-8: \xff\xfe\x80\xc3 controls: \x01\x02\x1b\x7f\t.\n");
    vec![
        eight_bit,
        mail::simple(2, "long line", &format!("{}\nafter\n", "x".repeat(12_000))),
        mail::simple(3, "dots", ".\n..\n.leading dot\n. \n...\nmiddle . dot\n.\n"),
        mail::simple(4, "no final newline", "last line without newline"),
    ]
}

/// Every entry of `<spool>/new` is one of `sent`, byte-exact as the server
/// stored it, and each of `sent` is there exactly once.
fn assert_exactly_once<S: TestServer>(srv: &S, spool: &Path, sent: &[Vec<u8>]) {
    let got: Vec<Vec<u8>> = entries(spool, "new")
        .iter()
        .map(|e| {
            let uidl = e.meta["uidl"].as_str().expect("meta.json has the UIDL");
            srv.as_delivered(&e.message, uidl)
        })
        .collect();
    assert_eq!(got.len(), sent.len(), "every message exactly once");
    let want = sorted(sent.iter().map(|m| stored_form(m)).collect());
    assert!(sorted(got) == want, "byte-exact");
    assert_eq!(tmp_count(spool), 0, "nothing stray in tmp/");
    assert!(entries(spool, "quarantine").is_empty());
}

/// Over POP3S and over STLS (`auth = auto`): every message arrives
/// byte-exact, the server is emptied, and a second poll adds nothing.
fn drains_byte_exact_over_pop3s_and_stls<S: TestServer>(srv: &S) {
    for mode in ["implicit", "starttls"] {
        let name = format!("drain{}", &mode[..5]);
        let login = add(srv, &name);
        let mut msgs = awkward_messages();
        msgs.extend(mail::mixed(60, 11));
        srv.deliver_many(&name, &msgs);
        let s = Setup::new(&name);
        s.write_config(&account(srv, &name, mode, &login, ""));
        let out = s.run(&["--once", "--log-level", "trace"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{mode}: {err}");
        assert!(
            !err.contains(&format!("secret-{name}")),
            "password in the log"
        );
        if mode == "starttls" {
            assert!(err.contains("C: STLS"), "{err}");
        }
        let spool = s.account_spool(&name);
        assert_exactly_once(srv, &spool, &msgs);
        assert_eq!(srv.count(&name), 0, "{mode}: server emptied");
        let out = s.run(&["--once"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            entries(&spool, "new").len(),
            msgs.len(),
            "second poll adds nothing"
        );
    }
}

/// popspool killed with SIGKILL mid-drain, then its connection cut by a
/// proxy mid-drain, then polls until the mailbox is empty: each message is
/// in `new/` exactly once and the server keeps nothing.
fn exactly_once_when_killed_or_cut_mid_drain<S: TestServer>(srv: &S) {
    let login = add(srv, "fault");
    // 200 messages of up to ~300 KB: more than three commit batches, so the
    // kill and the cut land after some were published and deleted.
    let msgs = mail::mixed(200, 5);
    srv.deliver_many("fault", &msgs);
    let proxy = Proxy::start(srv.pop3s_port());
    let s = Setup::new("fault");
    s.write_config(&account_at(
        srv, "fault", proxy.port, "implicit", &login, "",
    ));
    let spool = s.account_spool("fault");

    // SIGKILL as soon as the first batch is in new/: the next is on its way.
    let mut child = s.spawn_once();
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while entries_in(&spool.join("new")) == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing delivered before the kill"
        );
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    let after_kill = entries_in(&spool.join("new"));
    assert!(
        after_kill < msgs.len(),
        "killed too late to interrupt anything: {status:?}"
    );

    // A cut halfway through what is left to download (armed again for each
    // try while the killed session still holds the mailbox).
    let total: usize = msgs.iter().map(Vec::len).sum();
    let cut = (total - total * after_kill / msgs.len()) / 2;
    let out = poll_until_not_in_use(&s, || proxy.cut_next_after(cut as u64));
    assert_eq!(
        out.status.code(),
        Some(75),
        "the cut fails the poll: {}",
        stderr(&out)
    );
    let after_cut = entries_in(&spool.join("new"));

    // Then clean polls until nothing is left.
    let mut polls = 0;
    while srv.count("fault") > 0 || polls == 0 {
        polls += 1;
        assert!(Instant::now() < deadline, "drain did not finish");
        let out = poll_until_not_in_use(&s, || ());
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    eprintln!(
        "{after_kill} delivered before the kill, {after_cut} before the cut, {polls} clean poll(s)"
    );
    assert_exactly_once(srv, &spool, &msgs);
    assert_eq!(srv.count("fault"), 0, "server empty");
}

/// Entries in a spool directory (0 if it does not exist yet).
fn entries_in(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |d| d.count())
}

/// `--once` after `before`, again while the server says the mailbox is
/// still in use by the session of a popspool that was killed or cut off
/// (Mailutils' lock).
fn poll_until_not_in_use(s: &Setup, before: impl Fn()) -> std::process::Output {
    let deadline = Instant::now() + DRAIN_DEADLINE;
    loop {
        before();
        let out = s.run(&["--once"]);
        if out.status.code() != Some(75) || !stderr(&out).contains("[IN-USE]") {
            return out;
        }
        assert!(Instant::now() < deadline, "mailbox stays in use");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `delete = no` leaves every message on the server, and later polls
/// deliver only what is new.
fn delete_no_leaves_mail_and_never_delivers_twice<S: TestServer>(srv: &S) {
    let login = add(srv, "keepall");
    let first: Vec<Vec<u8>> = (0..3).map(|i| mail::simple(i, "kept", "x\n")).collect();
    srv.deliver_many("keepall", &first);
    let s = Setup::new("keepall");
    s.write_config(&account(srv, "keepall", "implicit", &login, "delete = no"));
    for _ in 0..2 {
        let out = s.run(&["--once"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert_eq!(srv.count("keepall"), 3);
        // The second poll recognises every message by UIDL and size and
        // downloads nothing (GNU Mailutils adds its X-UIDL header at the
        // first UIDL, which changes the sizes LIST reports).
        assert!(!err.contains("treating it as a new message"), "{err}");
        assert!(!err.contains("already delivered"), "{err}");
    }
    let spool = s.account_spool("keepall");
    assert_exactly_once(srv, &spool, &first);
    let late = mail::simple(9, "late", "y\n");
    srv.deliver_many("keepall", std::slice::from_ref(&late));
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut all = first;
    all.push(late);
    assert_exactly_once(srv, &spool, &all);
    assert_eq!(srv.count("keepall"), 4);
}

/// `auth = user` and `auth = auto` over POP3S and STLS; `auto` takes the
/// mechanism this server's offer makes best.
fn user_and_auto_log_in_over_tls<S: TestServer>(srv: &S) {
    for mode in ["implicit", "starttls"] {
        for auth in ["user", "auto"] {
            let name = format!("{auth}{}", &mode[..5]);
            let login = add(srv, &name);
            let msg = mail::simple(1, &format!("{auth} over {mode}"), "x\n");
            srv.deliver_many(&name, std::slice::from_ref(&msg));
            let s = Setup::new(&name);
            s.write_config(&account(
                srv,
                &name,
                mode,
                &login,
                &format!("auth = {auth}"),
            ));
            let out = s.run(&["--once", "--log-level", "debug"]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(0), "{auth} over {mode}: {err}");
            let picked = if auth == "auto" {
                srv.auto_mechanism()
            } else {
                auth
            };
            assert!(
                err.contains(&format!("{name}: logging in with {picked}")),
                "{auth} over {mode}: {err}"
            );
            assert_exactly_once(srv, &s.account_spool(&name), &[msg]);
            assert_eq!(srv.count(&name), 0);
        }
    }
}

/// A wrong password: exit 75, the log says the login failed and with what,
/// and neither the mailbox nor the spool changes.
fn wrong_password_fails_clearly_and_changes_nothing<S: TestServer>(srv: &S) {
    let login = add(srv, "wrongpw");
    srv.deliver_many("wrongpw", &[mail::simple(1, "stays", "x\n")]);
    let before = snapshot(&srv.maildir("wrongpw"));
    for auth in ["user", "auto"] {
        let s = Setup::new("wrongpw");
        let cfg = account(
            srv,
            "wrongpw",
            "implicit",
            &login,
            &format!("auth = {auth}"),
        );
        s.write_config(&cfg.replace("password = secret-wrongpw", "password = not-the-password"));
        let out = s.run(&["--once"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(75), "{auth}: {err}");
        let picked = if auth == "auto" {
            srv.auto_mechanism()
        } else {
            auth
        };
        assert!(
            err.contains(&format!("wrongpw: login failed with {picked}")),
            "{auth}: {err}"
        );
        assert!(err.contains("[AUTH]"), "{auth}: {err}");
        assert!(
            !err.contains("not-the-password"),
            "{auth}: password in the log"
        );
        assert!(entries(&s.account_spool("wrongpw"), "new").is_empty());
        assert_eq!(
            snapshot(&srv.maildir("wrongpw")),
            before,
            "{auth}: mailbox changed"
        );
    }
}

/// Every file of a Maildir's `new/` and `cur/`, name and content, sorted.
fn snapshot(md: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = ["new", "cur"]
        .iter()
        .flat_map(|sub| fs::read_dir(md.join(sub)).unwrap())
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Mailutils greets with an APOP timestamp whatever its configuration, but
/// knows no APOP secret here (its APOP database is empty): `auth = apop`
/// is refused with a message that names APOP, and changes nothing.
#[test]
#[ignore = "needs root and Mailutils"]
fn mailutils_refuses_apop_without_an_apop_secret() {
    let mu = Mailutils::start();
    let login = add(&mu, "apop");
    mu.deliver_many("apop", &[mail::simple(1, "stays", "x\n")]);
    let before = snapshot(&mu.maildir("apop"));
    for mode in ["implicit", "starttls"] {
        let s = Setup::new("apop");
        s.write_config(&account(&mu, "apop", mode, &login, "auth = apop"));
        let out = s.run(&["--once"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(75), "{mode}: {err}");
        assert!(
            err.contains("apop: login failed with apop: server refused APOP [AUTH]"),
            "{mode}: {err}"
        );
        assert!(!err.contains("secret-apop"));
        assert!(entries(&s.account_spool("apop"), "new").is_empty());
        assert_eq!(snapshot(&mu.maildir("apop")), before, "{mode}");
    }
    // Why, in the server's words.
    let deadline = Instant::now() + Duration::from_secs(5);
    let why = format!("password for `{login}' not found in the database");
    while !mu.log().contains(&why) {
        assert!(Instant::now() < deadline, "{why:?} not in\n{}", mu.log());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What `--probe` shows of Mailutils: the greeting's APOP timestamp, its
/// CAPA (no SASL), and that `auto` picks USER/PASS inside TLS.
#[test]
#[ignore = "needs root and Mailutils"]
fn mailutils_probe_shows_apop_timestamp_and_no_sasl() {
    let mu = Mailutils::start();
    let login = add(&mu, "probe");
    mu.deliver_many("probe", &[mail::simple(1, "x", "y\n")]);
    for mode in ["implicit", "starttls"] {
        let s = Setup::new("probe");
        s.write_config(&account(&mu, "probe", mode, &login, ""));
        let out = s.run(&["--probe"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{mode}: {text}{}", stderr(&out));
        for needle in [
            "  greeting POP3 Ready <",
            "  capa     TOP | UIDL | RESP-CODES | PIPELINING | AUTH-RESP-CODE | EXPIRENEVER | USER",
            "  offers   apop, user",
            "  auto     would pick user, then apop if it is refused",
            "  login    ok with user over TLS",
            "  mailbox  1 message(s), ",
        ] {
            assert!(text.contains(needle), "{mode}: {needle:?} not in\n{text}");
        }
        assert!(!text.contains("SASL"), "{text}");
    }
    assert_eq!(mu.count("probe"), 1, "probe changes nothing");
}
