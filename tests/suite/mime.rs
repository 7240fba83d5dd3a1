//! Decoding tests against the fixtures in tests/fixtures/mime/ and messages
//! built in the tests (charsets, hostile input).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use popspool::mime::{
    decode, decode_file, headers_only, headers_only_file, Attachment, Body, Decoded, Headers, Kind,
    Options,
};
use serde_json::json;

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "popspool-mime-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(p.join("entry")).unwrap();
        TempDir(p)
    }

    /// The entry directory; its parent is checked for stray files.
    fn entry(&self) -> PathBuf {
        self.0.join("entry")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn fixture(name: &str) -> Vec<u8> {
    fs::read(Path::new("tests/fixtures/mime").join(name)).unwrap()
}

fn run(raw: &[u8], opts: &Options) -> (Decoded, TempDir) {
    let t = TempDir::new();
    let d = decode(raw, opts, &t.entry()).unwrap();
    // Nothing may appear next to the entry directory.
    let siblings: Vec<_> = fs::read_dir(&t.0).unwrap().collect();
    assert_eq!(siblings.len(), 1, "files written outside the entry");
    // Every reported file exists, and nothing else was written.
    let mut on_disk = list(&t.entry());
    on_disk.sort();
    let mut reported = d.files.clone();
    reported.sort();
    assert_eq!(on_disk, reported);
    same_from_file(raw, opts, &d, &t);
    (d, t)
}

/// Decoding the message from a file (as a big message is) gives the same
/// result and byte-identical files as decoding it from memory.
fn same_from_file(raw: &[u8], opts: &Options, d: &Decoded, t: &TempDir) {
    let f = TempDir::new();
    let path = f.0.join("message.eml");
    fs::write(&path, raw).unwrap();
    let from_file = decode_file(fs::File::open(&path).unwrap(), opts, &f.entry()).unwrap();
    assert_eq!(&from_file, d, "decoded from a file");
    for rel in &d.files {
        let a = fs::read(t.entry().join(rel)).unwrap();
        let b = fs::read(f.entry().join(rel)).unwrap();
        assert!(a == b, "{rel} differs when decoded from a file");
    }
    let h = headers_only_file(fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(h, headers_only(raw), "headers only, from a file");
}

fn list(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if e.file_type().unwrap().is_dir() {
            for f in list(&e.path()) {
                out.push(format!("{name}/{f}"));
            }
        } else {
            out.push(name);
        }
    }
    out
}

fn read(t: &TempDir, rel: &str) -> String {
    String::from_utf8(fs::read(t.entry().join(rel)).unwrap()).unwrap()
}

fn sha256(data: &[u8]) -> String {
    openssl::sha::sha256(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn default() -> Options {
    Options::default()
}

fn by_type(t: &str) -> Options {
    Options {
        body_part_index: 0,
        body_part_content_type: Some(t.to_string()),
    }
}

fn by_index(n: u32, t: Option<&str>) -> Options {
    Options {
        body_part_index: n,
        body_part_content_type: t.map(str::to_string),
    }
}

fn files_of(d: &Decoded) -> Vec<&str> {
    d.attachments.iter().map(|a| a.file.as_str()).collect()
}

/// Each attachment's stored file and the sender's name.
fn names_of(d: &Decoded) -> Vec<(&str, Option<&str>)> {
    d.attachments
        .iter()
        .map(|a| (a.file.as_str(), a.filename.as_deref()))
        .collect()
}

// The bytes the fixture generator encoded.
fn pdf_bytes() -> Vec<u8> {
    let mut v = b"%PDF-1.4\n% fake pdf for tests\n".to_vec();
    v.extend(0..=255u8);
    v
}

fn png_bytes() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend(0..100u8);
    v
}

#[test]
fn headers_are_decoded() {
    let (d, t) = run(&fixture("headers.eml"), &default());
    let mut headers = d.headers.clone();
    assert_eq!(headers.all.len(), 12, "{:?}", headers.all);
    headers.all.clear();
    assert_eq!(
        headers,
        Headers {
            message_id: Some("<hdr-1@example.com>".into()),
            date: Some("Fri, 21 Nov 2025 23:41:06 +0100 (CET)".into()),
            date_iso: Some("2025-11-21T22:41:06Z".into()),
            from: Some("\"André Dupont\" <andre@example.com>".into()),
            to: vec![
                "\"Müller, Hans\" <hans@example.org>".into(),
                "plain@example.org".into(),
                "\"山田\" <yamada@example.jp>".into(),
            ],
            cc: vec![
                "alice@example.com".into(),
                "\"Bob B.\" <bob@example.com>".into()
            ],
            reply_to: Some("\"Réponse\" <reply@example.com>".into()),
            subject: Some("Grüße aus Łódź und Grüße nochmal".into()),
            disposition_notification_to: Some("andre@example.com".into()),
            all: Vec::new(),
        }
    );
    assert_eq!(d.kind, Kind::Message);
    assert_eq!(
        d.body,
        Some(Body {
            file: "body.txt".into(),
            content_type: "text/plain".into(),
            charset: Some("utf-8".into())
        })
    );
    assert_eq!(
        read(&t, "body.txt"),
        "Hallo Welt, café mit einem sehr langen Satz, der weich umbrochen wird. \r\nZweite Zeile.\r\n"
    );
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    assert_eq!(d.quarantine, None);

    // meta.json shape: None is null, kind is lowercase, skipped fields absent.
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["kind"], "message");
    assert_eq!(v["report"], serde_json::Value::Null);
    assert!(v.get("quarantine").is_none() && v.get("files").is_none());
}

#[test]
fn alternative_with_related_and_attachment() {
    let raw = fixture("alternative_related.eml");
    let (d, t) = run(&raw, &default());
    assert_eq!(d.kind, Kind::File);
    assert_eq!(
        d.body.as_ref().unwrap().charset.as_deref(),
        Some("iso-8859-1")
    );
    assert_eq!(read(&t, "body.txt"), "Grüße, see the attached report.");
    // The HTML alternative and its inline logo are not attachments.
    assert_eq!(
        d.attachments,
        vec![Attachment {
            file: "attachments/report.pdf".into(),
            filename: Some("report.pdf".into()),
            content_type: "application/pdf".into(),
            size: pdf_bytes().len() as u64,
            sha256: sha256(&pdf_bytes()),
        }]
    );
    assert_eq!(
        fs::read(t.entry().join("attachments/report.pdf")).unwrap(),
        pdf_bytes()
    );
    assert_eq!(d.dirs, vec!["attachments".to_string()]);

    // Choosing the HTML: the plain alternative goes, the logo in the chosen
    // branch becomes an attachment.
    let (d, t) = run(&raw, &by_type("text/html"));
    assert_eq!(d.body.as_ref().unwrap().file, "body.html");
    assert_eq!(
        read(&t, "body.html"),
        "<html><body><p>Grüße</p><img src=\"cid:logo\"></body></html>"
    );
    assert_eq!(
        files_of(&d),
        ["attachments/part-3.png", "attachments/report.pdf"]
    );
    assert_eq!(d.attachments[0].sha256, sha256(&png_bytes()));
}

#[test]
fn cascade_description_body() {
    let raw = fixture("cascade.eml");
    let (d, t) = run(&raw, &default());
    assert_eq!(
        d.body,
        Some(Body {
            file: "body.txt".into(),
            content_type: "application/xml".into(),
            charset: None
        })
    );
    assert_eq!(read(&t, "body.txt"), "<payload>described</payload>");
    assert_eq!(
        files_of(&d),
        [
            "attachments/logo.png",
            "attachments/a.csv",
            "attachments/part-3.txt",
            "attachments/part-4.xml",
            "attachments/part-6.xml"
        ]
    );
}

#[test]
fn cascade_each_rule() {
    let raw = String::from_utf8(fixture("cascade.eml")).unwrap();
    // Without the description: the first text/xml.
    let raw = raw.replace("Content-Description: Body", "X-Note: none");
    let (d, t) = run(raw.as_bytes(), &default());
    assert_eq!(d.body.as_ref().unwrap().content_type, "text/xml");
    assert_eq!(read(&t, "body.txt"), "<order id=\"1\"/>");
    // Without text/xml: text/plain.
    let raw = raw.replace("text/xml", "application/x-other");
    let (d, t) = run(raw.as_bytes(), &default());
    assert_eq!(read(&t, "body.txt"), "plain text part");
    assert_eq!(d.body.as_ref().unwrap().charset, None);
    // Without text/plain: any text/*.
    let raw = raw.replace("text/plain", "application/x-other");
    let (d, t) = run(raw.as_bytes(), &default());
    assert_eq!(d.body.as_ref().unwrap().content_type, "text/csv");
    assert_eq!(read(&t, "body.txt"), "x,y");
    // Without any text: the first part, a PNG, which is not text.
    let raw = raw.replace("text/csv", "application/x-other");
    let (d, _t) = run(raw.as_bytes(), &default());
    assert_eq!(d.body, None);
    assert_eq!(d.quarantine, None);
    assert_eq!(d.attachments.len(), 6);
    assert_eq!(d.attachments[0].file, "attachments/logo.png");
    assert!(d.problems[0].contains("part 1 (image/png): selected as body but not text"));
}

#[test]
fn selection_by_type_and_index() {
    let raw = fixture("cascade.eml");
    let (d, t) = run(&raw, &by_type("text/xml"));
    assert_eq!(read(&t, "body.txt"), "<order id=\"1\"/>");
    assert_eq!(d.attachments.len(), 5);

    let (_, t) = run(&raw, &by_type("TEXT/XML"));
    assert_eq!(read(&t, "body.txt"), "<order id=\"1\"/>");

    let (_, t) = run(&raw, &by_index(6, None));
    assert_eq!(read(&t, "body.txt"), "<order id=\"2\"/>");

    let (_, t) = run(&raw, &by_index(3, None));
    assert_eq!(read(&t, "body.txt"), "plain text part");

    let (_, t) = run(&raw, &by_index(2, Some("text/xml")));
    assert_eq!(read(&t, "body.txt"), "<order id=\"2\"/>");

    let (_, t) = run(&raw, &by_index(1, Some("text/csv")));
    assert_eq!(read(&t, "body.txt"), "x,y");
}

#[test]
fn selection_failure_quarantines_but_decodes() {
    let raw = fixture("cascade.eml");
    for (opts, reason) in [
        (
            by_index(7, None),
            "body part selection: no part number 7 (the message has 6 leaf parts)",
        ),
        (
            by_type("application/pdf"),
            "body part selection: no part of type application/pdf",
        ),
        (
            by_index(3, Some("text/xml")),
            "body part selection: no part number 3 of type text/xml (the message has 2)",
        ),
    ] {
        let (d, _t) = run(&raw, &opts);
        assert_eq!(d.quarantine.as_deref(), Some(reason));
        assert_eq!(d.body, None);
        assert_eq!(d.attachments.len(), 6);
        assert_eq!(d.kind, Kind::File);
    }
}

#[test]
fn non_text_body_by_type_is_written_as_text() {
    let raw = fixture("xml_body_by_type.eml");
    let (d, t) = run(&raw, &by_type("application/xml"));
    assert_eq!(
        d.body,
        Some(Body {
            file: "body.txt".into(),
            content_type: "application/xml".into(),
            charset: Some("utf-8".into())
        })
    );
    assert_eq!(read(&t, "body.txt"), "<order>ä</order>");
    assert_eq!(files_of(&d), ["attachments/part-1.txt"]);
    assert_eq!(read(&t, "attachments/part-1.txt"), "cover note");
}

#[test]
fn non_text_first_part_becomes_attachment() {
    let (d, _t) = run(&fixture("non_text_first.eml"), &default());
    assert_eq!(d.kind, Kind::File);
    assert_eq!(d.body, None);
    assert_eq!(
        files_of(&d),
        ["attachments/part-1.pdf", "attachments/part-2.png"]
    );
    assert_eq!(d.attachments[0].sha256, sha256(&pdf_bytes()));
    assert_eq!(
        d.problems,
        ["part 1 (application/pdf): selected as body but not text; saved as an attachment"]
    );
}

#[test]
fn attached_messages_are_eml_files() {
    let (d, t) = run(&fixture("rfc822_attached.eml"), &default());
    assert_eq!(read(&t, "body.txt"), "See the forwarded message.");
    assert_eq!(
        files_of(&d),
        [
            "attachments/Quarterly_numbers €.eml",
            "attachments/named.eml"
        ]
    );
    assert_eq!(d.attachments[0].content_type, "message/rfc822");
    assert_eq!(d.attachments[0].filename, None);
    assert_eq!(d.attachments[1].filename.as_deref(), Some("named.eml"));
    let inner = read(&t, "attachments/Quarterly_numbers €.eml");
    assert!(inner.starts_with("From: someone@example.net\r\n"));
    assert!(inner.ends_with("--b2--"));
    // The attached message's text/xml is not descended into for selection.
    let (d, _t) = run(&fixture("rfc822_attached.eml"), &by_type("text/xml"));
    assert!(d.quarantine.is_some());
}

#[test]
fn parts_without_content_type_and_digest() {
    let (d, t) = run(&fixture("no_content_type.eml"), &default());
    assert_eq!(read(&t, "body.txt"), "first part has no headers at all");
    assert_eq!(d.body.as_ref().unwrap().charset, None);
    assert_eq!(
        files_of(&d),
        ["attachments/digest entry 1.eml", "attachments/message.eml"]
    );
    assert!(d
        .attachments
        .iter()
        .all(|a| a.content_type == "message/rfc822"));
}

#[test]
fn truncated_multipart_keeps_what_it_can() {
    let (d, t) = run(&fixture("truncated.eml"), &default());
    assert_eq!(read(&t, "body.txt"), "body survives");
    assert_eq!(read(&t, "attachments/data.bin"), "0123456789abcd");
    assert_eq!(
        d.problems,
        ["message (multipart/mixed): closing boundary missing (truncated?); kept what could be read"]
    );
}

#[test]
fn missing_boundary_parameter() {
    let (d, t) = run(&fixture("no_boundary.eml"), &default());
    assert_eq!(read(&t, "body.txt"), "guessed body");
    assert_eq!(files_of(&d), ["attachments/t.csv"]);
    assert_eq!(d.problems.len(), 1);
}

#[test]
fn hostile_file_names() {
    let (d, t) = run(&fixture("hostile_names.eml"), &default());
    let expect = [
        ("attachments/passwd", Some("../../etc/passwd")),
        ("attachments/abs", Some("/abs")),
        ("attachments/b", Some("a\\b")),
        ("attachments/evilname.txt", Some("evil\0name.txt")),
        ("LONG", None),
        ("attachments/dup.txt", Some("dup.txt")),
        ("attachments/dup (2).txt", Some("dup.txt")),
        ("attachments/DUP (3).TXT", Some("DUP.TXT")),
        ("attachments/part-10.bin", Some(".")),
        ("attachments/part-11.bin", Some("..")),
        ("attachments/invoicefdp.exe", Some("invoice\u{202e}fdp.exe")),
        (
            "attachments/tabandnewline.txt",
            Some("tab\tand\nnewline.txt"),
        ),
        ("attachments/_.htaccess", Some(".htaccess")),
        ("attachments/_CON.txt", Some("CON.txt")),
    ];
    assert_eq!(d.attachments.len(), expect.len());
    for (a, (file, original)) in d.attachments.iter().zip(expect) {
        if file == "LONG" {
            let name = a.file.strip_prefix("attachments/").unwrap();
            assert_eq!(name.len(), 200);
            assert!(name.ends_with("xxx.pdf"));
            assert_eq!(a.filename.as_ref().unwrap().len(), 304);
        } else {
            assert_eq!(a.file, file);
            assert_eq!(a.filename.as_deref(), original);
        }
    }
    // Everything is a plain file directly in attachments/.
    for e in fs::read_dir(t.entry().join("attachments")).unwrap() {
        assert!(e.unwrap().file_type().unwrap().is_file());
    }
}

#[test]
fn invisible_characters_and_device_names() {
    let (d, t) = run(&fixture("invisible_names.eml"), &default());
    let expect = [
        ("attachments/invoice.pdf", "in\u{200b}voice.pdf"),
        (
            "attachments/report.txt",
            "re\u{200c}\u{200d}port\u{2060}.txt",
        ),
        ("attachments/bom.txt", "\u{feff}bom.txt"),
        ("attachments/softhyphen.txt", "soft\u{ad}hyphen.txt"),
        (
            "attachments/lineparasep.txt",
            "line\u{2028}para\u{2029}sep.txt",
        ),
        ("attachments/_CONIN$", "CONIN$"),
        ("attachments/_conout$.txt", "conout$.txt"),
        ("attachments/_COM¹.txt", "COM¹.txt"),
        ("attachments/_com²", "com²"),
        ("attachments/_LPT³.log", "LPT³.log"),
        ("attachments/_lpt¹", "lpt¹"),
    ];
    assert_eq!(d.attachments.len(), expect.len());
    for (a, (file, original)) in d.attachments.iter().zip(expect) {
        assert_eq!(a.file, file);
        assert_eq!(a.filename.as_deref(), Some(original));
        assert!(t.entry().join(file).is_file(), "{file}");
    }
}

#[test]
fn rfc2231_and_encoded_names() {
    let (d, _t) = run(&fixture("rfc2231.eml"), &default());
    assert_eq!(
        names_of(&d),
        [
            (
                "attachments/café crème br_ul_ee.txt",
                Some("café crème br\"ul\"ee.txt")
            ),
            ("attachments/€ invoice.pdf", Some("€ invoice.pdf")),
            (
                "attachments/from-content-type.pdf",
                Some("from-content-type.pdf")
            ),
            ("attachments/Привет.txt", Some("Привет.txt")),
            ("attachments/日本.txt", Some("日本.txt")),
        ]
    );
    // Attachments are bytes as sent: no charset conversion.
    assert_eq!(d.attachments[4].size, 4);
}

#[test]
fn delivery_status_report() {
    let (d, t) = run(&fixture("dsn.eml"), &default());
    assert_eq!(d.kind, Kind::Report);
    assert!(read(&t, "body.txt").starts_with("This is the mail system"));
    assert_eq!(
        d.report,
        Some(json!({
            "type": "delivery-status",
            "reporting_mta": "dns; mx.example.net",
            "arrival_date": "Fri, 21 Nov 2025 10:00:00 +0000 (UTC)",
            "original_envelope_id": "ENV-42",
            "original_message_id": "<order-42@example.com>",
            "recipients": [
                {
                    "final_recipient": "rfc822; gone@example.org",
                    "original_recipient": "rfc822;gone@example.org",
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnostic_code": "smtp; 550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown",
                    "remote_mta": "dns; mx.example.org"
                },
                {
                    "final_recipient": "rfc822; later@example.org",
                    "original_recipient": null,
                    "action": "delayed",
                    "status": "4.4.1",
                    "diagnostic_code": null,
                    "remote_mta": null
                }
            ]
        }))
    );
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    // mime = no still reports it.
    let h = headers_only(&fixture("dsn.eml"));
    assert_eq!(h.kind, Kind::Report);
    assert_eq!(h.report, d.report);
}

#[test]
fn disposition_notification_report() {
    let (d, _t) = run(&fixture("mdn.eml"), &default());
    assert_eq!(d.kind, Kind::Report);
    assert_eq!(
        d.report,
        Some(json!({
            "type": "disposition-notification",
            "reporting_ua": "mail.example.org; ExampleMail 1.0",
            "final_recipient": "rfc822;rcpt@example.org",
            "original_recipient": "rfc822;rcpt@example.org",
            "original_message_id": "<order-42@example.com>",
            "disposition": "manual-action/MDN-sent-manually; displayed",
            "disposition_type": "displayed",
            "disposition_modifiers": [],
            "error": null
        }))
    );
    // Without Original-Message-ID the attached message's Message-ID is used.
    let raw = String::from_utf8(fixture("mdn.eml"))
        .unwrap()
        .replace("Original-Message-ID: <order-42@example.com>\r\n", "");
    let (d, _t) = run(raw.as_bytes(), &default());
    assert_eq!(
        d.report.unwrap()["original_message_id"],
        "<order-42-copy@example.com>"
    );
}

#[test]
fn transfer_encodings() {
    let (d, t) = run(&fixture("encodings.eml"), &default());
    assert_eq!(
        read(&t, "body.txt"),
        "soft break and trailing space\r\n€= ok"
    );
    assert_eq!(read(&t, "attachments/pad.bin"), "hello world");
    assert_eq!(read(&t, "attachments/stray.bin"), "hello");
    assert_eq!(read(&t, "attachments/raw.bin"), "raw\x01\x02 bytes");
    assert_eq!(read(&t, "attachments/uu.bin"), "begin 644 x");
    assert_eq!(
        d.problems,
        [
            "part 5 (application/octet-stream): unknown Content-Transfer-Encoding \"x-uuencode\", content kept undecoded",
            "part 3 (application/octet-stream): 1 characters invalid in base64 were skipped",
        ]
    );
}

fn b64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = u32::from(c[0]) << 16
            | u32::from(*c.get(1).unwrap_or(&0)) << 8
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn body_and_header_charsets() {
    let cases = [
        ("utf-8", "Grüße € 😀"),
        ("us-ascii", "plain ascii"),
        ("iso-8859-1", "Grüße, señor"),
        ("iso-8859-2", "Łódź, Kraków"),
        ("iso-8859-15", "€ œuvre"),
        ("windows-1250", "Łódź čšž"),
        ("windows-1252", "“quoted” € …"),
        ("koi8-r", "Привет, мир"),
        ("iso-2022-jp", "日本語のテキスト"),
        ("shift_jis", "日本語のテキスト"),
        ("euc-kr", "한국어 텍스트"),
        ("gb2312", "中文文本"),
        ("gbk", "中文文本"),
        ("gb18030", "中文文本 𠀀"),
        ("big5", "繁體中文"),
    ];
    for (label, text) in cases {
        let enc = encoding_rs::Encoding::for_label(label.as_bytes()).unwrap();
        let (bytes, _, unmappable) = enc.encode(text);
        assert!(!unmappable, "{label}");
        for cte in ["8bit", "base64"] {
            let mut raw = format!(
                "From: a@example.com\r\nSubject: =?{label}?B?{}?=\r\nContent-Type: text/plain; charset=\"{}\"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n",
                b64(&bytes),
                label.to_uppercase()
            )
            .into_bytes();
            if cte == "base64" {
                raw.extend_from_slice(b64(&bytes).as_bytes());
            } else {
                raw.extend_from_slice(&bytes);
            }
            let (d, t) = run(&raw, &default());
            assert_eq!(read(&t, "body.txt"), text, "{label} {cte}");
            assert_eq!(d.headers.subject.as_deref(), Some(text), "{label}");
            assert_eq!(d.body.unwrap().charset.as_deref(), Some(label));
            assert!(d.problems.is_empty(), "{label}: {:?}", d.problems);
        }
    }
}

#[test]
fn unknown_or_missing_charset_degrades() {
    let raw = b"From: a@b.example\r\nContent-Type: text/plain; charset=x-klingon\r\n\r\ncaf\xe9";
    let (d, t) = run(raw, &default());
    assert_eq!(read(&t, "body.txt"), "café");
    assert_eq!(d.body.unwrap().charset.as_deref(), Some("x-klingon"));
    assert_eq!(
        d.problems,
        ["part 1 (text/plain): unknown charset \"x-klingon\", read as windows-1252"]
    );

    let raw = "From: a@b.example\r\nContent-Type: text/plain; charset=x-klingon\r\n\r\ncafé";
    let (d, t) = run(raw.as_bytes(), &default());
    assert_eq!(read(&t, "body.txt"), "café");
    assert!(d.problems[0].ends_with("read as UTF-8"));

    // No charset, or us-ascii, with 8-bit UTF-8 inside: read as UTF-8, quietly.
    let raw = "From: a@b.example\r\n\r\nnaïve";
    let (d, t) = run(raw.as_bytes(), &default());
    assert_eq!(read(&t, "body.txt"), "naïve");
    assert!(d.problems.is_empty());
    let raw = b"From: a@b.example\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nna\xefve";
    let (_, t) = run(raw, &default());
    assert_eq!(read(&t, "body.txt"), "naïve");

    // Declared UTF-8 that is not: replacement characters and a problem.
    let raw = b"From: a@b.example\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nna\xefve";
    let (d, t) = run(raw, &default());
    assert_eq!(read(&t, "body.txt"), "na\u{fffd}ve");
    assert_eq!(
        d.problems,
        ["part 1 (text/plain): bytes not valid in UTF-8 were replaced by U+FFFD"]
    );
}

#[test]
fn raw_utf8_headers_and_8bit_latin1() {
    let raw = b"From: J\xc3\xbcrgen <j@example.com>\r\nSubject: R\xe9sum\xe9 =?utf-8?Q?=E2=82=AC?=\r\nTo: undisclosed-recipients:;\r\nDate: not a date\r\n\r\nx";
    let (d, _t) = run(raw, &default());
    assert_eq!(
        d.headers.from.as_deref(),
        Some("\"Jürgen\" <j@example.com>")
    );
    assert_eq!(d.headers.subject.as_deref(), Some("Résumé €"));
    assert!(d.headers.to.is_empty());
    assert_eq!(d.headers.date.as_deref(), Some("not a date"));
    assert_eq!(d.headers.date_iso, None);
}

#[test]
fn headers_only_writes_nothing() {
    let h = headers_only(&fixture("alternative_related.eml"));
    assert_eq!(h.kind, Kind::File);
    assert_eq!(h.body, None);
    assert!(h.attachments.is_empty() && h.files.is_empty());
    assert_eq!(
        h.headers.subject.as_deref(),
        Some("alternative and related")
    );
    assert_eq!(headers_only(&fixture("headers.eml")).kind, Kind::Message);
}

#[test]
fn undecodable_input() {
    // Nothing at all, or binary data: no message (text without a header
    // is one: `message_without_header_is_all_body`).
    for raw in [&b""[..], b"\x00\x01\x02\xff binary"] {
        let (d, _t) = run(raw, &default());
        assert_eq!(d.kind, Kind::Undecodable, "{raw:?}");
        assert!(d.files.is_empty() && d.body.is_none());
        assert!(d
            .problems
            .last()
            .unwrap()
            .starts_with("no header fields found"));
        assert_eq!(d.quarantine, None);
        let (d, _t) = run(raw, &by_index(1, None));
        assert!(d.quarantine.is_some());
    }
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as u8
        })
        .collect()
}

