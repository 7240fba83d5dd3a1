//! The foreground service: every account on its own schedule, one at a time,
//! woken at once by signals.
//!
//! SIGTERM/SIGINT set a flag that the poll checks between messages and
//! inside a download; SIGHUP reloads the configuration (`log_level` too)
//! between polls; SIGUSR1 makes every account due now. The signal handlers only set flags
//! and write a byte to a socket pair, which the scheduler's sleep reads, so
//! no signal is slept through.
//!
//! Under systemd (`Type=notify`) it reports readiness, a status line after
//! each poll and shutdown, and pings the watchdog before and after each
//! poll, at least twice per `WatchdogSec=` while idle, and during a poll
//! whenever data arrives or a phase begins, at most twice per `WatchdogSec=`
//! (see [`KeepAlive`]).

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::LevelFilter;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

use crate::config::{self, Account, Config};
use crate::exit::Exit;
use crate::logging;
use crate::notify::{KeepAlive, Notifier};
use crate::poll::{self, Context, Memo};
use crate::status::{self, Status};
use crate::timefmt;
use crate::tls;

/// Flags set by signal handlers, and the pipe that wakes the scheduler.
pub struct Signals {
    /// SIGTERM or SIGINT arrived.
    pub stop: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
    usr1: Arc<AtomicBool>,
    wake: UnixStream,
}

impl Signals {
    /// Install the handlers. A second SIGTERM/SIGINT while the first is
    /// being honoured ends the process at once with status 0, a stop like
    /// the first (popspool(8), SIGNALS): the first may wait up to `timeout`
    /// on a silent server, and an operator who asks twice wants out now.
    /// Exiting mid-batch is what a kill does, which the journal survives
    /// (README "Delivery guarantee"): nothing is deleted without QUIT, and
    /// a pending entry is settled by the next start.
    pub fn install() -> std::io::Result<Signals> {
        let stop = Arc::new(AtomicBool::new(false));
        let hup = Arc::new(AtomicBool::new(false));
        let usr1 = Arc::new(AtomicBool::new(false));
        let (wake, notify) = UnixStream::pair()?;
        for sig in [SIGTERM, SIGINT] {
            signal_hook::flag::register_conditional_shutdown(sig, 0, Arc::clone(&stop))?;
            signal_hook::flag::register(sig, Arc::clone(&stop))?;
        }
        signal_hook::flag::register(SIGHUP, Arc::clone(&hup))?;
        signal_hook::flag::register(SIGUSR1, Arc::clone(&usr1))?;
        notify.set_nonblocking(true)?;
        for sig in [SIGTERM, SIGINT, SIGHUP, SIGUSR1] {
            signal_hook::low_level::pipe::register(sig, notify.try_clone()?)?;
        }
        Ok(Signals {
            stop,
            hup,
            usr1,
            wake,
        })
    }

    /// Sleep up to `d`, returning early when a signal arrives.
    fn sleep(&mut self, d: Duration) {
        if d.is_zero() || self.stop.load(Ordering::Relaxed) {
            return;
        }
        let _ = self.wake.set_read_timeout(Some(d));
        let mut buf = [0u8; 64];
        let _ = self.wake.read(&mut buf);
    }
}

/// Per-account scheduling state.
struct Slot {
    due: Instant,
    memo: Memo,
    status: Status,
    /// The failures since the last success include a permanent one
    /// (credentials refused): back off at once and log it only once.
    permanent: bool,
}

/// How a poll went, for the caller of `poll_and_record`.
pub enum Result {
    /// It worked.
    Ok,
    /// It failed; the bool says whether the spool/state dir is unusable.
    Failed {
        /// Exit 73 rather than 75 with `--once`.
        local_dir: bool,
    },
}

