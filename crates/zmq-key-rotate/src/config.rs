//! The `zmq` section of `/etc/dickbox/dickbox.yml`, environment overrides and
//! flags, resolved into one [`Config`].
//!
//! Precedence: built-in defaults, then the file, then `DICKBOX_ZMQ_<KEY>`, then
//! flags. Unknown keys in the `zmq` section are refused with their line (other
//! sections belong to other programs and are not looked at). Unknown
//! `DICKBOX_ZMQ_*` variables are refused too, so a typo cannot silently leave a
//! default in place. Every root path is configurable so tests use temp folders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::store::Identity;

/// Where the config file is looked for when neither `--config` nor
/// `DICKBOX_CONFIG` names one.
pub const DEFAULT_CONFIG: &str = "/etc/dickbox/dickbox.yml";

/// The longest `grace` or `retention` accepted: 100 years (36 500 days).
pub const MAX_PERIOD: Duration = Duration::from_secs(36_500 * 86_400);

/// The longest path a unix socket can bind (108 bytes of sun_path less NUL).
pub const MAX_SOCKET_PATH: usize = 107;

fn valid_group_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 32
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Every key of the `zmq` section, in the order `check-config` prints them.
pub const KEYS: &[&str] = &[
    "keys_dir",
    "identities",
    "bus_identity",
    "grace",
    "retention",
    "runtime_dir",
    "events_socket",
    "metrics_dir",
    "bus_tcp_address",
    "bus_tcp_ports",
    "watch_interval",
    "announce_interval",
    "key_group",
];

#[derive(Debug, Deserialize, Default)]
struct FileTop {
    #[serde(default)]
    zmq: Option<Section>,
}

/// The file's `zmq` section as written; every key optional.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Section {
    keys_dir: Option<String>,
    identities: Option<Vec<String>>,
    bus_identity: Option<String>,
    grace: Option<String>,
    retention: Option<String>,
    runtime_dir: Option<String>,
    events_socket: Option<String>,
    metrics_dir: Option<String>,
    bus_tcp_address: Option<String>,
    bus_tcp_ports: Option<Vec<u16>>,
    watch_interval: Option<String>,
    announce_interval: Option<String>,
    key_group: Option<String>,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{origin}: zmq.{key}: {message}")]
    Value {
        origin: String,
        key: String,
        message: String,
    },
    #[error("{var} is not a zmq setting (known keys: {known})")]
    UnknownEnv { var: String, known: String },
}

/// Two alternating TCP port pairs: generation parity picks one pair, so a new
/// generation never has to bind the ports its predecessor still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPorts {
    pub address: String,
    /// `[(pub, sub), (pub, sub)]`.
    pub pairs: [(u16, u16); 2],
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub keys_dir: PathBuf,
    pub identities: Vec<Identity>,
    pub bus_identity: Identity,
    pub grace: Duration,
    pub retention: Duration,
    pub runtime_dir: PathBuf,
    pub events_socket: PathBuf,
    pub metrics_dir: PathBuf,
    pub bus_tcp: Option<TcpPorts>,
    pub watch_interval: Duration,
    /// How often the bus repeats the current rotation events.
    pub announce_interval: Duration,
    pub key_group: Option<String>,
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    /// `key=value (origin)` for every override applied over the file.
    pub overrides: Vec<String>,
}

/// Where the config file comes from.
#[derive(Debug, Clone)]
pub enum FileChoice {
    /// Named by `--config` or `DICKBOX_CONFIG`: it must exist.
    Explicit(PathBuf),
    /// The default path: a missing file means built-in defaults.
    Default(PathBuf),
}

impl FileChoice {
    /// `--config` wins over `DICKBOX_CONFIG`, which wins over the default.
    pub fn pick(flag: Option<PathBuf>, env: Option<String>) -> Self {
        match (flag, env) {
            (Some(p), _) => Self::Explicit(p),
            (None, Some(e)) if !e.is_empty() => Self::Explicit(PathBuf::from(e)),
            _ => Self::Default(PathBuf::from(DEFAULT_CONFIG)),
        }
    }
}

/// Raw string values before validation, key → (value, origin).
type Raw = BTreeMap<String, (String, String)>;

