//! Pure POP3 parsing, no I/O: status lines (RFC 1939 §3) with response codes
//! (RFC 2449 §8, RFC 3206), STAT/LIST/UIDL entries, CAPA lines (RFC 2449 §6),
//! the APOP timestamp and digest (RFC 1939 §7), and dot-unstuffing of
//! multi-line bodies.
//!
//! Everything here takes bytes the server chose. Nothing panics on them: a
//! line that does not parse is a [`Malformed`], which the caller turns into a
//! protocol error naming the command.

use std::fmt;
use std::io::{self, Write};

use md5::{Digest, Md5};

/// RFC 1939 §7: a unique-id is 1 to 70 octets.
const MAX_UID_LEN: usize = 70;

/// An invalid unique-id is kept only for log messages; this much of it is
/// plenty to recognise it and keeps a hostile listing's memory bounded.
const MAX_INVALID_UID_KEPT: usize = 80;

/// What was wrong with a line the server sent; the caller adds the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// An extended response code (RFC 2449 §8, RFC 3206), e.g. `-ERR [IN-USE] ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespCode {
    /// `[IN-USE]`: another session holds the maildrop lock; try again later.
    InUse,
    /// `[LOGIN-DELAY]`: logged in too soon after the last login.
    LoginDelay,
    /// `[SYS/TEMP]`: a temporary problem on the server, not our credentials.
    SysTemp,
    /// `[SYS/PERM]`: a lasting problem on the server, not our credentials.
    SysPerm,
    /// `[AUTH]`: the credentials are wrong.
    Auth,
    /// Any other code, as sent (upper-cased).
    Other(String),
}

impl RespCode {
    fn parse(code: &str) -> Self {
        let code = code.to_ascii_uppercase();
        match code.as_str() {
            "IN-USE" => Self::InUse,
            "LOGIN-DELAY" => Self::LoginDelay,
            "SYS/TEMP" => Self::SysTemp,
            "SYS/PERM" => Self::SysPerm,
            "AUTH" => Self::Auth,
            _ => Self::Other(code),
        }
    }

    /// The code as it appears between the brackets.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InUse => "IN-USE",
            Self::LoginDelay => "LOGIN-DELAY",
            Self::SysTemp => "SYS/TEMP",
            Self::SysPerm => "SYS/PERM",
            Self::Auth => "AUTH",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for RespCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed status line. `text` is what follows the indicator and any
/// response code, decoded lossily; it is untrusted (see [`crate::text::printable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// `+OK` rather than `-ERR`.
    pub ok: bool,
    /// The bracketed response code, if any.
    pub code: Option<RespCode>,
    /// The rest of the line.
    pub text: String,
}

/// Strips one trailing LF and then one CR, so CRLF and lone-LF lines look alike.
pub fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses `+OK text` / `-ERR [CODE/SUB] text` (with or without the line end).
///
/// The indicator is matched case-insensitively and may stand alone; anything
/// else, including `+OKAY`, is malformed. A bracket that is not a valid
/// RFC 2449 code (say `[see docs]`) stays part of the text.
pub fn parse_status(line: &[u8]) -> Result<Reply, Malformed> {
    let line = trim_eol(line);
    let (ok, rest) = if starts_with_ignore_case(line, b"+OK") {
        (true, &line[3..])
    } else if starts_with_ignore_case(line, b"-ERR") {
        (false, &line[4..])
    } else {
        return Err(Malformed("status line is neither +OK nor -ERR"));
    };
    let rest = match rest {
        [] => rest,
        [b' ' | b'\t', tail @ ..] => tail,
        _ => return Err(Malformed("status indicator runs into the text")),
    };
    let text = String::from_utf8_lossy(rest);
    let (code, text) = split_resp_code(&text);
    Ok(Reply {
        ok,
        code,
        text: text.to_owned(),
    })
}

