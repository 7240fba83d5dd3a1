//! The AUTHORIZATION state: [`Client`] reads the greeting, asks for
//! capabilities (CAPA, RFC 2449), upgrades with STLS (RFC 2595) and logs in
//! with USER/PASS or APOP (RFC 1939) or AUTH (RFC 5034). Logging in consumes
//! the client and returns a [`Session`]; a refused login hands the client
//! back with the error, so the caller can try another mechanism.

use std::fmt;
use std::io::{Read, Write};
use std::time::Duration;

use log::trace;

use super::command::Command;
use super::conn::{Conn, Limits, Phase};
use super::error::{Error, Result};
use super::pace::Pacing;
use super::proto::{self, Capabilities, Reply};
use super::session::Session;

/// Most CAPA lines accepted. Servers list 10 to 20; CAPA lines are kept as
/// strings of up to [`MAX_LINE`](super::MAX_LINE) each, so this caps them at 8 MiB.
const MAX_CAPA_LINES: usize = 1000;

/// Challenges allowed in one AUTH exchange. Real mechanisms need at most
/// three; a server that keeps challenging must not hold us (lettre also stops at 10).
const MAX_SASL_ROUNDS: usize = 10;

/// The server's first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// The text after `+OK` (untrusted).
    pub text: String,
    /// A well-formed APOP timestamp, brackets included; `None` when absent or
    /// malformed, so APOP is not possible.
    pub apop_timestamp: Option<String>,
}

/// AUTHORIZATION state.
pub struct Client<S> {
    // Boxed so that `(Error, Client)` stays small to move around.
    pub(super) conn: Box<Conn<S>>,
}

impl<S> fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl<S: Read + Write> Client<S> {
    /// Reads the greeting. A `-ERR` greeting is [`Error::Server`] for `"connection"`.
    pub fn connect(stream: S) -> Result<(Self, Greeting)> {
        Self::connect_with(stream, Limits::default(), None)
    }

    /// [`connect`](Self::connect) with a response deadline, which also bounds the greeting.
    pub fn connect_with_deadline(
        stream: S,
        deadline: Option<Duration>,
    ) -> Result<(Self, Greeting)> {
        Self::connect_with(stream, Limits::default(), deadline)
    }

    /// [`connect`](Self::connect) with `limits` (tests shrink them) and a response deadline.
    pub(super) fn connect_with(
        stream: S,
        limits: Limits,
        deadline: Option<Duration>,
    ) -> Result<(Self, Greeting)> {
        Self::greet(Box::new(Conn::new(stream, limits, deadline)))
    }

    /// [`connect`](Self::connect) with every reply held to `pace`, and the
    /// greeting and what follows up to the login to `phase`'s end.
    pub fn connect_paced(
        stream: S,
        pace: Pacing,
        phase: Option<Phase>,
    ) -> Result<(Self, Greeting)> {
        let mut conn = Box::new(Conn::new(stream, Limits::default(), None));
        conn.set_pacing(pace);
        conn.phase = phase;
        Self::greet(conn)
    }

    fn greet(mut conn: Box<Conn<S>>) -> Result<(Self, Greeting)> {
        let reply = conn.exec(|c| c.read_status("connection"))?;
        let apop_timestamp = proto::apop_timestamp(&reply.text).map(str::to_owned);
        let greeting = Greeting {
            text: reply.text,
            apop_timestamp,
        };
        Ok((Self { conn }, greeting))
    }

    /// Continues on the stream [`stls`](Self::stls) returned, once TLS is up.
    /// No greeting follows STLS; ask [`capa`](Self::capa) again (RFC 2595 §4),
    /// and set the response deadline again.
    pub fn from_upgraded(stream: S) -> Self {
        Self {
            conn: Box::new(Conn::new(stream, Limits::default(), None)),
        }
    }

