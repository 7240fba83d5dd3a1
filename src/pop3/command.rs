//! POP3 commands (RFC 1939 §§4–7, CAPA from RFC 2449, STLS from RFC 2595,
//! AUTH from RFC 5034) and their wire form.
//!
//! Every argument is checked when the command is rendered: a CR, LF or NUL
//! would let a value end the command early and smuggle in another
//! (`USER bob\r\nDELE 1`), so such a command is never sent.

use std::fmt;

use super::{Error, MAX_LINE};
use crate::text::printable;

/// RFC 2449 §4: "Commands ... may be up to 255 octets, including the
/// terminating CRLF". RFC 5034 §4 applies it to `AUTH` with an initial response.
pub const MAX_COMMAND_LEN: usize = 255;

/// SASL continuation lines are not commands, and XOAUTH2 or GSSAPI tokens
/// routinely pass 255 octets; they get the same bound we accept from servers.
pub const MAX_SASL_RESPONSE_LEN: usize = MAX_LINE;

/// RFC 4422 §3.1: a mechanism name is 1 to 20 characters.
const MAX_MECHANISM_LEN: usize = 20;

/// How much of a user name or mechanism to show in a log line.
const MAX_LOGGED_ARG: usize = 100;

/// One POP3 command. Arguments are borrowed so secrets are not copied around.
///
/// `Debug` and `Display` show the [`redacted`](Command::redacted) form; only
/// [`to_bytes`](Command::to_bytes) contains secrets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// `USER name`.
    User(&'a str),
    /// `PASS secret`.
    Pass(&'a str),
    /// `APOP name digest`; the digest from [`apop_digest`](super::proto::apop_digest).
    Apop {
        /// Mailbox name; may not contain spaces (the digest follows one).
        user: &'a str,
        /// 32 lowercase hex digits.
        digest: &'a str,
    },
    /// `STAT`.
    Stat,
    /// `LIST` or `LIST n`.
    List(Option<u32>),
    /// `UIDL` or `UIDL n`.
    Uidl(Option<u32>),
    /// `RETR n`.
    Retr(u32),
    /// `TOP n lines`.
    Top(u32, u32),
    /// `DELE n`.
    Dele(u32),
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `CAPA`.
    Capa,
    /// `STLS`.
    Stls,
    /// `AUTH mechanism [initial-response]`; an empty initial response is `=`.
    Auth {
        /// SASL mechanism name.
        mechanism: &'a str,
        /// Base64 initial response.
        initial: Option<&'a str>,
    },
    /// A base64 reply to a SASL challenge, or `*` to cancel.
    SaslResponse(&'a str),
}

fn no_ctl(arg: &str, err: &'static str) -> Result<(), Error> {
    if arg.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(Error::InvalidArgument(err));
    }
    Ok(())
}

fn msg_number(n: u32) -> Result<u32, Error> {
    if n == 0 {
        return Err(Error::InvalidArgument("message numbers start at 1"));
    }
    Ok(n)
}

impl Command<'_> {
    /// The command verb, as used in errors.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::User(_) => "USER",
            Self::Pass(_) => "PASS",
            Self::Apop { .. } => "APOP",
            Self::Stat => "STAT",
            Self::List(_) => "LIST",
            Self::Uidl(_) => "UIDL",
            Self::Retr(_) => "RETR",
            Self::Top(..) => "TOP",
            Self::Dele(_) => "DELE",
            Self::Rset => "RSET",
            Self::Noop => "NOOP",
            Self::Quit => "QUIT",
            Self::Capa => "CAPA",
            Self::Stls => "STLS",
            Self::Auth { .. } | Self::SaslResponse(_) => "AUTH",
        }
    }

    /// Checks every argument, as [`Command::to_bytes`] would, building
    /// nothing for the commands a drain sends by the thousand.
    pub fn check(&self) -> Result<(), Error> {
        match *self {
            Self::Retr(n) | Self::Dele(n) => msg_number(n).map(drop),
            _ => self.to_bytes().map(drop),
        }
    }

    /// Appends the command line with CRLF to `out`, after checking every
    /// argument; nothing is appended on an error. RETR and DELE go straight
    /// into `out`, with no line of their own.
    pub fn write_to(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        match *self {
            Self::Retr(n) | Self::Dele(n) => {
                use std::io::Write as _;
                let n = msg_number(n)?;
                // Writing to a Vec cannot fail.
                let _ = write!(out, "{} {n}\r\n", self.verb());
            }
            _ => out.extend(self.to_bytes()?),
        }
        Ok(())
    }

    /// The command line with CRLF, after checking every argument.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let line = match *self {
            Self::User(user) => {
                no_ctl(user, "user name contains CR, LF or NUL")?;
                if user.is_empty() {
                    return Err(Error::InvalidArgument("user name is empty"));
                }
                if user.starts_with(' ') || user.ends_with(' ') {
                    return Err(Error::InvalidArgument(
                        "user name has a leading or trailing space",
                    ));
                }
                format!("USER {user}")
            }
            Self::Pass(secret) => {
                no_ctl(secret, "password contains CR, LF or NUL")?;
                format!("PASS {secret}")
            }
            Self::Apop { user, digest } => {
                no_ctl(user, "user name contains CR, LF or NUL")?;
                if user.is_empty() || user.contains([' ', '\t']) {
                    return Err(Error::InvalidArgument(
                        "APOP user name is empty or contains a space",
                    ));
                }
                if digest.len() != 32 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Error::InvalidArgument("APOP digest is not 32 hex digits"));
                }
                format!("APOP {user} {digest}")
            }
            Self::Stat => "STAT".into(),
            Self::List(None) => "LIST".into(),
            Self::List(Some(n)) => format!("LIST {}", msg_number(n)?),
            Self::Uidl(None) => "UIDL".into(),
            Self::Uidl(Some(n)) => format!("UIDL {}", msg_number(n)?),
            Self::Retr(n) => format!("RETR {}", msg_number(n)?),
            Self::Top(n, lines) => format!("TOP {} {lines}", msg_number(n)?),
            Self::Dele(n) => format!("DELE {}", msg_number(n)?),
            Self::Rset => "RSET".into(),
            Self::Noop => "NOOP".into(),
            Self::Quit => "QUIT".into(),
            Self::Capa => "CAPA".into(),
            Self::Stls => "STLS".into(),
            Self::Auth { mechanism, initial } => {
                let name_ok = (1..=MAX_MECHANISM_LEN).contains(&mechanism.len())
                    && mechanism
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !name_ok {
                    return Err(Error::InvalidArgument("bad SASL mechanism name"));
                }
                match initial {
                    None => format!("AUTH {mechanism}"),
                    Some(resp) => {
                        no_ctl(resp, "SASL initial response contains CR, LF or NUL")?;
                        if resp.is_empty() || resp.contains(' ') {
                            return Err(Error::InvalidArgument(
                                "SASL initial response is empty or contains a space",
                            ));
                        }
                        format!("AUTH {mechanism} {resp}")
                    }
                }
            }
            Self::SaslResponse(resp) => {
                no_ctl(resp, "SASL response contains CR, LF or NUL")?;
                resp.to_owned()
            }
        };
        let (limit, err) = match self {
            Self::SaslResponse(_) => (MAX_SASL_RESPONSE_LEN, "SASL response too long"),
            _ => (MAX_COMMAND_LEN, "command longer than 255 octets"),
        };
        let mut bytes = line.into_bytes();
        bytes.extend_from_slice(b"\r\n");
        if bytes.len() > limit {
            return Err(Error::InvalidArgument(err));
        }
        Ok(bytes)
    }

    /// The command for logs, without CRLF: passwords, APOP digests and SASL
    /// payloads become `<redacted>`, and user text is sanitized.
    pub fn redacted(&self) -> String {
        let shown = |s: &str| printable(s, MAX_LOGGED_ARG);
        match *self {
            Self::User(user) => format!("USER {}", shown(user)),
            Self::Pass(_) => "PASS <redacted>".into(),
            Self::Apop { user, .. } => format!("APOP {} <redacted>", shown(user)),
            Self::Auth {
                mechanism,
                initial: Some(_),
            } => format!("AUTH {} <redacted>", shown(mechanism)),
            Self::Auth {
                mechanism,
                initial: None,
            } => format!("AUTH {}", shown(mechanism)),
            Self::SaslResponse(_) => "<redacted>".into(),
            Self::List(n) | Self::Uidl(n) => match n {
                Some(n) => format!("{} {n}", self.verb()),
                None => self.verb().into(),
            },
            Self::Retr(n) | Self::Dele(n) => format!("{} {n}", self.verb()),
            Self::Top(n, lines) => format!("TOP {n} {lines}"),
            Self::Stat | Self::Rset | Self::Noop | Self::Quit | Self::Capa | Self::Stls => {
                self.verb().into()
            }
        }
    }
}

