//! The `energy` section of `/etc/dickbox/dickbox.yml`, environment overrides and
//! flags.
//!
//! Precedence is defaults, then the file, then `DICKBOX_ENERGY_<KEY>`, then
//! `--set KEY=VALUE` flags. Unknown keys are refused wherever they come from: in
//! the file with their line, in the environment with the variable's name, so a
//! typo never silently falls back to a default. The other sections of the file
//! belong to other programs and are not looked at.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the configuration is read from when neither `--config` nor
/// `DICKBOX_CONFIG` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/dickbox/dickbox.yml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse config {path}: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("{origin}: unknown energy setting `{key}`")]
    UnknownKey { origin: String, key: String },
    #[error("{origin}: bad value {value:?} for `{key}`: {reason}")]
    BadValue {
        origin: String,
        key: String,
        value: String,
        reason: String,
    },
    #[error("config: {0}")]
    Invalid(String),
}

/// How long one budget period lasts. Periods start at midnight UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeriodKind {
    Daily,
    Weekly,
    Monthly,
}

/// Which GPU energy source the daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuSourceKind {
    /// NVML through `libnvidia-ml.so.1`, loaded at run time.
    Nvml,
    /// No GPU accounting.
    Off,
}

/// The effective configuration after all layers were applied.
#[derive(Debug, Clone)]
pub struct Config {
    pub budget_path: PathBuf,
    pub metrics_path: PathBuf,
    pub sample_interval: Duration,
    pub sync_interval: Duration,
    pub period: PeriodKind,
    pub budget_kwh: f64,
    pub weights: BTreeMap<String, f64>,
    pub units: Vec<String>,
    pub power_profiles: BTreeMap<String, f64>,
    pub rapl_root: PathBuf,
    pub cgroup_root: PathBuf,
    pub proc_root: PathBuf,
    pub unit_dirs: Vec<PathBuf>,
    pub gpu: GpuSourceKind,
    pub history_hours: u32,
    pub enforce: bool,
    pub enforce_cpu_quota: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            budget_path: PathBuf::from("/var/lib/dickbox/energy.json"),
            metrics_path: PathBuf::from("/var/lib/prometheus/node-exporter/energy-budget.prom"),
            sample_interval: Duration::from_secs(5),
            sync_interval: Duration::from_secs(60),
            period: PeriodKind::Monthly,
            budget_kwh: 0.0,
            weights: BTreeMap::new(),
            units: Vec::new(),
            power_profiles: BTreeMap::new(),
            rapl_root: PathBuf::from("/sys/class/powercap"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            proc_root: PathBuf::from("/proc"),
            unit_dirs: vec![
                PathBuf::from("/etc/systemd/system"),
                PathBuf::from("/run/systemd/system"),
            ],
            gpu: GpuSourceKind::Nvml,
            history_hours: 168,
            enforce: false,
            enforce_cpu_quota: 50,
        }
    }
}

/// The file form: every key optional, unknown keys refused with their line.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEnergy {
    budget_path: Option<PathBuf>,
    metrics_path: Option<PathBuf>,
    sample_interval: Option<String>,
    sync_interval: Option<String>,
    period: Option<PeriodKind>,
    budget_kwh: Option<f64>,
    weights: Option<BTreeMap<String, f64>>,
    units: Option<Vec<String>>,
    power_profiles: Option<BTreeMap<String, f64>>,
    rapl_root: Option<PathBuf>,
    cgroup_root: Option<PathBuf>,
    proc_root: Option<PathBuf>,
    unit_dirs: Option<Vec<PathBuf>>,
    gpu: Option<String>,
    history_hours: Option<u32>,
    enforce: Option<bool>,
    enforce_cpu_quota: Option<u32>,
}

/// The whole file: only `energy` is ours; other sections are skipped unread.
#[derive(Debug, Default, Deserialize)]
struct FileRoot {
    energy: Option<FileEnergy>,
}

/// The keys that `DICKBOX_ENERGY_<KEY>` and `--set KEY=VALUE` may name.
pub const KEYS: &[&str] = &[
    "budget_path",
    "metrics_path",
    "sample_interval",
    "sync_interval",
    "period",
    "budget_kwh",
    "weights",
    "units",
    "power_profiles",
    "rapl_root",
    "cgroup_root",
    "proc_root",
    "unit_dirs",
    "gpu",
    "history_hours",
    "enforce",
    "enforce_cpu_quota",
];

