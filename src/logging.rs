//! Log output: one line per event on stderr, through simplelog.
//!
//! On a terminal, simplelog's coloured terminal logger. Anywhere else
//! (journald, a pipe, a file) plain lines through a buffer that is written
//! out after every line, except while a [`Batch`] lives: then the lines
//! wait and go out together when the last batch drops. Draining a large
//! mailbox logs a line per delivered message, and a write(2) per line was
//! 5% of the CPU time; the lines of a committed batch cost one write.
//! Nothing waits longer than the few microseconds of bookkeeping between
//! them, and a warning or error always goes out at once.
//!
//! Under systemd with stderr connected to the journal, every line starts
//! with its sd-daemon(3) priority (`<3>` error, `<4>` warning, `<6>` info,
//! `<7>` debug and trace), so `journalctl -p warning` filters (README,
//! "Running under systemd"; popspool(8), ENVIRONMENT). systemd announces
//! that stream in `JOURNAL_STREAM` (systemd.exec(5)); it is believed only
//! while stderr still is that stream, so a child whose stderr was
//! redirected elsewhere writes plain lines.
//!
//! [`init`] returns the [`Output`] it installed; whoever wants lines batched
//! is handed that value and opens a [`Batch`] from it, so what may hold
//! lines back is visible in the callers' signatures.

use std::io::{self, IsTerminal, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Buffer for lines held back; a batch of 64 deliveries is about 8 KiB.
const BUFFER_BYTES: usize = 64 << 10;

/// How many [`Batch`]es are open on the installed logger.
#[derive(Debug, Default)]
struct Open(AtomicUsize);

/// The installed log output: what [`Batch`]es are opened on. Without a
/// buffering logger (on a terminal, before [`init`], in tests) a batch
/// changes nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Output {
    open: Option<&'static Open>,
}

impl Output {
    /// Hold back info and lower lines until the batch drops; they are then
    /// written out together. Batches nest: the last to drop writes out.
    pub fn batch(self) -> Batch {
        if let Some(open) = self.open {
            open.0.fetch_add(1, Ordering::Relaxed);
        }
        Batch { open: self.open }
    }
}

/// While this lives, info and lower lines are not written out one by one.
#[must_use = "lines are held only while the batch lives"]
#[derive(Debug)]
pub struct Batch {
    open: Option<&'static Open>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(open) = self.open {
            if open.0.fetch_sub(1, Ordering::Relaxed) == 1 {
                log::logger().flush();
            }
        }
    }
}

/// Writes out each line unless a batch is open (and it is not a warning or
/// an error).
struct Batching<L> {
    inner: L,
    open: &'static Open,
}

impl<L: Log> Log for Batching<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        self.inner.log(record);
        if record.level() <= Level::Warn || self.open.0.load(Ordering::Relaxed) == 0 {
            self.inner.flush();
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// The sd-daemon(3) priority that starts a line of this level.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Tells [`Prefixed`] the priority of the record being written. The lock
/// keeps the priority and the record together should two threads log.
struct Prioritised<L> {
    inner: L,
    current: Arc<AtomicU8>,
    order: Mutex<()>,
}

impl<L: Log> Log for Prioritised<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        let _order = self.order.lock().unwrap_or_else(|e| e.into_inner());
        self.current
            .store(priority(record.level()), Ordering::Relaxed);
        self.inner.log(record);
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Starts every line written through it with `<N>`, N the priority in
/// `current`. The formatter writes a line in several pieces, so where a
/// line starts is tracked across writes; a message with a line break
/// becomes two journal entries, and the second gets its priority too.
struct Prefixed<W> {
    out: W,
    current: Arc<AtomicU8>,
    line_start: bool,
}

impl<W: Write> Write for Prefixed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.line_start {
                let n = self.current.load(Ordering::Relaxed);
                self.out.write_all(&[b'<', b'0' + n, b'>'])?;
                self.line_start = false;
            }
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |p| p + 1);
            self.out.write_all(&rest[..end])?;
            self.line_start = rest[end - 1] == b'\n';
            rest = &rest[end..];
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Whether `JOURNAL_STREAM` (`<device>:<inode>`, decimal) names the stream
/// with this device and inode.
fn names_stream(journal_stream: &str, dev: u64, ino: u64) -> bool {
    journal_stream
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

/// Whether stderr is the journal stream systemd set up for this service.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some(value) = value.to_str() else {
        return false;
    };
    // fstat(2) of a duplicate is fstat of stderr: same open file.
    let Ok(fd) = io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => names_stream(value, m.dev(), m.ino()),
        Err(_) => false,
    }
}

