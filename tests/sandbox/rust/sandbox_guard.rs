//! A guard for Rust integration tests that need a real systemd. Every crate's
//! tests include this one file by path, so there is a single copy:
//!
//! ```text
//! #[path = "../../../tests/sandbox/rust/sandbox_guard.rs"]
//! mod sandbox_guard;
//! ```
//!
//! What must always hold: every sandbox that `Sandbox::up` starts is torn down
//! by `Drop`, also when the test panics, and a host that cannot run a sandbox
//! (not root, no overlayfs, no systemd) makes the test skip with a printed
//! reason instead of failing.

// Included by many test binaries, none of which uses every function.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The harness, found from the crate that includes this file
/// (`crates/<name>/` is two levels below the repository root).
pub const HARNESS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/sandbox/dickbox-sandbox"
);

/// Where the cargo build output is bound inside, read-only. Never run the
/// binaries through the overlay's lower layer: a rebuild during the test
/// leaves stale files there.
pub const INSIDE_BIN: &str = "/opt/dickbox/bin";

/// Exit code of `dickbox-sandbox check` and `up` when a sandbox cannot run on
/// this host.
const EXIT_CANNOT_RUN: i32 = 77;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// One booted sandbox; `Drop` runs `dickbox-sandbox down` on it.
#[derive(Debug)]
pub struct Sandbox {
    dir: PathBuf,
}

/// Whether this host can run a sandbox; prints why not (the test then passes
/// as skipped). For tests that must prepare files before `Sandbox::up_with`.
pub fn can_run() -> bool {
    let check = run(Command::new(HARNESS).arg("check"));
    if check.status.code() == Some(EXIT_CANNOT_RUN) {
        eprintln!("skipped: {}", String::from_utf8_lossy(&check.stderr).trim());
        return false;
    }
    assert!(check.status.success(), "dickbox-sandbox check: {check:?}");
    true
}

impl Sandbox {
    /// Boots a sandbox with `bin_dir` bound read-only at [`INSIDE_BIN`].
    /// Returns `None` after printing the reason when this host cannot run one.
    /// `name` names the test (letters, digits, `-`; short).
    pub fn up(name: &str, bin_dir: &Path) -> Option<Sandbox> {
        Self::up_with(name, bin_dir, &[])
    }

    /// Like [`Sandbox::up`], with more `HOST:INSIDE[:ro]` binds.
    pub fn up_with(name: &str, bin_dir: &Path, binds: &[String]) -> Option<Sandbox> {
        if !can_run() {
            return None;
        }

        // Tests of one binary run as threads of one process: the counter
        // keeps their DIRs apart. CARGO_TARGET_TMPDIR is on disk, so a reboot
        // keeps the upper layer.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let unique = format!("{name}-{}-{n}", std::process::id());
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sandbox-{unique}"));
        // The guard exists before `up`, so a panic below still tears down.
        let sandbox = Sandbox { dir };
        let bind = format!("{}:{INSIDE_BIN}:ro", bin_dir.display());
        let up = run(Command::new(HARNESS)
            .arg("up")
            .arg(&sandbox.dir)
            .args(["--name", &unique, "--bind", &bind])
            .args(binds.iter().flat_map(|b| ["--bind", b.as_str()])));
        assert!(
            up.status.success(),
            "dickbox-sandbox up {}: {}",
            sandbox.dir.display(),
            String::from_utf8_lossy(&up.stderr)
        );
        Some(sandbox)
    }

    /// Runs `args` inside and returns its output; the exit code is the
    /// command's own.
    pub fn exec(&self, args: &[&str]) -> Output {
        run(Command::new(HARNESS)
            .arg("exec")
            .arg(&self.dir)
            .arg("--")
            .args(args))
    }

    /// Reboots: the root file system's changes survive, /run and /tmp do not.
    pub fn reboot(&self) {
        let out = run(Command::new(HARNESS).arg("reboot").arg(&self.dir));
        assert!(out.status.success(), "dickbox-sandbox reboot: {out:?}");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let out = run(Command::new(HARNESS).arg("down").arg(&self.dir));
        if !out.status.success() {
            // Panicking in drop during a panic aborts the test binary and hides
            // the first failure; report instead.
            eprintln!(
                "dickbox-sandbox down {}: {}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn run(cmd: &mut Command) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("run {cmd:?}: {e}"),
    }
}