fn starts_with_ignore_case(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// RFC 2449 §8 grammar: `"[" resp-level *("/" resp-level) "]"`, where a level
/// is printable ASCII without spaces or brackets.
fn split_resp_code(text: &str) -> (Option<RespCode>, &str) {
    let Some(inner) = text.strip_prefix('[') else {
        return (None, text);
    };
    let Some(end) = inner.find(']') else {
        return (None, text);
    };
    let code = &inner[..end];
    let well_formed = !code.is_empty()
        && code
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'[');
    if !well_formed {
        return (None, text);
    }
    (Some(RespCode::parse(code)), inner[end + 1..].trim_start())
}

/// A SASL challenge line (RFC 5034 §4): `+` alone or `+ base64`. `+OK` is not one.
pub fn sasl_challenge(line: &[u8]) -> Option<&[u8]> {
    match trim_eol(line) {
        [b'+'] => Some(&[]),
        [b'+', b' ', rest @ ..] => Some(rest),
        _ => None,
    }
}

/// Digits only: `str::parse` would also take a leading `+`.
fn number<T: std::str::FromStr>(field: &[u8]) -> Option<T> {
    if field.is_empty() || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn fields(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|b| *b == b' ' || *b == b'\t')
        .filter(|f| !f.is_empty())
}

fn message_number(field: Option<&[u8]>) -> Result<u32, Malformed> {
    match field.and_then(number::<u32>) {
        Some(0) => Err(Malformed("message number 0")),
        Some(n) => Ok(n),
        None => Err(Malformed("missing or bad message number")),
    }
}

/// The `count size` of a `+OK` reply to STAT; anything after them is ignored
/// (RFC 1939 §5 allows it).
pub fn parse_stat(text: &[u8]) -> Result<(u32, u64), Malformed> {
    let mut it = fields(trim_eol(text));
    let count = it
        .next()
        .and_then(number)
        .ok_or(Malformed("bad message count"))?;
    let size = it
        .next()
        .and_then(number)
        .ok_or(Malformed("bad maildrop size"))?;
    Ok((count, size))
}

/// A scan listing `n size`, from LIST's listing or the text of `+OK` to `LIST n`.
pub fn parse_list_entry(line: &[u8]) -> Result<(u32, u64), Malformed> {
    let mut it = fields(trim_eol(line));
    let n = message_number(it.next())?;
    let size = it
        .next()
        .and_then(number)
        .ok_or(Malformed("bad message size"))?;
    Ok((n, size))
}

/// A UIDL unique-id.
///
/// RFC 1939 §7 allows 1–70 octets in 0x21–0x7E. A server that breaks the rule
/// for one message should not hide the rest of the mailbox, so such an entry
/// is kept but marked [`Uid::Invalid`]: the caller skips that message (or
/// handles it without UIDL) instead of failing the whole listing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Uid {
    /// A conforming unique-id, safe to store and compare.
    Valid(String),
    /// The bytes as sent (at most the first 80); for log messages only,
    /// never as a journal key.
    Invalid(Vec<u8>),
}

impl Uid {
    /// Classifies raw unique-id bytes.
    pub fn from_bytes(raw: &[u8]) -> Self {
        let valid = is_valid_uid(raw);
        match std::str::from_utf8(raw) {
            Ok(s) if valid => Self::Valid(s.to_owned()),
            _ => Self::Invalid(raw[..raw.len().min(MAX_INVALID_UID_KEPT)].to_vec()),
        }
    }

    /// The unique-id if it conforms to RFC 1939.
    pub fn as_valid(&self) -> Option<&str> {
        match self {
            Self::Valid(s) => Some(s),
            Self::Invalid(_) => None,
        }
    }
}

/// RFC 1939 section 7: 1 to 70 octets in 0x21..=0x7E.
pub fn is_valid_uid(raw: &[u8]) -> bool {
    (1..=MAX_UID_LEN).contains(&raw.len()) && raw.iter().all(|b| (0x21..=0x7e).contains(b))
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Valid(s) => f.write_str(s),
            Self::Invalid(raw) => write!(f, "<invalid uid \"{}\">", raw.escape_ascii()),
        }
    }
}

