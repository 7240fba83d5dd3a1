//! Message disposition notifications (RFC 8098): whether a delivered
//! message asks for one and may get one, and the MDN itself, as bytes
//! ready for SMTP. Pure: no I/O, no clock, no randomness of its own (the
//! caller passes the time and a unique token), so every rule is
//! unit-tested here. Sending, the journal states and retries are in
//! `poll::mdns` (README, "Acknowledgments (MDN)").
//!
//! The rules of RFC 8098 section 2 kept here: a report is never answered
//! with a report; a request whose `Return-Path` is missing or names another
//! address than `Disposition-Notification-To` is suspicious and skipped
//! (section 2.1), as is one naming several addresses; the disposition is
//! `automatic-action/MDN-sent-automatically; processed`, or
//! `processed/error` with an `Error` field for a message that went to
//! quarantine (section 3.2.6: RFC 8098's form of what RFC 2298 called
//! `failed`).

use crate::mime::{self, HeaderField, Headers, Kind};
use crate::sasl::crypto;

/// The original header block is attached (`text/rfc822-headers`, RFC 8098
/// section 3) only up to this size: it helps the sender correlate, a few
/// KiB in real mail; a huge one would make every MDN huge.
pub const MAX_ATTACHED_HEADER_BYTES: usize = 64 << 10;

/// Longest reason quoted in the `Error` field and the text, in characters.
const MAX_REASON: usize = 300;

/// Longest original subject quoted in the MDN's subject, in characters.
const MAX_SUBJECT: usize = 200;

/// What to do about one delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No `Disposition-Notification-To`: nothing to do.
    NotAsked,
    /// Asked, but RFC 8098 says not to answer automatically; the reason is
    /// logged.
    Skip(String),
    /// Owed: this MDN, to this address.
    Owe(Owed),
}

/// An MDN to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    /// The envelope recipient: the address of `Disposition-Notification-To`.
    pub rcpt: String,
    /// The whole message, CRLF line ends, ASCII.
    pub message: Vec<u8>,
}

/// Who answers, and the facts the caller supplies.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    /// `mdn_from` as configured (`Name <local@domain>` or `local@domain`).
    pub from: &'a str,
    /// Its `local@domain`.
    pub from_addr: &'a str,
    /// Unix time, for `Date`.
    pub now: u64,
    /// A unique token for the MDN's `Message-ID` and MIME boundary.
    pub token: &'a str,
}

/// A unique token for [`Sender::token`]: 16 random bytes in hex.
pub fn token() -> String {
    let bytes = crypto::random(16).unwrap_or_else(|_| {
        // OpenSSL's generator failing is near impossible; the time and
        // process keep the token unique enough for a Message-ID then.
        format!("{}{}", crate::timefmt::unix_now(), std::process::id()).into_bytes()
    });
    crate::hex::lower(&bytes)
}