/// The configuration together with where each layer came from, for logging.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The file that was read, or `None` when it did not exist.
    pub file: Option<PathBuf>,
    /// `origin: key` for every override applied, in order.
    pub overrides: Vec<String>,
    /// Things an operator should fix that do not stop the program.
    pub warnings: Vec<String>,
}

/// Where the configuration file is: `--config`, then `DICKBOX_CONFIG`, then the
/// default path.
pub fn config_path(flag: Option<&Path>, env: &BTreeMap<String, String>) -> (PathBuf, bool) {
    if let Some(p) = flag {
        return (p.to_path_buf(), true);
    }
    if let Some(p) = env.get("DICKBOX_CONFIG") {
        return (PathBuf::from(p), true);
    }
    (PathBuf::from(DEFAULT_CONFIG_PATH), false)
}

/// Load every layer. `explicit` says whether the path was asked for: a missing
/// file asked for by name is an error, a missing default file means defaults.
pub fn load(
    path: &Path,
    explicit: bool,
    env: &BTreeMap<String, String>,
    sets: &[String],
) -> Result<Loaded, ConfigError> {
    let mut config = Config::default();
    let mut overrides = Vec::new();

    let file = match std::fs::read_to_string(path) {
        Ok(text) => {
            apply_file(&mut config, path, &text)?;
            Some(path.to_path_buf())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => None,
        Err(source) => {
            return Err(ConfigError::ReadFile {
                path: path.to_path_buf(),
                source,
            });
        }
    };

    for (name, value) in env {
        let Some(key) = name.strip_prefix("DICKBOX_ENERGY_") else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        apply_override(&mut config, &key, value, name)?;
        overrides.push(name.clone());
    }
    for set in sets {
        let origin = format!("--set {set}");
        let Some((key, value)) = set.split_once('=') else {
            return Err(ConfigError::Invalid(format!(
                "{origin}: expected KEY=VALUE"
            )));
        };
        apply_override(&mut config, key.trim(), value, &origin)?;
        overrides.push(format!("--set {}", key.trim()));
    }

    validate(&config)?;
    let warnings = warnings_for(&config);
    Ok(Loaded {
        config,
        file,
        overrides,
        warnings,
    })
}

fn apply_file(config: &mut Config, path: &Path, text: &str) -> Result<(), ConfigError> {
    let root: FileRoot = if text.trim().is_empty() {
        FileRoot::default()
    } else {
        serde_saphyr::from_str(text).map_err(|e| ConfigError::ParseFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
    };
    let Some(f) = root.energy else {
        return Ok(());
    };
    let origin = format!("{} (energy)", path.display());
    let dur = |key: &str, v: Option<String>, d: &mut Duration| -> Result<(), ConfigError> {
        if let Some(v) = v {
            *d = parse_duration(&v).map_err(|reason| ConfigError::BadValue {
                origin: origin.clone(),
                key: key.to_string(),
                value: v.clone(),
                reason,
            })?;
        }
        Ok(())
    };
    dur(
        "sample_interval",
        f.sample_interval,
        &mut config.sample_interval,
    )?;
    dur("sync_interval", f.sync_interval, &mut config.sync_interval)?;
    if let Some(v) = f.gpu {
        config.gpu = parse_gpu(&v).map_err(|reason| ConfigError::BadValue {
            origin: origin.clone(),
            key: "gpu".into(),
            value: v.clone(),
            reason,
        })?;
    }
    let bad_number = |key: &str, n: f64, reason: String| ConfigError::BadValue {
        origin: origin.clone(),
        key: key.to_string(),
        value: n.to_string(),
        reason,
    };
    if let Some(n) = f.budget_kwh {
        check_number(n).map_err(|r| bad_number("budget_kwh", n, r))?;
    }
    for (key, map) in [
        ("weights", &f.weights),
        ("power_profiles", &f.power_profiles),
    ] {
        for (name, n) in map.iter().flatten() {
            check_number(*n).map_err(|r| bad_number(&format!("{key}.{name}"), *n, r))?;
        }
    }
    macro_rules! take {
        ($($field:ident),*) => { $( if let Some(v) = f.$field { config.$field = v; } )* };
    }
    take!(
        budget_path,
        metrics_path,
        period,
        budget_kwh,
        weights,
        units,
        power_profiles,
        rapl_root,
        cgroup_root,
        proc_root,
        unit_dirs,
        history_hours,
        enforce,
        enforce_cpu_quota
    );
    Ok(())
}

/// Apply one `key = value` from the environment or a flag.
pub fn apply_override(
    config: &mut Config,
    key: &str,
    value: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    let bad = |reason: String| ConfigError::BadValue {
        origin: origin.to_string(),
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };
    let v = value.trim();
    match key {
        "budget_path" => config.budget_path = non_empty_path(v).map_err(bad)?,
        "metrics_path" => config.metrics_path = non_empty_path(v).map_err(bad)?,
        "rapl_root" => config.rapl_root = non_empty_path(v).map_err(bad)?,
        "cgroup_root" => config.cgroup_root = non_empty_path(v).map_err(bad)?,
        "proc_root" => config.proc_root = non_empty_path(v).map_err(bad)?,
        "sample_interval" => config.sample_interval = parse_duration(v).map_err(bad)?,
        "sync_interval" => config.sync_interval = parse_duration(v).map_err(bad)?,
        "period" => {
            config.period = match v {
                "daily" => PeriodKind::Daily,
                "weekly" => PeriodKind::Weekly,
                "monthly" => PeriodKind::Monthly,
                _ => return Err(bad("expected daily, weekly or monthly".into())),
            }
        }
        "budget_kwh" => config.budget_kwh = parse_number(v).map_err(bad)?,
        "history_hours" => {
            config.history_hours = v
                .parse()
                .map_err(|_| bad("expected a whole number of hours".into()))?
        }
        "enforce_cpu_quota" => {
            config.enforce_cpu_quota = v
                .parse()
                .map_err(|_| bad("expected a whole percentage".into()))?
        }
        "enforce" => {
            config.enforce = match v {
                "true" | "yes" | "1" => true,
                "false" | "no" | "0" => false,
                _ => return Err(bad("expected true or false".into())),
            }
        }
        "gpu" => config.gpu = parse_gpu(v).map_err(bad)?,
        "units" => config.units = split_list(v).map(String::from).collect(),
        "unit_dirs" => config.unit_dirs = split_list(v).map(PathBuf::from).collect(),
        "weights" => config.weights = parse_map(v).map_err(bad)?,
        "power_profiles" => config.power_profiles = parse_map(v).map_err(bad)?,
        _ => {
            return Err(ConfigError::UnknownKey {
                origin: origin.to_string(),
                key: key.to_string(),
            });
        }
    }
    Ok(())
}

fn non_empty_path(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        return Err("empty path".into());
    }
    Ok(PathBuf::from(v))
}

fn parse_gpu(v: &str) -> Result<GpuSourceKind, String> {
    match v {
        "nvml" => Ok(GpuSourceKind::Nvml),
        "off" => Ok(GpuSourceKind::Off),
        _ => Err("expected nvml or off".into()),
    }
}

fn parse_number(v: &str) -> Result<f64, String> {
    let n = v
        .parse::<f64>()
        .map_err(|_| "expected a non-negative number".to_string())?;
    check_number(n)
}

/// The one check for every number setting (budget, weights, power profiles),
/// whether it came from the file, the environment or a flag.
fn check_number(n: f64) -> Result<f64, String> {
    if n.is_finite() && n >= 0.0 {
        Ok(n)
    } else {
        Err("expected a non-negative number".into())
    }
}

fn split_list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// `a=1,b=2.5` as used by the environment and flags for map-valued keys.
fn parse_map(v: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut out = BTreeMap::new();
    for item in split_list(v) {
        let (k, n) = item
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=NUMBER in {item:?}"))?;
        out.insert(k.trim().to_string(), parse_number(n.trim())?);
    }
    Ok(out)
}

/// The longest duration any setting accepts: one day. Longer sample or sync
/// intervals make no sense for accounting, and the bound keeps the arithmetic
/// far from overflow whatever number is written.
pub const MAX_DURATION: Duration = Duration::from_secs(86_400);

/// Durations carry units: `250ms`, `60s`, `5m`, `1h`, `1d`; a plain number is
/// seconds. Values must be above zero and at most [`MAX_DURATION`].
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| "expected a duration such as 60s, 5m or 250ms".to_string())?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => return Err(format!("unknown duration unit {other:?} (ms, s, m, h, d)")),
    };
    let secs = n * scale;
    if !secs.is_finite() || secs <= 0.0 {
        return Err("duration must be above zero".into());
    }
    if secs > MAX_DURATION.as_secs_f64() {
        return Err("duration must be at most 1d (86400s)".into());
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("duration out of range: {e}"))
}

