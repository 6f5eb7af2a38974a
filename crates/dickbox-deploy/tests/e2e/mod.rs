//! What dickbox-deploy's end-to-end tests in the systemd sandbox share: the
//! binaries to bind in, a shell into the sandbox, and output as text. Each
//! test file adds its own front (`get`) and set-up to `Host`.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::sandbox_guard::Sandbox;

/// The example capsule's source tree.
pub const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/hello-api");

/// The cargo output folder holding the dickbox-deploy binary.
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_dickbox-deploy"))
        .parent()
        .unwrap()
        .to_owned()
}

/// stdout then stderr, as text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Commands inside one booted sandbox.
pub struct Host<'a> {
    pub sb: &'a Sandbox,
}

impl Host<'_> {
    pub fn sh(&self, script: &str) -> Output {
        self.sb.exec(&["sh", "-c", script])
    }

    /// Runs `script` and fails the test unless it succeeds.
    pub fn ok(&self, script: &str) -> String {
        let o = self.sh(script);
        assert!(o.status.success(), "`{script}` failed: {}", text(&o));
        text(&o)
    }

    pub fn deploy(&self, args: &str) -> Output {
        self.sh(&format!("dickbox-deploy {args}"))
    }

    /// The example service's instances that are active.
    pub fn active_instances(&self) -> Vec<String> {
        let out = self.ok("systemctl list-units --state=active --plain --no-legend \
             'dickbox-hello-api@*.service' | awk '{print $1}'");
        out.lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect()
    }
}
