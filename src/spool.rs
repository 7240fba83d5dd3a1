//! The spool directory: entries are built in `tmp/` and appear in `new/` or
//! `quarantine/` with one `rename(2)`.
//!
//! Durability order (README, "Delivery guarantee"): every file of an entry and the entry
//! directory are made durable, then `tmp/` itself (so the entry survives a
//! power cut before it is published), then the rename, then `new/`. The
//! journal decides what the server may delete; this module only moves bytes.
//!
//! Entries are written without syncing and made durable a batch at a time
//! by [`Spool::make_durable`]: one `syncfs(2)` of the spool's file system
//! where that is known to be a full barrier with error reporting (see
//! [`Durability`]), else an fsync of every file and directory. Each fsync
//! ends in a device cache flush; on this project's disks that is ~1.5 ms,
//! so per-file fsyncs cost more than everything else a message needs, while
//! one syncfs covers a whole batch for the price of one.
//!
//! Safety against the spool's other users (README, "The spool"): a poll
//! holds an exclusive `flock(2)` on the account's spool directory, so a
//! second popspool process pointed at the same spool (another config,
//! another `state_dir`) stays out of `tmp/` instead of removing entries
//! this one staged; the spool directory and `tmp/` must be writable by
//! popspool alone ([`crate::fsafe::open_private_dir`]); and `tmp/` is
//! `0700`, so the service's group (the consumers) cannot reach an entry,
//! to swap a symlink or a FIFO into it, before it is published.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::fsafe;
pub use crate::fsafe::write_atomic;

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

/// How [`Spool::make_durable`] makes a batch of entries durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// One `syncfs(2)` of the spool's file system: every dirty file,
    /// directory and the journal of that file system are written and the
    /// device cache is flushed, once for the whole batch. Used on Linux 5.8
    /// and later (before, syncfs did not report writeback errors) and only on
    /// file systems whose syncfs is a full barrier: ext2/3/4, XFS, Btrfs,
    /// F2FS and tmpfs. (FUSE, network and overlay file systems may implement
    /// it partly or not at all.)
    SyncFs,
    /// fsync of every file and directory of each entry, then of `tmp/`.
    PerFile,
}

/// `f_type` values from `statfs(2)` (linux/magic.h) where syncfs is trusted.
const SYNCFS_FILE_SYSTEMS: &[i64] = &[
    0xEF53,      // ext2, ext3, ext4
    0x5846_5342, // XFS
    0x9123_683E, // Btrfs
    0xF2F5_2010, // F2FS
    0x0102_1994, // tmpfs
];

/// The first kernel whose syncfs reports writeback errors (errseq on the superblock).
const SYNCFS_REPORTS_ERRORS: (u32, u32) = (5, 8);

/// One account's spool directory.
///
/// `tmp/`, `new/` and `quarantine/` stay open for the whole poll: entries
/// are created, filled and renamed relative to them (`mkdirat(2)`,
/// `openat(2)`, `renameat(2)`), so each call looks up one or two path
/// components instead of the spool's whole path (10 to 20% of the
/// file-system time of an entry on tmpfs, in a micro-benchmark).
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    /// The spool directory itself, holding the spool's lock until dropped.
    _lock: File,
    /// `tmp/`, open from the start of the poll: syncfs reports writeback
    /// errors that happened since this descriptor was opened.
    tmp: File,
    new: File,
    quarantine: File,
    durability: Durability,
    /// The process's umask when the spool was opened: entry files and
    /// directories whose mode it would narrow get their mode set again.
    umask: libc::mode_t,
}

/// The spool root: the service's group may look, not touch.
const PRIVATE_DIR_MODE: u32 = 0o750;
/// `tmp/`: popspool's alone. An entry there is as open as it will be in
/// `new/` (a group member could swap `attachments/` for a symlink, or plant
/// a FIFO where popspool is about to create or fsync a file), so only
/// publication, one rename, lets the group reach it. Versions before this
/// made `tmp/` `0750`; [`Spool::open`] narrows such a one.
const TMP_DIR_MODE: u32 = 0o700;
/// `new/`, `quarantine/` and every entry: a consumer in the service's group
/// takes an entry by renaming it away or deleting it, which needs write
/// access to the directory it leaves and (for a directory moving to another
/// parent) to the entry itself. Nobody else sees mail (README, "The spool").
const SHARED_DIR_MODE: u32 = 0o770;
/// Files in an entry: the group reads them; removing them is the entry's
/// directory's business.
const FILE_MODE: u32 = 0o640;

