//! Exactly-once under the faults a real server will not produce on demand:
//! every case checks that nothing is lost, nothing doubled, and nothing
//! deleted on the server that was not stored.

use std::time::{Duration, Instant};

use crate::common::fake::{CutRetr, Drip, FakeServer, Faults};
use crate::common::mail::crlf;
use crate::common::popspool::{entries, signal, sorted, stderr, tmp_count, Setup};

fn messages(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            crlf(crate::common::mail::simple(
                i,
                &format!("m{i}"),
                &format!("body {i}\n.dot line\n"),
            ))
        })
        .collect()
}

/// Run popspool once, then again with a healthy server state, and check the
/// final spool holds every message exactly once.
fn assert_exactly_once(s: &Setup, name: &str, sent: &[Vec<u8>]) {
    let spool = s.account_spool(name);
    let got = entries(&spool, "new");
    assert_eq!(got.len(), sent.len(), "count");
    assert!(
        sorted(got.into_iter().map(|e| e.message).collect()) == sorted(sent.to_vec()),
        "byte-exact, once each"
    );
    assert_eq!(tmp_count(&spool), 0, "nothing stray in tmp/");
}

/// `n` messages on a server with `faults` on its first connection: the first
/// poll fails (exit 75) with `left` messages still on the server, the second
/// finishes, and every message is in the spool of account `name` once.
/// Returns the setup, for checks of the state directory.
fn a_failed_poll_then_a_good_one(name: &str, n: usize, faults: Faults, left: usize) -> Setup {
    let msgs = messages(n);
    let srv = FakeServer::start(msgs.clone(), faults);
    let s = Setup::new(name);
    s.write_config(&srv.account(name, ""));
    assert_eq!(s.run(&["--once"]).status.code(), Some(75));
    assert_eq!(srv.remaining(), left, "after the failed poll");
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(srv.remaining(), 0);
    assert_exactly_once(&s, name, &msgs);
    s
}

#[test]
fn connection_cut_mid_retr_loses_and_doubles_nothing() {
    let msgs = messages(5);
    let srv = FakeServer::start(
        msgs.clone(),
        Faults {
            cut_retr: Some(CutRetr {
                connection: 0,
                message: 3,
                after_bytes: 60,
            }),
            ..Faults::default()
        },
    );
    let s = Setup::new("cut");
    s.write_config(&srv.account("cut", ""));
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(srv.remaining(), 5, "no QUIT, nothing deleted");
    assert_eq!(
        entries(&s.account_spool("cut"), "new").len(),
        2,
        "the two complete ones are published"
    );
    assert_eq!(tmp_count(&s.account_spool("cut")), 0);
    assert_eq!(
        status(&s, "cut")["messages_delivered"],
        2,
        "a failed poll still counts what it delivered"
    );
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(srv.remaining(), 0);
    assert_exactly_once(&s, "cut", &msgs);
}

#[test]
fn lost_quit_reply_after_commit() {
    // The server committed the deletions: none are left after the failure.
    let faults = Faults {
        quit_commit_no_reply: Some(0),
        ..Faults::default()
    };
    let s = a_failed_poll_then_a_good_one("q", 4, faults, 0);
    let journal = std::fs::read_to_string(s.state.join("q.journal")).unwrap();
    let mut live = std::collections::HashSet::new();
    for l in journal.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        match f[0] {
            "D" => live.insert(f[1]),
            "F" => live.remove(f[1]),
            _ => false,
        };
    }
    assert!(
        live.is_empty(),
        "keys of messages gone from the server are forgotten:\n{journal}"
    );
}

#[test]
fn quit_dropped_without_commit_is_deleted_next_time_not_redelivered() {
    // The server rolls the deletions back: all 4 are still there.
    let faults = Faults {
        quit_drop: Some(0),
        ..Faults::default()
    };
    a_failed_poll_then_a_good_one("q", 4, faults, 4);
}

