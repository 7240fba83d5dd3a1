//! Connections: TCP with timeouts, then TLS (implicit or after STLS).
//!
//! Every socket gets its read and write timeouts before the first byte moves,
//! so a stalled TLS handshake times out like any other read. Trust comes from
//! the system store (OpenSSL's default paths, which is what Debian's
//! `ca-certificates` fills) plus the account's `ca_file`; with
//! `tls_fingerprint` set, the certificate's SHA-256 is the trust decision and
//! is checked before a single POP3 byte is read or written over TLS.
//!
//! Reading the system store is the most expensive thing a short poll does:
//! native-tls 0.2 parses the whole bundle (~150 certificates) twice per
//! connector, 40 to 70 ms and 5 MiB with OpenSSL 3.0. Where the system's
//! certificate directory is hashed (`c_rehash`, as Debian's
//! `update-ca-certificates` keeps `/etc/ssl/certs`), the binary asks for it
//! to be read on demand instead: OpenSSL then looks up only the issuer a
//! server's chain needs (see [`read_system_store_on_demand`]).

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
    Tls(TlsStream<Socket>),
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
}

/// Four full TLS records (16 KiB of plaintext each, plus overhead): enough
/// for one recv(2) to carry several messages while pipelining, and small
/// next to the rest of a session's memory.
const SOCKET_BUF_BYTES: usize = 64 << 10;

impl Socket {
    fn new(tcp: TcpStream) -> Socket {
        Socket {
            tcp,
            buf: vec![0; SOCKET_BUF_BYTES].into_boxed_slice(),
            pos: 0,
            len: 0,
        }
    }
}

impl Read for Socket {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.len {
            if out.len() >= self.buf.len() {
                return self.tcp.read(out);
            }
            self.len = self.tcp.read(&mut self.buf)?;
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
        /// On a verification failure, the certificate the server presented,
        /// fetched by a second, unverified handshake (see [`inspect`]).
        presented: Option<Box<CertInfo>>,
    },
    /// `tls_fingerprint` is set and the certificate is a different one.
    FingerprintMismatch {
        /// `host:port`.
        target: String,
        /// What the server presented, to pin if it is the right one.
        presented: Box<CertInfo>,
    },
    /// Socket option or other I/O failure after connecting.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Resolve { target, source } => write!(f, "cannot resolve {target}: {source}"),
            Error::Connect {
                target,
                last: Some((addr, e)),
            } => {
                write!(f, "cannot connect to {target} (last tried {addr}): {e}")
            }
            Error::Connect { target, last: None } => {
                write!(f, "cannot connect to {target}: no usable address")
            }
            Error::File { key, path, message } => {
                write!(f, "{key} {}: {message}", path.display())
            }
            Error::Handshake {
                target,
                message,
                timed_out: true,
                ..
            } => {
                write!(f, "TLS handshake with {target} timed out: {message}")
            }
            Error::Handshake {
                target,
                message,
                presented: None,
                ..
            } => write!(
                f,
                "TLS handshake with {target} failed: {message} (if the server uses a private CA, \
                 set ca_file; for a self-signed certificate, pin it with tls_fingerprint; \
                 `popspool --probe` shows the certificate)"
            ),
            Error::Handshake {
                target,
                message,
                presented: Some(cert),
                ..
            } => {
                write!(
                    f,
                    "TLS handshake with {target} failed: {}. The server presented {cert}. ",
                    short_reason(message)
                )?;
                let host = target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h);
                f.write_str(&advice(message, cert, host))
            }
            Error::FingerprintMismatch { target, presented } => write!(
                f,
                "certificate of {target} does not match tls_fingerprint: the server presented \
                 {presented}. If the server's certificate was renewed on purpose, pin the new one: \
                 tls_fingerprint = {}",
                presented.sha256
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
    /// Whether the handshake failed because the certificate did not verify
    /// (untrusted issuer, wrong name, expired), as opposed to the network.
    pub fn is_verification_failure(&self) -> bool {
        matches!(self, Error::Handshake { message, presented: None, timed_out: false, .. }
            if message.contains("certificate verify failed"))
    }

    /// Attach the certificate a side handshake found (see [`inspect`]).
    pub fn with_presented(self, cert: Option<CertInfo>) -> Error {
        match (self, cert) {
            (
                Error::Handshake {
                    target,
                    message,
                    timed_out,
                    ..
                },
                Some(c),
            ) => Error::Handshake {
                target,
                message,
                timed_out,
                presented: Some(Box::new(c)),
            },
            (e, _) => e,
        }
    }

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

/// Settings for the TLS layer of one account, made once per poll.
pub struct Tls {
    connector: TlsConnector,
    pin: Option<[u8; 32]>,
    /// Built with the system store read on demand (see
    /// [`read_system_store_on_demand`]).
    on_demand: bool,
}

/// The hashed system certificate directory, once `main` has asked for the
/// system store to be read on demand; `None` until then and in tests.
static ON_DEMAND_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Set when a chain did not verify on demand but did against the whole
/// bundle: the directory is not complete, so it is not trusted to be again.
static ON_DEMAND_OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on, build connectors with the system store read on demand from
/// its hashed directory, when that gives the same trust as reading it whole:
/// the bundle OpenSSL would load is the system's default one (not one an
/// administrator named in `SSL_CERT_FILE`), the directory is the default
/// one, and it holds `c_rehash` links. Returns the directory when that is
/// so.
///
/// A chain that does not verify this way is tried once more against the
/// whole bundle before it is reported ([`Tls::whole_store`]), so a CA that
/// is in the bundle but missing from the directory is still trusted.
///
/// Only for a single-threaded process: each connector build sets
/// `SSL_CERT_FILE` and `SSL_CERT_DIR` for its duration (native-tls offers no
/// other way to keep OpenSSL and openssl-probe from parsing the bundle) and
/// restores them before anything else runs, so no child process or other
/// reader sees the change.
pub fn read_system_store_on_demand() -> Option<&'static Path> {
    let dir = hashed_system_dir()?;
    Some(ON_DEMAND_DIR.get_or_init(|| dir).as_path())
}

