//! NTLM over SASL (Microsoft's "SPA", [MS-NLMP]), NTLMv2 responses only.
//!
//! Three messages: our NEGOTIATE (type 1), the server's CHALLENGE (type 2)
//! with an 8-byte challenge and the target information, our AUTHENTICATE
//! (type 3) with
//!
//! ```text
//! NTOWFv2     = HMAC-MD5(MD4(UTF-16LE(password)), UTF-16LE(UPPER(user) + domain))
//! temp        = 01 01 00*6 || timestamp || client challenge || 00*4 || target info || 00*4
//! NTProofStr  = HMAC-MD5(NTOWFv2, server challenge || temp)
//! NT response = NTProofStr || temp
//! LM response = HMAC-MD5(NTOWFv2, server challenge || client challenge) || client challenge
//! ```
//!
//! (MS-NLMP §3.3.2). NTLMv1 and LM responses are never sent: they are
//! crackable from one captured exchange. No session key, signing or MIC:
//! POP3 uses NTLM for authentication only.
//!
//! The `user` key may be `DOMAIN\user` (domain and account name apart) or
//! `user@example.com` (a UPN, sent whole with an empty domain), as Windows
//! clients do.

use super::crypto::hmac_md5;
use super::md4::md4;
use super::{Error, Exchange};

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";

/// NEGOTIATE_UNICODE: strings are UTF-16LE.
const NEGOTIATE_UNICODE: u32 = 0x0000_0001;
/// REQUEST_TARGET: ask for the server's target name and information.
const REQUEST_TARGET: u32 = 0x0000_0004;
/// NEGOTIATE_NTLM: NTLM authentication (v2 is chosen by the response format).
const NEGOTIATE_NTLM: u32 = 0x0000_0200;
/// NEGOTIATE_ALWAYS_SIGN: expected by servers in every negotiation.
const NEGOTIATE_ALWAYS_SIGN: u32 = 0x0000_8000;
/// NEGOTIATE_EXTENDED_SESSIONSECURITY: never fall back to NTLMv1 session security.
const NEGOTIATE_EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
/// NEGOTIATE_TARGET_INFO: the CHALLENGE carries target information.
const NEGOTIATE_TARGET_INFO: u32 = 0x0080_0000;

const OUR_FLAGS: u32 = NEGOTIATE_UNICODE
    | REQUEST_TARGET
    | NEGOTIATE_NTLM
    | NEGOTIATE_ALWAYS_SIGN
    | NEGOTIATE_EXTENDED_SESSIONSECURITY;

/// AV pair ids (MS-NLMP §2.2.2.1).
const AV_EOL: u16 = 0;
const AV_TIMESTAMP: u16 = 7;

/// Seconds from 1601-01-01 (FILETIME's epoch) to 1970-01-01.
const FILETIME_UNIX_OFFSET_SECS: u64 = 11_644_473_600;

/// Fixed header of AUTHENTICATE without version or MIC: signature, type,
/// six security buffers, flags.
const AUTHENTICATE_HEADER_LEN: usize = 64;

/// What a CHALLENGE message told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The server's flags.
    pub flags: u32,
    /// The 8-byte server challenge.
    pub server_challenge: [u8; 8],
    /// The target information (AV pairs), as sent.
    pub target_info: Vec<u8>,
    /// `MsvAvTimestamp`, if the server sent one.
    pub timestamp: Option<[u8; 8]>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A security buffer (length, max length, offset) pointing into `msg`.
fn security_buffer(msg: &[u8], at: usize) -> Result<&[u8], Error> {
    let bad = Error::BadChallenge("NTLM CHALLENGE field points outside the message");
    let len =
        usize::from(u16_at(msg, at).ok_or(Error::BadChallenge("NTLM CHALLENGE is truncated"))?);
    let offset =
        u32_at(msg, at + 4).ok_or(Error::BadChallenge("NTLM CHALLENGE is truncated"))? as usize;
    msg.get(offset..offset.checked_add(len).ok_or(bad.clone())?)
        .ok_or(bad)
}

