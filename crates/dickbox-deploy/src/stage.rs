//! Staging: a verified archive is extracted from the very descriptor that was
//! verified into `releases/.staging-<id>-<pid>`, synced, made read-only and
//! renamed to `releases/<id>`. Deploying the same capsule twice finds the
//! folder and does nothing. A refusal or crash leaves at most a staging
//! folder, which the next stage or `recover` removes.

use std::fs;
use std::io::BufReader;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use capsule::manifest::Manifest;
use capsule::names::ReleaseId;

use crate::config::Settings;
use crate::fsops::{ensure_dir, sync_dir};
use crate::verify::Verified;

/// Space kept free on the state file system.
const RESERVE: u64 = 256 << 20;

#[derive(Debug, Clone)]
pub struct Release {
    pub id: ReleaseId,
    pub path: PathBuf,
    pub manifest: Manifest,
}

/// A release folder's manifest.
pub fn load_release(settings: &Settings, id: &ReleaseId) -> Result<Release> {
    let path = settings.releases_dir().join(id.as_str());
    let text = fs::read(path.join(capsule::manifest::MANIFEST_NAME))
        .with_context(|| format!("read the manifest of release {id}"))?;
    let manifest = Manifest::parse_bytes(&text, &format!("release {id} capsule.yml"))?;
    Ok(Release {
        id: id.clone(),
        path,
        manifest,
    })
}

/// Removes leftover staging folders of crashed runs, and download folders of
/// crashed URL fetches once they are older than any live fetch can be (a
/// fetch runs before the deploy lock is taken, so a younger one may be in use).
pub fn clean_staging(settings: &Settings) -> Result<()> {
    let downloads = settings.raw.state_dir.join("downloads");
    let max_age = settings.fetch_timeout * 4 + std::time::Duration::from_secs(60);
    for e in fs::read_dir(&downloads).into_iter().flatten().flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > max_age);
        if old && e.file_name().to_string_lossy().starts_with("fetch-") {
            fs::remove_dir_all(e.path())
                .with_context(|| format!("remove leftover {}", e.path().display()))?;
            tracing::info!(path = %e.path().display(), "removed a leftover download folder");
        }
    }
    let dir = settings.releases_dir();
    let Ok(rd) = fs::read_dir(&dir) else {
        return Ok(());
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".staging-") {
            make_writable(&e.path());
            fs::remove_dir_all(e.path())
                .with_context(|| format!("remove leftover {}", e.path().display()))?;
            tracing::info!(path = %e.path().display(), "removed a leftover staging folder");
        }
    }
    Ok(())
}

pub fn stage(settings: &Settings, v: &mut Verified) -> Result<Release> {
    let releases = settings.releases_dir();
    ensure_dir(&releases, 0o755)?;
    let dest = releases.join(v.release_id.as_str());
    if dest.exists() {
        tracing::info!(release = %v.release_id, "release already staged");
        return load_release(settings, &v.release_id);
    }
    clean_staging(settings)?;

    // Free space: refuse early when the archive alone would not fit, and cap
    // what extraction may write at what is free.
    let stat = rustix::fs::statvfs(&releases).context("statvfs of the releases folder")?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if free < v.size.saturating_add(RESERVE) {
        bail!(
            "not enough free space in {}: {} MiB free, the archive alone is {} MiB",
            releases.display(),
            free >> 20,
            v.size >> 20
        );
    }
    let mut limits = settings.limits;
    limits.max_total_bytes = limits.max_total_bytes.min(free - RESERVE);

    let staging = releases.join(format!(".staging-{}-{}", v.release_id, std::process::id()));
    // Opened before anything is written: syncfs on it reports every
    // write-back error the file system records from now on, including those
    // of pages flushed early by the kernel.
    let fs_handle = fs::File::open(&releases)
        .with_context(|| format!("open {} for syncfs", releases.display()))?;
    crate::crash_point("stage-extract");
    // Extracted without an fsync per file: on ext4 each one waits for a
    // journal commit (about 1 ms), which made staging a capsule of 12,000
    // small files take over 20 s. The one syncfs below makes the whole
    // folder durable before the rename instead.
    let inv = capsule::unpack::extract(
        BufReader::with_capacity(1 << 20, &v.file),
        &staging,
        limits,
        false,
    )
    .map_err(|e| crate::verify::Refused::Other(format!("{}: {e}", v.path.display())))?;

    if let Some(tc) = &v.comment
        && (inv.manifest.name != tc.name || inv.manifest.version != tc.version)
    {
        let _ = fs::remove_dir_all(&staging);
        return Err(crate::verify::Refused::Other(format!(
            "{}: the signature is for {} {} but the manifest says {} {}",
            v.path.display(),
            tc.name,
            tc.version,
            inv.manifest.name,
            inv.manifest.version
        ))
        .into());
    }
    let entry = staging.join(&inv.manifest.entrypoint);
    let executable = fs::metadata(&entry).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
    if !entry.is_file() || !executable {
        let _ = fs::remove_dir_all(&staging);
        return Err(crate::verify::Refused::Other(format!(
            "{}: entrypoint {} is not an executable file in the capsule",
            v.path.display(),
            inv.manifest.entrypoint
        ))
        .into());
    }

    make_read_only(&staging)?;
    // Every file, folder and mode of the staging folder is on disk before it
    // gets its final name: a crash before this point leaves only a staging
    // folder, which the next stage removes.
    rustix::fs::syncfs(&fs_handle)
        .with_context(|| format!("sync the file system of {}", staging.display()))?;
    crate::crash_point("stage-rename");
    fs::rename(&staging, &dest)
        .with_context(|| format!("rename {} to {}", staging.display(), dest.display()))?;
    sync_dir(&releases)?;
    tracing::info!(release = %v.release_id, path = %dest.display(), files = inv.files.len(), "release staged");
    Ok(Release {
        id: v.release_id.clone(),
        path: dest,
        manifest: inv.manifest,
    })
}

/// Releases are read-only once staged: folders 0555, files 0444 or 0555.
fn make_read_only(root: &Path) -> Result<()> {
    let mut dirs = vec![root.to_owned()];
    let mut all_dirs = Vec::new();
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                dirs.push(e.path());
            } else if ft.is_file() {
                let m = e.metadata()?.permissions().mode();
                let new = if m & 0o111 != 0 { 0o555 } else { 0o444 };
                fs::set_permissions(e.path(), fs::Permissions::from_mode(new))?;
            }
        }
        all_dirs.push(d);
    }
    // Children first, so a folder is still writable while its entries change.
    for d in all_dirs.iter().rev() {
        fs::set_permissions(d, fs::Permissions::from_mode(0o555))?;
    }
    Ok(())
}

/// Gives folders their write bit back so a release can be removed.
pub fn make_writable(root: &Path) {
    let mut dirs = vec![root.to_owned()];
    while let Some(d) = dirs.pop() {
        let _ = fs::set_permissions(&d, fs::Permissions::from_mode(0o755));
        if let Ok(rd) = fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    dirs.push(e.path());
                }
            }
        }
    }
}