/// Decides about one delivered message and, when an MDN is owed, writes
/// it. `head` is the message's header block as received (attached when
/// small and ASCII); `quarantine` the reason it went to quarantine.
pub fn decide(
    headers: &Headers,
    kind: Kind,
    head: &[u8],
    quarantine: Option<&str>,
    sender: &Sender<'_>,
) -> Decision {
    let fields = |name: &'static str| {
        headers
            .all
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(name))
    };
    let raw = |f: &HeaderField| f.raw.clone().unwrap_or_else(|| f.value.clone());
    let requests: Vec<&HeaderField> = fields("disposition-notification-to").collect();
    if requests.is_empty() {
        return Decision::NotAsked;
    }
    let ctype = fields("content-type")
        .next()
        .map(|f| f.value.to_ascii_lowercase())
        .unwrap_or_default();
    if kind == Kind::Report
        || ctype.starts_with("multipart/report")
        || ctype.starts_with("message/disposition-notification")
        || ctype.starts_with("message/delivery-status")
    {
        return Decision::Skip("the message is itself a report, which is never answered".into());
    }
    // RFC 8098 section 2.2: a parameter marked "required" that the
    // answering agent does not know forbids an ordinary MDN; popspool knows
    // none (a signed receipt, for one, it cannot give).
    let required = fields("disposition-notification-options").find(|f| {
        f.value.split(';').any(|p| {
            p.split_once('=')
                .is_some_and(|(_, v)| v.trim().to_ascii_lowercase().starts_with("required"))
        })
    });
    if let Some(f) = required {
        return Decision::Skip(format!(
            "Disposition-Notification-Options has a required parameter popspool does not \
             support ({}; RFC 8098 section 2.2)",
            crate::text::printable(&f.value, 100)
        ));
    }
    let addrs: Vec<String> = requests
        .iter()
        .flat_map(|f| mime::addr_specs(&raw(f)))
        .collect();
    let rcpt = match addrs.as_slice() {
        [one] => one.clone(),
        [] => return Decision::Skip("Disposition-Notification-To holds no address".into()),
        _ => {
            return Decision::Skip(
                "Disposition-Notification-To names several addresses (RFC 8098 section 2.1)".into(),
            )
        }
    };
    if !crate::smtp::proto::is_plain_address(&rcpt) {
        return Decision::Skip(format!(
            "Disposition-Notification-To address {} cannot be written in SMTP",
            crate::text::printable(&rcpt, 100)
        ));
    }
    let return_path = fields("return-path").next().map(|f| {
        let v = raw(f);
        let v = v.trim();
        v.strip_prefix('<')
            .and_then(|v| v.strip_suffix('>'))
            .unwrap_or(v)
            .trim()
            .to_string()
    });
    match return_path {
        None => {
            return Decision::Skip(format!(
                "suspicious request: no Return-Path to compare with \
                 Disposition-Notification-To <{rcpt}> (RFC 8098 section 2.1)"
            ))
        }
        Some(rp) if !same_address(&rp, &rcpt) => {
            return Decision::Skip(format!(
                "suspicious request: Return-Path <{}> differs from \
                 Disposition-Notification-To <{rcpt}> (RFC 8098 section 2.1)",
                crate::text::printable(&rp, 100)
            ))
        }
        Some(_) => {}
    }
    let message = compose(headers, &rcpt, head, quarantine, sender);
    Decision::Owe(Owed { rcpt, message })
}

/// Addresses compare equal when the local parts are identical and the
/// domains equal ignoring case (RFC 5321 section 2.4).
fn same_address(a: &str, b: &str) -> bool {
    match (a.rsplit_once('@'), b.rsplit_once('@')) {
        (Some((la, da)), Some((lb, db))) => la == lb && da.eq_ignore_ascii_case(db),
        _ => false,
    }
}

