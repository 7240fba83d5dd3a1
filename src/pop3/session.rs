//! The TRANSACTION state: [`Session`] lists the maildrop (STAT, LIST,
//! UIDL), reads messages (RETR, TOP), marks them deleted (DELE, RSET) and
//! ends with QUIT, which enters the UPDATE state where deletions are
//! committed. The windowed runs of RETR and DELE it starts are in
//! [`pipeline`](super::pipeline).

use std::fmt;
use std::io::{Read, Write};
use std::time::Duration;

use super::client::capa;
use super::command::Command;
use super::conn::Conn;
use super::error::{Error, Result};
use super::pipeline::{self, Plan, Retrieval, DELE_WINDOW, PIPELINE_WINDOW, PIPELINE_WINDOW_BYTES};
use super::proto::{self, Capabilities, Uid};

/// TRANSACTION state.
pub struct Session<S> {
    pub(super) conn: Box<Conn<S>>,
}

impl<S> fmt::Debug for Session<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl<S: Read + Write> Session<S> {
    /// Bounds the time for each reply's status line (all of a one-line
    /// reply); a message's body is held to the pacing's minimum rate instead.
    pub fn set_response_deadline(&mut self, deadline: Option<Duration>) {
        self.conn.deadline = deadline;
    }

    /// The underlying stream, e.g. to read TLS details.
    pub fn get_ref(&self) -> &S {
        self.conn.reader.get_ref()
    }

    /// CAPA again: some values (LOGIN-DELAY, EXPIRE) may differ after login.
    pub fn capa(&mut self) -> Result<Capabilities> {
        self.conn.exec(capa)
    }

    /// STAT: message count and maildrop size in octets.
    pub fn stat(&mut self) -> Result<(u32, u64)> {
        self.conn.exec(|c| {
            let reply = c.command(&Command::Stat)?;
            proto::parse_stat(reply.text.as_bytes())
                .map_err(|m| Error::malformed("STAT", m, reply.text.as_bytes()))
        })
    }

    /// LIST: `(message number, size)` for every message not marked deleted.
    pub fn list(&mut self) -> Result<Vec<(u32, u64)>> {
        self.conn.exec(|c| {
            c.command(&Command::List(None))?;
            c.read_listing("LIST", c.limits.entries, proto::parse_list_entry)
        })
    }

    /// UIDL as [`uidl`](Self::uidl) does, except that a `-ERR` (the server
    /// has none: RFC 1939 makes it optional) is `None`, then LIST. UIDL goes
    /// first because GNU Mailutils creates a message's unique-id on the first
    /// UIDL by adding an `X-UIDL:` header to it: LIST after UIDL gives the
    /// sizes the message will have from then on, so the next poll finds the
    /// same size for the same UIDL. With `pipelined` both go out in one
    /// write: one round trip, not two.
    pub fn list_and_uidl(&mut self, pipelined: bool) -> Result<(SizeListing, Option<UidListing>)> {
        let mut all = Collect::default();
        let has_uidl = self.list_and_uidl_into(pipelined, &mut all)?;
        Ok((all.sizes, has_uidl.then_some(all.uids)))
    }

    /// [`list_and_uidl`](Self::list_and_uidl), handing each entry to `sink`
    /// as it is read instead of collecting them; true when the server
    /// answered UIDL.
    pub fn list_and_uidl_into(
        &mut self,
        pipelined: bool,
        sink: &mut dyn ListingSink,
    ) -> Result<bool> {
        if !pipelined {
            let has_uidl = match self.conn.exec(|c| {
                c.command(&Command::Uidl(None))?;
                read_uids(c, sink)
            }) {
                Ok(()) => true,
                Err(Error::Server { .. }) => false,
                Err(e) => return Err(e),
            };
            self.list_into(sink)?;
            return Ok(has_uidl);
        }
        self.conn.exec(|c| {
            c.write_commands([Command::Uidl(None), Command::List(None)])?;
            // A -ERR to UIDL still leaves LIST's reply to read.
            let has_uidl = match c.read_status("UIDL") {
                Ok(_) => read_uids(c, sink).map(|()| true)?,
                Err(Error::Server { .. }) => false,
                Err(e) => return Err(e),
            };
            c.read_status("LIST")?;
            read_sizes(c, sink)?;
            Ok(has_uidl)
        })
    }

    /// LIST, handing each entry to `sink` as it is read.
    pub fn list_into(&mut self, sink: &mut dyn ListingSink) -> Result<()> {
        self.conn.exec(|c| {
            c.command(&Command::List(None))?;
            read_sizes(c, sink)
        })
    }

