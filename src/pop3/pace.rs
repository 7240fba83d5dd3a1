//! How fast the server must answer: [`Pacing`] (the deadline for each
//! reply's status line, the end of a phase, the minimum rate of multi-line
//! data, the keep-alive [`Pulse`]), the rate rule itself ([`RateWindow`],
//! pure and unit-tested), and [`Stall`], which says which rule a stalling
//! server broke.
//!
//! The socket's inactivity timeout bounds one read; these bound a server
//! that sends a byte just often enough to beat it (popspool.ini(5), `timeout`).
//! Every check runs after a read returns, so a limit is noticed at most one
//! inactivity timeout late.

use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Called after each read that brought bytes from the server: how a
/// service watchdog learns that a long poll is making progress. It runs
/// once per socket read, so it must be cheap (a clock check).
pub type Pulse = Rc<dyn Fn()>;

/// The limits a connection's replies are held to; see the module comment.
#[derive(Clone, Default)]
pub struct Pacing {
    /// `host:port`, named in a [`Stall`].
    pub server: String,
    /// Time allowed for each reply's status line (the whole of a one-line
    /// reply, each SASL challenge); `None`: only the inactivity timeout.
    pub response: Option<Duration>,
    /// After its status line, the rest of a multi-line reply (a message,
    /// a listing) must bring at least `min_rate` bytes per second in each
    /// `window`; zero `min_rate` or `window`: no rate rule.
    pub min_rate: u64,
    /// See `min_rate`.
    pub window: Duration,
    /// Told of progress; see [`Pulse`].
    pub pulse: Option<Pulse>,
}

impl fmt::Debug for Pacing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pacing")
            .field("server", &self.server)
            .field("response", &self.response)
            .field("min_rate", &self.min_rate)
            .field("window", &self.window)
            .field("pulse", &self.pulse.is_some())
            .finish()
    }
}

impl Pacing {
    /// A fresh rate window starting `now`, if the rule is on.
    pub(super) fn rate_window(&self, now: Instant) -> Option<RateWindow> {
        (self.min_rate > 0 && !self.window.is_zero())
            .then(|| RateWindow::new(now, self.window, self.min_rate))
    }
}

/// The rate rule over consecutive windows of fixed length: each window
/// that has run its full length must have brought `min_rate × length`
/// bytes, else the data is too slow. A reply that ends inside a window is
/// never judged on it, so short replies and the tail of a message pass.
#[derive(Debug, Clone, Copy)]
pub struct RateWindow {
    start: Instant,
    bytes: u64,
    len: Duration,
    min_rate: u64,
}

impl RateWindow {
    /// The first window, from `now`.
    pub fn new(now: Instant, len: Duration, min_rate: u64) -> Self {
        Self {
            start: now,
            bytes: 0,
            len,
            min_rate,
        }
    }

    /// Bytes a full window must bring.
    pub fn min_bytes(&self) -> u64 {
        (self.min_rate as f64 * self.len.as_secs_f64()) as u64
    }

    /// `n` more bytes arrived at `now`. When the window has run its length
    /// it is judged: short of [`min_bytes`](Self::min_bytes) is an error
    /// carrying what it brought; otherwise the next window starts now.
    pub fn arrived(&mut self, n: u64, now: Instant) -> Result<(), u64> {
        self.bytes = self.bytes.saturating_add(n);
        if now.saturating_duration_since(self.start) < self.len {
            return Ok(());
        }
        if self.bytes < self.min_bytes() {
            return Err(self.bytes);
        }
        self.start = now;
        self.bytes = 0;
        Ok(())
    }
}

/// Which limit a reply missed (see [`Error::Stalled`](super::Error::Stalled)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StallKind {
    /// The status line (or a one-line reply) missed its deadline.
    Reply(Duration),
    /// The phase the reply belonged to ran past its end.
    Phase {
        /// The phase, as a person calls it (`greeting and login`).
        name: &'static str,
        /// How long it was allowed.
        allowed: Duration,
    },
    /// Multi-line data came slower than the minimum rate.
    Slow {
        /// Bytes in the window that fell short.
        bytes: u64,
        /// The window's length.
        window: Duration,
        /// The minimum, bytes per second.
        min_rate: u64,
    },
}

/// A server too slow for [`Pacing`]: who, during which command, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// `host:port` (empty when the caller gave none).
    pub server: String,
    /// The command whose reply was awaited (`connection` for the greeting).
    pub command: &'static str,
    /// The limit it missed.
    pub kind: StallKind,
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = if self.server.is_empty() {
            "the server".to_string()
        } else {
            format!("server {}", self.server)
        };
        let reply = match self.command {
            "connection" => "the greeting".to_string(),
            c => format!("the reply to {c}"),
        };
        match &self.kind {
            StallKind::Reply(d) => write!(
                f,
                "{who} stalled: {reply} was not complete within {}s",
                d.as_secs()
            ),
            StallKind::Phase { name, allowed } => write!(
                f,
                "{who} stalled: {name} not finished within {}s (waiting for {reply})",
                allowed.as_secs()
            ),
            StallKind::Slow {
                bytes,
                window,
                min_rate,
            } => write!(
                f,
                "{who} stalled: {reply} brought {bytes} bytes in {}s, below the minimum of \
                 {min_rate} bytes/s",
                window.as_secs()
            ),
        }?;
        f.write_str("; abandoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_judged_only_once_it_has_run_its_length() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = RateWindow::new(t0, s(10), 1024);
        assert_eq!(w.min_bytes(), 10 * 1024);
        // A trickle is not judged before the window is over...
        assert_eq!(w.arrived(1, t0 + s(9)), Ok(()));
        // ... and fails when it is.
        assert_eq!(w.arrived(1, t0 + s(18)), Err(2));

        // Enough in each window: the next one starts where it was judged.
        let mut w = RateWindow::new(t0, s(10), 1024);
        assert_eq!(w.arrived(6000, t0 + s(5)), Ok(()));
        assert_eq!(w.arrived(5000, t0 + s(10)), Ok(()));
        assert_eq!(w.arrived(10_239, t0 + s(20)), Err(10_239));

        // A burst, then silence just short of the inactivity timeout, then a burst.
        let mut w = RateWindow::new(t0, s(10), 1024);
        assert_eq!(w.arrived(64 << 10, t0 + s(1)), Ok(()));
        assert_eq!(w.arrived(64 << 10, t0 + s(10)), Ok(()));
        assert_eq!(w.arrived(64 << 10, t0 + s(19)), Ok(()));
    }

    #[test]
    fn a_stall_names_the_server_the_reply_and_the_rule() {
        let stall = |command, kind| {
            Stall {
                server: "pop.example.com:995".into(),
                command,
                kind,
            }
            .to_string()
        };
        assert_eq!(
            stall("connection", StallKind::Reply(Duration::from_secs(120))),
            "server pop.example.com:995 stalled: the greeting was not complete within 120s; \
             abandoned"
        );
        assert_eq!(
            stall(
                "AUTH",
                StallKind::Phase {
                    name: "greeting and login",
                    allowed: Duration::from_secs(120)
                }
            ),
            "server pop.example.com:995 stalled: greeting and login not finished within 120s \
             (waiting for the reply to AUTH); abandoned"
        );
        assert_eq!(
            stall(
                "RETR",
                StallKind::Slow {
                    bytes: 7,
                    window: Duration::from_secs(60),
                    min_rate: 1024
                }
            ),
            "server pop.example.com:995 stalled: the reply to RETR brought 7 bytes in 60s, \
             below the minimum of 1024 bytes/s; abandoned"
        );
    }
}
