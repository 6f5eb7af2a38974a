//! The `deploy` section of `/etc/dickbox/dickbox.yml`.
//!
//! Precedence: defaults, then the file, then `DICKBOX_DEPLOY_<KEY>`, then
//! flags. Every root is configurable so tests point them at temporary
//! folders. Unknown keys are refused with their line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use capsule::quantity::{parse_duration, parse_size};
use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG: &str = "/etc/dickbox/dickbox.yml";

/// Which signatures a host requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Require {
    Minisign,
    Sigstore,
    Both,
    Any,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployConfig {
    /// State: releases/, services/, journal/, floors.json.
    pub state_dir: PathBuf,
    /// Where generated units go.
    pub unit_dir: PathBuf,
    /// Per-service sockets and `current.sock` links.
    pub runtime_dir: PathBuf,
    /// Trusted keys: `minisign/*.pub`, `revoked`, `sigstore/`.
    pub trust_dir: PathBuf,
    /// Host-side secrets: `env/<svc>.env`, `credentials/<svc>/`.
    pub secrets_dir: PathBuf,
    pub lock_path: PathBuf,
    /// Prometheus textfile folder.
    pub metrics_dir: PathBuf,
    /// Which signatures are required.
    pub require: Require,
    /// How long a second caller waits for the lock.
    pub lock_timeout: String,
    /// How long the old instance keeps running after the switch.
    pub drain: String,
    /// Releases kept per capsule by gc besides current and previous.
    pub keep: usize,
    /// Decompression-bomb limits.
    pub max_unpacked: String,
    pub max_members: u64,
    pub max_ratio: u64,
    /// The systemctl binary (tests may point this elsewhere).
    pub systemctl: PathBuf,
    /// Timeout for each systemctl call that is not a start.
    pub systemctl_timeout: String,
    /// User and group the services run as.
    pub service_user: String,
    /// Blue and green ports of `listen: tcp` services.
    pub ports: BTreeMap<String, [u16; 2]>,
    /// HAProxy runtime API socket for `listen: tcp` services.
    pub haproxy_socket: Option<PathBuf>,
    /// Host policy for slices capsules name: property = value lines.
    pub slices: BTreeMap<String, BTreeMap<String, String>>,
    /// URL sources: largest archive downloaded.
    pub fetch_max_size: String,
    /// URL sources: deadline for the whole download of one file.
    pub fetch_timeout: String,
    /// URL sources: extra CA bundle (PEM) trusted for https.
    pub ca_bundle: Option<PathBuf>,
    /// URL sources: file holding a bearer token sent as `Authorization`.
    pub token_file: Option<PathBuf>,
    /// Sigstore bundles: the OIDC issuer the signing certificate must name.
    pub sigstore_issuer: Option<String>,
    /// Sigstore bundles: the certificate identity (SAN), exactly.
    pub sigstore_identity: Option<String>,
    /// Sigstore bundles: or a regular expression the whole SAN must match.
    pub sigstore_identity_pattern: Option<String>,
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            state_dir: "/var/lib/dickbox".into(),
            unit_dir: "/etc/systemd/system".into(),
            runtime_dir: "/run/dickbox".into(),
            trust_dir: "/etc/dickbox/trust".into(),
            secrets_dir: "/etc/dickbox".into(),
            lock_path: "/run/lock/dickbox-deploy.lock".into(),
            metrics_dir: "/var/lib/prometheus/node-exporter".into(),
            require: Require::Minisign,
            lock_timeout: "5m".into(),
            drain: "2s".into(),
            keep: 3,
            max_unpacked: "16G".into(),
            max_members: 200_000,
            max_ratio: 200,
            systemctl: "systemctl".into(),
            systemctl_timeout: "90s".into(),
            service_user: "dickbox-svc".into(),
            ports: BTreeMap::new(),
            haproxy_socket: None,
            slices: BTreeMap::new(),
            fetch_max_size: "8G".into(),
            fetch_timeout: "10m".into(),
            ca_bundle: None,
            token_file: None,
            sigstore_issuer: None,
            sigstore_identity: None,
            sigstore_identity_pattern: None,
        }
    }
}

/// The settings with durations and sizes parsed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub raw: DeployConfig,
    pub lock_timeout: Duration,
    pub drain: Duration,
    pub systemctl_timeout: Duration,
    pub limits: capsule::unpack::Limits,
    pub fetch_max_size: u64,
    pub fetch_timeout: Duration,
}

impl Settings {
    pub fn from_config(raw: DeployConfig) -> Result<Settings> {
        let dur = |v: &str, k: &str| parse_duration(v).with_context(|| format!("deploy.{k}"));
        let limits = capsule::unpack::Limits {
            max_total_bytes: parse_size(&raw.max_unpacked).context("deploy.max_unpacked")?,
            max_members: raw.max_members,
            max_ratio: raw.max_ratio,
        };
        for (svc, ports) in &raw.ports {
            if ports[0] == ports[1] || ports.contains(&0) {
                bail!("deploy.ports.{svc}: blue and green must be two different non-zero ports");
            }
        }
        Ok(Settings {
            lock_timeout: dur(&raw.lock_timeout, "lock_timeout")?,
            drain: dur(&raw.drain, "drain")?,
            systemctl_timeout: dur(&raw.systemctl_timeout, "systemctl_timeout")?,
            limits,
            fetch_max_size: parse_size(&raw.fetch_max_size).context("deploy.fetch_max_size")?,
            fetch_timeout: dur(&raw.fetch_timeout, "fetch_timeout")?,
            raw,
        })
    }

