//! Tests of the test servers' harness itself (tests/dovecot/dovecot.sh and
//! tests/suite/common/dovecot.rs, tests/mailutils/mailutils.sh and
//! tests/suite/common/mailutils.rs), against the real servers, over raw TCP.

use crate::common::dovecot::{
    connect_from, disk_form, listed_size, stored_form, Dovecot, HOST, INSECURE_HOST,
};
use crate::common::fake::openssl_dgst;
use crate::common::mailutils::Mailutils;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A minimal POP3 client: just enough to check what the server sends.
struct Pop {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    greeting: String,
}

impl Pop {
    fn connect(port: u16) -> Pop {
        Pop::over(TcpStream::connect((HOST, port)).expect("connect"))
    }

    fn over(stream: TcpStream) -> Pop {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut pop = Pop {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            greeting: String::new(),
        };
        pop.greeting = pop.line();
        assert!(
            pop.greeting.starts_with("+OK"),
            "greeting: {}",
            pop.greeting
        );
        pop
    }

    /// One line without its CRLF (which must be there).
    fn raw_line(&mut self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.reader.read_until(b'\n', &mut buf).expect("read");
        assert!(buf.ends_with(b"\r\n"), "line without CRLF: {buf:?}");
        buf.truncate(buf.len() - 2);
        buf
    }

    fn line(&mut self) -> String {
        String::from_utf8(self.raw_line()).expect("status line is UTF-8")
    }

    /// Sends a command, returns the status line.
    fn cmd(&mut self, cmd: &str) -> String {
        write!(self.writer, "{cmd}\r\n").unwrap();
        self.line()
    }

    fn ok(&mut self, cmd: &str) -> String {
        let reply = self.cmd(cmd);
        assert!(reply.starts_with("+OK"), "{cmd} -> {reply}");
        reply
    }

    /// Body of a multi-line reply, dot-unstuffed, each line with its CRLF.
    fn body(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let line = self.raw_line();
            if line == b"." {
                return out;
            }
            let line = line.strip_prefix(b".").unwrap_or(&line);
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }

    fn multi(&mut self, cmd: &str) -> (String, Vec<u8>) {
        let status = self.ok(cmd);
        (status, self.body())
    }

