//! The benchmark harness, bounded: `tests/bench/bench.sh --quick` runs
//! popspool (and mpop, when it is installed or installs) on small mailboxes
//! through every path of the harness (throughput, the delay relay, the
//! daemon's memory run, many accounts with dead and stalled servers) and
//! fails unless every client delivered every message. It asserts no timing:
//! the full benchmark is run by hand (README, "Performance").

use std::path::Path;
use std::process::Command;

#[test]
#[ignore = "needs root and Dovecot (tests/bench/bench.sh)"]
fn bench_harness_quick_run_delivers_everything() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bench/bench.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["--quick", "--popspool", env!("CARGO_BIN_EXE_popspool")])
        .output()
        .expect("run bench.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- stdout\n{stdout}--- stderr\n{stderr}");
    assert!(
        out.status.success(),
        "bench.sh --quick failed: {:?}",
        out.status
    );
    for scenario in [
        "| popspool | a ",
        "| popspool | c ",
        "| popspool | e ",
        "| popspool | f ",
    ] {
        assert!(
            stdout.contains(scenario),
            "no row {scenario:?} in the table"
        );
    }
    assert!(!stdout.contains("FAILED"), "a client failed");
}