/// The most hours of history `history_hours` may keep: one leap year.
pub const MAX_HISTORY_HOURS: u32 = 8784;

/// A systemd unit name the config may list in `units`: the characters systemd
/// allows, a `.service`, `.slice` or `.scope` suffix, no path separator and no
/// `..`, so a name can never walk out of the cgroup tree or the allocations.
pub fn valid_unit_name(u: &str) -> bool {
    let has_suffix = [".service", ".slice", ".scope"]
        .iter()
        .any(|s| u.len() > s.len() && u.ends_with(s));
    has_suffix
        && u.len() <= 255
        && !u.starts_with('.')
        && !u.contains("..")
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.@\\".contains(&b))
}

fn validate(c: &Config) -> Result<(), ConfigError> {
    if c.sample_interval < Duration::from_millis(50) {
        return Err(ConfigError::Invalid(
            "sample_interval must be at least 50ms".into(),
        ));
    }
    if c.sync_interval < c.sample_interval {
        return Err(ConfigError::Invalid(format!(
            "sync_interval ({:?}) must not be shorter than sample_interval ({:?})",
            c.sync_interval, c.sample_interval
        )));
    }
    for u in &c.units {
        if !valid_unit_name(u) {
            return Err(ConfigError::Invalid(format!(
                "units: {u:?} is not a unit name (letters, digits and :-_.@\\ only, \
                 ending in .service, .slice or .scope, no \"/\" or \"..\", at most 255 bytes)"
            )));
        }
    }
    if !(1..=MAX_HISTORY_HOURS).contains(&c.history_hours) {
        return Err(ConfigError::Invalid(format!(
            "history_hours {} must be 1..={MAX_HISTORY_HOURS} (one leap year)",
            c.history_hours
        )));
    }
    if let Err(reason) = check_number(c.budget_kwh) {
        return Err(ConfigError::Invalid(format!(
            "budget_kwh {}: {reason}",
            c.budget_kwh
        )));
    }
    if !(1..=100).contains(&c.enforce_cpu_quota) {
        return Err(ConfigError::Invalid(
            "enforce_cpu_quota must be 1..=100 (percent of one core)".into(),
        ));
    }
    for (name, w) in c.weights.iter().chain(c.power_profiles.iter()) {
        if !w.is_finite() || *w < 0.0 {
            return Err(ConfigError::Invalid(format!(
                "weight or power profile for {name} must be a non-negative number"
            )));
        }
    }
    if c.budget_path.file_name().is_none() {
        return Err(ConfigError::Invalid(format!(
            "budget_path {} names no file",
            c.budget_path.display()
        )));
    }
    Ok(())
}

