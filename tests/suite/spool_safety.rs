//! The spool and `state_dir` against the spool's other users (README, "The
//! spool" and "Security notes"): a second popspool process on the same
//! spool, a consumer in the service's group planting a symlink or a FIFO in
//! an entry being built, planted state temp names, and directories others
//! can write. The scripted server drips its replies, so that a poll stays
//! inside `tmp/` long enough for the other party to act.
//!
//! The consumer is a thread of this test process that has switched its own
//! user ID (and only its own: a raw `setresuid(2)`, not glibc's process-wide
//! wrapper) to `nobody`, keeping group root, which owns the test spool: a
//! member of the service's group, as README's consumers are. That, and the
//! ramfs mount (a file system where popspool fsyncs file by file), need root.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::fake::{Drip, FakeServer, Faults};
use crate::common::mail::crlf;
use crate::common::popspool::{bin, entries, sorted, stderr, tmp_count, Setup};
use crate::common::relay::b64_encode;

/// How long a poll of a few dripped messages may take before it counts as hung.
const HANG: Duration = Duration::from_secs(30);

/// The consumer's user: not the spool's owner, in its group.
const CONSUMER_UID: libc::uid_t = 65534;

fn messages(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let body = format!("line {i} of a message that takes a while to arrive\n").repeat(40);
            crlf(crate::common::mail::simple(i, &format!("m{i}"), &body))
        })
        .collect()
}

/// Replies dripped in 256-byte chunks every 20 ms on the first connection:
/// each 2 KiB message spends about 0.2 s in `tmp/`.
fn dripping() -> Faults {
    Faults {
        drip: Some(Drip {
            delay: Duration::from_millis(20),
            chunk: 256,
            connections_before: 1,
        }),
        ..Faults::default()
    }
}

fn start(config: &Path) -> Child {
    Command::new(bin())
        .arg("-c")
        .arg(config)
        .arg("--once")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The process's output, or a failed test (after killing it) if it has not
/// ended within [`HANG`].
fn finish(mut child: Child, what: &str) -> Output {
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > HANG {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what}: popspool hung; stderr:\n{}", stderr(&out));
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    eprintln!("{what} -> {:?}\n{}", out.status.code(), stderr(&out));
    out
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < HANG, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

fn assert_each_once(spool: &Path, sent: &[Vec<u8>]) {
    let got: Vec<Vec<u8>> = entries(spool, "new")
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(got.len(), sent.len(), "every message in new/ exactly once");
    assert!(sorted(got) == sorted(sent.to_vec()), "byte-exact");
    assert_eq!(tmp_count(spool), 0, "nothing left in tmp/");
}

/// Two configs, two `state_dir`s, one account name and one spool root (two
/// `popspool@` instances set up by mistake, here for two mailboxes): the
/// second process must not clean `tmp/` under the first, which would make
/// the first journal, and on its next poll delete on the server, messages
/// that never reached `new/`.
#[test]
fn a_second_process_on_the_same_spool_stays_out() {
    let msgs = messages(6);
    let srv = FakeServer::start(msgs.clone(), dripping());
    let other = FakeServer::start(Vec::new(), Faults::default());
    let a = Setup::new("spool-a");
    a.write_config(&srv.account("shared", ""));
    let b = Setup::new("spool-b");
    let text = format!(
        "[global]\nspool = {}\nstate_dir = {}\nmin_free_space = 0\n\n{}",
        a.spool.display(),
        b.state.display(),
        other.account("shared", "")
    );
    crate::common::popspool::write_private(&b.config, text);
    let spool = a.account_spool("shared");

    let first = start(&a.config);
    // One message staged and the next one arriving.
    wait_for("entries in tmp/", || tmp_count(&spool) >= 2);
    let second = finish(start(&b.config), "second process");
    assert!(
        stderr(&second).contains(&format!(
            "spool {} is in use by another popspool process",
            spool.display()
        )),
        "{}",
        stderr(&second)
    );
    assert_eq!(second.status.code(), Some(75), "temporary: try again later");
    let first = finish(first, "first process");
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    // Whatever the first run left, another run of its own settles it.
    assert_eq!(a.run(&["--once"]).status.code(), Some(0));
    assert_eq!(srv.remaining(), 0, "all deleted on the server");
    assert_each_once(&spool, &msgs);
    assert_eq!(
        other.connections(),
        0,
        "the second process stopped before connecting"
    );
}

/// Runs `attack` as a consumer (see the module docs) until `stop` is set;
/// returns how many times it succeeded.
fn as_consumer(
    stop: &Arc<AtomicBool>,
    attack: impl Fn() -> usize + Send + 'static,
) -> thread::JoinHandle<usize> {
    let stop = Arc::clone(stop);
    thread::spawn(move || {
        // SAFETY: a raw system call changing this thread's user IDs only.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_setresuid,
                CONSUMER_UID,
                CONSUMER_UID,
                CONSUMER_UID,
            )
        };
        assert_eq!(rc, 0, "setresuid needs root");
        let mut won = 0;
        while !stop.load(Ordering::Relaxed) {
            won += attack();
            thread::sleep(Duration::from_micros(200));
        }
        won
    })
}