#[test]
fn server_without_uidl_still_delivers_exactly_once() {
    let msgs = messages(4);
    let srv = FakeServer::start(
        msgs.clone(),
        Faults {
            no_uidl: true,
            quit_drop: Some(0),
            ..Faults::default()
        },
    );
    let s = Setup::new("nouidl");
    s.write_config(&srv.account("n", ""));
    assert_eq!(s.run(&["--once"]).status.code(), Some(75));
    assert_eq!(srv.remaining(), 4);
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("already delivered"));
    assert_eq!(srv.remaining(), 0);
    assert_exactly_once(&s, "n", &msgs);
    for e in entries(&s.account_spool("n"), "new") {
        assert!(e.meta["uidl"].is_null());
    }
}

/// `delete = no` cannot work without UIDL, and says so.
#[test]
fn server_without_uidl_refuses_delete_no() {
    let srv = FakeServer::start(
        messages(1),
        Faults {
            no_uidl: true,
            ..Faults::default()
        },
    );
    let s = Setup::new("nouidl-keep");
    s.write_config(&srv.account("n", "delete = no"));
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(75));
    assert!(stderr(&out).contains("does not support UIDL"));
    assert_eq!(srv.remaining(), 1);
}

#[test]
fn repeated_uidls_do_not_hide_messages() {
    let msgs = messages(3);
    let srv = FakeServer::start(
        msgs.clone(),
        Faults {
            same_uidl: true,
            pipelining: true,
            ..Faults::default()
        },
    );
    let s = Setup::new("sameuidl");
    s.write_config(&srv.account("s", ""));
    assert_eq!(s.run(&["--once"]).status.code(), Some(0));
    assert_eq!(srv.remaining(), 0);
    assert_exactly_once(&s, "s", &msgs);
}

#[test]
fn dele_refused_keeps_mail_and_retries_deletion_only() {
    let msgs = messages(3);
    let srv = FakeServer::start(
        msgs.clone(),
        Faults {
            dele_err: Some(0),
            ..Faults::default()
        },
    );
    let s = Setup::new("deleerr");
    s.write_config(&srv.account("d", ""));
    assert_eq!(s.run(&["--once"]).status.code(), Some(75));
    assert_eq!(srv.remaining(), 3);
    assert_eq!(entries(&s.account_spool("d"), "new").len(), 3);
    assert_eq!(s.run(&["--once"]).status.code(), Some(0));
    assert_eq!(srv.remaining(), 0);
    assert_exactly_once(&s, "d", &msgs);
}

#[test]
fn dripping_server_hits_the_response_deadline() {
    let msgs = messages(1);
    let srv = FakeServer::start(
        msgs,
        Faults {
            drip: Some(Drip {
                delay: Duration::from_millis(30),
                chunk: 1,
                connections_before: usize::MAX,
            }),
            ..Faults::default()
        },
    );
    let s = Setup::new("drip");
    s.write_config(&srv.account("d", "timeout = 1s"));
    let t0 = Instant::now();
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(75));
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    assert!(
        stderr(&out).contains("stalled: the reply to RETR brought"),
        "{}",
        stderr(&out)
    );
    assert_eq!(srv.remaining(), 1);
    assert_eq!(tmp_count(&s.account_spool("d")), 0);
}

#[test]
fn endless_message_is_bounded() {
    let msgs = messages(1);
    let srv = FakeServer::start(
        msgs,
        Faults {
            endless_retr: true,
            ..Faults::default()
        },
    );
    let s = Setup::new("endless");
    s.write_config(&srv.account("e", "timeout = 20s"));
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(srv.remaining(), 1);
    assert_eq!(tmp_count(&s.account_spool("e")), 0);
    assert!(entries(&s.account_spool("e"), "new").is_empty());
}

/// The response code of a refused PASS (RFC 2449, RFC 3206) tells a
/// temporary refusal from one that needs a person: `reply` is logged as `word`.
fn pass_refusal_is_reported_as(reply: &str, word: &str) {
    let srv = FakeServer::start(
        messages(2),
        Faults {
            pass_reply: Some(reply.into()),
            ..Faults::default()
        },
    );
    let s = Setup::new("codes");
    s.write_config(&srv.account("c", ""));
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(75));
    assert!(stderr(&out).contains(word), "{reply}: {}", stderr(&out));
    assert_eq!(srv.remaining(), 2);
}