/// Settings that work but that an operator should hear about.
fn warnings_for(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if c.budget_path.starts_with("/tmp") || c.budget_path.starts_with("/var/tmp") {
        out.push(format!(
            "budget_path {} is under /tmp or /var/tmp: the unit runs with PrivateTmp=, so \
             the daemon's copy is private to it, `status` run outside cannot see it and it \
             is lost when the unit stops; use /var/lib/dickbox/energy.json",
            c.budget_path.display()
        ));
    }
    if c.budget_kwh <= 0.0 {
        out.push("budget_kwh is 0: energy is measured but no budget warnings are possible".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dickbox.yml");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn durations_need_known_units() {
        let table = [
            ("60s", Some(60.0)),
            ("5m", Some(300.0)),
            ("250ms", Some(0.25)),
            ("2", Some(2.0)),
            ("1h", Some(3600.0)),
            ("1d", Some(86400.0)),
            ("24h", Some(86400.0)),
            ("1.5d", None),
            ("86401", None),
            ("99999999999999999d", None),
            ("18446744073709551616", None),
            ("1e400", None),
            ("5x", None),
            ("0s", None),
            ("", None),
            ("s", None),
        ];
        for (input, want) in table {
            let got = parse_duration(input).ok().map(|d| d.as_secs_f64());
            assert_eq!(got, want, "duration {input:?}");
        }
    }

    #[test]
    fn bad_numbers_in_the_file_are_refused_like_env_and_flags() {
        for v in [".nan", ".inf", "-.inf", "-3"] {
            let (_d, p) = write(&format!("energy:\n  budget_kwh: {v}\n"));
            let err = load(&p, true, &BTreeMap::new(), &[])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("budget_kwh") && err.contains("non-negative"),
                "{v}: {err}"
            );
            let (_d, p) = write(&format!("energy:\n  weights: {{web: {v}}}\n"));
            let err = load(&p, true, &BTreeMap::new(), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("weights.web"), "{v}: {err}");
        }
        for v in ["NaN", "inf", "-3"] {
            let env = BTreeMap::from([("DICKBOX_ENERGY_BUDGET_KWH".to_string(), v.to_string())]);
            assert!(load(Path::new("/nonexistent/x.yml"), false, &env, &[]).is_err());
            let set = [format!("budget_kwh={v}")];
            assert!(
                load(
                    Path::new("/nonexistent/x.yml"),
                    false,
                    &BTreeMap::new(),
                    &set
                )
                .is_err()
            );
        }
    }

    #[test]
    fn unit_names_and_history_hours_are_checked() {
        for (u, ok) in [
            ("batch.slice", true),
            ("nginx.service", true),
            ("dickbox-web@0123456789abcdef.service", true),
            ("../../x", false),
            ("../../x.service", false),
            ("a/b.service", false),
            ("x", false),
            (".service", false),
            ("a\0b.service", false),
        ] {
            assert_eq!(valid_unit_name(u), ok, "{u:?}");
        }
        let (_d, p) = write("energy:\n  units: [\"../../x\"]\n");
        let err = load(&p, true, &BTreeMap::new(), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("../../x"), "{err}");
        for h in ["0", "8785"] {
            let (_d, p) = write(&format!("energy:\n  history_hours: {h}\n"));
            let err = load(&p, true, &BTreeMap::new(), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("history_hours"), "{err}");
        }
    }

    #[test]
    fn reads_only_energy_section_and_ignores_others() {
        let (_d, p) = write(
            "deploy:\n  whatever: 1\nenergy:\n  budget_kwh: 120\n  sync_interval: 5m\n  \
             weights: {web-api: 2}\n",
        );
        let l = load(&p, true, &BTreeMap::new(), &[]).unwrap();
        assert_eq!(l.config.budget_kwh, 120.0);
        assert_eq!(l.config.sync_interval, Duration::from_secs(300));
        assert_eq!(l.config.weights["web-api"], 2.0);
        assert_eq!(l.file.as_deref(), Some(p.as_path()));
    }

    #[test]
    fn unknown_key_in_file_is_refused_with_its_name_and_line() {
        let (_d, p) = write("energy:\n  budget_kwh: 1\n  sync_intervall: 5m\n");
        let err = load(&p, true, &BTreeMap::new(), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sync_intervall"), "{err}");
        assert!(err.contains("line 3") || err.contains("3:"), "{err}");
    }

    #[test]
    fn env_then_flags_override_the_file() {
        let (_d, p) = write("energy:\n  budget_path: /var/lib/a.json\n  sync_interval: 5m\n");
        let env = BTreeMap::from([
            (
                "DICKBOX_ENERGY_BUDGET_PATH".to_string(),
                "/srv/b.json".to_string(),
            ),
            (
                "DICKBOX_ENERGY_SYNC_INTERVAL".to_string(),
                "30s".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ]);
        let l = load(&p, true, &env, &["sync_interval=10s".into()]).unwrap();
        assert_eq!(l.config.budget_path, PathBuf::from("/srv/b.json"));
        assert_eq!(l.config.sync_interval, Duration::from_secs(10));
        assert_eq!(l.overrides.len(), 3, "{:?}", l.overrides);
    }

    #[test]
    fn unknown_env_key_is_refused() {
        let env = BTreeMap::from([("DICKBOX_ENERGY_BUDGT".to_string(), "1".to_string())]);
        let err = load(Path::new("/nonexistent/x.yml"), false, &env, &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DICKBOX_ENERGY_BUDGT") && err.contains("budgt"),
            "{err}"
        );
    }

    #[test]
    fn missing_explicit_file_is_an_error_but_missing_default_is_not() {
        assert!(load(Path::new("/nonexistent/x.yml"), true, &BTreeMap::new(), &[]).is_err());
        let l = load(
            Path::new("/nonexistent/x.yml"),
            false,
            &BTreeMap::new(),
            &[],
        )
        .unwrap();
        assert!(l.file.is_none());
    }

    #[test]
    fn budget_under_tmp_gives_private_tmp_warning() {
        let env = BTreeMap::from([(
            "DICKBOX_ENERGY_BUDGET_PATH".to_string(),
            "/tmp/energy.json".to_string(),
        )]);
        let l = load(Path::new("/nonexistent/x.yml"), false, &env, &[]).unwrap();
        assert!(
            l.warnings.iter().any(|w| w.contains("PrivateTmp")),
            "{:?}",
            l.warnings
        );
    }
}
