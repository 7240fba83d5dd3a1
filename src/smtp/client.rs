//! The SMTP conversation over a connection, for one submission at a time:
//! greeting, EHLO, STARTTLS (RFC 3207), AUTH (RFC 4954, with the mechanisms
//! of `sasl`), and one message with a null reverse path (RFC 8098 section
//! 2.1: MDNs go with `MAIL FROM:<>`). Generic over the stream, so the whole
//! dialogue is unit-tested against scripted bytes; `mod.rs` connects and
//! upgrades the real socket.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use crate::mechanism::Mechanism;
use crate::sasl::{self, crypto};

use super::proto::{self, Ehlo, Reply, ReplyReader, MAX_LINE};
use super::Error;

/// Most challenges one login may bring: SCRAM needs two, LOGIN two; more
/// is a server going round in circles (lettre caps at 10 as well).
const MAX_SASL_ROUNDS: usize = 10;

/// One SMTP connection after the greeting.
pub struct Conn<S> {
    reader: BufReader<S>,
    /// The time each complete reply may take; the socket's inactivity
    /// timeout alone would let a server dribble a byte at a time forever.
    deadline: Option<Duration>,
}

impl<S: Read + Write> Conn<S> {
    /// Reads the greeting (220) off a fresh connection; each reply must
    /// then be complete within `deadline`.
    pub fn greet(stream: S, deadline: Option<Duration>) -> Result<(Conn<S>, Reply), Error> {
        let mut conn = Conn {
            reader: BufReader::new(stream),
            deadline,
        };
        let greeting = conn.reply()?;
        if greeting.code != 220 {
            return Err(Error::Refused {
                stage: "greeting",
                reply: greeting.text(),
                permanent: !greeting.is_transient(),
            });
        }
        Ok((conn, greeting))
    }

    /// The stream, to ask it about TLS.
    pub fn get_ref(&self) -> &S {
        self.reader.get_ref()
    }

    /// The stream, for the TLS upgrade; `None` when the server already
    /// sent bytes we have not read (after STARTTLS that would be an
    /// injection: RFC 3207 section 4.2 says to discard them, and we give
    /// up instead).
    pub fn into_inner(self) -> Option<S> {
        self.reader
            .buffer()
            .is_empty()
            .then(|| self.reader.into_inner())
    }

    /// A connection on an upgraded stream; nothing is read from it.
    pub fn upgraded(stream: S, deadline: Option<Duration>) -> Conn<S> {
        Conn {
            reader: BufReader::new(stream),
            deadline,
        }
    }

    /// EHLO and what it offers.
    pub fn ehlo(&mut self, me: &str) -> Result<Ehlo, Error> {
        let reply = self.exchange("EHLO", Some(me), "EHLO")?;
        self.expect(&reply, "EHLO")?;
        Ok(Ehlo::parse(&reply))
    }

    /// STARTTLS; on 220 the caller runs the handshake.
    pub fn starttls(&mut self) -> Result<(), Error> {
        let reply = self.exchange("STARTTLS", None, "STARTTLS")?;
        if reply.code != 220 {
            return Err(refused("STARTTLS", &reply));
        }
        Ok(())
    }