impl fmt::Display for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire form, the same whether built alone or appended.
    fn wire(cmd: Command<'_>) -> String {
        let alone = cmd.to_bytes().unwrap();
        let mut appended = b"before".to_vec();
        cmd.write_to(&mut appended).unwrap();
        assert_eq!(&appended[6..], &alone[..], "{cmd:?}");
        cmd.check().unwrap();
        String::from_utf8(alone).unwrap()
    }

    /// Why `cmd` is refused, the same by every way of building it.
    fn rejected(cmd: Command<'_>) -> &'static str {
        let mut out = b"before".to_vec();
        let appended = cmd.write_to(&mut out);
        assert_eq!(out, b"before", "nothing appended for {cmd:?}");
        let checked = cmd.check();
        match cmd.to_bytes() {
            Err(Error::InvalidArgument(why)) => {
                for other in [appended, checked] {
                    assert!(matches!(other, Err(Error::InvalidArgument(w)) if w == why));
                }
                why
            }
            other => panic!("{cmd:?} gave {other:?}"),
        }
    }

    const DIGEST: &str = "c4c9334bac560ecc979e58001b3e22fb";

    #[test]
    fn wire_forms() {
        let cases = [
            (Command::User("mrose"), "USER mrose\r\n"),
            (Command::User("a b"), "USER a b\r\n"),
            (
                Command::Pass("secret with spaces "),
                "PASS secret with spaces \r\n",
            ),
            (
                Command::Apop {
                    user: "mrose",
                    digest: DIGEST,
                },
                "APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n",
            ),
            (Command::Stat, "STAT\r\n"),
            (Command::List(None), "LIST\r\n"),
            (Command::List(Some(2)), "LIST 2\r\n"),
            (Command::Uidl(None), "UIDL\r\n"),
            (Command::Uidl(Some(7)), "UIDL 7\r\n"),
            (Command::Retr(1), "RETR 1\r\n"),
            (Command::Top(3, 0), "TOP 3 0\r\n"),
            (Command::Dele(u32::MAX), "DELE 4294967295\r\n"),
            (Command::Rset, "RSET\r\n"),
            (Command::Noop, "NOOP\r\n"),
            (Command::Quit, "QUIT\r\n"),
            (Command::Capa, "CAPA\r\n"),
            (Command::Stls, "STLS\r\n"),
            (
                Command::Auth {
                    mechanism: "PLAIN",
                    initial: None,
                },
                "AUTH PLAIN\r\n",
            ),
            (
                Command::Auth {
                    mechanism: "PLAIN",
                    initial: Some("AGEAYg=="),
                },
                "AUTH PLAIN AGEAYg==\r\n",
            ),
            (Command::SaslResponse("*"), "*\r\n"),
        ];
        for (cmd, expected) in cases {
            assert_eq!(wire(cmd), expected);
        }
    }

    #[test]
    fn injection_and_bad_arguments_are_rejected() {
        for evil in ["bob\r\nDELE 1", "bob\nDELE 1", "bob\rx", "bob\0"] {
            rejected(Command::User(evil));
            rejected(Command::Pass(evil));
            rejected(Command::SaslResponse(evil));
            rejected(Command::Apop {
                user: evil,
                digest: DIGEST,
            });
        }
        assert_eq!(
            rejected(Command::User(" bob")),
            "user name has a leading or trailing space"
        );
        rejected(Command::User("bob "));
        rejected(Command::User(""));
        rejected(Command::Apop {
            user: "a b",
            digest: DIGEST,
        });
        rejected(Command::Apop {
            user: "ab",
            digest: "not hex",
        });
        rejected(Command::Retr(0));
        rejected(Command::Dele(0));
        rejected(Command::Top(0, 1));
        rejected(Command::List(Some(0)));
        for mechanism in ["", "PL AIN", "PLAIN\r\n", "A234567890123456789012"] {
            rejected(Command::Auth {
                mechanism,
                initial: None,
            });
        }
        for initial in ["", "a b", "a\r\nb"] {
            rejected(Command::Auth {
                mechanism: "PLAIN",
                initial: Some(initial),
            });
        }
    }

    #[test]
    fn length_limits() {
        // "PASS " + 248 + CRLF = 255 octets: the longest allowed.
        let fits = "p".repeat(248);
        assert_eq!(
            Command::Pass(&fits).to_bytes().unwrap().len(),
            MAX_COMMAND_LEN
        );
        let long = "p".repeat(249);
        assert_eq!(
            rejected(Command::Pass(&long)),
            "command longer than 255 octets"
        );
        rejected(Command::User(&long));
        rejected(Command::Auth {
            mechanism: "XOAUTH2",
            initial: Some(&long),
        });
        let token = "t".repeat(2000);
        assert!(Command::SaslResponse(&token).to_bytes().is_ok());
        rejected(Command::SaslResponse(&"t".repeat(MAX_SASL_RESPONSE_LEN)));
    }

    #[test]
    fn redaction() {
        let apop = Command::Apop {
            user: "mrose",
            digest: DIGEST,
        };
        let cases = [
            (Command::Pass("hunter2"), "PASS <redacted>"),
            (apop, "APOP mrose <redacted>"),
            (
                Command::Auth {
                    mechanism: "PLAIN",
                    initial: Some("AGh1bnRlcjI="),
                },
                "AUTH PLAIN <redacted>",
            ),
            (
                Command::Auth {
                    mechanism: "LOGIN",
                    initial: None,
                },
                "AUTH LOGIN",
            ),
            (Command::SaslResponse("aHVudGVyMg=="), "<redacted>"),
            (Command::User("bob\r\nDELE 1"), "USER bob??DELE 1"),
            (Command::Top(1, 10), "TOP 1 10"),
            (Command::List(Some(3)), "LIST 3"),
            (Command::Uidl(None), "UIDL"),
            (Command::Quit, "QUIT"),
        ];
        for (cmd, shown) in cases {
            assert_eq!(cmd.redacted(), shown);
            assert_eq!(cmd.to_string(), shown);
            assert_eq!(format!("{cmd:?}"), format!("Command({shown})"));
        }
        for secret in ["hunter2", DIGEST, "AGh1bnRlcjI=", "aHVudGVyMg=="] {
            for (cmd, _) in cases {
                assert!(!format!("{cmd} {cmd:?}").contains(secret));
            }
        }
    }

    #[test]
    fn verbs() {
        assert_eq!(Command::SaslResponse("x").verb(), "AUTH");
        assert_eq!(Command::Top(1, 1).verb(), "TOP");
    }
}