fn timed(limit_secs: u64, raw: &[u8]) -> Decoded {
    let start = Instant::now();
    let (d, _t) = run(raw, &default());
    let _ = headers_only(raw);
    assert!(
        start.elapsed() < Duration::from_secs(limit_secs),
        "took {:?}",
        start.elapsed()
    );
    d
}

#[test]
fn garbage_never_panics() {
    for seed in 0..20 {
        let _ = timed(10, &noise(64 * 1024, seed));
    }
    // Garbage after a plausible header.
    let mut raw = b"Content-Type: multipart/mixed; boundary=\"\x01\"\r\n\r\n".to_vec();
    raw.extend(noise(100_000, 99));
    let _ = timed(10, &raw);
}

#[test]
fn truncated_fixtures_never_panic() {
    for entry in fs::read_dir("tests/fixtures/mime").unwrap() {
        let raw = fs::read(entry.unwrap().path()).unwrap();
        let step = (raw.len() / 60).max(1);
        for cut in (0..raw.len()).step_by(step) {
            let _ = timed(5, &raw[..cut]);
            // And with a byte flipped at the cut.
            let mut flipped = raw.clone();
            flipped[cut] ^= 0x5a;
            let _ = timed(5, &flipped);
        }
    }
}

#[test]
fn deep_nesting_is_bounded() {
    let mut raw = String::from("From: a@example.com\r\n");
    for i in 0..1000 {
        raw.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
        ));
    }
    raw.push_str("\r\ndeep\r\n");
    let d = timed(10, raw.as_bytes());
    assert!(d
        .problems
        .iter()
        .any(|p| p.contains("nested deeper than 100 levels")));
    assert_eq!(d.body, None);
}