    /// Logs in with `mech`. The password goes only into SASL responses,
    /// which are never logged.
    pub fn auth(&mut self, mech: Mechanism, creds: &sasl::Credentials<'_>) -> Result<(), Error> {
        let name = mech
            .sasl_name()
            .ok_or(Error::Protocol("not a SASL mechanism"))?;
        let mut exchange = sasl::start(mech, creds).map_err(Error::Sasl)?;
        let initial = exchange.initial().map_err(Error::Sasl)?;
        // RFC 4954 section 4: an empty initial response is sent as "=".
        let arg = match initial {
            Some(i) if i.is_empty() => format!("{name} ="),
            Some(i) => format!("{name} {}", crypto::b64_encode(&i)),
            None => name.to_string(),
        };
        log::trace!("C: AUTH {name} <redacted>");
        self.write_line("AUTH", Some(&arg))?;
        let mut reply = self.reply()?;
        let mut rounds = 0;
        while reply.code == 334 {
            rounds += 1;
            if rounds > MAX_SASL_ROUNDS {
                let _ = self.write_raw(b"*\r\n");
                return Err(Error::Protocol("the server sent too many AUTH challenges"));
            }
            let challenge = reply.lines.concat();
            let answer = crypto::b64_decode(challenge.trim())
                .map_err(Error::Sasl)
                .and_then(|c| exchange.respond(&c).map_err(Error::Sasl));
            match answer {
                Ok(a) => {
                    log::trace!("C: <redacted>");
                    let mut line = crypto::b64_encode(&a).into_bytes();
                    line.extend_from_slice(b"\r\n");
                    self.write_raw(&line)?;
                }
                Err(e) => {
                    // RFC 4954 section 4: "*" cancels the exchange.
                    let _ = self.write_raw(b"*\r\n");
                    let _ = self.reply();
                    return Err(e);
                }
            }
            reply = self.reply()?;
        }
        if reply.code != 235 {
            return Err(refused("AUTH", &reply));
        }
        exchange.finish().map_err(Error::Sasl)
    }

    /// Submits `message` to `rcpt` with a null reverse path. `committing`
    /// runs after the whole message is written and before the final `.`
    /// line, the one byte sequence that makes the server take it: it is
    /// where the caller records "about to send" durably. An error from the
    /// server's answer to that dot, or its absence, is
    /// [`Error::Unknown`]; anything earlier means nothing was sent.
    pub fn send(
        &mut self,
        rcpt: &str,
        message: &[u8],
        committing: &mut dyn FnMut() -> Result<(), Error>,
    ) -> Result<(), Error> {
        if !proto::is_plain_address(rcpt) {
            return Err(Error::Address(crate::text::printable(rcpt, 100)));
        }
        let reply = self.exchange("MAIL", Some("FROM:<>"), "MAIL FROM:<>")?;
        self.expect(&reply, "MAIL FROM")?;
        let to = format!("TO:<{rcpt}>");
        let reply = self.exchange("RCPT", Some(&to), &format!("RCPT {to}"))?;
        self.expect(&reply, "RCPT TO")?;
        let reply = self.exchange("DATA", None, "DATA")?;
        if reply.code != 354 {
            return Err(refused("DATA", &reply));
        }
        self.write_raw(&proto::dot_stuff(message))?;
        log::trace!("C: <{} bytes of message>", message.len());
        committing()?;
        log::trace!("C: .");
        let end = self
            .write_raw(b".\r\n")
            .and_then(|()| self.reply())
            .map_err(|e| Error::Unknown(Box::new(e)))?;
        self.expect(&end, "end of DATA")
    }

    /// RSET after a refused transaction, best effort (RFC 5321 section
    /// 4.1.1.5), so the next one starts clean.
    pub fn reset(&mut self) {
        let _ = self.exchange("RSET", None, "RSET");
    }

    /// QUIT, best effort: the message is already taken or refused.
    pub fn quit(mut self) {
        if let Ok(r) = self.exchange("QUIT", None, "QUIT") {
            log::trace!("S: {}", r.text());
        }
    }

    fn expect(&self, reply: &Reply, stage: &'static str) -> Result<(), Error> {
        if reply.is_ok() {
            Ok(())
        } else {
            Err(refused(stage, reply))
        }
    }

    /// Writes a command (logged as `shown`) and reads its reply.
    fn exchange(&mut self, verb: &str, arg: Option<&str>, shown: &str) -> Result<Reply, Error> {
        log::trace!("C: {}", crate::text::printable(shown, 200));
        self.write_line(verb, arg)?;
        self.reply()
    }

    fn write_line(&mut self, verb: &str, arg: Option<&str>) -> Result<(), Error> {
        let line = proto::command(verb, arg)
            .ok_or(Error::Protocol("a command argument holds CR or LF"))?;
        self.write_raw(&line)
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let s = self.reader.get_mut();
        s.write_all(bytes)
            .and_then(|()| s.flush())
            .map_err(Error::Io)
    }

