//! Per-account status records and the Prometheus textfile (README,
//! "Troubleshooting"; popspool(8), FILES).
//!
//! `<state_dir>/<account>.status.json` and `<state_dir>/popspool.prom` are
//! rewritten atomically after every poll, so a reader never sees half a file.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::spool::write_atomic;

/// What monitoring needs to know about one account.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// Account name.
    pub account: String,
    /// Unix time the last poll ended.
    pub last_poll: Option<u64>,
    /// Unix time of the last successful poll.
    pub last_success: Option<u64>,
    /// The last poll's error, if it failed.
    pub last_error: Option<String>,
    /// Failed polls in a row.
    pub consecutive_failures: u32,
    /// Whether `error_threshold` has been reached.
    pub failed: bool,
    /// Messages published to `new/` or `quarantine/`, ever.
    pub messages_delivered: u64,
    /// Of those, the ones in `quarantine/`.
    pub messages_quarantined: u64,
    /// Bytes of `message.eml` published, ever.
    pub bytes_delivered: u64,
    /// Seconds the last poll took.
    pub last_poll_duration: f64,
    /// Messages the last complete poll left on the server: over
    /// `max_message_size`, or refused by the server (`-ERR` to RETR).
    /// Absent from records written before it existed, hence the default.
    #[serde(default)]
    pub messages_left_on_server: u64,
    /// MDNs the SMTP server took, ever (README, "Acknowledgments (MDN)").
    #[serde(default)]
    pub mdns_sent: u64,
    /// MDNs refused for good or possibly lost in an interruption, ever:
    /// each one is never sent again.
    #[serde(default)]
    pub mdns_failed: u64,
    /// MDNs owed and not yet sent after the last poll.
    #[serde(default)]
    pub mdns_pending: u64,
    /// Why the last attempt to send MDNs failed; null once they go out.
    #[serde(default)]
    pub mdn_last_error: Option<String>,
}

impl Status {
    /// Load the record, or a fresh one if there is none (or it is unreadable:
    /// it is monitoring data, never a reason to stop receiving mail).
    pub fn load(state_dir: &Path, account: &str) -> Status {
        crate::fsafe::read_regular(&path(state_dir, account))
            .ok()
            .and_then(|b| serde_json::from_slice::<Status>(&b).ok())
            .unwrap_or_else(|| Status {
                account: account.to_string(),
                ..Status::default()
            })
    }

    /// Write it atomically.
    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let mut data = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        data.push(b'\n');
        write_atomic(&path(state_dir, &self.account), &data, 0o644)
    }
}

fn path(state_dir: &Path, account: &str) -> std::path::PathBuf {
    state_dir.join(format!("{account}.status.json"))
}

/// Rewrite `popspool.prom` from all accounts' records.
pub fn write_prometheus(state_dir: &Path, all: &[Status]) -> std::io::Result<()> {
    write_atomic(
        &state_dir.join("popspool.prom"),
        prometheus_text(all).as_bytes(),
        0o644,
    )
}

/// The Prometheus text exposition of `all`.
pub fn prometheus_text(all: &[Status]) -> String {
    type Metric = (&'static str, &'static str, &'static str, fn(&Status) -> f64);
    let metrics: [Metric; 12] = [
        (
            "popspool_messages_delivered_total",
            "counter",
            "Messages published to the spool.",
            |s| s.messages_delivered as f64,
        ),
        (
            "popspool_messages_quarantined_total",
            "counter",
            "Messages published to quarantine.",
            |s| s.messages_quarantined as f64,
        ),
        (
            "popspool_bytes_delivered_total",
            "counter",
            "Bytes of raw messages published.",
            |s| s.bytes_delivered as f64,
        ),
        (
            "popspool_consecutive_failures",
            "gauge",
            "Failed polls in a row.",
            |s| s.consecutive_failures as f64,
        ),
        (
            "popspool_account_failed",
            "gauge",
            "1 when error_threshold has been reached.",
            |s| u8::from(s.failed) as f64,
        ),
        (
            "popspool_last_poll_timestamp_seconds",
            "gauge",
            "Unix time of the last poll.",
            |s| s.last_poll.unwrap_or(0) as f64,
        ),
        (
            "popspool_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last successful poll.",
            |s| s.last_success.unwrap_or(0) as f64,
        ),
        (
            "popspool_poll_duration_seconds",
            "gauge",
            "Duration of the last poll.",
            |s| s.last_poll_duration,
        ),
        (
            "popspool_messages_left_on_server",
            "gauge",
            "Messages the last complete poll left on the server (too large or refused).",
            |s| s.messages_left_on_server as f64,
        ),
        (
            "popspool_mdns_sent_total",
            "counter",
            "MDNs the SMTP server accepted.",
            |s| s.mdns_sent as f64,
        ),
        (
            "popspool_mdns_failed_total",
            "counter",
            "MDNs refused for good or possibly lost in an interruption; never resent.",
            |s| s.mdns_failed as f64,
        ),
        (
            "popspool_mdns_pending",
            "gauge",
            "MDNs owed and not yet sent.",
            |s| s.mdns_pending as f64,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, get) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in all {
            // Account names are [A-Za-z0-9._-]: nothing to escape in a label.
            let _ = writeln!(out, "{name}{{account=\"{}\"}} {}", s.account, get(s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_format() {
        let s = Status {
            account: "sales".into(),
            messages_delivered: 3,
            last_poll_duration: 0.25,
            failed: true,
            ..Status::default()
        };
        let t = prometheus_text(&[s]);
        assert!(t.contains("# TYPE popspool_messages_delivered_total counter\n"));
        assert!(t.contains("popspool_messages_delivered_total{account=\"sales\"} 3\n"));
        assert!(t.contains("popspool_poll_duration_seconds{account=\"sales\"} 0.25\n"));
        assert!(t.contains("popspool_account_failed{account=\"sales\"} 1\n"));
        assert!(t.contains("# TYPE popspool_messages_left_on_server gauge\n"));
        assert!(t.contains("popspool_messages_left_on_server{account=\"sales\"} 0\n"));
        assert!(t.contains("# TYPE popspool_mdns_pending gauge\n"));
        assert!(t.contains("popspool_mdns_failed_total{account=\"sales\"} 0\n"));
    }

    #[test]
    fn round_trip_and_garbage_tolerated() {
        let d = std::env::temp_dir().join(format!("popspool-status-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let mut s = Status::load(&d, "a");
        assert_eq!(s.account, "a");
        s.messages_delivered = 7;
        s.save(&d).unwrap();
        assert_eq!(Status::load(&d, "a"), s);
        // A record from before messages_left_on_server keeps its counters.
        std::fs::write(
            d.join("a.status.json"),
            br#"{"account":"a","consecutive_failures":0,"failed":false,
                "messages_delivered":7,"messages_quarantined":0,
                "bytes_delivered":0,"last_poll_duration":0.5}"#,
        )
        .unwrap();
        assert_eq!(Status::load(&d, "a").messages_delivered, 7);
        std::fs::write(d.join("a.status.json"), b"{garbage").unwrap();
        assert_eq!(Status::load(&d, "a").messages_delivered, 0);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
