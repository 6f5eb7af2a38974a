//! The `build` section of `/etc/dickbox/dickbox.yml`.
//!
//! Precedence: built-in defaults, then the file, then `DICKBOX_BUILD_<KEY>`
//! environment variables, then command-line flags. Unknown keys in the
//! section are refused with their line; other programs' sections are not read.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

pub const DEFAULT_CONFIG: &str = "/etc/dickbox/dickbox.yml";

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// minisign secret key used when `--key` is not given.
    pub key: Option<PathBuf>,
    /// File holding the secret key's password.
    pub password_file: Option<PathBuf>,
    /// Output folder when `--out` is not given.
    pub out_dir: Option<PathBuf>,
    /// Name recorded as the builder.
    pub builder: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    build: Option<BuildConfig>,
    // The other programs' sections: present, not read here.
    deploy: Option<serde::de::IgnoredAny>,
    keeper: Option<serde::de::IgnoredAny>,
    zmq: Option<serde::de::IgnoredAny>,
    energy: Option<serde::de::IgnoredAny>,
}

/// Where the settings came from, for the log.
#[derive(Debug, Default)]
pub struct Loaded {
    pub config: BuildConfig,
    pub file: Option<PathBuf>,
    pub overrides: Vec<String>,
}

/// Loads the config. A missing file at the default path is fine (CI hosts
/// have none); a missing file that was named explicitly is an error.
pub fn load(path: Option<&Path>) -> Result<Loaded> {
    let env_path = std::env::var_os("DICKBOX_CONFIG").map(PathBuf::from);
    let (path, explicit) = match (path, env_path) {
        (Some(p), _) => (p.to_owned(), true),
        (None, Some(p)) => (p, true),
        (None, None) => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let mut loaded = Loaded::default();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut options = serde_saphyr::Options::default();
            options.with_snippet = false;
            let f: File = if text.trim().is_empty() {
                File {
                    build: None,
                    deploy: None,
                    keeper: None,
                    zmq: None,
                    energy: None,
                }
            } else {
                serde_saphyr::from_str_with_options(&text, options)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            };
            let _ = (&f.deploy, &f.keeper, &f.zmq, &f.energy);
            loaded.config = f.build.unwrap_or_default();
            loaded.file = Some(path);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {}
        Err(e) => return Err(e).with_context(|| format!("read config {}", path.display())),
    }
    apply_env(&mut loaded)?;
    Ok(loaded)
}

fn apply_env(loaded: &mut Loaded) -> Result<()> {
    for (k, v) in std::env::vars() {
        let Some(key) = k.strip_prefix("DICKBOX_BUILD_") else {
            continue;
        };
        let c = &mut loaded.config;
        match key {
            "KEY" => c.key = Some(v.into()),
            "PASSWORD_FILE" => c.password_file = Some(v.into()),
            "OUT_DIR" => c.out_dir = Some(v.into()),
            "BUILDER" => c.builder = Some(v),
            _ => {
                tracing::warn!(variable = %k, "ignoring environment variable: build has no such key");
                continue;
            }
        }
        loaded.overrides.push(k);
    }
    Ok(())
}
