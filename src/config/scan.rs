//! Stage 1 of reading the configuration: INI text to sections and raw
//! `key = value` entries, each with its line number. Everything structural
//! is refused here (a line that is not INI, an unknown section or key, a key
//! in a section that may not hold it, a duplicate, two ways to give the
//! password); values stay text until `values` parses them.
//!
//! This scanner, not rust-ini (imported as `ini`), is the authority: rust-ini
//! reports no line numbers, accepts `key: value`, joins a line ending in `\`
//! with the next and turns an indented comment into part of the following
//! key. It still reads the significant lines as a cross-check, so that a
//! value (a password above all) can never mean one thing to popspool and
//! another to the INI reader the product is documented to use.

use std::path::Path;

use super::keys::{Key, Place, Secrecy};
use super::{invalid, Error};

/// The name becomes a directory and file name and appears in every log line.
const MAX_ACCOUNT_NAME: usize = 64;

/// rust-ini options under which `p;a#s\"s` stays literal.
pub(super) const PARSE_OPTION: ini::ParseOption = ini::ParseOption {
    enabled_quote: false,
    enabled_escape: false,
    enabled_indented_mutiline_value: false,
    enabled_preserve_key_leading_whitespace: false,
};

/// What one line of the file is.
enum Line<'t> {
    /// Blank or a comment.
    Blank,
    /// `[...]`, with the text between the brackets trimmed.
    Section(&'t str),
    /// `key = value`, both trimmed; the value is everything after the first `=`.
    Pair(&'t str, &'t str),
    /// None of these.
    Junk,
}

fn classify(line: &str) -> Line<'_> {
    let t = line.trim();
    if t.is_empty() || t.starts_with([';', '#']) {
        Line::Blank
    } else if let Some(inner) = t.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .map_or(Line::Junk, |s| Line::Section(s.trim()))
    } else if let Some((k, v)) = t.split_once('=') {
        Line::Pair(k.trim(), v.trim())
    } else {
        Line::Junk
    }
}

/// One `key = value` line.
pub(super) struct Entry<'t> {
    pub(super) key: Key,
    pub(super) value: &'t str,
    pub(super) line: usize,
}

/// `[global]` or one `[account NAME]`, with its entries in file order.
pub(super) struct Section<'t> {
    /// `None` for `[global]`.
    pub(super) account: Option<&'t str>,
    /// The text between the brackets, as rust-ini names the section.
    pub(super) header: &'t str,
    /// 0 for a `[global]` that is not in the file.
    pub(super) line: usize,
    pub(super) entries: Vec<Entry<'t>>,
}

impl<'t> Section<'t> {
    fn get(&self, key: Key) -> Option<&Entry<'t>> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// The file cut into sections.
pub(super) struct Scanned<'t> {
    pub(super) global: Section<'t>,
    pub(super) accounts: Vec<Section<'t>>,
    /// The text with comments blanked and indentation removed, line for line:
    /// what rust-ini gets to read for the cross-check.
    pub(super) significant: String,
}

impl Drop for Scanned<'_> {
    /// `significant` is a copy of the text, inline passwords included:
    /// wiped like the text itself (README "Secrets").
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.significant);
    }
}