/// The entries in `tmp/` a consumer can list.
fn tmp_entries(spool: &Path) -> Vec<PathBuf> {
    fs::read_dir(spool.join("tmp"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// A message whose first attachment takes a while to decode: the window
/// in which a consumer could swap `attachments/` for a symlink before the
/// second attachment is created.
fn two_attachments() -> Vec<u8> {
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let b64 = b64_encode(&big);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    crlf(
        format!(
            "From: a@example.org\nTo: b@example.com\nSubject: two attachments\n\
             Message-ID: <two@example.org>\nMIME-Version: 1.0\n\
             Content-Type: multipart/mixed; boundary=\"b\"\n\n--b\n\
             Content-Type: text/plain\n\nbody\n--b\n\
             Content-Type: application/octet-stream\n\
             Content-Disposition: attachment; filename=\"big.bin\"\n\
             Content-Transfer-Encoding: base64\n\n{}\n--b\n\
             Content-Type: application/octet-stream\n\
             Content-Disposition: attachment; filename=\"small.bin\"\n\
             Content-Transfer-Encoding: base64\n\naGVsbG8=\n--b--\n",
            lines.join("\n")
        )
        .into_bytes(),
    )
}

#[test]
#[ignore = "needs root (a consumer's uid)"]
fn a_consumer_cannot_redirect_attachments_out_of_the_spool() {
    let msg = two_attachments();
    let srv = FakeServer::start(vec![msg.clone()], Faults::default());
    let s = Setup::new("symlink");
    s.write_config(&srv.account("sym", "timeout = 20s"));
    let spool = s.account_spool("sym");
    let outside = s.dir.join("outside");
    fs::create_dir(&outside).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (sp, out) = (spool.clone(), outside.clone());
    let consumer = as_consumer(&stop, move || {
        let mut won = 0;
        for e in tmp_entries(&sp) {
            let att = e.join("attachments");
            if fs::symlink_metadata(&att).is_ok_and(|m| m.is_dir())
                && fs::rename(&att, e.join("moved")).is_ok()
                && symlink(&out, &att).is_ok()
            {
                won += 1;
            }
        }
        won
    });
    let run = finish(start(&s.config), "poll");
    stop.store(true, Ordering::Relaxed);
    let won = consumer.join().unwrap();
    let leaked: Vec<_> = fs::read_dir(&outside).unwrap().collect();
    assert!(
        leaked.is_empty(),
        "files created outside the spool ({won} swaps): {leaked:?}"
    );
    assert_eq!(won, 0, "the consumer reached an unpublished entry");
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let got = entries(&spool, "new");
    assert_eq!(got.len(), 1);
    let dir = spool.join("new").join(&got[0].id);
    assert_eq!(
        fs::read(dir.join("attachments/small.bin")).unwrap(),
        b"hello"
    );
    let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o770, "published as before: the group takes it");
}

struct Ramfs(PathBuf);

impl Drop for Ramfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// On ramfs (not a file system whose syncfs popspool trusts) each file of
/// an entry is opened and fsynced: a FIFO a consumer planted in an entry
/// would block that open forever.
#[test]
#[ignore = "needs root (a consumer's uid, a ramfs mount)"]
fn a_planted_fifo_cannot_hang_the_poll() {
    let msgs = messages(3);
    let srv = FakeServer::start(msgs.clone(), dripping());
    let s = Setup::new("fifo");
    fs::create_dir(&s.spool).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "ramfs", "ramfs"])
        .arg(&s.spool)
        .status()
        .unwrap();
    assert!(ok.success(), "mounting ramfs needs root");
    let _mount = Ramfs(s.spool.clone());
    s.write_config(&srv.account("fifo", ""));
    let spool = s.account_spool("fifo");

    let stop = Arc::new(AtomicBool::new(false));
    let sp = spool.clone();
    let consumer = as_consumer(&stop, move || {
        static N: AtomicUsize = AtomicUsize::new(0);
        let mut won = 0;
        for e in tmp_entries(&sp) {
            let n = N.fetch_add(1, Ordering::Relaxed);
            let fifo = CString::new(format!("{}/zz-{n}.fifo", e.display())).unwrap();
            // SAFETY: a NUL-terminated path that outlives the call.
            if unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) } == 0 {
                won += 1;
            }
        }
        won
    });
    let run = finish(start(&s.config), "poll");
    stop.store(true, Ordering::Relaxed);
    let won = consumer.join().unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert_eq!(won, 0, "the consumer reached an unpublished entry");
    assert_each_once(&spool, &msgs);
}

