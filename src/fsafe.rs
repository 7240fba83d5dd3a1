//! File-system primitives that neither follow a planted symlink nor block
//! on a planted FIFO, for the spool and `state_dir` (README, "The spool" and
//! "Security notes"): directories popspool works in are checked to be
//! writable by popspool alone, files are created with `O_EXCL|O_NOFOLLOW`
//! relative to an open directory, and an existing file is opened with
//! `O_NOFOLLOW|O_NONBLOCK` and used only if `fstat(2)` says it is a regular
//! file.

use std::ffi::{CStr, CString, OsStr};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// Tries at a fresh random temp name before giving up: with 64 random
/// bits a clash means someone is planting names, not bad luck.
const TEMP_ATTEMPTS: usize = 8;

/// How deep [`sync_tree`] descends: an entry holds `attachments/` and
/// nothing deeper; anything below this is not popspool's.
const MAX_TREE_DEPTH: usize = 8;

/// Mode bits that let someone other than the owner change a directory.
const SHARED_WRITE: u32 = 0o022;

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// A system call's result: the error `errno` names when it is negative.
pub(crate) fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `openat(2)` relative to `dir`, retried on EINTR; `O_CLOEXEC` always.
#[allow(unsafe_code)]
pub fn openat(dir: &File, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<File> {
    let flags = flags | libc::O_CLOEXEC;
    loop {
        // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is open.
        let rc = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode) };
        match check(rc) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // SAFETY: openat just returned this descriptor; nothing else owns it.
            r => return r.map(|fd| unsafe { File::from_raw_fd(fd) }),
        }
    }
}

/// `open(2)` of a path, retried on EINTR; `O_CLOEXEC` always.
#[allow(unsafe_code)]
fn open_path(path: &Path, flags: libc::c_int, mode: u32) -> io::Result<File> {
    let c = c_name(path.as_os_str())?;
    let flags = flags | libc::O_CLOEXEC;
    loop {
        // SAFETY: `c` is NUL-terminated and outlives the call.
        match check(unsafe { libc::open(c.as_ptr(), flags, mode) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // SAFETY: open just returned this descriptor; nothing else owns it.
            r => return r.map(|fd| unsafe { File::from_raw_fd(fd) }),
        }
    }
}

/// What `fstatat(2)` without following says `name` in `dir` is.
#[allow(unsafe_code)]
fn kind_at(dir: &File, name: &CStr) -> io::Result<libc::mode_t> {
    // SAFETY: stat is plain data, for which all zeroes is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated, `st` writable, `dir` open.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st.st_mode & libc::S_IFMT)
}

/// A regular file's descriptor, or an error if `file` is anything else. Its
/// `O_NONBLOCK` (which kept a FIFO from blocking the open) is cleared, so
/// later reads and writes behave as usual.
#[allow(unsafe_code)]
fn regular_only(file: File) -> io::Result<File> {
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file; popspool never reads or writes anything else here",
        ));
    }
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; F_GETFL/F_SETFL only change flags.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) })?;
    Ok(file)
}

/// Open an existing (or, with `O_CREAT` in `flags`, possibly new) state
/// file: never through a symlink as its last component, never blocking on
/// a FIFO, and only if it is a regular file.
pub fn open_regular(path: &Path, flags: libc::c_int, mode: u32) -> io::Result<File> {
    let f = open_path(path, flags | libc::O_NOFOLLOW | libc::O_NONBLOCK, mode)?;
    regular_only(f)
}

/// The whole of a regular file (see [`open_regular`]).
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    open_regular(path, libc::O_RDONLY, 0)?.read_to_end(&mut data)?;
    Ok(data)
}

/// A directory popspool alone may change: open it and check (on the open
/// descriptor, so nothing can be swapped in between) that it is a directory
/// owned by popspool's user or root, writable by neither group nor others.
/// A symlink as the last component is followed only if popspool's user or
/// root made it (as the kernel's `protected_symlinks` does for sticky
/// directories). The error says what is wrong, not where: callers name the path.
pub fn open_private_dir(path: &Path) -> io::Result<File> {
    let link = fs::symlink_metadata(path)?;
    if link.file_type().is_symlink() {
        trusted_owner(link.uid(), "a symlink made")
            .map_err(|e| io::Error::new(e.kind(), format!("{e}; name the real directory")))?;
    }
    let dir = open_path(path, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    check_private(&dir)?;
    Ok(dir)
}

/// The checks of [`open_private_dir`] on a directory already open.
pub fn check_private(dir: &File) -> io::Result<()> {
    let m = dir.metadata()?;
    trusted_owner(m.uid(), "owned")
        .map_err(|e| io::Error::new(e.kind(), format!("{e}; run popspool as its owner")))?;
    if m.mode() & SHARED_WRITE != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "writable by group or others (mode {:04o}); popspool works only in directories \
                 nobody else can change (chmod go-w)",
                m.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

#[allow(unsafe_code)]
fn trusted_owner(uid: u32, what: &str) -> io::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if uid == me || uid == 0 {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{what} by uid {uid}, neither popspool's user (uid {me}) nor root"),
    ))
}