/// Cut `text` (read from `path`, which names it in messages) into sections.
pub(super) fn scan<'t>(text: &'t str, path: &Path) -> Result<Scanned<'t>, Error> {
    let mut global = Section {
        account: None,
        header: "global",
        line: 0,
        entries: Vec::new(),
    };
    let mut accounts: Vec<Section<'t>> = Vec::new();
    let mut in_global = false;
    let mut significant = String::with_capacity(text.len());

    for (index, raw) in text.split('\n').enumerate() {
        let n = index + 1;
        let err = |key: Option<&str>, message: String| invalid(path, n, key, message);
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.contains('\r') {
            // INI readers disagree on whether a lone CR ends a line.
            return Err(err(None, "carriage return inside a line".into()));
        }
        let kind = classify(line);
        if !matches!(kind, Line::Blank) {
            significant.push_str(line.trim());
        }
        significant.push('\n');
        match kind {
            Line::Blank => {}
            Line::Junk => {
                return Err(err(
                    None,
                    "line without '=' (expected [section], key = value, or a comment)".into(),
                ));
            }
            Line::Section("global") => {
                if global.line > 0 {
                    return Err(err(
                        None,
                        format!("duplicate [global]; first on line {}", global.line),
                    ));
                }
                if !accounts.is_empty() {
                    return Err(err(
                        None,
                        "[global] must come before the first [account]".into(),
                    ));
                }
                global.line = n;
                in_global = true;
            }
            Line::Section(header) => {
                let name = match header.strip_prefix("account") {
                    Some("") => return Err(err(None, "[account] needs a name".into())),
                    Some(rest) if rest.starts_with(char::is_whitespace) => rest.trim_start(),
                    _ => {
                        let msg = format!(
                            "unknown section '[{header}]'; expected [global] or [account NAME]"
                        );
                        return Err(err(None, msg));
                    }
                };
                if let Some(problem) = account_name_problem(name) {
                    return Err(err(None, format!("bad account name '{name}': {problem}")));
                }
                if let Some(first) = accounts.iter().find(|s| s.account == Some(name)) {
                    return Err(err(
                        None,
                        format!("duplicate account '{name}'; first on line {}", first.line),
                    ));
                }
                accounts.push(Section {
                    account: Some(name),
                    header,
                    line: n,
                    entries: Vec::new(),
                });
                in_global = false;
            }
            Line::Pair("", _) => return Err(err(None, "line has no key before '='".into())),
            Line::Pair(name, value) => {
                let err = |message: String| err(Some(name), message);
                let section = match accounts.last_mut() {
                    _ if in_global => &mut global,
                    Some(section) => section,
                    None => {
                        return Err(err(
                            "outside any section; put it under [global] or [account NAME]".into(),
                        ))
                    }
                };
                let Some(key) = Key::from_name(name) else {
                    return Err(err("unknown key".into()));
                };
                if !in_global && key.place() == Place::Global {
                    return Err(err("is only allowed in [global]".into()));
                }
                if value.ends_with('\\') {
                    return Err(err(
                        "value ends with '\\', which INI readers take as a line continuation \
                         (a password ending in '\\' can go in a password_file)"
                            .into(),
                    ));
                }
                if let Some(first) = section.get(key) {
                    return Err(err(format!(
                        "set twice in this section; first on line {}",
                        first.line
                    )));
                }
                if key.is_secret_source() {
                    if let Some(other) = section.entries.iter().find(|e| e.key.is_secret_source()) {
                        return Err(err(format!(
                            "conflicts with '{}' on line {}; set only one of password, password_file, \
                             password_command",
                            other.key.name(),
                            other.line
                        )));
                    }
                }
                if key.is_smtp_secret_source() {
                    let other = section
                        .entries
                        .iter()
                        .find(|e| e.key.is_smtp_secret_source());
                    if let Some(other) = other {
                        return Err(err(format!(
                            "conflicts with '{}' on line {}; set only one of smtp_password, \
                             smtp_password_file, smtp_password_command",
                            other.key.name(),
                            other.line
                        )));
                    }
                }
                section.entries.push(Entry {
                    key,
                    value,
                    line: n,
                });
            }
        }
    }
    if accounts.is_empty() {
        return Err(invalid(
            path,
            0,
            None,
            "no [account NAME] section; there is nothing to poll".into(),
        ));
    }
    Ok(Scanned {
        global,
        accounts,
        significant,
    })
}