const TEMPORARY: &str = "temporary, will retry";

#[test]
fn response_code_in_use_is_temporary() {
    pass_refusal_is_reported_as("-ERR [IN-USE] mailbox locked by another session", TEMPORARY);
}

#[test]
fn response_code_login_delay_is_temporary() {
    pass_refusal_is_reported_as("-ERR [LOGIN-DELAY] wait 5 minutes", TEMPORARY);
}

#[test]
fn response_code_sys_temp_is_temporary() {
    pass_refusal_is_reported_as("-ERR [SYS/TEMP] try later", TEMPORARY);
}

#[test]
fn response_code_auth_needs_a_person() {
    pass_refusal_is_reported_as("-ERR [AUTH] invalid credentials", "needs a person");
}

fn status(s: &Setup, name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(s.state.join(format!("{name}.status.json"))).unwrap())
        .unwrap()
}

#[test]
fn error_threshold_marks_the_account_failed_and_success_resets_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Setup::new("threshold");
    let acct = |port: u16| {
        format!(
            "[account t]\nhost = 127.0.0.1\nport = {port}\ntls = none\nallow_plaintext = yes\nauth = user\n\
             user = u\npassword = pw\nerror_threshold = 2\n"
        )
    };
    s.write_config(&acct(port));
    for i in 1..=3 {
        let out = s.run(&["--once"]);
        assert_eq!(out.status.code(), Some(75));
        let st = status(&s, "t");
        assert_eq!(st["consecutive_failures"], i);
        assert_eq!(st["failed"], i >= 2);
        assert_eq!(
            stderr(&out).contains("account failed"),
            i == 2,
            "reported once, when it happens"
        );
    }
    let prom = std::fs::read_to_string(s.state.join("popspool.prom")).unwrap();
    assert!(
        prom.contains("popspool_account_failed{account=\"t\"} 1"),
        "{prom}"
    );
    let srv = FakeServer::start(messages(1), Faults::default());
    s.write_config(&acct(srv.port));
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("recovered"));
    let st = status(&s, "t");
    assert_eq!(st["consecutive_failures"], 0);
    assert_eq!(st["failed"], false);
    assert_eq!(st["messages_delivered"], 1);
}

#[test]
fn delete_after_a_duration() {
    let msgs = messages(3);
    let srv = FakeServer::start(msgs.clone(), Faults::default());
    let s = Setup::new("deldur");
    s.write_config(&srv.account("d", "delete = 2s"));
    assert_eq!(s.run(&["--once"]).status.code(), Some(0));
    assert_eq!(srv.remaining(), 3, "kept after delivery");
    assert_eq!(s.run(&["--once"]).status.code(), Some(0));
    assert_eq!(srv.remaining(), 3, "still within the duration");
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(s.run(&["--once"]).status.code(), Some(0));
    assert_eq!(srv.remaining(), 0, "deleted once the duration passed");
    assert_exactly_once(&s, "d", &msgs);
}

