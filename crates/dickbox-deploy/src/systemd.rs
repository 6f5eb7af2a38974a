//! Talking to systemd through `systemctl`, every call with a deadline.
//!
//! `start` of a `Type=notify` unit returns once the unit sent `READY=1` (or
//! failed, or hit its `TimeoutStartSec=`), which is how notify services are
//! health-checked. `daemon-reload` is serialised by the deploy lock and always
//! runs before a start.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use wait_timeout::ChildExt;

#[derive(Debug, Clone)]
pub struct Systemd {
    pub systemctl: PathBuf,
    pub timeout: Duration,
}

impl Systemd {
    fn run(&self, args: &[&str], timeout: Duration) -> Result<(bool, String)> {
        let mut child = Command::new(&self.systemctl)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("run {} {}", self.systemctl.display(), args.join(" ")))?;
        let status = match child.wait_timeout(timeout)? {
            Some(s) => s,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "systemctl {} did not finish within {timeout:?}",
                    args.join(" ")
                );
            }
        };
        let mut out = String::new();
        use std::io::Read;
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut out);
        }
        Ok((status.success(), out.trim().to_owned()))
    }

    fn must(&self, args: &[&str]) -> Result<String> {
        let (ok, out) = self.run(args, self.timeout)?;
        if !ok {
            bail!("systemctl {} failed: {out}", args.join(" "));
        }
        Ok(out)
    }

    pub fn daemon_reload(&self) -> Result<()> {
        self.must(&["daemon-reload"]).map(|_| ())
    }

    /// Starts a unit and waits for it to be started (for notify units: READY=1).
    pub fn start(&self, unit: &str, timeout: Duration) -> Result<()> {
        let (ok, out) = self.run(&["start", unit], timeout + Duration::from_secs(5))?;
        if !ok {
            bail!("start {unit} failed: {out}");
        }
        Ok(())
    }

    /// Queues a start without waiting for it (at boot, where waiting on a
    /// unit ordered after us would deadlock).
    pub fn start_no_block(&self, unit: &str) -> Result<()> {
        self.must(&["start", "--no-block", unit]).map(|_| ())
    }

    pub fn stop(&self, unit: &str) -> Result<()> {
        self.must(&["stop", unit]).map(|_| ())
    }

    pub fn enable(&self, unit: &str) -> Result<()> {
        self.must(&["enable", "--quiet", unit]).map(|_| ())
    }

    pub fn disable(&self, unit: &str) -> Result<()> {
        self.must(&["disable", "--quiet", unit]).map(|_| ())
    }

    pub fn reset_failed(&self, unit: &str) {
        // Harmless when the unit has not failed.
        let _ = self.run(&["reset-failed", unit], self.timeout);
    }

    pub fn is_active(&self, unit: &str) -> bool {
        matches!(
            self.run(&["is-active", "--quiet", unit], self.timeout),
            Ok((true, _))
        )
    }

    /// `ActiveState` of a unit (`active`, `failed`, `inactive`…).
    pub fn active_state(&self, unit: &str) -> String {
        self.run(
            &["show", "-p", "ActiveState", "--value", unit],
            self.timeout,
        )
        .map(|(_, o)| o)
        .unwrap_or_else(|_| "unknown".into())
    }

    /// The units of a template that are loaded, e.g. `dickbox-web@*.service`.
    pub fn list_instances(&self, pattern: &str) -> Vec<String> {
        match self.run(
            &[
                "list-units",
                "--all",
                "--plain",
                "--no-legend",
                "--full",
                pattern,
            ],
            self.timeout,
        ) {
            Ok((_, out)) => out
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_owned)
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}
