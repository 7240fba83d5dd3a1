//! Log output: one line per event on stderr, through simplelog.
//!
//! On a terminal, simplelog's coloured terminal logger. Anywhere else
//! (journald, a pipe, a file) plain lines through a buffer that is written
//! out after every line, except while a [`Held`] guard lives: then the lines
//! wait and go out together when it drops. Draining a large mailbox logs a
//! line per delivered message, and a write(2) per line was 5% of the CPU
//! time; the lines of a committed batch now cost one write. Nothing waits
//! longer than the few microseconds of bookkeeping between them, and a
//! warning or error always goes out at once.

use std::io::{self, IsTerminal};
use std::sync::atomic::{AtomicBool, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Buffer for lines held back; a batch of 64 deliveries is about 8 KiB.
const BUFFER_BYTES: usize = 64 << 10;

static HELD: AtomicBool = AtomicBool::new(false);

/// While this lives, info and lower lines are not written out one by one.
#[must_use = "lines are held only while the guard lives"]
pub struct Held(());

/// Hold back info lines until the guard drops; they are then written out
/// together. Not nested: the first guard to drop writes everything out.
pub fn hold() -> Held {
    HELD.store(true, Ordering::Relaxed);
    Held(())
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.store(false, Ordering::Relaxed);
        log::logger().flush();
    }
}

/// Writes out each line unless lines are held (and it is not a warning or
/// an error).
struct Batching<L> {
    inner: L,
    held: &'static AtomicBool,
}

impl<L: Log> Log for Batching<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        self.inner.log(record);
        if record.level() <= Level::Warn || !self.held.load(Ordering::Relaxed) {
            self.inner.flush();
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Installs the logger: everything passes it, and `log::set_max_level` is
/// the one filter (so `--log-level` and a reload can change it), starting
/// at info.
pub fn init() {
    let cfg = simplelog::ConfigBuilder::new()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .set_time_format_rfc3339()
        .build();
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
        let logger = Batching { inner, held: &HELD };
        if log::set_boxed_logger(Box::new(logger)).is_err() {
            return;
        }
    }
    log::set_max_level(LevelFilter::Info);
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
        static FLAG: AtomicBool = AtomicBool::new(false);
        let c = Counting::default();
        let b = Batching {
            inner: c.clone(),
            held: &FLAG,
        };
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
        FLAG.store(true, Ordering::Relaxed);
        line(Level::Info);
        line(Level::Debug);
        assert_eq!(*c.0.lock().unwrap(), (3, 1));
        line(Level::Warn);
        assert_eq!(*c.0.lock().unwrap(), (4, 2));
        FLAG.store(false, Ordering::Relaxed);
        line(Level::Info);
        assert_eq!(*c.0.lock().unwrap(), (5, 3));
    }
}
