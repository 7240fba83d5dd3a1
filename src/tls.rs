//! Connections: TCP with timeouts, then TLS (implicit or after STLS).
//!
//! Every socket gets its read and write timeouts before the first byte moves,
//! so a stalled TLS handshake times out like any other read. Trust comes from
//! the system store (OpenSSL's default paths, which is what Debian's
//! `ca-certificates` fills) plus the account's `ca_file`; with
//! `tls_fingerprint` set, the certificate's SHA-256 is the trust decision and
//! is checked before a single POP3 byte is read or written over TLS.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use native_tls::{Certificate, Identity, Protocol, TlsConnector, TlsStream};
use openssl::hash::MessageDigest;
use openssl::x509::X509;

use crate::config::Account;

/// A connection that is plain TCP or TLS over TCP.
#[allow(clippy::large_enum_variant)]
pub enum Stream {
    /// Before STLS, or `tls = none`.
    Plain(TcpStream),
    /// After the handshake.
    Tls(TlsStream<TcpStream>),
}

impl Stream {
    /// Whether the bytes on this stream are encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The server's certificate, once TLS is up.
    pub fn peer_certificate(&self) -> Option<X509> {
        match self {
            Stream::Tls(s) => s
                .peer_certificate()
                .ok()
                .flatten()
                .and_then(|c| c.to_der().ok())
                .and_then(|der| X509::from_der(&der).ok()),
            Stream::Plain(_) => None,
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
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

/// What went wrong while connecting or securing the connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The host name did not resolve.
    Resolve {
        /// `host:port` as configured.
        target: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// No resolved address accepted the connection.
    Connect {
        /// `host:port` as configured.
        target: String,
        /// The last address tried and its error.
        last: Option<(SocketAddr, io::Error)>,
    },
    /// A file named in the account (`ca_file`, client certificate) is unusable.
    File {
        /// The configured key.
        key: &'static str,
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The TLS handshake failed (certificate not trusted, name mismatch, protocol).
    Handshake {
        /// `host:port`.
        target: String,
        /// OpenSSL's account of it.
        message: String,
        /// Whether it was the socket timing out.
        timed_out: bool,
    },
    /// `tls_fingerprint` is set and the certificate is a different one.
    FingerprintMismatch {
        /// `host:port`.
        target: String,
        /// What the server presented, to pin if it is the right one.
        actual: String,
        /// The presented certificate's subject.
        subject: String,
    },
    /// Socket option or other I/O failure after connecting.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Resolve { target, source } => write!(f, "cannot resolve {target}: {source}"),
            Error::Connect { target, last: Some((addr, e)) } => {
                write!(f, "cannot connect to {target} (last tried {addr}): {e}")
            }
            Error::Connect { target, last: None } => {
                write!(f, "cannot connect to {target}: no usable address")
            }
            Error::File { key, path, message } => {
                write!(f, "{key} {}: {message}", path.display())
            }
            Error::Handshake { target, message, timed_out: true } => {
                write!(f, "TLS handshake with {target} timed out: {message}")
            }
            Error::Handshake { target, message, .. } => write!(
                f,
                "TLS handshake with {target} failed: {message} (if the server uses a private CA, \
                 set ca_file; for a self-signed certificate, pin it with tls_fingerprint; \
                 `popspool --probe` shows the certificate)"
            ),
            Error::FingerprintMismatch { target, actual, subject } => write!(
                f,
                "certificate of {target} ({subject}) does not match tls_fingerprint: \
                 it is {actual}; if the server's certificate was renewed on purpose, pin the new one"
            ),
            Error::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Resolve { source, .. } => Some(source),
            Error::Connect {
                last: Some((_, e)), ..
            } => Some(e),
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl Error {
    /// Whether trying again later may help without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Resolve { .. } | Error::Connect { .. } | Error::Io(_)
        ) || matches!(
            self,
            Error::Handshake {
                timed_out: true,
                ..
            }
        )
    }
}

/// Settings for the TLS layer of one account, built once per poll.
pub struct Tls {
    connector: TlsConnector,
    pin: Option<[u8; 32]>,
}

impl Tls {
    /// Build the connector from the account's `ca_file`, `tls_fingerprint`
    /// and client certificate.
    pub fn new(acct: &Account) -> Result<Tls, Error> {
        let mut b = TlsConnector::builder();
        // TLS 1.0 and 1.1 are deprecated (RFC 8996).
        b.min_protocol_version(Some(Protocol::Tlsv12));
        if let Some(path) = &acct.ca_file {
            for cert in read_pem_certs("ca_file", path)? {
                b.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&acct.tls_client_cert, &acct.tls_client_key) {
            let c = read_file("tls_client_cert", cert)?;
            let k = read_file("tls_client_key", key)?;
            let id = Identity::from_pkcs8(&c, &k).map_err(|e| Error::File {
                key: "tls_client_cert",
                path: cert.clone(),
                message: format!("unusable certificate/key pair: {e}"),
            })?;
            b.identity(id);
        }
        if acct.tls_fingerprint.is_some() {
            // The pin replaces chain and name checks: that is how a
            // self-signed server is trusted. It is verified right after the
            // handshake, before any POP3 traffic.
            b.danger_accept_invalid_certs(true);
            b.danger_accept_invalid_hostnames(true);
        }
        let connector = b.build().map_err(|e| Error::Handshake {
            target: acct.host.clone(),
            message: e.to_string(),
            timed_out: false,
        })?;
        Ok(Tls {
            connector,
            pin: acct.tls_fingerprint,
        })
    }

    /// Run the handshake over `tcp` for `host`, then check the pin.
    pub fn handshake(&self, host: &str, port: u16, tcp: TcpStream) -> Result<Stream, Error> {
        let target = format!("{host}:{port}");
        let stream = self.connector.connect(host, tcp).map_err(|e| {
            let (message, timed_out) = match e {
                native_tls::HandshakeError::Failure(e) => {
                    let m = e.to_string();
                    let t = m.contains("timed out") || m.contains("Resource temporarily");
                    (m, t)
                }
                // Only a non-blocking socket can be interrupted mid-handshake;
                // ours block with a timeout, so this is a timeout.
                native_tls::HandshakeError::WouldBlock(_) => ("no answer".to_string(), true),
            };
            Error::Handshake {
                target: target.clone(),
                message,
                timed_out,
            }
        })?;
        let stream = Stream::Tls(stream);
        if let Some(pin) = self.pin {
            let cert = stream.peer_certificate().ok_or_else(|| Error::Handshake {
                target: target.clone(),
                message: "server sent no certificate".into(),
                timed_out: false,
            })?;
            let actual = fingerprint(&cert);
            if actual.as_slice() != pin.as_slice() {
                stream.shutdown();
                return Err(Error::FingerprintMismatch {
                    target,
                    actual: hex_colon(&actual),
                    subject: name_text(cert.subject_name()),
                });
            }
        }
        Ok(stream)
    }
}

/// Connect to `host:port` with `timeout` for each resolved address in turn,
/// optionally from `source`, and set the inactivity timeouts.
pub fn connect(
    host: &str,
    port: u16,
    source: Option<IpAddr>,
    timeout: Duration,
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
        match connect_one(addr, source, timeout) {
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

/// SHA-256 of the certificate's DER encoding.
pub fn fingerprint(cert: &X509) -> Vec<u8> {
    cert.digest(MessageDigest::sha256())
        .map(|d| d.to_vec())
        .unwrap_or_default()
}

/// `AB:CD:...`, the form `openssl x509 -fingerprint` prints and `tls_fingerprint` accepts.
pub fn hex_colon(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `CN=x, O=y` for a certificate name.
pub fn name_text(name: &openssl::x509::X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let val = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{key}={val}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::File {
        key,
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn read_pem_certs(key: &'static str, path: &Path) -> Result<Vec<Certificate>, Error> {
    let bad = |message: String| Error::File {
        key,
        path: path.to_path_buf(),
        message,
    };
    let pem = read_file(key, path)?;
    let certs =
        X509::stack_from_pem(&pem).map_err(|e| bad(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    certs
        .iter()
        .map(|c| {
            c.to_der()
                .ok()
                .and_then(|der| Certificate::from_der(&der).ok())
                .ok_or_else(|| bad("unreadable certificate".into()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_colon_format() {
        assert_eq!(hex_colon(&[0xab, 0x01, 0xff]), "AB:01:FF");
    }

    #[test]
    fn refused_port_is_a_transient_connect_error() {
        // Bind then drop, so nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = connect("127.0.0.1", port, None, Duration::from_secs(2)).unwrap_err();
        assert!(matches!(e, Error::Connect { .. }), "{e}");
        assert!(e.is_transient());
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")));
    }

    #[test]
    fn stalled_handshake_times_out() {
        // A listener that accepts and never answers: the ClientHello must not hang.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let keep = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            std::thread::sleep(Duration::from_secs(3));
            drop(s);
        });
        let tcp = connect("127.0.0.1", port, None, Duration::from_millis(300)).unwrap();
        let acct = crate::config::test_account("127.0.0.1", port);
        let t0 = std::time::Instant::now();
        let e = Tls::new(&acct)
            .unwrap()
            .handshake("localhost", port, tcp)
            .unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert!(
            matches!(
                e,
                Error::Handshake {
                    timed_out: true,
                    ..
                }
            ),
            "{e}"
        );
        keep.join().unwrap();
    }
}