/// Poll one account and update its status record; logs the outcome.
fn poll_and_record(
    acct: &Account,
    cfg: &Config,
    stop: &AtomicBool,
    slot: &mut Slot,
    connectors: &tls::Connectors,
    log: logging::Output,
    pulse: Option<&crate::pop3::Pulse>,
) -> Result {
    let started = Instant::now();
    let ctx = Context {
        state_dir: &cfg.state_dir,
        stop,
        tls: connectors,
        log,
        pulse: pulse.cloned(),
    };
    let (o, r) = poll::poll(acct, &ctx, &mut slot.memo);
    let now = timefmt::unix_now();
    let st = &mut slot.status;
    st.last_poll = Some(now);
    st.last_poll_duration = started.elapsed().as_secs_f64();
    st.messages_delivered += o.delivered + o.quarantined;
    st.messages_quarantined += o.quarantined;
    st.bytes_delivered += o.bytes;
    st.mdns_sent += o.mdn.sent;
    st.mdns_failed += o.mdn.failed;
    if o.mdn.ran {
        st.mdns_pending = o.mdn.pending;
        st.mdn_last_error.clone_from(&o.mdn.error);
    }
    let result = match r {
        Ok(()) => {
            st.last_success = Some(now);
            // An interrupted poll did not see every message.
            if !o.interrupted {
                st.messages_left_on_server = o.too_large + o.refused;
            }
            st.last_error = None;
            if st.failed {
                log::info!(
                    "{}: recovered after {} failed polls",
                    acct.name,
                    st.consecutive_failures
                );
            }
            st.consecutive_failures = 0;
            st.failed = false;
            slot.permanent = false;
            if o.delivered + o.quarantined + o.deleted > 0 || o.interrupted {
                log::info!(
                    "{}: {} delivered, {} quarantined, {} deleted on the server{}",
                    acct.name,
                    o.delivered,
                    o.quarantined,
                    o.deleted,
                    if o.interrupted {
                        " (interrupted by shutdown)"
                    } else {
                        ""
                    }
                );
            } else {
                log::debug!("{}: nothing new", acct.name);
            }
            Result::Ok
        }
        Err(poll::Error::Interrupted) => {
            log::info!("{}: {}", acct.name, poll::Error::Interrupted);
            Result::Ok
        }
        Err(e) if e.is_permanent() => {
            // Credentials refused (or no acceptable mechanism): polling again
            // in a minute would only hammer the server and can get the
            // account locked. Back off at once; say it once per streak.
            st.consecutive_failures += 1;
            st.last_error = Some(e.to_string());
            st.failed = true;
            if !slot.permanent {
                log::error!(
                    "{}: {} (account failed: this needs a person; the service backs off up \
                     to {}s between tries, and SIGUSR1 retries at once after a fix)",
                    acct.name,
                    e,
                    acct.max_backoff.as_secs()
                );
            } else {
                log::debug!("{}: still failing: {}", acct.name, e);
            }
            slot.permanent = true;
            Result::Failed { local_dir: false }
        }
        Err(e) => {
            st.consecutive_failures += 1;
            st.last_error = Some(e.to_string());
            let kind = if e.is_transient() {
                "temporary, will retry"
            } else {
                "needs attention"
            };
            if st.consecutive_failures >= acct.error_threshold && !st.failed {
                st.failed = true;
                log::error!(
                    "{}: {e} ({kind}); account failed: {} polls in a row, backing off up to {}s, \
                     it keeps retrying",
                    acct.name,
                    st.consecutive_failures,
                    acct.max_backoff.as_secs()
                );
            } else if e.is_transient() {
                log::warn!("{}: {e} ({kind})", acct.name);
            } else {
                log::error!("{}: {e} ({kind})", acct.name);
            }
            Result::Failed {
                local_dir: e.is_local_dir(),
            }
        }
    };
    if let Err(e) = st.save(&cfg.state_dir) {
        log::warn!("{}: cannot write status record: {e}", acct.name);
    }
    result
}