    /// `LIST n`: the size of message `n`.
    pub fn list_one(&mut self, n: u32) -> Result<u64> {
        self.conn.exec(|c| {
            let reply = c.command(&Command::List(Some(n)))?;
            let (got, size) = proto::parse_list_entry(reply.text.as_bytes())
                .map_err(|m| Error::malformed("LIST", m, reply.text.as_bytes()))?;
            check_number("LIST", n, got)?;
            Ok(size)
        })
    }

    /// UIDL: `(message number, unique-id)`; see [`Uid`] for out-of-spec ids.
    pub fn uidl(&mut self) -> Result<Vec<(u32, Uid)>> {
        self.conn.exec(|c| {
            c.command(&Command::Uidl(None))?;
            c.read_listing("UIDL", c.limits.entries, proto::parse_uidl_entry)
        })
    }

    /// `UIDL n`: the unique-id of message `n`.
    pub fn uidl_one(&mut self, n: u32) -> Result<Uid> {
        self.conn.exec(|c| {
            let reply = c.command(&Command::Uidl(Some(n)))?;
            let (got, uid) = proto::parse_uidl_entry(reply.text.as_bytes())
                .map_err(|m| Error::malformed("UIDL", m, reply.text.as_bytes()))?;
            check_number("UIDL", n, got)?;
            Ok(uid)
        })
    }

    /// RETR: streams message `n`, dot-unstuffed and otherwise byte for byte,
    /// into `sink`; returns the bytes written. More than `max_bytes` is
    /// [`Error::MessageTooLarge`] (and the session is then unusable).
    pub fn retr(&mut self, n: u32, sink: &mut dyn Write, max_bytes: u64) -> Result<u64> {
        self.conn.exec(|c| {
            c.command(&Command::Retr(n))?;
            c.read_body(sink, max_bytes)
        })
    }

    /// TOP: the header and the first `lines` body lines of message `n`, as [`retr`](Self::retr).
    pub fn top(&mut self, n: u32, lines: u32, sink: &mut dyn Write, max_bytes: u64) -> Result<u64> {
        self.conn.exec(|c| {
            c.command(&Command::Top(n, lines))?;
            c.read_body(sink, max_bytes)
        })
    }

    /// DELE: marks message `n`; only a successful [`quit`](Self::quit) removes it.
    pub fn dele(&mut self, n: u32) -> Result<()> {
        self.conn.exec(|c| c.command(&Command::Dele(n))).map(drop)
    }

    /// DELE for each message, stopping at the first `-ERR` (returned).
    ///
    /// With `pipelined` (only if CAPA listed PIPELINING) up to
    /// [`DELE_WINDOW`] commands are in flight: the first window goes out
    /// in one write, and whenever half of it has been answered the next half
    /// follows, so the server never waits for us. After a `-ERR` nothing more
    /// is sent, the replies already asked for are still read (the session
    /// stays usable), and the first `-ERR` is returned.
    pub fn dele_many(&mut self, msgs: &[u32], pipelined: bool) -> Result<()> {
        if !pipelined {
            return msgs.iter().try_for_each(|&n| self.dele(n));
        }
        self.dele_windowed(msgs, DELE_WINDOW)
    }

    /// [`dele_many`](Self::dele_many) pipelined, with a window of `size`.
    pub(super) fn dele_windowed(&mut self, msgs: &[u32], size: usize) -> Result<()> {
        self.conn.exec(|c| pipeline::dele_windowed(c, msgs, size))
    }

