//! Test messages: varied, deterministic, made up (no real mail).

/// A tiny deterministic generator (xorshift), so runs are repeatable.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A message with LF line ends as it arrives over POP3 (CRLF); text only.
pub fn crlf(m: Vec<u8>) -> Vec<u8> {
    String::from_utf8(m)
        .unwrap()
        .replace('\n', "\r\n")
        .into_bytes()
}

/// A simple text message with LF line endings (as an MDA stores it).
pub fn simple(i: usize, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Sender {i} <sender{i}@example.org>\nTo: Receiver <rcpt@example.com>\n\
         Subject: {subject}\nMessage-ID: <msg-{i}@example.org>\n\
         Date: Sat, 21 Nov 2026 10:00:00 +0000\nMIME-Version: 1.0\n\
         Content-Type: text/plain; charset=utf-8\n\n{body}"
    )
    .into_bytes()
}

/// `n` mixed messages: plain, dot-stuffing traps, 8-bit UTF-8, long lines,
/// encoded headers, and every 50th a multipart with a base64 attachment.
pub fn mixed(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let kind = if i % 50 == 49 { 5 } else { rng.below(5) };
            match kind {
                0 => simple(
                    i,
                    &format!("plain {i}"),
                    &"Hello, world.\n".repeat(1 + rng.below(200) as usize),
                ),
                1 => simple(
                    i,
                    &format!("dots {i}"),
                    ".\n..\n.leading dot\n. \nmiddle . dot\n.\r\nend\n",
                ),
                2 => simple(
                    i,
                    "=?UTF-8?B?w4RwZmVsIHVuZCBCaXJuZW4=?=",
                    "Grüße aus Köln — €100\n",
                ),
                3 => simple(
                    i,
                    &format!("long {i}"),
                    &format!("{}\n", "x".repeat(5000 + rng.below(3000) as usize)),
                ),
                4 => simple(
                    i,
                    &format!("no final newline {i}"),
                    "last line without newline",
                ),
                _ => attachment(i, (20_000 + rng.below(200_000)) as usize, &mut rng),
            }
        })
        .collect()
}

fn attachment(i: usize, size: usize, rng: &mut Rng) -> Vec<u8> {
    let data: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
    let b64 = openssl::base64::encode_block(&data);
    let mut wrapped = String::new();
    for chunk in b64.as_bytes().chunks(76) {
        wrapped.push_str(std::str::from_utf8(chunk).unwrap());
        wrapped.push('\n');
    }
    format!(
        "From: Files <files@example.org>\nTo: rcpt@example.com\nSubject: file {i}\n\
         Message-ID: <file-{i}@example.org>\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"b{i}\"\n\n--b{i}\n\
         Content-Type: text/plain; charset=us-ascii\n\nSee attached.\n--b{i}\n\
         Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\
         Content-Disposition: attachment; filename=\"data-{i}.bin\"\n\n{wrapped}--b{i}--\n"
    )
    .into_bytes()
}
