//! sd_notify(3) without libsystemd: tells the service manager that the
//! service is ready, what it is doing, that it is stopping, and that it is
//! still alive (the watchdog).
//!
//! The protocol is one datagram of newline-separated `KEY=VALUE` lines sent
//! to the socket named in `NOTIFY_SOCKET`: a file system path, or, when it
//! starts with `@`, a name in Linux's abstract socket namespace. systemd
//! sets it for `Type=notify` units, and `WATCHDOG_USEC` (with
//! `WATCHDOG_PID`) when the unit has `WatchdogSec=`.
//!
//! Notifying is best effort: a message that cannot be sent is logged at
//! debug level and the service carries on, as it would under a supervisor
//! that does not listen at all.

use std::cell::Cell;
use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A busy service manager gets this long to take a message; the service
/// never hangs on its supervisor.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// The connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier systemd asked for through `NOTIFY_SOCKET`, with the
    /// watchdog interval from `WATCHDOG_USEC`/`WATCHDOG_PID`; `None` when
    /// the service was not started as a `Type=notify` unit (or the socket
    /// is unusable, which is logged).
    pub fn from_env() -> Option<Notifier> {
        let socket = std::env::var_os("NOTIFY_SOCKET")?;
        let watchdog = watchdog_from(
            std::env::var_os("WATCHDOG_USEC").as_deref(),
            std::env::var_os("WATCHDOG_PID").as_deref(),
            std::process::id(),
        );
        match Notifier::new(&socket, watchdog) {
            Ok(n) => Some(n),
            Err(e) => {
                log::warn!(
                    "NOTIFY_SOCKET={}: {e}; not notifying systemd",
                    socket.to_string_lossy()
                );
                None
            }
        }
    }

    /// A notifier for the socket `socket` (a path, or `@name` for the
    /// abstract namespace), pinging the watchdog only if `watchdog` is set.
    pub fn new(socket: &OsStr, watchdog: Option<Duration>) -> io::Result<Notifier> {
        let bytes = socket.as_bytes();
        let addr = match bytes.first() {
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
            Some(b'/') => SocketAddr::from_pathname(socket)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not an absolute path or an abstract socket name (@...)",
                ))
            }
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(Notifier {
            socket,
            addr,
            watchdog,
        })
    }

    /// How often systemd expects a watchdog ping (`WatchdogSec=`), if at all.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// `READY=1`: start-up is complete.
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// `STATUS=...`: one line for `systemctl status`.
    pub fn status(&self, text: &str) {
        // A newline would end the assignment and start another one.
        self.send(&format!("STATUS={}", text.replace(['\n', '\r'], " ")));
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// `WATCHDOG=1`, only when systemd asked for a watchdog.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send("WATCHDOG=1");
        }
    }

    fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            log::debug!("sd_notify {message:?}: {e}");
        }
    }
}

/// Watchdog pings from inside a poll: [`KeepAlive::beat`] runs on every
/// read that brings data and between the phases of a session, and sends
/// `WATCHDOG=1` when half the interval has passed since the last one it
/// sent (sd_watchdog_enabled(3) advises half). So a long download that
/// makes progress keeps the service alive, while a poll stuck where no
/// limit reaches (a hung disk, say) stops the pings and systemd restarts
/// the service. A beat costs a clock read.
#[derive(Debug)]
pub struct KeepAlive {
    notifier: Rc<Notifier>,
    every: Duration,
    last: Cell<Instant>,
}

impl KeepAlive {
    /// Beats for `notifier`, if systemd asked for a watchdog.
    pub fn new(notifier: &Rc<Notifier>) -> Option<KeepAlive> {
        let interval = notifier.watchdog_interval()?;
        Some(KeepAlive {
            notifier: Rc::clone(notifier),
            every: interval / 2,
            last: Cell::new(Instant::now()),
        })
    }

    /// A sign of progress: ping if it is time.
    pub fn beat(&self) {
        let now = Instant::now();
        if now.duration_since(self.last.get()) >= self.every {
            self.last.set(now);
            self.notifier.watchdog();
        }
    }
}

