//! `capsule-build keygen`: a minisign key pair for CI, made without prompts,
//! or a P-256 pair for cosign-style signatures.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use capsule::minisig::{KeyId, generate_keypair};

use crate::output::set_mode;

/// Writes `NAME.pub` (0644) and `NAME.key` (0600) into `out`. Refuses to
/// overwrite an existing key unless `force`.
pub fn keygen(
    out: &Path,
    name: &str,
    password: Option<String>,
    force: bool,
) -> Result<(PathBuf, PathBuf, KeyId)> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        bail!("key name {name:?} must be a plain file name");
    }
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let pub_path = out.join(format!("{name}.pub"));
    let key_path = out.join(format!("{name}.key"));
    for p in [&pub_path, &key_path] {
        if p.exists() && !force {
            bail!(
                "{} exists already; refusing to overwrite a key (use --force)",
                p.display()
            );
        }
    }
    let (pk, sk, id) = generate_keypair(password)?;
    write_atomic(&key_path, sk.as_bytes(), 0o600)?;
    write_atomic(&pub_path, pk.as_bytes(), 0o644)?;
    Ok((pub_path, key_path, id))
}

/// Writes `NAME.pem` (public, 0644) and `NAME.key` (PKCS#8, unencrypted,
/// 0600) into `out`. Returns the paths and the key's fingerprint.
pub fn keygen_cosign(out: &Path, name: &str, force: bool) -> Result<(PathBuf, PathBuf, String)> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        bail!("key name {name:?} must be a plain file name");
    }
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let pub_path = out.join(format!("{name}.pem"));
    let key_path = out.join(format!("{name}.key"));
    for p in [&pub_path, &key_path] {
        if p.exists() && !force {
            bail!(
                "{} exists already; refusing to overwrite a key (use --force)",
                p.display()
            );
        }
    }
    let (public, secret) = capsule::sigstore::generate_cosign_keypair()?;
    let fingerprint =
        capsule::sigstore::CosignSigningKey::from_pem(&secret, "new key")?.fingerprint()?;
    write_atomic(&key_path, secret.as_bytes(), 0o600)?;
    write_atomic(&pub_path, public.as_bytes(), 0o644)?;
    Ok((pub_path, key_path, fingerprint))
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".keygen.")
        .tempfile_in(dir)
        .with_context(|| format!("create a temporary file in {}", dir.display()))?;
    // The temporary file is created 0600, so a secret key is never readable
    // by others, not even for a moment.
    set_mode(tmp.as_file(), mode)?;
    tmp.write_all(data)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("write {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("rename into place as {}", path.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("sync {}", dir.display()))?;
    Ok(())
}
