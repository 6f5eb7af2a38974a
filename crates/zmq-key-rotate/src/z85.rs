//! Z85 text keys (ZeroMQ RFC 32) and the [`CurveKey`] type.
//!
//! CURVE keys are 32 raw bytes (Curve25519, not Ed25519) and appear in files,
//! events and the environment as 40 characters of Z85. A `CurveKey` can only be
//! built from exactly 32 bytes or exactly 40 valid Z85 characters, so a short,
//! long or mangled key is refused where it is read, with the reason.

use std::fmt;

const ALPHABET: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// Why a Z85 text was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Z85Error {
    #[error("z85 text has {len} characters, not a multiple of 5")]
    Length { len: usize },
    #[error("z85 key has {len} characters; a CURVE key has exactly 40")]
    KeyLength { len: usize },
    #[error("z85 text has a character outside the alphabet at position {position}: {found:?}")]
    Character { position: usize, found: char },
    #[error("z85 group at position {position} is larger than 32 bits")]
    Overflow { position: usize },
    #[error("z85 input is {len} bytes, not a multiple of 4")]
    BinaryLength { len: usize },
}

/// Encodes bytes (length a multiple of 4) as Z85.
pub fn encode(bytes: &[u8]) -> Result<String, Z85Error> {
    if !bytes.len().is_multiple_of(4) {
        return Err(Z85Error::BinaryLength { len: bytes.len() });
    }
    let mut out = String::with_capacity(bytes.len() / 4 * 5);
    for chunk in bytes.chunks_exact(4) {
        let mut value = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let mut group = [0u8; 5];
        for slot in group.iter_mut().rev() {
            *slot = ALPHABET[(value % 85) as usize];
            value /= 85;
        }
        out.extend(group.iter().map(|&b| b as char));
    }
    Ok(out)
}

/// Decodes Z85 text (length a multiple of 5) into bytes.
pub fn decode(text: &str) -> Result<Vec<u8>, Z85Error> {
    let chars: Vec<char> = text.chars().collect();
    if !chars.len().is_multiple_of(5) {
        return Err(Z85Error::Length { len: chars.len() });
    }
    let mut out = Vec::with_capacity(chars.len() / 5 * 4);
    for (group_index, group) in chars.chunks_exact(5).enumerate() {
        let mut value: u64 = 0;
        for (i, &c) in group.iter().enumerate() {
            let position = group_index * 5 + i;
            let digit = u8::try_from(c)
                .ok()
                .and_then(|b| ALPHABET.iter().position(|&a| a == b))
                .ok_or(Z85Error::Character { position, found: c })?;
            value = value * 85 + digit as u64;
        }
        let value = u32::try_from(value).map_err(|_| Z85Error::Overflow {
            position: group_index * 5,
        })?;
        out.extend_from_slice(&value.to_be_bytes());
    }
    Ok(out)
}

/// A Curve25519 key (public or secret) of exactly 32 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct CurveKey([u8; 32]);

impl CurveKey {
    /// Builds a key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses a 40-character Z85 key.
    pub fn from_z85(text: &str) -> Result<Self, Z85Error> {
        let len = text.chars().count();
        if len != 40 {
            return Err(Z85Error::KeyLength { len });
        }
        let bytes = decode(text)?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        Ok(Self(key))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 40-character Z85 text.
    pub fn to_z85(&self) -> String {
        // A 32-byte input is a multiple of 4, so encoding cannot fail.
        encode(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for CurveKey {
    // Keys may be secret: never print the bytes, only a short fingerprint of
    // the Z85 form's first characters for public keys is done by callers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurveKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc32_test_vector_round_trips() {
        let bytes = [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B];
        assert_eq!(encode(&bytes).unwrap(), "HelloWorld");
        assert_eq!(decode("HelloWorld").unwrap(), bytes);
    }

    #[test]
    fn key_round_trips_through_z85() {
        let key = CurveKey::from_bytes([7u8; 32]);
        let text = key.to_z85();
        assert_eq!(text.len(), 40);
        assert_eq!(CurveKey::from_z85(&text).unwrap(), key);
    }

    #[test]
    fn refuses_bad_keys_with_reasons() {
        let good = CurveKey::from_bytes([1u8; 32]).to_z85();
        let cases: Vec<(String, Z85Error, &str)> = vec![
            (String::new(), Z85Error::KeyLength { len: 0 }, "empty"),
            (
                good[..39].to_string(),
                Z85Error::KeyLength { len: 39 },
                "39 chars",
            ),
            (
                format!("{good}0"),
                Z85Error::KeyLength { len: 41 },
                "41 chars",
            ),
            (
                format!("{good}{good}"),
                Z85Error::KeyLength { len: 80 },
                "two keys",
            ),
            (
                format!("{}\"{}", &good[..10], &good[11..]),
                Z85Error::Character {
                    position: 10,
                    found: '"',
                },
                "quote",
            ),
            (
                format!("{} {}", &good[..3], &good[4..]),
                Z85Error::Character {
                    position: 3,
                    found: ' ',
                },
                "space",
            ),
            (
                format!("{}é{}", &good[..5], &good[6..]),
                Z85Error::Character {
                    position: 5,
                    found: 'é',
                },
                "non-ascii",
            ),
            (
                format!("#####{}", &good[5..]),
                Z85Error::Overflow { position: 0 },
                "group above 2^32",
            ),
        ];
        for (text, want, what) in cases {
            assert_eq!(CurveKey::from_z85(&text), Err(want), "case {what}");
        }
    }

    #[test]
    fn error_messages_name_the_problem() {
        let err = CurveKey::from_z85("abc").unwrap_err().to_string();
        assert!(err.contains("3 characters"), "{err}");
        assert!(err.contains("exactly 40"), "{err}");
    }

    #[test]
    fn decode_refuses_length_not_multiple_of_five() {
        assert_eq!(decode("abcd"), Err(Z85Error::Length { len: 4 }));
        assert_eq!(encode(&[1, 2, 3]), Err(Z85Error::BinaryLength { len: 3 }));
    }
}
