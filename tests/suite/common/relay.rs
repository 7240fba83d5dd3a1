//! A recording TCP relay between popspool and a server: everything the
//! client sends is kept, so a test can prove that no password (nor its
//! base64) left the machine. Optionally rewrites server lines, to play an
//! impostor in front of a real server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Rewrites one server line (with its CRLF); `None` keeps it.
pub type Tamper = fn(&[u8]) -> Option<Vec<u8>>;

pub struct Relay {
    pub port: u16,
    sent: Arc<Mutex<Vec<u8>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Relays 127.0.0.1:`port` to `target`.
    pub fn start(target: SocketAddr) -> Relay {
        Self::start_with(target, None)
    }

    /// Like [`Relay::start`], passing each server line through `tamper`.
    pub fn start_with(target: SocketAddr, tamper: Option<Tamper>) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (rec, conns, st) = (
            Arc::clone(&sent),
            Arc::clone(&connections),
            Arc::clone(&stop),
        );
        thread::spawn(move || loop {
            if st.load(Ordering::Relaxed) {
                return;
            }
            match listener.accept() {
                Ok((client, _)) => {
                    client.set_nonblocking(false).unwrap();
                    conns.fetch_add(1, Ordering::Relaxed);
                    let Ok(server) = TcpStream::connect(target) else {
                        continue;
                    };
                    pipe_up(
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        Arc::clone(&rec),
                    );
                    pipe_down(server, client, tamper);
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        });
        Relay {
            port,
            sent,
            connections,
            stop,
        }
    }

    /// Every byte any client sent, in order.
    pub fn client_bytes(&self) -> Vec<u8> {
        self.sent.lock().unwrap().clone()
    }

    /// The client's bytes as text (lossy), for messages.
    pub fn client_text(&self) -> String {
        String::from_utf8_lossy(&self.client_bytes()).into_owned()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Panics if `secret` crossed the relay: as is, or inside anything
    /// that decodes as base64 (a SASL response carries it at any offset).
    #[track_caller]
    pub fn assert_never_sent(&self, secret: &str) {
        let bytes = self.client_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !contains(&bytes, secret.as_bytes()),
            "{secret:?} crossed the relay in the clear:\n{text}"
        );
        for word in text.split(|c: char| c.is_whitespace()) {
            if let Some(decoded) = b64_decode(word) {
                assert!(
                    !contains(&decoded, secret.as_bytes()),
                    "{secret:?} crossed the relay in base64 ({word}):\n{text}"
                );
            }
        }
        // And the base64 of the secret itself at each of the three
        // alignments, in case a token was split oddly.
        for pad in 0..3 {
            let mut padded = vec![0u8; pad];
            padded.extend_from_slice(secret.as_bytes());
            let enc = b64_encode(&padded);
            // Characters not touched by the padding or the unfinished tail.
            let start = (pad * 4).div_ceil(3);
            let end = enc.trim_end_matches('=').len().saturating_sub(2);
            if end > start + 4 {
                assert!(
                    !text.contains(&enc[start..end]),
                    "{secret:?} in base64 (pad {pad}):\n{text}"
                );
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Client to server, recording.
fn pipe_up(mut from: TcpStream, mut to: TcpStream, rec: Arc<Mutex<Vec<u8>>>) {
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    rec.lock().unwrap().extend_from_slice(&buf[..n]);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Server to client; with `tamper`, line by line, which only makes sense
/// for plain-text sessions (TLS records are not lines).
fn pipe_down(from: TcpStream, mut to: TcpStream, tamper: Option<Tamper>) {
    thread::spawn(move || {
        match tamper {
            None => {
                let mut from = from;
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            Some(f) => {
                let mut r = BufReader::new(from);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match r.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let out = f(&line).unwrap_or_else(|| line.clone());
                            if to.write_all(&out).is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

// Base64 of its own, not popspool's (src/sasl/crypto.rs), on purpose: the
// relay judges what popspool put on the wire and must not share its bugs.
const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn b64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Lenient: `None` for anything that is not base64.
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    let body = text.trim_end_matches('=');
    if body.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in body.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