#[test]
fn huge_header_is_capped() {
    let mut raw = b"From: a@example.com\r\nSubject: ".to_vec();
    for _ in 0..(5 << 20) / 24 {
        raw.extend_from_slice(b"=?utf-8?Q?=C3=A4bc?= x ");
    }
    raw.extend_from_slice(b"\r\n\r\nbody\r\n");
    let d = timed(20, &raw);
    assert!(d.problems[0].contains("header block larger than 1048576 bytes"));
    assert!(d.headers.subject.unwrap().starts_with("äbc x äbc"));

    // A single 5 MiB line without any line break.
    let mut raw = b"Subject: ".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 5 << 20));
    let d = timed(20, &raw);
    assert_eq!(d.headers.subject.unwrap().len(), (1 << 20) - 9);
}

#[test]
fn many_parts_are_bounded() {
    let mut raw =
        String::from("From: a@example.com\r\nContent-Type: multipart/mixed; boundary=p\r\n\r\n");
    for i in 0..12_000 {
        raw.push_str(&format!(
            "--p\r\nContent-Type: application/octet-stream\r\n\r\n{i}\r\n"
        ));
    }
    raw.push_str("--p--\r\n");
    let d = timed(60, raw.as_bytes());
    assert_eq!(d.attachments.len(), 1000);
    assert!(d
        .problems
        .iter()
        .any(|p| p.contains("more than 10000 MIME parts")));
    assert!(d
        .problems
        .iter()
        .any(|p| p.contains("only the first 1000 were written")));
}

