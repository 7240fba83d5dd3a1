//! Running a `password_command` (README "Secrets"): the process and
//! everything it starts form a process group of their own, with a minimal
//! environment ([`ENV_KEPT`], [`PATH`]); both pipes are read on the calling
//! thread with poll(2) until a deadline, and when the deadline passes the
//! whole group is killed. No thread is started and no process outlives the
//! call, whatever the helper does (a hung `curl` under `sh -c`, a
//! background job holding the pipes).
//!
//! Unsafe here: poll(2), waitid(2) and kill(2), which std does not offer
//! for a process group.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// The command's PATH, whatever popspool's own: the one systemd gives
/// services, so that a bare program name finds the same program under
/// the unit and from a shell.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The only variables passed on from popspool's environment (when set):
/// who and where the helper is (`pass` and `gpg` find their files under
/// HOME), its language and time zone, and systemd's credentials directory
/// (a helper may read a refresh token from there). Nothing else: not
/// NOTIFY_SOCKET (a helper could report readiness or stop the watchdog in
/// popspool's name), not the test hooks, not whatever the service manager
/// or a shell exported.
pub const ENV_KEPT: [&str; 6] = [
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "TZ",
    "CREDENTIALS_DIRECTORY",
];

/// Read size for the command's pipes.
const CHUNK: usize = 8192;
/// How often to look whether a command whose pipes have closed has
/// exited: little latency added to a fast command, no busy loop.
const WAIT_EVERY: Duration = Duration::from_millis(5);

/// What a command left: its exit status (`None` when the deadline passed
/// and its group was killed) and the start of each pipe.
pub struct Ran {
    /// How it ended; `None`: killed at the deadline.
    pub status: Option<ExitStatus>,
    /// The first bytes of stdout (the secret: wiped on drop).
    pub stdout: Zeroizing<Vec<u8>>,
    /// The first bytes of stderr.
    pub stderr: Vec<u8>,
}

/// Run `argv` (no shell) until it exits and both pipes close, or until
/// `timeout`; keep the first `keep_out` bytes of stdout and `keep_err` of
/// stderr, discarding the rest so the command never blocks on a full pipe.
/// Errors are only those of starting, polling or waiting: the command's
/// own failure is in [`Ran::status`].
pub fn run(
    argv: &[String],
    timeout: Duration,
    keep_out: usize,
    keep_err: usize,
) -> io::Result<Ran> {
    let Some((program, args)) = argv.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no program"));
    };
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear().env("PATH", PATH);
    for name in ENV_KEPT {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    // With process_group(0) the group's id is the child's pid, which stays
    // reserved until the child is reaped: `group` never names another's.
    let group = Group(child.id() as libc::pid_t);
    let deadline = Instant::now().checked_add(timeout);
    let mut ran = Ran {
        status: None,
        stdout: Zeroizing::new(Vec::new()),
        stderr: Vec::new(),
    };
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let finished = drain(out, err, deadline, &mut ran, keep_out, keep_err)
        .and_then(|closed| Ok(closed && group.exited_by(deadline)?));
    // Killed at the deadline, or after the command exited: anything it
    // left behind in its group goes with it (a no-op when nothing is left).
    group.kill();
    let status = child.wait();
    match finished {
        Ok(true) => ran.status = Some(status?),
        Ok(false) => {}
        Err(e) => return Err(e),
    }
    Ok(ran)
}

/// Read both pipes to their end (`Ok(true)`) or until the deadline
/// (`Ok(false)`).
fn drain(
    out: Option<ChildStdout>,
    err: Option<ChildStderr>,
    deadline: Option<Instant>,
    ran: &mut Ran,
    keep_out: usize,
    keep_err: usize,
) -> io::Result<bool> {
    let mut out = out;
    let mut err = err;
    let mut buf = Zeroizing::new([0u8; CHUNK]);
    while out.is_some() || err.is_some() {
        let Some(wait_ms) = remaining_ms(deadline) else {
            return Ok(false);
        };
        let fds = [
            out.as_ref().map(|p| p.as_raw_fd()),
            err.as_ref().map(|p| p.as_raw_fd()),
        ];
        let ready = poll_in(fds, wait_ms)?;
        if ready[0] {
            if let Some(p) = out.as_mut() {
                if !read_some(p, &mut buf[..], &mut ran.stdout, keep_out)? {
                    out = None;
                }
            }
        }
        if ready[1] {
            if let Some(p) = err.as_mut() {
                if !read_some(p, &mut buf[..], &mut ran.stderr, keep_err)? {
                    err = None;
                }
            }
        }
    }
    Ok(true)
}

/// One read from a pipe poll(2) found ready (so it does not block); false at its end.
fn read_some(
    pipe: &mut impl Read,
    buf: &mut [u8],
    kept: &mut Vec<u8>,
    keep: usize,
) -> io::Result<bool> {
    let n = match pipe.read(buf) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
        Err(e) => return Err(e),
    };
    let room = keep.saturating_sub(kept.len());
    kept.extend_from_slice(&buf[..n.min(room)]);
    Ok(n > 0)
}

/// Milliseconds to the deadline for poll(2) (-1: none); `None` once it has passed.
fn remaining_ms(deadline: Option<Instant>) -> Option<libc::c_int> {
    let Some(d) = deadline else {
        return Some(-1);
    };
    let left = d.checked_duration_since(Instant::now())?;
    if left.is_zero() {
        return None;
    }
    // Rounded up, so that poll does not return just before the deadline and spin.
    let ms = left.as_nanos().div_ceil(1_000_000);
    Some(libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX))
}

/// Which of the (open) descriptors have data or have closed, waiting up to `wait_ms`.
#[allow(unsafe_code)]
fn poll_in(fds: [Option<libc::c_int>; 2], wait_ms: libc::c_int) -> io::Result<[bool; 2]> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .flatten()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structures
    // that lives across the call; the descriptors are open (we own the pipes).
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, wait_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok([false, false]);
        }
        return Err(e);
    }
    let mut ready = [false, false];
    let mut results = pfds.iter();
    for (slot, fd) in ready.iter_mut().zip(fds) {
        if fd.is_some() {
            // Readable, closed (POLLHUP) or broken (POLLERR): a read says which.
            *slot = results.next().is_some_and(|p| p.revents != 0);
        }
    }
    Ok(ready)
}

/// The command's process group, named by its leader's pid.
struct Group(libc::pid_t);

impl Group {
    /// Whether the leader exits by the deadline, without reaping it (so its
    /// pid, and with it the group's id, stays reserved until `Child::wait`).
    fn exited_by(&self, deadline: Option<Instant>) -> io::Result<bool> {
        loop {
            if self.leader_exited()? {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            thread::sleep(WAIT_EVERY);
        }
    }

    #[allow(unsafe_code)]
    fn leader_exited(&self) -> io::Result<bool> {
        // SAFETY: an all-zero siginfo_t is a valid value; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: `info` is a valid, writable siginfo_t for the call.
        let rc = unsafe { libc::waitid(libc::P_PID, self.0 as libc::id_t, &mut info, flags) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: waitid succeeded, so `info` is initialised; si_pid is 0
        // when no child has changed state (WNOHANG).
        Ok(unsafe { info.si_pid() } != 0)
    }

    /// SIGKILL to every process left in the group.
    #[allow(unsafe_code)]
    fn kill(&self) {
        // SAFETY: kill(2) takes plain integers. The group id is our
        // unreaped child's pid, so no other process group can have it.
        // ESRCH (nothing left) is the goal already.
        let _ = unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }
}
