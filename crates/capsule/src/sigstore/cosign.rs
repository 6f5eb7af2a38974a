//! Key-based, cosign-style signatures: base64 of a DER ECDSA P-256
//! signature over the file's SHA-256, checked against trusted PEM keys.
//!
//! The trusted keys are the `*.pem` files of one folder. Every key must parse
//! and be P-256: a stray P-384 or RSA key is an error at load time, so a typo
//! cannot quietly narrow or widen trust. A signature is tried against each key
//! in name order and the first that verifies is reported.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::keys::{CosignSigningKey, PubKey};
use super::{MAX_BUNDLE_FILE, SigstoreError};

/// Largest key file read.
const MAX_KEY_FILE: u64 = 16 * 1024;

/// Which trusted key verified a cosign signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBy {
    /// The key's file.
    pub path: PathBuf,
    /// SHA-256 of the key's DER SubjectPublicKeyInfo, hex (as Rekor's key id).
    pub fingerprint: String,
}

/// The P-256 public keys a host trusts for cosign signatures.
#[derive(Debug, Default, Clone)]
pub struct CosignKeys {
    /// (file, fingerprint, key, DER SubjectPublicKeyInfo)
    pub(crate) keys: Vec<(PathBuf, String, PubKey, Vec<u8>)>,
    pub(crate) dir: String,
}

pub(crate) fn read_small(
    path: &Path,
    max: u64,
    what: &'static str,
) -> Result<Vec<u8>, SigstoreError> {
    crate::capped::read_capped(path, max).map_err(|e| match e {
        crate::capped::CappedRead::Io(source) => SigstoreError::Read {
            path: path.to_owned(),
            source,
        },
        crate::capped::CappedRead::TooLarge => SigstoreError::Malformed {
            what,
            origin: path.display().to_string(),
            problem: format!("file is larger than {max} bytes"),
        },
    })
}

impl CosignKeys {
    /// Loads every `*.pem` file in `dir`. An empty folder gives an empty set
    /// (every cosign signature is then refused).
    pub fn load(dir: &Path) -> Result<CosignKeys, SigstoreError> {
        let entries = std::fs::read_dir(dir).map_err(|source| SigstoreError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "pem"))
            .collect();
        paths.sort();
        let mut keys = CosignKeys {
            dir: dir.display().to_string(),
            ..Default::default()
        };
        for p in paths {
            let text = read_small(&p, MAX_KEY_FILE, "public key")?;
            let text = String::from_utf8_lossy(&text);
            keys.add_pem(&text, p)?;
        }
        Ok(keys)
    }

    /// Adds one PEM public key; `path` names it in reports.
    pub fn add_pem(&mut self, text: &str, path: PathBuf) -> Result<(), SigstoreError> {
        let origin = path.display().to_string();
        let key = PubKey::from_pem(text).map_err(|problem| SigstoreError::Key {
            origin: origin.clone(),
            problem,
        })?;
        if !matches!(key, PubKey::P256(_)) {
            return Err(SigstoreError::Key {
                origin,
                problem: format!(
                    "a {} key where ECDSA P-256 is expected (cosign keys are P-256)",
                    key.curve()
                ),
            });
        }
        let der =
            super::keys::pem_block(text, "PUBLIC KEY").map_err(|problem| SigstoreError::Key {
                origin: path.display().to_string(),
                problem,
            })?;
        let fingerprint = super::digest_hex(&der);
        self.keys.push((path, fingerprint, key, der));
        if self.dir.is_empty() {
            self.dir = "(keys given one by one)".into();
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The DER of the key loaded from `path`.
    pub(crate) fn der_of(&self, path: &Path) -> Option<&[u8]> {
        self.keys
            .iter()
            .find(|(p, ..)| p == path)
            .map(|(.., der)| der.as_slice())
    }

    /// The first key that verifies `sig_der` over `prehash`.
    pub(crate) fn find(&self, prehash: &[u8], sig_der: &[u8]) -> Option<VerifiedBy> {
        self.keys.iter().find_map(|(path, fp, k, _)| {
            k.verify_prehash(prehash, sig_der)
                .ok()
                .map(|()| VerifiedBy {
                    path: path.clone(),
                    fingerprint: fp.clone(),
                })
        })
    }
}

/// Verifies a cosign signature file's text (`origin` names it in errors)
/// over a file whose SHA-256 is `sha256`.
pub fn verify_cosign(
    sha256: &[u8; 32],
    sig_text: &str,
    origin: &str,
    keys: &CosignKeys,
) -> Result<VerifiedBy, SigstoreError> {
    let bad = |problem: String| SigstoreError::Malformed {
        what: "cosign signature",
        origin: origin.to_owned(),
        problem,
    };
    if sig_text.len() as u64 > MAX_BUNDLE_FILE {
        return Err(bad("too large".into()));
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(sig_text.trim())
        .map_err(|_| bad("not base64 (cosign writes base64 of a DER signature)".into()))?;
    if p256::ecdsa::DerSignature::from_bytes(&der).is_err() {
        return Err(bad("not a DER ECDSA P-256 signature".into()));
    }
    keys.find(sha256, &der)
        .ok_or_else(|| SigstoreError::CosignNoKey {
            origin: origin.to_owned(),
            dir: keys.dir.clone(),
            tried: keys.len(),
        })
}

/// Signs a SHA-256 with a P-256 PEM private key (`key_origin` names it in
/// errors) and returns the `.cosign.sig` text (base64, no newline, as cosign).
pub fn sign_cosign(
    sha256: &[u8; 32],
    key_pem: &str,
    key_origin: &str,
) -> Result<(String, String), SigstoreError> {
    let key = CosignSigningKey::from_pem(key_pem, key_origin)?;
    Ok((key.sign_digest(sha256)?, key.public_key_pem()?))
}
