//! ECDSA public keys (P-256, P-384) and signature checks shared by the cosign
//! and bundle paths, plus P-256 key generation for `capsule-build keygen`.
//!
//! Only the curves Sigstore's public instance uses are accepted; an RSA or
//! Ed25519 key is refused by name rather than half-supported.

use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::SigstoreError;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
pub(crate) const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
pub(crate) const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
pub(crate) const OID_ECDSA_SHA512: &str = "1.2.840.10045.4.3.4";

/// The hash an ECDSA signature was made over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub(crate) fn for_sig_oid(oid: &str) -> Option<Hash> {
        match oid {
            OID_ECDSA_SHA256 => Some(Hash::Sha256),
            OID_ECDSA_SHA384 => Some(Hash::Sha384),
            OID_ECDSA_SHA512 => Some(Hash::Sha512),
            _ => None,
        }
    }

    pub(crate) fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha384 => Sha384::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

/// A trusted or embedded ECDSA public key.
#[derive(Debug, Clone)]
pub(crate) enum PubKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

impl PubKey {
    /// Parses a DER SubjectPublicKeyInfo.
    pub(crate) fn from_spki_der(der: &[u8]) -> Result<PubKey, String> {
        use der::Decode as _;
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| format!("not a DER SubjectPublicKeyInfo: {e}"))?;
        let alg = spki.algorithm.oid.to_string();
        if alg != OID_EC_PUBLIC_KEY {
            return Err(format!(
                "key algorithm {alg} is not supported (only ECDSA P-256 and P-384)"
            ));
        }
        let curve = spki
            .algorithm
            .parameters_oid()
            .map(|o| o.to_string())
            .unwrap_or_default();
        match curve.as_str() {
            OID_P256 => p256::ecdsa::VerifyingKey::from_public_key_der(der)
                .map(PubKey::P256)
                .map_err(|e| format!("bad P-256 key: {e}")),
            OID_P384 => p384::ecdsa::VerifyingKey::from_public_key_der(der)
                .map(PubKey::P384)
                .map_err(|e| format!("bad P-384 key: {e}")),
            other => Err(format!("curve {other:?} is not supported (P-256, P-384)")),
        }
    }

    /// Parses a `PUBLIC KEY` PEM block.
    pub(crate) fn from_pem(text: &str) -> Result<PubKey, String> {
        let der = pem_block(text, "PUBLIC KEY")?;
        PubKey::from_spki_der(&der)
    }

    pub(crate) fn curve(&self) -> &'static str {
        match self {
            PubKey::P256(_) => "P-256",
            PubKey::P384(_) => "P-384",
        }
    }

    /// Checks a DER signature over a precomputed hash.
    pub(crate) fn verify_prehash(&self, prehash: &[u8], sig_der: &[u8]) -> Result<(), String> {
        match self {
            PubKey::P256(k) => {
                let sig = p256::ecdsa::DerSignature::from_bytes(sig_der)
                    .map_err(|_| "signature is not a DER ECDSA P-256 signature".to_owned())?;
                k.verify_prehash(prehash, &sig)
                    .map_err(|_| "signature does not verify".to_owned())
            }
            PubKey::P384(k) => {
                let sig = p384::ecdsa::DerSignature::from_bytes(sig_der)
                    .map_err(|_| "signature is not a DER ECDSA P-384 signature".to_owned())?;
                k.verify_prehash(prehash, &sig)
                    .map_err(|_| "signature does not verify".to_owned())
            }
        }
    }

    /// Checks a DER signature over `data` hashed with `hash`.
    pub(crate) fn verify(&self, hash: Hash, data: &[u8], sig_der: &[u8]) -> Result<(), String> {
        self.verify_prehash(&hash.digest(data), sig_der)
    }
}

/// The bytes of the one PEM block labelled `label` in `text`.
pub(crate) fn pem_block(text: &str, label: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| format!("no '{begin}' line (is this a PEM {label}?)"))?;
    let rest = &text[start + begin.len()..];
    let stop = rest
        .find(&end)
        .ok_or_else(|| format!("no '{end}' line (truncated?)"))?;
    if rest[stop + end.len()..].contains("-----BEGIN") {
        return Err("more than one PEM block".into());
    }
    let b64: String = rest[..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| format!("{label} block is not base64"))
}

