//! Pipelined retrieval against a real, private Dovecot, which offers
//! PIPELINING (RFC 2449): RETRs go out in windows, messages larger than the
//! window's byte bound and than what popspool keeps in memory go alone, and
//! every message still arrives byte for byte, once.

use crate::common::dovecot::{stored_form, Dovecot};
use crate::common::mail;
use crate::common::popspool::{entries, sorted, stderr, tmp_count, Setup};

/// A plain message of about `len` bytes in 76-character lines.
fn big(i: usize, len: usize) -> Vec<u8> {
    let line = format!("{}\n", "0123456789abcdef".repeat(5).split_at(75).0);
    mail::simple(i, &format!("big {i}"), &line.repeat(len / line.len()))
}

#[test]
#[ignore = "needs root and Dovecot"]
fn pipelining_server_drains_byte_exact() {
    let dc = Dovecot::start();
    dc.add_user("pipe", "secret-pipe");
    let mut msgs = mail::mixed(400, 21);
    // Over 1 MiB each: past the 1 MiB window bound (they go alone) and past
    // the 1 MiB a message may be kept in memory (read back to decode).
    msgs.insert(10, big(10_000, 1_500_000));
    msgs.insert(200, big(10_001, 3 << 20));
    msgs.push(big(10_002, 1 << 20));
    dc.deliver_many("pipe", &msgs);

    let s = Setup::new("pipe");
    s.write_config(&format!(
        "[account pipe]\nhost = localhost\nport = {}\ntls = implicit\nca_file = {}\nuser = pipe\n\
         password = secret-pipe\n",
        dc.pop3s_port,
        dc.ca_file().display()
    ));
    let out = s.run(&["--once", "--log-level", "trace"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // The server offers PIPELINING, and popspool used it: several RETRs
    // were sent before the first message came back.
    let log = stderr(&out);
    assert!(log.contains("S: PIPELINING"), "Dovecot offers PIPELINING");
    let first_body = log.find("S: <").expect("a message body in the trace");
    let retrs_before = log[..first_body].matches("C: RETR ").count();
    assert!(
        retrs_before > 1,
        "{retrs_before} RETR(s) before the first reply"
    );
    // UIDL and LIST go out together, before UIDL's reply is read.
    let uidl = log.find("C: UIDL").expect("UIDL sent");
    let uidl_reply = uidl + log[uidl..].find("S: ").expect("UIDL answered");
    let list = log.find("C: LIST").expect("LIST sent");
    assert!(
        uidl < list && list < uidl_reply,
        "UIDL and LIST in one write"
    );

    let spool = s.account_spool("pipe");
    let got = entries(&spool, "new");
    assert_eq!(got.len(), msgs.len());
    let want = sorted(msgs.iter().map(|m| stored_form(m)).collect());
    assert!(
        sorted(got.iter().map(|e| e.message.clone()).collect()) == want,
        "byte-exact, once each"
    );
    for e in &got {
        assert_eq!(e.meta["size"], e.message.len() as u64, "{}", e.id);
    }
    // IDs sort in retrieval order, which is the server's order.
    let order: Vec<&Vec<u8>> = got.iter().map(|e| &e.message).collect();
    let served: Vec<Vec<u8>> = msgs.iter().map(|m| stored_form(m)).collect();
    assert!(order.iter().zip(&served).all(|(a, b)| *a == b), "in order");
    assert_eq!(dc.count("pipe"), 0, "server emptied");
    assert_eq!(tmp_count(&spool), 0);
}
