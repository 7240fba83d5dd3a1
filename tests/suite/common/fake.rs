//! A scripted POP3 server for what a real one will not do: drop the
//! connection mid-message, lose the QUIT reply, repeat UIDLs, drip bytes.
//! Plain TCP on 127.0.0.1, one connection at a time, mailbox kept across
//! connections with RFC 1939 semantics (DELE takes effect only at QUIT).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A connection to the fake, numbered from 0 in the order they arrive.
pub type Connection = usize;

/// What to do wrong, and on which connection.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// No CAPA UIDL, and `-ERR` to UIDL.
    pub no_uidl: bool,
    /// Every message gets the same UIDL.
    pub same_uidl: bool,
    /// Close the socket inside one RETR reply.
    pub cut_retr: Option<CutRetr>,
    /// On this connection: commit the deletions at QUIT, then close without replying.
    pub quit_commit_no_reply: Option<Connection>,
    /// On this connection: close at QUIT without committing or replying.
    pub quit_drop: Option<Connection>,
    /// On this connection: answer DELE with -ERR.
    pub dele_err: Option<Connection>,
    /// Answer RETR of this message number with -ERR, always.
    pub retr_err: Option<usize>,
    /// Send RETR replies slowly.
    pub drip: Option<Drip>,
    /// Answer PASS with this line (e.g. `-ERR [IN-USE] locked`).
    pub pass_reply: Option<String>,
    /// Answer LIST with this many (fictitious) entries.
    pub huge_listing: Option<usize>,
    /// Advertise PIPELINING.
    pub pipelining: bool,
    /// Answer RETR with an endless body (never the terminator).
    pub endless_retr: bool,
    /// Offer SASL and answer AUTH (otherwise AUTH is an unknown command).
    pub sasl: Option<Sasl>,
}

/// Where [`Faults::cut_retr`] closes the socket.
#[derive(Debug, Clone, Copy)]
pub struct CutRetr {
    pub connection: Connection,
    /// The message number (1-based, as in `RETR n`).
    pub message: usize,
    /// Bytes of the reply (status line included) sent before the close.
    pub after_bytes: usize,
}

/// How [`Faults::drip`] sends RETR replies.
#[derive(Debug, Clone, Copy)]
pub struct Drip {
    /// The pause after each chunk.
    pub delay: Duration,
    /// Bytes per chunk.
    pub chunk: usize,
    /// Only on connections numbered below this; later ones are healthy.
    pub connections_before: Connection,
}

/// How the fake answers `AUTH`. The user is always `u`.
#[derive(Debug, Clone, Default)]
pub struct Sasl {
    /// Listed in CAPA `SASL`; AUTH with another is refused.
    pub mechanisms: Vec<&'static str>,
    /// Bearer tokens XOAUTH2 and OAUTHBEARER accept.
    pub tokens: Vec<String>,
    /// The password NTLM checks against (computed with the openssl CLI,
    /// independently of popspool's own MD4 and HMAC).
    pub ntlm_password: Option<String>,
    /// Microsoft 365: `AUTH XOAUTH2 <initial response>` is refused; only
    /// `AUTH XOAUTH2`, `+`, then the token, works.
    pub no_initial_response: bool,
    /// Gmail: a refused token gets a JSON status challenge first, which
    /// the client must answer before the `-ERR`.
    pub json_failure: bool,
}

/// (UIDL, message) pairs in mailbox order.
type Mailbox = Vec<(String, Vec<u8>)>;

pub struct FakeServer {
    pub port: u16,
    mailbox: Arc<Mutex<Mailbox>>,
    connections: Arc<Mutex<usize>>,
    received: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FakeServer {
    /// Serve `messages` (CRLF line ends, as they should arrive).
    pub fn start(messages: Vec<Vec<u8>>, faults: Faults) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mailbox: Mailbox = messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| (format!("uid-{i:04}"), m))
            .collect();
        let mailbox = Arc::new(Mutex::new(mailbox));
        let connections = Arc::new(Mutex::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (mb, conns, rec, st) = (
            Arc::clone(&mailbox),
            Arc::clone(&connections),
            Arc::clone(&received),
            Arc::clone(&stop),
        );
        listener.set_nonblocking(true).unwrap();
        thread::spawn(move || loop {
            if st.load(Ordering::Relaxed) {
                return;
            }
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let idx = {
                        let mut c = conns.lock().unwrap();
                        *c += 1;
                        *c - 1
                    };
                    let _ = serve(s, &mb, &faults, idx, &rec);
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        });
        FakeServer {
            port,
            mailbox,
            connections,
            received,
            stop,
        }
    }

