//! A local SMTP sink for the MDN tests: listens on 127.0.0.1 (a free port),
//! offers STARTTLS with a certificate of the test CA (the Dovecot
//! harness's `server.pem`, which names 127.0.0.1) and AUTH PLAIN and
//! LOGIN once TLS is up, stores every message it takes, and injects the
//! faults a real server would show only by accident: 4xx or 5xx to RCPT,
//! a dropped connection or a silence after the final dot, a hang before it.
//!
//! No Debian or PyPI SMTP server does all of that on cue, so this is a
//! small one: one thread, one connection at a time (popspool opens one).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslStream};

/// What the sink does wrong, until told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: every message is taken.
    None,
    /// `451` to every RCPT.
    TempRcpt,
    /// `550` to every RCPT.
    PermRcpt,
    /// Store the message, then close the connection without answering the
    /// final dot: the client cannot know whether it was taken.
    DropAfterDot,
    /// Store the message, then say nothing until the client goes away.
    HangAfterDot,
    /// Say nothing after RCPT until the client goes away.
    HangAtRcpt,
}

/// One message the sink took (or saw whole, for the faults after the dot).
#[derive(Debug, Clone)]
pub struct Received {
    /// The MAIL FROM path, without the brackets (empty for `<>`).
    pub mail_from: String,
    /// The RCPT TO paths.
    pub rcpt: Vec<String>,
    /// The message, dot-unstuffed, CRLF line ends.
    pub data: Vec<u8>,
    /// Whether it came over TLS.
    pub tls: bool,
    /// Who logged in, if anyone.
    pub user: Option<String>,
}

#[derive(Default)]
struct Shared {
    received: Vec<Received>,
    rcpt_seen: usize,
    connections: usize,
}

/// A running sink; dropping it stops the thread.
pub struct Sink {
    /// The port on 127.0.0.1.
    pub port: u16,
    shared: Arc<Mutex<Shared>>,
    fault: Arc<Mutex<Fault>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// A sink with STARTTLS from `cert`/`key` and AUTH for `user`/`password`.
    pub fn start(cert: &Path, key: &Path, user: &str, password: &str) -> Sink {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        b.set_certificate_chain_file(cert).unwrap();
        b.set_private_key_file(key, SslFiletype::PEM).unwrap();
        Self::start_with(
            Some(b.build()),
            Some((user.to_string(), password.to_string())),
        )
    }

    /// A sink without TLS that takes mail without a login, for tests that
    /// run as any user (no test CA needed).
    pub fn plain() -> Sink {
        Self::start_with(None, None)
    }

    fn start_with(acceptor: Option<SslAcceptor>, login: Option<(String, String)>) -> Sink {
        let acceptor = Arc::new(acceptor);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let fault = Arc::new(Mutex::new(Fault::None));
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, fa, st) = (shared.clone(), fault.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        tcp.set_nonblocking(false).unwrap();
                        tcp.set_read_timeout(Some(Duration::from_millis(200)))
                            .unwrap();
                        sh.lock().unwrap().connections += 1;
                        let mut c = Conn {
                            io: BufReader::new(Stream::Plain(tcp)),
                            acceptor: acceptor.as_ref().as_ref(),
                            login: &login,
                            shared: &sh,
                            fault: &fa,
                            stop: &st,
                            tls: false,
                            user: None,
                        };
                        let _ = c.serve();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => break,
                }
            }
        });
        Sink {
            port,
            shared,
            fault,
            stop,
            thread: Some(thread),
        }
    }

    /// From now on, fail this way.
    pub fn set_fault(&self, f: Fault) {
        *self.fault.lock().unwrap() = f;
    }

    /// Every message so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().unwrap().received.clone()
    }

    /// RCPT commands seen so far.
    pub fn rcpt_seen(&self) -> usize {
        self.shared.lock().unwrap().rcpt_seen
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.lock().unwrap().connections
    }

    /// Waits up to 20 s for `cond`; panics otherwise.
    pub fn wait(&self, what: &str, cond: impl Fn(&Sink) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "sink: timed out waiting for {what}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
    Gone,
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(b),
            Stream::Tls(s) => s.read(b),
            Stream::Gone => Ok(0),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(b),
            Stream::Tls(s) => s.write(b),
            Stream::Gone => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            Stream::Gone => Ok(()),
        }
    }
}

struct Conn<'a> {
    io: BufReader<Stream>,
    acceptor: Option<&'a SslAcceptor>,
    login: &'a Option<(String, String)>,
    shared: &'a Mutex<Shared>,
    fault: &'a Mutex<Fault>,
    stop: &'a AtomicBool,
    tls: bool,
    user: Option<String>,
}

