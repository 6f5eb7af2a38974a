//! minisign keys and signatures: parsing, the host keyring, signing.
//!
//! Only prehashed (`ED`) signatures are accepted: the legacy `Ed` form signs
//! the whole file in memory and is refused by name. A signature is matched to
//! a trusted key by the key id it carries, never by anything in the capsule.
//! Key and signature files are parsed defensively: CRLF line endings and
//! trailing whitespace are tolerated, oversized files, lines and trusted
//! comments are refused with an error instead of being buffered.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// Largest signature file read (a signature is about 300 bytes).
pub const MAX_SIGNATURE_FILE: u64 = 8 * 1024;
/// Largest key file read.
pub const MAX_KEY_FILE: u64 = 4 * 1024;
/// Longest comment line accepted in key and signature files.
pub const MAX_COMMENT_LINE: usize = 1024;

/// A minisign key id, shown as minisign shows it: 16 upper-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId([u8; 8]);

impl KeyId {
    pub fn from_bytes(b: [u8; 8]) -> Self {
        KeyId(b)
    }

    /// Parses 16 hex digits in any case, as in `/etc/dickbox/trust/revoked`.
    pub fn parse_hex(s: &str) -> Option<KeyId> {
        if s.len() != 16 {
            return None;
        }
        let n = u64::from_str_radix(s, 16).ok()?;
        Some(KeyId(n.to_le_bytes()))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MinisignError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {origin}: {problem}")]
    Malformed {
        what: &'static str,
        origin: String,
        problem: String,
    },
    #[error(
        "signature {origin} uses the legacy Ed algorithm (whole file signed unhashed); \
         only prehashed ED signatures are accepted: re-sign with `minisign -S -H` or capsule-build"
    )]
    LegacySignature { origin: String },
    #[error("capsule signed by key {key_id}, which the host does not trust (no such key in {dir})")]
    UnknownKey { key_id: KeyId, dir: String },
    #[error("capsule signed by revoked key {key_id} (listed in {revoked})")]
    RevokedKey { key_id: KeyId, revoked: String },
    #[error(
        "signature {origin} does not verify with trusted key {key_id}: the file was changed or signed by another key"
    )]
    BadSignature { origin: String, key_id: KeyId },
    #[error("secret key {path}: {problem}")]
    SecretKey { path: PathBuf, problem: String },
    #[error("sign {what}: {problem}")]
    Sign { what: String, problem: String },
}

/// Reads a small text file, refusing ones larger than `max` bytes.
fn read_small(path: &Path, max: u64, what: &'static str) -> Result<String, MinisignError> {
    let malformed = |problem: String| MinisignError::Malformed {
        what,
        origin: path.display().to_string(),
        problem,
    };
    let buf = crate::capped::read_capped(path, max).map_err(|e| match e {
        crate::capped::CappedRead::Io(source) => MinisignError::Read {
            path: path.to_owned(),
            source,
        },
        crate::capped::CappedRead::TooLarge => {
            malformed(format!("file is larger than {max} bytes"))
        }
    })?;
    String::from_utf8(buf).map_err(|_| malformed("not UTF-8 text".into()))
}

/// Splits key or signature text into lines without CR or trailing
/// whitespace, skipping blank lines at the end.
fn clean_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().map(|l| l.trim_end()).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// A trusted minisign public key.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub key_id: KeyId,
    /// The key as its base64 line, e.g. `RWQ…`.
    pub base64: String,
    inner: minisign_verify::PublicKey,
}

impl PublicKey {
    /// Parses the text of a `.pub` file (comment line, then the key).
    pub fn parse(text: &str, origin: &str) -> Result<PublicKey, MinisignError> {
        let bad = |problem: &str| MinisignError::Malformed {
            what: "public key",
            origin: origin.to_owned(),
            problem: problem.to_owned(),
        };
        let lines = clean_lines(text);
        let key_line = match lines.as_slice() {
            [comment, key] => {
                if !comment.starts_with("untrusted comment:") {
                    return Err(bad("first line must be an 'untrusted comment:' line"));
                }
                if comment.len() > MAX_COMMENT_LINE {
                    return Err(bad("comment line is too long"));
                }
                *key
            }
            [key] => *key,
            _ => return Err(bad("expected a comment line and a key line")),
        };
        Self::from_base64(key_line, origin)
    }

