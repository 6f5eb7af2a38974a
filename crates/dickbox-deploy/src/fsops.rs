//! Crash-safe file operations: every state change on disk is a temporary
//! file or link in the same folder, synced, renamed over the old one, and the
//! folder synced. After a crash at any point the old or the new version is
//! there, never a torn one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

fn tmp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

/// Syncs a folder so renames and new entries in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("sync folder {}", dir.display()))
}

/// Writes `data` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().context("path has no folder")?;
    let tmp = tmp_name(path);
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("rename {} over {}", tmp.display(), path.display()))?;
    sync_dir(dir)
}

/// Points the symlink `link` at `target` atomically: a new link under a
/// temporary name, renamed over the old one, then the folder synced. Never
/// `ln -sfn`, which removes the old link before making the new one.
pub fn switch_link(link: &Path, target: &Path) -> Result<()> {
    let dir = link.parent().context("link has no folder")?;
    let tmp = tmp_name(link);
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("create link {} -> {}", tmp.display(), target.display()))?;
    fs::rename(&tmp, link)
        .with_context(|| format!("rename {} over {}", tmp.display(), link.display()))?;
    sync_dir(dir)
}

/// Where a link points, or `None` when there is no link.
pub fn read_link(link: &Path) -> Option<PathBuf> {
    fs::read_link(link).ok()
}

/// Removes a file or link; absent is fine.
pub fn remove_if_exists(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("remove {}", path.display())),
    }
}

/// Creates a folder and its parents with `mode` for the new ones.
pub fn ensure_dir(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .with_context(|| format!("create folder {}", path.display()))
}