#[test]
fn encoded_words_next_to_raw_text_and_folding() {
    let raw = "From: =?utf-8?Q?=C3=89ric?=\r\n <e@example.com>\r\nSubject: Re:=?utf-8?B?IMOpdMOp?=\r\n\t=?utf-8?Q?_=C3=A9t=C3=A9?= fin\r\n\r\nx";
    let (d, _t) = run(raw.as_bytes(), &default());
    assert_eq!(d.headers.subject.as_deref(), Some("Re: été été fin"));
    assert_eq!(d.headers.from.as_deref(), Some("\"Éric\" <e@example.com>"));
}

#[test]
fn comments_in_mime_fields() {
    let (d, t) = run(&fixture("comments.eml"), &default());
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    let body = d.body.as_ref().unwrap();
    assert_eq!(body.charset.as_deref(), Some("utf-8"));
    assert_eq!(read(&t, &body.file), "café (au lait)");
    let csv = b"a,b\n1,2\n";
    assert_eq!(
        d.attachments,
        vec![Attachment {
            file: "attachments/notes (v2).csv".into(),
            filename: Some("notes (v2).csv".into()),
            content_type: "text/csv".into(),
            size: csv.len() as u64,
            sha256: sha256(csv),
        }]
    );
    assert_eq!(read(&t, "attachments/notes (v2).csv").as_bytes(), csv);
}

