//! The system trust store: OpenSSL's default bundle and hashed directory
//! (or whatever `SSL_CERT_FILE` and `SSL_CERT_DIR` name), and the choice to
//! read the directory on demand instead of parsing the whole bundle for
//! every connector (README "The system trust store").
//!
//! The choice is made from the environment as the process found it and is
//! applied by building each context's certificate store directly, so the
//! environment is only ever read, never changed: child processes
//! (`password_command`) and OpenSSL itself see it as it was.

use std::path::{Path, PathBuf};

use openssl::error::ErrorStack;
use openssl::ssl::{SslContextBuilder, SslFiletype};
use openssl::x509::store::{X509Lookup, X509Store, X509StoreBuilder};
use openssl::x509::X509;

/// How a connector reads the system trust store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SystemStore {
    /// Only the hashed directory (its path, UTF-8 as OpenSSL's lookup
    /// wants it): OpenSSL looks up just the issuers a chain needs.
    OnDemand(String),
    /// OpenSSL's default verify paths, the bundle parsed whole.
    Whole,
}

impl SystemStore {
    /// On demand when that gives the same trust as reading the store whole:
    /// the bundle OpenSSL would load is the system's default one (not one
    /// an administrator named in `SSL_CERT_FILE`), the directory is the
    /// default one, and it holds `c_rehash` links. Otherwise whole.
    pub(super) fn find() -> SystemStore {
        match hashed_system_dir().and_then(|d| d.into_os_string().into_string().ok()) {
            Some(dir) => SystemStore::OnDemand(dir),
            None => SystemStore::Whole,
        }
    }

    /// Make this the context's trust store (before `ca_file` is added).
    pub(super) fn install(&self, ctx: &mut SslContextBuilder) -> Result<(), ErrorStack> {
        match self {
            SystemStore::OnDemand(dir) => {
                let mut store = X509StoreBuilder::new()?;
                store
                    .add_lookup(X509Lookup::hash_dir())?
                    .add_dir(dir, SslFiletype::PEM)?;
                ctx.set_cert_store(store.build());
                Ok(())
            }
            SystemStore::Whole => ctx.set_default_verify_paths(),
        }
    }
}

/// The trust store that S/MIME signatures are verified against (README,
/// "S/MIME"): the system store, read the way TLS reads it (on demand where
/// that gives the same trust), plus `anchors` (`smime_ca_file`).
pub fn smime_store(anchors: &[X509]) -> Result<X509Store, ErrorStack> {
    let mut store = X509StoreBuilder::new()?;
    match SystemStore::find() {
        SystemStore::OnDemand(dir) => {
            store
                .add_lookup(X509Lookup::hash_dir())?
                .add_dir(&dir, SslFiletype::PEM)?;
        }
        SystemStore::Whole => store.set_default_paths()?,
    }
    for cert in anchors {
        store.add_cert(cert.clone())?;
    }
    Ok(store.build())
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
