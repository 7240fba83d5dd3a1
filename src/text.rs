//! Text from outside (server replies, certificate names, helper output,
//! configuration values) made safe for one log line, an error message or
//! `--probe` output: no control character can forge a log line or move a
//! terminal's cursor, and nothing is longer than its caller allows. Every
//! layer that shows foreign text goes through here.

/// What marks text cut at its limit.
const CUT: char = '…';

/// Control characters become `?`, and the text is cut to `max_chars`
/// characters (marked with `…`). For server replies and certificate names.
pub fn printable(text: &str, max_chars: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max_chars)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(max_chars).is_some() {
        out.push(CUT);
    }
    out
}

/// [`printable`] for bytes that need not be UTF-8 (invalid sequences become
/// U+FFFD).
pub fn printable_bytes(text: &[u8], max_chars: usize) -> String {
    printable(&String::from_utf8_lossy(text), max_chars)
}

/// Several lines (a helper program's stderr) as one: the first `max_bytes`
/// bytes, control characters (line ends included) as spaces, outer
/// whitespace trimmed, `…` where it was cut.
pub fn one_line(text: &[u8], max_bytes: usize) -> String {
    let cut = text.len() > max_bytes;
    let kept = String::from_utf8_lossy(&text[..text.len().min(max_bytes)]);
    let mut line: String = kept
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    line.truncate(line.trim_end().len());
    if cut {
        line.push(CUT);
    }
    line.trim_start().to_owned()
}

/// A configuration value as the user typed it, for an error message:
/// escapes (`\t`, `\u{1b}`, `\"`) instead of control characters, so the
/// user sees exactly which byte is wrong; cut to `max_chars` characters.
pub fn escaped(value: &str, max_chars: usize) -> String {
    let mut s: String = value
        .chars()
        .take(max_chars)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().nth(max_chars).is_some() {
        s.push(CUT);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_replaces_controls_and_cuts() {
        assert_eq!(printable("ok\r\nFAKE LOG\x1b[2J", 100), "ok??FAKE LOG?[2J");
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(printable("abc", 3), "abc");
        assert_eq!(printable("ééé", 2), "éé…");
        assert_eq!(printable_bytes(b"a\xffb\n", 10), "a\u{fffd}b?");
    }

    #[test]
    fn one_line_joins_and_trims() {
        assert_eq!(
            one_line(b"  curl: (7) failed\nretry\n", 100),
            "curl: (7) failed retry"
        );
        assert_eq!(one_line(b"abcdef", 3), "abc…");
        assert_eq!(one_line(b"", 3), "");
    }

    #[test]
    fn escaped_shows_the_bad_byte() {
        assert_eq!(escaped("a\tb\"", 10), "a\\tb\\\"");
        assert_eq!(escaped("abcdef", 2), "ab…");
    }
}
