//! A loopback TCP relay that can cut a connection after a chosen number of
//! server-to-client bytes, to drop sessions at arbitrary points of a real
//! server's replies (mid-greeting, mid-TLS-record, mid-message, mid-QUIT).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// `u64::MAX` means "never cut".
const NO_CUT: u64 = u64::MAX;

pub struct Proxy {
    pub port: u16,
    cut_after: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Relay 127.0.0.1:<port> to 127.0.0.1:`target`.
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let cut_after = Arc::new(AtomicU64::new(NO_CUT));
        let stop = Arc::new(AtomicBool::new(false));
        let (cut, st) = (Arc::clone(&cut_after), Arc::clone(&stop));
        thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        // The cut applies to the connection that is made next.
                        let limit = cut.swap(NO_CUT, Ordering::Relaxed);
                        if let Ok(server) = TcpStream::connect(("127.0.0.1", target)) {
                            relay(client, server, limit);
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Proxy {
            port,
            cut_after,
            stop,
        }
    }

    /// Cut the next connection after `bytes` bytes from the server.
    pub fn cut_next_after(&self, bytes: u64) {
        self.cut_after.store(bytes, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn relay(client: TcpStream, server: TcpStream, limit: u64) {
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    // client -> server: plain copy.
    thread::spawn(move || {
        let (mut from, mut to) = (c2, s2);
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
    // server -> client: copy up to `limit` bytes, then cut both ways.
    thread::spawn(move || {
        let (mut from, mut to) = (server, client);
        let mut sent = 0u64;
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let allowed = (limit - sent).min(n as u64) as usize;
            if to.write_all(&buf[..allowed]).is_err() {
                break;
            }
            sent += allowed as u64;
            if sent >= limit {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