impl Spool {
    /// Open (creating if needed) `root` with `tmp/`, `new/` and
    /// `quarantine/`, and lock it for as long as the `Spool` lives: a
    /// `WouldBlock` error means another process holds it. Refused unless
    /// `root` and `tmp/` are writable by popspool alone.
    pub fn open(root: &Path) -> io::Result<Spool> {
        let umask = process_umask();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR_MODE)
            .create(root)?;
        let lock = fsafe::open_private_dir(root)?;
        fsafe::try_lock(&lock)?;
        let sub = |name: &str, mode: u32| -> io::Result<File> {
            // Explicitly, because the umask (0022 under systemd) would
            // take the group's write bit away.
            match at::mkdir(&lock, &[name], mode, umask) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                r => r?,
            }
            let c = CString::new(name).expect("constant names hold no NUL");
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
            fsafe::openat(&lock, &c, flags, 0)
                .map_err(|e| io::Error::new(e.kind(), format!("{name}/: {e}")))
        };
        let tmp = sub("tmp", TMP_DIR_MODE)?;
        fsafe::check_private(&tmp).map_err(|e| io::Error::new(e.kind(), format!("tmp/: {e}")))?;
        if tmp.metadata()?.permissions().mode() & 0o777 != TMP_DIR_MODE {
            tmp.set_permissions(fs::Permissions::from_mode(TMP_DIR_MODE))?;
        }
        let new = sub("new", SHARED_DIR_MODE)?;
        let quarantine = sub("quarantine", SHARED_DIR_MODE)?;
        let durability = if syncfs_trusted(&tmp) {
            Durability::SyncFs
        } else {
            Durability::PerFile
        };
        Ok(Spool {
            root: root.to_path_buf(),
            _lock: lock,
            tmp,
            new,
            quarantine,
            durability,
            umask,
        })
    }

    /// How this spool makes entries durable.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Make the finished entries `ids` in `tmp/` durable, with everything
    /// they hold and `tmp/` itself, so they survive a power cut; after this
    /// they may be journaled and published.
    pub fn make_durable(&self, ids: &[&str]) -> io::Result<()> {
        self.make_durable_with(ids, self.durability)
    }

    fn make_durable_with(&self, ids: &[&str], how: Durability) -> io::Result<()> {
        match how {
            Durability::SyncFs => syncfs(&self.tmp),
            Durability::PerFile => {
                for id in ids {
                    fsafe::sync_tree(&self.open_entry(id)?)?;
                }
                self.tmp.sync_all()
            }
        }
    }

    /// `tmp/<id>`, open, never through a symlink.
    fn open_entry(&self, id: &str) -> io::Result<File> {
        let c = CString::new(id)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ID contains NUL"))?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        fsafe::openat(&self.tmp, &c, flags, 0)
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

    /// Start a new entry `tmp/<id>`.
    pub fn begin(&self, id: String) -> io::Result<Entry<'_>> {
        at::mkdir(&self.tmp, &[&id], SHARED_DIR_MODE, self.umask)?;
        Ok(Entry { spool: self, id })
    }

    /// Move a finished, synced entry from `tmp/` to `dest`. The caller syncs
    /// the destination directory once for a whole batch ([`Spool::sync_dest`]).
    pub fn publish(&self, id: &str, dest: Dest) -> io::Result<()> {
        at::rename(&self.tmp, id, self.dest_dir(dest), id)
    }

    fn dest_dir(&self, dest: Dest) -> &File {
        match dest {
            Dest::New => &self.new,
            Dest::Quarantine => &self.quarantine,
        }
    }

    /// fsync `new/` or `quarantine/`, making the renames into it durable.
    pub fn sync_dest(&self, dest: Dest) -> io::Result<()> {
        self.dest_dir(dest).sync_all()
    }

    /// Names of the entries in `tmp/`.
    pub fn tmp_entries(&self) -> io::Result<Vec<String>> {
        Ok(fsafe::list(&self.tmp)?
            .into_iter()
            .map(|(n, _)| String::from_utf8_lossy(n.as_bytes()).into_owned())
            .collect())
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
pub struct Entry<'s> {
    spool: &'s Spool,
    id: String,
}