fn account_name_problem(name: &str) -> Option<&'static str> {
    if name == "." || name == ".." {
        Some("'.' and '..' are not allowed")
    } else if name.len() > MAX_ACCOUNT_NAME {
        Some("longer than 64 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    }
}

/// Whether any line sets an inline secret, in whatever section: then the
/// file itself must be private.
pub(super) fn holds_inline_secret(text: &str) -> bool {
    text.split('\n').any(|l| {
        matches!(classify(l), Line::Pair(k, _)
            if Key::from_name(k).is_some_and(|k| k.secrecy() == Secrecy::Inline))
    })
}

/// Have rust-ini read the significant lines and insist it sees the same
/// sections, keys and values. A mismatch is a scanner bug, but reporting it
/// beats polling with a password the user did not write.
pub(super) fn cross_check(scanned: &Scanned<'_>, path: &Path) -> Result<(), Error> {
    let ini = ini::Ini::load_from_str_opt(&scanned.significant, PARSE_OPTION)
        .map_err(|e| invalid(path, e.line, None, format!("INI syntax error: {}", e.msg)))?;
    let disagree = |line, key: Option<Key>| {
        let message = "the INI library reads this line differently (internal consistency check; please report it)";
        invalid(path, line, key.map(Key::name), message.into())
    };
    if !ini.general_section().is_empty() {
        return Err(disagree(0, None));
    }
    for section in std::iter::once(&scanned.global).chain(&scanned.accounts) {
        let theirs: Vec<(&str, &str)> = ini
            .section_all(Some(section.header))
            .next()
            .map(|p| p.iter().collect())
            .unwrap_or_default();
        let ours: Vec<(&str, &str)> = section
            .entries
            .iter()
            .map(|e| (e.key.name(), e.value))
            .collect();
        if theirs != ours {
            let bad = section
                .entries
                .iter()
                .zip(&theirs)
                .find(|(e, t)| (e.key.name(), e.value) != **t);
            return Err(match bad {
                Some((e, _)) => disagree(e.line, Some(e.key)),
                None => disagree(section.line, None),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testkit::{cfg, check, path, MIN};
    use crate::config::SecretSource;
    use crate::secret::Password;

    #[test]
    fn structural_errors_name_the_line() {
        let m = MIN;
        check(&format!("{m}\n# c\nhost pop\n"), 7, None, "without '='");
        check(
            &format!("{m}[accounts x]\n"),
            5,
            None,
            "unknown section '[accounts x]'",
        );
        check(&format!("{m}[Global]\n"), 5, None, "unknown section");
        check(&format!("{m}[account]\n"), 5, None, "needs a name");
        check(&format!("{m}[account ..]\n"), 5, None, "'.' and '..'");
        check(
            &format!("{m}[account a/b]\n"),
            5,
            None,
            "bad account name 'a/b'",
        );
        check(
            &format!("{m}[account {}]\n", "x".repeat(65)),
            5,
            None,
            "longer than 64",
        );
        check(&format!("{m}[account b\n"), 5, None, "without '='");
        check(
            &format!("{m}[account  a ]\n"),
            5,
            None,
            "duplicate account 'a'; first on line 1",
        );
        check(
            &format!("{m}user = v\n"),
            5,
            Some("user"),
            "set twice in this section; first on line 3",
        );
        check(
            &format!("host = h\n{m}"),
            1,
            Some("host"),
            "outside any section",
        );
        check(
            &format!("{m}state_dir = /x\n"),
            5,
            Some("state_dir"),
            "only allowed in [global]",
        );
        check(&format!("{m}hots = x\n"), 5, Some("hots"), "unknown key");
        check(&format!("{m}Host = x\n"), 5, Some("Host"), "unknown key");
        check(&format!("{m}= x\n"), 5, None, "no key");
        check(&format!("{m}host: x\n"), 5, None, "without '='");
        check(
            "[global]\n[global]\n",
            2,
            None,
            "duplicate [global]; first on line 1",
        );
        check(
            &format!("{m}[global]\n"),
            5,
            None,
            "before the first [account]",
        );
        check("[global]\nhost = h\n", 0, None, "no [account NAME]");
        check("", 0, None, "no [account NAME]");
        check(
            &format!("{m}password_file = /p\n"),
            5,
            Some("password_file"),
            "conflicts with 'password' on line 4",
        );
        check(&format!("{m}\ruser = x\n"), 5, None, "carriage return");
        check(
            &format!("{m}ca_file = /x\\\n"),
            5,
            Some("ca_file"),
            "line continuation",
        );
        check(
            "[global]\npassword = a\npassword_command = b\n",
            3,
            Some("password_command"),
            "conflicts",
        );
    }

    #[test]
    fn password_survives_byte_exact() {
        let pw = r#"p;a#s\"s'=x \\ y=;#"#;
        let want = SecretSource::Inline(Password::new(pw.into()));
        let text = format!(
            "[account a]\n  ; indented comment\n\thost = h\nuser = u\npassword =   {pw}  \n"
        );
        assert_eq!(cfg(&text).accounts[0].secret, want);
        assert_eq!(cfg(&text.replace('\n', "\r\n")).accounts[0].secret, want);
        assert_eq!(cfg(&format!("\u{feff}{text}")).accounts[0].secret, want);
        // rust-ini, read directly on these lines, agrees.
        let ini =
            ini::Ini::load_from_str_opt(&format!("[account a]\npassword = {pw}\n"), PARSE_OPTION)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ini.get_from(Some("account a"), "password"), Some(pw));
        // Everything after the first '=' is the value, '=' included.
        assert_eq!(
            crate::config::testkit::acct("").secret,
            SecretSource::Inline(Password::new("pw".into()))
        );
        let a = cfg("[account a]\nhost=h\nuser=u\npassword==x=\n")
            .accounts
            .remove(0);
        assert_eq!(a.secret, SecretSource::Inline(Password::new("=x=".into())));
    }

    #[test]
    fn cross_check_reports_a_disagreement() {
        let section = |entries| Section {
            account: Some("a"),
            header: "account a",
            line: 1,
            entries,
        };
        let scanned = |value, significant: &str| Scanned {
            global: Section {
                account: None,
                header: "global",
                line: 0,
                entries: Vec::new(),
            },
            accounts: vec![section(vec![Entry {
                key: Key::Host,
                value,
                line: 2,
            }])],
            significant: significant.into(),
        };
        assert!(cross_check(&scanned("h", "[account a]\nhost = h\n"), path()).is_ok());
        match cross_check(&scanned("h", "[account a]\nhost = h\\\nx\n"), path()) {
            Err(Error::Invalid {
                line: 2,
                key: Some(k),
                ..
            }) => assert_eq!(k, "host"),
            other => panic!("{other:?}"),
        }
    }
}