/// `headers.all` (README, "The spool"): every field in order, repeats
/// kept, folds unfolded, encoded words decoded with the raw text as a
/// third element only where decoding changed it.
#[test]
fn all_headers_in_order_with_raw_where_decoded() {
    let raw = b"Received: from a.example\r\n\tby b.example; Fri, 21 Nov 2025 23:41:06 +0100\r\n\
        Received: from c.example by d.example\r\n\
        Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n =?ISO-8859-1?Q?_caf=E9?=\r\n\
        X-Raw-8bit: Gr\xc3\xbc\xc3\x9fe\r\n\
        X-Latin1: caf\xe9\r\n\
        X-Empty:\r\n\
        X-Spaced  :   v  \r\n\
        Comments: first\r\n\
        Comments: =?utf-8?b?w6Q=?=\r\n\
        \r\nbody\r\n";
    let d = headers_only(raw);
    let all = serde_json::to_value(&d.headers.all).unwrap();
    assert_eq!(
        all,
        json!([
            [
                "Received",
                "from a.example by b.example; Fri, 21 Nov 2025 23:41:06 +0100"
            ],
            ["Received", "from c.example by d.example"],
            [
                "Subject",
                "Grüße café",
                "=?UTF-8?Q?Gr=C3=BC=C3=9Fe?= =?ISO-8859-1?Q?_caf=E9?="
            ],
            ["X-Raw-8bit", "Grüße"],
            ["X-Latin1", "café"],
            ["X-Empty", ""],
            ["X-Spaced", "v"],
            ["Comments", "first"],
            ["Comments", "ä", "=?utf-8?b?w6Q=?="],
        ])
    );
    // Inside meta.json it sits under "headers", next to the main fields.
    let meta = serde_json::to_value(&d).unwrap();
    assert_eq!(meta["headers"]["all"][2][0], "Subject");
    assert_eq!(meta["headers"]["subject"], "Grüße café");
    // The whole block is bounded like the rest (MAX_HEADER_BYTES): a
    // message of only header fields yields at most that much.
    let mut big = Vec::new();
    while big.len() < (1 << 20) + 4096 {
        big.extend_from_slice(b"X-Filler: 0123456789abcdef0123456789abcdef\r\n");
    }
    big.extend_from_slice(b"\r\nbody\r\n");
    let d = headers_only(&big);
    let bytes: usize = d
        .headers
        .all
        .iter()
        .map(|f| f.name.len() + f.value.len() + 4)
        .sum();
    assert!(bytes <= (1 << 20) + 64, "{bytes}");
    assert!(d.headers.all.len() > 20_000);
}

