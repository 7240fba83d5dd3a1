//! Exactly-once under the faults a real server will not produce on demand:
//! every case checks that nothing is lost, nothing doubled, and nothing
//! deleted on the server that was not stored.

mod common;

use std::time::{Duration, Instant};

use common::fake::{FakeServer, Faults};
use common::popspool::{entries, sorted, stderr, tmp_count, Setup};

fn crlf(m: Vec<u8>) -> Vec<u8> {
    String::from_utf8(m)
        .unwrap()
        .replace('\n', "\r\n")
        .into_bytes()
}

fn messages(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            crlf(common::mail::simple(
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

#[test]
fn connection_cut_mid_retr_loses_and_doubles_nothing() {
    let msgs = messages(5);
    let srv = FakeServer::start(
        msgs.clone(),
        Faults {
            cut_retr: Some((0, 3, 60)),
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
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(srv.remaining(), 0);
    assert_exactly_once(&s, "cut", &msgs);
}

#[test]
fn lost_quit_reply_after_commit() {
    let msgs = messages(4);
    let srv = FakeServer::start(
        msgs.clone(),
        Faults {
            quit_commit_no_reply: Some(0),
            ..Faults::default()
        },
    );
    let s = Setup::new("quitok");
    s.write_config(&srv.account("q", ""));
    assert_eq!(s.run(&["--once"]).status.code(), Some(75));
    assert_eq!(srv.remaining(), 0);
    assert_eq!(s.run(&["--once"]).status.code(), Some(0));
    assert_exactly_once(&s, "q", &msgs);
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
    let msgs = messages(4);
    let srv = FakeServer::start(
        msgs.clone(),
        Faults {
            quit_drop: Some(0),
            ..Faults::default()
        },
    );
    let s = Setup::new("quitdrop");
    s.write_config(&srv.account("q", ""));
    assert_eq!(s.run(&["--once"]).status.code(), Some(75));
    assert_eq!(srv.remaining(), 4, "server rolled back");
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(srv.remaining(), 0);
    assert_exactly_once(&s, "q", &msgs);
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
    // delete = no cannot work without UIDL, and says so.
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
            drip: Some(Duration::from_millis(30)),
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
        stderr(&out).contains("timed out") || stderr(&out).contains("timeout"),
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

/// The same faults with a server that offers PIPELINING, so RETRs and DELEs
/// are in flight when the connection breaks or a command is refused.
#[test]
fn pipelined_session_faults_keep_exactly_once() {
    // Cut inside message 3 while later RETRs are already asked for.
    let msgs = messages(8);
    let srv = FakeServer::start(
        msgs.clone(),
        Faults {
            cut_retr: Some((0, 3, 60)),
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

    // Every pipelined DELE refused: nothing deleted, nothing delivered twice.
    let msgs = messages(5);
    let srv = FakeServer::start(
        msgs.clone(),
        Faults {
            dele_err: Some(0),
            pipelining: true,
            ..Faults::default()
        },
    );
    let s = Setup::new("pdele");
    s.write_config(&srv.account("pdele", ""));
    assert_eq!(s.run(&["--once"]).status.code(), Some(75));
    assert_eq!(srv.remaining(), 5);
    assert_eq!(s.run(&["--once"]).status.code(), Some(0));
    assert_eq!(srv.remaining(), 0);
    assert_exactly_once(&s, "pdele", &msgs);

    // QUIT dropped without committing: the deletions happen next time.
    let msgs = messages(6);
    let srv = FakeServer::start(
        msgs.clone(),
        Faults {
            quit_drop: Some(0),
            pipelining: true,
            ..Faults::default()
        },
    );
    let s = Setup::new("pquit");
    s.write_config(&srv.account("pquit", ""));
    assert_eq!(s.run(&["--once"]).status.code(), Some(75));
    assert_eq!(srv.remaining(), 6);
    assert_eq!(s.run(&["--once"]).status.code(), Some(0));
    assert_eq!(srv.remaining(), 0);
    assert_exactly_once(&s, "pquit", &msgs);
}
