//! MDNs end to end (README, "Acknowledgments (MDN)"): messages fetched from
//! a private Dovecot, acknowledged through the local SMTP sink
//! (`common::smtp_sink`, STARTTLS and AUTH), exactly one MDN per
//! requesting message across retries, SMTP failures, kills and restarts,
//! and none where RFC 8098 says not to send one. One test runs as any
//! user, with the scripted POP3 server and a sink without TLS.

use std::fs;
use std::process::{Child, Command, Stdio};

use crate::common::dovecot::Dovecot;
use crate::common::fake::{FakeServer, Faults};
use crate::common::popspool::{bin, entries, stderr, write_private, Setup};
use crate::common::smtp_sink::{Fault, Received, Sink};

const USER: &str = "receipts";

/// A message asking for an MDN, with a `Return-Path` that matches (as the
/// delivering MTA writes it).
fn request(i: usize, return_path: &str) -> Vec<u8> {
    format!(
        "Return-Path: <{return_path}>\n\
         Received: from mx.example.net by pop.example.com;\n\tSat, 21 Nov 2026 10:00:00 +0000\n\
         From: Partner <partner@example.net>\nTo: orders@example.com\n\
         Subject: =?UTF-8?Q?Bestellung_{i}_f=C3=BCr_M=C3=A4rz?=\n\
         Message-ID: <order-{i}@example.net>\nDate: Sat, 21 Nov 2026 10:00:00 +0000\n\
         Disposition-Notification-To: Partner EDI <partner@example.net>\n\
         MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\nORDER {i}\n"
    )
    .into_bytes()
}

fn plain(i: usize) -> Vec<u8> {
    format!(
        "Return-Path: <partner@example.net>\nFrom: partner@example.net\nTo: orders@example.com\n\
         Subject: no receipt wanted {i}\nMessage-ID: <plain-{i}@example.net>\n\nhello\n"
    )
    .into_bytes()
}

/// A delivery status notification that (wrongly) asks for an MDN.
fn report(i: usize) -> Vec<u8> {
    format!(
        "Return-Path: <partner@example.net>\nFrom: MAILER-DAEMON@example.net\n\
         To: orders@example.com\nSubject: Delivery Status Notification {i}\n\
         Message-ID: <dsn-{i}@example.net>\n\
         Disposition-Notification-To: partner@example.net\nMIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n\
         --b\nContent-Type: text/plain\n\nfailed\n--b\nContent-Type: message/delivery-status\n\n\
         Reporting-MTA: dns; mx.example.net\n\nFinal-Recipient: rfc822; x@example.org\n\
         Action: failed\nStatus: 5.1.1\n--b--\n"
    )
    .into_bytes()
}

struct World {
    dc: Dovecot,
    sink: Sink,
    setup: Setup,
}

/// Dovecot with the mailbox, the sink with the test CA's certificate, and
/// a configuration answering MDNs through it (`extra` appended).
fn world(tag: &str, extra: &str) -> World {
    let dc = Dovecot::start();
    dc.add_user(USER, "secret-pop");
    let sink = Sink::start(
        &dc.dir.join("server.pem"),
        &dc.dir.join("server.key"),
        "mdn-sender",
        "secret-smtp",
    );
    let setup = Setup::new(tag);
    let pw = setup.dir.join("smtp.password");
    write_private(&pw, "secret-smtp\n");
    setup.write_config(&format!(
        "[account {USER}]\nhost = localhost\nport = {}\ntls = implicit\nca_file = {}\n\
         user = {USER}\npassword = secret-pop\ntimeout = 10s\n\
         mdn = auto\nsmtp_host = 127.0.0.1\nsmtp_port = {}\nsmtp_user = mdn-sender\n\
         smtp_password_file = {}\nmdn_from = Order Desk <orders@example.com>\n{extra}\n",
        dc.pop3s_port,
        dc.ca_file().display(),
        sink.port,
        pw.display()
    ));
    World { dc, sink, setup }
}

impl World {
    fn once(&self) -> String {
        self.once_with(&[])
    }