    /// Parses a bare base64 key (`RWQ…`), as in a manifest's `public_key`.
    pub fn from_base64(key_line: &str, origin: &str) -> Result<PublicKey, MinisignError> {
        let bad = |problem: &str| MinisignError::Malformed {
            what: "public key",
            origin: origin.to_owned(),
            problem: problem.to_owned(),
        };
        let raw = B64
            .decode(key_line.trim())
            .map_err(|_| bad("key line is not base64"))?;
        if raw.len() != 42 {
            return Err(bad("key has the wrong length (want 42 bytes)"));
        }
        if &raw[..2] != b"Ed" {
            return Err(bad("not an Ed25519 minisign key"));
        }
        let inner = minisign_verify::PublicKey::from_base64(key_line.trim())
            .map_err(|e| bad(&e.to_string()))?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&raw[2..10]);
        Ok(PublicKey {
            key_id: KeyId(id),
            base64: key_line.trim().to_owned(),
            inner,
        })
    }

    pub fn from_file(path: &Path) -> Result<PublicKey, MinisignError> {
        let text = read_small(path, MAX_KEY_FILE, "public key")?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The Ed25519 key bytes, for comparing keys regardless of their id.
    pub fn key_bytes(&self) -> Vec<u8> {
        B64.decode(&self.base64)
            .map(|raw| raw[10..].to_vec())
            .unwrap_or_default()
    }
}

/// A parsed prehashed minisign signature.
#[derive(Clone)]
pub struct Signature {
    pub key_id: KeyId,
    /// The trusted comment, readable before verification but only to be
    /// believed after it.
    pub trusted_comment: String,
    pub untrusted_comment: String,
    inner: minisign_verify::Signature,
    origin: String,
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signature")
            .field("key_id", &self.key_id)
            .field("trusted_comment", &self.trusted_comment)
            .field("origin", &self.origin)
            .finish()
    }
}

impl Signature {
    pub fn parse(text: &str, origin: &str) -> Result<Signature, MinisignError> {
        let bad = |problem: String| MinisignError::Malformed {
            what: "signature",
            origin: origin.to_owned(),
            problem,
        };
        if text.len() as u64 > MAX_SIGNATURE_FILE {
            return Err(bad(format!("larger than {MAX_SIGNATURE_FILE} bytes")));
        }
        let lines = clean_lines(text);
        if lines.len() != 4 {
            return Err(bad(format!(
                "expected 4 lines (comment, signature, trusted comment, global signature), found {}",
                lines.len()
            )));
        }
        if !lines[0].starts_with("untrusted comment:") {
            return Err(bad("first line must be an 'untrusted comment:' line".into()));
        }
        for (i, l) in [(1, lines[0]), (3, lines[2])] {
            if l.len() > MAX_COMMENT_LINE {
                return Err(bad(format!(
                    "comment on line {i} is longer than {MAX_COMMENT_LINE} bytes"
                )));
            }
        }
        if !lines[2].starts_with("trusted comment: ") {
            return Err(bad("third line must be a 'trusted comment:' line".into()));
        }
        let bin1 = B64
            .decode(lines[1])
            .map_err(|_| bad("line 2 is not base64 (truncated or damaged?)".into()))?;
        if bin1.len() != 74 {
            return Err(bad(format!(
                "line 2 decodes to {} bytes, want 74 (truncated?)",
                bin1.len()
            )));
        }
        match &bin1[..2] {
            b"ED" => {}
            b"Ed" => {
                return Err(MinisignError::LegacySignature {
                    origin: origin.to_owned(),
                });
            }
            _ => return Err(bad("unknown signature algorithm".into())),
        }
        let normalized = format!("{}\n{}\n{}\n{}\n", lines[0], lines[1], lines[2], lines[3]);
        let inner = minisign_verify::Signature::decode(&normalized)
            .map_err(|e| bad(format!("{e} (truncated or damaged?)")))?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&bin1[2..10]);
        Ok(Signature {
            key_id: KeyId(id),
            trusted_comment: inner.trusted_comment().to_owned(),
            untrusted_comment: lines[0]["untrusted comment:".len()..].trim().to_owned(),
            inner,
            origin: origin.to_owned(),
        })
    }

    pub fn from_file(path: &Path) -> Result<Signature, MinisignError> {
        let text = read_small(path, MAX_SIGNATURE_FILE, "signature")?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Starts streaming verification against `key`: feed every byte of the
    /// file to the returned verifier, then call `finish`.
    pub fn verifier<'a>(&'a self, key: &'a PublicKey) -> Result<Verifier<'a>, MinisignError> {
        let inner =
            key.inner
                .verify_stream(&self.inner)
                .map_err(|_| MinisignError::BadSignature {
                    origin: self.origin.clone(),
                    key_id: key.key_id,
                })?;
        Ok(Verifier {
            inner,
            key_id: key.key_id,
            origin: &self.origin,
        })
    }

    /// Verifies a whole reader (convenience for small inputs and tests).
    pub fn verify_reader(&self, key: &PublicKey, mut r: impl Read) -> Result<(), MinisignError> {
        let mut v = self.verifier(key)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = r.read(&mut buf).map_err(|source| MinisignError::Read {
                path: PathBuf::from(&self.origin),
                source,
            })?;
            if n == 0 {
                break;
            }
            v.update(&buf[..n]);
        }
        v.finish()
    }
}

