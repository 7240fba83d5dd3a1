//! A full spool file system (ENOSPC) and `min_free_space`, on a small tmpfs.
//! Mounting needs root, so both tests are ignored by a plain `cargo test`;
//! `tests/run.sh` runs them as root. Included without root, a test says it
//! cannot mount and fails, rather than passing without having checked
//! anything.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::dovecot::{stored_form, Dovecot};
use crate::common::mail;
use crate::common::popspool::{entries, sorted, stderr, tmp_count, Setup};

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(
            ok.success(),
            "mounting a tmpfs needs root; run the suite as root (tests/run.sh)"
        );
        Tmpfs(at.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
#[ignore = "needs root (tmpfs mounts) and Dovecot"]
fn full_disk_fails_cleanly_and_the_next_poll_finishes() {
    let dc = Dovecot::start();
    dc.add_user("disk", "secret-disk");
    // 5 messages of ~200 KiB: message.eml and body.txt each, about 2 MiB in all.
    let msgs: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            mail::simple(
                i,
                &format!("big {i}"),
                &format!("{}\n", "z".repeat(200_000)),
            )
        })
        .collect();
    dc.deliver_many("disk", &msgs);
    let s = Setup::new("disk");
    let fs = Tmpfs::mount(&s.spool, "1M");
    s.write_config(&format!(
        "[account disk]\nhost = localhost\nport = {}\nca_file = {}\nuser = disk\npassword = secret-disk\n",
        dc.pop3s_port,
        dc.ca_file().display()
    ));
    let spool = s.account_spool("disk");
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(75));
    assert!(stderr(&out).contains("is full"), "{}", stderr(&out));
    assert_eq!(tmp_count(&spool), 0, "partial entry removed");
    assert_eq!(dc.count("disk"), 5, "nothing deleted on the server");
    let early = entries(&spool, "new").len();
    assert!(early < 5);

    fs.resize("20M");
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = entries(&spool, "new");
    assert!(
        sorted(got.into_iter().map(|e| e.message).collect())
            == sorted(msgs.iter().map(|m| stored_form(m)).collect()),
        "every message exactly once"
    );
    assert_eq!(dc.count("disk"), 0);
}

#[test]
#[ignore = "needs root (tmpfs mounts) and Dovecot"]
fn min_free_space_stops_downloads_and_says_why() {
    let dc = Dovecot::start();
    dc.add_user("low", "secret-low");
    dc.deliver("low", &mail::simple(1, "small", "x\n"));
    let s = Setup::new("lowspace");
    let _fs = Tmpfs::mount(&s.spool, "8M");
    s.write_config(&format!(
        "[account low]\nhost = localhost\nport = {}\nca_file = {}\nuser = low\npassword = secret-low\nmin_free_space = 16M\n",
        dc.pop3s_port,
        dc.ca_file().display()
    ));
    let out = s.run(&["--once"]);
    assert_eq!(out.status.code(), Some(75));
    assert!(
        stderr(&out).contains("below min_free_space"),
        "{}",
        stderr(&out)
    );
    assert!(entries(&s.account_spool("low"), "new").is_empty());
    assert_eq!(dc.count("low"), 1);
}