/// Parses a CHALLENGE (type 2) message.
pub fn parse_challenge(msg: &[u8]) -> Result<Challenge, Error> {
    if msg.len() < 32 || &msg[..8] != SIGNATURE || u32_at(msg, 8) != Some(2) {
        return Err(Error::BadChallenge("not an NTLM CHALLENGE message"));
    }
    let flags = u32_at(msg, 20).unwrap_or(0);
    if flags & NEGOTIATE_UNICODE == 0 {
        return Err(Error::Unsupported(
            "an NTLM server that wants OEM (non-Unicode) strings",
        ));
    }
    let mut server_challenge = [0u8; 8];
    server_challenge.copy_from_slice(&msg[24..32]);
    let target_info = if flags & NEGOTIATE_TARGET_INFO != 0 && msg.len() >= 48 {
        security_buffer(msg, 40)?.to_vec()
    } else {
        Vec::new()
    };
    let mut timestamp = None;
    let mut at = 0;
    while at + 4 <= target_info.len() {
        let id = u16_at(&target_info, at).unwrap_or(AV_EOL);
        let len = usize::from(u16_at(&target_info, at + 2).unwrap_or(0));
        let value = target_info
            .get(at + 4..at + 4 + len)
            .ok_or(Error::BadChallenge("NTLM target information is truncated"))?;
        match id {
            AV_EOL => break,
            AV_TIMESTAMP if len == 8 => timestamp = value.try_into().ok(),
            _ => {}
        }
        at += 4 + len;
    }
    Ok(Challenge {
        flags,
        server_challenge,
        target_info,
        timestamp,
    })
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// NTOWFv2 (MS-NLMP §3.3.2).
pub fn ntowf_v2(password: &str, user: &str, domain: &str) -> [u8; 16] {
    let nt_hash = md4(&utf16le(password));
    let mut identity = utf16le(&user.to_uppercase());
    identity.extend(utf16le(domain));
    hmac_md5(&nt_hash, &identity)
}

/// The (NT, LM) challenge responses for NTLMv2.
pub fn responses(
    key: &[u8; 16],
    challenge: &Challenge,
    client_challenge: &[u8; 8],
    now_filetime: [u8; 8],
) -> (Vec<u8>, Vec<u8>) {
    let timestamp = challenge.timestamp.unwrap_or(now_filetime);
    let mut temp = vec![1, 1, 0, 0, 0, 0, 0, 0];
    temp.extend_from_slice(&timestamp);
    temp.extend_from_slice(client_challenge);
    temp.extend_from_slice(&[0; 4]);
    temp.extend_from_slice(&challenge.target_info);
    temp.extend_from_slice(&[0; 4]);
    let mut data = challenge.server_challenge.to_vec();
    data.extend_from_slice(&temp);
    let mut nt = hmac_md5(key, &data).to_vec();
    nt.extend_from_slice(&temp);
    // MS-NLMP §3.1.5.1.2: with a server timestamp, send zeros for LMv2.
    let lm = if challenge.timestamp.is_some() {
        vec![0; 24]
    } else {
        let mut data = challenge.server_challenge.to_vec();
        data.extend_from_slice(client_challenge);
        let mut lm = hmac_md5(key, &data).to_vec();
        lm.extend_from_slice(client_challenge);
        lm
    };
    (nt, lm)
}

fn filetime_now() -> [u8; 8] {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ticks = (unix.as_secs() + FILETIME_UNIX_OFFSET_SECS) * 10_000_000
        + u64::from(unix.subsec_nanos() / 100);
    ticks.to_le_bytes()
}

/// Splits `DOMAIN\user`; a UPN or a bare name has an empty domain.
fn split_user(user: &str) -> (&str, &str) {
    match user.split_once('\\') {
        Some((domain, name)) => (domain, name),
        None => ("", user),
    }
}

/// The NEGOTIATE (type 1) message: no domain or workstation supplied.
pub fn negotiate() -> Vec<u8> {
    let mut m = SIGNATURE.to_vec();
    m.extend_from_slice(&1u32.to_le_bytes());
    m.extend_from_slice(&OUR_FLAGS.to_le_bytes());
    // Domain and workstation security buffers, empty, pointing at the end.
    for _ in 0..2 {
        m.extend_from_slice(&0u16.to_le_bytes());
        m.extend_from_slice(&0u16.to_le_bytes());
        m.extend_from_slice(&32u32.to_le_bytes());
    }
    m
}

/// The AUTHENTICATE (type 3) message.
pub fn authenticate(
    challenge: &Challenge,
    domain: &str,
    user: &str,
    nt: &[u8],
    lm: &[u8],
) -> Vec<u8> {
    let domain = utf16le(domain);
    let user = utf16le(user);
    let workstation: Vec<u8> = Vec::new();
    let session_key: Vec<u8> = Vec::new();
    // Order of the header's buffers: LM, NT, domain, user, workstation, session key.
    let fields: [&[u8]; 6] = [lm, nt, &domain, &user, &workstation, &session_key];
    let mut header = SIGNATURE.to_vec();
    header.extend_from_slice(&3u32.to_le_bytes());
    let mut payload = Vec::new();
    for f in fields {
        let offset = AUTHENTICATE_HEADER_LEN + payload.len();
        // Every field fits in 16 bits: names and password are capped at
        // MAX_FIELD_CHARS, and the NT response's target information came
        // in a challenge line of at most pop3::MAX_LINE bytes.
        header.extend_from_slice(&(f.len() as u16).to_le_bytes());
        header.extend_from_slice(&(f.len() as u16).to_le_bytes());
        header.extend_from_slice(&(offset as u32).to_le_bytes());
        payload.extend_from_slice(f);
    }
    let flags = (challenge.flags & OUR_FLAGS) | NEGOTIATE_UNICODE | NEGOTIATE_NTLM;
    header.extend_from_slice(&flags.to_le_bytes());
    header.extend(payload);
    header
}

/// Longest user name, domain or password accepted, in characters: Windows
/// allows 256 for a password and far less for names; this keeps every
/// AUTHENTICATE field well inside its 16-bit length.
const MAX_FIELD_CHARS: usize = 1024;

/// An NTLM exchange.
pub struct Ntlm {
    domain: String,
    user: String,
    password: String,
    answered: bool,
}

impl Drop for Ntlm {
    /// The secret is wiped with the exchange (README "Secrets").
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
    }
}

