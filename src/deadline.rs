//! The wall-clock limits a session is held to, all derived from the
//! account's `timeout` (popspool.ini(5), `timeout`), in one place so that
//! the TCP and TLS layer, the POP3 conversation and the service watchdog
//! agree on them.
//!
//! `timeout` itself is the inactivity timeout: no single read or write, and
//! no connection attempt to one address, waits longer. It cannot stop a
//! server that sends a byte just before it runs out; these can:
//!
//! - connecting (every resolved address in turn) and, for POP3S, the TLS
//!   handshake: [`CONNECT_TIMEOUTS`] × `timeout` together;
//! - the greeting and the login (CAPA, STLS and its handshake, every login
//!   exchange, a fallback mechanism): [`LOGIN_TIMEOUTS`] × `timeout` together;
//! - every later reply's status line, the whole of a one-line reply:
//!   [`REPLY_TIMEOUTS`] × `timeout`;
//! - the rest of a message or listing: at least [`MIN_RATE_BYTES_PER_SEC`]
//!   in every window of `timeout`, whatever size the server announced.
//!
//! Each limit is checked when a read returns, so a server dripping bytes is
//! abandoned at most one `timeout` after the limit passes (the TLS
//! handshake and connecting end exactly on time).

use std::time::{Duration, Instant};

use crate::pop3::{Pacing, Phase, Pulse};

/// Connecting and the TLS handshake: a connection attempt may use one
/// `timeout` (an address that does not answer), the handshake the other;
/// a real handshake takes a few round trips, well under a second.
pub const CONNECT_TIMEOUTS: u32 = 2;

/// The greeting and the login: a handful of round trips, one more TLS
/// handshake for STLS, and a server's delay after a refused first
/// mechanism (Dovecot waits 2 s) before the fallback.
pub const LOGIN_TIMEOUTS: u32 = 3;

/// One reply's status line: a server may think before it answers (a STAT,
/// UIDL or QUIT over a large maildrop), but not for long.
pub const REPLY_TIMEOUTS: u32 = 2;

/// The slowest a message or listing may arrive once its status line is in,
/// judged over each window of `timeout` (60 KiB per window by default). A
/// poor GPRS link carries 2 to 5 KiB/s, and a window as long as `timeout`
/// absorbs TCP's retransmission back-off and a server pausing to read a
/// large message from its store, so only a server that keeps the
/// connection alive without really sending falls below it. The time a
/// message may take then follows the bytes that really arrive, never the
/// size the server announced; `max_message_size` bounds both.
pub const MIN_RATE_BYTES_PER_SEC: u64 = 1024;

/// Beyond the longest stretch without a watchdog ping that the limits allow
/// ([`watchdog_needs`]): local work (a batch's fsyncs, decoding a large
/// message) and a slow DNS resolver.
const WATCHDOG_SLACK: Duration = Duration::from_secs(60);

/// `n` times `timeout`, saturating.
pub fn times(timeout: Duration, n: u32) -> Duration {
    timeout.saturating_mul(n)
}

/// The instant `d` from now; one far away if `d` is too large to add.
pub fn from_now(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(1 << 32))
}

/// When connecting and the TLS handshake must be over, starting now.
pub fn connect_end(timeout: Duration) -> Instant {
    from_now(times(timeout, CONNECT_TIMEOUTS))
}

/// The greeting-and-login phase, starting now.
pub fn login_phase(timeout: Duration) -> Phase {
    Phase::starting_now("greeting and login", times(timeout, LOGIN_TIMEOUTS))
}

/// The pacing of every reply of a session with `server` (`host:port`).
pub fn pacing(timeout: Duration, server: String, pulse: Option<Pulse>) -> Pacing {
    Pacing {
        server,
        response: Some(times(timeout, REPLY_TIMEOUTS)),
        min_rate: MIN_RATE_BYTES_PER_SEC,
        window: timeout,
        pulse,
    }
}

/// The shortest `WatchdogSec=` that a healthy poll with this `timeout`
/// always satisfies: a poll pings whenever data arrives and between its
/// phases, so the longest silence is one phase (the login, the longest)
/// plus [`WATCHDOG_SLACK`].
pub fn watchdog_needs(timeout: Duration) -> Duration {
    times(timeout, LOGIN_TIMEOUTS).saturating_add(WATCHDOG_SLACK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_timeout() {
        let t = Duration::from_secs(60);
        let p = pacing(t, "h:995".into(), None);
        assert_eq!(p.response, Some(Duration::from_secs(120)));
        assert_eq!((p.min_rate, p.window), (1024, t));
        assert_eq!(login_phase(t).allowed, Duration::from_secs(180));
        // The unit's WatchdogSec=5min covers the default timeout with room.
        assert_eq!(watchdog_needs(t), Duration::from_secs(240));
        // Absurd values saturate instead of overflowing.
        let huge = Duration::MAX;
        assert_eq!(times(huge, 3), Duration::MAX);
        assert!(connect_end(huge) > Instant::now());
        assert!(login_phase(huge).end > Instant::now());
    }
}