    fn lines(&mut self, cmd: &str) -> Vec<String> {
        let (_, body) = self.multi(cmd);
        String::from_utf8(body)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn login(&mut self, user: &str, password: &str) {
        self.ok(&format!("USER {user}"));
        self.ok(&format!("PASS {password}"));
    }
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn stored_form_rules() {
    assert_eq!(stored_form(b"a\r\nb\r\n"), b"a\r\nb\r\n");
    assert_eq!(stored_form(b"a\nb\n"), b"a\r\nb\r\n");
    assert_eq!(stored_form(b"a\nno end"), b"a\r\nno end\r\n");
    assert_eq!(stored_form(b""), b"\r\n");
    assert_eq!(stored_form(b"x\ry\r\r\n"), b"x\ry\r\n");
    assert_eq!(stored_form(b"ends in cr\r"), b"ends in cr\r\r\n");
    assert_eq!(disk_form(b"x\r\r\ny\r\nz"), b"x\r\ny\nz");
    assert_eq!(listed_size(b"a\nno end"), 9);
    assert_eq!(listed_size(b"a\r\nb\n"), 6);
    assert_eq!(listed_size(b""), 0);
    assert_eq!(b64_encode(b"ab"), "YWI=");
    assert_eq!(b64_decode("YWJj"), b"abc");
}

/// The whole path a popspool test takes: user added after start, mail
/// delivered, USER/PASS over the plain port, STAT/UIDL/LIST/RETR, DELE, QUIT.
#[test]
#[ignore = "needs root and Dovecot"]
fn session_on_plain_port_returns_stored_form() {
    let dc = Dovecot::start();
    dc.add_user("alice", "s3cret pass\"word");
    let long_line = "x".repeat(20_000);
    let msgs = [
        b"From: a@example.org\r\nSubject: one\r\n\r\nHello.\r\n".to_vec(),
        b"Subject: dots\n\n.leading dot\n..two dots\n.\nend\n".to_vec(),
        format!("Subject: long\r\n\r\n{long_line}\r\nshort\r\n").into_bytes(),
    ];
    dc.deliver("alice", &msgs[0]);
    dc.deliver_many("alice", &msgs[1..]);
    assert_eq!(dc.count("alice"), 3);

    let mut pop = Pop::connect(dc.pop3_port);
    pop.login("alice", "s3cret pass\"word");
    let total: usize = msgs.iter().map(|m| listed_size(m)).sum();
    assert_eq!(pop.ok("STAT"), format!("+OK 3 {total}"));

    let uidl = pop.lines("UIDL");
    assert_eq!(uidl.len(), 3, "{uidl:?}");
    for (i, line) in uidl.iter().enumerate() {
        let (n, uid) = line.split_once(' ').unwrap();
        assert_eq!(n, (i + 1).to_string());
        // pop3_uidl_format = %08Xu%08Xv: UID and UIDVALIDITY in hex.
        assert_eq!(uid.len(), 16, "{line}");
        assert!(uid.chars().all(|c| c.is_ascii_hexdigit()), "{line}");
        assert!(uid.starts_with(&format!("{:08x}", i + 1)), "{line}");
    }
    let list = pop.lines("LIST");
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(list[i], format!("{} {}", i + 1, listed_size(m)));
        let (status, body) = pop.multi(&format!("RETR {}", i + 1));
        assert_eq!(status, format!("+OK {} octets", listed_size(m)));
        assert!(
            body == stored_form(m),
            "RETR {} differs:\n got {:?}\nwant {:?}",
            i + 1,
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(&stored_form(m))
        );
    }
    for i in 1..=3 {
        pop.ok(&format!("DELE {i}"));
    }
    pop.ok("QUIT");
    // Dovecot expunges before it answers QUIT.
    assert_eq!(dc.count("alice"), 0);
    // The pop3 process logged what the client did (the log lags a bit).
    dc.wait_log("Disconnected: Logged out top=0/0, retr=3/");
}

/// What Dovecot really sends for awkward input, so stored_form stays true.
#[test]
#[ignore = "needs root and Dovecot"]
fn stored_form_matches_dovecot_on_edge_cases() {
    let dc = Dovecot::start();
    dc.add_user("edge", "pw");
    let msgs: Vec<Vec<u8>> = vec![
        b"Subject: no final newline\r\n\r\nlast line".to_vec(),
        b"".to_vec(),
        b"Subject: cr\n\nbare\rcr and cr-cr-lf\r\r\nend\n".to_vec(),
        b"Subject: ends in cr\r\n\r\nx\r".to_vec(),
        b"\n\n.\n".to_vec(),
        b"Subject: 8bit \xe4\xf6\xfc \x00 nul\r\n\r\n\xff\xfe\r\n".to_vec(),
    ];
    dc.deliver_many("edge", &msgs);
    let mut pop = Pop::connect(dc.pop3_port);
    pop.login("edge", "pw");
    for (i, m) in msgs.iter().enumerate() {
        let (status, body) = pop.multi(&format!("RETR {}", i + 1));
        assert_eq!(status, format!("+OK {} octets", listed_size(m)), "msg {i}");
        assert_eq!(body, stored_form(m), "msg {i}");
    }
    pop.ok("QUIT");
}

/// deliver_many keeps the order even when delivering faster than the clock ticks.
#[test]
#[ignore = "needs root and Dovecot"]
fn many_messages_keep_delivery_order() {
    let dc = Dovecot::start();
    dc.add_user("bulk", "pw");
    let msgs: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("Subject: {i}\n\nbody {i}\n").into_bytes())
        .collect();
    dc.deliver_many("bulk", &msgs);
    assert_eq!(dc.count("bulk"), 200);
    let mut pop = Pop::connect(dc.pop3_port);
    pop.login("bulk", "pw");
    for i in [1usize, 2, 3, 57, 100, 199, 200] {
        let (_, body) = pop.multi(&format!("RETR {i}"));
        assert_eq!(body, stored_form(&msgs[i - 1]), "message {i}");
    }
    pop.ok("QUIT");
}