/// A unique-id listing `n uid`, from UIDL's listing or the text of `+OK` to
/// `UIDL n`. Only a bad message number is [`Malformed`]; a bad or missing
/// unique-id gives [`Uid::Invalid`]. Trailing blanks are dropped.
pub fn parse_uidl_entry(line: &[u8]) -> Result<(u32, Uid), Malformed> {
    parse_uidl_entry_raw(line).map(|(n, uid)| (n, Uid::from_bytes(uid)))
}

/// [`parse_uidl_entry`] without classifying the unique-id: its bytes as
/// sent, for [`Uid::from_bytes`] or [`is_valid_uid`].
pub fn parse_uidl_entry_raw(line: &[u8]) -> Result<(u32, &[u8]), Malformed> {
    let line = trim_eol(line).trim_ascii();
    let split = line
        .iter()
        .position(|b| *b == b' ' || *b == b'\t')
        .unwrap_or(line.len());
    let n = message_number(Some(&line[..split]))?;
    Ok((n, line[split..].trim_ascii_start()))
}

/// RFC 2449 §6.7 `EXPIRE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expire {
    /// Messages are never removed by the server.
    Never,
    /// Messages may be removed this many days after retrieval.
    Days(u64),
}

/// What the server said in its reply to CAPA (RFC 2449 §6, RFC 3206 §6).
/// Strings are as sent by the server: untrusted, pass them through [`crate::text::printable`] before display.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `TOP`.
    pub top: bool,
    /// `USER`: USER/PASS is accepted.
    pub user: bool,
    /// `UIDL`.
    pub uidl: bool,
    /// `PIPELINING`: commands may be sent without waiting for replies.
    pub pipelining: bool,
    /// `STLS` (RFC 2595).
    pub stls: bool,
    /// `SASL mech...` (RFC 5034), upper-cased.
    pub sasl: Vec<String>,
    /// `RESP-CODES`: -ERR replies carry response codes.
    pub resp_codes: bool,
    /// `AUTH-RESP-CODE` (RFC 3206): authentication failures carry `[AUTH]`/`[SYS/*]`.
    pub auth_resp_code: bool,
    /// `LOGIN-DELAY n`: minimum seconds between logins.
    pub login_delay: Option<u64>,
    /// `EXPIRE`.
    pub expire: Option<Expire>,
    /// `IMPLEMENTATION text`.
    pub implementation: Option<String>,
    /// Every capability line, as sent.
    pub raw: Vec<String>,
}

impl Capabilities {
    /// Whether `SASL` lists `mechanism` (case-insensitive).
    pub fn has_sasl(&self, mechanism: &str) -> bool {
        self.sasl.iter().any(|m| m.eq_ignore_ascii_case(mechanism))
    }

    fn add_line(&mut self, line: &str) {
        self.raw.push(line.to_owned());
        let mut words = line.split_ascii_whitespace();
        let Some(keyword) = words.next() else {
            return;
        };
        match keyword.to_ascii_uppercase().as_str() {
            "TOP" => self.top = true,
            "USER" => self.user = true,
            "UIDL" => self.uidl = true,
            "PIPELINING" => self.pipelining = true,
            "STLS" => self.stls = true,
            "RESP-CODES" => self.resp_codes = true,
            "AUTH-RESP-CODE" => self.auth_resp_code = true,
            "SASL" => self.sasl.extend(words.map(str::to_ascii_uppercase)),
            // `LOGIN-DELAY 900` or, after login, `LOGIN-DELAY 900 USER`.
            "LOGIN-DELAY" => self.login_delay = words.next().and_then(|w| number(w.as_bytes())),
            "EXPIRE" => {
                self.expire = match words.next() {
                    Some(w) if w.eq_ignore_ascii_case("NEVER") => Some(Expire::Never),
                    Some(w) => number(w.as_bytes()).map(Expire::Days),
                    None => None,
                }
            }
            "IMPLEMENTATION" => {
                let text = line.trim_ascii_start()[keyword.len()..].trim();
                self.implementation = Some(text.to_owned());
            }
            _ => {}
        }
    }
}

