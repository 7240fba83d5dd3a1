//! The memory bound of the MIME decoder's in-memory path: a ~50 MiB
//! message with a 38 MiB base64 attachment, held whole, decodes with peak
//! RSS under 80 MiB, the message included. A poll decodes a message over
//! 1 MiB from its file instead (tests/suite/memory.rs, README "Memory").
//!
//! Peak RSS is per process, and the suite's other tests run in this one, so
//! the test runs itself again in a child process of the test binary (only
//! this test, one thread) and measures there.

use std::fs;
use std::process::Command;

use popspool::mime::{decode, Options};

use crate::common::mail::big_message;

/// Peak resident set size of this process, from /proc.
fn peak_rss_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Set in the child process: there the test measures instead of spawning.
const CHILD_ENV: &str = "POPSPOOL_MIME_MEMORY_CHILD";

#[test]
fn big_attachment_decodes_in_bounded_memory() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return decode_big_attachment();
    }
    let name = format!(
        "{}::big_attachment_decodes_in_bounded_memory",
        module_path!()
    );
    // The name without the crate's: what the test harness calls this test.
    let name = name.split_once("::").map_or(name.as_str(), |(_, n)| n);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--include-ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed ({}):\n{stdout}{stderr}",
        out.status
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test:\n{stdout}"
    );
    eprint!("{stderr}");
}

fn decode_big_attachment() {
    let data_len = 38usize << 20;
    let (raw, expected) = big_message(data_len);
    let dir = std::env::temp_dir().join(format!("popspool-mime-mem-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let d = decode(&raw, &Options::default(), &dir).unwrap();
    let hwm = peak_rss_kib();
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(d.attachments[0].size, data_len as u64);
    assert_eq!(d.attachments[0].sha256, expected);
    eprintln!("message {} MiB, peak RSS {} KiB", raw.len() >> 20, hwm);
    assert!(hwm < 80 * 1024, "peak RSS {hwm} KiB");
}