/// The watchdog interval from the values of `WATCHDOG_USEC` and
/// `WATCHDOG_PID`: none when unset, unparsable or zero, or when
/// `WATCHDOG_PID` names another process (the variables were inherited from
/// a parent that systemd watches, not meant for us).
fn watchdog_from(usec: Option<&OsStr>, pid: Option<&OsStr>, me: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.to_str()?.parse::<u32>().ok()? != me {
            return None;
        }
    }
    let usec: u64 = usec?.to_str()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A bound socket standing in for systemd, in its own temp dir.
    struct Manager {
        dir: PathBuf,
        socket: UnixDatagram,
    }

    impl Manager {
        fn new() -> Manager {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "popspool-notify-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let socket = UnixDatagram::bind(dir.join("notify")).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            Manager { dir, socket }
        }

        fn path(&self) -> PathBuf {
            self.dir.join("notify")
        }

        fn recv(&self) -> String {
            let mut buf = [0u8; 4096];
            let n = self.socket.recv(&mut buf).expect("a datagram");
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }

        fn nothing_pending(&self) -> bool {
            self.socket.set_nonblocking(true).unwrap();
            let r = self.socket.recv(&mut [0u8; 64]);
            self.socket.set_nonblocking(false).unwrap();
            matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }

    impl Drop for Manager {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let m = Manager::new();
        let n = Notifier::new(m.path().as_os_str(), None).unwrap();
        n.ready();
        assert_eq!(m.recv(), "READY=1");
        n.status("2 accounts, last poll 12:00:01 UTC: sales ok");
        assert_eq!(
            m.recv(),
            "STATUS=2 accounts, last poll 12:00:01 UTC: sales ok"
        );
        n.status("line one\nWATCHDOG=1\r");
        assert_eq!(m.recv(), "STATUS=line one WATCHDOG=1 ");
        n.stopping();
        assert_eq!(m.recv(), "STOPPING=1");
        assert!(m.nothing_pending());
    }

    #[test]
    fn watchdog_pings_only_when_asked_for() {
        let m = Manager::new();
        let off = Notifier::new(m.path().as_os_str(), None).unwrap();
        off.watchdog();
        assert!(m.nothing_pending());
        assert_eq!(off.watchdog_interval(), None);
        let on = Notifier::new(m.path().as_os_str(), Some(Duration::from_secs(30))).unwrap();
        on.watchdog();
        assert_eq!(m.recv(), "WATCHDOG=1");
        assert_eq!(on.watchdog_interval(), Some(Duration::from_secs(30)));
    }

    #[test]
    fn keep_alive_pings_at_most_every_half_interval() {
        let m = Manager::new();
        let off = Rc::new(Notifier::new(m.path().as_os_str(), None).unwrap());
        assert!(KeepAlive::new(&off).is_none());
        let n =
            Rc::new(Notifier::new(m.path().as_os_str(), Some(Duration::from_millis(200))).unwrap());
        let k = KeepAlive::new(&n).unwrap();
        let t0 = Instant::now();
        let mut beats = 0;
        while t0.elapsed() < Duration::from_millis(450) {
            k.beat();
            beats += 1;
        }
        let mut pings = 0;
        while !m.nothing_pending() {
            pings += 1;
        }
        // Thousands of beats, four pings (at 100, 200, 300, 400 ms).
        assert!(beats > 1000, "{beats}");
        assert!((3..=5).contains(&pings), "{pings}");
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        let name = format!("popspool-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::new(OsStr::new(&format!("@{name}")), None).unwrap();
        n.ready();
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
    }

    #[test]
    fn unusable_addresses_are_refused() {
        for bad in ["", "relative/notify", "vsock:2:1234"] {
            let e = Notifier::new(OsStr::new(bad), None).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        // Sending to a socket nobody listens on is not an error for the service.
        let m = Manager::new();
        let gone = m.path();
        drop(m);
        Notifier::new(gone.as_os_str(), None).unwrap().ready();
    }

    #[test]
    fn watchdog_interval_from_the_environment_values() {
        let s = |v: &'static str| Some(OsStr::new(v));
        assert_eq!(
            watchdog_from(s("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_from(s("1500"), s("7"), 7),
            Some(Duration::from_micros(1500))
        );
        // Meant for another process.
        assert_eq!(watchdog_from(s("30000000"), s("8"), 7), None);
        assert_eq!(watchdog_from(s("30000000"), s("x"), 7), None);
        assert_eq!(watchdog_from(None, s("7"), 7), None);
        assert_eq!(watchdog_from(s("0"), None, 7), None);
        assert_eq!(watchdog_from(s("-5"), None, 7), None);
        assert_eq!(watchdog_from(s("30s"), None, 7), None);
    }
}