impl Conn<'_> {
    fn send(&mut self, s: &str) -> io::Result<()> {
        self.io.get_mut().write_all(s.as_bytes())?;
        self.io.get_mut().flush()
    }

    /// A line without its CRLF; `None` at EOF or when the sink stops.
    fn line(&mut self) -> io::Result<Option<String>> {
        let mut buf = Vec::new();
        loop {
            match self.io.read_until(b'\n', &mut buf) {
                Ok(0) => return Ok(None),
                Ok(_) if buf.ends_with(b"\n") => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.stop.load(Ordering::Relaxed) {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let s = String::from_utf8_lossy(&buf);
        Ok(Some(s.trim_end_matches(['\r', '\n']).to_string()))
    }

    /// Silent until the client closes or the sink stops.
    fn hang(&mut self) -> io::Result<()> {
        while self.line()?.is_some() {}
        Ok(())
    }

    fn fault(&self) -> Fault {
        *self.fault.lock().unwrap()
    }

    fn serve(&mut self) -> io::Result<()> {
        self.send("220 sink.test ESMTP\r\n")?;
        let (mut from, mut rcpt) = (None::<String>, Vec::new());
        while let Some(line) = self.line()? {
            let upper = line.to_ascii_uppercase();
            let verb = upper.split(' ').next().unwrap_or("").to_string();
            match verb.as_str() {
                "EHLO" => {
                    let ext = match (self.acceptor.is_some(), self.tls, self.login.is_some()) {
                        (true, false, _) => "250-STARTTLS\r\n",
                        (_, _, true) => "250-AUTH PLAIN LOGIN\r\n",
                        _ => "",
                    };
                    self.send(&format!("250-sink.test\r\n{ext}250 8BITMIME\r\n"))?;
                }
                "STARTTLS" if !self.tls && self.acceptor.is_some() => {
                    let Some(acceptor) = self.acceptor else {
                        return Ok(());
                    };
                    self.send("220 go ahead\r\n")?;
                    let io = std::mem::replace(&mut self.io, BufReader::new(Stream::Gone));
                    let Stream::Plain(tcp) = io.into_inner() else {
                        return Ok(());
                    };
                    let tls = acceptor
                        .accept(tcp)
                        .map_err(|e| io::Error::other(e.to_string()))?;
                    self.io = BufReader::new(Stream::Tls(Box::new(tls)));
                    self.tls = true;
                }
                "AUTH" if self.login.is_some() && (self.tls || self.acceptor.is_none()) => {
                    let words: Vec<&str> = line.split(' ').collect();
                    let creds = match words.get(1).map(|m| m.to_ascii_uppercase()).as_deref() {
                        Some("PLAIN") => {
                            let b64 = match words.get(2) {
                                Some(b) => b.to_string(),
                                None => {
                                    self.send("334 \r\n")?;
                                    self.line()?.unwrap_or_default()
                                }
                            };
                            let raw = openssl::base64::decode_block(&b64).unwrap_or_default();
                            let parts: Vec<String> = raw
                                .split(|&b| b == 0)
                                .map(|p| String::from_utf8_lossy(p).into_owned())
                                .collect();
                            (parts.len() == 3).then(|| (parts[1].clone(), parts[2].clone()))
                        }
                        Some("LOGIN") => {
                            self.send("334 VXNlcm5hbWU6\r\n")?;
                            let u = self.line()?.unwrap_or_default();
                            self.send("334 UGFzc3dvcmQ6\r\n")?;
                            let p = self.line()?.unwrap_or_default();
                            let d = |s: &str| {
                                String::from_utf8_lossy(
                                    &openssl::base64::decode_block(s).unwrap_or_default(),
                                )
                                .into_owned()
                            };
                            Some((d(&u), d(&p)))
                        }
                        _ => None,
                    };
                    if creds.is_some() && creds == *self.login {
                        self.user = creds.map(|c| c.0);
                        self.send("235 2.7.0 ok\r\n")?;
                    } else {
                        self.send("535 5.7.8 bad credentials\r\n")?;
                    }
                }
                "MAIL" if self.login.is_some() && self.user.is_none() => {
                    self.send("530 5.7.0 log in first\r\n")?
                }
                "MAIL" => {
                    let path = line[line.find('<').unwrap_or(0)..].to_string();
                    from = Some(path.trim_matches(['<', '>']).to_string());
                    rcpt.clear();
                    self.send("250 2.1.0 ok\r\n")?;
                }
                "RCPT" => {
                    self.shared.lock().unwrap().rcpt_seen += 1;
                    match self.fault() {
                        Fault::TempRcpt => self.send("451 4.3.0 try again later\r\n")?,
                        Fault::PermRcpt => self.send("550 5.1.1 no such user\r\n")?,
                        Fault::HangAtRcpt => return self.hang(),
                        _ => {
                            let path = &line[line.find('<').unwrap_or(0)..];
                            rcpt.push(path.trim_matches(['<', '>']).to_string());
                            self.send("250 2.1.5 ok\r\n")?;
                        }
                    }
                }
                "DATA" if from.is_some() && !rcpt.is_empty() => {
                    self.send("354 end with .\r\n")?;
                    let mut data = Vec::new();
                    loop {
                        let Some(l) = self.line()? else { return Ok(()) };
                        if l == "." {
                            break;
                        }
                        let l = l.strip_prefix('.').unwrap_or(&l);
                        data.extend_from_slice(l.as_bytes());
                        data.extend_from_slice(b"\r\n");
                    }
                    let got = Received {
                        mail_from: from.take().unwrap_or_default(),
                        rcpt: std::mem::take(&mut rcpt),
                        data,
                        tls: self.tls,
                        user: self.user.clone(),
                    };
                    self.shared.lock().unwrap().received.push(got);
                    match self.fault() {
                        Fault::DropAfterDot => return Ok(()),
                        Fault::HangAfterDot => return self.hang(),
                        _ => self.send("250 2.0.0 queued\r\n")?,
                    }
                }
                "DATA" => self.send("503 5.5.1 no valid recipients\r\n")?,
                "RSET" => {
                    from = None;
                    rcpt.clear();
                    self.send("250 ok\r\n")?;
                }
                "NOOP" => self.send("250 ok\r\n")?,
                "QUIT" => {
                    self.send("221 bye\r\n")?;
                    return Ok(());
                }
                _ => self.send("500 5.5.2 what?\r\n")?,
            }
        }
        Ok(())
    }
}