#[test]
fn sigterm_during_a_large_download_exits_promptly_and_loses_nothing() {
    let big = {
        let mut m = crlf(crate::common::mail::simple(1, "big", ""));
        let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
        while m.len() < 50 << 20 {
            m.extend_from_slice(line);
        }
        m
    };
    // 256 KiB every 50 ms: the 50 MiB message would take about 10 s.
    let faults = Faults {
        drip: Some(Drip {
            delay: Duration::from_millis(50),
            chunk: 256 << 10,
            connections_before: 1,
        }),
        ..Faults::default()
    };
    let srv = FakeServer::start(vec![big.clone()], faults);
    let s = Setup::new("sigterm");
    s.write_config(&srv.account("b", "timeout = 30s"));
    let mut child = std::process::Command::new(crate::common::popspool::bin())
        .arg("-c")
        .arg(&s.config)
        .arg("--once")
        .spawn()
        .unwrap();
    let spool = s.account_spool("b");
    let t0 = Instant::now();
    loop {
        let size = std::fs::read_dir(spool.join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::metadata(e.path().join("message.eml")).ok())
            .map(|m| m.len())
            .sum::<u64>();
        if size > 1 << 20 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "download never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(child.id(), "TERM");
    let t1 = Instant::now();
    let status = child.wait().unwrap();
    assert!(t1.elapsed() < Duration::from_secs(2), "{:?}", t1.elapsed());
    assert_eq!(status.code(), Some(0));
    assert_eq!(srv.remaining(), 1);
    assert!(entries(&spool, "new").is_empty());
    // The next poll (no drip on later connections) delivers it, once.
    assert_eq!(s.run(&["--once"]).status.code(), Some(0));
    assert_eq!(srv.remaining(), 0);
    assert_exactly_once(&s, "b", &[big]);
}

#[test]
fn poison_message_is_delivered_raw_and_is_no_failure() {
    let garbage: Vec<u8> = (0..4000u32)
        .map(|i| (i * 7919 % 251) as u8)
        .filter(|b| *b != b'\n' && *b != b'\r')
        .collect();
    let mut poison = garbage.clone();
    poison.extend_from_slice(b"\r\n");
    let msgs = vec![messages(1).remove(0), poison];
    let srv = FakeServer::start(msgs.clone(), Faults::default());
    let s = Setup::new("poison");
    s.write_config(&srv.account("p", ""));
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_exactly_once(&s, "p", &msgs);
    let got = entries(&s.account_spool("p"), "new");
    let raw = got.iter().find(|e| e.message == msgs[1]).unwrap();
    assert_eq!(raw.meta["kind"], "undecodable");
    assert!(!raw.meta["problems"].as_array().unwrap().is_empty());
    assert_eq!(status(&s, "p")["consecutive_failures"], 0);
    assert_eq!(srv.remaining(), 0);
}

#[test]
fn a_listing_of_millions_is_refused_with_bounded_memory() {
    let srv = FakeServer::start(
        messages(1),
        Faults {
            huge_listing: Some(1_100_000),
            ..Faults::default()
        },
    );
    let s = Setup::new("hugelist");
    s.write_config(&srv.account("h", "timeout = 30s"));
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(srv.remaining(), 1);
    assert!(entries(&s.account_spool("h"), "new").is_empty());
}

/// The first message twice, under two UIDLs, in one batch: the copy is
/// journaled with its twin and deleted with it, so that no later poll takes
/// it for new mail once the twin's key is forgotten. Two polls of account
/// `name` (with `delete`), leaving `left` messages on the server.
fn identical_copies_in_one_batch(name: &str, delete: &str, left: usize) {
    let msgs = messages(3);
    let mailbox = vec![
        msgs[0].clone(),
        msgs[1].clone(),
        msgs[0].clone(),
        msgs[2].clone(),
    ];
    let srv = FakeServer::start(mailbox, Faults::default());
    let s = Setup::new(&format!("copies-{name}"));
    s.write_config(&srv.account(name, delete));
    for poll in 0..2 {
        let out = s.run(&["--once"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            stderr(&out).contains("already delivered"),
            poll == 0,
            "{}",
            stderr(&out)
        );
        assert_eq!(srv.remaining(), left, "{name}, poll {poll}");
        assert_exactly_once(&s, name, &msgs);
    }
}

#[test]
fn identical_copies_in_one_batch_are_delivered_once() {
    identical_copies_in_one_batch("c", "", 0);
}

#[test]
fn identical_copies_in_one_batch_are_delivered_once_with_delete_no() {
    identical_copies_in_one_batch("k", "delete = no", 4);
}

#[test]
fn renumbered_uidls_are_not_delivered_again() {
    let msgs = messages(3);
    let srv = FakeServer::start(msgs.clone(), Faults::default());
    let s = Setup::new("renumber");
    s.write_config(&srv.account("r", "delete = no"));
    assert_eq!(s.run(&["--once"]).status.code(), Some(0));
    srv.renumber("migrated");
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("already delivered"));
    assert_exactly_once(&s, "r", &msgs);
    // and the new UIDLs are known now: no download at all the next time
    let out = s.run(&["--once", "--log-level", "debug"]);
    assert!(!stderr(&out).contains("already delivered"));
    assert_eq!(srv.remaining(), 3);
}

#[test]
fn a_reused_uidl_with_new_content_is_delivered() {
    let mut msgs = messages(3);
    let srv = FakeServer::start(msgs.clone(), Faults::default());
    let s = Setup::new("reuse");
    s.write_config(&srv.account("r", "delete = no"));
    assert_eq!(s.run(&["--once"]).status.code(), Some(0));
    let other = crlf(crate::common::mail::simple(
        99,
        "a different message",
        "with another size\n",
    ));
    srv.replace(1, other.clone());
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("treating it as a new message"));
    msgs.push(other);
    assert_exactly_once(&s, "r", &msgs);
}