    /// Give every message a new UIDL, as a server migration might.
    pub fn renumber(&self, prefix: &str) {
        for (i, m) in self.mailbox.lock().unwrap().iter_mut().enumerate() {
            m.0 = format!("{prefix}-{i:04}");
        }
    }

    /// Put another message under message `idx`'s UIDL.
    pub fn replace(&self, idx: usize, msg: Vec<u8>) {
        self.mailbox.lock().unwrap()[idx].1 = msg;
    }

    /// Messages still on the server.
    pub fn remaining(&self) -> usize {
        self.mailbox.lock().unwrap().len()
    }

    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }

    /// Every line clients sent, without line ends, in order.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// A popspool account section for this server.
    pub fn account(&self, name: &str, extra: &str) -> String {
        let timeout = if extra.contains("timeout") {
            ""
        } else {
            "timeout = 5s\n"
        };
        format!(
            "[account {name}]\nhost = 127.0.0.1\nport = {}\ntls = none\nallow_plaintext = yes\nauth = user\nuser = u\npassword = pw\n\
             {timeout}{extra}\n",
            self.port
        )
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn stuff(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 8);
    let mut bol = true;
    for &b in msg {
        if bol && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        bol = b == b'\n';
    }
    if !bol {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn serve(
    s: TcpStream,
    mailbox: &Mutex<Mailbox>,
    f: &Faults,
    idx: Connection,
    received: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    w.write_all(b"+OK fake POP3 ready <1.2@fake.example>\r\n")?;
    let mut deleted: Vec<usize> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        received.lock().unwrap().push(cmd.clone());
        let mut parts = cmd.splitn(2, ' ');
        let verb = parts.next().unwrap_or("").to_ascii_uppercase();
        let arg = parts.next().unwrap_or("");
        let msgs = mailbox.lock().unwrap().clone();
        let num = |a: &str| {
            a.parse::<usize>()
                .ok()
                .filter(|n| *n >= 1 && *n <= msgs.len() && !deleted.contains(n))
        };
        let uid = |i: usize| {
            if f.same_uidl {
                "same".to_string()
            } else {
                msgs[i - 1].0.clone()
            }
        };
        let reply: Vec<u8> = match verb.as_str() {
            "CAPA" => {
                let mut c = String::from("+OK\r\nUSER\r\nTOP\r\n");
                if !f.no_uidl {
                    c.push_str("UIDL\r\n");
                }
                if f.pipelining {
                    c.push_str("PIPELINING\r\n");
                }
                if let Some(sasl) = &f.sasl {
                    c.push_str(&format!("SASL {}\r\n", sasl.mechanisms.join(" ")));
                }
                c.push_str(".\r\n");
                c.into_bytes()
            }
            "USER" => b"+OK\r\n".to_vec(),
            "PASS" if f.pass_reply.is_some() => {
                format!("{}\r\n", f.pass_reply.as_deref().unwrap_or("")).into_bytes()
            }
            "PASS" if arg == "pw" => b"+OK logged in\r\n".to_vec(),
            "PASS" => b"-ERR [AUTH] bad password\r\n".to_vec(),
            "STAT" => {
                let live: Vec<usize> = (1..=msgs.len()).filter(|n| !deleted.contains(n)).collect();
                let size: usize = live.iter().map(|n| msgs[n - 1].1.len()).sum();
                format!("+OK {} {size}\r\n", live.len()).into_bytes()
            }
            "LIST" if f.huge_listing.is_some() => {
                w.write_all(b"+OK\r\n")?;
                let mut chunk = String::new();
                for n in 1..=f.huge_listing.unwrap_or(0) {
                    chunk.push_str(&format!("{n} 100\r\n"));
                    if chunk.len() > 60_000 {
                        w.write_all(chunk.as_bytes())?;
                        chunk.clear();
                    }
                }
                chunk.push_str(".\r\n");
                chunk.into_bytes()
            }
            "LIST" => {
                let mut o = String::from("+OK\r\n");
                for n in (1..=msgs.len()).filter(|n| !deleted.contains(n)) {
                    o.push_str(&format!("{n} {}\r\n", msgs[n - 1].1.len()));
                }
                o.push_str(".\r\n");
                o.into_bytes()
            }
            "UIDL" if f.no_uidl => b"-ERR not supported\r\n".to_vec(),
            "UIDL" => {
                let mut o = String::from("+OK\r\n");
                for n in (1..=msgs.len()).filter(|n| !deleted.contains(n)) {
                    o.push_str(&format!("{n} {}\r\n", uid(n)));
                }
                o.push_str(".\r\n");
                o.into_bytes()
            }
            "RETR" if f.retr_err.is_some() && num(arg) == f.retr_err => {
                b"-ERR message is damaged on the server\r\n".to_vec()
            }
            "RETR" => match num(arg) {
                Some(_) if f.endless_retr => {
                    w.write_all(b"+OK\r\n")?;
                    let line = b"endless endless endless endless endless endless\r\n";
                    loop {
                        w.write_all(line)?;
                    }
                }
                Some(n) => {
                    let mut o = b"+OK\r\n".to_vec();
                    o.extend(stuff(&msgs[n - 1].1));
                    if let Some(cut) = f.cut_retr {
                        if cut.connection == idx && cut.message == n {
                            w.write_all(&o[..cut.after_bytes.min(o.len())])?;
                            return Ok(());
                        }
                    }
                    if let Some(drip) = f.drip {
                        if idx < drip.connections_before {
                            for c in o.chunks(drip.chunk) {
                                w.write_all(c)?;
                                thread::sleep(drip.delay);
                            }
                            continue;
                        }
                    }
                    o
                }
                None => b"-ERR no such message\r\n".to_vec(),
            },
            "DELE" if f.dele_err == Some(idx) => b"-ERR cannot delete\r\n".to_vec(),
            "DELE" => match num(arg) {
                Some(n) => {
                    deleted.push(n);
                    b"+OK\r\n".to_vec()
                }
                None => b"-ERR no such message\r\n".to_vec(),
            },
            "RSET" => {
                deleted.clear();
                b"+OK\r\n".to_vec()
            }
            "NOOP" => b"+OK\r\n".to_vec(),
            "AUTH" if f.sasl.is_some() => {
                let sasl = f.sasl.as_ref().unwrap();
                match auth(&mut r, &mut w, arg, sasl, received)? {
                    Some(true) => b"+OK logged in\r\n".to_vec(),
                    Some(false) if sasl.no_initial_response => {
                        // Microsoft 365's wording, without a response code.
                        b"-ERR Authentication failure: unknown user name or bad password.\r\n"
                            .to_vec()
                    }
                    Some(false) => b"-ERR [AUTH] Authentication failed.\r\n".to_vec(),
                    None => b"-ERR protocol violation\r\n".to_vec(),
                }
            }
            "QUIT" => {
                if f.quit_drop == Some(idx) {
                    return Ok(());
                }
                let mut mb = mailbox.lock().unwrap();
                let mut i = 0;
                mb.retain(|_| {
                    i += 1;
                    !deleted.contains(&i)
                });
                drop(mb);
                if f.quit_commit_no_reply == Some(idx) {
                    return Ok(());
                }
                w.write_all(b"+OK bye\r\n")?;
                return Ok(());
            }
            _ => b"-ERR unknown command\r\n".to_vec(),
        };
        w.write_all(&reply)?;
    }
}

/// One AUTH exchange: `Some(true)` logged in, `Some(false)` credentials
/// refused, `None` the client broke the protocol.
fn auth(
    r: &mut BufReader<TcpStream>,
    w: &mut TcpStream,
    arg: &str,
    sasl: &Sasl,
    received: &Mutex<Vec<String>>,
) -> std::io::Result<Option<bool>> {
    let mut words = arg.split(' ');
    let mech = words.next().unwrap_or("").to_ascii_uppercase();
    let initial = words.next();
    if !sasl.mechanisms.iter().any(|m| *m == mech) {
        return Ok(Some(false));
    }
    let mut next = |w: &mut TcpStream, challenge: &[u8]| -> std::io::Result<Option<Vec<u8>>> {
        w.write_all(format!("+ {}\r\n", b64_encode(challenge)).as_bytes())?;
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end().to_string();
        received.lock().unwrap().push(line.clone());
        if line == "*" {
            return Ok(None);
        }
        Ok(b64_decode(&line))
    };
    let first = match initial {
        Some(_) if mech == "XOAUTH2" && sasl.no_initial_response => {
            // What Microsoft 365 answers to the one-line form.
            return Ok(Some(false));
        }
        Some("=") => Some(Vec::new()),
        Some(ir) => b64_decode(ir),
        None if mech == "CRAM-MD5" || mech == "LOGIN" => None,
        None => match next(w, b"")? {
            Some(v) => Some(v),
            None => return Ok(Some(false)),
        },
    };
    match mech.as_str() {
        "XOAUTH2" | "OAUTHBEARER" => {
            let msg = String::from_utf8(first.unwrap_or_default()).unwrap_or_default();
            let token = msg
                .split('\x01')
                .find_map(|kv| kv.strip_prefix("auth=Bearer "))
                .unwrap_or("");
            let user_ok = if mech == "XOAUTH2" {
                msg.starts_with("user=u\x01")
            } else {
                msg.starts_with("n,a=u,\x01") && msg.contains("\x01host=127.0.0.1\x01port=")
            };
            if user_ok && sasl.tokens.iter().any(|t| t == token) {
                return Ok(Some(true));
            }
            if sasl.json_failure || mech == "OAUTHBEARER" {
                let json =
                    br#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#;
                let answer = next(w, json)?;
                let expected: &[u8] = if mech == "XOAUTH2" { b"" } else { b"\x01" };
                if answer.as_deref() != Some(expected) {
                    return Ok(None);
                }
            }
            Ok(Some(false))
        }
        "NTLM" => {
            let Some(negotiate) = first else {
                return Ok(Some(false));
            };
            if !negotiate.starts_with(b"NTLMSSP\0\x01\0\0\0") {
                return Ok(Some(false));
            }
            let Some(authenticate) = next(w, &ntlm_challenge())? else {
                return Ok(Some(false));
            };
            let password = sasl.ntlm_password.as_deref().unwrap_or("");
            Ok(Some(ntlm_verify(&authenticate, password)))
        }
        "PLAIN" => Ok(Some(first.as_deref() == Some(b"\0u\0pw"))),
        _ => Ok(Some(false)),
    }
}

/// MS-NLMP §4.2.4.3's CHALLENGE_MESSAGE (server challenge 0123456789abcdef,
/// target information for "Domain"/"Server").
fn ntlm_challenge() -> Vec<u8> {
    hex_decode(
        "4e544c4d53535000020000000c000c003800000033828ae20123456789abcdef\
         00000000000000002400240044000000060070170000000f5300650072007600\
         6500720002000c0044006f006d00610069006e0001000c005300650072007600\
         6500720000000000",
    )
}

fn hex_decode(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// `openssl dgst` over `data`: MD4 (legacy provider) or HMAC-MD5 with `key`.
fn openssl_digest(data: &[u8], hmac_key: Option<&[u8]>) -> Vec<u8> {
    let hex = match hmac_key {
        None => openssl_dgst(
            &["-md4", "-provider", "legacy", "-provider", "default"],
            data,
        ),
        Some(k) => openssl_dgst(
            &[
                "-md5",
                "-mac",
                "HMAC",
                "-macopt",
                &format!("hexkey:{}", hex_encode(k)),
            ],
            data,
        ),
    };
    hex_decode(&hex)
}

/// The lowercase hex digest `openssl dgst ARGS` prints for `data`: the
/// openssl CLI checks the fake's and the harness's digests independently of
/// the code under test.
pub fn openssl_dgst(args: &[&str], data: &[u8]) -> String {
    use std::process::{Command, Stdio};
    let mut child = Command::new("openssl")
        .arg("dgst")
        .args(args)
        .arg("-r")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().next().unwrap_or("").to_owned()
}

/// Checks an NTLMv2 AUTHENTICATE message against `password`, the way a
/// server does (MS-NLMP §3.3.2), with the openssl CLI's MD4 and HMAC-MD5.
fn ntlm_verify(msg: &[u8], password: &str) -> bool {
    let field = |at: usize| -> Option<&[u8]> {
        let len = u16::from_le_bytes(msg.get(at..at + 2)?.try_into().ok()?) as usize;
        let off = u32::from_le_bytes(msg.get(at + 4..at + 8)?.try_into().ok()?) as usize;
        msg.get(off..off + len)
    };
    if !msg.starts_with(b"NTLMSSP\0\x03\0\0\0") {
        return false;
    }
    let (Some(nt), Some(domain), Some(user)) = (field(20), field(28), field(36)) else {
        return false;
    };
    if nt.len() <= 24 || nt[16..18] != [1, 1] {
        return false; // not an NTLMv2 response
    }
    let user = String::from_utf16_lossy(
        &user
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect::<Vec<_>>(),
    );
    let nt_hash = openssl_digest(&utf16le(password), None);
    let mut identity = utf16le(&user.to_uppercase());
    identity.extend_from_slice(domain);
    let key = openssl_digest(&identity, Some(&nt_hash));
    let mut data = hex_decode("0123456789abcdef");
    data.extend_from_slice(&nt[16..]);
    user == "u" && openssl_digest(&data, Some(&key)) == nt[..16]
}

use super::relay::b64_encode;

/// As a SASL server reads it: an empty line is an empty answer.
fn b64_decode(text: &str) -> Option<Vec<u8>> {
    if text.trim_end_matches('=').is_empty() {
        return Some(Vec::new());
    }
    super::relay::b64_decode(text)
}
