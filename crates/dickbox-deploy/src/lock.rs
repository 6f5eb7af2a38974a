//! One deploy, rollback, remove, gc or recover at a time, host-wide: an
//! exclusive `flock` on the lock file. The kernel drops it when the process
//! dies, so a crashed deploy never leaves a stale lock; `recover` then
//! finishes its work.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::fs::{FlockOperation, flock};

#[derive(Debug)]
pub struct DeployLock {
    _file: File,
}

/// Raised when the lock could not be taken in time: exit code 5.
#[derive(Debug, thiserror::Error)]
#[error("another dickbox-deploy holds {path} (waited {waited:?}); try again later")]
pub struct LockBusy {
    pub path: String,
    pub waited: Duration,
}

pub fn acquire(path: &Path, timeout: Duration) -> Result<DeployLock> {
    if let Some(dir) = path.parent() {
        crate::fsops::ensure_dir(dir, 0o755)?;
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("open lock {}", path.display()))?;
    let start = Instant::now();
    let mut told = false;
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(DeployLock { _file: file }),
            Err(rustix::io::Errno::WOULDBLOCK) => {
                if start.elapsed() >= timeout {
                    return Err(LockBusy {
                        path: path.display().to_string(),
                        waited: timeout,
                    }
                    .into());
                }
                if !told {
                    tracing::info!(path = %path.display(), "another dickbox-deploy is running; waiting for it");
                    eprintln!(
                        "waiting for another dickbox-deploy to finish ({})",
                        path.display()
                    );
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("lock {}", path.display()));
            }
        }
    }
}
