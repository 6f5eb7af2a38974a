//! Sigstore signatures on capsules, verified offline and fail-closed.
//!
//! Two kinds of signature sit beside an archive:
//!
//! - `….cosign.sig`: what `cosign sign-blob --key` writes, base64 of a DER
//!   ECDSA P-256 signature over the archive's SHA-256. [`verify_cosign`]
//!   checks it against the host's trusted PEM keys ([`CosignKeys`], the
//!   `*.pem` files of one folder, tried in name order).
//! - `….sigstore.json`: a Sigstore bundle (media type v0.3 or v0.2). [`verify_bundle`]
//!   checks it against a pinned [`TrustedRoot`] and an [`IdentityPolicy`].
//!
//! The API deploy calls, with the digest computed from the same open file
//! that is then extracted:
//!
//! ```text
//! let keys = CosignKeys::load(Path::new("/etc/dickbox/trust/sigstore/keys"))?;
//! let by = verify_cosign(&sha256, &sig_text, "x.capsule.tar.zst.cosign.sig", &keys)?;
//! let root = TrustedRoot::from_file(Path::new(".../trusted_root.json"))?;
//! let policy = IdentityPolicy::new(issuer, Identity::Exact(id))?;  // or Identity::pattern(re)?
//! let ok = verify_bundle(&sha256, &bundle_json, "x.sigstore.json", &root, &policy, Some(&keys))?;
//! let need = Require::parse("both")?; need.check(Present { minisign, sigstore })?;
//! ```
//!
//! What a bundle must pass, each failure a [`SigstoreError`] naming the rule:
//! media type v0.3 or v0.2 (v0.1 is refused by name: its inclusion proof is
//! optional, so it cannot be verified as fully); a leaf certificate
//! that chains to a pinned Fulcio CA and is valid (end inclusive) at the
//! verified time; an embedded SCT signed by a pinned CT log; an identity (SAN
//! and OIDC issuer extension) matching the policy; the message signature over
//! the file digest, or a DSSE envelope whose in-toto statement has the file
//! digest as a subject; exactly one Rekor v1 entry whose body matches the
//! bundle, whose signed entry timestamp verifies with the pinned Rekor key and
//! whose Merkle inclusion proof reaches a checkpoint signed by that key; and
//! every RFC 3161 timestamp verifying against a pinned TSA. Bundles whose
//! verification material is a public key are checked against the trusted
//! cosign keys (no identity then) and with the same transparency-log rules.
//!
//! Nothing here opens a socket: trust material is what the caller pins.
//!
//! LIMITATION(#4): Rekor v2 entries (kind version 0.0.2, checkpoint signed
//! with Ed25519, no signed entry timestamp) are refused by name, as are
//! bundles without a transparency-log entry; RSA keys and certificates are
//! refused. Only SHA-256 file digests are compared.

mod cosign;
mod der_tlv;
mod error;
mod keys;
mod policy;
mod tlog;
mod trust;
mod tsa;
mod verify;
mod x509;

pub use cosign::{CosignKeys, VerifiedBy, sign_cosign, verify_cosign};
pub use error::SigstoreError;
pub use keys::{CosignSigningKey, generate_cosign_keypair};
pub use policy::{Present, Require};
pub use trust::TrustedRoot;
pub use verify::{BundleVerified, Identity, IdentityPolicy, Signer, verify_bundle};

/// The SHA-256 a bundle says it signs, read without verifying anything:
/// the message digest, or the in-toto subjects' SHA-256 digests (hex). For
/// `capsule-build --attach-bundle`, to refuse a bundle made for another file.
pub fn bundle_subject_digests(bundle_json: &[u8]) -> Result<Vec<String>, SigstoreError> {
    use base64::Engine as _;
    let bad = |problem: &str| SigstoreError::Malformed {
        what: "bundle",
        origin: String::new(),
        problem: problem.to_owned(),
    };
    let v: serde_json::Value = serde_json::from_slice(bundle_json).map_err(|_| bad("not JSON"))?;
    let media = v
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    if !media.starts_with("application/vnd.dev.sigstore.bundle") {
        return Err(bad("no Sigstore bundle media type"));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(d) = v
        .pointer("/messageSignature/messageDigest/digest")
        .and_then(|d| d.as_str())
    {
        let raw = b64
            .decode(d)
            .map_err(|_| bad("message digest is not base64"))?;
        return Ok(vec![hex::encode(raw)]);
    }
    if let Some(p) = v.pointer("/dsseEnvelope/payload").and_then(|p| p.as_str()) {
        let raw = b64
            .decode(p)
            .map_err(|_| bad("DSSE payload is not base64"))?;
        let st: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|_| bad("DSSE payload is not JSON"))?;
        let subjects = st
            .get("subject")
            .and_then(|s| s.as_array())
            .cloned()
            .unwrap_or_default();
        return Ok(subjects
            .iter()
            .filter_map(|s| s.pointer("/digest/sha256").and_then(|h| h.as_str()))
            .map(str::to_ascii_lowercase)
            .collect());
    }
    Err(bad("neither a message digest nor a DSSE envelope"))
}

/// Largest bundle or cosign signature file read.
pub const MAX_BUNDLE_FILE: u64 = 1024 * 1024;

pub use error::Rule;

/// SHA-256 of `b` as lowercase hex.
pub(crate) fn digest_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}