/// Loads the file, applies `env` (all variables, filtered here) and then
/// `flags` (`key`, `value`), and validates everything.
pub fn load(
    file: &FileChoice,
    env: &[(String, String)],
    flags: &[(&str, String)],
) -> Result<Config, ConfigError> {
    let (path, must_exist) = match file {
        FileChoice::Explicit(p) => (p.clone(), true),
        FileChoice::Default(p) => (p.clone(), false),
    };
    let mut raw = Raw::new();
    let mut used_file = None;
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            read_section(&path, &text, &mut raw)?;
            used_file = Some(path.clone());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {}
        Err(source) => return Err(ConfigError::Read { path, source }),
    }

    let mut overrides = Vec::new();
    for (var, value) in env {
        let Some(key) = var.strip_prefix("DICKBOX_ZMQ_") else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        if !KEYS.contains(&key.as_str()) {
            return Err(ConfigError::UnknownEnv {
                var: var.clone(),
                known: KEYS.join(", "),
            });
        }
        overrides.push(format!("{key}={value} ({var})"));
        raw.insert(key, (value.clone(), var.clone()));
    }
    for (key, value) in flags {
        let flag = format!("--{}", key.replace('_', "-"));
        overrides.push(format!("{key}={value} ({flag})"));
        raw.insert((*key).to_string(), (value.clone(), flag));
    }

    let mut config = resolve(&raw)?;
    config.file = used_file;
    config.overrides = overrides;
    Ok(config)
}

fn read_section(path: &Path, text: &str, raw: &mut Raw) -> Result<(), ConfigError> {
    let top: FileTop = serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let Some(s) = top.zmq else {
        return Ok(());
    };
    let origin = path.display().to_string();
    let mut put = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            raw.insert(key.to_string(), (v, origin.clone()));
        }
    };
    put("keys_dir", s.keys_dir);
    put("identities", s.identities.map(|v| v.join(",")));
    put("bus_identity", s.bus_identity);
    put("grace", s.grace);
    put("retention", s.retention);
    put("runtime_dir", s.runtime_dir);
    put("events_socket", s.events_socket);
    put("metrics_dir", s.metrics_dir);
    put("bus_tcp_address", s.bus_tcp_address);
    put(
        "bus_tcp_ports",
        s.bus_tcp_ports.map(|v| {
            v.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(",")
        }),
    );
    put("watch_interval", s.watch_interval);
    put("announce_interval", s.announce_interval);
    put("key_group", s.key_group);
    Ok(())
}

/// Parses a duration that carries a unit (`90s`, `5m`, `24h`, `30d`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("{t:?} has no unit; write e.g. {t}s, {t}m or {t}h"));
    }
    humantime::parse_duration(t).map_err(|e| format!("{t:?} is not a duration: {e}"))
}

