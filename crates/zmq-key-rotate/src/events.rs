//! Rotation events and their minisign signatures.
//!
//! CURVE keys cannot sign, so a separate minisign key pair (`events.key`,
//! `events.pub` in the key store root) signs each event's JSON bytes. A
//! subscriber verifies the third frame against `events.pub` before it trusts
//! the new public key, so a forged event cannot steer clients to another key.
//!
//! Operators make this key with the minisign CLI (`minisign -G -W`). That CLI
//! leaves the checksum of a password-less secret key zeroed, which the
//! `minisign` crate's loader refuses as "corrupted"; we decode the key bytes
//! ourselves instead and check them against `events.pub` when it exists.

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use base64::Engine;
use minisign::{PublicKey, PublicKeyBox, SecretKey, SignatureBox};
use serde::{Deserialize, Serialize};

use crate::atomic;

/// The first frame of every rotation event message.
pub const TOPIC: &str = "dickbox.key.rotated";

/// The JSON frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationEvent {
    pub identity: String,
    pub generation: u64,
    /// Z85.
    pub public_key: String,
    /// Z85; null for the first generation.
    pub previous_public_key: Option<String>,
    /// RFC 3339, UTC.
    pub created: String,
    /// RFC 3339, UTC: until then servers still accept the previous key.
    pub grace_until: String,
    /// Where subscribers of the bus connect for this generation (bus identity
    /// only; null for other identities).
    pub endpoint: Option<String>,
    /// Where publishers of the bus connect for this generation.
    pub publish_endpoint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EventKeyError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a minisign secret key: {message}")]
    Format { path: PathBuf, message: String },
    #[error(
        "{path} is password-protected; the timer cannot type a password (make it with `minisign -G -W`)"
    )]
    Encrypted { path: PathBuf },
    #[error("{key} does not match {public} (key id {found} vs {expected})")]
    Mismatch {
        key: PathBuf,
        public: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{public} exists without {key}: restore the secret key or remove both to start over")]
    Orphan { key: PathBuf, public: PathBuf },
    #[error("sign event with {path}: {message}")]
    Sign { path: PathBuf, message: String },
}

/// The loaded signing key.
#[derive(Debug)]
pub struct Signer {
    path: PathBuf,
    sk: SecretKey,
    pk: PublicKey,
}

fn key_id(keynum: &[u8]) -> String {
    let mut id = [0u8; 8];
    id.copy_from_slice(&keynum[..8]);
    format!("{:016X}", u64::from_le_bytes(id))
}

impl Signer {
    /// Loads `events.key` from `dir`, or makes a new pair when neither file
    /// exists yet.
    pub fn load_or_create(dir: &Path) -> Result<Self, EventKeyError> {
        let key = dir.join("events.key");
        let public = dir.join("events.pub");
        if !key.exists() {
            if public.exists() {
                return Err(EventKeyError::Orphan { key, public });
            }
            return Self::create(&key, &public);
        }
        let signer = Self::load(&key)?;
        if public.exists() {
            let text = fs::read_to_string(&public).map_err(|source| EventKeyError::Read {
                path: public.clone(),
                source,
            })?;
            let pk = PublicKeyBox::from_string(&text)
                .and_then(|b| b.into_public_key())
                .map_err(|e| EventKeyError::Format {
                    path: public.clone(),
                    message: e.to_string(),
                })?;
            if pk.to_bytes() != signer.pk.to_bytes() {
                return Err(EventKeyError::Mismatch {
                    key,
                    public,
                    found: signer.key_id(),
                    expected: key_id(pk.keynum()),
                });
            }
        }
        Ok(signer)
    }

