//! The keeper's configuration: defaults, then the `keeper` section of
//! `/etc/dickbox/dickbox.yml`, then `DICKBOX_KEEPER_<KEY>` variables, then flags.
//!
//! Every source is read into the same [`Layer`] of optional strings, so one parser
//! per key checks every source and its errors name the key and where it came
//! from (file and line, variable, or flag). Unknown keys in the file section and
//! unknown `DICKBOX_KEEPER_*` variables are refused: a typo must not silently
//! leave a default in force.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// Where the config file is unless `--config` or `DICKBOX_CONFIG` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/dickbox/dickbox.yml";

/// The settled configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeeperConfig {
    /// Time between kernel launches.
    pub interval: Duration,
    /// How long one kernel may take, launch to completion.
    pub kernel_deadline: Duration,
    /// Parent of the per-GPU `pipe` and `log` folders.
    pub pipe_root: PathBuf,
    /// Folder of node_exporter's textfile collector.
    pub metrics_dir: PathBuf,
    /// MPS default active-thread percentage to apply and read back, if any.
    pub default_active_thread_percentage: Option<u8>,
    /// The `nvidia-cuda-mps-control` program.
    pub mps_control: PathBuf,
    /// How long to wait at start for the MPS control socket to appear.
    pub pipe_wait: Duration,
}

impl Default for KeeperConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            kernel_deadline: Duration::from_secs(2),
            pipe_root: PathBuf::from("/run/soliton-mps"),
            metrics_dir: PathBuf::from("/var/lib/prometheus/node-exporter"),
            default_active_thread_percentage: None,
            mps_control: PathBuf::from("nvidia-cuda-mps-control"),
            pipe_wait: Duration::from_secs(10),
        }
    }
}

/// The keys, as written in the file; variables are `DICKBOX_KEEPER_` + upper case.
pub const KEYS: [&str; 7] = [
    "interval",
    "kernel_deadline",
    "pipe_root",
    "metrics_dir",
    "default_active_thread_percentage",
    "mps_control",
    "pipe_wait",
];

/// Where a value came from, for messages and the "overrides applied" log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A line of the config file.
    File { path: PathBuf, line: u64 },
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { path, line } => write!(f, "{} line {line}", path.display()),
            Self::Env(name) => write!(f, "environment variable {name}"),
            Self::Flag(name) => write!(f, "flag --{name}"),
        }
    }
}

/// One source's values, by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layer {
    values: BTreeMap<&'static str, (String, Source)>,
}

impl Layer {
    /// Sets `key` (one of [`KEYS`]) from `source`.
    pub fn set(&mut self, key: &'static str, value: String, source: Source) {
        debug_assert!(KEYS.contains(&key), "unknown key {key}");
        self.values.insert(key, (value, source));
    }

    /// The keys this layer sets, with their sources.
    pub fn sources(&self) -> impl Iterator<Item = (&'static str, &Source)> {
        self.values.iter().map(|(k, (_, s))| (*k, s))
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("read config {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML, has an unknown key, or a value of the wrong shape.
    #[error("parse config {path}: {message}")]
    ParseFile { path: PathBuf, message: String },
    /// A `DICKBOX_KEEPER_*` variable names no key.
    #[error(
        "unknown environment variable {name}: keeper keys are {}",
        known_vars()
    )]
    UnknownEnv { name: String },
    /// A value does not parse.
    #[error("keeper.{key} = {value:?} ({origin}): {reason}")]
    BadValue {
        key: &'static str,
        value: String,
        origin: Source,
        reason: String,
    },
    /// Values that parse but do not fit together.
    #[error("keeper config: {0}")]
    Inconsistent(String),
}