#[test]
fn message_without_header_is_all_body() {
    let raw = fixture("no_header.eml");
    let (d, t) = run(&raw, &default());
    assert_eq!(d.kind, Kind::Message);
    assert_eq!(d.headers, Headers::default());
    assert_eq!(read(&t, "body.txt").as_bytes(), &raw[..]);
    assert_eq!(
        d.problems,
        ["no header fields found: the whole message is read as its body"]
    );
    assert_eq!(headers_only(&raw).kind, Kind::Message);
    // The one part is part 1 for a configured selection too.
    let (d, _t) = run(&raw, &by_index(1, Some("text/plain")));
    assert_eq!(d.quarantine, None);
    assert_eq!(d.body.unwrap().file, "body.txt");

    // An empty first line: an empty header, and the rest is body.
    let (d, t) = run(b"\r\n\r\njust a body", &default());
    assert_eq!(d.kind, Kind::Message);
    assert_eq!(read(&t, "body.txt"), "\r\njust a body");
}

#[test]
fn header_without_empty_line() {
    let (d, t) = run(&fixture("no_blank_line.eml"), &default());
    assert_eq!(
        d.headers.subject.as_deref(),
        Some("no empty line after the header")
    );
    assert_eq!(read(&t, "body.txt"), "bar");
    assert_eq!(files_of(&d), ["attachments/data.bin"]);
    assert_eq!(read(&t, "attachments/data.bin"), "0123");
    let why = "no empty line after the header; the body starts at the first line that is not a header field";
    assert_eq!(
        d.problems,
        [
            format!("message (multipart/mixed): {why}"),
            format!("part 1 (text/plain): {why}"),
            format!("part 2 (application/octet-stream): {why}"),
        ]
    );

    let (d, t) = run(
        b"From: a@example.com\r\nContent-Type: text/plain\r\nbar\r\n",
        &default(),
    );
    assert_eq!(d.headers.from.as_deref(), Some("a@example.com"));
    assert_eq!(read(&t, "body.txt"), "bar\r\n");
    assert_eq!(d.problems, [format!("part 1 (text/plain): {why}")]);
}