/// Installs the logger: everything passes it, and `log::set_max_level` is
/// the one filter (so `--log-level` and a reload can change it), starting
/// at info. Call once; what it returns is the one [`Output`] that batches.
pub fn init() -> Output {
    let cfg = simplelog::ConfigBuilder::new()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .set_time_format_rfc3339()
        .build();
    let mut output = Output::default();
    if io::stderr().is_terminal() {
        // termcolor's "auto" looks only at TERM.
        let _ = simplelog::TermLogger::init(
            LevelFilter::Trace,
            cfg,
            simplelog::TerminalMode::Stderr,
            simplelog::ColorChoice::Auto,
        );
    } else {
        let out = io::BufWriter::with_capacity(BUFFER_BYTES, io::stderr());
        let inner: Box<dyn Log> = if stderr_is_journal() {
            let current = Arc::new(AtomicU8::new(priority(Level::Info)));
            let out = Prefixed {
                out,
                current: Arc::clone(&current),
                line_start: true,
            };
            Box::new(Prioritised {
                inner: simplelog::WriteLogger::new(LevelFilter::Trace, cfg, out),
                current,
                order: Mutex::new(()),
            })
        } else {
            simplelog::WriteLogger::new(LevelFilter::Trace, cfg, out)
        };
        // Lives as long as the logger, which is the process.
        let open: &'static Open = Box::leak(Box::default());
        let logger = Batching { inner, open };
        if log::set_boxed_logger(Box::new(logger)).is_err() {
            return output;
        }
        output.open = Some(open);
    }
    log::set_max_level(LevelFilter::Info);
    output
}

/// A panic's message in a log line is cut here: it is for a developer, and
/// one line is enough to find the place.
const PANIC_MESSAGE_CHARS: usize = 200;

/// A panic's message (its payload, as `panic!` made it), fit for one log
/// line. For whoever reports a panic: the hook in `main` and the MIME
/// decoder's guard.
pub fn panic_message(payload: &dyn std::any::Any) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    crate::text::printable(text, PANIC_MESSAGE_CHARS)
}

/// Applies the log level: `--log-level` (`command_line`) wins over the
/// file's `log_level`; info without either. At start and on SIGHUP
/// (popspool(8), SIGNALS).
pub fn set_level(command_line: Option<LevelFilter>, file: Option<LevelFilter>) {
    log::set_max_level(command_line.or(file).unwrap_or(LevelFilter::Info));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records how many times the inner logger was flushed.
    #[derive(Clone, Default)]
    struct Counting(Arc<Mutex<(usize, usize)>>);

    impl Log for Counting {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn log(&self, _: &Record<'_>) {
            self.0.lock().unwrap().0 += 1;
        }
        fn flush(&self) {
            self.0.lock().unwrap().1 += 1;
        }
    }

    #[test]
    fn lines_wait_only_while_held_and_never_warnings() {
        let c = Counting::default();
        let open: &'static Open = Box::leak(Box::default());
        let b = Batching {
            inner: c.clone(),
            open,
        };
        let output = Output { open: Some(open) };
        let line = |level| {
            b.log(
                &Record::builder()
                    .level(level)
                    .args(format_args!("x"))
                    .build(),
            )
        };
        line(Level::Info);
        assert_eq!(*c.0.lock().unwrap(), (1, 1));
        let batch = output.batch();
        line(Level::Info);
        line(Level::Debug);
        assert_eq!(*c.0.lock().unwrap(), (3, 1));
        line(Level::Warn);
        assert_eq!(*c.0.lock().unwrap(), (4, 2));
        // A nested batch keeps lines held until the outer one drops.
        drop(output.batch());
        line(Level::Info);
        assert_eq!(*c.0.lock().unwrap(), (5, 2));
        drop(batch);
        line(Level::Info);
        assert_eq!(*c.0.lock().unwrap(), (6, 3));
        // No buffering logger: a batch is inert.
        drop(Output::default().batch());
    }

    #[test]
    fn journal_lines_start_with_their_priority() {
        let current = Arc::new(AtomicU8::new(0));
        let mut w = Prefixed {
            out: Vec::new(),
            current: Arc::clone(&current),
            line_start: true,
        };
        for (level, pieces) in [
            (Level::Info, &["2026 ", "[INFO] ", "polled\n"][..]),
            (Level::Warn, &["[WARN] slow\n"]),
            (Level::Error, &["[ERROR] two\nlines", "\n"]),
            (Level::Debug, &["[DEBUG] d\n"]),
            (Level::Trace, &["[TRACE] t\n"]),
        ] {
            current.store(priority(level), Ordering::Relaxed);
            for p in pieces {
                assert_eq!(w.write(p.as_bytes()).unwrap(), p.len());
            }
        }
        assert_eq!(
            String::from_utf8(w.out).unwrap(),
            "<6>2026 [INFO] polled\n<4>[WARN] slow\n<3>[ERROR] two\n<3>lines\n\
             <7>[DEBUG] d\n<7>[TRACE] t\n"
        );
    }

    #[test]
    fn journal_stream_must_name_this_stream() {
        assert!(names_stream("8:1234", 8, 1234));
        assert!(!names_stream("8:1235", 8, 1234));
        assert!(!names_stream("9:1234", 8, 1234));
        assert!(!names_stream("", 8, 1234));
        assert!(!names_stream("8", 8, 1234));
        assert!(!names_stream("8:1234:5", 8, 1234));
        assert!(!names_stream(" 8:1234", 8, 1234));
    }
}