/// A P-256 signing key for cosign-style signatures.
pub struct CosignSigningKey(p256::ecdsa::SigningKey);

impl std::fmt::Debug for CosignSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret scalar.
        f.write_str("CosignSigningKey(..)")
    }
}

impl CosignSigningKey {
    /// Reads a PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`, as
    /// `openssl ecparam -genkey` writes) P-256 key. Encrypted keys, such as
    /// cosign's own `ENCRYPTED SIGSTORE PRIVATE KEY`, are refused by name.
    pub fn from_pem(text: &str, origin: &str) -> Result<Self, SigstoreError> {
        let bad = |problem: String| SigstoreError::Key {
            origin: origin.to_owned(),
            problem,
        };
        if text.contains("ENCRYPTED") {
            return Err(bad(
                "encrypted private keys are not supported: use an unencrypted PKCS#8 or SEC1 \
                 P-256 key (capsule-build keygen --cosign, or openssl ecparam -name prime256v1 \
                 -genkey)"
                    .into(),
            ));
        }
        let sk = if text.contains("-----BEGIN EC PRIVATE KEY-----") {
            let der = pem_block(text, "EC PRIVATE KEY").map_err(bad)?;
            p256::SecretKey::from_sec1_der(&der)
                .map_err(|_| bad("not a SEC1 P-256 private key (another curve?)".into()))?
        } else {
            let der = pem_block(text, "PRIVATE KEY").map_err(bad)?;
            p256::SecretKey::from_pkcs8_der(&der)
                .map_err(|_| bad("not a PKCS#8 P-256 private key (another curve?)".into()))?
        };
        Ok(CosignSigningKey(p256::ecdsa::SigningKey::from(sk)))
    }

    /// Base64 of the DER signature over a SHA-256, as cosign writes it.
    pub fn sign_digest(&self, sha256: &[u8; 32]) -> Result<String, SigstoreError> {
        use base64::Engine as _;
        let sig: p256::ecdsa::Signature =
            self.0
                .sign_prehash(sha256)
                .map_err(|e| SigstoreError::Sign {
                    what: "cosign signature".into(),
                    problem: e.to_string(),
                })?;
        Ok(base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes()))
    }

    /// SHA-256 of the public key's DER SubjectPublicKeyInfo, hex: the id
    /// recorded in build records and reported by verification.
    pub fn fingerprint(&self) -> Result<String, SigstoreError> {
        let pem = self.public_key_pem()?;
        let der = pem_block(&pem, "PUBLIC KEY").map_err(|problem| SigstoreError::Sign {
            what: "public key".into(),
            problem,
        })?;
        Ok(super::digest_hex(&der))
    }

    pub fn public_key_pem(&self) -> Result<String, SigstoreError> {
        self.0
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| SigstoreError::Sign {
                what: "public key".into(),
                problem: e.to_string(),
            })
    }
}

/// A new P-256 key pair as (public PEM, PKCS#8 private PEM).
pub fn generate_cosign_keypair() -> Result<(String, String), SigstoreError> {
    use std::io::Read as _;
    let err = |problem: String| SigstoreError::Sign {
        what: "cosign key generation".into(),
        problem,
    };
    // The kernel's CSPRNG; a scalar out of range is drawn again (odds about
    // 2^-32 per draw).
    let mut urandom = std::fs::File::open("/dev/urandom").map_err(|e| err(e.to_string()))?;
    for _ in 0..16 {
        let mut seed = [0u8; 32];
        urandom
            .read_exact(&mut seed)
            .map_err(|e| err(e.to_string()))?;
        let Ok(sk) = p256::SecretKey::from_slice(&seed) else {
            continue;
        };
        let private = sk
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| err(e.to_string()))?
            .to_string();
        let public = sk
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| err(e.to_string()))?;
        return Ok((public, private));
    }
    Err(err("no valid scalar drawn from /dev/urandom".into()))
}