/// The temp names the state files were once written through
/// (`.<name>.<pid>.tmp`, the start-up write test) are predictable: planted
/// as a symlink or a FIFO, they must be neither followed nor opened.
#[test]
fn planted_state_temp_names_are_not_followed() {
    let msgs = messages(1);
    let srv = FakeServer::start(msgs.clone(), Faults::default());
    let s = Setup::new("plant");
    s.write_config(&srv.account("p", ""));
    fs::create_dir(&s.state).unwrap();
    fs::set_permissions(&s.state, fs::Permissions::from_mode(0o750)).unwrap();
    let victim = s.dir.join("victim");
    fs::write(&victim, b"precious").unwrap();
    // `$$` is the shell's PID, which exec hands to popspool.
    let script = r#"
        st=$1; v=$2; shift 2
        ln -s "$v" "$st/.popspool.prom.$$.tmp"
        ln -s "$v" "$st/.popspool-write-test"
        mkfifo "$st/.p.status.json.$$.tmp"
        exec "$@"
    "#;
    let child = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(&s.state)
        .arg(&victim)
        .arg(bin())
        .arg("-c")
        .arg(&s.config)
        .arg("--once")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = finish(child, "poll");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    for f in ["popspool.prom", "p.status.json"] {
        let m = fs::symlink_metadata(s.state.join(f)).unwrap();
        assert!(m.is_file(), "{f} is a regular file of its own");
    }
    assert_each_once(&s.account_spool("p"), &msgs);
}

/// A spool or `state_dir` someone else can write is refused before any
/// work, naming the directory (exit 73); so is a spool reached through
/// someone else's symlink.
#[test]
fn directories_others_can_change_are_refused_at_start() {
    let srv = FakeServer::start(messages(1), Faults::default());
    let s = Setup::new("shared");
    s.write_config(&srv.account("w", ""));
    let spool = s.account_spool("w");
    fs::create_dir_all(&spool).unwrap();
    let refused = |dir: &Path, what: &str| {
        let out = s.run(&["--once"]);
        assert_eq!(out.status.code(), Some(73), "{}", stderr(&out));
        let text = stderr(&out);
        assert!(text.contains(&dir.display().to_string()), "{text}");
        assert!(text.contains(what), "{text}");
        assert_eq!(srv.connections(), 0, "refused before connecting");
    };
    for mode in [0o777, 0o775, 0o1777] {
        fs::set_permissions(&spool, fs::Permissions::from_mode(mode)).unwrap();
        refused(&spool, "writable by group or others");
    }
    fs::set_permissions(&spool, fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(&s.state, fs::Permissions::from_mode(0o777)).unwrap();
    refused(&s.state, "writable by group or others");
    fs::set_permissions(&s.state, fs::Permissions::from_mode(0o750)).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // The account's spool as a symlink that another user made.
        let real = s.dir.join("real-spool");
        fs::rename(&spool, &real).unwrap();
        symlink(&real, &spool).unwrap();
        std::os::unix::fs::lchown(&spool, Some(CONSUMER_UID), None).unwrap();
        refused(&spool, "a symlink made by uid 65534");
        fs::remove_file(&spool).unwrap();
        fs::rename(&real, &spool).unwrap();
    }
    assert_eq!(s.run(&["--once"]).status.code(), Some(0));
    assert_eq!(entries(&spool, "new").len(), 1);
}