#[test]
fn nested_multipart_reusing_its_parents_boundary() {
    let raw = fixture("shared_boundary.eml");
    let note = "part 1 (multipart/alternative): same boundary as an enclosing multipart; \
                the parts that follow are read as its own until its closing delimiter";
    let pdf = Attachment {
        file: "attachments/plan.pdf".into(),
        filename: Some("plan.pdf".into()),
        content_type: "application/pdf".into(),
        size: pdf_bytes().len() as u64,
        sha256: sha256(&pdf_bytes()),
    };
    let (d, t) = run(&raw, &default());
    assert_eq!(d.kind, Kind::File);
    assert_eq!(d.body.as_ref().unwrap().content_type, "text/plain");
    assert_eq!(read(&t, "body.txt"), "Grüße from the old Mac.\r\n");
    assert_eq!(d.attachments, vec![pdf.clone()]);
    assert_eq!(d.problems, [note]);
    let (d, t) = run(&raw, &by_type("text/html"));
    assert_eq!(
        read(&t, "body.html"),
        "<HTML>Grüße from the old Mac.</HTML>\r\n"
    );
    assert_eq!(d.attachments, vec![pdf.clone()]);

    // With one closing delimiter for both, the nested multipart takes every
    // part; nothing is lost and the missing second close is no news.
    let text = String::from_utf8(raw).unwrap();
    let once = text.replacen("--B_3300000000_1--\r\n", "", 1);
    let (d, t) = run(once.as_bytes(), &default());
    assert_eq!(read(&t, "body.txt"), "Grüße from the old Mac.\r\n");
    assert_eq!(d.attachments, vec![pdf]);
    assert_eq!(d.problems, [note]);
}

