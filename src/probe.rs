//! `--check` and `--probe`: tell the operator what popspool sees, never a
//! secret, and never change anything on the server.

use std::time::Duration;

use crate::config::{Account, Config, Delete, SecretSource, TlsMode};
use crate::poll::{self, Opened};
use crate::pop3::proto::sanitize;
use crate::secret;
use crate::tls::{self, Stream};

/// `password_command` gets this long under `--check` and `--probe`, as in a poll.
fn secret_timeout(acct: &Account) -> Duration {
    acct.timeout
}

fn selected<'a>(cfg: &'a Config, only: &'a [String]) -> impl Iterator<Item = &'a Account> {
    cfg.accounts
        .iter()
        .filter(move |a| only.is_empty() || only.contains(&a.name))
}

fn secret_text(s: &SecretSource) -> String {
    match s {
        SecretSource::Inline(_) => "inline password (hidden)".into(),
        SecretSource::File(p) => format!("password_file {}", p.display()),
        SecretSource::Command(argv) => format!(
            "password_command {}",
            argv.first().map(String::as_str).unwrap_or("")
        ),
    }
}

fn tls_text(t: TlsMode) -> &'static str {
    match t {
        TlsMode::Implicit => "implicit",
        TlsMode::StartTls => "starttls",
        TlsMode::None => "none",
    }
}

/// `--check`: validate and summarise. Returns the exit code (0 or 78).
pub fn check(cfg: &Config, only: &[String]) -> u8 {
    println!("configuration {}: ok", cfg.path.display());
    println!("spool     {}", cfg.spool.display());
    println!("state_dir {}", cfg.state_dir.display());
    let mut bad = 0;
    for a in selected(cfg, only) {
        println!("[account {}]", a.name);
        println!("  server   {}:{} tls={}", a.host, a.port, tls_text(a.tls));
        println!(
            "  login    user {:?}, auth {:?}, {}",
            a.user,
            a.auth,
            secret_text(&a.secret)
        );
        let delete = match a.delete {
            Delete::Yes => "yes".to_string(),
            Delete::No => "no".to_string(),
            Delete::After(d) => format!("after {}s", d.as_secs()),
        };
        println!(
            "  polling  every {}s, timeout {}s, delete {delete}, mime {}",
            a.poll_interval.as_secs(),
            a.timeout.as_secs(),
            if a.mime { "yes" } else { "no" }
        );
        println!("  spool    {}", a.spool.display());
        match secret::resolve(&a.secret, secret_timeout(a)) {
            Ok(_) => println!("  secret   ok"),
            Err(e) => {
                println!("  secret   ERROR: {e}");
                bad += 1;
            }
        }
        if a.tls != TlsMode::None {
            match tls::Tls::new(a) {
                Ok(_) => println!("  tls      ok"),
                Err(e) => {
                    println!("  tls      ERROR: {e}");
                    bad += 1;
                }
            }
        }
    }
    if bad > 0 {
        println!("{bad} problem(s) found");
        78
    } else {
        0
    }
}

/// `--probe`: connect to each selected account and report. Returns 0 when
/// every account could log in, else 75.
pub fn probe(cfg: &Config, only: &[String]) -> u8 {
    let mut code = 0;
    for a in selected(cfg, only) {
        println!(
            "[account {}] {}:{} tls={}",
            a.name,
            a.host,
            a.port,
            tls_text(a.tls)
        );
        if let Err(e) = probe_one(a) {
            println!("  ERROR: {e}");
            code = 75;
        }
    }
    code
}

fn probe_one(a: &Account) -> Result<(), poll::Error> {
    let password = secret::resolve(&a.secret, secret_timeout(a)).map_err(poll::Error::Secret)?;
    let Opened {
        mut session,
        caps,
        greeting,
        mechanism,
    } = match poll::open(a, &password) {
        Ok(o) => o,
        Err(e) => {
            println!("  login    FAILED");
            return Err(e);
        }
    };
    // Server text is untrusted: no control characters reach the terminal.
    println!("  greeting {}", sanitize(&greeting.text, 300));
    println!("  capa     {}", sanitize(&caps.raw.join(" | "), 1000));
    if let Some(cert) = session.get_ref().peer_certificate() {
        println!("  subject  {}", tls::name_text(cert.subject_name()));
        println!("  issuer   {}", tls::name_text(cert.issuer_name()));
        println!("  valid    {} .. {}", cert.not_before(), cert.not_after());
        println!("  sha256   {}", tls::hex_colon(&tls::fingerprint(&cert)));
    }
    let via = if matches!(session.get_ref(), Stream::Tls(_)) {
        "TLS"
    } else {
        "plain TCP"
    };
    println!("  login    ok with {} over {via}", mechanism.name());
    let (count, size) = session.stat().map_err(poll::Error::Pop3)?;
    println!("  mailbox  {count} message(s), {size} bytes");
    // QUIT without any DELE: nothing changes on the server.
    session.quit().map_err(poll::Error::Pop3)?;
    Ok(())
}
