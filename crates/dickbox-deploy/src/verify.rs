//! Verification first: the archive is opened once; its bytes are hashed and
//! checked against every signature the host policy requires while reading
//! that one descriptor; the signed trusted comment must name this file's
//! SHA-256; and only then is the same descriptor rewound and handed to the
//! extractor. Keys come from the host's trust folder, chosen by the key id in
//! the signature, never from the capsule.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use capsule::minisig::{KeyId, Keyring, MinisignError, Signature};
use capsule::names::ReleaseId;
use capsule::trusted::TrustedComment;
use sha2_shim::Sha256State;

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
    #[error("{path}: {problem}")]
    TrustedComment { path: String, problem: String },
    #[error("{path}: host policy requires {what}, which is not supported yet (#4)")]
    PolicyUnsupported { path: String, what: &'static str },
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
    pub key_id: KeyId,
    pub key_path: PathBuf,
    pub comment: TrustedComment,
}

/// Verifies `archive` (a local file) against the host's trust.
pub fn verify(settings: &Settings, archive: &Path) -> anyhow::Result<Verified> {
    let p = archive.display().to_string();
    match settings.raw.require {
        Require::Minisign | Require::Any => {}
        Require::Sigstore | Require::Both => {
            return Err(Refused::PolicyUnsupported {
                path: p,
                what: "a Sigstore signature",
            }
            .into());
        }
    }
    let sig_path = PathBuf::from(format!("{}{}", archive.display(), capsule::MINISIG_SUFFIX));
    if !sig_path.exists() {
        return Err(Refused::Unsigned {
            path: p,
            sig: sig_path.display().to_string(),
        }
        .into());
    }
    let sig = Signature::from_file(&sig_path).map_err(Refused::from)?;
    let trust = settings.raw.trust_dir.clone();
    let ring = Keyring::load(&trust.join("minisign"), Some(&trust.join("revoked")))
        .map_err(Refused::from)?;
    let (key, key_path) = ring.key_for(sig.key_id).map_err(Refused::from)?;

    let mut file = File::open(archive).map_err(|e| anyhow::anyhow!("open {p}: {e}"))?;
    let size = file.metadata()?.len();
    // One pass over the open file feeds both the SHA-256 and the minisign
    // verifier (BLAKE2b-512 prehash); the two run side by side on two
    // threads so verification costs about one hash, not two.
    let mut verifier = sig.verifier(key).map_err(Refused::from)?;
    let sha = Sha256State::new();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let hasher = std::thread::spawn(move || {
        let mut sha = sha;
        for chunk in rx {
            sha.update(&chunk);
        }
        sha.finish_hex()
    });
    let mut reader = BufReader::with_capacity(1 << 20, &file);
    loop {
        let mut buf = vec![0u8; 1 << 20];
        let n = read_full(&mut reader, &mut buf).map_err(|e| anyhow::anyhow!("read {p}: {e}"))?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        verifier.update(&buf);
        if tx.send(buf).is_err() {
            break;
        }
    }
    drop(tx);
    drop(reader);
    let sha256 = hasher
        .join()
        .map_err(|_| anyhow::anyhow!("hash thread panicked"))?;
    verifier.finish().map_err(Refused::from)?;

    let comment =
        TrustedComment::parse(&sig.trusted_comment).map_err(|e| Refused::TrustedComment {
            path: p.clone(),
            problem: e.to_string(),
        })?;
    if comment.sha256 != sha256 {
        return Err(Refused::TrustedComment {
            path: p,
            problem: format!(
                "the signed trusted comment names sha256 {} but the archive's is {sha256}",
                comment.sha256
            ),
        }
        .into());
    }
    file.rewind()?;
    tracing::info!(
        capsule = %comment.name, version = %comment.version, key_id = %sig.key_id,
        key = %key_path.display(), sha256 = %sha256, "signature verified"
    );
    Ok(Verified {
        release_id: ReleaseId::from_sha256_hex(&sha256).expect("hex digest"),
        file,
        path: archive.to_owned(),
        sha256,
        size,
        key_id: sig.key_id,
        key_path: key_path.to_owned(),
        comment,
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

/// SHA-256 through the capsule crate's hashing writer (no second sha2 copy).
mod sha2_shim {
    use std::io::Write;

    pub struct Sha256State(capsule::digest::HashingWriter<std::io::Sink>);

    impl Sha256State {
        pub fn new() -> Self {
            Sha256State(capsule::digest::HashingWriter::new(std::io::sink()))
        }
        pub fn update(&mut self, b: &[u8]) {
            // Writing to a sink cannot fail.
            let _ = self.0.write_all(b);
        }
        pub fn finish_hex(self) -> String {
            self.0.finish().1
        }
    }
}
