//! Helpers shared by the configuration's unit tests: a minimal valid
//! account, and loading text that must pass or must fail at a given line
//! and key.

use std::path::Path;

use super::{load_str, Account, Config, Error};

/// Four lines; a test's extra lines start at line 5.
pub(super) const MIN: &str = "[account a]\nhost = pop.example.com\nuser = u\npassword = pw\n";

pub(super) fn path() -> &'static Path {
    Path::new("/etc/popspool/p.ini")
}

pub(super) fn cfg(text: &str) -> Config {
    load_str(text, path()).unwrap_or_else(|e| panic!("{e}"))
}

/// The account of [`MIN`] with `extra` lines added.
pub(super) fn acct(extra: &str) -> Account {
    cfg(&format!("{MIN}{extra}")).accounts.remove(0)
}

/// The line, key and message of the error `text` must cause.
pub(super) fn fail(text: &str) -> (usize, Option<String>, String) {
    match load_str(text, path()) {
        Err(Error::Invalid {
            line, key, message, ..
        }) => (line, key, message),
        Err(e) => panic!("expected Invalid, got {e}"),
        Ok(_) => panic!("accepted:\n{text}"),
    }
}

/// Expect `text` to fail at `line` naming `key`, with `part` in the message.
#[track_caller]
pub(super) fn check(text: &str, line: usize, key: Option<&str>, part: &str) {
    let (l, k, m) = fail(text);
    assert_eq!((l, k.as_deref()), (line, key), "{m}");
    assert!(m.contains(part), "{m:?} lacks {part:?}");
}