fn resolve(raw: &Raw) -> Result<Config, ConfigError> {
    let get = |key: &str| raw.get(key);
    let bad = |key: &str, message: String| {
        let origin = raw
            .get(key)
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| "default".into());
        ConfigError::Value {
            origin,
            key: key.to_string(),
            message,
        }
    };
    let path = |key: &str, default: &str| -> Result<PathBuf, ConfigError> {
        let v = get(key).map(|(v, _)| v.as_str()).unwrap_or(default);
        if !v.starts_with('/') {
            return Err(bad(key, format!("{v:?} must be an absolute path")));
        }
        Ok(PathBuf::from(v))
    };
    let duration = |key: &str, default: &str| -> Result<Duration, ConfigError> {
        let v = get(key).map(|(v, _)| v.as_str()).unwrap_or(default);
        parse_duration(v).map_err(|m| bad(key, m))
    };
    let identity = |text: &str, key: &str| -> Result<Identity, ConfigError> {
        Identity::parse(text).map_err(|e| bad(key, e.to_string()))
    };

    let keys_dir = path("keys_dir", "/etc/dickbox/zmq")?;
    let runtime_dir = path("runtime_dir", "/run/dickbox")?;
    let events_socket = match get("events_socket") {
        Some(_) => path("events_socket", "")?,
        None => runtime_dir.join("zmq-events.sock"),
    };
    let metrics_dir = path("metrics_dir", "/var/lib/prometheus/node-exporter")?;

    let identities = match get("identities") {
        Some((v, _)) => {
            let list: Vec<&str> = v.split(',').map(str::trim).collect();
            if list.iter().all(|s| s.is_empty()) {
                return Err(bad("identities", "the list is empty".into()));
            }
            let mut out: Vec<Identity> = Vec::new();
            for s in list {
                let id = identity(s, "identities")?;
                if out.contains(&id) {
                    return Err(bad("identities", format!("{s:?} is listed twice")));
                }
                out.push(id);
            }
            out
        }
        None => vec![identity("bus", "identities")?],
    };
    let bus_identity = identity(
        get("bus_identity")
            .map(|(v, _)| v.as_str())
            .unwrap_or("bus"),
        "bus_identity",
    )?;

    let grace = duration("grace", "24h")?;
    let retention = duration("retention", "30d")?;
    let watch_interval = duration("watch_interval", "1s")?;
    if watch_interval < Duration::from_millis(10) || watch_interval > Duration::from_secs(60) {
        return Err(bad("watch_interval", "must be between 10ms and 60s".into()));
    }
    let announce_interval = duration("announce_interval", "30s")?;
    if announce_interval < Duration::from_millis(100)
        || announce_interval > Duration::from_secs(3600)
    {
        return Err(bad(
            "announce_interval",
            "must be between 100ms and 1h".into(),
        ));
    }
    // Every date the tool writes is now + one of these; past year 9999 it
    // cannot be written as RFC 3339, so a century is the ceiling.
    for (key, value) in [("grace", grace), ("retention", retention)] {
        if value > MAX_PERIOD {
            return Err(bad(
                key,
                format!(
                    "{} is longer than the limit of 100 years",
                    humantime::format_duration(value)
                ),
            ));
        }
    }
    if grace < Duration::from_secs(1) {
        return Err(bad(
            "grace",
            "must be at least 1s (with no grace, clients on the previous key are cut at once)"
                .into(),
        ));
    }
    if retention < grace {
        return Err(bad(
            "retention",
            "must not be shorter than grace (a key in its grace period is still in use)".into(),
        ));
    }

    let bus_tcp = match get("bus_tcp_ports") {
        None => None,
        Some((v, _)) => {
            let ports: Result<Vec<u16>, _> = v.split(',').map(|p| p.trim().parse()).collect();
            let ports =
                ports.map_err(|_| bad("bus_tcp_ports", format!("{v:?}: not port numbers")))?;
            let [a, b, c, d] = ports[..] else {
                return Err(bad(
                    "bus_tcp_ports",
                    "needs exactly four ports: pub and sub of pair A, then of pair B".into(),
                ));
            };
            let mut sorted = ports.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != 4 || sorted.contains(&0) {
                return Err(bad(
                    "bus_tcp_ports",
                    "ports must be four distinct non-zero numbers".into(),
                ));
            }
            let address = get("bus_tcp_address")
                .map(|(v, _)| v.clone())
                .unwrap_or_else(|| "127.0.0.1".into());
            if address.parse::<std::net::IpAddr>().is_err() {
                return Err(bad(
                    "bus_tcp_address",
                    format!("{address:?} is not an IP address"),
                ));
            }
            Some(TcpPorts {
                address,
                pairs: [(a, b), (c, d)],
            })
        }
    };
    if bus_tcp.is_none() && get("bus_tcp_address").is_some() {
        return Err(bad("bus_tcp_address", "set without bus_tcp_ports".into()));
    }

    // A unix socket path holds at most 107 bytes (sun_path is 108 with the
    // final NUL). The bus's own sockets live under
    // `<runtime_dir>/bus/<generation>/`; room is kept for 10-digit numbers.
    let socket_len = events_socket.as_os_str().len();
    if socket_len > MAX_SOCKET_PATH {
        return Err(bad(
            "events_socket",
            format!(
                "{} is {socket_len} bytes; a unix socket path holds at most {MAX_SOCKET_PATH}",
                events_socket.display()
            ),
        ));
    }
    let longest_bus = runtime_dir.join("bus/0000000000/pub.sock");
    if longest_bus.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(bad(
            "runtime_dir",
            format!(
                "{} is too long: the bus sockets under it ({}) must fit {MAX_SOCKET_PATH} bytes",
                runtime_dir.display(),
                longest_bus.display()
            ),
        ));
    }

    let key_group = match get("key_group") {
        Some((v, _)) if v.is_empty() => None,
        Some((v, _)) if !valid_group_name(v) => {
            return Err(bad(
                "key_group",
                format!("{v:?} is not a group name: use [a-z_][a-z0-9_-]*, at most 32 characters"),
            ));
        }
        Some((v, _)) => Some(v.clone()),
        None => Some("dickbox-svc".into()),
    };

    Ok(Config {
        keys_dir,
        identities,
        bus_identity,
        grace,
        retention,
        runtime_dir,
        events_socket,
        metrics_dir,
        bus_tcp,
        watch_interval,
        announce_interval,
        key_group,
        file: None,
        overrides: Vec::new(),
    })
}