/// The consumer example in the README works on a real spool: it is
/// extracted from README.md and run, so the README cannot drift from it.
#[test]
fn readme_python_consumer_takes_every_entry() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```python\n")
        .expect("python example in README")
        + "```python\n".len();
    let code = &readme[start..start + readme[start..].find("```").unwrap()];
    let msgs = messages(3);
    let srv = FakeServer::start(msgs.clone(), Faults::default());
    let s = Setup::new("consumer");
    s.write_config(&srv.account("sales", ""));
    assert_eq!(s.run(&["--once"]).status.code(), Some(0));
    let work = s.dir.join("inbox");
    std::fs::create_dir_all(&work).unwrap();
    let code = code
        .replace(
            "/var/spool/popspool/sales",
            &s.account_spool("sales").display().to_string(),
        )
        .replace("/srv/inbox", &work.display().to_string());
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&code)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(printed.lines().count(), 3, "{printed}");
    assert!(printed.starts_with("m0 "), "retrieval order: {printed}");
    assert!(
        entries(&s.account_spool("sales"), "new").is_empty(),
        "all taken"
    );
    assert_eq!(std::fs::read_dir(&work).unwrap().count(), 3);
}

#[test]
fn starttls_not_offered_sends_no_credentials() {
    let srv = FakeServer::start(messages(1), Faults::default());
    let s = Setup::new("nostls");
    s.write_config(&srv.account("n", "").replace("tls = none", "tls = starttls"));
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(75));
    assert!(
        stderr(&out).contains("does not offer STLS"),
        "{}",
        stderr(&out)
    );
    let cmds = srv.received();
    assert!(
        !cmds
            .iter()
            .any(|c| c.starts_with("USER") || c.starts_with("PASS") || c.starts_with("APOP")),
        "{cmds:?}"
    );
    assert_eq!(srv.remaining(), 1);
}

#[test]
fn a_message_the_server_will_not_send_does_not_block_the_others() {
    let msgs = messages(3);
    let srv = FakeServer::start(
        msgs.clone(),
        Faults {
            retr_err: Some(2),
            ..Faults::default()
        },
    );
    let s = Setup::new("retrerr");
    s.write_config(&srv.account("r", ""));
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("not retrieved"));
    assert_eq!(srv.remaining(), 1, "the refused one stays on the server");
    let got = entries(&s.account_spool("r"), "new");
    assert_eq!(
        sorted(got.into_iter().map(|e| e.message).collect()),
        sorted(vec![msgs[0].clone(), msgs[2].clone()])
    );
}

/// What stays on the server (too large, or refused by RETR) is counted as of
/// the last poll, in the status record and the metrics (README,
/// "Troubleshooting").
#[test]
fn messages_left_on_the_server_are_counted() {
    let mut msgs = messages(4);
    msgs[1] = crlf(crate::common::mail::simple(
        1,
        "big",
        &format!("{}\n", "x".repeat(70)).repeat(60),
    ));
    let srv = FakeServer::start(
        msgs.clone(),
        Faults {
            retr_err: Some(3),
            ..Faults::default()
        },
    );
    let s = Setup::new("leftover");
    s.write_config(&srv.account("left", "max_message_size = 2K"));
    let left = |s: &Setup| {
        let prom = std::fs::read_to_string(s.state.join("popspool.prom")).unwrap();
        assert!(
            prom.contains("# TYPE popspool_messages_left_on_server gauge\n"),
            "{prom}"
        );
        let n = status(s, "left")["messages_left_on_server"].clone();
        let line = format!("popspool_messages_left_on_server{{account=\"left\"}} {n}\n");
        assert!(prom.contains(&line), "{line} not in {prom}");
        n
    };
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(srv.remaining(), 2, "the big one and the refused one");
    assert_eq!(entries(&s.account_spool("left"), "new").len(), 2);
    assert_eq!(left(&s), 2);
    // The refused one is now message 2, which the server sends: only the
    // big one is left, and the count is that of this poll, not a sum.
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(srv.remaining(), 1);
    assert_eq!(left(&s), 1);
}

