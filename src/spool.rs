//! The spool directory: entries are built in `tmp/` and appear in `new/` or
//! `quarantine/` with one `rename(2)`.
//!
//! Durability order (spec §4): every file of an entry and the entry
//! directory are fsynced, then `tmp/` itself (so the entry survives a power
//! cut before it is published), then the rename, then `new/`. The journal
//! decides what the server may delete; this module only moves bytes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a finished entry goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dest {
    /// `new/`: for consumers.
    New,
    /// `quarantine/`: policy or body selection failed; the reason is in meta.json.
    Quarantine,
}

impl Dest {
    /// The subdirectory name, also used in the journal.
    pub fn dir_name(self) -> &'static str {
        match self {
            Dest::New => "new",
            Dest::Quarantine => "quarantine",
        }
    }

    /// Inverse of [`Dest::dir_name`].
    pub fn from_dir_name(s: &str) -> Option<Dest> {
        match s {
            "new" => Some(Dest::New),
            "quarantine" => Some(Dest::Quarantine),
            _ => None,
        }
    }
}

/// One account's spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
}

/// The spool root and `tmp/`: the service's group may look, not touch.
const PRIVATE_DIR_MODE: u32 = 0o750;
/// `new/`, `quarantine/` and every entry: a consumer in the service's group
/// takes an entry by renaming it away or deleting it, which needs write
/// access to the directory it leaves and (for a directory moving to another
/// parent) to the entry itself. Nobody else sees mail.
const SHARED_DIR_MODE: u32 = 0o770;
/// Files in an entry: the group reads them; removing them is the entry's
/// directory's business.
const FILE_MODE: u32 = 0o640;

impl Spool {
    /// Open (creating if needed) `root` with `tmp/`, `new/` and `quarantine/`.
    pub fn open(root: &Path) -> io::Result<Spool> {
        let mut b = fs::DirBuilder::new();
        b.recursive(true).mode(PRIVATE_DIR_MODE);
        for (sub, mode) in [
            ("tmp", PRIVATE_DIR_MODE),
            ("new", SHARED_DIR_MODE),
            ("quarantine", SHARED_DIR_MODE),
        ] {
            let dir = root.join(sub);
            if !dir.is_dir() {
                b.create(&dir)?;
                // Explicitly, because the umask (0022 under systemd) would
                // take the group's write bit away.
                fs::set_permissions(&dir, fs::Permissions::from_mode(mode))?;
            }
        }
        Ok(Spool {
            root: root.to_path_buf(),
        })
    }

    /// The spool's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `tmp/<id>`.
    pub fn tmp_path(&self, id: &str) -> PathBuf {
        self.root.join("tmp").join(id)
    }

    /// `<dest>/<id>`.
    pub fn final_path(&self, dest: Dest, id: &str) -> PathBuf {
        self.root.join(dest.dir_name()).join(id)
    }

    /// Start a new entry in `tmp/`.
    pub fn begin(&self, id: &str) -> io::Result<Entry> {
        let dir = self.tmp_path(id);
        fs::DirBuilder::new().mode(SHARED_DIR_MODE).create(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(SHARED_DIR_MODE))?;
        Ok(Entry {
            dir,
            files: Vec::new(),
        })
    }

    /// Move a finished, synced entry from `tmp/` to `dest`. The caller syncs
    /// the destination directory once for a whole batch ([`Spool::sync_dir`]).
    pub fn publish(&self, id: &str, dest: Dest) -> io::Result<()> {
        fs::rename(self.tmp_path(id), self.final_path(dest, id))
    }

    /// fsync one of `tmp`, `new`, `quarantine`.
    pub fn sync_dir(&self, sub: &str) -> io::Result<()> {
        sync_dir(&self.root.join(sub))
    }

    /// Names of the entries in `tmp/`.
    pub fn tmp_entries(&self) -> io::Result<Vec<String>> {
        let mut v = Vec::new();
        for e in fs::read_dir(self.root.join("tmp"))? {
            v.push(e?.file_name().to_string_lossy().into_owned());
        }
        Ok(v)
    }

