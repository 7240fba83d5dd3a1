//! Safe, unique file names for `attachments/`.

use std::collections::HashSet;

/// Longest file name written (README, "The spool"). Linux allows 255 bytes; 200
/// leaves room for the " (NNN)" uniqueness suffix and for consumers that
/// append their own suffixes.
pub const MAX_NAME_BYTES: usize = 200;

/// Extensions longer than this are not treated as extensions when cutting a
/// long name (a 150-byte "extension" is just part of the name).
const MAX_EXT_BYTES: usize = 16;

/// Makes a sender's file name safe. Returns None when nothing usable is left
/// (the caller then generates `part-<n>.<ext>`).
///
/// - Only the last path component is kept (`C:\dir\x.pdf` -> `x.pdf`,
///   `../../etc/passwd` -> `passwd`).
/// - Control characters, NUL, bidirectional-override characters (used to
///   disguise `exe.pdf` as `fdp.exe`) and invisible characters (zero-width
///   spaces and joiners, the soft hyphen, line and paragraph separators: a
///   name that looks like another) are removed; characters Windows forbids
///   become `_` (spools are often exported over SMB).
/// - Leading dots get a `_` prefix so the file is not hidden; trailing dots and
///   spaces are trimmed; `.` and `..` are rejected.
/// - DOS device names (`CON`, `nul.txt`, `COM1`, `CONIN$`, `LPT¹`) get a `_`
///   prefix.
/// - At most [`MAX_NAME_BYTES`] bytes, cut on a UTF-8 boundary, keeping the
///   extension.
pub fn sanitize(original: &str) -> Option<String> {
    let last = original.rsplit(['/', '\\']).next().unwrap_or(original);
    let mut s: String = last
        .chars()
        .filter(|&c| !c.is_control() && !is_bidi_control(c) && !is_invisible(c))
        .map(|c| if "<>:\"|?*".contains(c) { '_' } else { c })
        .collect();
    s = s.trim().trim_end_matches(['.', ' ']).to_string();
    if s.is_empty() || s == "." || s == ".." {
        return None;
    }
    if s.starts_with('.') {
        s.insert(0, '_');
    }
    if is_dos_device(&s) {
        s.insert(0, '_');
    }
    Some(fit(&s, "", MAX_NAME_BYTES))
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Characters that show as nothing (or as a line break) and so make one
/// name look like another: zero-width space, non-joiner and joiner, word
/// joiner, byte order mark, soft hyphen, line and paragraph separators.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' | '\u{00ad}' | '\u{2028}' | '\u{2029}'
    )
}

/// Windows device names, with or without an extension. Windows also takes
/// the superscript digits ¹²³ as the port number of `COM` and `LPT`.
fn is_dos_device(name: &str) -> bool {
    let stem = name
        .split('.')
        .next()
        .unwrap_or("")
        .trim_end()
        .to_ascii_uppercase();
    if matches!(
        stem.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) {
        return true;
    }
    let Some(port) = stem
        .strip_prefix("COM")
        .or_else(|| stem.strip_prefix("LPT"))
    else {
        return false;
    };
    let mut digits = port.chars();
    matches!(
        (digits.next(), digits.next()),
        (Some('0'..='9' | '¹' | '²' | '³'), None)
    )
}

/// Splits into (stem, extension with its dot).
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(p) if p > 0 && name.len() - p <= MAX_EXT_BYTES + 1 => (&name[..p], &name[p..]),
        _ => (name, ""),
    }
}

/// `stem + suffix + ext` cut to `max` bytes, shortening the stem first.
fn fit(name: &str, suffix: &str, max: usize) -> String {
    let (stem, ext) = split_ext(name);
    let (stem, ext) = if ext.len() + suffix.len() >= max {
        (name, "")
    } else {
        (stem, ext)
    };
    let room = max.saturating_sub(ext.len() + suffix.len());
    let mut cut = stem.len().min(room);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}{ext}", &stem[..cut])
}

/// Names already used in one entry. Compared case-insensitively, so that
/// consumers on case-insensitive file systems see distinct files too.
#[derive(Default)]
pub struct UniqueNames {
    used: HashSet<String>,
}

impl UniqueNames {
    /// `name`, or `name (2).ext`, `name (3).ext`… whichever is free; records it.
    pub fn claim(&mut self, name: &str) -> String {
        let mut n = 1u32;
        loop {
            let candidate = if n == 1 {
                name.to_string()
            } else {
                fit(name, &format!(" ({n})"), MAX_NAME_BYTES)
            };
            if self.used.insert(candidate.to_lowercase()) {
                return candidate;
            }
            n += 1;
        }
    }
}

