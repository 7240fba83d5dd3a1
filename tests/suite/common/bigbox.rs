//! A scripted POP3 server claiming a huge mailbox, for the memory tests: no
//! real server is filled with a million messages in a test's time. The
//! listing is generated as it is sent. The messages the test picks are
//! small and served; the others are listed as [`LISTED_SIZE`] bytes, which
//! a `max_message_size` below it makes popspool leave on the server (with a
//! warning each), so every message is seen without a million spool
//! entries; RETR refuses them (`-ERR`) should it come.
//! Plain TCP on 127.0.0.1; replies are flushed only once the pipelined
//! commands read so far are answered.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Announced size of a message not served, as LIST gives it.
pub const LISTED_SIZE: u64 = 2000;

/// Announced size of a served message.
pub const SERVED_SIZE: u64 = 500;

pub struct BigBox {
    pub port: u16,
    retrieved: Arc<Mutex<Vec<u32>>>,
}

/// Message `n`'s UIDL: 16 characters, like Dovecot's default
/// `%08Xu%08Xv`.
pub fn uidl(n: u32) -> String {
    format!("{:08X}{:08X}", n, 0x6750_3A1Du32)
}

/// Message `n` as served.
pub fn message(n: u32) -> String {
    format!("From: big@example.com\r\nSubject: m {n}\r\nMessage-ID: <{n}@example.com>\r\n\r\nmessage {n}\r\n")
}

impl BigBox {
    /// Claims `count` messages; RETR serves those for which `serve` holds.
    pub fn start(count: u32, serve: fn(u32) -> bool) -> BigBox {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let retrieved = Arc::new(Mutex::new(Vec::new()));
        let rec = Arc::clone(&retrieved);
        thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { return };
                let _ = serve_one(s, count, serve, &rec);
            }
        });
        BigBox { port, retrieved }
    }

    /// The message numbers RETR was sent for, in order.
    pub fn retrieved(&self) -> Vec<u32> {
        self.retrieved.lock().unwrap().clone()
    }

    /// A popspool account section for this server.
    pub fn account(&self, name: &str, extra: &str) -> String {
        format!(
            "[account {name}]\nhost = 127.0.0.1\nport = {}\ntls = none\nallow_plaintext = yes\nauth = user\n\
             user = u\npassword = pw\ntimeout = 60s\n{extra}\n",
            self.port
        )
    }
}

fn serve_one(
    s: std::net::TcpStream,
    count: u32,
    serve: fn(u32) -> bool,
    retrieved: &Mutex<Vec<u32>>,
) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = BufWriter::with_capacity(1 << 16, s.try_clone()?);
    let mut r = BufReader::new(s);
    w.write_all(b"+OK bigbox ready\r\n")?;
    w.flush()?;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        let arg: Option<u32> = words.next().and_then(|a| a.parse().ok());
        match verb.as_str() {
            "CAPA" => w.write_all(b"+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\n.\r\n")?,
            "STAT" => write!(w, "+OK {count} {}\r\n", u64::from(count) * LISTED_SIZE)?,
            "UIDL" => {
                w.write_all(b"+OK\r\n")?;
                for n in 1..=count {
                    write!(w, "{n} {}\r\n", uidl(n))?;
                }
                w.write_all(b".\r\n")?;
            }
            "LIST" => {
                w.write_all(b"+OK\r\n")?;
                for n in 1..=count {
                    let size = if serve(n) { SERVED_SIZE } else { LISTED_SIZE };
                    write!(w, "{n} {size}\r\n")?;
                }
                w.write_all(b".\r\n")?;
            }
            "RETR" => {
                let n = arg.unwrap_or(0);
                retrieved.lock().unwrap().push(n);
                if serve(n) {
                    write!(w, "+OK\r\n{}.\r\n", message(n))?;
                } else {
                    w.write_all(b"-ERR not today\r\n")?;
                }
            }
            "QUIT" => {
                w.write_all(b"+OK bye\r\n")?;
                return w.flush();
            }
            _ => w.write_all(b"+OK\r\n")?,
        }
        if r.buffer().is_empty() {
            w.flush()?;
        }
    }
}