/// OpenSSL's compiled-in locations: `OPENSSLDIR/cert.pem` and
/// `OPENSSLDIR/certs`.
fn default_locations() -> Option<(PathBuf, PathBuf)> {
    // "OPENSSLDIR: \"/usr/lib/ssl\""
    let text = openssl::version::dir();
    let dir = text.split('"').nth(1)?;
    let dir = Path::new(dir);
    Some((dir.join("cert.pem"), dir.join("certs")))
}

fn hashed_system_dir() -> Option<PathBuf> {
    let (default_file, default_dir) = default_locations()?;
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    let env = |name: &str| std::env::var_os(name).map(PathBuf::from);
    let file = env("SSL_CERT_FILE").unwrap_or_else(|| default_file.clone());
    let dir = env("SSL_CERT_DIR").unwrap_or_else(|| default_dir.clone());
    let (dir, default_dir) = (canon(&dir)?, canon(&default_dir)?);
    if canon(&file)? != canon(&default_file)? || dir != default_dir {
        return None;
    }
    let hashed = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .any(|e| is_hash_link_name(&e.file_name().to_string_lossy()));
    hashed.then_some(dir)
}

/// `c_rehash` names: eight hex digits of the subject hash, a dot, a number.
fn is_hash_link_name(name: &str) -> bool {
    match name.split_once('.') {
        Some((hash, n)) => {
            hash.len() == 8
                && hash.bytes().all(|b| b.is_ascii_hexdigit())
                && !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

fn on_demand_dir() -> Option<&'static Path> {
    if ON_DEMAND_OFF.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    ON_DEMAND_DIR.get().map(PathBuf::as_path)
}

/// Runs `f` with the system bundle hidden from OpenSSL and openssl-probe
/// (`/dev/null` in its place) and only `dir` to look certificates up in,
/// then restores the environment as it was.
fn with_store_on_demand<T>(dir: &Path, f: impl FnOnce() -> T) -> T {
    const VARS: [&str; 2] = ["SSL_CERT_FILE", "SSL_CERT_DIR"];
    let saved = VARS.map(std::env::var_os);
    std::env::set_var(VARS[0], "/dev/null");
    std::env::set_var(VARS[1], dir);
    let out = f();
    for (name, value) in VARS.iter().zip(saved) {
        match value {
            Some(v) => std::env::set_var(name, v),
            None => std::env::remove_var(name),
        }
    }
    out
}

/// Connectors kept for reuse, at most. Building one loads the system trust
/// store (native-tls parses the ~140-certificate bundle twice: ~30 to 60 ms
/// of CPU on this project's machines, 95% of a poll of a small mailbox), so
/// each distinct TLS configuration is built once per process. Accounts
/// usually share one (same `ca_file` or none); 16 covers any sane
/// configuration, and each holds a parsed trust store (a few hundred KiB).
const MAX_CACHED_CONNECTORS: usize = 16;

/// What a connector is built from: the files by path and identity (a
/// replaced or edited file makes a new key, so it is read again), and
/// whether a pin switches off chain and name checks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConnectorKey {
    ca_file: Option<FileStamp>,
    client: Option<(FileStamp, FileStamp)>,
    pinned: bool,
    on_demand: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

impl ConnectorKey {
    /// `None` if a file cannot be looked at: then nothing is cached and
    /// building reports the problem.
    fn of(acct: &Account) -> Option<ConnectorKey> {
        let ca_file = match &acct.ca_file {
            Some(p) => Some(FileStamp::of(p)?),
            None => None,
        };
        let client = match (&acct.tls_client_cert, &acct.tls_client_key) {
            (Some(c), Some(k)) => Some((FileStamp::of(c)?, FileStamp::of(k)?)),
            _ => None,
        };
        Some(ConnectorKey {
            ca_file,
            client,
            pinned: acct.tls_fingerprint.is_some(),
            on_demand: on_demand_dir().is_some(),
        })
    }
}

static CONNECTORS: std::sync::Mutex<Vec<(ConnectorKey, TlsConnector)>> =
    std::sync::Mutex::new(Vec::new());

/// Forget every cached connector, so the next poll reads the system trust
/// store again (SIGHUP does this).
pub fn clear_cache() {
    CONNECTORS.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

impl Tls {
    /// The connector for the account's `ca_file`, `tls_fingerprint` and
    /// client certificate: the cached one if these files are unchanged,
    /// else a new one.
    pub fn new(acct: &Account) -> Result<Tls, Error> {
        let pin = acct.tls_fingerprint;
        let key = ConnectorKey::of(acct);
        let on_demand = key.as_ref().is_some_and(|k| k.on_demand);
        if let Some(k) = &key {
            let cache = CONNECTORS.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, c)) = cache.iter().find(|(ck, _)| ck == k) {
                return Ok(Tls {
                    connector: c.clone(),
                    pin,
                    on_demand,
                });
            }
        }
        let connector = match on_demand_dir() {
            Some(dir) if on_demand => with_store_on_demand(dir, || Self::build(acct))?,
            _ => Self::build(acct)?,
        };
        if let Some(k) = key {
            let mut cache = CONNECTORS.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= MAX_CACHED_CONNECTORS {
                cache.remove(0);
            }
            cache.push((k, connector.clone()));
        }
        Ok(Tls {
            connector,
            pin,
            on_demand,
        })
    }

    /// After a chain did not verify with the system store read on demand:
    /// a connector that reads the whole bundle, for one more try, or `None`
    /// when this one already did (the failure stands). From then on every
    /// connector reads the whole bundle.
    pub fn whole_store(&self, acct: &Account) -> Option<Result<Tls, Error>> {
        if !self.on_demand || self.pin.is_some() {
            return None;
        }
        ON_DEMAND_OFF.store(true, std::sync::atomic::Ordering::Relaxed);
        Some(Tls::new(acct))
    }

    fn build(acct: &Account) -> Result<TlsConnector, Error> {
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
        b.build().map_err(|e| Error::Handshake {
            target: acct.host.clone(),
            message: e.to_string(),
            timed_out: false,
            presented: None,
        })
    }

    /// Run the handshake over `tcp` for `host`, then check the pin.
    pub fn handshake(&self, host: &str, port: u16, tcp: TcpStream) -> Result<Stream, Error> {
        let target = format!("{host}:{port}");
        let stream = self
            .connector
            .connect(host, Socket::new(tcp))
            .map_err(|e| {
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
                    presented: None,
                }
            })?;
        let stream = Stream::Tls(stream);
        if let Some(pin) = self.pin {
            let cert = stream.peer_certificate().ok_or_else(|| Error::Handshake {
                target: target.clone(),
                message: "server sent no certificate".into(),
                timed_out: false,
                presented: None,
            })?;
            let actual = fingerprint(&cert);
            if actual.as_slice() != pin.as_slice() {
                stream.shutdown();
                return Err(Error::FingerprintMismatch {
                    target,
                    presented: Box::new(CertInfo::of(&cert)),
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

/// What a certificate says about itself, for messages and `--probe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// `CN=..., O=...`.
    pub subject: String,
    /// The issuer's name.
    pub issuer: String,
    /// Start of validity, as OpenSSL prints it.
    pub not_before: String,
    /// End of validity, as OpenSSL prints it.
    pub not_after: String,
    /// Whether `not_after` has passed.
    pub expired: bool,
    /// Whether `not_before` is still to come.
    pub not_yet_valid: bool,
    /// Subject alternative names (`DNS:x`, `IP:y`): the names it is valid for.
    pub names: Vec<String>,
    /// SHA-256 of the DER, `AB:CD:...`: the value for `tls_fingerprint`.
    pub sha256: String,
}

/// Longest certificate text shown (subject, issuer, one name), in
/// characters: the certificate is the server's text, so it is bounded and
/// stripped of control characters like any other.
const MAX_CERT_TEXT: usize = 200;

/// Most subject alternative names listed: a CDN certificate can carry
/// hundreds, and a message needs only enough to recognise the host.
const MAX_NAMES_SHOWN: usize = 10;

impl CertInfo {
    /// Reads `cert`.
    pub fn of(cert: &X509) -> CertInfo {
        let shown = |s: String| crate::text::printable(&s, MAX_CERT_TEXT);
        let now = openssl::asn1::Asn1Time::days_from_now(0).ok();
        let (expired, not_yet_valid) = match &now {
            Some(now) => (cert.not_after() < *now, cert.not_before() > *now),
            None => (false, false),
        };
        let names = cert
            .subject_alt_names()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| {
                        n.dnsname().map(|d| format!("DNS:{d}")).or_else(|| {
                            n.ipaddress().and_then(|ip| match ip.len() {
                                4 => <[u8; 4]>::try_from(ip)
                                    .ok()
                                    .map(|a| format!("IP:{}", IpAddr::from(a))),
                                16 => <[u8; 16]>::try_from(ip)
                                    .ok()
                                    .map(|a| format!("IP:{}", IpAddr::from(a))),
                                _ => None,
                            })
                        })
                    })
                    .map(shown)
                    .collect()
            })
            .unwrap_or_default();
        CertInfo {
            subject: shown(name_text(cert.subject_name())),
            issuer: shown(name_text(cert.issuer_name())),
            not_before: cert.not_before().to_string(),
            not_after: cert.not_after().to_string(),
            expired,
            not_yet_valid,
            names,
            sha256: hex_colon(&fingerprint(cert)),
        }
    }

    /// The names, at most `MAX_NAMES_SHOWN` of them.
    pub fn names_text(&self) -> String {
        let mut v: Vec<&str> = self
            .names
            .iter()
            .take(MAX_NAMES_SHOWN)
            .map(String::as_str)
            .collect();
        if self.names.len() > MAX_NAMES_SHOWN {
            v.push("...");
        }
        v.join(", ")
    }
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "subject {}; issuer {}; valid {} to {}",
            self.subject, self.issuer, self.not_before, self.not_after
        )?;
        if self.expired {
            f.write_str(" (EXPIRED)")?;
        }
        if self.not_yet_valid {
            f.write_str(" (NOT YET VALID)")?;
        }
        if !self.names.is_empty() {
            write!(f, "; names {}", self.names_text())?;
        }
        write!(f, "; SHA-256 {}", self.sha256)
    }
}

