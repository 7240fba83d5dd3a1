//! TLS connectors: OpenSSL client contexts built from an account's TLS
//! settings (`ca_file`, the `tls_fingerprint` pin, the client certificate
//! and key) over the system trust store, the per-connection checks (server
//! name, pin), and [`Connectors`], the one explicit value that owns the
//! trust-store decision and the cache of built contexts.
//!
//! Contexts are built with the openssl crate directly rather than through
//! a wrapper that always parses the default bundle: that way the system
//! store can be read on demand (README "The system trust store") without
//! touching the process environment, which child processes inherit and
//! which no thread may change while another runs.

use std::cell::RefCell;
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    ErrorCode, HandshakeError, Ssl, SslContext, SslContextBuilder, SslContextRef, SslMethod,
    SslMode, SslOptions, SslVerifyMode, SslVersion,
};
use openssl::x509::verify::X509CheckFlags;
use openssl::x509::{X509VerifyResult, X509};

use super::diagnose::{fingerprint, CertInfo};
use super::net::{Socket, Stream};
use super::store::SystemStore;
use super::{Ended, Error, Settings};

/// Connectors kept for reuse, at most. Building one loads the system trust
/// store (parsing the ~140-certificate bundle when it is read whole), so
/// each distinct TLS configuration is built once per process. Accounts
/// usually share one (same `ca_file` or none); 16 covers any sane
/// configuration, and each holds a trust store (a few hundred KiB when
/// parsed whole).
const MAX_CACHED_CONNECTORS: usize = 16;

/// The cipher list of the openssl crate's `SslConnector` (derived from
/// Python's defaults): OpenSSL's defaults without anonymous, null and
/// legacy ciphers. It only matters for TLS 1.2; TLS 1.3 suites are all
/// sound.
const CIPHERS: &str = "DEFAULT:!aNULL:!eNULL:!MD5:!3DES:!DES:!RC4:!IDEA:!SEED:!aDSS:!SRP:!PSK";

/// The trust-store decision and the connectors built so far, for the whole
/// process: `main` makes one and lends it to every poll, `--check` and
/// `--probe`. The program is single-threaded, hence the `RefCell`s.
pub struct Connectors {
    /// How new connectors read the system store; falls back to
    /// [`SystemStore::Whole`] for good once the on-demand directory proved
    /// incomplete (see [`Connectors::whole_store`]).
    store: RefCell<SystemStore>,
    cache: RefCell<Vec<(ConnectorKey, SslContext)>>,
}

impl Connectors {
    /// Read the system store on demand from its hashed directory where
    /// that gives the same trust as reading it whole (README "The system
    /// trust store"), else whole. Decided once, from the environment as the
    /// process found it.
    pub fn for_system() -> Connectors {
        Connectors::with(SystemStore::find())
    }

    /// Always read the system store whole, as OpenSSL's defaults say.
    pub fn reading_whole_store() -> Connectors {
        Connectors::with(SystemStore::Whole)
    }

    fn with(store: SystemStore) -> Connectors {
        Connectors {
            store: RefCell::new(store),
            cache: RefCell::new(Vec::new()),
        }
    }

    /// The hashed directory read on demand, if it is.
    pub fn on_demand_dir(&self) -> Option<PathBuf> {
        match &*self.store.borrow() {
            SystemStore::OnDemand(dir) => Some(PathBuf::from(dir)),
            SystemStore::Whole => None,
        }
    }

    /// Forget every cached connector, so the next poll reads the system
    /// trust store again (SIGHUP does this).
    pub fn clear(&self) {
        self.cache.borrow_mut().clear();
    }

    /// The connector for these settings: the cached one if their files are
    /// unchanged, else a new one.
    pub fn get(&self, s: &Settings) -> Result<Tls, Error> {
        let store = self.store.borrow().clone();
        let on_demand = matches!(store, SystemStore::OnDemand(_));
        let key = ConnectorKey::of(s, on_demand);
        let tls = |ctx: SslContext| Tls {
            ctx,
            pin: s.pin,
            on_demand,
        };
        if let Some(k) = &key {
            if let Some((_, c)) = self.cache.borrow().iter().find(|(ck, _)| ck == k) {
                return Ok(tls(c.clone()));
            }
        }
        let ctx = build(s, &store)?;
        if let Some(k) = key {
            let mut cache = self.cache.borrow_mut();
            if cache.len() >= MAX_CACHED_CONNECTORS {
                cache.remove(0);
            }
            cache.push((k, ctx.clone()));
        }
        Ok(tls(ctx))
    }

