//! `capsule-build inspect`: what a capsule holds, without extracting it.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use capsule::minisig::{PublicKey, Signature};
use capsule::pack::FileRecord;
use capsule::trusted::TrustedComment;
use capsule::unpack::{self, Limits};
use serde::Serialize;

use crate::{InputError, VerifyError};

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub file: String,
    pub sha256: String,
    pub size: u64,
    pub manifest: capsule::manifest::Manifest,
    pub manifest_text: String,
    pub files: Vec<FileRecord>,
    pub signature: Option<SigInfo>,
    /// Sigstore signature files beside the archive (not verified here;
    /// `dickbox-deploy verify-blob` and deploy check them).
    pub sigstore_files: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SigInfo {
    pub file: String,
    pub algorithm: &'static str,
    pub key_id: String,
    pub trusted_comment: String,
    /// `verified` (with `--pubkey`), `not checked`, or why it failed.
    pub status: String,
}

pub fn inspect(path: &Path, pubkey: Option<&Path>) -> Result<Inspection> {
    let mut f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);

    // The signature and, with --pubkey, the key: read before the archive so
    // one pass over it gives both the SHA-256 and the verification.
    let sig_path = PathBuf::from(format!("{}{}", path.display(), capsule::MINISIG_SUFFIX));
    let sig = if sig_path.exists() {
        Some(Signature::from_file(&sig_path).map_err(|e| InputError::msg(e.to_string()))?)
    } else {
        None
    };
    let key = match (&sig, pubkey) {
        (Some(sig), Some(pk)) => {
            let key = PublicKey::from_file(pk)?;
            if key.key_id != sig.key_id {
                return Err(VerifyError(format!(
                    "{} was signed by key {}, not by {} ({})",
                    path.display(),
                    sig.key_id,
                    key.key_id,
                    pk.display()
                ))
                .into());
            }
            Some((key, pk))
        }
        _ => None,
    };
    let mut verifier = match (&sig, &key) {
        (Some(sig), Some((key, _))) => {
            Some(sig.verifier(key).map_err(|e| VerifyError(e.to_string()))?)
        }
        _ => None,
    };
    let mut hasher = capsule::digest::Sha256Hasher::new();
    {
        let mut r = BufReader::with_capacity(1 << 20, &f);
        loop {
            let buf = r
                .fill_buf()
                .with_context(|| format!("read {}", path.display()))?;
            if buf.is_empty() {
                break;
            }
            hasher.update(buf);
            if let Some(v) = verifier.as_mut() {
                v.update(buf);
            }
            let n = buf.len();
            r.consume(n);
        }
    }
    let sha256 = hasher.finish().0;

    let signature = if let Some(sig) = &sig {
        let mut status = "not checked (give --pubkey to verify)".to_owned();
        if let (Some(v), Some((key, pk))) = (verifier, &key) {
            v.finish().map_err(|e| VerifyError(e.to_string()))?;
            let tc = TrustedComment::parse(&sig.trusted_comment)
                .map_err(|e| VerifyError(e.to_string()))?;
            if tc.sha256 != sha256 {
                return Err(VerifyError(format!(
                    "trusted comment names sha256 {} but the file's is {sha256}",
                    tc.sha256
                ))
                .into());
            }
            status = format!("verified with {} ({})", key.key_id, pk.display());
        }
        Some(SigInfo {
            file: sig_path.display().to_string(),
            algorithm: "ED",
            key_id: sig.key_id.to_string(),
            trusted_comment: sig.trusted_comment.clone(),
            status,
        })
    } else {
        None
    };

    f.rewind().context("rewind")?;
    let inv = unpack::list(BufReader::new(&f), Limits::default())
        .map_err(|e| InputError::msg(format!("{}: {e}", path.display())))?;
    if let Some(sig) = &signature
        && sig.status.starts_with("verified")
    {
        let tc =
            TrustedComment::parse(&sig.trusted_comment).map_err(|e| VerifyError(e.to_string()))?;
        if tc.name != inv.manifest.name || tc.version != inv.manifest.version {
            return Err(VerifyError(format!(
                "signature is for {} {} but the capsule's manifest says {} {}",
                tc.name, tc.version, inv.manifest.name, inv.manifest.version
            ))
            .into());
        }
    }
    Ok(Inspection {
        file: path.display().to_string(),
        sha256,
        size,
        manifest: inv.manifest,
        manifest_text: inv.manifest_text,
        files: inv.files,
        signature,
        sigstore_files: [capsule::COSIGN_SUFFIX, capsule::SIGSTORE_SUFFIX]
            .iter()
            .map(|suffix| format!("{}{suffix}", path.display()))
            .filter(|p| std::path::Path::new(p).exists())
            .collect(),
    })
}

impl Inspection {
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "capsule:  {}", self.file);
        let _ = writeln!(s, "name:     {}", self.manifest.name);
        let _ = writeln!(s, "version:  {}", self.manifest.version);
        let _ = writeln!(s, "sha256:   {}", self.sha256);
        let _ = writeln!(s, "size:     {}", self.size);
        match &self.signature {
            Some(sig) => {
                let _ = writeln!(
                    s,
                    "signature: minisign {} key_id={} ({})",
                    sig.algorithm, sig.key_id, sig.file
                );
                let _ = writeln!(s, "trusted comment: {}", sig.trusted_comment);
                let _ = writeln!(s, "signature status: {}", sig.status);
            }
            None => {
                let _ = writeln!(s, "signature: none found beside the archive");
            }
        }
        for f in &self.sigstore_files {
            let _ = writeln!(
                s,
                "sigstore signature file: {f} (not checked here; see dickbox-deploy verify-blob)"
            );
        }
        let _ = writeln!(s, "--- capsule.yml");
        s.push_str(&self.manifest_text);
        if !self.manifest_text.ends_with('\n') {
            s.push('\n');
        }
        let _ = writeln!(s, "--- files ({})", self.files.len());
        for f in &self.files {
            let _ = write!(s, "{:<7} {:04o} {:>12}  {}", f.kind, f.mode, f.size, f.path);
            if let Some(t) = &f.target {
                let _ = write!(s, " -> {t}");
            }
            if let Some(h) = &f.sha256 {
                let _ = write!(s, "  sha256:{h}");
            }
            s.push('\n');
        }
        s
    }
}