/// OpenSSL's "error:0A000086:SSL routines:...:certificate verify
/// failed:../ssl/statem/statem_clnt.c:1889: (unable to get local issuer
/// certificate)" reduced to "certificate verify failed (unable to get local
/// issuer certificate)": the function and source file help nobody here.
fn short_reason(message: &str) -> String {
    match (
        message.contains("certificate verify failed"),
        message.rfind(" ("),
    ) {
        (true, Some(i)) => format!("certificate verify failed{}", &message[i..]),
        (true, None) => "certificate verify failed".into(),
        _ => message.to_string(),
    }
}

/// What to do about a certificate that did not verify, in words.
fn advice(message: &str, cert: &CertInfo, host: &str) -> String {
    if cert.expired || cert.not_yet_valid {
        return format!(
            "The certificate is outside its validity period (check this machine's clock; \
             otherwise the server must renew it). To accept exactly this certificate \
             anyway, pin it: tls_fingerprint = {}",
            cert.sha256
        );
    }
    if message.to_ascii_lowercase().contains("hostname mismatch")
        || message.contains("IP address mismatch")
    {
        return format!(
            "The certificate is not valid for host = {host}; it names {}. Set host to one \
             of those names, or pin the certificate: tls_fingerprint = {}",
            if cert.names.is_empty() {
                "no alternative names".to_string()
            } else {
                cert.names_text()
            },
            cert.sha256
        );
    }
    format!(
        "Its issuer is not trusted here: if \"{}\" is your organisation's CA, put that CA's \
         certificate into ca_file; to trust exactly this certificate (self-signed servers), \
         set tls_fingerprint = {}",
        cert.issuer, cert.sha256
    )
}

