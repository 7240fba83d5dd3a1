//! `--check` and `--probe`: tell the operator what popspool sees, never a
//! secret, and never change anything on the server.

use std::time::Duration;

use crate::auth;
use crate::config::{Account, Auth, Config, Delete, MdnMode, SecretSource, Smtp, TlsMode};
use crate::exit::Exit;
use crate::poll::{self, Connected};
use crate::secret;
use crate::smime;
use crate::smtp;
use crate::text::printable;
use crate::tls;

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
        SecretSource::None => "no password (the TLS client certificate logs in)".into(),
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

/// `--check`: validate and summarise. Returns [`Exit::Config`] when a
/// secret or TLS file is unusable.
pub fn check(cfg: &Config, only: &[String], connectors: &tls::Connectors) -> Exit {
    println!("configuration {}: ok", cfg.path.display());
    println!("spool     {}", cfg.spool.display());
    println!("state_dir {}", cfg.state_dir.display());
    let mut bad = 0;
    for a in selected(cfg, only) {
        println!("[account {}]", a.name);
        println!("  server   {}:{} tls={}", a.host, a.port, tls_text(a.tls));
        println!(
            "  login    user {:?}, auth {}, {}",
            a.user,
            a.auth.name(),
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
            match connectors.get(&tls::Settings::of(a)) {
                Ok(_) => println!("  tls      ok"),
                Err(e) => {
                    println!("  tls      ERROR: {e}");
                    bad += 1;
                }
            }
        }
        if let Some(s) = &a.smtp {
            bad += check_smtp(a, s, connectors);
        }
        smime_lines(a);
    }
    if bad > 0 {
        println!("{bad} problem(s) found");
        Exit::Config
    } else {
        Exit::Ok
    }
}

/// The SMTP lines of `--check` (README, "Acknowledgments (MDN)"); returns
/// the number of problems.
fn check_smtp(a: &Account, s: &Smtp, connectors: &tls::Connectors) -> usize {
    let mut bad = 0;
    let mdn = match a.mdn {
        MdnMode::Auto => "auto",
        MdnMode::Never => "never",
    };
    let from = s.from.as_deref().unwrap_or("(no mdn_from)");
    println!("  mdn      {mdn}, from {}", printable(from, 200));
    println!("  smtp     {}:{} tls={}", s.host, s.port, tls_text(s.tls));
    match &s.user {
        Some(user) => {
            println!("  smtp login user {user:?}, {}", secret_text(&s.secret));
            match secret::resolve(&s.secret, secret_timeout(a)) {
                Ok(_) => println!("  smtp secret ok"),
                Err(e) => {
                    println!("  smtp secret ERROR: {e}");
                    bad += 1;
                }
            }
        }
        None => println!("  smtp login none (no smtp_user)"),
    }
    if let (TlsMode::Implicit | TlsMode::StartTls, Some(server)) = (s.tls, smtp::Server::of(a)) {
        match connectors.get(&server.tls_settings()) {
            Ok(_) => println!("  smtp tls ok"),
            Err(e) => {
                println!("  smtp tls ERROR: {e}");
                bad += 1;
            }
        }
    }
    bad
}

/// `--probe`'s SMTP part: what the server offers and whether the login
/// works; sends no message.
fn probe_smtp(a: &Account, s: &Smtp, connectors: &tls::Connectors) -> Result<(), String> {
    let Some(server) = smtp::Server::of(a) else {
        return Ok(());
    };
    println!("  smtp     {}:{} tls={}", s.host, s.port, tls_text(s.tls));
    let mut session = smtp::open(&server, connectors).map_err(|e| {
        println!("  smtp connect FAILED");
        e.to_string()
    })?;
    println!("  smtp greeting {}", session.greeting.text());
    let stream = session.conn.get_ref();
    if let Some(cert) = stream.peer_certificate() {
        let cert = tls::CertInfo::of(&cert);
        println!("  smtp subject {}", cert.subject);
        println!("  smtp sha256  {}", cert.sha256);
    }
    match stream.negotiated() {
        Some((version, cipher)) => println!("  smtp tls {version}, {cipher}"),
        None => println!("  smtp tls none: plain TCP"),
    }
    println!(
        "  smtp ehlo {}",
        printable(&session.ehlo.keywords.join(" | "), 1000)
    );
    let result = match (&s.user, &s.secret) {
        (Some(user), src) if *src != SecretSource::None => {
            match secret::resolve(src, secret_timeout(a)) {
                Err(e) => {
                    println!("  smtp login not tried: no password");
                    Err(format!("SMTP password: {e}"))
                }
                Ok(_) if !session.tls && !a.allow_plaintext => {
                    println!("  smtp login not tried: no TLS and allow_plaintext = no");
                    Err("refusing to send the SMTP password without TLS".into())
                }
                Ok(pw) => match session.login(&server, user, pw.expose()) {
                    Ok(m) => {
                        println!("  smtp login ok with {}", m.name());
                        Ok(())
                    }
                    Err(e) => {
                        println!("  smtp login FAILED");
                        Err(e.to_string())
                    }
                },
            }
        }
        _ => {
            println!("  smtp login none (no smtp_user)");
            Ok(())
        }
    };
    session.conn.quit();
    result
}

