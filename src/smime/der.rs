//! Just enough DER (X.690) for the S/MIME step: which CMS content type a
//! `ContentInfo` holds (RFC 5652 section 3), whatever the `smime-type`
//! parameter says (senders omit or misstate it; `.p7m` bodies have none);
//! and an envelope split into its structure and its encrypted content, so
//! that OpenSSL parses only the small structure and reads the content where
//! it already lies (README, "S/MIME", Memory).

use std::ops::Range;

/// The content types a layer can be.
#[derive(Debug, PartialEq, Eq)]
pub enum Type {
    /// `id-envelopedData` or `id-ct-authEnvelopedData`.
    Enveloped,
    /// `id-signedData`.
    Signed,
}

/// 1.2.840.113549.1.7.2, DER-encoded.
const SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
/// 1.2.840.113549.1.7.3.
const ENVELOPED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
/// 1.2.840.113549.1.9.16.1.23 (RFC 5083).
const AUTH_ENVELOPED_DATA: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17,
];

/// The type of the `ContentInfo` at the start of `der`.
pub fn content_type(der: &[u8]) -> Option<Type> {
    // SEQUENCE, then its length (short, long or BER indefinite form).
    let (&tag, rest) = der.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let rest = if len & 0x80 != 0 {
        rest.get(usize::from(len & 0x7f)..)?
    } else {
        rest
    };
    // OBJECT IDENTIFIER, short length.
    let (&tag, rest) = rest.split_first()?;
    let (&len, rest) = rest.split_first()?;
    if tag != 0x06 || len & 0x80 != 0 {
        return None;
    }
    match rest.get(..usize::from(len))? {
        SIGNED_DATA => Some(Type::Signed),
        ENVELOPED_DATA | AUTH_ENVELOPED_DATA => Some(Type::Enveloped),
        _ => None,
    }
}

/// An envelope in two parts: the `ContentInfo` without its encrypted
/// content, and where that content lies in the original DER.
#[derive(Debug, PartialEq, Eq)]
pub struct Split {
    /// The structure: recipients, algorithms, and for AES-GCM the tag.
    pub head: Vec<u8>,
    /// The encrypted content (`encryptedContent`, RFC 5652 section 6.1).
    pub content: Range<usize>,
}

/// Split the `EnvelopedData` or `AuthEnvelopedData` `ContentInfo` in
/// `der`, when it is plain DER with the encrypted content as one primitive
/// string, as most senders write it. `None` for anything else (BER
/// indefinite lengths, a constructed string): that is parsed whole.
pub fn split_envelope(der: &[u8]) -> Option<Split> {
    let (oid, env) = content_info(der)?;
    // version, [0] originatorInfo OPTIONAL, recipientInfos, then the
    // (authenticated) encryptedContentInfo.
    let kids = children(der, &env.body)?;
    let mut i = 1;
    if kids.first()?.tag != 0x02 {
        return None;
    }
    if kids.get(i)?.tag == 0xa0 {
        i += 1;
    }
    if kids.get(i)?.tag != 0x31 {
        return None;
    }
    let eci = kids.get(i + 1).filter(|t| t.tag == 0x30)?;
    // contentType, contentEncryptionAlgorithm, [0] IMPLICIT encryptedContent.
    let Ok([ctype, alg, content]) = <[Tlv; 3]>::try_from(children(der, &eci.body)?) else {
        return None;
    };
    if ctype.tag != 0x06 || alg.tag != 0x30 || content.tag != 0x80 {
        return None;
    }
    let kept = &der[ctype.start..alg.body.end];
    Some(without_content(der, &oid, &env, eci, kept, content.body))
}

/// Split the `SignedData` `ContentInfo` in `der` (RFC 5652 section 5.1)
/// into the structure without its encapsulated content, and where that
/// content lies, when it is plain DER with the content as one primitive
/// OCTET STRING; `None` otherwise (parsed whole).
pub fn split_signed(der: &[u8]) -> Option<Split> {
    let (oid, sd) = content_info(der)?;
    // version, digestAlgorithms, encapContentInfo, ...
    let kids = children(der, &sd.body)?;
    let [version, algs, eci, ..] = &kids[..] else {
        return None;
    };
    if version.tag != 0x02 || algs.tag != 0x31 || eci.tag != 0x30 {
        return None;
    }
    // eContentType, [0] EXPLICIT eContent OCTET STRING.
    let Ok([ctype, wrapped]) = <[Tlv; 2]>::try_from(children(der, &eci.body)?) else {
        return None;
    };
    let Ok([octets]) = <[Tlv; 1]>::try_from(children(der, &wrapped.body)?) else {
        return None;
    };
    if ctype.tag != 0x06 || wrapped.tag != 0xa0 || octets.tag != 0x04 {
        return None;
    }
    let kept = &der[ctype.start..ctype.body.end];
    Some(without_content(der, &oid, &sd, eci, kept, octets.body))
}

/// A `ContentInfo` filling `der`: its content type and the SEQUENCE its
/// `[0] EXPLICIT` content holds.
fn content_info(der: &[u8]) -> Option<(Tlv, Tlv)> {
    let ci = tlv(der, 0).filter(|t| t.tag == 0x30 && t.body.end == der.len())?;
    let Ok([oid, explicit]) = <[Tlv; 2]>::try_from(children(der, &ci.body)?) else {
        return None;
    };
    let Ok([inner]) = <[Tlv; 1]>::try_from(children(der, &explicit.body)?) else {
        return None;
    };
    (oid.tag == 0x06 && explicit.tag == 0xa0 && inner.tag == 0x30).then_some((oid, inner))
}

