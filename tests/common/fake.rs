//! A scripted POP3 server for what a real one will not do: drop the
//! connection mid-message, lose the QUIT reply, repeat UIDLs, drip bytes.
//! Plain TCP on 127.0.0.1, one connection at a time, mailbox kept across
//! connections with RFC 1939 semantics (DELE takes effect only at QUIT).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What to do wrong, and on which connection (0-based count of logins).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// No CAPA UIDL, and `-ERR` to UIDL.
    pub no_uidl: bool,
    /// Every message gets the same UIDL.
    pub same_uidl: bool,
    /// On connection `.0`, close the socket after `.2` bytes of message `.1`'s RETR.
    pub cut_retr: Option<(usize, u32, usize)>,
    /// On connection N: commit the deletions at QUIT, then close without replying.
    pub quit_commit_no_reply: Option<usize>,
    /// On connection N: close at QUIT without committing or replying.
    pub quit_drop: Option<usize>,
    /// On connection N: answer DELE with -ERR.
    pub dele_err: Option<usize>,
    /// Answer RETR of this message number with -ERR, always.
    pub retr_err: Option<usize>,
    /// Send RETR data in chunks of `.1` bytes with a delay of `.0` between
    /// them, on connections numbered below `.2`.
    pub drip: Option<(Duration, usize, usize)>,
    /// Answer PASS with this line (e.g. `-ERR [IN-USE] locked`).
    pub pass_reply: Option<String>,
    /// Answer LIST with this many (fictitious) entries.
    pub huge_listing: Option<usize>,
    /// Advertise PIPELINING.
    pub pipelining: bool,
    /// Answer RETR with an endless body (never the terminator).
    pub endless_retr: bool,
}

/// (UIDL, message) pairs in mailbox order.
type Mailbox = Vec<(String, Vec<u8>)>;

pub struct FakeServer {
    pub port: u16,
    mailbox: Arc<Mutex<Mailbox>>,
    connections: Arc<Mutex<usize>>,
    commands: Arc<Mutex<Vec<String>>>,
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
        let commands = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (mb, conns, st) = (
            Arc::clone(&mailbox),
            Arc::clone(&connections),
            Arc::clone(&stop),
        );
        let cmds = Arc::clone(&commands);
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
                    let _ = serve(s, &mb, &faults, idx, &cmds);
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        });
        FakeServer {
            port,
            mailbox,
            connections,
            commands,
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

    /// Every command line received, in order.
    pub fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
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
    idx: usize,
    seen: &Mutex<Vec<String>>,
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
        seen.lock().unwrap().push(cmd.clone());
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
                    if let Some((c, m, cut)) = f.cut_retr {
                        if c == idx && m as usize == n {
                            let cut = cut.min(o.len());
                            w.write_all(&o[..cut])?;
                            return Ok(());
                        }
                    }
                    if let Some((delay, chunk, conns)) = f.drip {
                        if idx < conns {
                            for c in o.chunks(chunk) {
                                w.write_all(c)?;
                                thread::sleep(delay);
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