/// The MDN: `multipart/report; report-type=disposition-notification` with a
/// human-readable part, the `message/disposition-notification` part and,
/// when small and ASCII, the original header block.
fn compose(
    headers: &Headers,
    rcpt: &str,
    head: &[u8],
    quarantine: Option<&str>,
    s: &Sender<'_>,
) -> Vec<u8> {
    let boundary = format!("=_popspool-mdn-{}", s.token);
    let domain = s.from_addr.rsplit_once('@').map_or("localhost", |(_, d)| d);
    let subject = headers.subject.as_deref().unwrap_or("");
    let subject_line = crate::text::printable(subject, MAX_SUBJECT);
    let original_id = headers
        .message_id
        .as_deref()
        .filter(|id| id.is_ascii() && !id.contains(['\r', '\n']));
    let reason = quarantine.map(|r| ascii(r, MAX_REASON));

    let mut m = String::with_capacity(2048 + head.len());
    let mut field = |name: &str, value: &str| {
        m.push_str(name);
        m.push_str(": ");
        m.push_str(value);
        m.push_str("\r\n");
    };
    field("From", &from_field(s.from, s.from_addr));
    field("To", &format!("<{rcpt}>"));
    let verb = if reason.is_some() {
        "Not processed"
    } else {
        "Processed"
    };
    field("Subject", &header_text(&format!("{verb}: {subject_line}")));
    field("Date", &crate::timefmt::rfc5322(s.now));
    field("Message-ID", &format!("<mdn.{}@{domain}>", s.token));
    if let Some(id) = original_id {
        field("In-Reply-To", id);
        field("References", id);
    }
    // RFC 3834: an automatic answer, so no one answers it automatically.
    field("Auto-Submitted", "auto-replied");
    field("MIME-Version", "1.0");
    field(
        "Content-Type",
        &format!(
            "multipart/report; report-type=disposition-notification;\r\n\tboundary=\"{boundary}\""
        ),
    );
    m.push_str("\r\n");
    m.push_str("This is a message disposition notification (RFC 8098).\r\n");

    // The human-readable part.
    m.push_str(&format!("\r\n--{boundary}\r\n"));
    let date = headers.date.as_deref().unwrap_or("(no date)");
    let mut text = format!(
        "Your message\r\n\r\n  Subject: {subject_line}\r\n  Date: {date}\r\n  To: {}\r\n\r\n",
        s.from_addr
    );
    match &reason {
        None => text.push_str(
            "was received and processed automatically. This is no guarantee that it has \
             been read or understood.\r\n",
        ),
        Some(r) => text.push_str(&format!(
            "was received but could not be processed automatically: {r}\r\n"
        )),
    }
    if text.is_ascii() {
        m.push_str("Content-Type: text/plain; charset=us-ascii\r\n\r\n");
        m.push_str(&text);
    } else {
        m.push_str(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        );
        let b64 = crypto::b64_encode(text.as_bytes());
        for chunk in b64.as_bytes().chunks(76) {
            m.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            m.push_str("\r\n");
        }
    }

    // The machine-readable part (RFC 8098 section 3.1).
    m.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: message/disposition-notification\r\n\r\n"
    ));
    m.push_str(&format!(
        "Reporting-UA: {domain}; popspool/{}\r\n",
        env!("CARGO_PKG_VERSION")
    ));
    let original_recipient = headers
        .all
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case("original-recipient"))
        .map(|f| f.raw.as_deref().unwrap_or(&f.value))
        .filter(|v| v.is_ascii() && v.contains(';'));
    if let Some(or) = original_recipient {
        m.push_str(&format!("Original-Recipient: {or}\r\n"));
    }
    m.push_str(&format!("Final-Recipient: rfc822; {}\r\n", s.from_addr));
    if let Some(id) = original_id {
        m.push_str(&format!("Original-Message-ID: {id}\r\n"));
    }
    match &reason {
        None => m.push_str("Disposition: automatic-action/MDN-sent-automatically; processed\r\n"),
        Some(r) => {
            m.push_str("Disposition: automatic-action/MDN-sent-automatically; processed/error\r\n");
            m.push_str(&format!("Error: {r}\r\n"));
        }
    }

    // The original header block, when it is small and plain ASCII.
    let head = head.strip_suffix(b"\n").unwrap_or(head);
    let head = head.strip_suffix(b"\r").unwrap_or(head);
    if !head.is_empty() && head.len() <= MAX_ATTACHED_HEADER_BYTES && head.is_ascii() {
        m.push_str(&format!(
            "\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        ));
        // ASCII, checked above; line ends made CRLF like the rest.
        let head = String::from_utf8_lossy(head);
        for line in head.split('\n') {
            m.push_str(line.strip_suffix('\r').unwrap_or(line));
            m.push_str("\r\n");
        }
        m.push_str(&format!("\r\n--{boundary}--\r\n"));
        return m.into_bytes();
    }
    m.push_str(&format!("\r\n--{boundary}--\r\n"));
    m.into_bytes()
}

/// `mdn_from` as a From field: as configured when ASCII, else with only
/// the display name encoded (RFC 2047 section 5: never the address).
fn from_field(from: &str, addr: &str) -> String {
    if from.is_ascii() {
        return from.to_string();
    }
    let name = from
        .split('<')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"');
    format!("{} <{addr}>", header_text(name))
}

/// A header value as ASCII: as it is when it already is, else one RFC 2047
/// encoded word per chunk of UTF-8 (base64).
fn header_text(v: &str) -> String {
    let v = crate::text::printable(v, MAX_SUBJECT + 20);
    if v.is_ascii() {
        return v;
    }
    // 45 bytes become 60 base64 characters: each word stays under the 75
    // characters of RFC 2047 section 2, and no character is split.
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in v.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    words.push(chunk);
    words
        .iter()
        .map(|w| format!("=?utf-8?b?{}?=", crypto::b64_encode(w.as_bytes())))
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// Printable ASCII only (other characters become `?`), cut to `max`.
fn ascii(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &[u8] = b"Return-Path: <partner@example.net>\r\n\
        Received: from mx.example.net\r\n\tby pop.example.com\r\n\
        Message-ID: <order-42@example.net>\r\n\
        Date: Fri, 21 Nov 2025 23:41:06 +0100\r\n\
        From: Partner <partner@example.net>\r\n\
        To: orders@example.com\r\n\
        Subject: =?utf-8?q?Bestellung_f=C3=BCr_M=C3=A4rz?=\r\n\
        Original-Recipient: rfc822; orders@example.com\r\n\
        Disposition-Notification-To: \"Partner EDI\" <partner@example.net>\r\n\
        Content-Type: text/plain\r\n\
        \r\n\
        ORDER 42\r\n";

    fn sender() -> Sender<'static> {
        Sender {
            from: "Receipts <orders@example.com>",
            from_addr: "orders@example.com",
            now: 1_795_304_466,
            token: "0123abcd",
        }
    }

    fn decide_raw(raw: &[u8], quarantine: Option<&str>) -> Decision {
        let d = mime::headers_only(raw);
        decide(
            &d.headers,
            d.kind,
            mime::header_block(raw),
            quarantine,
            &sender(),
        )
    }

    fn owed(raw: &[u8], quarantine: Option<&str>) -> Owed {
        match decide_raw(raw, quarantine) {
            Decision::Owe(o) => o,
            d => panic!("{d:?}"),
        }
    }

    fn with(raw: &[u8], from: &str, to: &str) -> Vec<u8> {
        String::from_utf8(raw.to_vec())
            .unwrap()
            .replace(from, to)
            .into_bytes()
    }

    /// The MDN read back by popspool's own decoder: a report with the
    /// fields of RFC 8098 section 3.
    #[test]
    fn processed_mdn_follows_rfc_8098() {
        let o = owed(REQUEST, None);
        assert_eq!(o.rcpt, "partner@example.net");
        assert!(o.message.is_ascii());
        let text = String::from_utf8(o.message.clone()).unwrap();
        // CRLF everywhere, no line over RFC 5322's 998 characters.
        assert!(!text.replace("\r\n", "").contains(['\r', '\n']));
        assert!(text.split("\r\n").all(|l| l.len() <= 998));
        for want in [
            "From: Receipts <orders@example.com>\r\n",
            "To: <partner@example.net>\r\n",
            "Date: Sat, 21 Nov 2026 23:41:06 +0000\r\n",
            "Message-ID: <mdn.0123abcd@example.com>\r\n",
            "In-Reply-To: <order-42@example.net>\r\n",
            "Auto-Submitted: auto-replied\r\n",
            "Content-Type: multipart/report; report-type=disposition-notification;\r\n",
            "Reporting-UA: example.com; popspool/",
            "Original-Recipient: rfc822; orders@example.com\r\n",
            "Final-Recipient: rfc822; orders@example.com\r\n",
            "Original-Message-ID: <order-42@example.net>\r\n",
            "Disposition: automatic-action/MDN-sent-automatically; processed\r\n",
            "Content-Type: text/rfc822-headers\r\n\r\nReturn-Path: <partner@example.net>\r\n",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
        assert!(!text.contains("Error:"));
        let d = mime::headers_only(&o.message);
        assert_eq!(d.kind, Kind::Report, "{:?}", d.problems);
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        assert_eq!(
            d.headers.subject.as_deref(),
            Some("Processed: Bestellung für März")
        );
        let r = d.report.unwrap();
        assert_eq!(r["type"], "disposition-notification");
        assert_eq!(r["original_message_id"], "<order-42@example.net>");
        assert_eq!(r["final_recipient"], "rfc822; orders@example.com");
        assert_eq!(
            r["disposition"],
            "automatic-action/MDN-sent-automatically; processed"
        );
        // An MDN never asks for one itself, and is itself never answered.
        assert!(d.headers.disposition_notification_to.is_none());
        let answer = decide(&d.headers, d.kind, b"", None, &sender());
        assert_eq!(answer, Decision::NotAsked);
    }

    #[test]
    fn quarantined_message_gets_an_error_disposition() {
        let o = owed(
            REQUEST,
            Some("body part selection: no part of type text/xml\u{1b}é"),
        );
        let text = String::from_utf8(o.message.clone()).unwrap();
        assert!(text.contains(
            "Disposition: automatic-action/MDN-sent-automatically; processed/error\r\n\
             Error: body part selection: no part of type text/xml??\r\n"
        ));
        let d = mime::headers_only(&o.message);
        let r = d.report.unwrap();
        assert_eq!(
            r["disposition"],
            "automatic-action/MDN-sent-automatically; processed/error"
        );
        assert_eq!(r["disposition_type"], "processed");
        assert_eq!(r["disposition_modifiers"], serde_json::json!(["error"]));
        assert_eq!(
            r["error"],
            "body part selection: no part of type text/xml??"
        );
        assert!(d.headers.subject.unwrap().starts_with("Not processed: "));
    }

    #[test]
    fn what_is_never_answered() {
        let no_request = with(REQUEST, "Disposition-Notification-To", "X-Not-A-Request");
        assert_eq!(decide_raw(&no_request, None), Decision::NotAsked);
        let skipped = |raw: &[u8], why: &str| match decide_raw(raw, None) {
            Decision::Skip(r) => assert!(r.contains(why), "{r}"),
            d => panic!("{d:?}"),
        };
        // A report is never answered with a report.
        let report = with(
            REQUEST,
            "Content-Type: text/plain",
            "Content-Type: multipart/report; report-type=delivery-status; boundary=b",
        );
        skipped(&report, "itself a report");
        // Suspicious: Return-Path differs, or is missing.
        let other = with(
            REQUEST,
            "<partner@example.net>\r\nReceived",
            "<bounce@example.org>\r\nReceived",
        );
        skipped(&other, "Return-Path <bounce@example.org> differs");
        let none = with(REQUEST, "Return-Path: <partner@example.net>\r\n", "");
        skipped(&none, "no Return-Path");
        let several = with(
            REQUEST,
            "\"Partner EDI\" <partner@example.net>",
            "partner@example.net, boss@example.net",
        );
        skipped(&several, "several addresses");
        let empty = with(REQUEST, "\"Partner EDI\" <partner@example.net>", "");
        skipped(&empty, "no address");
        // A required option popspool does not know (a signed receipt).
        let signed = with(
            REQUEST,
            "Content-Type: text/plain",
            "Disposition-Notification-Options: signed-receipt-protocol=required,pkcs7-signature",
        );
        skipped(&signed, "required parameter");
        let optional = with(
            REQUEST,
            "Content-Type: text/plain",
            "Disposition-Notification-Options: signed-receipt-protocol=optional,pkcs7-signature",
        );
        assert!(matches!(decide_raw(&optional, None), Decision::Owe(_)));
        // The domain's case does not matter; the local part's does.
        let upper = with(
            REQUEST,
            "Return-Path: <partner@example.net>",
            "Return-Path: <partner@EXAMPLE.NET>",
        );
        assert!(matches!(decide_raw(&upper, None), Decision::Owe(_)));
        let local = with(
            REQUEST,
            "Return-Path: <partner@example.net>",
            "Return-Path: <Partner@example.net>",
        );
        skipped(&local, "differs");
    }

    #[test]
    fn a_non_ascii_sender_name_is_encoded_not_its_address() {
        let s = Sender {
            from: "Bestellannahme Müller <orders@example.com>",
            ..sender()
        };
        let d = mime::headers_only(REQUEST);
        let Decision::Owe(o) = decide(&d.headers, d.kind, b"", None, &s) else {
            panic!("owed")
        };
        assert!(o.message.is_ascii());
        let back = mime::headers_only(&o.message);
        assert_eq!(
            back.headers.from.as_deref(),
            Some("\"Bestellannahme Müller\" <orders@example.com>")
        );
    }

    #[test]
    fn big_or_8bit_headers_are_not_attached() {
        let mut big = REQUEST.to_vec();
        let filler = "X-Filler: ".to_string() + &"y".repeat(900) + "\r\n";
        let at = big.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
        let fill: Vec<u8> = filler
            .repeat(MAX_ATTACHED_HEADER_BYTES / 900 + 1)
            .into_bytes();
        big.splice(at..at, fill);
        let o = owed(&big, None);
        assert!(!String::from_utf8(o.message)
            .unwrap()
            .contains("text/rfc822-headers"));
        let latin = with(REQUEST, "Content-Type: text/plain", "X-8bit: caf\u{e9}");
        let o = owed(&latin, None);
        assert!(o.message.is_ascii());
        assert!(!String::from_utf8(o.message)
            .unwrap()
            .contains("text/rfc822-headers"));
    }
}
