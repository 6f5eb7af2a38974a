//! The build records: `NAME-VERSION.results.txt` for people and
//! `NAME-VERSION.build.json` for CI. Both describe the same build; the JSON
//! schema is documented in `docs/capsule-build.md` and versioned by its
//! `schema` field.

use std::fmt::Write as _;

use capsule::manifest::Manifest;
use capsule::pack::FileRecord;
use serde::Serialize;

pub const SCHEMA: &str = "dickbox-capsule-build/1";

#[derive(Debug, Clone, Serialize)]
pub struct BuildRecord {
    pub schema: &'static str,
    pub capsule: CapsuleInfo,
    /// Empty when the build was not signed (`--skip-sign`).
    pub signatures: Vec<SignatureInfo>,
    pub unsigned: bool,
    pub build: BuildInfo,
    pub manifest: Manifest,
    pub files: Vec<FileRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CapsuleInfo {
    pub file: String,
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub size: u64,
    pub release_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SignatureInfo {
    /// `minisign`, `cosign` or `sigstore-bundle`.
    pub kind: &'static str,
    /// `ED` (prehashed Ed25519), `ECDSA-P256-SHA256`, or the bundle's media
    /// type.
    pub algorithm: String,
    /// minisign key id; for cosign the SHA-256 of the public key (DER);
    /// empty for a bundle, whose signer is in its certificate.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key_id: String,
    /// minisign only.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub trusted_comment: String,
    pub file: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildInfo {
    pub builder: String,
    pub git_sha: Option<String>,
    pub git_branch: Option<String>,
    /// The mtime given to every entry.
    pub source_date_epoch: u64,
    /// Where that mtime came from: `SOURCE_DATE_EPOCH`, `git` or `zero`.
    pub mtime_source: &'static str,
    pub tool: String,
    pub compressor: Compressor,
    pub tar_format: &'static str,
    /// When the build ran (RFC 3339, UTC); not part of the archive.
    pub built_at: String,
    pub duration_ms: u64,
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Compressor {
    pub name: &'static str,
    pub library_version: &'static str,
    pub level: i32,
    pub workers: u32,
}

impl BuildRecord {
    /// The human-readable results file.
    pub fn results_text(&self) -> String {
        let mut s = String::new();
        let c = &self.capsule;
        let b = &self.build;
        let _ = writeln!(s, "# capsule-build results ({SCHEMA})");
        let _ = writeln!(s, "capsule:           {}", c.file);
        let _ = writeln!(s, "name:              {}", c.name);
        let _ = writeln!(s, "version:           {}", c.version);
        let _ = writeln!(s, "sha256:            {}", c.sha256);
        let _ = writeln!(s, "size:              {}", c.size);
        let _ = writeln!(s, "release_id:        {}", c.release_id);
        if self.unsigned {
            let _ = writeln!(
                s,
                "signature:         NONE (built with --skip-sign; deploy will refuse it)"
            );
        }
        for sig in &self.signatures {
            let key = if sig.key_id.is_empty() {
                String::new()
            } else {
                format!(" key_id={}", sig.key_id)
            };
            let _ = writeln!(
                s,
                "signature:         {} {}{key} file={}",
                sig.kind, sig.algorithm, sig.file
            );
            if !sig.trusted_comment.is_empty() {
                let _ = writeln!(s, "trusted_comment:   {}", sig.trusted_comment);
            }
        }
        let _ = writeln!(s, "builder:           {}", b.builder);
        let _ = writeln!(
            s,
            "git_sha:           {}",
            b.git_sha.as_deref().unwrap_or("-")
        );
        let _ = writeln!(
            s,
            "git_branch:        {}",
            b.git_branch.as_deref().unwrap_or("-")
        );
        let _ = writeln!(
            s,
            "source_date_epoch: {} (from {})",
            b.source_date_epoch, b.mtime_source
        );
        let _ = writeln!(s, "tool:              {}", b.tool);
        let _ = writeln!(
            s,
            "compressor:        {} {} level {} workers {}",
            b.compressor.name,
            b.compressor.library_version,
            b.compressor.level,
            b.compressor.workers
        );
        let _ = writeln!(s, "tar_format:        {}", b.tar_format);
        let _ = writeln!(s, "built_at:          {}", b.built_at);
        let _ = writeln!(
            s,
            "files:             {} entries (sha256, mode, size, path)",
            self.files.len()
        );
        for f in &self.files {
            let hash = f.sha256.as_deref().unwrap_or(match f.kind {
                "dir" => "dir",
                _ => "symlink",
            });
            let _ = write!(
                s,
                "  {hash:<64}  {:04o}  {:>12}  {}",
                f.mode, f.size, f.path
            );
            if let Some(t) = &f.target {
                let _ = write!(s, " -> {t}");
            }
            s.push('\n');
        }
        s
    }
}