/// The `ContentInfo` again, its `inner` SEQUENCE with the content-info
/// element `eci` reduced to `kept`; and where the content was.
fn without_content(
    der: &[u8],
    oid: &Tlv,
    inner: &Tlv,
    eci: &Tlv,
    kept: &[u8],
    content: Range<usize>,
) -> Split {
    let eci_new = encode(0x30, &[kept]);
    let inner_new = encode(
        0x30,
        &[
            &der[inner.body.start..eci.start],
            &eci_new,
            &der[eci.body.end..inner.body.end],
        ],
    );
    let head = encode(
        0x30,
        &[&der[oid.start..oid.body.end], &encode(0xa0, &[&inner_new])],
    );
    Split { head, content }
}

/// One element with a definite length.
#[derive(Debug, Clone)]
struct Tlv {
    tag: u8,
    /// Where the element (its tag) starts.
    start: usize,
    /// Its content.
    body: Range<usize>,
}

/// The element at `pos`, if it has a low tag number and a definite length
/// within `der`.
fn tlv(der: &[u8], pos: usize) -> Option<Tlv> {
    let tag = *der.get(pos)?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let first = *der.get(pos + 1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        // Long form; 0x80 (indefinite) and lengths over 4 GiB are not DER here.
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for k in 0..n {
            len = len << 8 | usize::from(*der.get(pos + 2 + k)?);
        }
        (len, 2 + n)
    };
    let start = pos + header;
    let end = start.checked_add(len).filter(|&e| e <= der.len())?;
    Some(Tlv {
        tag,
        start: pos,
        body: start..end,
    })
}

/// The elements that fill `range` exactly.
fn children(der: &[u8], range: &Range<usize>) -> Option<Vec<Tlv>> {
    let mut out = Vec::new();
    let mut pos = range.start;
    while pos < range.end {
        let t = tlv(der, pos).filter(|t| t.body.end <= range.end)?;
        pos = t.body.end;
        out.push(t);
    }
    Some(out)
}

/// An element of `tag` holding `parts`, with its DER length.
fn encode(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let info = |oid: &[u8]| {
            let mut v = vec![0x30, 0x80, 0x06, oid.len() as u8];
            v.extend_from_slice(oid);
            v
        };
        assert_eq!(content_type(&info(SIGNED_DATA)), Some(Type::Signed));
        assert_eq!(content_type(&info(ENVELOPED_DATA)), Some(Type::Enveloped));
        assert_eq!(
            content_type(&info(AUTH_ENVELOPED_DATA)),
            Some(Type::Enveloped)
        );
        let mut long = vec![0x30, 0x82, 0x01, 0x00, 0x06, 9];
        long.extend_from_slice(SIGNED_DATA);
        assert_eq!(content_type(&long), Some(Type::Signed));
        assert_eq!(content_type(&info(&[0x2a, 0x03])), None);
        assert_eq!(content_type(b"not der"), None);
        assert_eq!(content_type(&[]), None);
    }

    #[test]
    fn envelope_split_and_rebuilt() {
        // ContentInfo { envelopedData, [0] EnvelopedData { version,
        // recipientInfos, encryptedContentInfo { data, alg, [0] content } } }
        let content = vec![0xee; 300];
        let eci = encode(
            0x30,
            &[
                &[0x06, 0x01, 0x01],
                &[0x30, 0x02, 0x05, 0x00],
                &encode(0x80, &[&content]),
            ],
        );
        let env = encode(0x30, &[&[0x02, 0x01, 0x00], &[0x31, 0x01, 0x42], &eci]);
        let mut oid = vec![0x06, ENVELOPED_DATA.len() as u8];
        oid.extend_from_slice(ENVELOPED_DATA);
        let der = encode(0x30, &[&oid, &encode(0xa0, &[&env])]);
        let split = split_envelope(&der).expect("splits");
        assert_eq!(&der[split.content.clone()], &content[..]);
        let eci_head = encode(0x30, &[&[0x06, 0x01, 0x01], &[0x30, 0x02, 0x05, 0x00]]);
        let env_head = encode(0x30, &[&[0x02, 0x01, 0x00], &[0x31, 0x01, 0x42], &eci_head]);
        assert_eq!(
            split.head,
            encode(0x30, &[&oid, &encode(0xa0, &[&env_head])])
        );
        assert_eq!(content_type(&split.head), Some(Type::Enveloped));
        // BER indefinite lengths, truncation, trailing bytes: parsed whole.
        let mut indefinite = der.clone();
        indefinite[1] = 0x80;
        assert_eq!(split_envelope(&indefinite), None);
        assert_eq!(split_envelope(&der[..der.len() - 1]), None);
        let mut trailing = der.clone();
        trailing.push(0);
        assert_eq!(split_envelope(&trailing), None);
        assert_eq!(encode(0x04, &[&[0; 0x1234]])[..4], [0x04, 0x82, 0x12, 0x34]);
    }
}
