//! MD4 (RFC 1320), needed only for NTLM's password hash (MS-NLMP §3.3.1:
//! `NTOWF = MD4(UTF-16LE(password))`).
//!
//! Why it is written out here: OpenSSL 3 moved MD4 into its "legacy"
//! provider, which embedded images often leave out and which, once loaded,
//! changes the provider set of the whole process (TLS included). MD4 is a
//! few dozen lines; the RFC 1320 test suite below pins it down. It is used
//! as NTLM prescribes and for nothing else: MD4 is broken as a hash.

/// MD4 of `data`.
pub fn md4(data: &[u8]) -> [u8; 16] {
    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    // Padding (RFC 1320 §3.1-3.2): 0x80, zeros to 56 mod 64, then the bit length.
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_le_bytes());
    for block in msg.chunks_exact(64) {
        compress(&mut state, block);
    }
    let mut out = [0u8; 16];
    for (o, s) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&s.to_le_bytes());
    }
    out
}

fn compress(state: &mut [u32; 4], block: &[u8]) {
    let mut x = [0u32; 16];
    for (w, b) in x.iter_mut().zip(block.chunks_exact(4)) {
        *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    let [mut a, mut b, mut c, mut d] = *state;
    let f = |x: u32, y: u32, z: u32| (x & y) | (!x & z);
    let g = |x: u32, y: u32, z: u32| (x & y) | (x & z) | (y & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    // Round 1: message words in order, shifts 3 7 11 19.
    for &i in &[0, 4, 8, 12] {
        a = a.wrapping_add(f(b, c, d)).wrapping_add(x[i]).rotate_left(3);
        d = d
            .wrapping_add(f(a, b, c))
            .wrapping_add(x[i + 1])
            .rotate_left(7);
        c = c
            .wrapping_add(f(d, a, b))
            .wrapping_add(x[i + 2])
            .rotate_left(11);
        b = b
            .wrapping_add(f(c, d, a))
            .wrapping_add(x[i + 3])
            .rotate_left(19);
    }
    // Round 2: columns, constant 0x5A827999, shifts 3 5 9 13.
    const K2: u32 = 0x5a82_7999;
    for i in 0..4 {
        a = a
            .wrapping_add(g(b, c, d))
            .wrapping_add(x[i])
            .wrapping_add(K2)
            .rotate_left(3);
        d = d
            .wrapping_add(g(a, b, c))
            .wrapping_add(x[i + 4])
            .wrapping_add(K2)
            .rotate_left(5);
        c = c
            .wrapping_add(g(d, a, b))
            .wrapping_add(x[i + 8])
            .wrapping_add(K2)
            .rotate_left(9);
        b = b
            .wrapping_add(g(c, d, a))
            .wrapping_add(x[i + 12])
            .wrapping_add(K2)
            .rotate_left(13);
    }
    // Round 3: bit-reversed order, constant 0x6ED9EBA1, shifts 3 9 11 15.
    const K3: u32 = 0x6ed9_eba1;
    for &i in &[0, 2, 1, 3] {
        a = a
            .wrapping_add(h(b, c, d))
            .wrapping_add(x[i])
            .wrapping_add(K3)
            .rotate_left(3);
        d = d
            .wrapping_add(h(a, b, c))
            .wrapping_add(x[i + 8])
            .wrapping_add(K3)
            .rotate_left(9);
        c = c
            .wrapping_add(h(d, a, b))
            .wrapping_add(x[i + 4])
            .wrapping_add(K3)
            .rotate_left(11);
        b = b
            .wrapping_add(h(c, d, a))
            .wrapping_add(x[i + 12])
            .wrapping_add(K3)
            .rotate_left(15);
    }
    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::hex::lower as hex;

    /// RFC 1320 appendix A.5, the whole test suite.
    #[test]
    fn rfc1320_test_suite() {
        let cases = [
            ("", "31d6cfe0d16ae931b73c59d7e0c089c0"),
            ("a", "bde52cb31de33e46245e05fbdbd6fb24"),
            ("abc", "a448017aaf21d8525fc10ae87aa6729d"),
            ("message digest", "d9130a8164549fe818874806e1c7014b"),
            (
                "abcdefghijklmnopqrstuvwxyz",
                "d79e1c308aa5bbcdeea8ed63df412da9",
            ),
            (
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "043f8582f241db351ce627e153e7f0e4",
            ),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "e33b4ddc9c38f2199c3e7b164fcc0536",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(hex(&md4(input.as_bytes())), want, "{input:?}");
        }
    }

    #[test]
    fn block_boundaries() {
        // 55, 56 and 64 bytes: padding that fits, padding that spills into
        // a second block, and a message filling a block exactly. Values from
        // `openssl dgst -md4 -provider legacy`.
        let cases = [
            (55, "92f32bb82c95ad10e8f87ae58ab06807"),
            (56, "374d5f08103b7092c83b4626ebceffab"),
            (64, "b1abf956a5ae6f3221e5fe85e300fbb0"),
        ];
        for (len, want) in cases {
            assert_eq!(hex(&md4(&vec![b'x'; len])), want, "{len} bytes");
        }
    }
}
