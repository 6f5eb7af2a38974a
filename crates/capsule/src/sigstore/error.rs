//! The refusals of Sigstore verification, one variant per rule.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SigstoreError {
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
    #[error("key {origin}: {problem}")]
    Key { origin: String, problem: String },
    #[error(
        "cosign signature {origin} does not verify with any trusted key in {dir} (tried {tried}): the file was changed or signed by another key"
    )]
    CosignNoKey {
        origin: String,
        dir: String,
        tried: usize,
    },
    #[error("bundle {origin}: media type {media_type:?} is refused: {why}")]
    MediaType {
        origin: String,
        media_type: String,
        why: &'static str,
    },
    #[error("bundle {origin}: rule {rule} refused it: {detail}")]
    Rule {
        origin: String,
        rule: Rule,
        detail: String,
    },
    #[error("sign {what}: {problem}")]
    Sign { what: String, problem: String },
    #[error("policy: {0}")]
    Policy(String),
}

/// The rules a bundle is checked against, named in refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The leaf certificate chains to a pinned Fulcio CA.
    CertificateChain,
    /// Every certificate is within its validity at the verified time.
    CertificateValidity,
    /// The certificate's embedded SCT verifies against a pinned CT log.
    Sct,
    /// The certificate's identity matches the policy.
    Identity,
    /// The signature verifies over the file digest.
    Signature,
    /// The file digest is what was signed (message digest or DSSE subject).
    Digest,
    /// The DSSE envelope is acceptable.
    Dsse,
    /// The transparency-log entry matches the bundle.
    TlogBody,
    /// The signed entry timestamp verifies against the pinned Rekor key.
    TlogSet,
    /// The Merkle inclusion proof reaches the checkpoint's root.
    TlogInclusionProof,
    /// The checkpoint is signed by the pinned Rekor key.
    TlogCheckpoint,
    /// The log entry is of a kind and version we verify.
    TlogEntry,
    /// RFC 3161 timestamps verify against a pinned TSA.
    Timestamp,
    /// A public-key bundle is signed by a trusted key.
    PublicKey,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Rule::CertificateChain => "certificate-chain",
            Rule::CertificateValidity => "certificate-validity",
            Rule::Sct => "sct",
            Rule::Identity => "identity",
            Rule::Signature => "signature",
            Rule::Digest => "digest",
            Rule::Dsse => "dsse",
            Rule::TlogBody => "tlog-body",
            Rule::TlogSet => "tlog-signed-entry-timestamp",
            Rule::TlogInclusionProof => "tlog-inclusion-proof",
            Rule::TlogCheckpoint => "tlog-checkpoint",
            Rule::TlogEntry => "tlog-entry",
            Rule::Timestamp => "rfc3161-timestamp",
            Rule::PublicKey => "public-key",
        };
        f.write_str(s)
    }
}