/// `dovecot.sh deliver` and `Dovecot::deliver` store the same bytes under
/// the same S=/W= sizes; `dovecot.sh count` agrees with `count`.
#[test]
#[ignore = "needs root and Dovecot"]
fn script_and_rust_delivery_agree() {
    let dc = Dovecot::start();
    dc.add_user("s", "pw");
    dc.add_user("r", "pw");
    let raw = b"Subject: same\r\n\r\nline\r\n.dot\nbare\rcr\r\r\nno end".to_vec();
    let file = dc.dir.join("msg.eml");
    std::fs::write(&file, &raw).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dovecot/dovecot.sh");
    let st = Command::new("bash")
        .arg(&script)
        .args(["deliver", path(&dc.dir), "s", path(&file), path(&file)])
        .status()
        .unwrap();
    assert!(st.success());
    dc.deliver_many("r", &[raw.clone(), raw.clone()]);

    let files = |user: &str| -> Vec<(String, Vec<u8>, u32)> {
        let mut v: Vec<_> = std::fs::read_dir(dc.maildir(user).join("new"))
            .unwrap()
            .map(|e| {
                use std::os::unix::fs::MetadataExt;
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                let sizes = name.split_once(',').unwrap().1.to_owned();
                let meta = e.metadata().unwrap();
                assert_eq!((meta.uid(), meta.gid()), (5000, 5000), "{name}");
                assert_eq!(meta.mode() & 0o777, 0o600, "{name}");
                (sizes, std::fs::read(e.path()).unwrap(), meta.uid())
            })
            .collect();
        v.sort();
        v
    };
    let (s, r) = (files("s"), files("r"));
    assert_eq!(s, r);
    assert_eq!(
        s[0].0,
        format!("S={},W={}", disk_form(&raw).len(), listed_size(&raw))
    );
    assert_eq!(s[0].1, disk_form(&raw));

    let out = Command::new("bash")
        .arg(&script)
        .args(["count", path(&dc.dir), "s"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    assert_eq!(dc.count("s"), 2);
}

#[test]
#[ignore = "needs root and Dovecot"]
fn pop3s_and_stls_verify_with_test_ca_only() {
    let dc = Dovecot::start();
    let ca = dc.ca_file();
    let pop3s = format!("127.0.0.1:{}", dc.pop3s_port);
    let (ok, out) = openssl(&[
        "s_client",
        "-connect",
        &pop3s,
        "-CAfile",
        path(&ca),
        "-verify_return_error",
        "-verify_hostname",
        "localhost",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");

    // A whole session over implicit TLS.
    dc.add_user("tls", "pw");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "printf 'USER tls\\r\\nPASS pw\\r\\nQUIT\\r\\n' | timeout 10 openssl s_client \
             -quiet -connect {pop3s} -CAfile {} -verify_return_error 2>/dev/null",
            path(&ca)
        ))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.starts_with("+OK Dovecot"), "{out}");
    assert!(out.contains("+OK Logged in."), "{out}");

    let pop3 = format!("127.0.0.1:{}", dc.pop3_port);
    let (ok, out) = openssl(&[
        "s_client",
        "-starttls",
        "pop3",
        "-connect",
        &pop3,
        "-CAfile",
        path(&ca),
        "-verify_return_error",
        "-verify_ip",
        "127.0.0.1",
    ]);
    assert!(ok, "STLS: {out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");

    let (ok, out) = openssl(&[
        "s_client",
        "-connect",
        &pop3s,
        "-CAfile",
        path(&dc.wrong_ca_file()),
        "-verify_return_error",
    ]);
    assert!(!ok, "wrong CA accepted: {out}");

    // The advertised fingerprint is the one of the certificate served.
    let served = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {pop3s} </dev/null 2>/dev/null \
             | openssl x509 -noout -fingerprint -sha256"
        ))
        .output()
        .unwrap();
    let served = String::from_utf8_lossy(&served.stdout);
    let hex: String = served
        .split_once('=')
        .unwrap_or_else(|| panic!("no fingerprint: {served}"))
        .1
        .trim()
        .replace(':', "")
        .to_lowercase();
    assert_eq!(hex, dc.fingerprint());
    assert_eq!(hex.len(), 64);
}