/// Create `dir` (and missing parents) owner-only, or check the existing
/// one with [`open_private_dir`]; then prove it writable by creating and
/// removing a file with a fresh name.
pub fn prepare_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        // Owner-only: status records and journals are not the spool
        // consumers' (they are in popspool's group).
        .mode(0o700)
        .create(dir)?;
    let d = open_private_dir(dir)?;
    let (_, name) = create_temp(&d, ".popspool-write-test", 0o600)?;
    unlinkat(&d, &name)
}

/// A new file named `<prefix>.<16 random hex digits>.tmp` in `dir`, with
/// `O_EXCL|O_NOFOLLOW`: nothing planted under a guessed name is opened.
fn create_temp(dir: &File, prefix: &str, mode: u32) -> io::Result<(File, CString)> {
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let mut r = [0u8; 8];
        openssl::rand::rand_bytes(&mut r).map_err(io::Error::other)?;
        let name = c_name(OsStr::new(&format!(
            "{prefix}.{}.tmp",
            crate::hex::lower(&r)
        )))?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        match openat(dir, &name, flags, mode) {
            Ok(f) => return Ok((f, name)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
}

#[allow(unsafe_code)]
fn unlinkat(dir: &File, name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is open.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }).map(drop)
}

#[allow(unsafe_code)]
fn renameat(dir: &File, from: &CStr, to: &CStr) -> io::Result<()> {
    let fd = dir.as_raw_fd();
    // SAFETY: both names are NUL-terminated and outlive the call; `dir` is open.
    check(unsafe { libc::renameat(fd, from.as_ptr(), fd, to.as_ptr()) }).map(drop)
}

/// Write `data` to `path` atomically and durably: a new temp file with a
/// random name beside it (`O_EXCL|O_NOFOLLOW`), fsync, `renameat(2)` over
/// `path`, fsync of the directory. Used for state files; `mode` is
/// narrowed by the umask as for any new file.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let (dir_path, name) = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => (
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            },
            n,
        ),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} names no file", path.display()),
            ))
        }
    };
    let dir = open_path(dir_path, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let target = c_name(name)?;
    let prefix = format!(".{}", name.to_string_lossy());
    let (mut f, tmp) = create_temp(&dir, &prefix, mode)?;
    let result = (|| {
        f.write_all(data)?;
        f.sync_all()?;
        renameat(&dir, &tmp, &target)?;
        dir.sync_all()
    })();
    if result.is_err() {
        let _ = unlinkat(&dir, &tmp);
    }
    result
}

/// The names in an open directory (without `.` and `..`), with the type
/// `readdir(3)` reports (`DT_UNKNOWN` on file systems that do not say).
#[allow(unsafe_code)]
pub fn list(dir: &File) -> io::Result<Vec<(CString, u8)>> {
    // A duplicate, because closedir closes the descriptor it was given.
    // SAFETY: fcntl on an open descriptor; the result is ours to own.
    let fd = check(unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: `fd` is an open directory descriptor nothing else owns.
    let dp = unsafe { libc::fdopendir(fd) };
    if dp.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `fd` is still ours to close.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    // The duplicate shares its offset with `dir`: start from the top.
    // SAFETY: `dp` is a valid stream until closedir below.
    unsafe { libc::rewinddir(dp) };
    let mut names = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; readdir reports errors only there.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `dp` is valid; the entry is read before the next readdir.
        let ent = unsafe { libc::readdir(dp) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            break match e.raw_os_error() {
                Some(0) | None => Ok(()),
                _ => Err(e),
            };
        }
        // SAFETY: readdir returned a valid entry with a NUL-terminated name.
        let (name, kind) = unsafe { (CStr::from_ptr((*ent).d_name.as_ptr()), (*ent).d_type) };
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push((name.to_owned(), kind));
        }
    };
    // SAFETY: `dp` is valid and closed exactly once.
    unsafe { libc::closedir(dp) };
    result.map(|()| names)
}

/// fsync every regular file and directory below `dir`, then `dir` itself.
/// Symlinks, FIFOs, sockets and devices are not opened: they are not
/// popspool's, and opening a FIFO would block.
pub fn sync_tree(dir: &File) -> io::Result<()> {
    sync_below(dir, 0)?;
    dir.sync_all()
}

fn sync_below(dir: &File, depth: usize) -> io::Result<()> {
    for (name, dtype) in list(dir)? {
        let kind = match dtype {
            libc::DT_REG => libc::S_IFREG,
            libc::DT_DIR => libc::S_IFDIR,
            libc::DT_UNKNOWN => kind_at(dir, &name)?,
            _ => continue,
        };
        if kind == libc::S_IFREG {
            let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK;
            let f = openat(dir, &name, flags, 0)?;
            // Swapped for something else since the listing: not ours.
            if f.metadata()?.is_file() {
                f.sync_all()?;
            }
        } else if kind == libc::S_IFDIR && depth < MAX_TREE_DEPTH {
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
            let sub = openat(dir, &name, flags, 0)?;
            sync_below(&sub, depth + 1)?;
            sub.sync_all()?;
        }
    }
    Ok(())
}

