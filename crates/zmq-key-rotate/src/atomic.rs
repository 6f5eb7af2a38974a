//! Crash-safe writes: temp file in the same folder, write, fsync, rename, fsync
//! the folder; links switched the same way (symlink to a temp name, rename).
//!
//! After a crash at any step the destination holds either the old or the new
//! content, never a mix; a leftover `.tmp-*` file is harmless and is replaced
//! by the next write of the same name.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Writes `bytes` to `path` with `mode`, atomically and durably.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = parent(path)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("path has no file name"))?;
    let tmp = dir.join(format!(".tmp-{}", name.to_string_lossy()));
    // A leftover temp file from a crash may carry other permissions: remove it
    // so `mode` below applies from creation (the secret is never readable by
    // anyone else, even for a moment).
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    // The umask may have narrowed `mode`; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Points the link `path` at `target` (a name relative to the link's folder).
pub fn switch_link(path: &Path, target: &Path) -> std::io::Result<()> {
    let dir = parent(path)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("path has no file name"))?;
    let tmp = dir.join(format!(".tmp-{}", name.to_string_lossy()));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::os::unix::fs::symlink(target, &tmp)?;
    // rename(2) replaces the old link in one step: readers see old or new.
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Makes the folder's entries (renames, new files) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> std::io::Result<&Path> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Ok(p),
        _ => Ok(Path::new(".")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_content_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_file(&p, b"one", 0o600).unwrap();
        write_file(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp left");
    }

    #[test]
    fn switch_link_replaces_an_existing_link() {
        let dir = tempfile::tempdir().unwrap();
        let l = dir.path().join("current");
        switch_link(&l, Path::new("a")).unwrap();
        switch_link(&l, Path::new("b")).unwrap();
        assert_eq!(fs::read_link(&l).unwrap(), Path::new("b"));
    }
}