#[test]
#[ignore = "needs root and Dovecot"]
fn plain_port_offers_stls_scram_and_apop() {
    let dc = Dovecot::start();
    let mut pop = Pop::connect(dc.pop3_port);
    // APOP timestamp (RFC 1939 section 7): "<...@...>" at the greeting's end.
    let g = &pop.greeting;
    let ts = &g[g.rfind('<').expect(g)..];
    assert!(ts.ends_with('>') && ts.contains('@'), "{g}");
    let capa = pop.lines("CAPA");
    for want in ["STLS", "USER", "UIDL", "TOP", "PIPELINING", "RESP-CODES"] {
        assert!(capa.iter().any(|c| c == want), "{want} missing: {capa:?}");
    }
    let sasl = capa.iter().find(|c| c.starts_with("SASL ")).expect("SASL");
    for mech in ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"] {
        assert!(sasl.split(' ').any(|m| m == mech), "{mech}: {sasl}");
    }
    pop.ok("QUIT");
}

/// The `{PLAIN}` passwd-file serves the challenge-response mechanisms too.
#[test]
#[ignore = "needs root and Dovecot"]
fn apop_cram_md5_and_scram_logins_work() {
    let dc = Dovecot::start();
    dc.add_user("erin", "pw 1");

    let mut pop = Pop::connect(dc.pop3_port);
    let ts = pop.greeting[pop.greeting.rfind('<').unwrap()..].to_owned();
    let digest = md5_hex(format!("{ts}pw 1").as_bytes(), None);
    pop.ok(&format!("APOP erin {digest}"));
    pop.ok("QUIT");

    let mut pop = Pop::connect(dc.pop3_port);
    let challenge = pop.cmd("AUTH CRAM-MD5");
    let challenge = b64_decode(challenge.strip_prefix("+ ").expect(&challenge));
    let answer = format!("erin {}", md5_hex(&challenge, Some("pw 1")));
    pop.ok(&b64_encode(answer.as_bytes()));
    pop.ok("QUIT");

    // SCRAM's first round trip: the server found salt and iteration count.
    let mut pop = Pop::connect(dc.pop3_port);
    let first = b64_encode(b"n,,n=erin,r=0123456789abcdef");
    let reply = pop.cmd(&format!("AUTH SCRAM-SHA-256 {first}"));
    let server_first = b64_decode(reply.strip_prefix("+ ").expect(&reply));
    let server_first = String::from_utf8(server_first).unwrap();
    assert!(
        server_first.starts_with("r=0123456789abcdef"),
        "{server_first}"
    );
    assert!(server_first.contains(",s=") && server_first.contains(",i="));
    assert!(pop.cmd("*").starts_with("-ERR"));

    dc.wait_log("method=APOP");
    dc.wait_log("method=CRAM-MD5");
}

fn md5_hex(data: &[u8], hmac_key: Option<&str>) -> String {
    let hex = match hmac_key {
        None => openssl_dgst(&["-md5"], data),
        Some(key) => openssl_dgst(&["-md5", "-hmac", key], data),
    };
    assert!(!hex.is_empty(), "openssl dgst printed nothing");
    hex
}

fn b64_encode(data: &[u8]) -> String {
    crate::common::relay::b64_encode(data)
}