    fn once_with(&self, extra: &[&str]) -> String {
        let args: Vec<&str> = ["--once"].iter().chain(extra).copied().collect();
        let out = self.setup.run(&args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stderr(&out)
    }

    fn status(&self) -> serde_json::Value {
        let p = self.setup.state.join(format!("{USER}.status.json"));
        serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
    }

    fn prom(&self) -> String {
        fs::read_to_string(self.setup.state.join("popspool.prom")).unwrap()
    }

    fn daemon(&self) -> Daemon {
        Daemon(
            Command::new(bin())
                .arg("-c")
                .arg(&self.setup.config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

/// The service, killed (SIGKILL) when dropped, also when a test fails.
struct Daemon(Child);

impl Daemon {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The MDN for `<order-i@example.net>`, checked against RFC 8098 with
/// popspool's own report parser.
fn check_mdn(r: &Received, i: usize, disposition: &str) {
    assert_eq!(r.mail_from, "", "null reverse path (RFC 8098 section 2.1)");
    assert_eq!(r.rcpt, ["partner@example.net"]);
    assert!(r.tls, "STARTTLS");
    assert_eq!(r.user.as_deref(), Some("mdn-sender"));
    let text = String::from_utf8(r.data.clone()).unwrap();
    assert!(
        text.contains("\r\nAuto-Submitted: auto-replied\r\n"),
        "{text}"
    );
    assert!(
        text.starts_with("From: Order Desk <orders@example.com>\r\n"),
        "{text}"
    );
    let d = popspool::mime::headers_only(&r.data);
    assert_eq!(d.kind, popspool::mime::Kind::Report, "{:?}", d.problems);
    let rep = d.report.unwrap();
    assert_eq!(rep["type"], "disposition-notification");
    assert_eq!(
        rep["original_message_id"],
        format!("<order-{i}@example.net>")
    );
    assert_eq!(rep["final_recipient"], "rfc822; orders@example.com");
    assert_eq!(
        rep["disposition"],
        format!("automatic-action/MDN-sent-automatically; {disposition}")
    );
    assert!(rep["reporting_ua"].as_str().unwrap().contains("popspool/"));
    assert!(
        text.contains(
            "Content-Type: text/rfc822-headers\r\n\r\nReturn-Path: <partner@example.net>"
        ),
        "original headers attached"
    );
}

/// Without root: the scripted POP3 server and a sink without TLS or login
/// (`smtp_tls = none`, no `smtp_user`): one MDN per request, once, with the
/// null reverse path, and none for a message without a request.
#[test]
fn one_mdn_through_a_plain_sink_as_any_user() {
    let crlf = |m: Vec<u8>| {
        String::from_utf8(m)
            .unwrap()
            .replace('\n', "\r\n")
            .into_bytes()
    };
    let srv = FakeServer::start(
        vec![crlf(request(1, "partner@example.net")), crlf(plain(2))],
        Faults::default(),
    );
    let sink = Sink::plain();
    let s = Setup::new("mdn-plain");
    s.write_config(&srv.account(
        USER,
        &format!(
            "mdn = auto\nsmtp_host = 127.0.0.1\nsmtp_port = {}\nsmtp_tls = none\n\
             mdn_from = Order Desk <orders@example.com>\n",
            sink.port
        ),
    ));
    for _ in 0..2 {
        let out = s.run(&["--once"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert_eq!(entries(&s.account_spool(USER), "new").len(), 2);
    let got = sink.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].mail_from.as_str(), got[0].tls), ("", false));
    assert_eq!(got[0].rcpt, ["partner@example.net"]);
    let d = popspool::mime::headers_only(&got[0].data);
    let rep = d.report.unwrap();
    assert_eq!(rep["original_message_id"], "<order-1@example.net>");
    assert_eq!(rep["disposition_type"], "processed");
}

/// The acceptance case: a requesting message fetched from Dovecot yields
/// exactly one correct MDN at the sink; plain messages, reports and
/// suspicious requests none; a second run sends nothing more.
#[test]
#[ignore = "needs root and Dovecot"]
fn one_mdn_per_requesting_message_and_none_where_rfc_8098_says_not() {
    let w = world("mdn-one", "");
    w.dc.deliver_many(
        USER,
        &[
            request(1, "partner@example.net"),
            plain(2),
            report(3),
            request(4, "bounces@elsewhere.example"),
        ],
    );
    let log = w.once_with(&["--log-level", "trace"]);
    let got = w.sink.received();
    assert_eq!(got.len(), 1, "{got:?}");
    check_mdn(&got[0], 1, "processed");
    // The SMTP dialogue is in the trace, the password is not.
    assert!(log.contains("C: AUTH PLAIN <redacted>"), "{log}");
    assert!(log.contains("C: MAIL FROM:<>"), "{log}");
    let auth_plain = openssl::base64::encode_block(b"\0mdn-sender\0secret-smtp");
    assert!(
        !log.contains("secret-smtp") && !log.contains(&auth_plain),
        "{log}"
    );
    assert!(
        log.contains("not sending one: the message is itself a report"),
        "{log}"
    );
    assert!(
        log.contains("suspicious request: Return-Path <bounces@elsewhere.example> differs"),
        "{log}"
    );
    assert!(log.contains("MDN for entry"), "{log}");
    let new = entries(&w.setup.account_spool(USER), "new");
    assert_eq!(new.len(), 4);
    // The whole header block, in order, with the encoded Subject's raw form.
    let all = &new[0].meta["headers"]["all"];
    assert_eq!(
        all[0],
        serde_json::json!(["Return-Path", "<partner@example.net>"])
    );
    assert_eq!(
        all[1][1],
        "from mx.example.net by pop.example.com; Sat, 21 Nov 2026 10:00:00 +0000"
    );
    assert_eq!(
        all[4],
        serde_json::json!([
            "Subject",
            "Bestellung 1 für März",
            "=?UTF-8?Q?Bestellung_1_f=C3=BCr_M=C3=A4rz?="
        ])
    );
    let st = w.status();
    assert_eq!(
        (st["mdns_sent"].as_u64(), st["mdns_pending"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(w
        .prom()
        .contains("popspool_mdns_sent_total{account=\"receipts\"} 1\n"));
    // Nothing is owed any more: a second poll sends nothing, nor does one
    // that fetches a new message without a request.
    w.dc.deliver(USER, &plain(5));
    w.once();
    assert_eq!(w.sink.received().len(), 1);
    let outbox = w.setup.state.join(format!("{USER}.mdn"));
    assert_eq!(fs::read_dir(outbox).unwrap().count(), 0, "outbox emptied");
}

#[test]
#[ignore = "needs root and Dovecot"]
fn mdn_never_sends_nothing() {
    let w = world("mdn-never", "");
    let cfg = fs::read_to_string(&w.setup.config).unwrap();
    write_private(&w.setup.config, cfg.replace("mdn = auto", "mdn = never"));
    w.dc.deliver(USER, &request(1, "partner@example.net"));
    w.once();
    assert_eq!(entries(&w.setup.account_spool(USER), "new").len(), 1);
    assert_eq!(w.sink.connections(), 0);
}

/// SMTP failures never hold up retrieval and are retried on later polls;
/// a 5xx is final; an unanswered final dot is never retried.
#[test]
#[ignore = "needs root and Dovecot"]
fn smtp_failures_are_retried_and_never_double_an_mdn() {
    let w = world("mdn-retry", "");
    w.sink.set_fault(Fault::TempRcpt);
    w.dc.deliver(USER, &request(1, "partner@example.net"));
    let log = w.once();
    assert!(log.contains("451 4.3.0 try again later"), "{log}");
    assert_eq!(
        entries(&w.setup.account_spool(USER), "new").len(),
        1,
        "retrieval went on"
    );
    assert_eq!(w.dc.count(USER), 0);
    assert!(w.sink.received().is_empty());
    let st = w.status();
    assert_eq!(st["mdns_pending"], 1);
    assert!(st["mdn_last_error"].as_str().unwrap().contains("451"));
    assert!(w
        .prom()
        .contains("popspool_mdns_pending{account=\"receipts\"} 1\n"));
    // The server recovers: the next --once sends it, once.
    w.sink.set_fault(Fault::None);
    w.once();
    w.once();
    let got = w.sink.received();
    assert_eq!(got.len(), 1);
    check_mdn(&got[0], 1, "processed");
    assert_eq!(w.status()["mdns_pending"], 0);
    assert!(w.status()["mdn_last_error"].is_null());

    // Refused for good: never retried, counted as failed.
    w.sink.set_fault(Fault::PermRcpt);
    w.dc.deliver(USER, &request(2, "partner@example.net"));
    w.once();
    w.sink.set_fault(Fault::None);
    w.once();
    assert_eq!(w.sink.received().len(), 1);
    assert_eq!(w.status()["mdns_failed"], 1);

    // The connection drops after the final dot: the sink has it, popspool
    // cannot know, and never sends it again (at most once).
    w.sink.set_fault(Fault::DropAfterDot);
    w.dc.deliver(USER, &request(3, "partner@example.net"));
    let log = w.once();
    assert!(log.contains("may or may not have been sent"), "{log}");
    w.sink.set_fault(Fault::None);
    w.once();
    let got = w.sink.received();
    assert_eq!(got.len(), 2, "{got:?}");
    check_mdn(&got[1], 3, "processed");
    assert_eq!(w.status()["mdns_failed"], 2);
}

/// Killed at either side of the final dot, a restart never sends an MDN
/// twice: killed while the server has not seen the dot, it is sent once
/// after the restart; killed after the dot, it is not sent again.
#[test]
#[ignore = "needs root and Dovecot"]
fn a_kill_and_a_restart_never_send_two() {
    let w = world("mdn-kill", "poll_interval = 1h\n");
    // Before the dot: the sink hangs at RCPT.
    w.sink.set_fault(Fault::HangAtRcpt);
    w.dc.deliver(USER, &request(1, "partner@example.net"));
    let mut daemon = w.daemon();
    w.sink.wait("RCPT", |s| s.rcpt_seen() >= 1);
    daemon.kill();
    assert!(w.sink.received().is_empty());
    w.sink.set_fault(Fault::None);
    w.once();
    w.once();
    let got = w.sink.received();
    assert_eq!(got.len(), 1, "sent once after the restart");
    check_mdn(&got[0], 1, "processed");

    // After the dot: the sink has the message and stays silent.
    w.sink.set_fault(Fault::HangAfterDot);
    w.dc.deliver(USER, &request(2, "partner@example.net"));
    let mut daemon = w.daemon();
    w.sink.wait("the second MDN", |s| s.received().len() >= 2);
    daemon.kill();
    w.sink.set_fault(Fault::None);
    let log = w.once();
    assert!(log.contains("may or may not have been sent"), "{log}");
    w.once();
    let got = w.sink.received();
    assert_eq!(got.len(), 2, "never a second copy: {got:?}");
    check_mdn(&got[1], 2, "processed");
    assert_eq!(entries(&w.setup.account_spool(USER), "new").len(), 2);
}

/// `--check` and `--probe` report the SMTP side without a secret:
/// what the server offers and whether the login works.
#[test]
#[ignore = "needs root and Dovecot"]
fn check_and_probe_report_the_smtp_side() {
    let w = world("mdn-probe", "");
    let out = w.setup.run(&["--check"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for want in [
        "  mdn      auto, from Order Desk <orders@example.com>\n",
        &format!("  smtp     127.0.0.1:{} tls=starttls\n", w.sink.port),
        "  smtp secret ok\n",
        "  smtp tls ok\n",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    let out = w.setup.run(&["--probe"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for want in [
        "  smtp greeting 220 sink.test ESMTP\n",
        "  smtp ehlo AUTH PLAIN LOGIN | 8BITMIME\n",
        "  smtp login ok with plain\n",
        "  smtp tls TLSv1.3",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    assert!(!text.contains("secret-smtp") && !stderr(&out).contains("secret-smtp"));
    assert!(w.sink.received().is_empty(), "a probe sends nothing");
    // A wrong SMTP password: the probe says so and exits 75.
    write_private(&w.setup.dir.join("smtp.password"), "wrong\n");
    let out = w.setup.run(&["--probe"]);
    assert_eq!(out.status.code(), Some(75));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("  smtp login FAILED\n"), "{text}");
    assert!(text.contains("535 5.7.8 bad credentials"), "{text}");
}

/// The service backs off after an SMTP failure (1 minute at first) while
/// retrieval goes on at every poll.
#[test]
#[ignore = "needs root and Dovecot"]
fn the_service_backs_off_smtp_but_not_retrieval() {
    let w = world("mdn-backoff", "poll_interval = 1s\n");
    w.sink.set_fault(Fault::TempRcpt);
    w.dc.deliver(USER, &request(1, "partner@example.net"));
    let mut daemon = w.daemon();
    w.sink.wait("the first attempt", |s| s.rcpt_seen() >= 1);
    let spool = w.setup.account_spool(USER);
    w.dc.deliver(USER, &plain(2));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while entries(&spool, "new").len() < 2 {
        assert!(std::time::Instant::now() < deadline, "retrieval stopped");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Several polls later: still one SMTP attempt.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!((w.sink.connections(), w.sink.rcpt_seen()), (1, 1));
    daemon.kill();
    assert_eq!(w.status()["mdns_pending"], 1);
}

/// `smtp_tls = starttls` (the default) against a server without STARTTLS:
/// nothing is sent in clear, `--probe` says why and exits 75.
#[test]
fn starttls_is_required_when_configured() {
    let srv = FakeServer::start(vec![], Faults::default());
    let sink = Sink::plain();
    let s = Setup::new("mdn-starttls");
    s.write_config(&srv.account(
        USER,
        &format!(
            "mdn = auto\nsmtp_host = 127.0.0.1\nsmtp_port = {}\n\
             mdn_from = orders@example.com\n",
            sink.port
        ),
    ));
    let out = s.run(&["--probe"]);
    assert_eq!(out.status.code(), Some(75));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("smtp_tls = starttls but the SMTP server does not offer STARTTLS"),
        "{text}"
    );
    assert!(sink.received().is_empty());
}
