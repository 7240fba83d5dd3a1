//! SMTP without I/O: reply lines (RFC 5321 section 4.2), EHLO keywords
//! (STARTTLS, RFC 3207; AUTH, RFC 4954), command lines, the choice of a
//! login mechanism, and dot-stuffing (RFC 5321 section 4.5.2). Bytes in,
//! values out; `client` does the talking.

use crate::mechanism::Mechanism;

/// Longest reply line accepted, line end included. RFC 5321 section
/// 4.5.3.1.5 allows 512 octets; servers exceed it with long texts, so 8 KiB
/// tolerates them while a hostile server still cannot make us buffer
/// without bound.
pub const MAX_LINE: usize = 8 * 1024;

/// Most lines in one multi-line reply: an EHLO reply has a dozen; far
/// beyond that is a broken or hostile server.
pub const MAX_REPLY_LINES: usize = 100;

/// Reply text quoted in an error or the log, in characters.
const MAX_QUOTED: usize = 300;

/// A complete reply: its code and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text after the code and separator, one entry a line.
    pub lines: Vec<String>,
}

impl Reply {
    /// 2xx: done.
    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: refused for now; the same command may succeed later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// The reply as one printable line, cut to a readable length.
    pub fn text(&self) -> String {
        let joined = self.lines.join(" / ");
        format!(
            "{} {}",
            self.code,
            crate::text::printable(&joined, MAX_QUOTED)
        )
    }
}

/// Collects the lines of one reply (`250-first`, ..., `250 last`).
#[derive(Debug, Default)]
pub struct ReplyReader {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyReader {
    /// Takes the next line (its CRLF or LF already removed); returns the
    /// reply once its last line is in, or what is wrong with the line.
    pub fn push(&mut self, line: &[u8]) -> Result<Option<Reply>, &'static str> {
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err("reply line does not start with a three-digit code");
        }
        let code = u16::from(line[0] - b'0') * 100
            + u16::from(line[1] - b'0') * 10
            + u16::from(line[2] - b'0');
        if !(200..600).contains(&code) {
            return Err("reply code outside 200-599");
        }
        if self.code.is_some_and(|c| c != code) {
            return Err("reply lines disagree on the code");
        }
        let more = match line.get(3) {
            None | Some(b' ') => false,
            Some(b'-') => true,
            Some(_) => return Err("reply code not followed by a space or '-'"),
        };
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err("reply has too many lines");
        }
        self.code = Some(code);
        let text = line.get(4..).unwrap_or_default();
        self.lines.push(String::from_utf8_lossy(text).into_owned());
        if more {
            return Ok(None);
        }
        Ok(Some(Reply {
            code,
            lines: std::mem::take(&mut self.lines),
        }))
    }
}

/// What an EHLO reply says the server offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ehlo {
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// SASL mechanisms after `AUTH` (or the old `AUTH=`), uppercase.
    pub auth: Vec<String>,
    /// The keyword lines, for `--probe`.
    pub keywords: Vec<String>,
}

impl Ehlo {
    /// The extensions listed in an EHLO reply (its first line is the
    /// server's name and greeting, not an extension).
    pub fn parse(reply: &Reply) -> Ehlo {
        let mut out = Ehlo::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(first) = words.next() else { continue };
            out.keywords
                .push(crate::text::printable(line.trim(), MAX_QUOTED));
            let keyword = first.to_ascii_uppercase();
            if keyword == "STARTTLS" {
                out.starttls = true;
            } else if let Some(rest) = keyword.strip_prefix("AUTH") {
                let inline = rest.strip_prefix('=').filter(|r| !r.is_empty());
                if rest.is_empty() || inline.is_some() {
                    for m in inline
                        .into_iter()
                        .map(str::to_string)
                        .chain(words.map(str::to_ascii_uppercase))
                    {
                        if !out.auth.contains(&m) {
                            out.auth.push(m);
                        }
                    }
                }
            }
        }
        out
    }
}

/// The mechanisms an SMTP login may use, best first: SCRAM also makes the
/// server prove it knows the password; PLAIN and LOGIN are what nearly
/// every submission server offers inside TLS; CRAM-MD5 last (README,
/// "Logging in", for why digests add nothing inside TLS).
pub const SMTP_MECHANISMS: [Mechanism; 5] = [
    Mechanism::ScramSha256,
    Mechanism::ScramSha1,
    Mechanism::Plain,
    Mechanism::Login,
    Mechanism::CramMd5,
];

/// The best mechanism of [`SMTP_MECHANISMS`] the server offers.
pub fn choose_mechanism(offered: &[String]) -> Option<Mechanism> {
    SMTP_MECHANISMS.into_iter().find(|m| {
        m.sasl_name()
            .is_some_and(|n| offered.iter().any(|o| o.eq_ignore_ascii_case(n)))
    })
}

/// A command line with its CRLF; `None` when an argument could smuggle in
/// another command (CR, LF or NUL).
pub fn command(verb: &str, arg: Option<&str>) -> Option<Vec<u8>> {
    let mut line = verb.as_bytes().to_vec();
    if let Some(a) = arg {
        if a.contains(['\r', '\n', '\0']) {
            return None;
        }
        line.push(b' ');
        line.extend_from_slice(a.as_bytes());
    }
    line.extend_from_slice(b"\r\n");
    Some(line)
}

