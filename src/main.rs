//! popspool command line: parse flags, load the configuration, run.

use std::path::PathBuf;
use std::process::ExitCode;

use log::LevelFilter;
use popspool::config::{self, Config};
use popspool::exit::Exit;
use popspool::{daemon, probe, tls};

const USAGE: &str = "\
usage: popspool [-c FILE] [--once] [--check] [--probe] [-a NAME]... [--log-level LEVEL]
       popspool --version | --help

  -c, --config FILE    configuration file (default /etc/popspool/popspool.ini)
      --once           poll every selected account once, then exit
      --check          validate the configuration, secrets and key files, print a summary
      --probe          show what each selected server offers and whether login works;
                       changes nothing on the server
  -a, --account NAME   only this account (may be repeated)
      --log-level L    error, warn, info, debug or trace (overrides the file)
  -V, --version        print the version
  -h, --help           print this help

Without --once, --check or --probe, popspool runs in the foreground as a service.
Exit status: 0 ok, 64 usage, 66 config unreadable, 78 config invalid,
73 spool/state directory unusable, 75 an account failed (--once), 70 internal error.";

#[derive(Debug, Default)]
struct Args {
    config: Option<PathBuf>,
    once: bool,
    check: bool,
    probe: bool,
    accounts: Vec<String>,
    log_level: Option<LevelFilter>,
}

enum Parsed {
    Run(Args),
    Help,
    Version,
}

fn parse_level(s: &str) -> Option<LevelFilter> {
    match s {
        "error" => Some(LevelFilter::Error),
        "warn" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        _ => None,
    }
}

fn parse_args() -> Result<Parsed, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut a = Args::default();
    let text = |v: std::ffi::OsString| {
        v.into_string()
            .map_err(|_| "argument is not valid UTF-8".to_string())
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('c') | Long("config") => {
                a.config = Some(p.value().map_err(|e| e.to_string())?.into())
            }
            Long("once") => a.once = true,
            Long("check") => a.check = true,
            Long("probe") => a.probe = true,
            Short('a') | Long("account") => a
                .accounts
                .push(text(p.value().map_err(|e| e.to_string())?)?),
            Long("log-level") => {
                let v = text(p.value().map_err(|e| e.to_string())?)?;
                a.log_level =
                    Some(parse_level(&v).ok_or_else(|| format!("invalid --log-level '{v}'"))?);
            }
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Short('V') | Long("version") => return Ok(Parsed::Version),
            other => return Err(other.unexpected().to_string()),
        }
    }
    if [a.once, a.check, a.probe].iter().filter(|x| **x).count() > 1 {
        return Err("--once, --check and --probe exclude each other".into());
    }
    Ok(Parsed::Run(a))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Parsed::Run(a)) => a,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("popspool {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("popspool: {e}\n{USAGE}");
            return Exit::Usage.into();
        }
    };
    let log = popspool::logging::init();
    // A panic is reported once, by whoever catches it, never by the hook:
    // the hook only records where and why. The MIME decoder's guard catches
    // a panic in the decoder, logs it and delivers the message raw, and the
    // service goes on; any other panic unwinds to here (destructors run,
    // held log lines go out), is logged as one line and ends the process
    // with EX_SOFTWARE (popspool(8), EXIT STATUS) instead of Rust's 101
    // and a backtrace hint. Exiting in the hook itself would defeat the
    // guard.
    std::panic::set_hook(Box::new(record_panic));
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(args, log))) {
        Ok(exit) => exit.into(),
        Err(_) => {
            let what = LAST_PANIC
                .with_borrow_mut(Option::take)
                .unwrap_or_else(|| "panic".into());
            log::error!("internal error ({what}); exiting");
            log::logger().flush();
            Exit::Software.into()
        }
    }
}

thread_local! {
    /// The last panic's place and message, for whoever catches it.
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

fn record_panic(info: &std::panic::PanicHookInfo<'_>) {
    let what = popspool::logging::panic_message(info.payload());
    let text = match info.location() {
        Some(l) => format!("panic at {}:{}:{}: {what}", l.file(), l.line(), l.column()),
        None => format!("panic: {what}"),
    };
    LAST_PANIC.set(Some(text));
}

fn run(args: Args, log: popspool::logging::Output) -> Exit {
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let cfg = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("popspool: {e}");
            return e.exit_code();
        }
    };
    popspool::logging::set_level(args.log_level, cfg.log_level);
    if let Some(unknown) = args
        .accounts
        .iter()
        .find(|n| !cfg.accounts.iter().any(|a| &a.name == *n))
    {
        eprintln!("popspool: no account '{unknown}' in {}", path.display());
        return Exit::Usage;
    }
    let connectors = tls::Connectors::for_system();
    match connectors.on_demand_dir() {
        Some(dir) => log::debug!("system trust store: {}, read on demand", dir.display()),
        None => log::debug!("system trust store: OpenSSL's default paths, read whole"),
    }
    if args.check {
        return probe::check(&cfg, &args.accounts, &connectors);
    }
    if args.probe {
        return probe::probe(&cfg, &args.accounts, &connectors);
    }
    if let Err(e) = prepare_dirs(&cfg, &args.accounts) {
        eprintln!("popspool: {e}");
        return Exit::CantCreate;
    }
    let mut signals = match daemon::Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("popspool: cannot install signal handlers: {e}");
            return Exit::Software;
        }
    };
    if args.once {
        return daemon::run_once(&cfg, &args.accounts, &signals.stop, &connectors, log);
    }
    daemon::run(
        &path,
        cfg,
        &args.accounts,
        args.log_level,
        &mut signals,
        &connectors,
        log,
    );
    Exit::Ok
}

/// `state_dir` and the spools that exist must be writable by popspool
/// alone (README, "Security notes"); a missing spool is made by its poll.
fn prepare_dirs(cfg: &Config, only: &[String]) -> Result<(), String> {
    let state = &cfg.state_dir;
    popspool::fsafe::prepare_private_dir(state)
        .map_err(|e| format!("state_dir {}: {e}", state.display()))?;
    let selected = cfg
        .accounts
        .iter()
        .filter(|a| only.is_empty() || only.contains(&a.name));
    for dir in selected.flat_map(|a| [a.spool.clone(), a.spool.join("tmp")]) {
        if dir.exists() {
            popspool::fsafe::open_private_dir(&dir)
                .map_err(|e| format!("spool directory {}: {e}", dir.display()))?;
        }
    }
    Ok(())
}