/// Time until the account's next poll: its interval, or after
/// `error_threshold` failures (at once after a permanent one) an exponential
/// backoff capped at `max_backoff`.
pub fn next_interval(acct: &Account, failures: u32, permanent: bool) -> Duration {
    // A permanent failure starts the backoff at its first step.
    let failures = if permanent {
        failures.saturating_add(acct.error_threshold.saturating_sub(1))
    } else {
        failures
    };
    if failures < acct.error_threshold {
        return acct.poll_interval;
    }
    let doublings = (failures - acct.error_threshold + 1).min(30);
    let grown = acct.poll_interval.saturating_mul(1u32 << doublings);
    grown
        .min(acct.max_backoff)
        .max(acct.poll_interval.min(acct.max_backoff))
}

/// Rewrite `popspool.prom` with every configured account: those this
/// process polls from their slots, the others (`-a` left them out; another
/// instance may poll them) from their status records.
fn write_prom(cfg: &Config, slots: &HashMap<String, Slot>) {
    let mut all: Vec<Status> = cfg
        .accounts
        .iter()
        .map(|a| match slots.get(&a.name) {
            Some(slot) => slot.status.clone(),
            None => Status::load(&cfg.state_dir, &a.name),
        })
        .collect();
    all.sort_by(|a, b| a.account.cmp(&b.account));
    if let Err(e) = status::write_prometheus(&cfg.state_dir, &all) {
        log::warn!(
            "cannot write {}: {e}",
            cfg.state_dir.join("popspool.prom").display()
        );
    }
}

fn selected<'a>(cfg: &'a Config, only: &[String]) -> Vec<&'a Account> {
    cfg.accounts
        .iter()
        .filter(|a| only.is_empty() || only.contains(&a.name))
        .collect()
}

fn slot_for(cfg: &Config, name: &str) -> Slot {
    Slot {
        due: Instant::now(),
        memo: Memo::default(),
        status: Status::load(&cfg.state_dir, name),
        permanent: false,
    }
}

/// `--once`: poll every selected account once. Returns the exit code.
pub fn run_once(
    cfg: &Config,
    only: &[String],
    stop: &AtomicBool,
    connectors: &tls::Connectors,
    log: logging::Output,
) -> Exit {
    let mut slots = HashMap::new();
    let mut code = Exit::Ok;
    let mut order: Vec<&Account> = selected(cfg, only);
    for acct in &order {
        slots.insert(acct.name.clone(), slot_for(cfg, &acct.name));
    }
    // As in the service loop: accounts that failed last time go last.
    order.sort_by_key(|a| slots[&a.name].status.consecutive_failures > 0);
    for acct in order {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let slot = slots
            .get_mut(&acct.name)
            .expect("slot exists for every selected account");
        match poll_and_record(acct, cfg, stop, slot, connectors, log, None) {
            Result::Ok => {}
            Result::Failed { local_dir: true } => code = Exit::CantCreate,
            Result::Failed { local_dir: false } if code == Exit::Ok => code = Exit::TempFail,
            Result::Failed { .. } => {}
        }
    }
    write_prom(cfg, &slots);
    code
}