/// A TLS handshake done on the side, only to report on it.
#[derive(Debug, Clone)]
pub struct SideHandshake {
    /// The certificate presented, if any.
    pub cert: Option<CertInfo>,
    /// `TLSv1.3`, ...
    pub version: String,
    /// The negotiated cipher suite, OpenSSL's name.
    pub cipher: String,
}

/// Connects again, without verifying anything, just to read what the
/// server presents: its certificate after a verification failure (so the
/// error can say what to pin or which CA to add), or the protocol version
/// and cipher for `--probe`, which native-tls does not expose.
///
/// Nothing is sent over this connection after the handshake (no POP3
/// command, no credential); it is shut down at once. `upgrade` performs the
/// plain-text part first when the account uses STLS.
pub fn inspect(
    acct: &Account,
    upgrade: &dyn Fn(TcpStream) -> Option<TcpStream>,
) -> Option<SideHandshake> {
    use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
    let tcp = connect(&acct.host, acct.port, acct.source_ip, acct.timeout).ok()?;
    let tcp = upgrade(tcp)?;
    let mut b = SslConnector::builder(SslMethod::tls_client()).ok()?;
    b.set_verify(SslVerifyMode::NONE);
    b.set_min_proto_version(Some(SslVersion::TLS1_2)).ok()?;
    // A server that demands a client certificate would end the handshake
    // without one: offer the account's, as the real connection does.
    if let (Some(cert), Some(key)) = (&acct.tls_client_cert, &acct.tls_client_key) {
        b.set_certificate_chain_file(cert).ok()?;
        b.set_private_key_file(key, SslFiletype::PEM).ok()?;
    }
    let mut config = b.build().configure().ok()?;
    config.set_verify_hostname(false);
    let mut stream = config.connect(&acct.host, tcp).ok()?;
    let ssl = stream.ssl();
    let side = SideHandshake {
        cert: ssl.peer_certificate().map(|c| CertInfo::of(&c)),
        version: ssl.version_str().to_string(),
        cipher: ssl.current_cipher().map_or("?", |c| c.name()).to_string(),
    };
    let _ = stream.shutdown();
    let _ = stream.get_ref().shutdown(std::net::Shutdown::Both);
    Some(side)
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

    /// A self-signed certificate for `cn` with `sans`, valid between the
    /// two Unix times.
    fn cert(cn: &str, sans: &[&str], from: i64, to: i64) -> X509 {
        use openssl::asn1::Asn1Time;
        use openssl::ec::{EcGroup, EcKey};
        use openssl::nid::Nid;
        use openssl::pkey::PKey;
        use openssl::x509::extension::SubjectAlternativeName;
        use openssl::x509::X509NameBuilder;
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::from_unix(from).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(to).unwrap()).unwrap();
        let mut san = SubjectAlternativeName::new();
        for s in sans {
            match s.strip_prefix("IP:") {
                Some(ip) => san.ip(ip),
                None => san.dns(s),
            };
        }
        let ext = san.build(&b.x509v3_context(None, None)).unwrap();
        b.append_extension(ext).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        b.build()
    }

    #[test]
    fn certificate_descriptions_and_advice() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let good = CertInfo::of(&cert(
            "pop.example.com",
            &["pop.example.com", "IP:192.0.2.1"],
            now - 10,
            now + 86400,
        ));
        assert_eq!(good.subject, "CN=pop.example.com");
        assert_eq!(good.names, ["DNS:pop.example.com", "IP:192.0.2.1"]);
        assert!(!good.expired && !good.not_yet_valid);
        assert_eq!(good.sha256.len(), 32 * 3 - 1);
        let text = good.to_string();
        assert!(
            text.starts_with("subject CN=pop.example.com; issuer CN=pop.example.com; valid "),
            "{text}"
        );
        assert!(text.ends_with(&format!(
            "; names DNS:pop.example.com, IP:192.0.2.1; SHA-256 {}",
            good.sha256
        )));

        let old = CertInfo::of(&cert("old\x1b[2J", &[], now - 86400 * 10, now - 86400));
        assert!(old.expired && old.to_string().contains("(EXPIRED)"));
        assert!(!old.subject.contains('\x1b'), "server text is sanitised");
        let advice_for = |msg, c: &CertInfo| advice(msg, c, "10.0.0.5");
        assert!(advice_for("x", &old).starts_with("The certificate is outside its validity period"));
        assert!(advice_for("... (Hostname mismatch)", &good)
            .starts_with("The certificate is not valid for host = 10.0.0.5; it names DNS:pop.example.com, IP:192.0.2.1."));
        assert!(
            advice_for("... (unable to get local issuer certificate)", &good)
                .contains("put that CA's certificate into ca_file")
        );

        let many: Vec<String> = (0..15).map(|i| format!("h{i}.example")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let big = CertInfo::of(&cert("cdn", &refs, now - 10, now + 10));
        assert!(big.names_text().ends_with("DNS:h9.example, ..."));

        assert_eq!(
            short_reason("error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed:../ssl/statem/statem_clnt.c:1889: (self-signed certificate)"),
            "certificate verify failed (self-signed certificate)"
        );
        assert_eq!(short_reason("connection reset"), "connection reset");
        let e = Error::Handshake {
            target: "h:995".into(),
            message: "certificate verify failed".into(),
            timed_out: false,
            presented: None,
        };
        assert!(e.is_verification_failure());
        let e = e.with_presented(Some(good.clone()));
        assert!(!e.is_verification_failure(), "explained once");
        assert!(e
            .to_string()
            .contains(&format!("set tls_fingerprint = {}", good.sha256)));
    }

    #[test]
    fn hash_link_names_and_default_locations() {
        for good in ["9d66eef0.0", "ABCDEF01.12"] {
            assert!(is_hash_link_name(good), "{good}");
        }
        for bad in [
            "9d66eef0",
            "9d66eef.0",
            "9d66eef0.",
            "9d66eef0.r0",
            "ca.pem",
            "xyzxyzxy.0",
        ] {
            assert!(!is_hash_link_name(bad), "{bad}");
        }
        let (file, dir) = default_locations().expect("OPENSSLDIR");
        assert!(file.ends_with("cert.pem") && dir.ends_with("certs"));
        assert_eq!(file.parent(), dir.parent());
    }

    #[test]
    fn hex_colon_format() {
        assert_eq!(hex_colon(&[0xab, 0x01, 0xff]), "AB:01:FF");
    }

    #[test]
    fn connectors_are_reused_until_a_file_changes() {
        let dir = std::env::temp_dir().join(format!("popspool-tls-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        let pem = |cn: &str| {
            let mut name = openssl::x509::X509NameBuilder::new().unwrap();
            name.append_entry_by_text("CN", cn).unwrap();
            let name = name.build();
            let key = openssl::pkey::PKey::from_ec_key(
                openssl::ec::EcKey::generate(
                    &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                        .unwrap(),
                )
                .unwrap(),
            )
            .unwrap();
            let mut b = X509::builder().unwrap();
            b.set_subject_name(&name).unwrap();
            b.set_issuer_name(&name).unwrap();
            b.set_pubkey(&key).unwrap();
            let now = openssl::asn1::Asn1Time::days_from_now(0).unwrap();
            let later = openssl::asn1::Asn1Time::days_from_now(1).unwrap();
            b.set_not_before(&now).unwrap();
            b.set_not_after(&later).unwrap();
            b.sign(&key, MessageDigest::sha256()).unwrap();
            b.build().to_pem().unwrap()
        };
        std::fs::write(&ca, pem("one")).unwrap();
        let mut acct = crate::config::test_account("localhost", 995);
        acct.ca_file = Some(ca.clone());
        let key = ConnectorKey::of(&acct).unwrap();
        Tls::new(&acct).unwrap();
        let cached = |k: &ConnectorKey| {
            CONNECTORS
                .lock()
                .unwrap()
                .iter()
                .filter(|(ck, _)| ck == k)
                .count()
        };
        assert_eq!(cached(&key), 1);
        Tls::new(&acct).unwrap();
        assert_eq!(cached(&key), 1, "reused, not built again");
        // Replaced (another inode): a new key, read again; a broken file is an error again.
        std::fs::write(dir.join("new.pem"), b"not pem").unwrap();
        std::fs::rename(dir.join("new.pem"), &ca).unwrap();
        assert_ne!(ConnectorKey::of(&acct).unwrap(), key);
        assert!(matches!(Tls::new(&acct), Err(Error::File { .. })));
        std::fs::remove_file(&ca).unwrap();
        assert!(ConnectorKey::of(&acct).is_none());
        assert!(matches!(Tls::new(&acct), Err(Error::File { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
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