/// Take an exclusive `flock(2)` on `f` (a directory works) without
/// waiting; `WouldBlock` when another process holds it. Released when the
/// descriptor closes.
pub fn try_lock(f: &File) -> io::Result<()> {
    match f.try_lock() {
        Ok(()) => Ok(()),
        Err(fs::TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// `path` made absolute and free of symlinks, `.` and `..` as far as it
/// exists, with the rest appended as written: two spellings of one
/// directory (a symlink, `a/../b`) compare equal even before it exists.
pub fn canonical(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    let mut out = loop {
        if let Ok(c) = fs::canonicalize(existing) {
            break c;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    };
    for part in rest.into_iter().rev() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::process::Command;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("popspool-fsafe-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    fn mkfifo(p: &Path) {
        assert!(Command::new("mkfifo").arg(p).status().unwrap().success());
    }

    #[test]
    fn atomic_write_uses_a_fresh_name_and_follows_nothing() {
        let d = tempdir("atomic");
        let victim = d.join("victim");
        fs::write(&victim, b"keep").unwrap();
        // The names the old code used, planted: a symlink and a FIFO.
        symlink(
            &victim,
            d.join(format!(".state.{}.tmp", std::process::id())),
        )
        .unwrap();
        mkfifo(&d.join(format!(".linked.{}.tmp", std::process::id())));
        let p = d.join("state");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 4, "no temp file left");
        // A symlink at the target itself is replaced, not written through.
        let q = d.join("linked");
        symlink(&victim, &q).unwrap();
        write_atomic(&q, b"new", 0o600).unwrap();
        assert!(!fs::symlink_metadata(&q).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(write_atomic(Path::new("/"), b"x", 0o600).is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn regular_files_only() {
        let d = tempdir("regular");
        fs::write(d.join("f"), b"data").unwrap();
        assert_eq!(read_regular(&d.join("f")).unwrap(), b"data");
        symlink(d.join("f"), d.join("link")).unwrap();
        assert!(
            read_regular(&d.join("link")).is_err(),
            "never through a symlink"
        );
        mkfifo(&d.join("fifo"));
        // Would block forever without O_NONBLOCK.
        let e = read_regular(&d.join("fifo")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let flags = libc::O_WRONLY | libc::O_CREAT;
        assert!(open_regular(&d.join("fifo"), flags, 0o600).is_err());
        assert!(open_regular(&d.join("dir-not-file"), flags, 0o600).is_ok());
        assert!(read_regular(&d).is_err(), "a directory");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn tree_sync_skips_fifos_and_symlinks() {
        let d = tempdir("tree");
        fs::create_dir(d.join("sub")).unwrap();
        fs::write(d.join("sub/a"), b"x").unwrap();
        fs::write(d.join("b"), b"y").unwrap();
        mkfifo(&d.join("sub/fifo"));
        symlink("/etc/passwd", d.join("link")).unwrap();
        symlink("/", d.join("rootlink")).unwrap();
        let dir = File::open(&d).unwrap();
        let mut names: Vec<_> = list(&dir).unwrap().into_iter().map(|(n, _)| n).collect();
        names.sort();
        assert_eq!(names.len(), 4, "{names:?}");
        sync_tree(&dir).unwrap();
        // A second listing of the same descriptor starts from the top.
        assert_eq!(list(&dir).unwrap().len(), 4);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn private_dirs() {
        let d = tempdir("private");
        let ok = d.join("ok");
        prepare_private_dir(&ok).unwrap();
        assert_eq!(fs::read_dir(&ok).unwrap().count(), 0, "write test removed");
        for mode in [0o777, 0o770, 0o1777] {
            fs::set_permissions(&ok, fs::Permissions::from_mode(mode)).unwrap();
            let e = open_private_dir(&ok).unwrap_err();
            assert!(e.to_string().contains("writable by group or others"), "{e}");
            assert!(prepare_private_dir(&ok).is_err());
        }
        fs::set_permissions(&ok, fs::Permissions::from_mode(0o750)).unwrap();
        // Our own symlink is followed; the target is what is checked.
        symlink(&ok, d.join("link")).unwrap();
        open_private_dir(&d.join("link")).unwrap();
        assert!(open_private_dir(&d.join("missing")).is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn canonical_paths() {
        let d = tempdir("canon");
        fs::create_dir(d.join("real")).unwrap();
        symlink(d.join("real"), d.join("link")).unwrap();
        let c = canonical(&d.join("real/x/y"));
        assert_eq!(canonical(&d.join("link/x/y")), c);
        assert_eq!(canonical(&d.join("real/./x/y")), c);
        assert_eq!(canonical(&d.join("link/../real/x/y")), c);
        assert_eq!(canonical(&d.join("real/x/z/../y")), c);
        assert_ne!(canonical(&d.join("real/x/z")), c);
        fs::remove_dir_all(&d).unwrap();
    }
}