    /// After a chain did not verify with the system store read on demand:
    /// a connector that reads the whole bundle, for one more try, or `None`
    /// when `failed` already did (the failure stands). From then on every
    /// connector reads the whole bundle.
    pub fn whole_store(&self, failed: &Tls, s: &Settings) -> Option<Result<Tls, Error>> {
        if !failed.on_demand || failed.pin.is_some() {
            return None;
        }
        *self.store.borrow_mut() = SystemStore::Whole;
        Some(self.get(s))
    }
}

/// Settings for the TLS layer of one account, made once per poll.
pub struct Tls {
    ctx: SslContext,
    pin: Option<[u8; 32]>,
    /// Built with the system store read on demand.
    on_demand: bool,
}

impl Tls {
    /// Run the handshake over `tcp` for `host`, over by `end` (see
    /// [`Socket::hold_to`]), then check the pin.
    pub fn handshake(
        &self,
        host: &str,
        port: u16,
        tcp: TcpStream,
        end: Instant,
    ) -> Result<Stream, Error> {
        let target = format!("{host}:{port}");
        let failed = |message: String, ended: Ended| Error::Handshake {
            target: target.clone(),
            message,
            ended,
            presented: None,
        };
        // The pin replaces chain and name checks (the context verifies
        // nothing then): that is how a self-signed server is trusted.
        let ssl = session(&self.ctx, host, self.pin.is_none())
            .map_err(|e| failed(e.to_string(), Ended::Tls))?;
        let mut socket = Socket::new(tcp);
        socket
            .hold_to(Some(end))
            .map_err(|e| failed(e.to_string(), Ended::Tls))?;
        let allowed = end.saturating_duration_since(Instant::now());
        let overran = || {
            failed(
                format!(
                    "not finished within {:.0}s; the server is stalling",
                    allowed.as_secs_f64()
                ),
                Ended::TimedOut,
            )
        };
        let mut stream = ssl.connect(socket).map_err(|e| match e {
            HandshakeError::SetupFailure(e) => failed(e.to_string(), Ended::Tls),
            HandshakeError::Failure(mid) if mid.get_ref().overran => overran(),
            HandshakeError::Failure(mid) => {
                let verify = mid.ssl().verify_result();
                let e = mid.into_error();
                if verify == X509VerifyResult::OK {
                    let ended = how_it_ended(&e);
                    failed(e.to_string(), ended)
                } else {
                    failed(format!("{e} ({verify})"), Ended::Tls)
                }
            }
            // Only a non-blocking socket can be interrupted mid-handshake;
            // ours block with a timeout, so this is a timeout.
            HandshakeError::WouldBlock(_) => failed("no answer".to_string(), Ended::TimedOut),
        })?;
        stream
            .get_mut()
            .hold_to(None)
            .map_err(|e| failed(e.to_string(), Ended::Tls))?;
        let stream = Stream::Tls(stream);
        if let Some(pin) = self.pin {
            // Checked before a single POP3 byte moves over TLS.
            let cert = stream
                .peer_certificate()
                .ok_or_else(|| failed("server sent no certificate".into(), Ended::Tls))?;
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

/// What ended a handshake that failed with the certificate not (yet)
/// rejected: the socket timing out, the server closing or resetting the
/// connection without a TLS alert (EOF where OpenSSL expected a record), or
/// TLS itself.
fn how_it_ended(e: &openssl::ssl::Error) -> Ended {
    use std::io::ErrorKind;
    if let Some(io) = e.io_error() {
        return match io.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => Ended::TimedOut,
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof => Ended::Cut,
            _ => Ended::Tls,
        };
    }
    let eof = e.ssl_error().is_some_and(|stack| {
        stack
            .errors()
            .iter()
            .any(|r| r.reason() == Some("unexpected eof while reading"))
    });
    match e.code() {
        // SYSCALL without an I/O error is EOF in the middle of the handshake.
        ErrorCode::SYSCALL | ErrorCode::ZERO_RETURN => Ended::Cut,
        _ if eof => Ended::Cut,
        _ => Ended::Tls,
    }
}

/// A client context as the openssl crate's `SslConnector::builder` makes
/// one (its options, modes, ciphers and peer verification), with TLS 1.2 at
/// least, and no trust store yet: that builder would fill it by parsing the
/// whole default bundle.
pub(super) fn client_context() -> Result<SslContextBuilder, ErrorStack> {
    let mut b = SslContextBuilder::new(SslMethod::tls_client())?;
    let mut opts = SslOptions::ALL
        | SslOptions::NO_COMPRESSION
        | SslOptions::NO_SSLV2
        | SslOptions::NO_SSLV3
        | SslOptions::SINGLE_DH_USE
        | SslOptions::SINGLE_ECDH_USE;
    opts &= !SslOptions::DONT_INSERT_EMPTY_FRAGMENTS;
    b.set_options(opts);
    b.set_mode(
        SslMode::AUTO_RETRY
            | SslMode::ACCEPT_MOVING_WRITE_BUFFER
            | SslMode::ENABLE_PARTIAL_WRITE
            | SslMode::RELEASE_BUFFERS,
    );
    b.set_cipher_list(CIPHERS)?;
    b.set_verify(SslVerifyMode::PEER);
    // TLS 1.0 and 1.1 are deprecated (RFC 8996).
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    Ok(b)
}

/// One connection's TLS state for `host`: its name as SNI (never an IP
/// address, RFC 6066 section 3) and, when `check_name`, the certificate
/// must be valid for it (RFC 6125; no partial wildcards such as `p*.x`).
pub(super) fn session(
    ctx: &SslContextRef,
    host: &str,
    check_name: bool,
) -> Result<Ssl, ErrorStack> {
    let mut ssl = Ssl::new(ctx)?;
    let ip = host.parse::<IpAddr>().ok();
    if ip.is_none() {
        ssl.set_hostname(host)?;
    }
    if check_name {
        let param = ssl.param_mut();
        param.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
        match ip {
            Some(ip) => param.set_ip(ip)?,
            None => param.set_host(host)?,
        }
    }
    Ok(ssl)
}

/// A context for `s` over the system store read as `store`.
fn build(s: &Settings, store: &SystemStore) -> Result<SslContext, Error> {
    let roots = match s.ca_file {
        Some(path) => read_pem_certs("ca_file", path)?,
        None => Vec::new(),
    };
    let identity = match s.client {
        Some((cert, key)) => Some(Identity::read(cert, key)?),
        None => None,
    };
    let failed = |e: ErrorStack| Error::Handshake {
        target: s.host.to_string(),
        message: e.to_string(),
        ended: Ended::Tls,
        presented: None,
    };
    let mut b = client_context().map_err(failed)?;
    store.install(&mut b).map_err(failed)?;
    if let Some(id) = identity {
        b.set_certificate(&id.cert).map_err(failed)?;
        b.set_private_key(&id.key).map_err(failed)?;
        for c in id.chain {
            b.add_extra_chain_cert(c).map_err(failed)?;
        }
    }
    for cert in roots {
        // A CA that is in the system store already is no reason to fail.
        let _ = b.cert_store_mut().add_cert(cert);
    }
    if s.pin.is_some() {
        // Verified right after the handshake instead (see `Tls::handshake`).
        b.set_verify(SslVerifyMode::NONE);
    }
    Ok(b.build())
}

/// A client certificate, its chain and its key.
struct Identity {
    cert: X509,
    chain: Vec<X509>,
    key: PKey<Private>,
}

impl Identity {
    /// The PEM certificate (then its chain) and the PKCS#8 PEM key (the
    /// forms `popspool.ini(5)` documents).
    fn read(cert_path: &Path, key_path: &Path) -> Result<Identity, Error> {
        let cert = read_file("tls_client_cert", cert_path)?;
        let key = read_file("tls_client_key", key_path)?;
        let bad = |why: String| Error::File {
            key: "tls_client_cert",
            path: cert_path.to_path_buf(),
            message: format!("unusable certificate/key pair: {why}"),
        };
        if !key.starts_with(b"-----BEGIN PRIVATE KEY-----") {
            return Err(bad("expected PKCS#8 PEM".into()));
        }
        let key = PKey::private_key_from_pem(&key).map_err(|e| bad(e.to_string()))?;
        let mut certs = X509::stack_from_pem(&cert)
            .map_err(|e| bad(e.to_string()))?
            .into_iter();
        let cert = certs.next().ok_or_else(|| {
            bad("at least one certificate must be provided to create an identity".into())
        })?;
        Ok(Identity {
            cert,
            chain: certs.collect(),
            key,
        })
    }
}

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
    fn of(s: &Settings, on_demand: bool) -> Option<ConnectorKey> {
        let ca_file = match s.ca_file {
            Some(p) => Some(FileStamp::of(p)?),
            None => None,
        };
        let client = match s.client {
            Some((c, k)) => Some((FileStamp::of(c)?, FileStamp::of(k)?)),
            None => None,
        };
        Some(ConnectorKey {
            ca_file,
            client,
            pinned: s.pin.is_some(),
            on_demand,
        })
    }
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::File {
        key,
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn read_pem_certs(key: &'static str, path: &Path) -> Result<Vec<X509>, Error> {
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
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::hash::MessageDigest;
    use std::time::Duration;

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
        let connectors = Connectors::reading_whole_store();
        let key = ConnectorKey::of(&Settings::of(&acct), false).unwrap();
        connectors.get(&Settings::of(&acct)).unwrap();
        let cached = |k: &ConnectorKey| {
            connectors
                .cache
                .borrow()
                .iter()
                .filter(|(ck, _)| ck == k)
                .count()
        };
        assert_eq!(cached(&key), 1);
        connectors.get(&Settings::of(&acct)).unwrap();
        assert_eq!(cached(&key), 1, "reused, not built again");
        // Replaced (another inode): a new key, read again; a broken file is an error again.
        std::fs::write(dir.join("new.pem"), b"not pem").unwrap();
        std::fs::rename(dir.join("new.pem"), &ca).unwrap();
        assert_ne!(ConnectorKey::of(&Settings::of(&acct), false).unwrap(), key);
        assert!(matches!(
            connectors.get(&Settings::of(&acct)),
            Err(Error::File { .. })
        ));
        std::fs::remove_file(&ca).unwrap();
        assert!(ConnectorKey::of(&Settings::of(&acct), false).is_none());
        assert!(matches!(
            connectors.get(&Settings::of(&acct)),
            Err(Error::File { .. })
        ));
        connectors.clear();
        assert_eq!(cached(&key), 0, "SIGHUP forgets every connector");
        std::fs::remove_dir_all(&dir).unwrap();
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
        let end = std::time::Instant::now() + Duration::from_secs(5);
        let tcp = super::super::connect("127.0.0.1", port, None, Duration::from_millis(300), end)
            .unwrap();
        let acct = crate::config::test_account("127.0.0.1", port);
        let t0 = std::time::Instant::now();
        let e = Connectors::reading_whole_store()
            .get(&Settings::of(&acct))
            .unwrap()
            .handshake("localhost", port, tcp, end)
            .unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert!(
            matches!(
                e,
                Error::Handshake {
                    ended: Ended::TimedOut,
                    ..
                }
            ),
            "{e}"
        );
        keep.join().unwrap();
    }

    /// A handshake against a server that reads the ClientHello and then
    /// closes (`reset`: with an RST, as a process killed mid-accept does).
    fn handshake_with_closing_server(reset: bool) -> Error {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut hello = [0u8; 512];
            let _ = std::io::Read::read(&mut s, &mut hello);
            if reset {
                socket2::SockRef::from(&s)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
            }
            drop(s);
        });
        let end = std::time::Instant::now() + Duration::from_secs(10);
        let tcp =
            super::super::connect("127.0.0.1", port, None, Duration::from_secs(5), end).unwrap();
        let acct = crate::config::test_account("127.0.0.1", port);
        let e = Connectors::reading_whole_store()
            .get(&Settings::of(&acct))
            .unwrap()
            .handshake("localhost", port, tcp, end)
            .unwrap_err();
        server.join().unwrap();
        e
    }

    #[test]
    fn a_handshake_cut_by_the_server_is_temporary_and_no_certificate_matter() {
        for reset in [false, true] {
            let e = handshake_with_closing_server(reset);
            assert!(
                matches!(
                    e,
                    Error::Handshake {
                        ended: Ended::Cut,
                        ..
                    }
                ),
                "reset {reset}: {e:?}"
            );
            assert!(e.is_transient(), "{e}");
            assert!(!e.is_verification_failure());
            let text = e.to_string();
            assert!(text.contains("was cut off by the server"), "{text}");
            assert!(text.contains("connections per client address"), "{text}");
            assert!(
                !text.contains("ca_file") && !text.contains("fingerprint"),
                "{text}"
            );
        }
    }
}