#[test]
fn two_processes_never_work_one_account() {
    let msgs = messages(2);
    let faults = Faults {
        drip: Some(Drip {
            delay: Duration::from_millis(20),
            chunk: 16,
            connections_before: 1,
        }),
        ..Faults::default()
    };
    let srv = FakeServer::start(msgs.clone(), faults);
    let s = Setup::new("lock");
    s.write_config(&srv.account("l", "timeout = 30s"));
    let first = std::process::Command::new(crate::common::popspool::bin())
        .arg("-c")
        .arg(&s.config)
        .arg("--once")
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while srv.connections() == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(75));
    assert!(
        stderr(&out).contains("another popspool process"),
        "{}",
        stderr(&out)
    );
    assert_eq!(srv.connections(), 1, "the second one did not even connect");
    let status = first.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(0));
    assert_exactly_once(&s, "l", &msgs);
}

// The same faults with a server that offers PIPELINING, so RETRs and DELEs
// are in flight when the connection breaks or a command is refused.

/// Cut inside message 3 while later RETRs are already asked for.
#[test]
fn pipelined_cut_mid_retr_keeps_exactly_once() {
    let msgs = messages(8);
    let srv = FakeServer::start(
        msgs.clone(),
        Faults {
            cut_retr: Some(CutRetr {
                connection: 0,
                message: 3,
                after_bytes: 60,
            }),
            pipelining: true,
            ..Faults::default()
        },
    );
    let s = Setup::new("pcut");
    s.write_config(&srv.account("pcut", ""));
    assert_eq!(s.run(&["--once"]).status.code(), Some(75));
    assert_eq!(srv.remaining(), 8, "no QUIT, nothing deleted");
    let spool = s.account_spool("pcut");
    assert_eq!(entries(&spool, "new").len(), 2, "the complete ones");
    assert_eq!(tmp_count(&spool), 0);
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(srv.remaining(), 0);
    assert_exactly_once(&s, "pcut", &msgs);
}

/// Every pipelined DELE refused: nothing deleted, nothing delivered twice.
#[test]
fn pipelined_dele_refused_keeps_exactly_once() {
    let faults = Faults {
        dele_err: Some(0),
        pipelining: true,
        ..Faults::default()
    };
    a_failed_poll_then_a_good_one("pdele", 5, faults, 5);
}

/// QUIT dropped without committing: the deletions happen next time.
#[test]
fn pipelined_quit_dropped_keeps_exactly_once() {
    let faults = Faults {
        quit_drop: Some(0),
        pipelining: true,
        ..Faults::default()
    };
    a_failed_poll_then_a_good_one("pquit", 6, faults, 6);
}

/// A server that takes the connection and closes it during the TLS
/// handshake (Courier over its per-address connection limit, a restart):
/// a temporary network failure with a hint, not certificate advice.
#[test]
fn a_tls_handshake_cut_by_the_server_is_temporary() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut hello = [0u8; 512];
        let _ = std::io::Read::read(&mut s, &mut hello);
    });
    let s = Setup::new("tlscut");
    s.write_config(&format!(
        "[account cut]\nhost = 127.0.0.1\nport = {port}\ntls = implicit\nuser = u\n\
         password = pw\ntimeout = 5s\n"
    ));
    let out = s.run(&["--once"]);
    server.join().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("was cut off by the server"), "{err}");
    assert!(err.contains("temporary, will retry"), "{err}");
    assert!(
        !err.contains("ca_file") && !err.contains("needs attention"),
        "{err}"
    );
}