fn known_vars() -> String {
    KEYS.iter()
        .map(|k| env_name(k))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `interval` → `DICKBOX_KEEPER_INTERVAL`.
pub fn env_name(key: &str) -> String {
    format!("DICKBOX_KEEPER_{}", key.to_ascii_uppercase())
}

#[derive(Debug, Deserialize)]
struct FileRoot {
    // Other sections belong to other programs; each program checks its own.
    keeper: Option<FileKeeper>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeeper {
    interval: Option<Spanned<String>>,
    kernel_deadline: Option<Spanned<String>>,
    pipe_root: Option<Spanned<String>>,
    metrics_dir: Option<Spanned<String>>,
    default_active_thread_percentage: Option<Spanned<String>>,
    mps_control: Option<Spanned<String>>,
    pipe_wait: Option<Spanned<String>>,
}

/// Reads the `keeper` section of a config file's text.
pub fn layer_from_yaml(text: &str, path: &Path) -> Result<Layer, ConfigError> {
    let root: FileRoot = serde_saphyr::from_str(text).map_err(|e| ConfigError::ParseFile {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut layer = Layer::default();
    let Some(k) = root.keeper else {
        return Ok(layer);
    };
    for (key, value) in [
        ("interval", k.interval),
        ("kernel_deadline", k.kernel_deadline),
        ("pipe_root", k.pipe_root),
        ("metrics_dir", k.metrics_dir),
        (
            "default_active_thread_percentage",
            k.default_active_thread_percentage,
        ),
        ("mps_control", k.mps_control),
        ("pipe_wait", k.pipe_wait),
    ] {
        if let Some(v) = value {
            let source = Source::File {
                path: path.to_owned(),
                line: v.referenced.line(),
            };
            layer.set(key, v.value, source);
        }
    }
    Ok(layer)
}

/// Reads `DICKBOX_KEEPER_*` variables; any other variable is ignored.
pub fn layer_from_env(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Layer, ConfigError> {
    let mut layer = Layer::default();
    for (name, value) in vars {
        if !name.starts_with("DICKBOX_KEEPER_") {
            continue;
        }
        let key = KEYS
            .iter()
            .find(|k| env_name(k) == name)
            .ok_or_else(|| ConfigError::UnknownEnv { name: name.clone() })?;
        layer.set(key, value, Source::Env(name));
    }
    Ok(layer)
}

/// The configuration and how it was arrived at.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The result.
    pub config: KeeperConfig,
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// `key from source` for every value the environment or a flag set.
    pub overrides: Vec<String>,
}

/// Loads the config: the file at `explicit_path` (from `--config` or
/// `DICKBOX_CONFIG`; it must exist) or else [`DEFAULT_CONFIG_PATH`] if it
/// exists, then the environment, then `flags`.
pub fn load(
    explicit_path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: Layer,
) -> Result<Loaded, ConfigError> {
    let (path, must_exist) = match explicit_path {
        Some(p) => (p.to_owned(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let (file_layer, file) = match std::fs::read_to_string(&path) {
        Ok(text) => (layer_from_yaml(&text, &path)?, Some(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
            (Layer::default(), None)
        }
        Err(source) => return Err(ConfigError::ReadFile { path, source }),
    };
    let env_layer = layer_from_env(env)?;

    let mut overrides = Vec::new();
    for layer in [&env_layer, &flags] {
        for (key, source) in layer.sources() {
            overrides.push(format!("{key} from {source}"));
        }
    }
    let config = resolve(&[file_layer, env_layer, flags])?;
    Ok(Loaded {
        config,
        file,
        overrides,
    })
}

/// Applies layers over the defaults, later layers winning, and checks the result.
pub fn resolve(layers: &[Layer]) -> Result<KeeperConfig, ConfigError> {
    let mut merged: BTreeMap<&'static str, &(String, Source)> = BTreeMap::new();
    for layer in layers {
        for (key, entry) in &layer.values {
            merged.insert(key, entry);
        }
    }

    let mut config = KeeperConfig::default();
    for (key, (value, source)) in merged {
        let bad = |reason: String| ConfigError::BadValue {
            key,
            value: value.clone(),
            origin: source.clone(),
            reason,
        };
        match key {
            "interval" => config.interval = parse_duration(value).map_err(bad)?,
            "kernel_deadline" => config.kernel_deadline = parse_duration(value).map_err(bad)?,
            "pipe_wait" => config.pipe_wait = parse_duration(value).map_err(bad)?,
            "pipe_root" => config.pipe_root = parse_abs_path(value).map_err(bad)?,
            "metrics_dir" => config.metrics_dir = parse_abs_path(value).map_err(bad)?,
            "mps_control" => {
                if value.is_empty() {
                    return Err(bad("must not be empty".into()));
                }
                config.mps_control = PathBuf::from(value);
            }
            "default_active_thread_percentage" => {
                config.default_active_thread_percentage = parse_percentage(value).map_err(bad)?;
            }
            other => unreachable!("key {other} is not in KEYS"),
        }
    }

    if config.interval.is_zero() || config.kernel_deadline.is_zero() {
        return Err(ConfigError::Inconsistent(
            "interval and kernel_deadline must be above zero".into(),
        ));
    }
    if config.kernel_deadline >= config.interval {
        return Err(ConfigError::Inconsistent(format!(
            "kernel_deadline ({:?}) must be shorter than interval ({:?})",
            config.kernel_deadline, config.interval
        )));
    }
    Ok(config)
}

/// `10s`, `500ms`, `5m`, `1h`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err("expected a whole number with a unit: ms, s, m or h (e.g. 10s)".into());
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| "number out of range".to_string())?;
    let millis = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        other => return Err(format!("unknown unit {other:?}: use ms, s, m or h")),
    };
    millis
        .map(Duration::from_millis)
        .ok_or_else(|| "duration out of range".into())
}

fn parse_abs_path(text: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(text);
    if !p.is_absolute() {
        return Err("must be an absolute path".into());
    }
    Ok(p)
}

fn parse_percentage(text: &str) -> Result<Option<u8>, String> {
    let t = text.trim();
    if t.is_empty() || t == "none" {
        return Ok(None);
    }
    match t.parse::<u8>() {
        Ok(n @ 1..=100) => Ok(Some(n)),
        _ => Err("must be a whole number from 1 to 100, or none".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<Layer, ConfigError> {
        layer_from_yaml(text, Path::new("/etc/dickbox/dickbox.yml"))
    }

    #[test]
    fn reads_only_the_keeper_section() {
        let layer = file(
            "deploy:\n  anything: 1\nkeeper:\n  interval: 5s\n  kernel_deadline: 500ms\n  \
             default_active_thread_percentage: 50\n",
        )
        .unwrap();
        let config = resolve(&[layer]).unwrap();
        assert_eq!(config.interval, Duration::from_secs(5));
        assert_eq!(config.kernel_deadline, Duration::from_millis(500));
        assert_eq!(config.default_active_thread_percentage, Some(50));
        assert_eq!(config.metrics_dir, KeeperConfig::default().metrics_dir);
    }

    #[test]
    fn refuses_unknown_key_naming_key_and_line() {
        let err = file("keeper:\n  interval: 5s\n  intervall: 3s\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("intervall"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("/etc/dickbox/dickbox.yml"), "{err}");
    }

    #[test]
    fn bad_value_names_key_source_and_line() {
        let layer = file("keeper:\n  interval: 5s\n  kernel_deadline: soon\n").unwrap();
        let err = resolve(&[layer]).unwrap_err().to_string();
        assert!(err.contains("keeper.kernel_deadline"), "{err}");
        assert!(err.contains("dickbox.yml line 3"), "{err}");
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let f = file("keeper:\n  interval: 5s\n  pipe_wait: 1s\n").unwrap();
        let env = layer_from_env([
            ("DICKBOX_KEEPER_INTERVAL".to_string(), "20s".to_string()),
            ("DICKBOX_KEEPER_PIPE_WAIT".to_string(), "3s".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ])
        .unwrap();
        let mut flags = Layer::default();
        flags.set("interval", "30s".into(), Source::Flag("interval".into()));
        let config = resolve(&[f, env, flags]).unwrap();
        assert_eq!(config.interval, Duration::from_secs(30));
        assert_eq!(config.pipe_wait, Duration::from_secs(3));
    }

    #[test]
    fn refuses_unknown_keeper_variable() {
        let err = layer_from_env([("DICKBOX_KEEPER_INTERVALL".to_string(), "1s".to_string())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("DICKBOX_KEEPER_INTERVALL"), "{err}");
        assert!(err.contains("DICKBOX_KEEPER_INTERVAL,"), "{err}");
    }

    #[test]
    fn parses_durations_with_units() {
        for (text, want) in [
            ("10s", Some(10_000)),
            ("10", Some(10_000)),
            ("250ms", Some(250)),
            ("5m", Some(300_000)),
            ("1h", Some(3_600_000)),
            ("1.5s", None),
            ("-1s", None),
            ("s", None),
            ("10 days", None),
            ("99999999999999999999s", None),
        ] {
            let got = parse_duration(text).ok().map(|d| d.as_millis() as u64);
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn refuses_inconsistent_and_out_of_range_values() {
        for (key, value, needle) in [
            ("kernel_deadline", "10s", "shorter than interval"),
            ("interval", "0s", "above zero"),
            ("default_active_thread_percentage", "0", "1 to 100"),
            ("default_active_thread_percentage", "101", "1 to 100"),
            ("pipe_root", "run/soliton-mps", "absolute"),
            ("metrics_dir", "", "absolute"),
        ] {
            let mut l = Layer::default();
            l.set(key, value.into(), Source::Flag(key.into()));
            let err = resolve(&[l]).unwrap_err().to_string();
            assert!(err.contains(needle), "{key}={value}: {err}");
        }
    }
}