fn b64_decode(text: &str) -> Vec<u8> {
    crate::common::relay::b64_decode(text).expect("base64")
}

/// Dovecot counts 127.0.0.1 -> 127.0.0.1 as secured; from another source
/// address (bound 127.0.0.2, or connecting to 127.0.0.2) cleartext is out.
#[test]
#[ignore = "needs root and Dovecot"]
fn cleartext_login_refused_from_non_local_address() {
    let dc = Dovecot::start();
    dc.add_user("carol", "pw");
    let bound = connect_from(INSECURE_HOST, SocketAddrV4::new(HOST, dc.pop3_port)).unwrap();
    assert_eq!(bound.local_addr().unwrap().ip(), INSECURE_HOST);
    let to_second = TcpStream::connect((INSECURE_HOST, dc.pop3_port)).unwrap();
    for stream in [bound, to_second] {
        let mut pop = Pop::over(stream);
        let capa = pop.lines("CAPA");
        assert!(capa.iter().any(|c| c == "STLS"), "{capa:?}");
        assert!(!capa.iter().any(|c| c == "USER"), "{capa:?}");
        let sasl = capa.iter().find(|c| c.starts_with("SASL ")).unwrap();
        assert!(
            !sasl.contains("PLAIN") && sasl.contains("SCRAM-SHA-256"),
            "{sasl}"
        );
        let user = pop.cmd("USER carol");
        let pass = pop.cmd("PASS pw");
        assert!(
            user.starts_with("-ERR") && pass.starts_with("-ERR"),
            "{user} / {pass}"
        );
        assert!(
            pass.contains("Plaintext authentication disallowed"),
            "{pass}"
        );
        pop.ok("QUIT");
    }
    // The same login from 127.0.0.1 works.
    Pop::connect(dc.pop3_port).login("carol", "pw");

    // After STLS the non-local connection may log in.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "printf 'USER carol\\r\\nPASS pw\\r\\nQUIT\\r\\n' | timeout 10 openssl s_client \
             -quiet -starttls pop3 -connect {INSECURE_HOST}:{} 2>/dev/null",
            dc.pop3_port
        ))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("+OK Logged in."), "{out}");
    dc.wait_log("rip=127.0.0.2");
}

/// A wrong password costs ~0.5 s, not Dovecot's growing per-IP penalty
/// (2, 4, 8, 15 s), so failure tests stay fast.
#[test]
#[ignore = "needs root and Dovecot"]
fn failed_logins_are_answered_quickly() {
    let dc = Dovecot::start();
    dc.add_user("dave", "right");
    let t = Instant::now();
    for _ in 0..3 {
        let mut pop = Pop::connect(dc.pop3_port);
        pop.ok("USER dave");
        let reply = pop.cmd("PASS wrong");
        assert!(reply.starts_with("-ERR [AUTH]"), "{reply}");
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "3 failed logins took {took:?}"
    );
    Pop::connect(dc.pop3_port).login("dave", "right");
}

/// A user added while the server runs logs in at once, even right after a
/// failed lookup of that user or a login of another one in the same second
/// (Dovecot checks a passwd-file it knows at most once per second, hence
/// one passwd-file per user).
#[test]
#[ignore = "needs root and Dovecot"]
fn users_added_while_running_log_in_at_once() {
    let dc = Dovecot::start();
    for i in 0..5 {
        let user = format!("late{i}");
        if i < 2 {
            // Dovecot looked for the user (and failed) just before.
            let mut pop = Pop::connect(dc.pop3_port);
            pop.ok(&format!("USER {user}"));
            assert!(pop.cmd(&format!("PASS pw{i}")).starts_with("-ERR"));
        }
        dc.add_user(&user, &format!("pw{i}"));
        let mut pop = Pop::connect(dc.pop3_port);
        pop.login(&user, &format!("pw{i}"));
        pop.ok("QUIT");
    }
}