    fn create(key: &Path, public: &Path) -> Result<Self, EventKeyError> {
        let fail = |message: String| EventKeyError::Format {
            path: key.to_path_buf(),
            message,
        };
        let pair =
            minisign::KeyPair::generate_unencrypted_keypair().map_err(|e| fail(e.to_string()))?;
        let sk_text = pair
            .sk
            .to_box(Some("dickbox zmq rotation event signing key"))
            .map_err(|e| fail(e.to_string()))?
            .into_string();
        let pk_text = pair
            .pk
            .to_box()
            .map_err(|e| fail(e.to_string()))?
            .into_string();
        // Secret first: a crash in between leaves a key without a public file,
        // which the next run completes; the reverse would be an orphan.
        atomic::write_file(key, sk_text.as_bytes(), 0o600).map_err(|source| {
            EventKeyError::Write {
                path: key.to_path_buf(),
                source,
            }
        })?;
        atomic::write_file(public, pk_text.as_bytes(), 0o644).map_err(|source| {
            EventKeyError::Write {
                path: public.to_path_buf(),
                source,
            }
        })?;
        tracing::info!(path = %key.display(), "created rotation event signing key");
        Ok(Self {
            path: key.to_path_buf(),
            sk: pair.sk,
            pk: pair.pk,
        })
    }

    /// Reads a password-less minisign secret key, including those the CLI
    /// writes with a zeroed checksum.
    pub fn load(path: &Path) -> Result<Self, EventKeyError> {
        let fail = |message: &str| EventKeyError::Format {
            path: path.to_path_buf(),
            message: message.to_string(),
        };
        let text = fs::read_to_string(path).map_err(|source| EventKeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let line = text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with("untrusted comment:"))
            .ok_or_else(|| fail("no key line"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(line.trim())
            .map_err(|_| fail("the key line is not base64"))?;
        // sig_alg(2) kdf_alg(2) chk_alg(2) salt(32) ops(8) mem(8) keynum(8) sk(64) chk(32)
        if bytes.len() != 158 || &bytes[..2] != b"Ed" {
            return Err(fail("wrong length or algorithm"));
        }
        if bytes[2..4] != [0, 0] {
            return Err(EventKeyError::Encrypted {
                path: path.to_path_buf(),
            });
        }
        let sk = SecretKey::from_bytes(&bytes).map_err(|e| fail(&e.to_string()))?;
        let pk = PublicKey::from_secret_key(&sk).map_err(|e| fail(&e.to_string()))?;
        Ok(Self {
            path: path.to_path_buf(),
            sk,
            pk,
        })
    }

    /// The key id as minisign prints it.
    pub fn key_id(&self) -> String {
        key_id(self.pk.keynum())
    }

    /// Signs `data`; returns the `.minisig` text. The signature is checked
    /// against the public key before it is returned, so a damaged key fails
    /// here rather than at every subscriber.
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> Result<String, EventKeyError> {
        let sig = minisign::sign(
            Some(&self.pk),
            &self.sk,
            Cursor::new(data),
            Some(trusted_comment),
            Some("signature of a dickbox rotation event"),
        )
        .map_err(|e| EventKeyError::Sign {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        Ok(sig.into_string())
    }
}

/// Checks a `.minisig` text over `data` against the public key file text.
pub fn verify(public_key_text: &str, data: &[u8], signature_text: &str) -> Result<(), String> {
    let pk = PublicKeyBox::from_string(public_key_text)
        .and_then(|b| b.into_public_key())
        .map_err(|e| format!("public key: {e}"))?;
    let sig = SignatureBox::from_string(signature_text).map_err(|e| format!("signature: {e}"))?;
    minisign::verify(&pk, &sig, Cursor::new(data), true, false, false).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_and_refuses_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::load_or_create(dir.path()).unwrap();
        let again = Signer::load_or_create(dir.path()).unwrap();
        assert_eq!(signer.key_id(), again.key_id());
        let sig = signer.sign(b"{\"a\":1}", "test").unwrap();
        let pk = fs::read_to_string(dir.path().join("events.pub")).unwrap();
        verify(&pk, b"{\"a\":1}", &sig).unwrap();
        assert!(verify(&pk, b"{\"a\":2}", &sig).is_err());
    }

    #[test]
    fn refuses_public_key_without_secret() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("events.pub"), "x").unwrap();
        let err = Signer::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("exists without"), "{err}");
    }
}