/// Builds [`Capabilities`] from the lines of a CAPA listing (already unstuffed).
pub fn parse_capa<I, L>(lines: I) -> Capabilities
where
    I: IntoIterator<Item = L>,
    L: AsRef<str>,
{
    let mut caps = Capabilities::default();
    for line in lines {
        caps.add_line(line.as_ref());
    }
    caps
}

/// The APOP timestamp from a greeting, brackets included, if it is a
/// well-formed msg-id (see [`is_valid_apop_timestamp`]). Only the first `<`
/// is considered: a greeting with a malformed one offers no APOP.
pub fn apop_timestamp(greeting: &str) -> Option<&str> {
    let start = greeting.find('<')?;
    let len = greeting[start..].find('>')? + 1;
    let stamp = &greeting[start..start + len];
    is_valid_apop_timestamp(stamp).then_some(stamp)
}

/// Accepts only `<local@domain>`: printable ASCII, exactly one `@`, both
/// sides non-empty, no space or `<`/`>` inside. As mpop does, this makes the
/// CVE-2007-1558 attack (a forged server choosing timestamps to recover the
/// password from APOP digests) harder; APOP stays weak regardless.
pub fn is_valid_apop_timestamp(stamp: &str) -> bool {
    let Some(inner) = stamp.strip_prefix('<').and_then(|s| s.strip_suffix('>')) else {
        return false;
    };
    let printable = inner
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && b != b'<' && b != b'>');
    let mut parts = inner.split('@');
    let shape = matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(local), Some(domain), None) if !local.is_empty() && !domain.is_empty()
    );
    printable && shape
}

/// RFC 1939 §7: lowercase hex MD5 of the timestamp followed by the secret.
pub fn apop_digest(timestamp: &str, secret: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(timestamp.as_bytes());
    md5.update(secret.as_bytes());
    crate::hex::lower(&md5.finalize())
}

/// How far [`Unstuffer::feed`] got in one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the chunk used; anything after them belongs to the next response.
    pub consumed: usize,
    /// The terminating `.` line was seen.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the first byte of a line (the body starts here).
    LineStart,
    /// A `.` opened the line; it is dropped whatever follows.
    Dot,
    /// `.` then CR opened the line; the CR is held until we know it is not `.CRLF`.
    DotCr,
    /// Inside a line.
    Text,
    /// The terminator was seen.
    Done,
}

/// Dot-unstuffing of a multi-line response body (RFC 1939 §3), fed arbitrary
/// chunks. A line starting with `.` loses that `.`; a line that is only `.`
/// ends the body. Line ends are otherwise kept exactly as sent, and a lone-LF
/// `.` line (`\n.\n`, `\n.\r\n`) is accepted as the terminator too.
#[derive(Debug, Clone)]
pub struct Unstuffer {
    state: State,
    written: u64,
}

impl Default for Unstuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl Unstuffer {
    /// Starts at the first byte after the `+OK` line.
    pub fn new() -> Self {
        Self {
            state: State::LineStart,
            written: 0,
        }
    }

    /// Whether the terminator has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes written to sinks so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Unstuffs `chunk` into `sink`. Stops right after the terminator; the
    /// returned `consumed` tells the caller how much of `chunk` was used.
    /// After `done`, further calls consume nothing.
    pub fn feed(&mut self, chunk: &[u8], sink: &mut dyn Write) -> io::Result<Progress> {
        // `start..i` is the run of bytes that pass through unchanged.
        let mut start = 0;
        let mut i = 0;
        while i < chunk.len() {
            match self.state {
                State::Done => break,
                State::Text => match memchr::memchr(b'\n', &chunk[i..]) {
                    Some(lf) => {
                        i += lf + 1;
                        self.state = State::LineStart;
                    }
                    None => i = chunk.len(),
                },
                State::LineStart => {
                    if chunk[i] == b'.' {
                        self.emit(&chunk[start..i], sink)?;
                        start = i + 1;
                        self.state = State::Dot;
                    } else if chunk[i] != b'\n' {
                        self.state = State::Text;
                    }
                    i += 1;
                }
                State::Dot => match chunk[i] {
                    b'\n' => {
                        i += 1;
                        self.state = State::Done;
                    }
                    b'\r' => {
                        i += 1;
                        start = i;
                        self.state = State::DotCr;
                    }
                    // `..` and, tolerantly, an unstuffed `.x`: the dot goes, the rest stays.
                    _ => self.state = State::Text,
                },
                State::DotCr => {
                    if chunk[i] == b'\n' {
                        i += 1;
                        self.state = State::Done;
                    } else {
                        // `.\rX`: not the terminator, so the held CR is data.
                        self.emit(b"\r", sink)?;
                        self.state = State::Text;
                    }
                }
            }
        }
        if self.state != State::Done {
            self.emit(&chunk[start..i], sink)?;
        }
        Ok(Progress {
            consumed: i,
            done: self.state == State::Done,
        })
    }