#[test]
#[ignore = "needs root and Dovecot"]
fn two_servers_run_side_by_side() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(Dovecot::start);
        let b = s.spawn(Dovecot::start);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.dir, b.dir);
    let ports = [a.pop3_port, a.pop3s_port, b.pop3_port, b.pop3s_port];
    for (i, p) in ports.iter().enumerate() {
        assert!(!ports[i + 1..].contains(p), "{ports:?}");
    }
    assert_ne!(a.fingerprint(), b.fingerprint());
    a.add_user("only-a", "pw");
    a.deliver("only-a", b"Subject: a\n\nA\n");
    let mut pop = Pop::connect(a.pop3_port);
    pop.login("only-a", "pw");
    assert_eq!(pop.ok("STAT"), "+OK 1 17");
    let mut pop = Pop::connect(b.pop3_port);
    pop.ok("USER only-a");
    assert!(pop.cmd("PASS pw").starts_with("-ERR"));
}

#[test]
#[ignore = "needs root and Dovecot"]
fn drop_stops_server_and_removes_dir() {
    let dc = Dovecot::start();
    let dir = dc.dir.clone();
    let pid: u32 = std::fs::read_to_string(dir.join("run/master.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let port = dc.pop3_port;
    let t = Instant::now();
    drop(dc);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        t.elapsed()
    );
    assert!(!dir.exists());
    assert!(!alive(pid), "master {pid} still running");
    assert!(TcpStream::connect((HOST, port)).is_err());
}

/// If the test process dies without destructors, the watchdog cleans up.
#[test]
#[ignore = "needs root and Dovecot"]
fn watchdog_stops_server_when_owner_dies() {
    let dir = std::env::temp_dir().join(format!("popspool-dovecot-wd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut owner = Command::new("sleep").arg("60").spawn().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dovecot/dovecot.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["start", path(&dir), "--watch-pid", &owner.id().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: u32 = std::fs::read_to_string(dir.join("run/master.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    owner.kill().unwrap();
    owner.wait().unwrap();
    let t = Instant::now();
    while (dir.exists() || alive(pid)) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pid), "master {pid} survived its owner");
    assert!(!dir.exists(), "{} not removed", dir.display());
}

/// A private Mailutils pop3d answers on both ports, with the greeting the
/// harness documents, and dropping it stops it by its pid (with the session
/// still open on it) and removes its directory.
#[test]
#[ignore = "needs root and Mailutils"]
fn mailutils_greets_on_both_ports_and_stops_by_pid() {
    let mu = Mailutils::start();
    let dir = mu.dir.clone();
    let pid: u32 = std::fs::read_to_string(dir.join("run/pop3d.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    let mut plain = Pop::connect(mu.pop3_port);
    assert!(
        plain.greeting.starts_with("+OK POP3 Ready <"),
        "{}",
        plain.greeting
    );
    // No login before STLS on this port.
    let capa = plain.lines("CAPA");
    assert!(capa.contains(&"XTLSREQUIRED".to_string()), "{capa:?}");
    assert!(capa.contains(&"STLS".to_string()), "{capa:?}");
    assert!(!capa.contains(&"USER".to_string()), "{capa:?}");
    let ca = mu.ca_file();
    let (ok, text) = openssl(&[
        "s_client",
        "-connect",
        &format!("127.0.0.1:{}", mu.pop3s_port),
        "-CAfile",
        path(&ca),
        "-verify_hostname",
        "localhost",
        "-verify_return_error",
        "-brief",
    ]);
    assert!(ok, "{text}");
    let port = mu.pop3_port;
    let t = Instant::now();
    drop(mu);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        t.elapsed()
    );
    assert!(!dir.exists());
    assert!(!alive(pid), "pop3d {pid} still running");
    assert!(TcpStream::connect((HOST, port)).is_err());
    drop(plain);
}

/// Running and not a zombie (init may be slow to reap the daemon).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
        .unwrap_or(false)
}
