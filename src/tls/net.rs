//! The network under TLS: TCP connections to each resolved address in turn
//! with a deadline (optionally bound to `source_ip`), the buffered socket
//! OpenSSL reads through, and the [`Stream`] a POP3 session runs over,
//! plain or encrypted.
//!
//! Every socket gets its read and write timeouts before the first byte
//! moves, so a silent server times out like any other read; connecting to
//! every address in turn and the TLS handshake are also held to a
//! wall-clock end (see [`Socket::hold_to`]), so a server that drips the
//! handshake a byte at a time cannot keep it going either.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use openssl::ssl::SslStream;
use openssl::x509::X509;

use super::Error;

/// A connection that is plain TCP or TLS over TCP.
#[allow(clippy::large_enum_variant)]
pub enum Stream {
    /// Before STLS, or `tls = none`.
    Plain(TcpStream),
    /// After the handshake.
    Tls(SslStream<Socket>),
}

/// What OpenSSL reads from and writes to once TLS is up: the TCP socket,
/// read through a buffer. OpenSSL asks for each record in two reads (the
/// 5-byte header, then the rest), so unbuffered a 4 KiB message costs about
/// three recv(2) calls; through the buffer one recv(2) brings whatever the
/// kernel holds, often several records. Writes go straight through.
pub struct Socket {
    tcp: TcpStream,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    /// While set (the handshake): no read or write past this instant.
    end: Option<End>,
    /// The end passed: what failed was the deadline, not the network.
    pub(super) overran: bool,
}

/// A wall-clock end, with what the socket's own timeouts were before it.
#[derive(Debug, Clone, Copy)]
struct End {
    at: Instant,
    inactivity: Option<Duration>,
}

/// Four full TLS records (16 KiB of plaintext each, plus overhead): enough
/// for one recv(2) to carry several messages while pipelining, and small
/// next to the rest of a session's memory.
const SOCKET_BUF_BYTES: usize = 64 << 10;

impl Socket {
    pub(super) fn new(tcp: TcpStream) -> Socket {
        Socket {
            tcp,
            buf: vec![0; SOCKET_BUF_BYTES].into_boxed_slice(),
            pos: 0,
            len: 0,
            end: None,
            overran: false,
        }
    }

    /// Holds reads and writes to end at `at` at the latest: each read
    /// waits no longer than what is left (and no longer than the socket's
    /// inactivity timeout), and none starts after it. That costs a system
    /// call per read, so it is meant for the handshake; `None` lifts it and
    /// puts the inactivity timeout back.
    pub(super) fn hold_to(&mut self, at: Option<Instant>) -> io::Result<()> {
        match at {
            Some(at) => {
                let inactivity = match self.end {
                    Some(e) => e.inactivity,
                    None => self.tcp.read_timeout()?,
                };
                self.end = Some(End { at, inactivity });
            }
            None => {
                if let Some(e) = self.end.take() {
                    self.tcp.set_read_timeout(e.inactivity)?;
                }
            }
        }
        Ok(())
    }

    /// Before a read or write: the time it may take, or the error once the
    /// end has passed.
    fn time_left(&mut self) -> io::Result<Option<Duration>> {
        let Some(end) = self.end else {
            return Ok(None);
        };
        let left = end.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            self.overran = true;
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        Ok(Some(end.inactivity.map_or(left, |t| t.min(left))))
    }

    fn read_tcp(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let Some(wait) = self.time_left()? else {
            return self.tcp.read(out);
        };
        self.tcp.set_read_timeout(Some(wait))?;
        let r = self.tcp.read(out);
        if r.is_err() {
            // A read cut short by the end is the end's doing.
            self.time_left()?;
        }
        r
    }
}

impl Read for Socket {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.len {
            if out.len() >= self.buf.len() {
                return self.read_tcp(out);
            }
            let mut buf = std::mem::take(&mut self.buf);
            let r = self.read_tcp(&mut buf);
            self.buf = buf;
            self.len = r?;
            self.pos = 0;
        }
        let n = out.len().min(self.len - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Socket {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // The inactivity timeout bounds the write itself: the handshake's
        // few small writes go into the kernel's buffer at once.
        self.time_left()?;
        self.tcp.write(data)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

impl Stream {
    /// Whether the bytes on this stream are encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The server's certificate, once TLS is up.
    pub fn peer_certificate(&self) -> Option<X509> {
        match self {
            Stream::Tls(s) => s.ssl().peer_certificate(),
            Stream::Plain(_) => None,
        }
    }

    /// The protocol version (`TLSv1.3`) and cipher suite (OpenSSL's name)
    /// negotiated, once TLS is up.
    pub fn negotiated(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Stream::Tls(s) => {
                let ssl = s.ssl();
                let cipher = ssl.current_cipher().map_or("?", |c| c.name());
                Some((ssl.version_str(), cipher))
            }
            Stream::Plain(_) => None,
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.get_ref().tcp,
        }
    }

    /// Close the socket in both directions without a protocol goodbye; used
    /// when a session must be abandoned.
    pub fn shutdown(&self) {
        let _ = self.tcp().shutdown(std::net::Shutdown::Both);
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_tls() {
            "Stream::Tls"
        } else {
            "Stream::Plain"
        })
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Connect to `host:port`, trying each resolved address in turn with
/// `timeout` for each, all of them before `end`, optionally from `source`,
/// and set the inactivity timeouts.
pub fn connect(
    host: &str,
    port: u16,
    source: Option<IpAddr>,
    timeout: Duration,
    end: Instant,
) -> Result<TcpStream, Error> {
    let target = format!("{host}:{port}");
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Resolve {
            target: target.clone(),
            source: e,
        })?
        .filter(|a| source.is_none_or(|s| s.is_ipv4() == a.is_ipv4()))
        .collect();
    let mut last = None;
    for addr in addrs {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() && last.is_some() {
            // The addresses tried so far used up the time; report the last.
            break;
        }
        match connect_one(addr, source, timeout.min(left)) {
            Ok(s) => {
                s.set_read_timeout(Some(timeout)).map_err(Error::Io)?;
                s.set_write_timeout(Some(timeout)).map_err(Error::Io)?;
                // POP3 is request/response with small commands; Nagle would
                // delay each command by up to one round trip.
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(Error::Connect { target, last })
}

fn connect_one(
    addr: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    match source {
        None => TcpStream::connect_timeout(&addr, timeout),
        Some(ip) => {
            let domain = socket2::Domain::for_address(addr);
            let sock =
                socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
            sock.bind(&SocketAddr::new(ip, 0).into())?;
            sock.connect_timeout(&addr.into(), timeout)?;
            Ok(sock.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_port_is_a_transient_connect_error() {
        // Bind then drop, so nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let end = Instant::now() + Duration::from_secs(4);
        let e = connect("127.0.0.1", port, None, Duration::from_secs(2), end).unwrap_err();
        assert!(matches!(e, Error::Connect { .. }), "{e}");
        assert!(e.is_transient());
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")));
    }
}
