//! The packages and the man pages: the man pages hold every configuration
//! key the parser accepts and every option the binary offers, and
//! packaging/test-packages.sh builds the .deb and .rpm, installs them into
//! scratch roots and checks them (it needs root, so a plain `cargo test`
//! ignores it; `tests/run.sh` runs it).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use popspool::config::{ACCOUNT_KEYS, GLOBAL_KEYS};

fn top() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn man_page(name: &str) -> String {
    fs::read_to_string(top().join("packaging/man").join(name)).unwrap()
}

/// The roff text without font changes and with `\-` as a plain hyphen.
fn plain(roff: &str) -> String {
    roff.replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\fP", "")
        .replace("\\-", "-")
}

/// The lines of section `.SH title`, up to the next `.SH`.
fn section<'a>(roff: &'a str, title: &str) -> Vec<&'a str> {
    let header = format!(".SH {title}");
    let mut lines = roff.lines().skip_while(|l| *l != header);
    assert!(lines.next().is_some(), "no section {header}");
    lines.take_while(|l| !l.starts_with(".SH ")).collect()
}

/// The tag lines of `.TP` entries (the line after each `.TP`).
fn tags<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    lines
        .windows(2)
        .filter(|w| w[0] == ".TP")
        .map(|w| w[1])
        .collect()
}

/// The keys an INI man page section documents: tags of the form `.B key`.
fn documented_keys(roff: &str, title: &str) -> BTreeSet<String> {
    tags(&section(roff, title))
        .iter()
        .map(|t| {
            t.strip_prefix(".B ")
                .unwrap_or_else(|| panic!("{title}: tag {t:?} is not '.B key'"))
                .to_string()
        })
        .collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

#[test]
fn ini_man_page_documents_exactly_the_parsers_keys() {
    let page = man_page("popspool.ini.5");
    assert_eq!(documented_keys(&page, "GLOBAL KEYS"), set(GLOBAL_KEYS));
    assert_eq!(documented_keys(&page, "ACCOUNT KEYS"), set(ACCOUNT_KEYS));
    // Each account key says what it is when unset.
    let account = section(&page, "ACCOUNT KEYS").join("\n");
    for entry in account.split(".TP\n").skip(1) {
        let key = entry.lines().next().unwrap_or_default();
        assert!(
            entry.contains("Default") || entry.contains("Required"),
            "{key}: no default stated"
        );
    }
}

fn help() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_popspool"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn man_page_documents_every_option_and_exit_status() {
    let help = help();
    let options: BTreeSet<&str> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| {
            (w.len() == 2 && w.starts_with('-') && w != &"--")
                || (w.len() > 2 && w.starts_with("--"))
        })
        .collect();
    assert!(
        options.len() >= 12,
        "too few options found in --help: {options:?}"
    );
    let page = man_page("popspool.8");
    let tagged: BTreeSet<String> = tags(&section(&page, "OPTIONS"))
        .iter()
        .flat_map(|t| {
            plain(t)
                .split(|c: char| c.is_whitespace() || c == ',' || c == '"')
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    for o in &options {
        assert!(
            tagged.contains(*o),
            "{o} (from --help) has no entry in popspool.8 OPTIONS"
        );
    }
    // "Exit status: 0 ok, 64 usage, ..." in --help: each code has an entry.
    let codes = help
        .split_once("Exit status:")
        .expect("--help states the exit status")
        .1;
    let codes: Vec<&str> = codes
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .collect();
    assert!(codes.len() >= 7, "{codes:?}");
    let documented = tags(&section(&page, "EXIT STATUS"));
    for code in codes {
        assert!(
            documented.contains(&format!(".B {code}").as_str()),
            "exit status {code} has no entry in popspool.8"
        );
    }
}

#[test]
fn man_pages_carry_the_crate_version() {
    let version = format!("\"popspool {}\"", env!("CARGO_PKG_VERSION"));
    for page in ["popspool.8", "popspool.ini.5"] {
        let th = man_page(page)
            .lines()
            .find(|l| l.starts_with(".TH "))
            .map(String::from)
            .unwrap();
        assert!(th.contains(&version), "{page}: {th}");
    }
}

/// Long enough for a first run on a clean machine: cargo-deb and
/// cargo-generate-rpm compile for about 6 minutes on 2 cores unless
/// tests/deps.sh installed them already, then the release build.
const SCRIPT_TIME_LIMIT: Duration = Duration::from_secs(20 * 60);

#[test]
#[ignore = "needs root (packages) and systemd-nspawn"]
fn packages_build_install_and_run() {
    let log_path =
        std::env::temp_dir().join(format!("popspool-test-packages-{}.log", std::process::id()));
    let log = File::create(&log_path).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(top().join("packaging/test-packages.sh"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // Its own process group, so a timeout ends cargo and dpkg with it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().expect("run packaging/test-packages.sh");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > SCRIPT_TIME_LIMIT {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = fs::read_to_string(&log_path).unwrap_or_default();
    let _ = fs::remove_file(&log_path);
    let shown = tail(&output, 80);
    match status {
        Some(s) if s.success() => {
            assert!(output.contains("test-packages: ok"), "{shown}");
            // The figures for the notes.
            for line in output
                .lines()
                .filter(|l| l.starts_with("test-packages: sizes") || l.contains("exposure"))
            {
                eprintln!("{line}");
            }
        }
        Some(s) => panic!("test-packages.sh failed ({s}):\n{shown}"),
        None => panic!("test-packages.sh ran over {SCRIPT_TIME_LIMIT:?}:\n{shown}"),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
