//! `capsule-build`: turns a service tree into a reproducible, signed capsule.
//!
//! Run in CI. `main.rs` only parses arguments and maps the result to an exit
//! code; the commands live here and in their modules so tests can drive them.

pub mod build;
pub mod cli;
pub mod config;
pub mod inspect;
pub mod keygen;
pub mod output;
pub mod records;

use std::fmt;

/// The input was refused (manifest, tree, archive): exit code 3, not a
/// failure of the tool itself.
#[derive(Debug)]
pub struct InputError(pub String);

impl InputError {
    pub fn msg(s: impl Into<String>) -> InputError {
        InputError(s.into())
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

impl From<capsule::manifest::ManifestError> for InputError {
    fn from(e: capsule::manifest::ManifestError) -> Self {
        InputError(e.to_string())
    }
}

impl From<capsule::pack::PackError> for InputError {
    fn from(e: capsule::pack::PackError) -> Self {
        InputError(e.to_string())
    }
}

/// A signature that does not verify: exit code 4.
#[derive(Debug)]
pub struct VerifyError(pub String);

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VerifyError {}

/// Exit codes, documented in `--help`.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const REFUSED_INPUT: i32 = 3;
    pub const BAD_SIGNATURE: i32 = 4;
}

/// Maps an error to its exit code.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<InputError>().is_some() {
        exit::REFUSED_INPUT
    } else if e.downcast_ref::<VerifyError>().is_some() {
        exit::BAD_SIGNATURE
    } else {
        exit::FAILED
    }
}

/// Where build progress goes: a bar on a terminal, nowhere otherwise.
pub trait ProgressSink {
    fn start(&mut self, total: u64);
    fn set(&mut self, done: u64);
    fn finish(&mut self);
}

/// No progress output.
#[derive(Debug, Default)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn start(&mut self, _: u64) {}
    fn set(&mut self, _: u64) {}
    fn finish(&mut self) {}
}

/// A progress bar on stderr, shown only for trees large enough to matter.
#[derive(Debug, Default)]
pub struct TerminalProgress {
    bar: Option<indicatif::ProgressBar>,
}

impl ProgressSink for TerminalProgress {
    fn start(&mut self, total: u64) {
        if total < (64 << 20) {
            return;
        }
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "packing {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        self.bar = Some(bar);
    }
    fn set(&mut self, done: u64) {
        if let Some(b) = &self.bar {
            b.set_position(done);
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// Reads a password from a file (first line) or an environment variable.
pub fn read_password(
    file: Option<&std::path::Path>,
    env: Option<&str>,
) -> anyhow::Result<Option<String>> {
    use anyhow::Context;
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("read password file {}", f.display()))?;
        let pw = text.lines().next().unwrap_or("").to_owned();
        if pw.is_empty() {
            anyhow::bail!("password file {} is empty", f.display());
        }
        return Ok(Some(pw));
    }
    if let Some(var) = env {
        let pw =
            std::env::var(var).with_context(|| format!("password variable {var} is not set"))?;
        if pw.is_empty() {
            anyhow::bail!("password variable {var} is empty");
        }
        return Ok(Some(pw));
    }
    Ok(None)
}