impl Entry<'_> {
    /// The entry's ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The ID, once the entry is complete.
    pub fn into_id(self) -> String {
        self.id
    }

    /// The entry's directory (inside `tmp/`), for messages and the rare
    /// slow path.
    pub fn dir(&self) -> PathBuf {
        self.spool.tmp_path(&self.id)
    }

    /// `name` inside the entry, relative to `tmp/`, as path parts. Only
    /// plain names below the entry: whatever a caller lets through, nothing
    /// is created outside it.
    fn rel<'n>(&'n self, name: &'n str) -> io::Result<[&'n str; 3]> {
        let plain = !name.is_empty()
            && Path::new(name)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a plain name inside the entry"),
            ));
        }
        Ok([&self.id, "/", name])
    }

    /// Create a new file in the entry (`name` may be in a subdirectory made
    /// by [`Entry::create_dir`]); never overwrites.
    pub fn create(&self, name: &str) -> io::Result<File> {
        at::create_new(
            &self.spool.tmp,
            &self.rel(name)?,
            FILE_MODE,
            self.spool.umask,
        )
    }

    /// Create a subdirectory of the entry (`attachments/`).
    pub fn create_dir(&self, name: &str) -> io::Result<()> {
        at::mkdir(
            &self.spool.tmp,
            &self.rel(name)?,
            SHARED_DIR_MODE,
            self.spool.umask,
        )
    }

    /// Write a whole small file (meta.json). Not synced: see [`Spool::make_durable`].
    pub fn write_file(&self, name: &str, data: &[u8]) -> io::Result<()> {
        self.create(name)?.write_all(data)
    }

    /// fsync everything the entry holds (including files written by other
    /// modules, such as decoded attachments), then its directories.
    pub fn sync(&self) -> io::Result<()> {
        fsafe::sync_tree(&self.spool.open_entry(&self.id)?)
    }
}

impl crate::mime::Files for Entry<'_> {
    type File = File;

    fn create_file(&self, name: &str) -> io::Result<File> {
        self.create(name)
    }

    fn create_dir(&self, name: &str) -> io::Result<()> {
        Entry::create_dir(self, name)
    }
}

/// A plain directory outside any spool (`mime::decode`, for tests and
/// tools): files and subdirectories get the modes of an entry's.
impl crate::mime::Files for Path {
    type File = File;

    fn create_file(&self, name: &str) -> io::Result<File> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(self.join(name))?;
        f.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
        Ok(f)
    }

    fn create_dir(&self, name: &str) -> io::Result<()> {
        let d = self.join(name);
        fs::create_dir(&d)?;
        fs::set_permissions(&d, fs::Permissions::from_mode(SHARED_DIR_MODE))
    }
}

/// Whether syncfs on `dir`'s file system is a full barrier that reports
/// errors (see [`Durability::SyncFs`]).
fn syncfs_trusted(dir: &File) -> bool {
    kernel_at_least(SYNCFS_REPORTS_ERRORS)
        && fs_type(dir).is_ok_and(|t| SYNCFS_FILE_SYSTEMS.contains(&t))
}

/// Compares the running kernel's version with `want`; unknown or odd means no.
fn kernel_at_least(want: (u32, u32)) -> bool {
    kernel_release()
        .as_deref()
        .and_then(major_minor)
        .is_some_and(|v| v >= want)
}

/// The `major.minor` a kernel release string (`6.1.0-18-amd64`) starts with.
fn major_minor(release: &str) -> Option<(u32, u32)> {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => Some((major, minor)),
        _ => None,
    }
}

/// The kernel release, from uname(2): the packaged unit's `ProcSubset=pid`
/// hides `/proc/sys/kernel/osrelease`, and a system call needs no file.
#[allow(unsafe_code)]
fn kernel_release() -> Option<String> {
    // SAFETY: utsname is plain C arrays, for which all zeroes is valid.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a properly sized, writable utsname that outlives the call.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    // c_char is i8 on some architectures and u8 on others.
    #[allow(clippy::unnecessary_cast)]
    let bytes: Vec<u8> = uts.release.iter().map(|&c| c as u8).collect();
    // The kernel NUL-terminates each field; a missing NUL reads as odd.
    let release = std::ffi::CStr::from_bytes_until_nul(&bytes).ok()?;
    release.to_str().ok().map(str::to_owned)
}