    /// One complete reply, each line bounded by [`MAX_LINE`], the whole
    /// within the deadline.
    fn reply(&mut self) -> Result<Reply, Error> {
        let due = self.deadline.map(|d| Instant::now() + d);
        let mut reader = ReplyReader::default();
        let mut line = Vec::new();
        loop {
            line.clear();
            self.read_line(&mut line, due)?;
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if let Some(reply) = reader.push(text).map_err(Error::Protocol)? {
                log::trace!("S: {}", reply.text());
                return Ok(reply);
            }
        }
    }

    /// One line, its `\n` included.
    fn read_line(&mut self, line: &mut Vec<u8>, due: Option<Instant>) -> Result<(), Error> {
        loop {
            if due.is_some_and(|d| Instant::now() > d) {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the server's reply did not arrive in time",
                )));
            }
            let buf = self.reader.fill_buf().map_err(Error::Io)?;
            if buf.is_empty() {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )));
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            line.extend_from_slice(&buf[..take]);
            self.reader.consume(take);
            if line.len() > MAX_LINE {
                return Err(Error::Protocol("reply line too long"));
            }
            if done {
                return Ok(());
            }
        }
    }
}

fn refused(stage: &'static str, reply: &Reply) -> Error {
    Error::Refused {
        stage,
        reply: reply.text(),
        permanent: !reply.is_transient(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pop3::mock::MockStream;

    fn creds() -> sasl::Credentials<'static> {
        sasl::Credentials {
            user: "mdn",
            secret: "s3cret",
            host: "smtp.example",
            port: 587,
        }
    }

    fn ok() -> Result<(), Error> {
        Ok(())
    }

    #[test]
    fn a_whole_submission_writes_exactly_these_bytes() {
        let script = b"220 smtp.example ESMTP\r\n\
            250-smtp.example\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n\
            235 2.7.0 ok\r\n\
            250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go on\r\n250 2.0.0 queued as X\r\n221 bye\r\n";
        let stream = MockStream::new(&script[..]);
        let written = stream.written();
        let (mut c, greeting) = Conn::greet(stream, None).unwrap();
        assert_eq!(greeting.code, 220);
        let e = c.ehlo("[127.0.0.1]").unwrap();
        assert_eq!(proto::choose_mechanism(&e.auth), Some(Mechanism::Plain));
        c.auth(Mechanism::Plain, &creds()).unwrap();
        let mut marked = false;
        c.send("a@b.example", b"Subject: x\n\n.hidden\n", &mut || {
            marked = true;
            Ok(())
        })
        .unwrap();
        assert!(marked);
        c.quit();
        let out = String::from_utf8(written.borrow().bytes.clone()).unwrap();
        assert_eq!(
            out,
            "EHLO [127.0.0.1]\r\nAUTH PLAIN AG1kbgBzM2NyZXQ=\r\nMAIL FROM:<>\r\n\
             RCPT TO:<a@b.example>\r\nDATA\r\nSubject: x\r\n\r\n..hidden\r\n.\r\nQUIT\r\n"
        );
    }

    #[test]
    fn login_answers_challenges_and_a_refusal_is_permanent() {
        let script = b"220 x\r\n334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n535 5.7.8 bad\r\n";
        let stream = MockStream::new(&script[..]);
        let written = stream.written();
        let (mut c, _) = Conn::greet(stream, None).unwrap();
        let e = c.auth(Mechanism::Login, &creds()).unwrap_err();
        assert!(
            matches!(
                &e,
                Error::Refused {
                    stage: "AUTH",
                    permanent: true,
                    ..
                }
            ),
            "{e}"
        );
        assert!(!e.to_string().contains("s3cret"));
        assert_eq!(
            written.borrow().bytes,
            b"AUTH LOGIN\r\nbWRu\r\nczNjcmV0\r\n".to_vec()
        );
    }

    #[test]
    fn refusals_before_the_dot_are_not_unknown() {
        for (script, stage, permanent) in [
            (&b"220 x\r\n451 4.3.0 later\r\n"[..], "MAIL FROM", false),
            (
                b"220 x\r\n250 ok\r\n550 5.1.1 no such user\r\n",
                "RCPT TO",
                true,
            ),
            (b"220 x\r\n250 ok\r\n250 ok\r\n554 no\r\n", "DATA", true),
        ] {
            let (mut c, _) = Conn::greet(MockStream::new(script), None).unwrap();
            let mut called = false;
            let e = c
                .send("a@b", b"x", &mut || {
                    called = true;
                    ok()
                })
                .unwrap_err();
            assert!(!called, "{stage}");
            match e {
                Error::Refused {
                    stage: s,
                    permanent: p,
                    ..
                } => assert_eq!((s, p), (stage, permanent)),
                e => panic!("{e}"),
            }
        }
    }

    #[test]
    fn after_the_dot() {
        // Refused after the dot: known, not sent.
        let s = b"220 x\r\n250 ok\r\n250 ok\r\n354 go\r\n452 4.3.1 full\r\n";
        let (mut c, _) = Conn::greet(MockStream::new(&s[..]), None).unwrap();
        let e = c.send("a@b", b"x", &mut ok).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Refused {
                    permanent: false,
                    ..
                }
            ),
            "{e}"
        );
        // No answer to the dot: unknown.
        let s = b"220 x\r\n250 ok\r\n250 ok\r\n354 go\r\n";
        let (mut c, _) = Conn::greet(MockStream::new(&s[..]), None).unwrap();
        let e = c.send("a@b", b"x", &mut ok).unwrap_err();
        assert!(matches!(e, Error::Unknown(_)), "{e}");
        // The journal could not record "sending": the dot is never sent.
        let s = b"220 x\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n";
        let stream = MockStream::new(&s[..]);
        let written = stream.written();
        let (mut c, _) = Conn::greet(stream, None).unwrap();
        let e = c
            .send("a@b", b"x", &mut || Err(Error::Protocol("journal full")))
            .unwrap_err();
        assert!(matches!(e, Error::Protocol(_)), "{e}");
        assert!(!written.borrow().bytes.ends_with(b".\r\n"));
    }

    #[test]
    fn a_dribbling_server_meets_the_deadline() {
        let slow = MockStream::new(&b"220 a greeting that takes its time\r\n"[..])
            .one_byte_reads()
            .with_read_delay(Duration::from_millis(5));
        let e = Conn::greet(slow, Some(Duration::from_millis(50))).map(|_| ());
        assert!(
            matches!(&e, Err(Error::Io(io)) if io.kind() == io::ErrorKind::TimedOut),
            "{e:?}"
        );
        let slow = MockStream::new(&b"220 quick\r\n"[..]).one_byte_reads();
        assert!(Conn::greet(slow, Some(Duration::from_secs(5))).is_ok());
    }

    #[test]
    fn bad_input_is_refused_without_a_panic() {
        let (mut c, _) = Conn::greet(MockStream::new(&b"220 x\r\n"[..]), None).unwrap();
        assert!(matches!(
            c.send("a@b>\r\nDATA", b"x", &mut ok),
            Err(Error::Address(_))
        ));
        for script in [&b"554 go away\r\n"[..], b"hello\r\n", b""] {
            assert!(Conn::greet(MockStream::new(script), None).is_err());
        }
        let long = [b"220 ".to_vec(), vec![b'x'; MAX_LINE], b"\r\n".to_vec()].concat();
        assert!(matches!(
            Conn::greet(MockStream::new(long), None).map(|_| ()),
            Err(Error::Protocol("reply line too long"))
        ));
        // STARTTLS: bytes after the 220 are an injection.
        let s = b"220 x\r\n220 go ahead\r\n250 injected\r\n";
        let (mut c, _) = Conn::greet(MockStream::new(&s[..]), None).unwrap();
        c.starttls().unwrap();
        assert!(c.into_inner().is_none());
    }
}
