//! The primitives the mechanisms share: base64 (RFC 4648), HMAC (RFC 2104),
//! PBKDF2 (RFC 8018), random bytes.
//!
//! SHA-1, SHA-256, their HMACs, PBKDF2 and the random source come from
//! OpenSSL. HMAC-MD5 (CRAM-MD5, NTLMv2) is built here on the `md-5` crate,
//! for the reason that crate is a dependency at all: OpenSSL in FIPS mode
//! offers no MD5. Base64 is written out because the SASL exchange needs a
//! strict decoder that never echoes its input, and it is thirty lines.

use md5::{Digest, Md5};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

use super::Error;

/// The hash under an HMAC or PBKDF2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// MD5 (HMAC only: CRAM-MD5, NTLMv2).
    Md5,
    /// SHA-1 (SCRAM-SHA-1).
    Sha1,
    /// SHA-256 (SCRAM-SHA-256).
    Sha256,
}

impl Hash {
    fn openssl(self) -> MessageDigest {
        match self {
            Hash::Md5 => MessageDigest::md5(),
            Hash::Sha1 => MessageDigest::sha1(),
            Hash::Sha256 => MessageDigest::sha256(),
        }
    }

    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Hash::Md5 => 16,
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
        }
    }
}

/// OpenSSL's error text names the failing function, never the data.
fn ossl(e: openssl::error::ErrorStack) -> Error {
    Error::Crypto(e.to_string())
}

/// The digest of `data`.
pub fn hash(alg: Hash, data: &[u8]) -> Result<Vec<u8>, Error> {
    match alg {
        Hash::Md5 => Ok(Md5::digest(data).to_vec()),
        _ => openssl::hash::hash(alg.openssl(), data)
            .map(|d| d.to_vec())
            .map_err(ossl),
    }
}

/// HMAC-`alg`(`key`, `data`).
pub fn hmac(alg: Hash, key: &[u8], data: &[u8]) -> Result<Vec<u8>, Error> {
    if alg == Hash::Md5 {
        return Ok(hmac_md5(key, data).to_vec());
    }
    let pkey = PKey::hmac(key).map_err(ossl)?;
    let mut signer = Signer::new(alg.openssl(), &pkey).map_err(ossl)?;
    signer.update(data).map_err(ossl)?;
    signer.sign_to_vec().map_err(ossl)
}

/// RFC 2104 over MD5 (block size 64).
pub fn hmac_md5(key: &[u8], data: &[u8]) -> [u8; 16] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..16].copy_from_slice(&Md5::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Md5::new()
        .chain_update(pad(0x36))
        .chain_update(data)
        .finalize();
    Md5::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// PBKDF2-HMAC-`alg` with `iterations`, output as long as the hash (RFC 5802 `Hi()`).
pub fn pbkdf2(alg: Hash, password: &[u8], salt: &[u8], iterations: u32) -> Result<Vec<u8>, Error> {
    let mut out = vec![0u8; alg.output_len()];
    let iterations =
        usize::try_from(iterations).map_err(|_| Error::Crypto("iteration count".into()))?;
    openssl::pkcs5::pbkdf2_hmac(password, salt, iterations, alg.openssl(), &mut out)
        .map_err(ossl)?;
    Ok(out)
}

/// `n` bytes from OpenSSL's CSPRNG.
pub fn random(n: usize) -> Result<Vec<u8>, Error> {
    let mut out = vec![0u8; n];
    openssl::rand::rand_bytes(&mut out).map_err(ossl)?;
    Ok(out)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64; padding optional, nothing else outside the alphabet.
/// The error never quotes the input (it may be a secret being round-tripped).
pub fn b64_decode(text: &str) -> Result<Vec<u8>, Error> {
    let bad = || Error::BadChallenge("not valid base64");
    let body = text.trim_end_matches('=');
    if text.len() - body.len() > 2 || (text.len() != body.len() && !text.len().is_multiple_of(4)) {
        return Err(bad());
    }
    if body.len() % 4 == 1 {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in body.bytes() {
        let v = B64.iter().position(|&x| x == c).ok_or_else(bad)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex::lower as hex;

    /// RFC 4231 §4.2, §4.3 and §4.7 (HMAC-SHA-256), RFC 2202 §3 (HMAC-SHA-1)
    /// and §2 (HMAC-MD5): short key, text key, and a key longer than a block.
    #[test]
    fn hmac_test_vectors() {
        let long_key = vec![0xaa; 131];
        let long_key_md5 = vec![0xaa; 80];
        let cases: [(Hash, &[u8], &[u8], &str); 8] = [
            (
                Hash::Sha256,
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                Hash::Sha256,
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                Hash::Sha256,
                &long_key,
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                Hash::Sha1,
                &[0x0b; 20],
                b"Hi There",
                "b617318655057264e28bc0b6fb378c8ef146be00",
            ),
            (
                Hash::Sha1,
                b"Jefe",
                b"what do ya want for nothing?",
                "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
            ),
            (
                Hash::Md5,
                &[0x0b; 16],
                b"Hi There",
                "9294727a3638bb1c13f48ef8158bfc9d",
            ),
            (
                Hash::Md5,
                b"Jefe",
                b"what do ya want for nothing?",
                "750c783e6ab0b503eaa86e310a5db738",
            ),
            (
                Hash::Md5,
                &long_key_md5,
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd",
            ),
        ];
        for (alg, key, data, want) in cases {
            assert_eq!(
                hex(&hmac(alg, key, data).unwrap()),
                want,
                "{alg:?} {data:?}"
            );
        }
    }

    /// RFC 6070 (PBKDF2-HMAC-SHA1) cases 1 and 2, and the widely published
    /// PBKDF2-HMAC-SHA256 value for the same inputs (SCRAM's own vectors in
    /// the scram module exercise it end to end).
    #[test]
    fn pbkdf2_vectors() {
        assert_eq!(
            hex(&pbkdf2(Hash::Sha1, b"password", b"salt", 1).unwrap()),
            "0c60c80f961f0e71f3a9b524af6012062fe037a6"
        );
        assert_eq!(
            hex(&pbkdf2(Hash::Sha1, b"password", b"salt", 2).unwrap()),
            "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"
        );
        assert_eq!(
            hex(&pbkdf2(Hash::Sha256, b"password", b"salt", 1).unwrap()),
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"
        );
    }

    /// RFC 4648 §10.
    #[test]
    fn base64_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in cases {
            assert_eq!(b64_encode(plain.as_bytes()), enc);
            assert_eq!(b64_decode(enc).unwrap(), plain.as_bytes());
            assert_eq!(
                b64_decode(enc.trim_end_matches('=')).unwrap(),
                plain.as_bytes()
            );
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(b64_decode(&b64_encode(&all)).unwrap(), all);
        for bad in ["Zg=", "Z", "Zm9v!", "Zg===", "Zm 9v", "=Zm9", "Zm9v\r\n"] {
            assert!(b64_decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hash_and_random() {
        assert_eq!(
            hex(&hash(Hash::Md5, b"").unwrap()),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(
            hex(&hash(Hash::Sha1, b"abc").unwrap()),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        let (a, b) = (random(24).unwrap(), random(24).unwrap());
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
    }
}