/// `--check`'s S/MIME lines: the policy, and the decryption certificate
/// with its expiry (a warning within a month of it). The files were loaded
/// and checked with the configuration.
fn smime_lines(a: &Account) {
    let s = &a.smime;
    let id = s.loaded.as_ref().and_then(|l| l.identity.as_ref());
    if id.is_none() && s.files.ca_file.is_none() && s.policy == smime::Policy::Accept {
        return;
    }
    println!("  smime    policy {}", s.policy.name());
    if let Some(id) = id {
        let (line, warning) = smime::keys::describe(id);
        println!("  smime    {line}");
        if let Some(w) = warning {
            println!("  smime    WARNING: {w}");
        }
    }
    if let Some(ca) = &s.files.ca_file {
        let n = s.loaded.as_ref().map_or(0, |l| l.anchors.len());
        println!(
            "  smime    smime_ca_file {}: {n} certificate(s)",
            ca.display()
        );
    }
}

/// `--probe`: connect to each selected account and report. Returns
/// [`Exit::TempFail`] when an account could not log in.
pub fn probe(cfg: &Config, only: &[String], connectors: &tls::Connectors) -> Exit {
    let mut code = Exit::Ok;
    for a in selected(cfg, only) {
        println!(
            "[account {}] {}:{} tls={}",
            a.name,
            a.host,
            a.port,
            tls_text(a.tls)
        );
        if let Err(e) = probe_one(a, connectors) {
            println!("  ERROR: {e}");
            code = Exit::TempFail;
        }
        if let Some(s) = &a.smtp {
            if let Err(e) = probe_smtp(a, s, connectors) {
                println!("  SMTP ERROR: {e}");
                code = Exit::TempFail;
            }
        }
    }
    code
}

fn probe_one(a: &Account, connectors: &tls::Connectors) -> Result<(), poll::Error> {
    let Connected {
        client,
        greeting,
        caps,
    } = match poll::connect(a, connectors, None) {
        Ok(c) => c,
        Err(e) => {
            println!("  connect  FAILED");
            return Err(e);
        }
    };
    // Server text is untrusted: no control characters reach the terminal.
    println!("  greeting {}", printable(&greeting.text, 300));
    let tls_active = client.get_ref().is_tls();
    if tls_active {
        let main = client
            .get_ref()
            .peer_certificate()
            .map(|c| tls::CertInfo::of(&c));
        if let Some(cert) = &main {
            print_cert(cert);
        }
        if let Some((version, cipher)) = client.get_ref().negotiated() {
            println!("  tls      {version}, {cipher}");
        }
    } else {
        println!("  tls      none: plain TCP");
    }
    println!("  capa     {}", printable(&caps.raw.join(" | "), 1000));
    let offered = auth::offered(&greeting, &caps);
    println!(
        "  offers   {}",
        if offered.is_empty() {
            "no login mechanism".to_string()
        } else {
            offered.join(", ")
        }
    );
    let ranked = auth::auto_candidates(&greeting, &caps, tls_active, a.allow_plaintext);
    match ranked.first() {
        Some(&m) => match auth::fallback(&ranked, &[m], tls_active) {
            Some(then) => println!(
                "  auto     would pick {}, then {} if it is refused",
                m.name(),
                then.name()
            ),
            None => println!("  auto     would pick {}", m.name()),
        },
        None => println!("  auto     would pick nothing (none offered is allowed here)"),
    }
    if a.auth != Auth::Auto {
        println!("  auth     {} (configured)", a.auth.name());
    }
    let fail = |what: &str| println!("  login    {what}");
    let password = match secret::resolve(&a.secret, secret_timeout(a)) {
        Ok(p) => p,
        Err(e) => {
            let _ = client.quit();
            fail("not tried: no password");
            return Err(poll::Error::Secret(e));
        }
    };
    let conn = Connected {
        client,
        greeting,
        caps,
    };
    let opened = poll::log_in(conn, a, &password);
    drop(password);
    let mut session = match opened {
        Ok(o) => {
            let via = if tls_active { "TLS" } else { "plain TCP" };
            println!("  login    ok with {} over {via}", o.mechanism.name());
            o.session
        }
        Err(e) => {
            let tried = match &e {
                poll::Error::Auth(a) => a.tried(),
                _ => Vec::new(),
            };
            if tried.is_empty() {
                fail("not tried");
            } else {
                fail(&format!("FAILED with {}", tried.join(", then ")));
            }
            return Err(e);
        }
    };
    let (count, size) = session.stat().map_err(poll::Error::Pop3)?;
    println!("  mailbox  {count} message(s), {size} bytes");
    // QUIT without any DELE: nothing changes on the server.
    session.quit().map_err(poll::Error::Pop3)?;
    Ok(())
}

fn print_cert(cert: &tls::CertInfo) {
    println!("  subject  {}", cert.subject);
    println!("  issuer   {}", cert.issuer);
    let state = match (cert.expired, cert.not_yet_valid) {
        (true, _) => " (EXPIRED)",
        (_, true) => " (NOT YET VALID)",
        _ => "",
    };
    println!(
        "  valid    {} .. {}{state}",
        cert.not_before, cert.not_after
    );
    if !cert.names.is_empty() {
        println!("  names    {}", cert.names_text());
    }
    println!("  sha256   {}", cert.sha256);
}
