//! Shared test support: a private Dovecot or GNU Mailutils pop3d, a scripted
//! fake server, test messages, and running the popspool binary.

pub mod bigbox;
pub mod dovecot;
pub mod fake;
pub mod mail;
pub mod mailutils;
pub mod popspool;
pub mod proxy;
pub mod relay;
pub mod server;
pub mod smtp_sink;