    fn emit(&mut self, bytes: &[u8], sink: &mut dyn Write) -> io::Result<()> {
        if !bytes.is_empty() {
            sink.write_all(bytes)?;
            self.written += bytes.len() as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(line: &str) -> Reply {
        parse_status(line.as_bytes()).unwrap()
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            status("+OK POP3 server ready\r\n"),
            Reply {
                ok: true,
                code: None,
                text: "POP3 server ready".into()
            }
        );
        assert_eq!(status("+OK\r\n").text, "");
        assert_eq!(status("+ok lower\n").text, "lower");
        assert!(!status("-ERR no such message").ok);
        assert_eq!(status("-ERR\r\n").text, "");
        for bad in ["", "OK", "+OKAY", "-ERROR x", "+ OK", "* OK", "\r\n"] {
            assert!(parse_status(bad.as_bytes()).is_err(), "{bad:?}");
        }
        // Not UTF-8: no panic, lossy text.
        assert_eq!(parse_status(b"-ERR \xff\r\n").unwrap().text, "\u{fffd}");
    }

    #[test]
    fn response_codes() {
        let cases = [
            ("-ERR [IN-USE] locked", Some(RespCode::InUse), "locked"),
            (
                "-ERR [LOGIN-DELAY] wait",
                Some(RespCode::LoginDelay),
                "wait",
            ),
            ("-ERR [SYS/TEMP] busy", Some(RespCode::SysTemp), "busy"),
            ("-ERR [SYS/PERM] gone", Some(RespCode::SysPerm), "gone"),
            (
                "-ERR [AUTH] bad password",
                Some(RespCode::Auth),
                "bad password",
            ),
            ("-ERR [auth]", Some(RespCode::Auth), ""),
            (
                "-ERR [X-FOO/BAR]x",
                Some(RespCode::Other("X-FOO/BAR".into())),
                "x",
            ),
            (
                "+OK [IN-USE] odd but allowed",
                Some(RespCode::InUse),
                "odd but allowed",
            ),
            ("-ERR [see docs] x", None, "[see docs] x"),
            ("-ERR [] x", None, "[] x"),
            ("-ERR [IN-USE no close", None, "[IN-USE no close"),
            ("-ERR [[IN-USE]] x", None, "[[IN-USE]] x"),
            ("-ERR no code [AUTH]", None, "no code [AUTH]"),
        ];
        for (line, code, text) in cases {
            let reply = status(line);
            assert_eq!(reply.code, code, "{line}");
            assert_eq!(reply.text, text, "{line}");
        }
    }

    #[test]
    fn sasl_challenges() {
        assert_eq!(
            sasl_challenge(b"+ VXNlcm5hbWU6\r\n"),
            Some(&b"VXNlcm5hbWU6"[..])
        );
        assert_eq!(sasl_challenge(b"+\r\n"), Some(&b""[..]));
        assert_eq!(sasl_challenge(b"+ \r\n"), Some(&b""[..]));
        assert_eq!(sasl_challenge(b"+OK\r\n"), None);
        assert_eq!(sasl_challenge(b"-ERR\r\n"), None);
    }

    #[test]
    fn stat_and_list() {
        assert_eq!(parse_stat(b"2 320"), Ok((2, 320)));
        assert_eq!(parse_stat(b"0 0 extra words"), Ok((0, 0)));
        for bad in [&b""[..], b"2", b"x 3", b"+2 3", b"2 -3", b"99999999999 1"] {
            assert!(parse_stat(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_list_entry(b"1 120\r\n"), Ok((1, 120)));
        assert_eq!(parse_list_entry(b"  3\t4 more\n"), Ok((3, 4)));
        for bad in [&b"0 120"[..], b"1", b"1 x", b"\xff 1", b""] {
            assert!(parse_list_entry(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uidl_entries() {
        let valid = |s: &str| Uid::Valid(s.into());
        assert_eq!(
            parse_uidl_entry(b"1 whqtswO00WBw418f9t5JxYwZ\r\n"),
            Ok((1, valid("whqtswO00WBw418f9t5JxYwZ")))
        );
        assert_eq!(parse_uidl_entry(b"2 a \r\n"), Ok((2, valid("a"))));
        let seventy = "x".repeat(70);
        assert_eq!(
            parse_uidl_entry(format!("3 {seventy}").as_bytes()),
            Ok((3, valid(&seventy)))
        );
        // Out-of-spec unique-ids are kept, marked, and bounded.
        let long = format!("4 {}", "y".repeat(500));
        let (n, uid) = parse_uidl_entry(long.as_bytes()).unwrap();
        assert_eq!((n, uid.as_valid()), (4, None));
        assert_eq!(uid, Uid::Invalid(vec![b'y'; MAX_INVALID_UID_KEPT]));
        for (line, raw) in [
            (&b"5 has space"[..], &b"has space"[..]),
            (b"6 ctl\x01", b"ctl\x01"),
            (b"7 caf\xc3\xa9", b"caf\xc3\xa9"),
            (b"8", b""),
            (b"9 \r\n", b""),
        ] {
            let (_, uid) = parse_uidl_entry(line).unwrap();
            assert_eq!(uid, Uid::Invalid(raw.to_vec()), "{line:?}");
        }
        assert_eq!(
            Uid::Invalid(b"a\nb".to_vec()).to_string(),
            "<invalid uid \"a\\nb\">"
        );
        for bad in [&b"x abc"[..], b"0 abc", b"", b" "] {
            assert!(parse_uidl_entry(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn capabilities() {
        let caps = parse_capa([
            "TOP",
            "user",
            "UIDL",
            "PIPELINING",
            "STLS",
            "SASL PLAIN login CRAM-MD5",
            "RESP-CODES",
            "AUTH-RESP-CODE",
            "LOGIN-DELAY 900 USER",
            "EXPIRE 31",
            "IMPLEMENTATION  Shlemazle Plotz-v302 ",
            "X-UNKNOWN whatever",
            "",
        ]);
        assert!(caps.top && caps.user && caps.uidl && caps.pipelining && caps.stls);
        assert!(caps.resp_codes && caps.auth_resp_code);
        assert_eq!(caps.sasl, ["PLAIN", "LOGIN", "CRAM-MD5"]);
        assert!(caps.has_sasl("cram-md5") && !caps.has_sasl("XOAUTH2"));
        assert_eq!(caps.login_delay, Some(900));
        assert_eq!(caps.expire, Some(Expire::Days(31)));
        assert_eq!(caps.implementation.as_deref(), Some("Shlemazle Plotz-v302"));
        assert_eq!(caps.raw.len(), 13);

        let caps = parse_capa(["EXPIRE never", "LOGIN-DELAY soon"]);
        assert_eq!(caps.expire, Some(Expire::Never));
        assert_eq!(caps.login_delay, None);
        assert_eq!(parse_capa(Vec::<String>::new()), Capabilities::default());
    }

    #[test]
    fn apop_timestamps() {
        let ok = [
            (
                "POP3 server ready <1896.697170952@dbc.mtview.ca.us>",
                "<1896.697170952@dbc.mtview.ca.us>",
            ),
            ("<a@b>", "<a@b>"),
            ("ready <x.y!z@[127.0.0.1]> more", "<x.y!z@[127.0.0.1]>"),
        ];
        for (greeting, stamp) in ok {
            assert_eq!(apop_timestamp(greeting), Some(stamp), "{greeting}");
        }
        let rejected = [
            "no timestamp",
            "<>",
            "<@>",
            "<a@>",
            "<@b>",
            "<ab>",
            "<a@b@c>",
            "<a b@c>",
            "<a@b c>",
            "<a\t@b>",
            "<a<b@c>",
            "<caf\u{e9}@b>",
            "<unterminated@host",
            "<bad> <a@b>",
        ];
        for greeting in rejected {
            assert_eq!(apop_timestamp(greeting), None, "{greeting}");
        }
    }

    #[test]
    fn apop_digest_matches_rfc1939_example() {
        assert_eq!(
            apop_digest("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
    }

    /// Feeds `wire` in the given chunks; returns the output and the offset just
    /// past the terminator, or `None` if none was seen.
    fn unstuff(wire: &[u8], cuts: &[usize]) -> (Vec<u8>, Option<usize>) {
        let mut u = Unstuffer::new();
        let mut out = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain([&wire.len()]) {
            let p = u.feed(&wire[from..to], &mut out).unwrap();
            assert!(p.consumed <= to - from);
            if p.done {
                assert_eq!(u.written(), out.len() as u64);
                return (out, Some(from + p.consumed));
            }
            assert_eq!(p.consumed, to - from, "consumed all before the terminator");
            from = to;
        }
        (out, None)
    }

    /// Every way of cutting `wire` into two and three chunks, and byte by byte,
    /// gives `expected` and stops right before `rest`.
    fn check_all_splits(body: &[u8], expected: &[u8]) {
        let rest = b"+OK next\r\n";
        let wire = [body, rest].concat();
        let end = body.len();
        let mut splits: Vec<Vec<usize>> = vec![vec![], (1..wire.len()).collect()];
        for a in 0..=wire.len() {
            splits.push(vec![a]);
            for b in a..=wire.len() {
                splits.push(vec![a, b]);
            }
        }
        for cuts in splits {
            let (out, consumed) = unstuff(&wire, &cuts);
            assert_eq!(
                out,
                expected,
                "cuts {cuts:?} of {:?}",
                wire.escape_ascii().to_string()
            );
            assert_eq!(consumed, Some(end), "cuts {cuts:?}");
        }
    }

    #[test]
    fn unstuffs_tricky_message_at_every_split() {
        check_all_splits(
            b"Subject: a.b\r\n..\r\n..x\r\n.y\r\n a . \r\n.\rz\r\n\r\n.\r\n",
            b"Subject: a.b\r\n.\r\n.x\r\ny\r\n a . \r\n\rz\r\n\r\n",
        );
    }

    #[test]
    fn unstuffs_lone_lf_endings_unchanged() {
        check_all_splits(b"a\n..b\nc\r\n.\n", b"a\n.b\nc\r\n");
        check_all_splits(b"a\n.\r\n", b"a\n");
        check_all_splits(b"a\r\n\n.\n", b"a\r\n\n");
    }

    #[test]
    fn empty_message_writes_nothing() {
        check_all_splits(b".\r\n", b"");
        check_all_splits(b".\n", b"");
    }

    #[test]
    fn unterminated_body_is_not_done() {
        for body in [&b"a\r\n.."[..], b"a\r\n.\r", b"a\r\n", b"", b"."] {
            let (out, consumed) = unstuff(body, &[]);
            assert_eq!(consumed, None, "{body:?}");
            assert!(out.len() <= body.len());
        }
        let mut u = Unstuffer::new();
        let mut out = Vec::new();
        assert!(u.feed(b".\r\n", &mut out).unwrap().done);
        let again = u.feed(b"more", &mut out).unwrap();
        assert_eq!((again.consumed, again.done, out.len()), (0, true, 0));
        assert!(u.is_done());
    }

    #[test]
    fn sink_errors_surface() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = Unstuffer::new().feed(b"x\r\n.\r\n", &mut Full).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }
}
