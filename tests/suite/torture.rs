//! Exactly-once under fire: drain a real Dovecot mailbox while killing
//! popspool with SIGKILL at random moments and cutting its connection at
//! random byte offsets, then finish the drain and check that every message
//! is in `new/` exactly once, byte-exact, with nothing left in `tmp/` and
//! nothing on the server.
//!
//! Seeded and bounded. `POPSPOOL_TORTURE_ROUNDS` (default 30) and
//! `POPSPOOL_TORTURE_SEED` (default 1) scale it; `tests/torture.sh` runs a
//! long version.

use std::time::{Duration, Instant};

use crate::common::dovecot::{stored_form, Dovecot};
use crate::common::mail::{self, Rng};
use crate::common::popspool::{entries, sorted, tmp_count, Setup};
use crate::common::proxy::Proxy;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "needs root and Dovecot"]
fn sigkill_and_connection_cuts_never_lose_or_duplicate() {
    let rounds = env_u64("POPSPOOL_TORTURE_ROUNDS", 30);
    let seed = env_u64("POPSPOOL_TORTURE_SEED", 1);
    let count = env_u64("POPSPOOL_TORTURE_MESSAGES", 300) as usize;
    let dc = Dovecot::start();
    dc.add_user("tort", "secret-tort");
    let msgs = mail::mixed(count, seed);
    dc.deliver_many("tort", &msgs);
    let proxy = Proxy::start(dc.pop3s_port);
    let s = Setup::new("torture");
    s.write_config(&format!(
        "[account tort]\nhost = localhost\nport = {}\nca_file = {}\nuser = tort\npassword = secret-tort\ntimeout = 10s\n",
        proxy.port,
        dc.ca_file().display()
    ));
    let spool = s.account_spool("tort");
    let mut rng = Rng::new(seed);
    let (mut kills, mut cuts) = (0, 0);
    let t0 = Instant::now();
    for round in 0..rounds {
        if dc.count("tort") == 0 {
            break;
        }
        let mode = rng.below(3);
        if mode >= 1 {
            // Anywhere from the greeting to deep inside the mailbox.
            proxy.cut_next_after(rng.below(400_000));
            cuts += 1;
        }
        let mut child = s.spawn_once();
        if mode != 1 {
            std::thread::sleep(Duration::from_millis(rng.below(400)));
            let _ = child.kill();
            kills += 1;
        }
        let status = child.wait().unwrap();
        // A run that was not killed either finished or failed cleanly.
        if mode == 1 {
            assert!(
                matches!(status.code(), Some(0) | Some(75)),
                "round {round}: {status:?}"
            );
        }
    }
    let during = entries(&spool, "new").len();
    // Now let it finish without faults.
    let mut clean_runs = 0;
    while dc.count("tort") > 0 || clean_runs == 0 {
        clean_runs += 1;
        assert!(clean_runs <= 3, "drain did not finish");
        let out = s.run(&["--once"]);
        assert_eq!(out.status.code(), Some(0));
    }
    eprintln!(
        "torture: {rounds} rounds, {kills} kills, {cuts} cuts, {during} delivered under faults, \
         {clean_runs} clean runs, {:?}",
        t0.elapsed()
    );
    let got = entries(&spool, "new");
    assert_eq!(got.len(), count, "every message exactly once");
    let want = sorted(msgs.iter().map(|m| stored_form(m)).collect());
    assert!(
        sorted(got.into_iter().map(|e| e.message).collect()) == want,
        "byte-exact"
    );
    assert_eq!(tmp_count(&spool), 0, "nothing stray in tmp/");
    assert!(entries(&spool, "quarantine").is_empty());
    assert_eq!(dc.count("tort"), 0, "server empty");
}