/// The process's file-creation mask, from `/proc/self/status` (Linux 4.7
/// and later): umask(2) cannot read it without setting it, and setting it
/// would change every file the process creates meanwhile. Unknown means
/// "narrows everything", so every mode is set again.
fn process_umask() -> libc::mode_t {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find_map(|l| l.strip_prefix("Umask:"))?;
            libc::mode_t::from_str_radix(line.trim(), 8).ok()
        })
        .unwrap_or(0o777)
}

/// The `*at(2)` calls the spool needs, relative to an open directory. Paths
/// are given as parts (`[id, "/", name]`) and joined into a NUL-terminated
/// buffer on the stack: an entry makes five of these calls, and a heap
/// string for each was a measurable share of a small message's cost.
#[allow(unsafe_code)]
mod at {
    use std::ffi::{CStr, CString};
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;

    use crate::fsafe::{check, openat};

    /// Longest joined path kept on the stack; IDs and attachment names
    /// (at most 200 bytes) fit, anything longer goes to the heap.
    pub(super) const STACK_PATH: usize = 384;

    /// Calls `f` with `parts` joined as a C string.
    fn with_c_path<T>(parts: &[&str], f: impl FnOnce(&CStr) -> io::Result<T>) -> io::Result<T> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if parts.iter().any(|p| p.as_bytes().contains(&0)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "path contains NUL",
            ));
        }
        if len >= STACK_PATH {
            let joined = CString::new(parts.concat()).expect("NUL bytes were excluded above");
            return f(&joined);
        }
        let mut buf = [0u8; STACK_PATH];
        let mut at = 0;
        for p in parts {
            buf[at..at + p.len()].copy_from_slice(p.as_bytes());
            at += p.len();
        }
        // buf[len] is still 0: the terminator.
        let c = CStr::from_bytes_with_nul(&buf[..=len]).expect("one NUL, at the end");
        f(c)
    }

    /// Runs `make` (which creates one file or directory with `mode`) so
    /// that the result has exactly `mode`, whatever the umask (0027 in the
    /// shipped unit would take the group's write bit from directories, a
    /// user's 0077 would hide files from the group): when `umask` narrows
    /// `mode`, `fix` sets it again. Under 0022 or 0027 that is one extra
    /// call for each directory and none for files.
    fn with_mode<T>(
        mode: libc::mode_t,
        umask: libc::mode_t,
        make: impl FnOnce() -> io::Result<T>,
        fix: impl FnOnce(&T) -> io::Result<()>,
    ) -> io::Result<T> {
        let made = make()?;
        if mode & umask != 0 {
            fix(&made)?;
        }
        Ok(made)
    }

    /// A new file (never an existing one, never through a symlink), write-only.
    pub fn create_new(
        dir: &File,
        rel: &[&str],
        mode: u32,
        umask: libc::mode_t,
    ) -> io::Result<File> {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        with_c_path(rel, |p| {
            let open = || openat(dir, p, flags, mode);
            let fix = |f: &File| {
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(std::fs::Permissions::from_mode(mode))
            };
            with_mode(mode as libc::mode_t, umask, open, fix)
        })
    }

    /// A new directory with exactly `mode`.
    pub fn mkdir(dir: &File, rel: &[&str], mode: u32, umask: libc::mode_t) -> io::Result<()> {
        let mode = mode as libc::mode_t;
        with_c_path(rel, |p| {
            // SAFETY: `p` is NUL-terminated and outlives the call; `dir` is open.
            let make =
                || check(unsafe { libc::mkdirat(dir.as_raw_fd(), p.as_ptr(), mode) }).map(drop);
            // SAFETY: as above; flags 0 follows no symlink here, as the
            // directory was just made by us inside our own tmp/.
            let fix = |_: &()| {
                check(unsafe { libc::fchmodat(dir.as_raw_fd(), p.as_ptr(), mode, 0) }).map(drop)
            };
            with_mode(mode, umask, make, fix)
        })
    }

    pub fn rename(from: &File, from_rel: &str, to: &File, to_rel: &str) -> io::Result<()> {
        with_c_path(&[from_rel], |a| {
            with_c_path(&[to_rel], |b| {
                // SAFETY: both paths are NUL-terminated and outlive the
                // call; both directories are open.
                check(unsafe {
                    libc::renameat(from.as_raw_fd(), a.as_ptr(), to.as_raw_fd(), b.as_ptr())
                })
                .map(drop)
            })
        })
    }
}