    /// Bounds the time for each reply's status line (all of a one-line
    /// reply); `None` leaves only the socket's own inactivity timeout.
    pub fn set_response_deadline(&mut self, deadline: Option<Duration>) {
        self.conn.deadline = deadline;
    }

    /// Holds every later reply to `pace` (after STLS, say).
    pub fn set_pacing(&mut self, pace: Pacing) {
        self.conn.set_pacing(pace);
    }

    /// Ends every reply at `phase`'s end at the latest; a login lifts it.
    pub fn set_phase(&mut self, phase: Option<Phase>) {
        self.conn.phase = phase;
    }

    /// The underlying stream, e.g. to read TLS details.
    pub fn get_ref(&self) -> &S {
        self.conn.reader.get_ref()
    }

    /// CAPA. A `-ERR` means the server has no CAPA: empty capabilities.
    pub fn capa(&mut self) -> Result<Capabilities> {
        self.conn.exec(capa)
    }

    /// STLS: on `+OK`, the raw stream, ready for the TLS handshake. Fails if
    /// the server sent anything past the `+OK` line: those bytes arrived
    /// before TLS and must not be read as if they came through it.
    pub fn stls(mut self) -> Result<S> {
        self.conn.exec(|c| c.command(&Command::Stls))?;
        if !self.conn.reader.buffer().is_empty() {
            return Err(Error::StlsBufferNotEmpty);
        }
        Ok(self.conn.reader.into_inner())
    }

    /// USER then PASS. On failure the client comes back with the error; if
    /// USER was refused, PASS was not sent.
    pub fn user_pass(mut self, user: &str, password: &str) -> Result<Session<S>, (Error, Self)> {
        let pass = Command::Pass(password);
        let result = self.conn.exec(|c| {
            // A password that cannot be sent must not leave the server expecting one.
            pass.to_bytes()?;
            c.command(&Command::User(user))?;
            c.command(&pass)
        });
        self.logged_in(result)
    }

    /// APOP with the greeting's timestamp (RFC 1939 §7). The timestamp is
    /// checked again here: see [`proto::is_valid_apop_timestamp`].
    pub fn apop(
        mut self,
        user: &str,
        password: &str,
        timestamp: &str,
    ) -> Result<Session<S>, (Error, Self)> {
        if !proto::is_valid_apop_timestamp(timestamp) {
            return Err((Error::BadApopTimestamp, self));
        }
        let digest = proto::apop_digest(timestamp, password);
        let result = self.conn.exec(|c| {
            c.command(&Command::Apop {
                user,
                digest: &digest,
            })
        });
        self.logged_in(result)
    }

    /// AUTH (RFC 5034). `respond` gets each challenge as base64 text and
    /// returns the base64 answer, or `None` to cancel (the server's `-ERR` is
    /// then the error). Challenges and answers are never logged.
    pub fn auth<F>(
        mut self,
        mechanism: &str,
        initial: Option<&str>,
        mut respond: F,
    ) -> Result<Session<S>, (Error, Self)>
    where
        F: FnMut(&str) -> Option<String>,
    {
        let result = self
            .conn
            .exec(|c| sasl(c, mechanism, initial, &mut respond));
        self.logged_in(result)
    }

    /// QUIT without logging in.
    pub fn quit(mut self) -> Result<()> {
        self.conn.exec(|c| c.command(&Command::Quit)).map(drop)
    }

    fn logged_in(self, result: Result<Reply>) -> Result<Session<S>, (Error, Self)> {
        match result {
            Ok(_) => {
                let mut conn = self.conn;
                // The phase was the login; the session's replies have their own limits.
                conn.phase = None;
                Ok(Session { conn })
            }
            Err(e) => Err((e, self)),
        }
    }
}