    pub fn releases_dir(&self) -> PathBuf {
        self.raw.state_dir.join("releases")
    }
    pub fn services_dir(&self) -> PathBuf {
        self.raw.state_dir.join("services")
    }
    pub fn journal_dir(&self) -> PathBuf {
        self.raw.state_dir.join("journal")
    }
    pub fn floors_path(&self) -> PathBuf {
        self.raw.state_dir.join("floors.json")
    }
    /// The identity policy for Sigstore bundles, if configured.
    pub fn identity_policy(&self) -> Result<Option<capsule::sigstore::IdentityPolicy>> {
        use capsule::sigstore::{Identity, IdentityPolicy};
        let c = &self.raw;
        let identity = match (&c.sigstore_identity, &c.sigstore_identity_pattern) {
            (Some(_), Some(_)) => {
                bail!("deploy.sigstore_identity and sigstore_identity_pattern: give one, not both")
            }
            (Some(i), None) => Identity::Exact(i.clone()),
            (None, Some(p)) => Identity::pattern(p)?,
            (None, None) => return Ok(None),
        };
        let issuer = c
            .sigstore_issuer
            .as_deref()
            .context("deploy.sigstore_identity needs deploy.sigstore_issuer")?;
        Ok(Some(IdentityPolicy::new(issuer, identity)?))
    }

    pub fn sigstore_dir(&self) -> PathBuf {
        self.raw.trust_dir.join("sigstore")
    }

    pub fn history_path(&self) -> PathBuf {
        self.raw.state_dir.join("history.jsonl")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    deploy: Option<DeployConfig>,
    build: Option<serde::de::IgnoredAny>,
    keeper: Option<serde::de::IgnoredAny>,
    zmq: Option<serde::de::IgnoredAny>,
    energy: Option<serde::de::IgnoredAny>,
}

#[derive(Debug)]
pub struct Loaded {
    pub settings: Settings,
    pub file: Option<PathBuf>,
    pub overrides: Vec<String>,
}

/// Loads the config file (missing at the default path is fine), then the
/// environment overrides.
pub fn load(path: Option<&Path>) -> Result<Loaded> {
    let (path, explicit) = match path {
        Some(p) => (p.to_owned(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let mut cfg = DeployConfig::default();
    let mut file = None;
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            if !text.trim().is_empty() {
                let mut options = serde_saphyr::Options::default();
                options.with_snippet = false;
                let f: FileShape = serde_saphyr::from_str_with_options(&text, options)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                let _ = (&f.build, &f.keeper, &f.zmq, &f.energy);
                if let Some(d) = f.deploy {
                    cfg = d;
                }
            }
            file = Some(path);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {}
        Err(e) => return Err(e).with_context(|| format!("read config {}", path.display())),
    }
    let mut overrides = Vec::new();
    for (k, v) in std::env::vars() {
        let Some(key) = k.strip_prefix("DICKBOX_DEPLOY_") else {
            continue;
        };
        let key = key.to_lowercase();
        let c = &mut cfg;
        match key.as_str() {
            "state_dir" => c.state_dir = v.into(),
            "unit_dir" => c.unit_dir = v.into(),
            "runtime_dir" => c.runtime_dir = v.into(),
            "trust_dir" => c.trust_dir = v.into(),
            "secrets_dir" => c.secrets_dir = v.into(),
            "lock_path" => c.lock_path = v.into(),
            "metrics_dir" => c.metrics_dir = v.into(),
            "lock_timeout" => c.lock_timeout = v,
            "drain" => c.drain = v,
            "systemctl" => c.systemctl = v.into(),
            "systemctl_timeout" => c.systemctl_timeout = v,
            "service_user" => c.service_user = v,
            "max_unpacked" => c.max_unpacked = v,
            "haproxy_socket" => c.haproxy_socket = Some(v.into()),
            "fetch_max_size" => c.fetch_max_size = v,
            "fetch_timeout" => c.fetch_timeout = v,
            "ca_bundle" => c.ca_bundle = Some(v.into()),
            "token_file" => c.token_file = Some(v.into()),
            "sigstore_issuer" => c.sigstore_issuer = Some(v),
            "sigstore_identity" => c.sigstore_identity = Some(v),
            "sigstore_identity_pattern" => c.sigstore_identity_pattern = Some(v),
            "require" => {
                c.require = match v.as_str() {
                    "minisign" => Require::Minisign,
                    "sigstore" => Require::Sigstore,
                    "both" => Require::Both,
                    "any" => Require::Any,
                    _ => bail!("{k}={v:?}: must be minisign, sigstore, both or any"),
                }
            }
            "keep" => {
                c.keep = v
                    .parse()
                    .with_context(|| format!("{k}={v:?}: not a number"))?
            }
            "max_members" => {
                c.max_members = v
                    .parse()
                    .with_context(|| format!("{k}={v:?}: not a number"))?
            }
            "max_ratio" => {
                c.max_ratio = v
                    .parse()
                    .with_context(|| format!("{k}={v:?}: not a number"))?
            }
            // Test hooks, not settings.
            "test_crash_at" => continue,
            _ => bail!("{k}: deploy has no setting {key}"),
        }
        overrides.push(k);
    }
    Ok(Loaded {
        settings: Settings::from_config(cfg)?,
        file,
        overrides,
    })
}