/// Streaming verification of one signature.
pub struct Verifier<'a> {
    inner: minisign_verify::StreamVerifier<'a>,
    key_id: KeyId,
    origin: &'a str,
}

impl fmt::Debug for Verifier<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl Verifier<'_> {
    pub fn update(&mut self, buf: &[u8]) {
        self.inner.update(buf);
    }

    pub fn finish(mut self) -> Result<(), MinisignError> {
        self.inner
            .finalize()
            .map_err(|_| MinisignError::BadSignature {
                origin: self.origin.to_owned(),
                key_id: self.key_id,
            })
    }
}

/// The keys a host trusts: `*.pub` files in one folder, minus revoked ids.
#[derive(Debug, Default)]
pub struct Keyring {
    keys: BTreeMap<KeyId, (PublicKey, PathBuf)>,
    revoked: BTreeSet<KeyId>,
    dir: String,
    revoked_file: String,
}

impl Keyring {
    /// Loads every `*.pub` file in `dir` and the revocation list `revoked`
    /// (absent means none revoked). A malformed key or revocation line is an
    /// error: a typo must not silently widen or narrow trust.
    pub fn load(dir: &Path, revoked: Option<&Path>) -> Result<Keyring, MinisignError> {
        let mut ring = Keyring {
            dir: dir.display().to_string(),
            ..Default::default()
        };
        let entries = std::fs::read_dir(dir).map_err(|source| MinisignError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "pub"))
            .collect();
        paths.sort();
        for p in paths {
            let key = PublicKey::from_file(&p)?;
            if let Some((_, other)) = ring.keys.get(&key.key_id) {
                return Err(MinisignError::Malformed {
                    what: "keyring",
                    origin: p.display().to_string(),
                    problem: format!("key id {} is also in {}", key.key_id, other.display()),
                });
            }
            ring.keys.insert(key.key_id, (key, p));
        }
        if let Some(rpath) = revoked {
            ring.revoked_file = rpath.display().to_string();
            match read_small(rpath, 1 << 20, "revocation list") {
                Ok(text) => ring.revoked = parse_revoked(&text, &ring.revoked_file)?,
                Err(MinisignError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ring)
    }

    pub fn from_keys(keys: impl IntoIterator<Item = PublicKey>) -> Keyring {
        let mut ring = Keyring {
            dir: "<given keys>".into(),
            ..Default::default()
        };
        for k in keys {
            ring.keys.insert(k.key_id, (k, PathBuf::new()));
        }
        ring
    }

    /// The trusted key for a signature's key id, refusing revoked ids.
    pub fn key_for(&self, id: KeyId) -> Result<(&PublicKey, &Path), MinisignError> {
        if self.revoked.contains(&id) {
            return Err(MinisignError::RevokedKey {
                key_id: id,
                revoked: self.revoked_file.clone(),
            });
        }
        self.keys
            .get(&id)
            .map(|(k, p)| (k, p.as_path()))
            .ok_or_else(|| MinisignError::UnknownKey {
                key_id: id,
                dir: self.dir.clone(),
            })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Parses a revocation list: one 16-hex-digit key id per line, any case, `#`
/// comments and blank lines ignored.
pub fn parse_revoked(text: &str, origin: &str) -> Result<BTreeSet<KeyId>, MinisignError> {
    let mut set = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        let id = KeyId::parse_hex(l).ok_or_else(|| MinisignError::Malformed {
            what: "revocation list",
            origin: format!("{origin}:{}", i + 1),
            problem: format!("{l:?} is not a key id (16 hex digits)"),
        })?;
        set.insert(id);
    }
    Ok(set)
}

/// A secret key ready to sign.
pub struct SigningKey {
    sk: minisign::SecretKey,
    pk: minisign::PublicKey,
    pub key_id: KeyId,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads a minisign secret key file, made by us or by the stock CLI, with
    /// or without a password.
    pub fn load(path: &Path, password: Option<String>) -> Result<SigningKey, MinisignError> {
        let bad = |problem: String| MinisignError::SecretKey {
            path: path.to_owned(),
            problem,
        };
        let text = read_small(path, MAX_KEY_FILE, "secret key")?;
        let lines = clean_lines(&text);
        let [comment, key_line] = lines.as_slice() else {
            return Err(bad("expected a comment line and a key line".into()));
        };
        if !comment.starts_with("untrusted comment:") || comment.len() > MAX_COMMENT_LINE {
            return Err(bad(
                "first line must be a short 'untrusted comment:' line".into()
            ));
        }
        let raw = B64
            .decode(key_line)
            .map_err(|_| bad("key line is not base64".into()))?;
        // sig_alg(2) kdf_alg(2) chk_alg(2) salt(32) ops(8) mem(8) keynum(8) sk(64) chk(32)
        if raw.len() != 158 {
            return Err(bad(format!("decodes to {} bytes, want 158", raw.len())));
        }
        let unencrypted = raw[2..4] == [0, 0];
        let sk = if unencrypted {
            if raw[126..].iter().all(|&b| b == 0) {
                // The minisign CLI writes password-less keys (`-G -W`) with an
                // all-zero checksum, which the minisign crate calls corrupted.
                // Such a key is used as is; signing below checks the result
                // against the key's own public half, so a damaged key still
                // cannot produce a signature.
                tracing::debug!(path = %path.display(), "secret key without checksum (minisign -W)");
                minisign::SecretKey::from_bytes(&raw).map_err(|e| bad(e.to_string()))?
            } else {
                let sk_box =
                    minisign::SecretKeyBox::from_string(&format!("{comment}\n{key_line}\n"))
                        .map_err(|e| bad(e.to_string()))?;
                minisign::SecretKey::from_unencrypted_box(sk_box).map_err(|e| bad(e.to_string()))?
            }
        } else {
            let Some(pw) = password else {
                return Err(bad(
                    "key is encrypted: give its password (--password-file or --password-env)"
                        .into(),
                ));
            };
            let sk_box = minisign::SecretKeyBox::from_string(&format!("{comment}\n{key_line}\n"))
                .map_err(|e| bad(e.to_string()))?;
            minisign::SecretKey::from_box(sk_box, Some(pw)).map_err(|e| bad(e.to_string()))?
        };
        let pk = minisign::PublicKey::from_secret_key(&sk).map_err(|e| bad(e.to_string()))?;
        let mut id = [0u8; 8];
        id.copy_from_slice(sk.keynum());
        Ok(SigningKey {
            sk,
            pk,
            key_id: KeyId(id),
        })
    }

    /// Signs everything `data` yields (prehashed, `ED`) and returns the
    /// signature file's text. The signature is checked against the key's
    /// public half before it is returned.
    pub fn sign(&self, data: impl Read, trusted_comment: &str) -> Result<String, MinisignError> {
        if trusted_comment.len() > MAX_COMMENT_LINE || trusted_comment.contains('\n') {
            return Err(MinisignError::Sign {
                what: "trusted comment".into(),
                problem: "must be one line of at most 1024 bytes".into(),
            });
        }
        let sig = minisign::sign(
            Some(&self.pk),
            &self.sk,
            data,
            Some(trusted_comment),
            Some("signature from capsule-build"),
        )
        .map_err(|e| MinisignError::Sign {
            what: format!("with key {}", self.key_id),
            problem: e.to_string(),
        })?;
        Ok(sig.into_string())
    }

    /// The public half as `.pub` file text.
    pub fn public_key_text(&self) -> Result<String, MinisignError> {
        let b = self.pk.to_box().map_err(|e| MinisignError::Sign {
            what: "public key".into(),
            problem: e.to_string(),
        })?;
        Ok(b.into_string())
    }
}

/// A new key pair as `.pub` and `.key` file texts. With a password the
/// secret key is encrypted the way the minisign CLI does (scrypt).
pub fn generate_keypair(
    password: Option<String>,
) -> Result<(String, String, KeyId), MinisignError> {
    let err = |e: minisign::PError| MinisignError::Sign {
        what: "key generation".into(),
        problem: e.to_string(),
    };
    let kp = match password {
        Some(pw) => minisign::KeyPair::generate_encrypted_keypair(Some(pw)).map_err(err)?,
        None => minisign::KeyPair::generate_unencrypted_keypair().map_err(err)?,
    };
    let mut id = [0u8; 8];
    id.copy_from_slice(kp.sk.keynum());
    let pk = kp.pk.to_box().map_err(err)?.into_string();
    let sk = kp
        .sk
        .to_box(Some("minisign secret key made by capsule-build"))
        .map_err(err)?
        .into_string();
    Ok((pk, sk, KeyId(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_parse_in_any_case() {
        let a = KeyId::parse_hex("1a2b3c4d5e6f7081").unwrap();
        let b = KeyId::parse_hex("1A2B3C4D5E6F7081").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "1A2B3C4D5E6F7081");
        assert!(KeyId::parse_hex("1A2B").is_none());
        let set = parse_revoked("# header\n1a2b3c4d5e6f7081  # old CI key\n\n", "r").unwrap();
        assert!(set.contains(&a));
        assert!(parse_revoked("zz\n", "r").is_err());
    }

    #[test]
    fn sign_and_verify_round_trip_with_crlf_and_trailing_space() {
        let (pk_text, sk_text, id) = generate_keypair(None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let skp = dir.path().join("k.key");
        std::fs::write(&skp, &sk_text).unwrap();
        let key = SigningKey::load(&skp, None).unwrap();
        assert_eq!(key.key_id, id);
        let sig_text = key.sign(&b"hello"[..], "dickbox test").unwrap();
        let crlf = |s: &str| s.replace('\n', "  \r\n");
        let pk = PublicKey::parse(&crlf(&pk_text), "pk").unwrap();
        let sig = Signature::parse(&crlf(&sig_text), "sig").unwrap();
        assert_eq!(sig.key_id, id);
        assert_eq!(sig.trusted_comment, "dickbox test");
        sig.verify_reader(&pk, &b"hello"[..]).unwrap();
        let err = sig.verify_reader(&pk, &b"hellO"[..]).unwrap_err();
        assert!(matches!(err, MinisignError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn malformed_signatures_are_named() {
        let (_, sk_text, _) = generate_keypair(None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let skp = dir.path().join("k.key");
        std::fs::write(&skp, &sk_text).unwrap();
        let key = SigningKey::load(&skp, None).unwrap();
        let good = key.sign(&b"x"[..], "c").unwrap();
        let lines: Vec<&str> = good.lines().collect();
        let cases: Vec<(String, &str)> = vec![
            (lines[..2].join("\n"), "expected 4 lines"),
            (
                format!(
                    "{}\n{}\n{}\n{}",
                    lines[0],
                    &lines[1][..40],
                    lines[2],
                    lines[3]
                ),
                "line 2",
            ),
            (
                format!(
                    "{}\n{}\ntrusted comment: {}\n{}",
                    lines[0],
                    lines[1],
                    "x".repeat(9000),
                    lines[3]
                ),
                "larger than",
            ),
            (
                format!(
                    "{}\n{}\ntrusted comment: {}\n{}",
                    lines[0],
                    lines[1],
                    "x".repeat(2000),
                    lines[3]
                ),
                "line 3 is longer",
            ),
            (
                format!(
                    "untrusted comment: {}\n{}\n{}\n{}",
                    "y".repeat(2000),
                    lines[1],
                    lines[2],
                    lines[3]
                ),
                "longer than",
            ),
            (String::new(), "expected 4 lines"),
        ];
        for (text, want) in cases {
            let err = Signature::parse(&text, "t.minisig")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "want {want:?} in {err}");
        }
        // Legacy Ed: flip the algorithm bytes.
        let mut raw = B64.decode(lines[1]).unwrap();
        raw[1] = b'd';
        let legacy = format!(
            "{}\n{}\n{}\n{}",
            lines[0],
            B64.encode(raw),
            lines[2],
            lines[3]
        );
        let err = Signature::parse(&legacy, "t.minisig").unwrap_err();
        assert!(matches!(err, MinisignError::LegacySignature { .. }));
        assert!(err.to_string().contains("legacy Ed"));
    }

    #[test]
    fn keyring_refuses_unknown_and_revoked_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (pk_a, _, id_a) = generate_keypair(None).unwrap();
        let (_, _, id_b) = generate_keypair(None).unwrap();
        std::fs::write(dir.path().join("a.pub"), pk_a).unwrap();
        let revoked = dir.path().join("revoked");
        let ring = Keyring::load(dir.path(), Some(&revoked)).unwrap();
        assert!(ring.key_for(id_a).is_ok());
        assert!(matches!(
            ring.key_for(id_b),
            Err(MinisignError::UnknownKey { .. })
        ));
        std::fs::write(&revoked, format!("{}\n", id_a.to_string().to_lowercase())).unwrap();
        let ring = Keyring::load(dir.path(), Some(&revoked)).unwrap();
        let err = ring.key_for(id_a).unwrap_err();
        assert!(err.to_string().contains("revoked key"), "{err}");
    }
}
