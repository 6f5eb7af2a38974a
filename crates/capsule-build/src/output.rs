//! Atomic output files: every file is written under a temporary name in the
//! output folder, synced, and only renamed into place once all of them are
//! complete, the archive last. An interrupted or failed build therefore leaves
//! either the previous complete set of files or the new one, never a
//! half-written capsule, signature or results file. Temporary files of a
//! failed build are deleted when dropped.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::NamedTempFile;

/// A set of outputs being prepared in one folder.
#[derive(Debug)]
pub struct Outputs {
    dir: PathBuf,
    pending: Vec<(NamedTempFile, PathBuf)>,
}

impl Outputs {
    pub fn new(dir: &Path) -> Result<Outputs> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("create output folder {}", dir.display()))?;
        Ok(Outputs {
            dir: dir.to_owned(),
            pending: Vec::new(),
        })
    }

    /// A fresh temporary file that will become `name`.
    pub fn temp(&self, name: &str) -> Result<NamedTempFile> {
        tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(&self.dir)
            .with_context(|| format!("create a temporary file in {}", self.dir.display()))
    }

    /// Queues a finished temporary file to be renamed to `name`.
    pub fn add(&mut self, tmp: NamedTempFile, name: &str) -> Result<()> {
        tmp.as_file()
            .sync_all()
            .with_context(|| format!("sync {}", tmp.path().display()))?;
        self.pending.push((tmp, self.dir.join(name)));
        Ok(())
    }

    /// Writes `data` as `name`.
    pub fn add_bytes(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let mut tmp = self.temp(name)?;
        tmp.write_all(data)
            .with_context(|| format!("write {}", tmp.path().display()))?;
        set_mode(tmp.as_file(), 0o644)?;
        self.add(tmp, name)
    }

    /// Renames everything into place in the order added, then syncs the
    /// folder so the renames survive a crash.
    pub fn commit(self) -> Result<Vec<PathBuf>> {
        let mut done = Vec::new();
        for (tmp, dest) in self.pending {
            tmp.persist(&dest)
                .with_context(|| format!("rename into place as {}", dest.display()))?;
            done.push(dest);
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("sync folder {}", self.dir.display()))?;
        Ok(done)
    }
}

/// Sets a file's permission bits (temporary files start as 0600).
pub fn set_mode(f: &File, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .context("set file mode")
}