impl Config {
    /// `key = value` lines for `check-config`.
    pub fn describe(&self) -> Vec<(String, String)> {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        vec![
            ("keys_dir".into(), self.keys_dir.display().to_string()),
            (
                "identities".into(),
                self.identities
                    .iter()
                    .map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("bus_identity".into(), self.bus_identity.as_str().into()),
            ("grace".into(), d(self.grace)),
            ("retention".into(), d(self.retention)),
            ("runtime_dir".into(), self.runtime_dir.display().to_string()),
            (
                "events_socket".into(),
                self.events_socket.display().to_string(),
            ),
            ("metrics_dir".into(), self.metrics_dir.display().to_string()),
            (
                "bus_tcp".into(),
                match &self.bus_tcp {
                    None => "off".into(),
                    Some(t) => format!("{} {:?}", t.address, t.pairs),
                },
            ),
            ("watch_interval".into(), d(self.watch_interval)),
            ("announce_interval".into(), d(self.announce_interval)),
            (
                "key_group".into(),
                self.key_group.clone().unwrap_or_else(|| "(none)".into()),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dickbox.yml");
        std::fs::write(&path, text).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load(&FileChoice::Explicit(path), &env, &[])
    }

    #[test]
    fn zero_grace_long_socket_paths_and_bad_group_names_are_refused() {
        let e = load_text("zmq:\n  grace: 0s\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("zmq.grace") && e.contains("at least 1s"), "{e}");
        let long = format!("/{}", "s".repeat(107));
        let e = load_text(&format!("zmq:\n  events_socket: {long}\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("zmq.events_socket") && e.contains("108 bytes"),
            "{e}"
        );
        let ok = format!("/{}", "s".repeat(106));
        assert!(load_text(&format!("zmq:\n  events_socket: {ok}\n"), &[]).is_ok());
        let long_run = format!("/{}", "r".repeat(90));
        let e = load_text(
            &format!("zmq:\n  runtime_dir: {long_run}\n  events_socket: /run/e.sock\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("zmq.runtime_dir"), "{e}");
        let e = load_text("zmq:\n  key_group: no such group\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("zmq.key_group") && e.contains("not a group name"),
            "{e}"
        );
    }

    #[test]
    fn periods_longer_than_a_century_are_refused() {
        let env = [
            ("DICKBOX_ZMQ_GRACE", "100000000d"),
            ("DICKBOX_ZMQ_RETENTION", "100000000d"),
        ];
        let e = load_text("", &env).unwrap_err().to_string();
        assert!(e.contains("zmq.grace") && e.contains("100 years"), "{e}");
        let e = load_text("", &[("DICKBOX_ZMQ_RETENTION", "36501d")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("zmq.retention"), "{e}");
        let c = load_text(
            "",
            &[
                ("DICKBOX_ZMQ_GRACE", "36500d"),
                ("DICKBOX_ZMQ_RETENTION", "36500d"),
            ],
        )
        .unwrap();
        assert_eq!(c.retention, MAX_PERIOD);
    }

    #[test]
    fn defaults_apply_without_a_file() {
        let c = load(
            &FileChoice::Default("/nonexistent/dickbox.yml".into()),
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(c.keys_dir, PathBuf::from("/etc/dickbox/zmq"));
        assert_eq!(
            c.events_socket,
            PathBuf::from("/run/dickbox/zmq-events.sock")
        );
        assert_eq!(c.identities.len(), 1);
        assert!(c.file.is_none());
    }

    #[test]
    fn other_sections_are_ignored_and_env_then_flags_override() {
        let text = "deploy:\n  whatever: 1\nzmq:\n  keys_dir: /k\n  grace: 2h\n";
        let c = load_text(text, &[("DICKBOX_ZMQ_GRACE", "3h"), ("HOME", "/root")]).unwrap();
        assert_eq!(c.keys_dir, PathBuf::from("/k"));
        assert_eq!(c.grace, Duration::from_secs(3 * 3600));
        assert_eq!(
            c.overrides,
            vec!["grace=3h (DICKBOX_ZMQ_GRACE)".to_string()]
        );
    }

    #[test]
    fn refuses_bad_settings_naming_key_and_origin() {
        let cases = [
            (
                "zmq:\n  keys_dir: /k\n  colour: red\n",
                "colour",
                "unknown key",
            ),
            ("zmq:\n  grace: 60\n", "no unit", "bare number"),
            ("zmq:\n  grace: soon\n", "zmq.grace", "not a duration"),
            ("zmq:\n  keys_dir: relative\n", "absolute", "relative path"),
            (
                "zmq:\n  identities: [Bus]\n",
                "zmq.identities",
                "bad identity",
            ),
            (
                "zmq:\n  identities: [a, a]\n",
                "twice",
                "duplicate identity",
            ),
            (
                "zmq:\n  bus_tcp_ports: [1, 2]\n",
                "exactly four",
                "port count",
            ),
            (
                "zmq:\n  grace: 2d\n  retention: 1d\n",
                "shorter than grace",
                "retention",
            ),
        ];
        for (text, want, what) in cases {
            let err = load_text(text, &[]).unwrap_err().to_string();
            assert!(err.contains(want), "case {what}: {err}");
        }
    }

    #[test]
    fn unknown_key_error_names_the_line() {
        let err = load_text("zmq:\n  keys_dir: /k\n  colour: red\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour") && err.contains('3'), "{err}");
    }

    #[test]
    fn refuses_unknown_environment_override() {
        let err = load_text("", &[("DICKBOX_ZMQ_KEYSDIR", "/x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("DICKBOX_ZMQ_KEYSDIR"), "{err}");
    }
}