    /// RETR for each message of `plan`, in order, read back one at a time
    /// with [`Retrieval::read_next`].
    ///
    /// With `pipelined` (only if CAPA listed PIPELINING) up to
    /// [`PIPELINE_WINDOW`] RETRs, announcing at most
    /// [`PIPELINE_WINDOW_BYTES`] between them, are in flight, topped up in
    /// one write whenever half the window has been answered; otherwise one
    /// at a time (lock-step). Bodies still stream straight into the caller's
    /// sink, one after the other, so memory does not grow with the window.
    pub fn retrieve<'r>(
        &'r mut self,
        plan: impl Plan + 'r,
        pipelined: bool,
    ) -> Result<Retrieval<'r, S>> {
        let (size, bytes) = match pipelined {
            true => (PIPELINE_WINDOW, PIPELINE_WINDOW_BYTES),
            false => (1, u64::MAX),
        };
        self.retrieve_windowed(plan, size, bytes)
    }

    /// [`retrieve`](Self::retrieve) with a window of `size` commands and `bytes`
    /// announced bytes.
    pub(super) fn retrieve_windowed<'r>(
        &'r mut self,
        plan: impl Plan + 'r,
        size: usize,
        bytes: u64,
    ) -> Result<Retrieval<'r, S>> {
        Retrieval::start(&mut self.conn, Box::new(plan), size, bytes)
    }

    /// RSET: unmarks every message marked deleted.
    pub fn rset(&mut self) -> Result<()> {
        self.conn.exec(|c| c.command(&Command::Rset)).map(drop)
    }

    /// NOOP, e.g. to keep the session alive.
    pub fn noop(&mut self) -> Result<()> {
        self.conn.exec(|c| c.command(&Command::Noop)).map(drop)
    }

    /// QUIT, entering UPDATE. `Ok` only on `+OK`: only then were all the
    /// deletions committed. After an error, any subset of the marked messages
    /// may be gone (RFC 1939 §6 lets a `-ERR` mean "some not removed"):
    /// trust the next UIDL listing.
    pub fn quit(mut self) -> Result<()> {
        self.conn.exec(|c| c.command(&Command::Quit)).map(drop)
    }
}

/// A LIST listing: `(message number, size)`.
pub type SizeListing = Vec<(u32, u64)>;

/// A UIDL listing: `(message number, unique-id)`.
pub type UidListing = Vec<(u32, Uid)>;

/// Takes the entries of LIST and UIDL listings one at a time, as they are
/// read: a mailbox of a million messages is then stored as compactly as
/// the caller likes, never as a million small allocations first.
pub trait ListingSink {
    /// A UIDL entry: the message number and its unique-id as sent (see
    /// [`Uid::from_bytes`] for what is valid).
    fn uid(&mut self, n: u32, uid: &[u8]);
    /// A LIST entry: the message number and its size.
    fn size(&mut self, n: u32, size: u64);
}

/// Both listings as Vecs.
#[derive(Default)]
struct Collect {
    sizes: SizeListing,
    uids: UidListing,
}

impl ListingSink for Collect {
    fn uid(&mut self, n: u32, uid: &[u8]) {
        self.uids.push((n, Uid::from_bytes(uid)));
    }

    fn size(&mut self, n: u32, size: u64) {
        self.sizes.push((n, size));
    }
}

/// The rest of a UIDL listing, into `sink` (read_listing collects
/// nothing: its entries are `()`).
fn read_uids<S: Read + Write>(c: &mut Conn<S>, sink: &mut dyn ListingSink) -> Result<()> {
    let max = c.limits.entries;
    c.read_listing("UIDL", max, |line| {
        let (n, uid) = proto::parse_uidl_entry_raw(line)?;
        sink.uid(n, uid);
        Ok(())
    })
    .map(drop)
}

/// The rest of a LIST listing, into `sink`.
fn read_sizes<S: Read + Write>(c: &mut Conn<S>, sink: &mut dyn ListingSink) -> Result<()> {
    let max = c.limits.entries;
    c.read_listing("LIST", max, |line| {
        let (n, size) = proto::parse_list_entry(line)?;
        sink.size(n, size);
        Ok(())
    })
    .map(drop)
}

