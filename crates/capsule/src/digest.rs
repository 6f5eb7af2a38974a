//! SHA-256 helpers: a writer that hashes what passes through it, and hex.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

/// Passes writes through to `inner` while hashing them and counting bytes.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// The inner writer, the SHA-256 (hex) and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            hex::encode(self.hasher.finalize()),
            self.written,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// SHA-256 of a byte slice as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// An incremental SHA-256 giving both forms of the digest: hex for records
/// and trusted comments, bytes for Sigstore checks.
#[derive(Debug, Clone, Default)]
pub struct Sha256Hasher(Sha256);

impl Sha256Hasher {
    pub fn new() -> Self {
        Sha256Hasher(Sha256::new())
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest as lowercase hex and as bytes.
    pub fn finish(self) -> (String, [u8; 32]) {
        let raw: [u8; 32] = self.0.finalize().into();
        (hex::encode(raw), raw)
    }
}

/// Parses 64 hex digits (any case) into a SHA-256 digest.
pub fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    let mut raw = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    hex::decode_to_slice(s, &mut raw).ok()?;
    Some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hasher_and_parser_agree() {
        let mut h = Sha256Hasher::new();
        h.update(b"ab");
        h.update(b"c");
        let (hex, raw) = h.finish();
        assert_eq!(hex, sha256_hex(b"abc"));
        assert_eq!(parse_sha256_hex(&hex), Some(raw));
        assert_eq!(parse_sha256_hex(&hex.to_uppercase()), Some(raw));
        assert_eq!(parse_sha256_hex("12"), None);
        assert_eq!(parse_sha256_hex(&"g".repeat(64)), None);
    }
}