    /// Remove an unfinished entry from `tmp/` (it was never published, and its
    /// message is still on the server).
    pub fn discard(&self, id: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.tmp_path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Bytes available to an unprivileged writer on the spool's file system.
    pub fn free_space(&self) -> io::Result<u64> {
        free_space(&self.root)
    }
}

/// An entry being built in `tmp/`.
#[derive(Debug)]
pub struct Entry {
    dir: PathBuf,
    files: Vec<PathBuf>,
}

impl Entry {
    /// The entry's directory (inside `tmp/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Create a new file in the entry; never overwrites.
    pub fn create(&mut self, name: &str) -> io::Result<File> {
        let path = self.dir.join(name);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&path)?;
        self.files.push(path);
        Ok(f)
    }

    /// Write a whole small file (meta.json).
    pub fn write_file(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut f = self.create(name)?;
        f.write_all(data)?;
        f.sync_all()
    }

    /// fsync everything the entry holds (including files written by other
    /// modules, such as decoded attachments), then its directories.
    pub fn sync(&self) -> io::Result<()> {
        sync_tree(&self.dir)
    }
}

fn sync_tree(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        if e.file_type()?.is_dir() {
            sync_tree(&path)?;
        } else {
            File::open(&path)?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// fsync a directory, making its entries (creations, renames) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write `data` to `path` atomically and durably: a sibling temp file,
/// fsync, rename, fsync of the directory. Used for state files.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A new entry ID: `<seconds>.<microseconds>.<pid>`, zero-padded so that
/// byte order is retrieval order, made strictly increasing within the
/// process so two messages in one microsecond (or a clock step backwards)
/// still sort in the order they were fetched.
pub fn new_id() -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mut prev = LAST.load(Ordering::Relaxed);
    let micros = loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(p) => prev = p,
        }
    };
    format!(
        "{:011}.{:06}.{:07}",
        micros / 1_000_000,
        micros % 1_000_000,
        std::process::id()
    )
}

/// Whether `s` could be an ID made by [`new_id`] (guards journal replay
/// against paths from a damaged file).
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !s.starts_with('.')
}

#[allow(unsafe_code)]
fn free_space(path: &Path) -> io::Result<u64> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized,
    // writable statvfs that outlives the call.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("popspool-spool-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn ids_sort_in_creation_order_and_are_valid() {
        let ids: Vec<String> = (0..1000).map(|_| new_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        sorted.dedup();
        assert_eq!(sorted.len(), 1000);
        assert!(ids.iter().all(|i| is_valid_id(i)));
        assert!(!is_valid_id("../x"));
        assert!(!is_valid_id(""));
    }

    #[test]
    fn entry_lifecycle() {
        let root = tempdir("life");
        let sp = Spool::open(&root).unwrap();
        let id = new_id();
        let mut e = sp.begin(&id).unwrap();
        e.write_file("message.eml", b"hello").unwrap();
        assert!(e.create("message.eml").is_err(), "never overwrites");
        fs::create_dir(e.dir().join("attachments")).unwrap();
        fs::write(e.dir().join("attachments/a"), b"x").unwrap();
        e.sync().unwrap();
        assert_eq!(sp.tmp_entries().unwrap(), vec![id.clone()]);
        sp.publish(&id, Dest::New).unwrap();
        sp.sync_dir("new").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root.join("new")), 0o770);
        assert_eq!(mode(&root.join("tmp")), 0o750);
        assert_eq!(
            mode(&root.join("new").join(&id)),
            0o770,
            "a group member can move it away"
        );
        assert_eq!(mode(&root.join("new").join(&id).join("message.eml")), 0o640);
        assert_eq!(
            fs::read(root.join("new").join(&id).join("message.eml")).unwrap(),
            b"hello"
        );
        assert!(sp.tmp_entries().unwrap().is_empty());
        assert!(sp.free_space().unwrap() > 0);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let root = tempdir("atomic");
        fs::create_dir_all(&root).unwrap();
        let p = root.join("state");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(&root).unwrap().count(), 1, "no temp file left");
        fs::remove_dir_all(&root).unwrap();
    }
}
