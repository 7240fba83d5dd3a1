//! popspool's integration tests, as one test binary: the shared support in
//! `common` compiles once, and every module below is a group of tests of the
//! real `popspool` binary or of the library's public API.
//!
//! Plain `cargo test` runs, as any user, every test that needs neither root
//! nor a private server (Dovecot, GNU Mailutils pop3d): the scripted fake
//! server, the command line, the MIME decoder, the man pages. The others are
//! `#[ignore]`d with the reason ("needs root and Dovecot", "needs root and
//! Mailutils", ...); `bash tests/run.sh`, which runs as root,
//! includes them (`cargo test -- --include-ignored`). One module:
//! `cargo test --test suite faults::`.

mod common;

mod auth_fake;
mod bench_quick;
mod cli;
mod deadlines;
mod e2e_auth;
mod e2e_dovecot;
mod e2e_servers;
mod faults;
mod full_disk;
mod harness;
mod mdn;
mod memory;
mod mime;
mod mime_memory;
mod packaging;
mod panics;
mod pipelining;
mod secrets;
mod smime;
mod spool_safety;
mod systemd;
mod torture;