/// Whether `addr` can go into `RCPT TO:<...>` as it is: an ASCII
/// `local@domain` without spaces, brackets or controls (RFC 5321 section
/// 4.1.2, without source routes or quoted local parts with spaces).
pub fn is_plain_address(addr: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'(' | b')' | b','))
    };
    match addr.rsplit_once('@') {
        Some((local, domain)) => ok(local) && ok(domain) && !local.contains('@'),
        None => false,
    }
}

/// The message as DATA sends it, before the final `.` line: every line end
/// CRLF (a bare LF or CR becomes CRLF), a `.` doubled at the start of a
/// line, and a CRLF at the end.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 3);
    let mut line_start = true;
    let mut i = 0;
    while i < message.len() {
        let b = message[i];
        if line_start && b == b'.' {
            out.push(b'.');
        }
        match b {
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                if b == b'\r' && message.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                line_start = true;
            }
            _ => {
                out.push(b);
                line_start = false;
            }
        }
        i += 1;
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(lines: &[&[u8]]) -> Result<Reply, &'static str> {
        let mut r = ReplyReader::default();
        for (i, l) in lines.iter().enumerate() {
            if let Some(reply) = r.push(l)? {
                assert_eq!(i + 1, lines.len(), "reply ended early");
                return Ok(reply);
            }
        }
        Err("no last line")
    }

    #[test]
    fn replies() {
        let r = read(&[
            b"250-mail.example.com hello",
            b"250-STARTTLS",
            b"250 AUTH PLAIN",
        ])
        .unwrap();
        assert_eq!(r.code, 250);
        assert!(r.is_ok() && !r.is_transient());
        assert_eq!(
            r.lines,
            ["mail.example.com hello", "STARTTLS", "AUTH PLAIN"]
        );
        let r = read(&[b"451 4.3.0 try later"]).unwrap();
        assert!(r.is_transient());
        assert_eq!(r.text(), "451 4.3.0 try later");
        // A bare code is a complete reply.
        assert_eq!(read(&[b"354"]).unwrap().lines, [""]);
        assert_eq!(read(&[b"220 a\x1bb"]).unwrap().text(), "220 a?b");
        for bad in [&b"25"[..], b"2x0 x", b"250x", b"999 x", b"100 x"] {
            assert!(read(&[bad]).is_err(), "{bad:?}");
        }
        assert_eq!(
            read(&[b"250-a", b"251 b"]),
            Err("reply lines disagree on the code")
        );
        let many: Vec<&[u8]> = std::iter::repeat_n(&b"250-x"[..], MAX_REPLY_LINES + 1).collect();
        assert_eq!(read(&many), Err("reply has too many lines"));
    }

    #[test]
    fn ehlo_keywords() {
        let r = read(&[
            b"250-smtp.example.com",
            b"250-PIPELINING",
            b"250-SIZE 10240000",
            b"250-starttls",
            b"250-AUTH=LOGIN",
            b"250-AUTH plain login SCRAM-SHA-256",
            b"250 8BITMIME",
        ])
        .unwrap();
        let e = Ehlo::parse(&r);
        assert!(e.starttls);
        assert_eq!(e.auth, ["LOGIN", "PLAIN", "SCRAM-SHA-256"]);
        assert_eq!(e.keywords.len(), 6);
        assert_eq!(choose_mechanism(&e.auth), Some(Mechanism::ScramSha256));
        assert_eq!(
            choose_mechanism(&["LOGIN".into(), "PLAIN".into()]),
            Some(Mechanism::Plain)
        );
        assert_eq!(choose_mechanism(&["XOAUTH2".into(), "GSSAPI".into()]), None);
        // The greeting line is not an extension, whatever it says.
        let e = Ehlo::parse(&read(&[b"250 STARTTLS.example.com"]).unwrap());
        assert!(!e.starttls && e.keywords.is_empty());
    }

    #[test]
    fn commands_and_addresses() {
        assert_eq!(command("QUIT", None).unwrap(), b"QUIT\r\n");
        assert_eq!(
            command("RCPT", Some("TO:<a@b.example>")).unwrap(),
            b"RCPT TO:<a@b.example>\r\n"
        );
        assert_eq!(command("RCPT", Some("TO:<a@b>\r\nDATA")), None);
        assert_eq!(command("EHLO", Some("x\0")), None);
        for good in ["a@b", "first.last+tag@sub.example.com", "\"q\"@x"] {
            assert!(is_plain_address(good), "{good}");
        }
        for bad in [
            "", "a", "@b", "a@", "a b@c", "a@b>", "<a@b>", "ä@b", "a@b@c", "a@b,c@d",
        ] {
            assert!(!is_plain_address(bad), "{bad}");
        }
    }

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n..c\r\n"), b"a\r\n..b\r\n...c\r\n");
        assert_eq!(dot_stuff(b".\r\n"), b"..\r\n");
        assert_eq!(dot_stuff(b"a\nb\rc"), b"a\r\nb\r\nc\r\n");
        assert_eq!(dot_stuff(b"x.\r\n. \n"), b"x.\r\n.. \r\n");
        assert_eq!(dot_stuff(b""), b"");
        assert_eq!(dot_stuff(b"\r\n"), b"\r\n");
        // Nothing in the stuffed message can end DATA early.
        let stuffed = dot_stuff(b"a\n.\nb\r\n.\r\n");
        assert!(!stuffed.windows(5).any(|w| w == b"\r\n.\r\n"));
    }
}
