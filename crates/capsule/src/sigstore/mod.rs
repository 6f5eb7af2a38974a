//! Sigstore signatures on capsules, verified offline and fail-closed.
//!
//! Two kinds of signature sit beside an archive:
//!
//! - `….cosign.sig`: what `cosign sign-blob --key` writes, base64 of a DER
//!   ECDSA P-256 signature over the archive's SHA-256. [`verify_cosign`]
//!   checks it against the host's trusted PEM keys ([`CosignKeys`], the
//!   `*.pem` files of one folder, tried in name order).
//! - `….sigstore.json`: a Sigstore bundle (media type v0.3). [`verify_bundle`]
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
//! media type v0.3 (v0.1 and v0.2 are refused by name: they may lack the
//! inclusion proof, so they cannot be verified as fully); a leaf certificate
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
pub use keys::generate_cosign_keypair;
pub use policy::{Present, Require};
pub use trust::TrustedRoot;
pub use verify::{BundleVerified, Identity, IdentityPolicy, Signer, verify_bundle};

/// Largest bundle or cosign signature file read.
pub const MAX_BUNDLE_FILE: u64 = 1024 * 1024;

pub use error::Rule;

/// SHA-256 of `b` as lowercase hex.
pub(crate) fn digest_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}