#[allow(unsafe_code)]
fn fs_type(f: &File) -> io::Result<i64> {
    use std::os::fd::AsRawFd;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the duration of the call and `st`
    // is a properly sized, writable statfs that outlives it.
    let rc = unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // f_type's C type differs between architectures; the magic numbers fit 32 bits.
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64 & 0xFFFF_FFFF)
}

#[allow(unsafe_code)]
fn syncfs(f: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs only reads the descriptor, which is open for the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new entry ID: `<seconds>.<microseconds>.<pid>`, zero-padded so that
/// byte order is retrieval order, made strictly increasing within the
/// process so two messages in one microsecond (or a clock step backwards)
/// still sort in the order they were fetched.
pub fn new_id() -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    // getpid(2) is a system call each time (glibc stopped caching it); the
    // pid cannot change under us, we never fork.
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let pid = *PID.get_or_init(std::process::id);
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
        pid
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
    use crate::mime::Files;

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
        let e = sp.begin(id.clone()).unwrap();
        e.write_file("message.eml", b"hello").unwrap();
        assert!(e.create("message.eml").is_err(), "never overwrites");
        e.create_dir("attachments").unwrap();
        e.write_file("attachments/a", b"x").unwrap();
        for bad in ["../escape", "/abs", "", "a/../../escape", "."] {
            assert!(e.create(bad).is_err(), "{bad:?}");
        }
        assert!(!root.join("tmp/escape").exists());
        e.sync().unwrap();
        assert_eq!(sp.tmp_entries().unwrap(), vec![id.clone()]);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        sp.make_durable(&[&id]).unwrap();
        sp.publish(&id, Dest::New).unwrap();
        sp.sync_dest(Dest::New).unwrap();
        assert_eq!(mode(&root.join("new")), 0o770);
        assert_eq!(
            mode(&root.join("tmp")),
            0o700,
            "no way to an unpublished entry"
        );
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

    /// The umask read from /proc is the one the kernel applies; whatever
    /// it is, entries get their documented modes.
    #[test]
    fn modes_are_exact_under_any_umask() {
        let root = tempdir("umask");
        let mut sp = Spool::open(&root).unwrap();
        let probe = root.join("probe");
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o777)
            .open(&probe)
            .unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&probe), 0o777 & !sp.umask);
        // As if the umask took every bit: each mode is set again.
        sp.umask = 0o777;
        let e = sp.begin(new_id()).unwrap();
        e.write_file("message.eml", b"x").unwrap();
        e.create_dir("attachments").unwrap();
        assert_eq!(mode(&e.dir()), SHARED_DIR_MODE);
        assert_eq!(mode(&e.dir().join("message.eml")), FILE_MODE);
        assert_eq!(mode(&e.dir().join("attachments")), SHARED_DIR_MODE);
        // A plain directory as mime's Files gets the same modes.
        let plain = root.join("plain");
        fs::create_dir(&plain).unwrap();
        let files = plain.as_path();
        files.create_file("body.txt").unwrap();
        files.create_dir("attachments").unwrap();
        assert!(files.create_file("body.txt").is_err(), "never overwrites");
        assert_eq!(mode(&plain.join("body.txt")), FILE_MODE);
        assert_eq!(mode(&plain.join("attachments")), SHARED_DIR_MODE);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn paths_short_long_and_with_nul() {
        let root = tempdir("paths");
        let sp = Spool::open(&root).unwrap();
        let e = sp.begin(new_id()).unwrap();
        // Joined paths around the stack buffer's size, and well past it (the
        // heap path); each component stays under NAME_MAX.
        let dir = "d".repeat(200);
        e.create_dir(&dir).unwrap();
        let fixed = e.id().len() + 1 + dir.len() + 1;
        for total in [
            at_stack_path() - 2,
            at_stack_path() - 1,
            at_stack_path(),
            470,
        ] {
            let name = format!("{dir}/{}", "f".repeat(total - fixed));
            e.write_file(&name, b"x").unwrap();
            assert_eq!(
                fs::read(e.dir().join(&name)).unwrap(),
                b"x",
                "length {total}"
            );
        }
        let err = e.create("a\0b").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(sp.begin("x\0y".to_string()).is_err());
        sp.discard(e.id()).unwrap();
    }

    fn at_stack_path() -> usize {
        at::STACK_PATH
    }

    #[test]
    fn batch_durability_both_ways() {
        let root = tempdir("durable");
        let sp = Spool::open(&root).unwrap();
        let ids: Vec<String> = (0..3).map(|_| new_id()).collect();
        for id in &ids {
            let e = sp.begin(id.clone()).unwrap();
            e.write_file("message.eml", b"hello").unwrap();
            fs::create_dir(e.dir().join("attachments")).unwrap();
            fs::write(e.dir().join("attachments/a"), b"x").unwrap();
        }
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        for how in [Durability::SyncFs, Durability::PerFile] {
            sp.make_durable_with(&refs, how).unwrap();
        }
        sp.make_durable(&refs).unwrap();
        // A missing entry is an error on the per-file path (nothing to sync).
        assert!(sp
            .make_durable_with(&["00000000000.000000.0000000"], Durability::PerFile)
            .is_err());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn syncfs_only_where_trusted() {
        assert!(kernel_at_least((2, 6)));
        assert!(!kernel_at_least((999, 0)));
        // uname(2) gives what `uname -r` prints, and its major.minor decides.
        let release = kernel_release().unwrap();
        let out = std::process::Command::new("uname")
            .arg("-r")
            .output()
            .unwrap();
        assert_eq!(release, String::from_utf8(out.stdout).unwrap().trim_end());
        let (major, minor) = major_minor(&release).unwrap();
        assert_eq!(release.split('.').next(), Some(major.to_string().as_str()));
        assert!(release.starts_with(&format!("{major}.{minor}")));
        assert!(kernel_at_least((major, minor)));
        assert!(!kernel_at_least((major, minor + 1)));
        assert_eq!(major_minor("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(major_minor("5.10"), Some((5, 10)));
        assert_eq!(major_minor("6"), None);
        assert_eq!(major_minor("x.y"), None);
        let root = tempdir("fstype");
        let sp = Spool::open(&root).unwrap();
        let t = fs_type(&sp.tmp).unwrap();
        assert_eq!(
            sp.durability() == Durability::SyncFs,
            SYNCFS_FILE_SYSTEMS.contains(&t) && kernel_at_least(SYNCFS_REPORTS_ERRORS)
        );
        // /proc is no place for a spool: never trusted.
        assert!(!syncfs_trusted(&File::open("/proc/self").unwrap()));
        fs::remove_dir_all(&root).unwrap();
    }

    /// One process per spool, however the path is spelled; the lock goes
    /// with the `Spool`.
    #[test]
    fn one_process_per_spool() {
        let root = tempdir("lock");
        let sp = Spool::open(&root).unwrap();
        let link = root.with_extension("link");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&root, &link).unwrap();
        for path in [&root, &link] {
            // A second open file description, as another process would have.
            let e = Spool::open(path).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{}", path.display());
        }
        drop(sp);
        drop(reopen(&link).unwrap());
        fs::remove_file(&link).unwrap();
        fs::remove_dir_all(&root).unwrap();
    }

    /// [`Spool::open`], waiting out a child another test forked while a
    /// `Spool` of this test was open: until it execs, it shares the lock.
    fn reopen(root: &Path) -> io::Result<Spool> {
        for _ in 0..100 {
            match Spool::open(root) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                r => return r,
            }
        }
        Spool::open(root)
    }

    #[test]
    fn refuses_a_spool_others_can_change() {
        let root = tempdir("shared");
        drop(Spool::open(&root).unwrap());
        // tmp/ as earlier versions made it: narrowed.
        fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o750)).unwrap();
        drop(reopen(&root).unwrap());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root.join("tmp")), 0o700);
        for (dir, mode) in [
            (root.clone(), 0o770),
            (root.clone(), 0o757),
            (root.join("tmp"), 0o770),
        ] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
            let e = reopen(&root).unwrap_err();
            assert!(e.to_string().contains("writable by group or others"), "{e}");
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
        }
        // tmp/ swapped for a symlink is not followed.
        fs::remove_dir(root.join("tmp")).unwrap();
        std::os::unix::fs::symlink("/tmp", root.join("tmp")).unwrap();
        let e = reopen(&root).unwrap_err();
        assert!(e.to_string().starts_with("tmp/: "), "{e}");
        fs::remove_file(root.join("tmp")).unwrap();
        drop(reopen(&root).unwrap());
        fs::remove_dir_all(&root).unwrap();
    }
}
