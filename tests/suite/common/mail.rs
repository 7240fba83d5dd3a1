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

/// A message of `data_len` random bytes as a base64 attachment next to a
/// short text body, and the attachment's SHA-256.
pub fn big_message(data_len: usize) -> (Vec<u8>, String) {
    let head = "From: big@example.com\r\nSubject: big\r\nMessage-ID: <big@example.com>\r\n\
                Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\r\nsee attached\r\n\
                --B\r\nContent-Type: application/octet-stream\r\n\
                Content-Disposition: attachment; filename=\"big.bin\"\r\n\
                Content-Transfer-Encoding: base64\r\n\r\n";
    // Exact capacity: a growing Vec would briefly hold two copies.
    let mut raw = Vec::with_capacity(head.len() + data_len.div_ceil(57) * 78 + 16);
    raw.extend_from_slice(head.as_bytes());
    let mut hasher = openssl::sha::Sha256::new();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut line = [0u8; 57];
    let mut left = data_len;
    while left > 0 {
        let n = left.min(57);
        for b in &mut line[..n] {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        hasher.update(&line[..n]);
        raw.extend_from_slice(openssl::base64::encode_block(&line[..n]).as_bytes());
        raw.extend_from_slice(b"\r\n");
        left -= n;
    }
    raw.extend_from_slice(b"--B--\r\n");
    (raw, popspool::hex::lower(&hasher.finish()))
}
