//! Running the real popspool binary against a test setup.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A scratch directory with a config, a spool and a state dir.
pub struct Setup {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub spool: PathBuf,
    pub state: PathBuf,
}

impl Setup {
    pub fn new(tag: &str) -> Setup {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "popspool-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Setup {
            config: dir.join("popspool.ini"),
            spool: dir.join("spool"),
            state: dir.join("state"),
            dir,
        }
    }

    /// Write the config: `[global]` pointing at this setup, then `accounts`.
    pub fn write_config(&self, accounts: &str) {
        let text = format!(
            "[global]\nspool = {}\nstate_dir = {}\nmin_free_space = 0\n\n{accounts}",
            self.spool.display(),
            self.state.display()
        );
        fs::write(&self.config, text).unwrap();
        fs::set_permissions(&self.config, fs::Permissions::from_mode(0o600)).unwrap();
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(bin())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run popspool");
        eprintln!(
            "popspool {args:?} -> {:?}\n--- stdout\n{}--- stderr\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `popspool -c CONFIG --once` started and left running (its log
    /// discarded): for tests that act on the process while it polls.
    pub fn spawn_once(&self) -> Child {
        Command::new(bin())
            .arg("-c")
            .arg(&self.config)
            .arg("--once")
            .stderr(Stdio::null())
            .spawn()
            .expect("start popspool")
    }

    pub fn account_spool(&self, name: &str) -> PathBuf {
        self.spool.join(name)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Sends `sig` (a name: `TERM`, `HUP`, `USR1`) to the running process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill -{sig} {pid}");
}

/// Write a file holding a secret (a password file, a client key) as its
/// owner alone may read it: popspool refuses one that others can read.
pub fn write_private(path: &Path, contents: impl AsRef<[u8]>) {
    fs::write(path, contents).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_popspool"))
}

/// The popspool binary [`once_measured`] measures, when not the test
/// build's (tests/bench/memory.sh sets the release binary).
const MEASURED_BIN_ENV: &str = "POPSPOOL_MEMORY_BIN";

/// Runs `popspool -c CONFIG --once` under `/usr/bin/time -v`; its exit
/// code, stderr and peak RSS in KiB.
pub fn once_measured(s: &Setup) -> (Option<i32>, String, u64) {
    let popspool = std::env::var_os(MEASURED_BIN_ENV).map_or_else(bin, Into::into);
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(popspool)
        .arg("-c")
        .arg(&s.config)
        .arg("--once")
        .output()
        .expect("run /usr/bin/time (tests/deps.sh installs it)");
    let err = stderr(&out);
    let rss = err
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no RSS in GNU time's report:\n{err}"));
    (out.status.code(), err, rss)
}

/// One published entry.
#[derive(Debug)]
pub struct SpoolEntry {
    pub id: String,
    pub message: Vec<u8>,
    pub meta: serde_json::Value,
}

/// Entries of `<spool>/<sub>/`, sorted by ID.
pub fn entries(spool: &Path, sub: &str) -> Vec<SpoolEntry> {
    let d = spool.join(sub);
    let mut v: Vec<SpoolEntry> = match fs::read_dir(&d) {
        Ok(rd) => rd
            .map(|e| {
                let e = e.unwrap();
                let dir = e.path();
                SpoolEntry {
                    id: e.file_name().to_string_lossy().into_owned(),
                    message: fs::read(dir.join("message.eml")).unwrap(),
                    meta: serde_json::from_slice(&fs::read(dir.join("meta.json")).unwrap())
                        .unwrap(),
                }
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// Number of entries in `<spool>/tmp`.
pub fn tmp_count(spool: &Path) -> usize {
    fs::read_dir(spool.join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Sorted copies, for comparing what was sent with what arrived regardless of order.
pub fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}