/// A reply about one message must name the message asked about.
fn check_number(verb: &str, asked: u32, got: u32) -> Result<()> {
    if asked != got {
        return Err(Error::Protocol(format!(
            "{verb}: asked about message {asked}, got an answer for {got}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fmt;
    use std::io::Write;

    use crate::pop3::conn::Limits;
    use crate::pop3::mock::{client_with, gated_session, sent, session, session_with, MockStream};
    use crate::pop3::RespCode;

    use super::*;

    fn show<T: fmt::Debug>(result: Result<T>) -> Result<String> {
        result.map(|v| format!("{v:?}"))
    }

    fn body(read: impl FnOnce(&mut dyn Write) -> Result<u64>) -> Result<String> {
        let mut out = Vec::new();
        let n = read(&mut out)?;
        Ok(format!("({n}, {:?})", String::from_utf8_lossy(&out)))
    }

    struct Case {
        sent: &'static str,
        ok: &'static [u8],
        expect: &'static str,
        call: fn(&mut Session<MockStream>) -> Result<String>,
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                sent: "STAT\r\n",
                ok: b"+OK 2 320\r\n",
                expect: "(2, 320)",
                call: |s| show(s.stat()),
            },
            Case {
                sent: "LIST\r\n",
                ok: b"+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n",
                expect: "[(1, 120), (2, 200)]",
                call: |s| show(s.list()),
            },
            Case {
                sent: "LIST 2\r\n",
                ok: b"+OK 2 200\r\n",
                expect: "200",
                call: |s| show(s.list_one(2)),
            },
            Case {
                sent: "UIDL\r\n",
                ok: b"+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n.\r\n",
                expect: r#"[(1, Valid("whqtswO00WBw418f9t5JxYwZ")), (2, Valid("QhdPYR:00WBw1Ph7x7"))]"#,
                call: |s| show(s.uidl()),
            },
            Case {
                sent: "UIDL 2\r\n",
                ok: b"+OK 2 QhdPYR:00WBw1Ph7x7\r\n",
                expect: r#"Valid("QhdPYR:00WBw1Ph7x7")"#,
                call: |s| show(s.uidl_one(2)),
            },
            Case {
                sent: "RETR 1\r\n",
                ok: b"+OK 20 octets\r\nSubject: x\r\n\r\n..dot\r\n.\r\n",
                expect: r#"(20, "Subject: x\r\n\r\n.dot\r\n")"#,
                call: |s| body(|sink| s.retr(1, sink, 1000)),
            },
            Case {
                sent: "TOP 1 0\r\n",
                ok: b"+OK\r\nSubject: x\r\n\r\n.\r\n",
                expect: r#"(14, "Subject: x\r\n\r\n")"#,
                call: |s| body(|sink| s.top(1, 0, sink, 1000)),
            },
            Case {
                sent: "DELE 1\r\n",
                ok: b"+OK message 1 deleted\r\n",
                expect: "()",
                call: |s| show(s.dele(1)),
            },
            Case {
                sent: "DELE 3\r\n",
                ok: b"+OK\r\n",
                expect: "()",
                call: |s| show(s.dele_many(&[3], true)),
            },
            Case {
                sent: "RSET\r\n",
                ok: b"+OK maildrop has 2 messages\r\n",
                expect: "()",
                call: |s| show(s.rset()),
            },
            Case {
                sent: "NOOP\r\n",
                ok: b"+OK\r\n",
                expect: "()",
                call: |s| show(s.noop()),
            },
            Case {
                sent: "CAPA\r\n",
                ok: b"+OK\r\nTOP\r\nEXPIRE 30 USER\r\n.\r\n",
                expect: "true Some(Days(30))",
                call: |s| s.capa().map(|c| format!("{} {:?}", c.top, c.expire)),
            },
        ]
    }

    #[test]
    fn session_verbs_succeed_with_any_read_size() {
        for case in cases() {
            for one_byte in [false, true] {
                let (mut s, log) = session_with(case.ok, one_byte, Limits::default());
                assert_eq!((case.call)(&mut s).unwrap(), case.expect, "{}", case.sent);
                assert_eq!(sent(&log), case.sent);
                assert!(
                    s.conn.reader.buffer().is_empty(),
                    "{} left bytes",
                    case.sent
                );
            }
        }
    }

    #[test]
    fn session_verbs_report_err_and_stay_usable() {
        for case in cases().into_iter().filter(|c| c.sent != "CAPA\r\n") {
            let verb = case.sent.split([' ', '\r']).next().unwrap();
            let (mut s, log) = session(b"-ERR [SYS/TEMP] try later\r\n+OK\r\n");
            let err = (case.call)(&mut s).unwrap_err();
            match &err {
                Error::Server { command, reply } => {
                    assert_eq!(*command, verb);
                    assert_eq!(reply.code, Some(RespCode::SysTemp));
                    assert_eq!(reply.text, "try later");
                }
                other => panic!("{verb}: {other:?}"),
            }
            assert!(err.is_transient() && !err.is_auth_failure());
            s.noop().unwrap();
            assert_eq!(sent(&log), format!("{}NOOP\r\n", case.sent));
        }
    }

    #[test]
    fn session_verbs_fail_cleanly_on_eof_anywhere() {
        for case in cases() {
            for cut in 0..case.ok.len() {
                let (mut s, _) = session(&case.ok[..cut]);
                let result = (case.call)(&mut s);
                assert!(
                    matches!(result, Err(Error::ConnectionLost)),
                    "{} cut at {cut}: {result:?}",
                    case.sent
                );
                assert!(matches!(s.noop(), Err(Error::Unusable)));
            }
        }
    }

    #[test]
    fn quit_commits_only_on_ok() {
        for one_byte in [false, true] {
            let (s, log) = session_with(
                b"+OK dewey POP3 server signing off\r\n",
                one_byte,
                Limits::default(),
            );
            s.quit().unwrap();
            assert_eq!(sent(&log), "QUIT\r\n");
        }
        let (s, _) = session(b"-ERR some deleted messages not removed\r\n");
        assert!(matches!(
            s.quit(),
            Err(Error::Server {
                command: "QUIT",
                ..
            })
        ));
        for cut in [0, 3] {
            let (s, _) = session(&b"+OK bye\r\n"[..cut]);
            assert!(matches!(s.quit(), Err(Error::ConnectionLost)));
        }
        let (client, log) = client_with(b"+OK bye\r\n", true);
        client.quit().unwrap();
        assert_eq!(sent(&log), "QUIT\r\n");
        let (client, _) = client_with(b"-ERR no\r\n", false);
        assert!(matches!(
            client.quit(),
            Err(Error::Server {
                command: "QUIT",
                ..
            })
        ));
        let (client, _) = client_with(b"+OK by", false);
        assert!(matches!(client.quit(), Err(Error::ConnectionLost)));
    }

    #[test]
    fn plain_dele_many_stops_at_first_err() {
        let (mut s, log) = session(b"+OK\r\n-ERR no such message\r\n");
        assert!(s.dele_many(&[1, 2, 3], false).is_err());
        assert_eq!(sent(&log), "DELE 1\r\nDELE 2\r\n");
        assert_eq!(log.borrow().calls, 2);
    }

    #[test]
    fn list_and_uidl_in_one_round_trip() {
        let list = b"+OK\r\n1 120\r\n2 200\r\n.\r\n";
        let uidl = b"+OK\r\n1 a\r\n2 b\r\n.\r\n";
        let want_uidl = vec![(1, Uid::Valid("a".into())), (2, Uid::Valid("b".into()))];
        for pipelined in [true, false] {
            let (mut s, log) = gated_session(&[uidl, list, b"+OK\r\n"]);
            let (l, u) = s.list_and_uidl(pipelined).unwrap();
            assert_eq!(l, [(1, 120), (2, 200)]);
            assert_eq!(u.as_ref(), Some(&want_uidl));
            assert_eq!(log.borrow().max_ahead, if pipelined { 2 } else { 1 });
            let sent = String::from_utf8(log.borrow().bytes.clone()).unwrap();
            assert!(sent.ends_with("UIDL\r\nLIST\r\n"), "{sent:?}");
            s.noop().unwrap();

            let (mut s, _) = gated_session(&[b"-ERR no UIDL here\r\n", list, b"+OK\r\n"]);
            assert_eq!(s.list_and_uidl(pipelined).unwrap().1, None);
            s.noop().unwrap();
        }
        // A -ERR to LIST is the error, and the session stays in step.
        let (mut s, _) = session(b"+OK\r\n1 a\r\n.\r\n-ERR busy\r\n+OK\r\n");
        assert!(matches!(
            s.list_and_uidl(true),
            Err(Error::Server {
                command: "LIST",
                ..
            })
        ));
        s.noop().unwrap();
        // Cut off inside LIST's listing: out of step.
        let (mut s, _) = session(b"+OK\r\n1 a\r\n.\r\n+OK\r\n1 120\r\n");
        assert!(matches!(s.list_and_uidl(true), Err(Error::ConnectionLost)));
        assert!(matches!(s.noop(), Err(Error::Unusable)));
    }

    #[test]
    fn malformed_replies() {
        let (mut s, _) = session(b"+OK two 320\r\n");
        let err = s.stat().unwrap_err();
        assert_eq!(
            err.to_string(),
            "protocol error: STAT: bad message count: \"two 320\""
        );
        let (mut s, _) = session(b"+OK\r\n1 abc\r\n.\r\n");
        assert!(matches!(s.uidl(), Ok(v) if v == [(1, Uid::Valid("abc".into()))]));
        let (mut s, _) = session(b"+OK\r\nx abc\r\n.\r\n");
        assert!(matches!(s.uidl(), Err(Error::Protocol(_))));
        let (mut s, _) = session(b"+OK 3 abc\r\n");
        assert!(matches!(s.uidl_one(2), Err(Error::Protocol(_))));
        let (mut s, _) = session(b"+OK\r\n1 bad uid\r\n.\r\n");
        let listing = s.uidl().unwrap();
        assert_eq!(listing, [(1, Uid::Invalid(b"bad uid".to_vec()))]);
    }
}
