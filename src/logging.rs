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
//! [`init`] returns the [`Output`] it installed; whoever wants lines batched
//! is handed that value and opens a [`Batch`] from it, so what may hold
//! lines back is visible in the callers' signatures.

use std::io::{self, IsTerminal};
use std::sync::atomic::{AtomicUsize, Ordering};

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
        let inner = simplelog::WriteLogger::new(LevelFilter::Trace, cfg, out);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

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
}