/// The service loop; returns when SIGTERM/SIGINT arrives.
pub fn run(
    path: &Path,
    mut cfg: Config,
    only: &[String],
    log_level: Option<LevelFilter>,
    signals: &mut Signals,
    connectors: &tls::Connectors,
    log: logging::Output,
) {
    let mut slots: HashMap<String, Slot> = HashMap::new();
    let names = |cfg: &Config| -> Vec<String> {
        selected(cfg, only).iter().map(|a| a.name.clone()).collect()
    };
    for n in names(&cfg) {
        slots.insert(n.clone(), slot_for(&cfg, &n));
    }
    log::info!(
        "popspool {} started with {} account(s)",
        env!("CARGO_PKG_VERSION"),
        slots.len()
    );
    let systemd = Notifier::from_env().map(Rc::new);
    if let Some(n) = &systemd {
        n.ready();
        n.status(&format!("{} account(s), no poll yet", slots.len()));
    }
    let pulse: Option<crate::pop3::Pulse> = systemd
        .as_ref()
        .and_then(KeepAlive::new)
        .map(|k| Rc::new(move || k.beat()) as crate::pop3::Pulse);
    let watchdog = systemd.as_ref().and_then(|n| n.watchdog_interval());
    check_watchdog(&cfg, watchdog);
    loop {
        if let Some(n) = &systemd {
            n.watchdog();
        }
        if signals.stop.load(Ordering::Relaxed) {
            break;
        }
        if signals.hup.swap(false, Ordering::Relaxed) {
            reload(path, &mut cfg, &mut slots, &names, log_level, connectors);
            check_watchdog(&cfg, watchdog);
        }
        if signals.usr1.swap(false, Ordering::Relaxed) {
            log::info!("SIGUSR1: polling every account now");
            for s in slots.values_mut() {
                s.due = Instant::now();
            }
        }
        let now = Instant::now();
        let mut due: Vec<&Account> = selected(&cfg, only)
            .into_iter()
            .filter(|a| slots.get(&a.name).is_some_and(|s| s.due <= now))
            .collect();
        // Accounts whose last poll failed go last in a round: a dead or
        // stalled server then delays only other failing accounts, never the
        // healthy ones due at the same time.
        due.sort_by_key(|a| {
            let slot = &slots[&a.name];
            (slot.status.consecutive_failures > 0, slot.due)
        });
        for acct in due {
            if signals.stop.load(Ordering::Relaxed) {
                break;
            }
            let slot = slots
                .get_mut(&acct.name)
                .expect("slot exists for every selected account");
            if let Some(n) = &systemd {
                n.watchdog();
            }
            poll_and_record(
                acct,
                &cfg,
                &signals.stop,
                slot,
                connectors,
                log,
                pulse.as_ref(),
            );
            slot.due = Instant::now()
                + next_interval(acct, slot.status.consecutive_failures, slot.permanent);
            write_prom(&cfg, &slots);
            if let Some(n) = &systemd {
                n.watchdog();
                n.status(&status_line(&slots, &acct.name));
            }
        }
        let next = slots.values().map(|s| s.due).min();
        let mut wait = next
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        if let Some(interval) = watchdog {
            // Half the interval, as sd_watchdog_enabled(3) advises, so one
            // late wake-up does not get the service killed.
            wait = wait.min(interval / 2);
        }
        signals.sleep(wait);
    }
    if let Some(n) = &systemd {
        n.stopping();
    }
    log::info!("shutting down");
}

/// Warn about accounts whose `timeout` allows a poll to go longer without
/// a watchdog ping than `WatchdogSec=` (see [`crate::deadline::watchdog_needs`]):
/// systemd would kill a healthy but slow poll.
fn check_watchdog(cfg: &Config, watchdog: Option<Duration>) {
    let Some(interval) = watchdog else {
        return;
    };
    for a in &cfg.accounts {
        let needs = crate::deadline::watchdog_needs(a.timeout);
        if interval < needs {
            log::warn!(
                "{}: timeout = {}s lets a slow but healthy poll go {}s without a watchdog ping, \
                 longer than WatchdogSec={}s: raise WatchdogSec or lower timeout",
                a.name,
                a.timeout.as_secs(),
                needs.as_secs(),
                interval.as_secs()
            );
        }
    }
}

/// `3 account(s) (1 failing), last poll 12:00:01 UTC: sales ok` for
/// `systemctl status`, after a poll of `polled`.
fn status_line(slots: &HashMap<String, Slot>, polled: &str) -> String {
    let failing = slots
        .values()
        .filter(|s| s.status.consecutive_failures > 0)
        .count();
    let mut line = format!("{} account(s)", slots.len());
    if failing > 0 {
        line.push_str(&format!(" ({failing} failing)"));
    }
    let Some(st) = slots.get(polled).map(|s| &s.status) else {
        return line;
    };
    if let Some(at) = st.last_poll {
        // rfc3339 is `YYYY-MM-DDTHH:MM:SSZ`; the time of day is enough here.
        line.push_str(&format!(
            ", last poll {} UTC",
            &timefmt::rfc3339(at)[11..19]
        ));
    }
    match &st.last_error {
        None => line.push_str(&format!(": {polled} ok")),
        Some(e) => {
            let short: String = e.chars().take(STATUS_ERROR_CHARS).collect();
            line.push_str(&format!(": {polled} failed: {short}"));
        }
    }
    line
}