/// CAPA, in either state. A `-ERR` means the server has no CAPA: empty capabilities.
pub(super) fn capa<S: Read + Write>(c: &mut Conn<S>) -> Result<Capabilities> {
    match c.command(&Command::Capa) {
        Ok(_) => {}
        // RFC 2449 §5: a server without CAPA says -ERR; it simply offers nothing.
        Err(Error::Server { .. }) => return Ok(Capabilities::default()),
        Err(e) => return Err(e),
    }
    let max = c.limits.entries.min(MAX_CAPA_LINES);
    let lines = c.read_listing("CAPA", max, |l| Ok(String::from_utf8_lossy(l).into_owned()))?;
    Ok(proto::parse_capa(lines))
}

/// The AUTH exchange (RFC 5034 §4): challenges answered by `respond` until
/// the server's status line; a refused or unsendable answer cancels with `*`.
fn sasl<S: Read + Write>(
    c: &mut Conn<S>,
    mechanism: &str,
    initial: Option<&str>,
    respond: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<Reply> {
    c.send(&Command::Auth { mechanism, initial })?;
    let mut rounds = 0;
    let mut cancelled = false;
    // An answer we refused to send; reported once the server has ended the exchange.
    let mut bad_answer = None;
    loop {
        c.begin_response("AUTH");
        let line = c.read_line()?;
        let Some(challenge) = proto::sasl_challenge(&line) else {
            trace!("S: {}", line.escape_ascii());
            let reply =
                proto::parse_status(&line).map_err(|m| Error::malformed("AUTH", m, &line))?;
            return match (reply.ok, cancelled) {
                (true, false) => Ok(reply),
                (true, true) => Err(Error::Protocol(
                    "AUTH: server accepted a cancelled exchange".into(),
                )),
                (false, _) => Err(bad_answer.unwrap_or(Error::Server {
                    command: "AUTH",
                    reply,
                })),
            };
        };
        trace!("S: + <redacted>");
        if cancelled {
            return Err(Error::Protocol(
                "AUTH: server challenged again after the exchange was cancelled".into(),
            ));
        }
        rounds += 1;
        if rounds > MAX_SASL_ROUNDS {
            return Err(Error::Protocol(format!(
                "AUTH: server still challenging after {MAX_SASL_ROUNDS} rounds"
            )));
        }
        let challenge = String::from_utf8_lossy(challenge);
        let sent = match respond(&challenge) {
            Some(answer) => match c.send(&Command::SaslResponse(&answer)) {
                Ok(()) => true,
                Err(e @ Error::InvalidArgument(_)) => {
                    bad_answer = Some(e);
                    false
                }
                Err(e) => return Err(e),
            },
            None => false,
        };
        if !sent {
            // Cancelling keeps the connection in step, unlike walking away.
            cancelled = true;
            c.send(&Command::SaslResponse("*"))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::pop3::mock::{client_with, mock, sent, GREETING, LOGIN_OK};

    use super::*;

    #[test]
    fn capa_err_means_no_capabilities() {
        let (mut client, log) = client_with(b"-ERR unknown command\r\n+OK bye\r\n", false);
        assert_eq!(client.capa().unwrap(), Capabilities::default());
        client.quit().unwrap();
        assert_eq!(sent(&log), "CAPA\r\nQUIT\r\n");
    }

    #[test]
    fn capa_before_login() {
        let script = b"+OK Capability list follows\r\nUSER\r\nSTLS\r\nSASL PLAIN\r\n..odd\r\n.\r\n";
        for one_byte in [false, true] {
            let (mut client, log) = client_with(script, one_byte);
            let caps = client.capa().unwrap();
            assert!(caps.user && caps.stls && caps.has_sasl("PLAIN"));
            assert_eq!(caps.raw, ["USER", "STLS", "SASL PLAIN", ".odd"]);
            assert_eq!(sent(&log), "CAPA\r\n");
        }
        for cut in 0..script.len() {
            let (mut client, _) = client_with(&script[..cut], false);
            assert!(
                matches!(client.capa(), Err(Error::ConnectionLost)),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn greeting() {
        for one_byte in [false, true] {
            let (_, greeting) = Client::connect(mock(&[GREETING], one_byte)).unwrap();
            assert_eq!(
                greeting.text,
                "POP3 server ready <1896.697170952@dbc.mtview.ca.us>"
            );
            assert_eq!(
                greeting.apop_timestamp.as_deref(),
                Some("<1896.697170952@dbc.mtview.ca.us>")
            );
        }
        let (_, greeting) = Client::connect(mock(&[b"+OK ready <a b@c>\r\n"], false)).unwrap();
        assert_eq!(greeting.apop_timestamp, None);

        match Client::connect(mock(&[b"-ERR [SYS/TEMP] overloaded\r\n"], false)) {
            Err(e @ Error::Server { .. }) => {
                assert!(e.is_transient());
                assert_eq!(
                    e.to_string(),
                    "server refused connection [SYS/TEMP]: overloaded"
                );
            }
            other => panic!("{other:?}"),
        }
        for cut in 0..GREETING.len() {
            let result = Client::connect(mock(&[&GREETING[..cut]], false));
            assert!(matches!(result, Err(Error::ConnectionLost)), "cut {cut}");
        }
        assert!(matches!(
            Client::connect(mock(&[b"* OK IMAP4 ready\r\n"], false)),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn user_pass() {
        for one_byte in [false, true] {
            let (client, log) = client_with(LOGIN_OK, one_byte);
            client.user_pass("mrose", "tanstaaf").unwrap();
            assert_eq!(sent(&log), "USER mrose\r\nPASS tanstaaf\r\n");
        }
        for cut in 0..LOGIN_OK.len() {
            let (client, _) = client_with(&LOGIN_OK[..cut], false);
            let (err, _) = client.user_pass("mrose", "tanstaaf").unwrap_err();
            assert!(matches!(err, Error::ConnectionLost), "cut {cut}");
        }
    }

    #[test]
    fn refused_user_returns_the_client() {
        let (client, log) = client_with(b"-ERR no such mailbox\r\n+OK bye\r\n", false);
        let (err, client) = client.user_pass("nobody", "x").unwrap_err();
        assert!(matches!(
            err,
            Error::Server {
                command: "USER",
                ..
            }
        ));
        assert!(err.is_auth_failure() && !err.is_transient());
        client.quit().unwrap();
        assert_eq!(sent(&log), "USER nobody\r\nQUIT\r\n");
    }

    #[test]
    fn refused_password() {
        let (client, _) = client_with(b"+OK\r\n-ERR [AUTH] invalid login\r\n", false);
        let (err, _) = client.user_pass("mrose", "wrong").unwrap_err();
        assert!(matches!(
            err,
            Error::Server {
                command: "PASS",
                ..
            }
        ));
        assert!(err.is_auth_failure() && !err.is_transient());

        let (client, _) = client_with(b"+OK\r\n-ERR [IN-USE] maildrop locked\r\n", false);
        let (err, _) = client.user_pass("mrose", "right").unwrap_err();
        assert!(err.is_transient() && !err.is_auth_failure());

        let (client, _) = client_with(b"+OK\r\n-ERR [SYS/PERM] mailbox corrupt\r\n", false);
        let (err, _) = client.user_pass("mrose", "right").unwrap_err();
        assert!(!err.is_transient() && !err.is_auth_failure());
    }

    #[test]
    fn injection_is_rejected_before_anything_is_sent() {
        let (client, log) = client_with(LOGIN_OK, false);
        let (err, client) = client.user_pass("bob\r\nDELE 1", "p").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        let (err, _) = client.user_pass("bob", "p\r\nDELE 1").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        assert_eq!(sent(&log), "");
    }

    #[test]
    fn apop() {
        let stamp = "<1896.697170952@dbc.mtview.ca.us>";
        for one_byte in [false, true] {
            let (client, log) = client_with(b"+OK maildrop has 1 message\r\n", one_byte);
            client.apop("mrose", "tanstaaf", stamp).unwrap();
            assert_eq!(
                sent(&log),
                "APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"
            );
        }
        let (client, _) = client_with(b"-ERR permission denied\r\n", false);
        let (err, _) = client.apop("mrose", "x", stamp).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Server {
                    command: "APOP",
                    ..
                }
            ) && err.is_auth_failure()
        );

        let (client, _) = client_with(b"+OK", false);
        let (err, _) = client.apop("mrose", "x", stamp).unwrap_err();
        assert!(matches!(err, Error::ConnectionLost));

        let (client, log) = client_with(b"+OK\r\n", false);
        let (err, _) = client.apop("mrose", "x", "<no-at-sign>").unwrap_err();
        assert!(matches!(err, Error::BadApopTimestamp));
        assert_eq!(sent(&log), "");
    }

    #[test]
    fn auth_with_initial_response() {
        let (client, log) = client_with(b"+OK\r\n", false);
        client
            .auth("PLAIN", Some("AHUAcA=="), |_| {
                panic!("no challenge expected")
            })
            .unwrap();
        assert_eq!(sent(&log), "AUTH PLAIN AHUAcA==\r\n");
    }

    #[test]
    fn auth_challenges() {
        let script = b"+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n+OK welcome\r\n";
        for one_byte in [false, true] {
            let (client, log) = client_with(script, one_byte);
            let mut seen = Vec::new();
            client
                .auth("LOGIN", None, |challenge| {
                    seen.push(challenge.to_owned());
                    Some(if seen.len() == 1 { "dQ==" } else { "cA==" }.into())
                })
                .unwrap();
            assert_eq!(seen, ["VXNlcm5hbWU6", "UGFzc3dvcmQ6"]);
            assert_eq!(sent(&log), "AUTH LOGIN\r\ndQ==\r\ncA==\r\n");
        }
        for cut in 0..script.len() {
            let (client, _) = client_with(&script[..cut], false);
            let (err, _) = client
                .auth("LOGIN", None, |_| Some("eA==".into()))
                .unwrap_err();
            assert!(matches!(err, Error::ConnectionLost), "cut {cut}");
        }
    }

    #[test]
    fn auth_cancel_and_refusal() {
        let (client, log) = client_with(b"+ Y2hhbGxlbmdl\r\n-ERR [AUTH] cancelled\r\n", false);
        let (err, _) = client.auth("CRAM-MD5", None, |_| None).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Server {
                    command: "AUTH",
                    ..
                }
            ) && err.is_auth_failure()
        );
        assert_eq!(sent(&log), "AUTH CRAM-MD5\r\n*\r\n");

        let (client, _) = client_with(b"-ERR unknown mechanism\r\n", false);
        let (err, _) = client
            .auth("XOAUTH2", Some("dG9rZW4="), |_| None)
            .unwrap_err();
        assert!(matches!(
            err,
            Error::Server {
                command: "AUTH",
                ..
            }
        ));

        let (client, log) = client_with(b"+ eA==\r\n-ERR cancelled\r\n+OK bye\r\n", false);
        let (err, client) = client
            .auth("LOGIN", None, |_| Some("a\r\nDELE 1".into()))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        client.quit().unwrap();
        assert_eq!(sent(&log), "AUTH LOGIN\r\n*\r\nQUIT\r\n");

        let (client, _) = client_with(b"+ eA==\r\n+ eA==\r\n", false);
        let (err, _) = client.auth("LOGIN", None, |_| None).unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err:?}");

        let endless = b"+ eA==\r\n".repeat(MAX_SASL_ROUNDS + 1);
        let (client, log) = client_with(&endless, false);
        let (err, client) = client
            .auth("LOGIN", None, |_| Some("eQ==".into()))
            .unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err:?}");
        assert_eq!(sent(&log).matches("eQ==").count(), MAX_SASL_ROUNDS);
        assert!(matches!(client.quit(), Err(Error::Unusable)));
    }

    #[test]
    fn stls_hands_back_the_stream() {
        let (client, log) = client_with(b"+OK begin TLS\r\n", false);
        let stream = client.stls().unwrap();
        assert_eq!(sent(&log), "STLS\r\n");

        // With 1-byte reads nothing is buffered past the +OK, so the dialogue
        // continues on the upgraded stream (in real life, the TLS stream).
        let (client, log) = client_with(b"+OK begin TLS\r\n+OK\r\nUIDL\r\n.\r\n", true);
        let mut client = Client::from_upgraded(client.stls().unwrap());
        assert!(client.capa().unwrap().uidl);
        assert_eq!(sent(&log), "STLS\r\nCAPA\r\n");
        drop(stream);
    }

    #[test]
    fn stls_rejects_bytes_injected_before_the_handshake() {
        let (client, _) = client_with(b"+OK begin TLS\r\n-ERR injected\r\n", false);
        assert!(matches!(client.stls(), Err(Error::StlsBufferNotEmpty)));

        let (client, _) = client_with(b"-ERR TLS not available\r\n", false);
        assert!(matches!(
            client.stls(),
            Err(Error::Server {
                command: "STLS",
                ..
            })
        ));

        let (client, _) = client_with(b"+OK begin", false);
        assert!(matches!(client.stls(), Err(Error::ConnectionLost)));
    }

    /// Collects log records with the thread that made them, so a test sees only its own.
    struct Capture(std::sync::Mutex<Vec<(std::thread::ThreadId, String)>>);

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            let line = format!("{} {}", record.level(), record.args());
            if let Ok(mut lines) = self.0.lock() {
                lines.push((std::thread::current().id(), line));
            }
        }
        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture(std::sync::Mutex::new(Vec::new()));

    #[test]
    fn logs_never_show_secrets() {
        // Only this test installs a logger, so the `Err` of a second install cannot happen here.
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(log::LevelFilter::Trace);
        let secret = "s3cret-Pa55";
        let stamp = "<1896.697170952@dbc.mtview.ca.us>";
        let script = [
            &b"+OK\r\n-ERR [AUTH] nope\r\n"[..],
            b"-ERR [AUTH] no\r\n",
            b"+ Y2hhbA==\r\n+OK\r\n",
            b"+OK\r\nBODY-TEXT\r\n.\r\n",
        ]
        .concat();
        let (client, _) = client_with(&script, false);
        let (_, client) = client.user_pass("mrose", secret).unwrap_err();
        let (_, client) = client.apop("mrose", secret, stamp).unwrap_err();
        let mut session = client
            .auth("PLAIN", Some("c2VjcmV0"), |_| Some("cmVzcG9uc2U=".into()))
            .unwrap();
        session.retr(1, &mut Vec::new(), 100).unwrap();

        let me = std::thread::current().id();
        let lines: Vec<String> = CAPTURE
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(thread, _)| *thread == me)
            .map(|(_, line)| line.clone())
            .collect();
        for expected in [
            "TRACE C: USER mrose",
            "TRACE C: PASS <redacted>",
            "TRACE S: -ERR [AUTH] nope",
            "TRACE C: APOP mrose <redacted>",
            "TRACE C: AUTH PLAIN <redacted>",
            "TRACE S: + <redacted>",
            "TRACE C: <redacted>",
            "TRACE C: RETR 1",
            "TRACE S: <11 bytes>",
        ] {
            assert!(
                lines.iter().any(|l| l == expected),
                "{expected} not in {lines:#?}"
            );
        }
        let digest = proto::apop_digest(stamp, secret);
        for line in &lines {
            for leak in [secret, &digest, "c2VjcmV0", "Y2hhbA", "cmVzcG9uc2U", "BODY"] {
                assert!(!line.contains(leak), "{line}");
            }
        }
    }
}