/// A message nested `levels` multiparts deep with a text part at the
/// bottom and a PDF next to the nested multipart at level 30.
fn nested(levels: usize) -> Vec<u8> {
    let mut raw = String::from("From: a@example.com\r\nSubject: deep\r\n");
    for l in 1..=levels {
        raw.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"d{l}\"\r\n\r\n--d{l}\r\n"
        ));
    }
    raw.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\nfound at the bottom\r\n");
    for l in (1..=levels).rev() {
        if l == 30 {
            raw.push_str(&format!(
                "--d30\r\nContent-Type: application/pdf; name=\"level30.pdf\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                b64(&pdf_bytes())
            ));
        }
        raw.push_str(&format!("--d{l}--\r\n"));
    }
    raw.into_bytes()
}

#[test]
fn sixty_levels_deep() {
    let raw = fixture("deep_nesting.eml");
    assert_eq!(raw, nested(60), "the fixture is nested(60)");
    let (d, t) = run(&raw, &default());
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    assert_eq!(read(&t, "body.txt"), "found at the bottom");
    assert_eq!(files_of(&d), ["attachments/level30.pdf"]);
    assert_eq!(d.attachments[0].sha256, sha256(&pdf_bytes()));
}

#[test]
fn nesting_past_the_cap_keeps_what_is_above() {
    // Linear by construction (one pass, explicit stack); no timing here.
    let (d, _t) = run(&nested(150), &default());
    let section = vec!["1"; 100].join(".");
    let pdf_section = vec!["1"; 29].join(".") + ".2";
    // The text below the cap is not found, so the cascade falls to the PDF.
    assert_eq!(
        d.problems,
        [
            format!("part {section} (multipart/mixed): nested deeper than 100 levels; its content is only in message.eml"),
            format!("part {pdf_section} (application/pdf): selected as body but not text; saved as an attachment"),
        ]
    );
    assert_eq!(d.body, None);
    assert_eq!(files_of(&d), ["attachments/level30.pdf"]);
    assert_eq!(d.attachments[0].sha256, sha256(&pdf_bytes()));
}

#[test]
fn attachment_names_keep_trailing_dots_and_spaces() {
    let (d, t) = run(&fixture("trailing_dots.eml"), &default());
    assert_eq!(read(&t, "body.txt"), "see attachments");
    assert_eq!(
        names_of(&d),
        [
            ("attachments/invoice.pdf", Some("invoice.pdf. ")),
            ("attachments/résumé.txt", Some("résumé.txt..")),
            ("attachments/notes", Some(" notes ")),
            ("attachments/part-5.bin", None),
        ]
    );
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["attachments"][0]["filename"], "invoice.pdf. ");
}

#[test]
fn file_and_memory_agree_on_every_fixture() {
    let mut n = 0;
    for e in fs::read_dir("tests/fixtures/mime").unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "eml") {
            continue;
        }
        let raw = fs::read(&path).unwrap();
        for opts in [default(), by_index(2, None), by_type("text/html")] {
            // run() decodes both ways and compares.
            let _ = run(&raw, &opts);
        }
        n += 1;
    }
    assert!(n >= 20, "only {n} fixtures");
}

#[test]
fn file_and_memory_agree_across_buffer_edges() {
    // Lines over the structure walker's view (1 MiB), CRLF and
    // quoted-printable escapes and padding across the 64 KiB read buffer,
    // a delimiter with trailing whitespace past the view.
    let mut raw =
        b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            .to_vec();
    for i in 0..40_000 {
        let pad = " ".repeat(i % 7);
        raw.extend_from_slice(format!("line {i} caf=C3=A9={pad}\r\nx=4{pad}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"--zz\r\nContent-Type: application/octet-stream\r\n\r\n");
    raw.extend(std::iter::repeat_n(b'A', (1 << 20) + 5000));
    raw.extend_from_slice(b"\r\n--zz");
    raw.extend(std::iter::repeat_n(b' ', (1 << 20) + 100));
    raw.extend_from_slice(b"\r\n\r\nthird\r\n--zz--");
    raw.extend(std::iter::repeat_n(b'x', (1 << 20) + 100));
    raw.extend_from_slice(b"\r\n");
    let (d, _t) = run(&raw, &default());
    assert_eq!(d.attachments.len(), 2, "{:?}", d.problems);
    assert_eq!(d.attachments[0].size, (1 << 20) + 5000);
}