/// File extension (without dot) for a generated name.
pub fn extension_for(ctype: &str) -> &'static str {
    match ctype {
        "text/plain" => "txt",
        "text/html" => "html",
        "text/xml" | "application/xml" => "xml",
        "text/csv" => "csv",
        "text/calendar" => "ics",
        "text/vcard" | "text/x-vcard" => "vcf",
        "text/rfc822-headers" | "message/global-headers" => "txt",
        "text/enriched" | "text/richtext" => "txt",
        "application/json" => "json",
        "application/pdf" => "pdf",
        "application/zip" | "application/x-zip-compressed" => "zip",
        "application/gzip" | "application/x-gzip" => "gz",
        "application/msword" => "doc",
        "application/rtf" | "text/rtf" => "rtf",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.ms-powerpoint" => "ppt",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation" => "pptx",
        "application/vnd.oasis.opendocument.text" => "odt",
        "application/vnd.oasis.opendocument.spreadsheet" => "ods",
        "application/edifact" | "application/edi-x12" => "edi",
        "application/pkcs7-signature" | "application/x-pkcs7-signature" => "p7s",
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => "p7m",
        "application/pgp-signature" => "asc",
        "application/ms-tnef" | "application/vnd.ms-tnef" => "dat",
        "image/png" => "png",
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpg",
        "image/gif" => "gif",
        "image/tiff" => "tif",
        "image/bmp" => "bmp",
        "image/svg+xml" => "svg",
        "image/webp" => "webp",
        "audio/mpeg" => "mp3",
        "audio/wav" | "audio/x-wav" => "wav",
        "video/mp4" => "mp4",
        "message/rfc822" | "message/global" => "eml",
        "message/delivery-status"
        | "message/global-delivery-status"
        | "message/disposition-notification"
        | "message/global-disposition-notification" => "txt",
        t if t.starts_with("text/") => "txt",
        _ => "bin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names() {
        assert_eq!(sanitize("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(sanitize("/abs").as_deref(), Some("abs"));
        assert_eq!(sanitize("a\\b").as_deref(), Some("b"));
        assert_eq!(
            sanitize("C:\\Users\\x\\report.pdf").as_deref(),
            Some("report.pdf")
        );
        assert_eq!(sanitize("a\0b.txt").as_deref(), Some("ab.txt"));
        assert_eq!(sanitize(".."), None);
        assert_eq!(sanitize("."), None);
        assert_eq!(sanitize("dir/.."), None);
        assert_eq!(sanitize("   "), None);
        assert_eq!(sanitize(".bashrc").as_deref(), Some("_.bashrc"));
        assert_eq!(sanitize("x.pdf. . ").as_deref(), Some("x.pdf"));
        assert_eq!(sanitize("CON").as_deref(), Some("_CON"));
        assert_eq!(sanitize("nul.txt").as_deref(), Some("_nul.txt"));
        assert_eq!(sanitize("com1.log").as_deref(), Some("_com1.log"));
        assert_eq!(sanitize("console.txt").as_deref(), Some("console.txt"));
        assert_eq!(sanitize("a:b?.txt").as_deref(), Some("a_b_.txt"));
        assert_eq!(
            sanitize("invoice\u{202e}fdp.exe").as_deref(),
            Some("invoicefdp.exe")
        );
        assert_eq!(
            sanitize("tab\there\r\n.txt").as_deref(),
            Some("tabhere.txt")
        );
    }

    #[test]
    fn invisible_characters_removed() {
        for c in [
            '\u{200b}', '\u{200c}', '\u{200d}', '\u{2060}', '\u{feff}', '\u{2028}', '\u{2029}',
            '\u{00ad}',
        ] {
            let name = format!("in{c}voice.p{c}df");
            assert_eq!(sanitize(&name).as_deref(), Some("invoice.pdf"), "{c:?}");
        }
        // Nothing visible left: a generated name instead.
        assert_eq!(sanitize("\u{200b}\u{00ad}"), None);
        // A leading invisible character does not hide the dot.
        assert_eq!(sanitize("\u{200b}.bashrc").as_deref(), Some("_.bashrc"));
    }

    #[test]
    fn more_device_names() {
        for (name, safe) in [
            ("CONIN$", "_CONIN$"),
            ("conout$.txt", "_conout$.txt"),
            ("COM¹", "_COM¹"),
            ("com².log", "_com².log"),
            ("LPT³", "_LPT³"),
            ("lpt¹.txt", "_lpt¹.txt"),
            ("COM9", "_COM9"),
            // Not device names.
            ("COM¹¹", "COM¹¹"),
            ("COM⁴", "COM⁴"),
            ("CONIN", "CONIN"),
            ("CONIN$X", "CONIN$X"),
            ("COM", "COM"),
            ("COM12", "COM12"),
        ] {
            assert_eq!(sanitize(name).as_deref(), Some(safe), "{name}");
        }
        // A zero-width character does not smuggle a device name through.
        assert_eq!(sanitize("C\u{200b}ON.txt").as_deref(), Some("_CON.txt"));
    }

    #[test]
    fn long_names_keep_extension() {
        let long = "é".repeat(150) + ".pdf";
        let s = sanitize(&long).unwrap();
        assert!(s.len() <= MAX_NAME_BYTES);
        assert!(s.ends_with(".pdf"));
        assert!(s.starts_with("éé"));
        let s = sanitize(&"x".repeat(300)).unwrap();
        assert_eq!(s.len(), MAX_NAME_BYTES);
    }

    #[test]
    fn unique() {
        let mut u = UniqueNames::default();
        assert_eq!(u.claim("a.pdf"), "a.pdf");
        assert_eq!(u.claim("A.PDF"), "A (2).PDF");
        assert_eq!(u.claim("a.pdf"), "a (3).pdf");
        let long = "y".repeat(196) + ".pdf";
        assert_eq!(u.claim(&long), long);
        let second = u.claim(&long);
        assert!(second.len() <= MAX_NAME_BYTES && second.ends_with(" (2).pdf"));
    }
}