impl Ntlm {
    /// Splits the domain off `user`.
    pub fn new(user: &str, password: &str) -> Result<Self, Error> {
        let (domain, name) = split_user(user);
        if name.is_empty() {
            return Err(Error::Credentials {
                what: "user name",
                reason: "has nothing after the domain's backslash",
            });
        }
        for (what, s) in [("user name", user), ("password", password)] {
            if s.chars().count() > MAX_FIELD_CHARS {
                return Err(Error::Credentials {
                    what,
                    reason: "is too long for NTLM",
                });
            }
        }
        Ok(Ntlm {
            domain: domain.to_owned(),
            user: name.to_owned(),
            password: password.to_owned(),
            answered: false,
        })
    }
}

impl Exchange for Ntlm {
    fn initial(&mut self) -> Result<Option<Vec<u8>>, Error> {
        Ok(Some(negotiate()))
    }

    fn respond(&mut self, msg: &[u8]) -> Result<Vec<u8>, Error> {
        if self.answered {
            return Err(Error::UnexpectedChallenge);
        }
        self.answered = true;
        let challenge = parse_challenge(msg)?;
        let client_challenge: [u8; 8] = super::crypto::random(8)?
            .try_into()
            .map_err(|_| Error::Crypto("random".into()))?;
        let key = ntowf_v2(&self.password, &self.user, &self.domain);
        let (nt, lm) = responses(&key, &challenge, &client_challenge, filetime_now());
        Ok(authenticate(&challenge, &self.domain, &self.user, &nt, &lm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// MS-NLMP §4.2.4.3: the CHALLENGE_MESSAGE of the NTLMv2 example.
    const MS_CHALLENGE: &str = "4e544c4d53535000020000000c000c003800000033828ae20123456789abcdef\
        00000000000000002400240044000000060070170000000f5300650072007600\
        6500720002000c0044006f006d00610069006e0001000c005300650072007600\
        6500720000000000";

    /// MS-NLMP §4.2.2.1.2 (NTOWFv1) and §4.2.4.1.1 (NTOWFv2).
    #[test]
    fn ms_nlmp_password_hashes() {
        assert_eq!(
            md4(&utf16le("Password")).to_vec(),
            unhex("a4f49c406510bdcab6824ee7c30fd852")
        );
        assert_eq!(
            ntowf_v2("Password", "User", "Domain").to_vec(),
            unhex("0c868a403bfd7a93a3001ef22ef02e3f")
        );
    }

    /// MS-NLMP §4.2.4: the whole NTLMv2 example (user "User", domain
    /// "Domain", password "Password", client challenge aa*8, time 0).
    #[test]
    fn ms_nlmp_ntlmv2_example() {
        let challenge = parse_challenge(&unhex(MS_CHALLENGE)).unwrap();
        assert_eq!(
            challenge.server_challenge.to_vec(),
            unhex("0123456789abcdef")
        );
        assert_eq!(challenge.timestamp, None);
        let target_info =
            unhex("02000c0044006f006d00610069006e000100 0c00530065007200760065007200 00000000");
        assert_eq!(challenge.target_info, target_info);

        let key = ntowf_v2("Password", "User", "Domain");
        let (nt, lm) = responses(&key, &challenge, &[0xaa; 8], [0; 8]);
        // §4.2.4.2.1 LMv2 response.
        assert_eq!(
            lm,
            unhex("86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa")
        );
        // §4.2.4.2.2 NTProofStr, followed by §4.2.4.1.3 temp.
        assert_eq!(nt[..16].to_vec(), unhex("68cd0ab851e51c96aabc927bebef6a1c"));
        let mut temp = unhex("0101000000000000 0000000000000000 aaaaaaaaaaaaaaaa 00000000");
        temp.extend_from_slice(&target_info);
        temp.extend_from_slice(&[0; 4]);
        assert_eq!(nt[16..].to_vec(), temp);
        // §4.2.4.1.2 session base key = HMAC-MD5(NTOWFv2, NTProofStr): the
        // last link of the chain that the example publishes.
        assert_eq!(
            hmac_md5(&key, &nt[..16]).to_vec(),
            unhex("8de40ccadbc14a82f15cb0ad0de95ca3")
        );
    }

    #[test]
    fn exchange_builds_a_consistent_authenticate_message() {
        let mut ex = Ntlm::new("Domain\\User", "Password").unwrap();
        let first = ex.initial().unwrap().unwrap();
        assert_eq!(&first[..8], SIGNATURE);
        assert_eq!(u32_at(&first, 12).unwrap() & NEGOTIATE_NTLM, NEGOTIATE_NTLM);
        let msg = ex.respond(&unhex(MS_CHALLENGE)).unwrap();
        assert_eq!(&msg[..8], SIGNATURE);
        assert_eq!(u32_at(&msg, 8), Some(3));
        let field = |at| security_buffer(&msg, at).unwrap().to_vec();
        assert_eq!(field(28), utf16le("Domain"));
        assert_eq!(field(36), utf16le("User"));
        let nt = field(20);
        let lm = field(12);
        // Recompute NTProofStr from what was sent: the client challenge and
        // time are inside `temp`.
        let key = ntowf_v2("Password", "User", "Domain");
        let mut data = unhex("0123456789abcdef");
        data.extend_from_slice(&nt[16..]);
        assert_eq!(hmac_md5(&key, &data).to_vec(), nt[..16].to_vec());
        assert_eq!(lm.len(), 24);
        assert_eq!(ex.respond(b"again"), Err(Error::UnexpectedChallenge));
    }

    #[test]
    fn users_domains_and_timestamps() {
        assert_eq!(split_user("EXAMPLE\\alice"), ("EXAMPLE", "alice"));
        assert_eq!(split_user("alice@example.com"), ("", "alice@example.com"));
        assert!(Ntlm::new("EXAMPLE\\", "pw").is_err());
        // A server timestamp is used as is, and LMv2 becomes zeros.
        let mut info = vec![7, 0, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        info.extend_from_slice(&[0; 4]);
        let c = Challenge {
            flags: NEGOTIATE_UNICODE | NEGOTIATE_TARGET_INFO,
            server_challenge: [9; 8],
            target_info: info,
            timestamp: Some([1, 2, 3, 4, 5, 6, 7, 8]),
        };
        let (nt, lm) = responses(&[0; 16], &c, &[0xaa; 8], [0; 8]);
        assert_eq!(&nt[24..32], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(lm, vec![0; 24]);
        assert!(filetime_now() != [0; 8]);
    }

    #[test]
    fn hostile_challenges() {
        let good = unhex(MS_CHALLENGE);
        assert!(parse_challenge(&good[..31]).is_err());
        let mut bad = good.clone();
        bad[8] = 3;
        assert!(parse_challenge(&bad).is_err());
        let mut oem = good.clone();
        oem[20] &= !1;
        assert!(matches!(parse_challenge(&oem), Err(Error::Unsupported(_))));
        let mut outside = good.clone();
        outside[44] = 0xff; // target info offset far past the end
        assert!(matches!(
            parse_challenge(&outside),
            Err(Error::BadChallenge(_))
        ));
        let mut huge_av = good.clone();
        huge_av[0x46] = 0xff; // first AV pair claims 255+ bytes
        assert!(parse_challenge(&huge_av).is_err());
        assert!(parse_challenge(&good[..40]).is_ok());
    }
}
