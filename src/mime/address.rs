//! Address-list header fields (From, To, Cc, Reply-To,
//! Disposition-Notification-To) in the form meta.json gives them (README,
//! "The spool"): the common plain forms formatted here, the rest parsed by
//! mailparse's `addrparse` (RFC 5322 section 3.4).

use super::header::{decode_words, unfold_text};

/// Formats an address list: `"Display Name" <local@domain>` or
/// `local@domain`; group members are listed individually (the group name is
/// dropped). Display names have RFC 2047 words decoded. Text that does not
/// parse as an address list is returned whole as one entry.
pub fn addresses(value: &[u8]) -> Vec<String> {
    let text = unfold_text(value);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Vec::new();
    }
    if let Some(one) = plain_address(trimmed) {
        return vec![one];
    }
    parsed_addresses(trimmed)
}

/// The common forms `user@example.com` and `Some Name <user@example.com>`,
/// plain ASCII words with nothing to decode, quote or group, formatted as
/// [`parsed_addresses`] would (the tests check that): most messages carry
/// only these, and mailparse's general parser costs ten times as much.
fn plain_address(text: &str) -> Option<String> {
    let word = |w: &str| {
        !w.is_empty()
            && w.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'\'' | b'!' | b'#')
            })
    };
    fn addr(a: &str, word: impl Fn(&str) -> bool) -> Option<&str> {
        let (local, domain) = a.split_once('@')?;
        let dotted = |p: &str| p.split('.').all(&word);
        (dotted(local) && dotted(domain)).then_some(a)
    }
    match text.strip_suffix('>') {
        None => addr(text, word).map(str::to_string),
        Some(rest) => {
            let (name, a) = rest.split_once(" <")?;
            let a = addr(a, word)?;
            name.split(' ')
                .all(word)
                .then(|| format!("\"{name}\" <{a}>"))
        }
    }
}

/// The bare `local@domain` of each address in a list (groups flattened),
/// for a program that must write to them (an MDN's recipient). Text that
/// is no address list gives nothing.
pub fn addr_specs(value: &[u8]) -> Vec<String> {
    let text = unfold_text(value);
    match mailparse::addrparse(text.trim()) {
        Ok(list) => list
            .iter()
            .flat_map(|a| match a {
                mailparse::MailAddr::Single(s) => vec![s.addr.trim().to_string()],
                mailparse::MailAddr::Group(g) => {
                    g.addrs.iter().map(|s| s.addr.trim().to_string()).collect()
                }
            })
            .filter(|a| !a.is_empty())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn parsed_addresses(trimmed: &str) -> Vec<String> {
    match mailparse::addrparse(trimmed) {
        Ok(list) => {
            let mut out = Vec::new();
            for addr in list.iter() {
                match addr {
                    mailparse::MailAddr::Single(s) => out.push(format_single(s)),
                    mailparse::MailAddr::Group(g) => {
                        out.extend(g.addrs.iter().map(format_single));
                    }
                }
            }
            out
        }
        Err(_) => vec![decode_words(trimmed).trim().to_string()],
    }
}

fn format_single(s: &mailparse::SingleInfo) -> String {
    let name = s
        .display_name
        .as_deref()
        .map(|n| decode_words(n).trim().to_string())
        .filter(|n| !n.is_empty());
    match name {
        Some(n) => format!(
            "\"{}\" <{}>",
            n.replace('\\', "\\\\").replace('"', "\\\""),
            s.addr.trim()
        ),
        None => s.addr.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path formats exactly as the general one, and leaves
    /// everything else to it.
    #[test]
    fn plain_addresses_agree_with_mailparse() {
        let names = [
            "",
            "Sender 5",
            "A",
            "Jo-Ann O'Neil",
            "x_y+z",
            "Dr. Who",
            "\"Q\"",
            "=?UTF-8?Q?K=C3=B6ln?=",
            "a  b",
            "A,B",
            "Ünï",
            "(c)",
        ];
        let addrs = [
            "a@b",
            "first.last@example.org",
            "x+tag@sub.example.co",
            "a@b@c",
            "a..b@c",
            ".a@b",
            "a@b.",
            "a b@c",
            "\"q\"@x",
            "a@[1.2.3.4]",
            "ü@x",
            "@x",
            "a@",
        ];
        let mut fast = 0;
        for name in names {
            for addr in addrs {
                let text = if name.is_empty() {
                    addr.to_string()
                } else {
                    format!("{name} <{addr}>")
                };
                let general = parsed_addresses(&text);
                if let Some(one) = plain_address(&text) {
                    fast += 1;
                    assert_eq!(vec![one], general, "{text}");
                }
                assert_eq!(addresses(text.as_bytes()), general, "{text}");
            }
        }
        assert!(
            fast >= 15,
            "the fast path should take the common forms ({fast})"
        );
        for text in ["a@b, c@d", "Group: a@b;", "<a@b>", "Name <a@b> (comment)"] {
            assert!(plain_address(text).is_none(), "{text}");
        }
    }
}