/// An error in the status line is cut here; the log has all of it.
const STATUS_ERROR_CHARS: usize = 120;

fn reload(
    path: &Path,
    cfg: &mut Config,
    slots: &mut HashMap<String, Slot>,
    names: &dyn Fn(&Config) -> Vec<String>,
    log_level: Option<LevelFilter>,
    connectors: &tls::Connectors,
) {
    match config::load(path) {
        Ok(new) => {
            // Before the line below, so a raised level shows it.
            logging::set_level(log_level, new.log_level);
            let wanted = names(&new);
            slots.retain(|k, _| wanted.contains(k));
            for n in &wanted {
                slots.entry(n.clone()).or_insert_with(|| slot_for(&new, n));
            }
            log::info!("SIGHUP: configuration reloaded, {} account(s)", slots.len());
            // The system trust store is read again at the next poll.
            connectors.clear();
            *cfg = new;
        }
        Err(e) => log::error!("SIGHUP: {e}; keeping the previous configuration"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let mut a = config::test_account("h", 1);
        a.poll_interval = Duration::from_secs(60);
        a.error_threshold = 3;
        a.max_backoff = Duration::from_secs(3600);
        assert_eq!(next_interval(&a, 0, false), Duration::from_secs(60));
        assert_eq!(next_interval(&a, 2, false), Duration::from_secs(60));
        assert_eq!(next_interval(&a, 3, false), Duration::from_secs(120));
        assert_eq!(next_interval(&a, 4, false), Duration::from_secs(240));
        assert_eq!(next_interval(&a, 40, false), Duration::from_secs(3600));
    }

    #[test]
    fn permanent_failure_backs_off_at_once() {
        let mut a = config::test_account("h", 1);
        a.poll_interval = Duration::from_secs(60);
        a.error_threshold = 10;
        a.max_backoff = Duration::from_secs(3600);
        assert_eq!(next_interval(&a, 1, true), Duration::from_secs(120));
        assert_eq!(next_interval(&a, 2, true), Duration::from_secs(240));
        assert_eq!(next_interval(&a, 3, true), Duration::from_secs(480));
        assert_eq!(next_interval(&a, 9, true), Duration::from_secs(3600));
        assert_eq!(next_interval(&a, 1, false), Duration::from_secs(60));
    }

    #[test]
    fn status_line_names_the_poll_and_the_failing() {
        let slot = |name: &str, failures: u32, error: Option<&str>| Slot {
            due: Instant::now(),
            memo: Memo::default(),
            status: Status {
                account: name.into(),
                last_poll: Some(1_795_304_466),
                consecutive_failures: failures,
                last_error: error.map(String::from),
                ..Status::default()
            },
            permanent: false,
        };
        let mut slots = HashMap::new();
        slots.insert("sales".to_string(), slot("sales", 0, None));
        slots.insert("hr".to_string(), slot("hr", 2, Some(&"x".repeat(500))));
        slots.insert("ops".to_string(), slot("ops", 0, None));
        assert_eq!(
            status_line(&slots, "sales"),
            "3 account(s) (1 failing), last poll 23:41:06 UTC: sales ok"
        );
        let hr = status_line(&slots, "hr");
        assert!(
            hr.starts_with("3 account(s) (1 failing), last poll 23:41:06 UTC: hr failed: xxx"),
            "{hr}"
        );
        assert_eq!(hr.chars().filter(|&c| c == 'x').count(), STATUS_ERROR_CHARS);
    }
}
