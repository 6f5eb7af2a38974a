//! Verification first: the archive is opened once; its bytes are hashed and
//! checked against every signature the host policy requires while reading
//! that one descriptor; the signed trusted comment must name this file's
//! SHA-256; and only then is the same descriptor rewound and handed to the
//! extractor. Keys come from the host's trust folder, chosen by the key id in
//! the signature, never from the capsule.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use capsule::digest::Sha256Hasher;
use capsule::minisig::{KeyId, Keyring, MinisignError, Signature};
use capsule::names::ReleaseId;
use capsule::trusted::TrustedComment;

use crate::config::{Require, Settings};

/// Why a capsule was refused before anything was written (exit code 3).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "{path}: no minisign signature beside the archive ({sig} is missing); unsigned capsules are never deployed"
    )]
    Unsigned { path: String, sig: String },
    #[error("{0}")]
    Signature(#[from] MinisignError),
    #[error("{0}")]
    Sigstore(#[from] capsule::sigstore::SigstoreError),
    #[error("{path}: {problem}")]
    TrustedComment { path: String, problem: String },
    #[error("{0}")]
    Other(String),
}

/// A capsule whose signatures verified, with the open file to extract from.
#[derive(Debug)]
pub struct Verified {
    pub file: File,
    pub path: PathBuf,
    pub sha256: String,
    pub release_id: ReleaseId,
    pub size: u64,
    /// The minisign key that verified, when a minisign signature did.
    pub minisign: Option<(KeyId, PathBuf)>,
    /// The signed trusted comment (minisign only).
    pub comment: Option<TrustedComment>,
    /// Every signature that verified, for the log and the unit header.
    pub signers: Vec<String>,
}

impl Verified {
    /// A short name of who signed, for unit headers.
    pub fn signed_by(&self) -> String {
        self.signers.join(", ")
    }
}

fn side(archive: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", archive.display()))
}

/// Verifies `archive` (a local file) against the host's trust and policy.
pub fn verify(settings: &Settings, archive: &Path) -> anyhow::Result<Verified> {
    use capsule::sigstore::{self as ss, Present};
    let p = archive.display().to_string();
    let require = settings.raw.require;
    let want_minisign = matches!(require, Require::Minisign | Require::Both | Require::Any);
    let want_sigstore = matches!(require, Require::Sigstore | Require::Both | Require::Any);

    // The archive itself first: a missing file is not an unsigned one.
    let mut file = File::open(archive).map_err(|e| anyhow::anyhow!("open {p}: {e}"))?;

    // minisign: the key is chosen by the signature's key id, from the host.
    let sig_path = side(archive, capsule::MINISIG_SUFFIX);
    let minisig = if want_minisign && sig_path.exists() {
        let sig = Signature::from_file(&sig_path).map_err(Refused::from)?;
        let trust = settings.raw.trust_dir.clone();
        let ring = Keyring::load(&trust.join("minisign"), Some(&trust.join("revoked")))
            .map_err(Refused::from)?;
        let (key, key_path) = ring.key_for(sig.key_id).map_err(Refused::from)?;
        Some((sig, key.clone(), key_path.to_owned()))
    } else {
        None
    };
    if minisig.is_none() && matches!(require, Require::Minisign | Require::Both) {
        return Err(Refused::Unsigned {
            path: p,
            sig: sig_path.display().to_string(),
        }
        .into());
    }

    let size = file.metadata()?.len();
    // One pass over the open file feeds both the SHA-256 and the minisign
    // verifier (BLAKE2b-512 prehash); the SHA-256 runs on a second thread so
    // verification costs about one hash, not two. The Sigstore checks need
    // only the SHA-256, so nothing is read twice.
    let mut verifier = match &minisig {
        Some((sig, key, _)) => Some(sig.verifier(key).map_err(Refused::from)?),
        None => None,
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let hasher = std::thread::spawn(move || {
        let mut sha = Sha256Hasher::new();
        for chunk in rx {
            sha.update(&chunk);
        }
        sha.finish()
    });
    let mut reader = BufReader::with_capacity(1 << 20, &file);
    loop {
        let mut buf = vec![0u8; 1 << 20];
        let n = read_full(&mut reader, &mut buf).map_err(|e| anyhow::anyhow!("read {p}: {e}"))?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        if let Some(v) = verifier.as_mut() {
            v.update(&buf);
        }
        if tx.send(buf).is_err() {
            break;
        }
    }
    drop(tx);
    drop(reader);
    let (sha256, digest) = hasher
        .join()
        .map_err(|_| anyhow::anyhow!("hash thread panicked"))?;

    let mut present = Present::default();
    let mut signers = Vec::new();
    let mut comment = None;
    let mut minisign = None;
    if let (Some(v), Some((sig, _, key_path))) = (verifier, &minisig) {
        v.finish().map_err(Refused::from)?;
        let tc =
            TrustedComment::parse(&sig.trusted_comment).map_err(|e| Refused::TrustedComment {
                path: p.clone(),
                problem: e.to_string(),
            })?;
        if tc.sha256 != sha256 {
            return Err(Refused::TrustedComment {
                path: p,
                problem: format!(
                    "the signed trusted comment names sha256 {} but the archive's is {sha256}",
                    tc.sha256
                ),
            }
            .into());
        }
        tracing::info!(
            capsule = %tc.name, version = %tc.version, key_id = %sig.key_id,
            key = %key_path.display(), sha256 = %sha256, "minisign signature verified"
        );
        present.minisign = true;
        signers.push(format!("minisign key {}", sig.key_id));
        minisign = Some((sig.key_id, key_path.clone()));
        comment = Some(tc);
    }

    if want_sigstore {
        let dir = settings.sigstore_dir();
        let cosign_path = side(archive, capsule::COSIGN_SUFFIX);
        let bundle_path = side(archive, capsule::SIGSTORE_SUFFIX);
        // The trusted cosign keys, loaded once and only if a Sigstore file
        // is present (both kinds of signature may use them).
        let keys = if cosign_path.exists() || bundle_path.exists() {
            let kd = dir.join("keys");
            if kd.is_dir() {
                ss::CosignKeys::load(&kd).map_err(Refused::from)?
            } else {
                ss::CosignKeys::default()
            }
        } else {
            ss::CosignKeys::default()
        };
        if cosign_path.exists() {
            let text = std::fs::read_to_string(&cosign_path)
                .map_err(|e| anyhow::anyhow!("read {}: {e}", cosign_path.display()))?;
            let by = ss::verify_cosign(&digest, &text, &cosign_path.display().to_string(), &keys)
                .map_err(Refused::from)?;
            tracing::info!(key = %by.path.display(), fingerprint = %by.fingerprint, "cosign signature verified");
            signers.push(format!("cosign key {}", by.path.display()));
            present.sigstore = true;
        }
        if bundle_path.exists() {
            let json = std::fs::read(&bundle_path)
                .map_err(|e| anyhow::anyhow!("read {}: {e}", bundle_path.display()))?;
            let root = ss::TrustedRoot::from_file(&dir.join("trusted_root.json"))
                .map_err(Refused::from)?;
            let policy = settings.identity_policy()?.ok_or_else(|| {
                Refused::Other(format!(
                    "{}: a Sigstore bundle needs deploy.sigstore_issuer and \
                     deploy.sigstore_identity (or _pattern) in the host config",
                    bundle_path.display()
                ))
            })?;
            let ok = ss::verify_bundle(
                &digest,
                &json,
                &bundle_path.display().to_string(),
                &root,
                &policy,
                Some(&keys),
            )
            .map_err(Refused::from)?;
            tracing::info!(signer = ?ok.signer, log_index = ok.log_index, "Sigstore bundle verified");
            signers.push(format!("sigstore bundle ({:?})", ok.signer));
            present.sigstore = true;
        }
    }
    let policy = ss::Require::parse(match require {
        Require::Minisign => "minisign",
        Require::Sigstore => "sigstore",
        Require::Both => "both",
        Require::Any => "any",
    })
    .map_err(Refused::from)?;
    policy
        .check(present)
        .map_err(|e| Refused::Other(format!("{p}: {e}")))?;

    file.rewind()?;
    Ok(Verified {
        release_id: ReleaseId::from_sha256_hex(&sha256).expect("hex digest"),
        file,
        path: archive.to_owned(),
        sha256,
        size,
        minisign,
        comment,
        signers,
    })
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What `verify-blob` checks against.
#[derive(Debug)]
pub struct BlobRequest {
    pub bundle: PathBuf,
    pub identity: Option<String>,
    pub identity_regexp: Option<String>,
    pub issuer: Option<String>,
    pub key: Option<PathBuf>,
    pub trusted_root: Option<PathBuf>,
    pub target: String,
}

/// `dickbox-deploy verify-blob`: a file or digest against a bundle, offline.
pub fn verify_blob(settings: &Settings, req: &BlobRequest) -> anyhow::Result<String> {
    use capsule::sigstore::{self as ss, Identity, IdentityPolicy};
    let digest: [u8; 32] = match req.target.strip_prefix("sha256:") {
        Some(hex) => capsule::digest::parse_sha256_hex(hex).ok_or_else(|| {
            Refused::Other(format!(
                "{}: a digest is sha256: and 64 hex digits",
                req.target
            ))
        })?,
        None => {
            let f =
                File::open(&req.target).map_err(|e| anyhow::anyhow!("open {}: {e}", req.target))?;
            let mut sha = Sha256Hasher::new();
            let mut r = BufReader::with_capacity(1 << 20, f);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = read_full(&mut r, &mut buf)
                    .map_err(|e| anyhow::anyhow!("read {}: {e}", req.target))?;
                if n == 0 {
                    break;
                }
                sha.update(&buf[..n]);
            }
            sha.finish().1
        }
    };
    let root_path = req
        .trusted_root
        .clone()
        .unwrap_or_else(|| settings.sigstore_dir().join("trusted_root.json"));
    let root = ss::TrustedRoot::from_file(&root_path).map_err(Refused::from)?;
    let mut keys = ss::CosignKeys::default();
    if let Some(k) = &req.key {
        let text =
            std::fs::read_to_string(k).map_err(|e| anyhow::anyhow!("read {}: {e}", k.display()))?;
        keys.add_pem(&text, k.clone()).map_err(Refused::from)?;
    }
    let identity = match (&req.identity, &req.identity_regexp) {
        (Some(i), _) => Some(Identity::Exact(i.clone())),
        (None, Some(r)) => Some(Identity::pattern(r).map_err(Refused::from)?),
        (None, None) => None,
    };
    let policy = match (identity, &req.issuer) {
        (Some(id), Some(iss)) => IdentityPolicy::new(iss, id).map_err(Refused::from)?,
        (Some(_), None) => {
            return Err(Refused::Other(
                "--certificate-identity needs --certificate-oidc-issuer".into(),
            )
            .into());
        }
        (None, _) if req.key.is_some() => {
            // Key-signed bundles carry no identity; this policy never matches a
            // certificate, so only the key can verify.
            IdentityPolicy::new("key-only", Identity::Exact(String::new()))
                .map_err(Refused::from)?
        }
        (None, _) => {
            return Err(Refused::Other(
                "give --certificate-identity (or --certificate-identity-regexp) with \
                 --certificate-oidc-issuer, or --key"
                    .into(),
            )
            .into());
        }
    };
    let json = std::fs::read(&req.bundle)
        .map_err(|e| anyhow::anyhow!("read {}: {e}", req.bundle.display()))?;
    let ok = ss::verify_bundle(
        &digest,
        &json,
        &req.bundle.display().to_string(),
        &root,
        &policy,
        req.key.as_ref().map(|_| &keys),
    )
    .map_err(Refused::from)?;
    Ok(format!(
        "verified: {} signed by {:?}, transparency log index {}, integrated at {}",
        req.target, ok.signer, ok.log_index, ok.integrated_time
    ))
}
