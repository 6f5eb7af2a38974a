//! `capsule.yml`: the manifest every capsule starts with.
//!
//! Parsing happens in two steps. serde-saphyr reads the YAML into raw structs
//! whose fields carry their line numbers (and refuses unknown keys, duplicate
//! keys and wrong types itself, naming line and column); then `validate` turns
//! them into a [`Manifest`] whose fields are all checked types. An error always
//! names the file, the field and the line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::names::{CapsuleName, GpuId, ServiceName, SliceName};
use crate::quantity::{parse_duration, parse_size};

/// The manifest format this code writes. Older capsules without `format:` are
/// format 0 and are read the same way.
pub const FORMAT: u32 = 1;

/// The manifest's file name and its place as the archive's first member.
pub const MANIFEST_NAME: &str = "capsule.yml";

/// Largest manifest accepted, so a hostile capsule cannot make us buffer a
/// huge "manifest" in memory.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// A manifest refused: which file, which field, which line, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    pub file: String,
    pub line: Option<u64>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Listen {
    Unix,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceType {
    /// Healthy once its health check answers 2xx.
    Simple,
    /// Healthy once it sends `READY=1`.
    Notify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuMode {
    Mps,
    Exclusive,
    Default,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResourceLimits {
    /// Percent of one core (`CPUQuota=`).
    pub cpu_quota: Option<u32>,
    pub cpu_weight: Option<u32>,
    pub memory_max: Option<u64>,
    pub memory_high: Option<u64>,
    pub tasks_max: Option<u64>,
    pub io_weight: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuConfig {
    pub devices: Vec<GpuId>,
    pub mode: GpuMode,
    pub mps_percentage: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub name: ServiceName,
    pub slice: Option<SliceName>,
    pub listen: Listen,
    #[serde(rename = "type")]
    pub kind: ServiceType,
    pub resource_limits: ResourceLimits,
    pub gpu: Option<GpuConfig>,
    pub health_check_url: Option<String>,
    #[serde(serialize_with = "ser_duration")]
    pub startup_timeout: Duration,
    pub environment: BTreeMap<String, String>,
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", d.as_millis()))
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    pub format: u32,
    pub name: CapsuleName,
    pub version: semver::Version,
    pub entrypoint: String,
    pub dependencies: BTreeMap<String, String>,
    pub services: Vec<Service>,
    pub build_info: BTreeMap<String, String>,
    /// The old in-capsule signature field: kept for display, never trusted.
    pub legacy_signature: Option<String>,
    /// The old in-capsule public key: only compared, after verification, with
    /// the host key that verified.
    pub public_key: Option<String>,
}

pub const DEFAULT_ENTRYPOINT: &str = "bin/start.sh";
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_STARTUP_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format: Option<Spanned<u32>>,
    name: Spanned<String>,
    version: Spanned<String>,
    entrypoint: Option<Spanned<String>>,
    #[serde(default)]
    dependencies: BTreeMap<String, String>,
    services: Option<Spanned<Vec<RawService>>>,
    #[serde(default)]
    build_info: BTreeMap<String, String>,
    signature: Option<String>,
    public_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    slice: Option<Spanned<String>>,
    listen: Option<Spanned<Listen>>,
    #[serde(rename = "type")]
    kind: Option<Spanned<ServiceType>>,
    resource_limits: Option<RawLimits>,
    gpu_config: Option<RawGpu>,
    health_check_url: Option<Spanned<String>>,
    startup_timeout: Option<Spanned<String>>,
    #[serde(default)]
    environment: std::collections::HashMap<Spanned<String>, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    cpu_quota: Option<Spanned<u32>>,
    cpu_weight: Option<Spanned<u32>>,
    memory_max: Option<Spanned<String>>,
    memory_high: Option<Spanned<String>>,
    tasks_max: Option<Spanned<u64>>,
    io_weight: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGpu {
    #[serde(default = "yes")]
    enabled: bool,
    visible_devices: Option<Spanned<OneOrMany>>,
    mps_percentage: Option<Spanned<u32>>,
    mode: Option<Spanned<GpuMode>>,
}

fn yes() -> bool {
    true
}

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(
        &self,
        line: u64,
        field: impl Into<String>,
        message: impl fmt::Display,
    ) -> ManifestError {
        ManifestError {
            file: self.file.to_owned(),
            line: (line > 0).then_some(line),
            field: Some(field.into()),
            message: message.to_string(),
        }
    }
}

impl Manifest {
    /// Parses and validates manifest text. `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Manifest, ManifestError> {
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError {
                file: file.to_owned(),
                line: None,
                field: None,
                message: format!("manifest is larger than {MAX_MANIFEST_BYTES} bytes"),
            });
        }
        if text.trim().is_empty() {
            return Err(ManifestError {
                file: file.to_owned(),
                line: None,
                field: None,
                message: "manifest is empty".into(),
            });
        }
        let mut options = serde_saphyr::Options::default();
        options.with_snippet = false;
        let raw: RawManifest =
            serde_saphyr::from_str_with_options(text, options).map_err(|e| ManifestError {
                file: file.to_owned(),
                line: e.location().map(|l| l.line()),
                field: None,
                message: reader_message(&e.to_string()),
            })?;
        validate(raw, &Ctx { file })
    }

    /// Parses manifest bytes, refusing text that is not UTF-8.
    pub fn parse_bytes(bytes: &[u8], file: &str) -> Result<Manifest, ManifestError> {
        let text = std::str::from_utf8(bytes).map_err(|e| ManifestError {
            file: file.to_owned(),
            line: None,
            field: None,
            message: format!("not UTF-8 text: {e}"),
        })?;
        Self::parse(text, file)
    }

    /// Manifest text for a tree that has none, as the old build tool made.
    pub fn default_text(name: &CapsuleName, version: &semver::Version) -> String {
        format!(
            "format: {FORMAT}\nname: {name}\nversion: {version}\nentrypoint: {DEFAULT_ENTRYPOINT}\n\
             services:\n  - name: {name}\n"
        )
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name.as_str() == name)
    }
}

/// The YAML reader's message without advice meant for programmers using the
/// library (which option to set, which function to call instead).
fn reader_message(m: &str) -> String {
    m.replace(", set DuplicateKeyPolicy in Options if acceptable", "")
        .replace(
            "use from_str_multiple or from_str_multiple_with_options",
            "a manifest is one YAML document",
        )
}

/// The manifest text as it goes into the archive: unchanged when it already
/// says `format: 1`, else with `format: 1` added as its first key. Comments
/// and layout are kept so the capsule's manifest reads like the author's.
pub fn with_format_line(text: &str, manifest: &Manifest) -> String {
    if manifest.format == FORMAT
        && text
            .lines()
            .any(|l| l.trim_end() == format!("format: {FORMAT}"))
    {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut inserted = false;
    for line in text.split_inclusive('\n') {
        if !inserted && !line.starts_with('#') && !line.starts_with("---") && !line.starts_with('%')
        {
            out.push_str(&format!("format: {FORMAT}\n"));
            inserted = true;
        }
        out.push_str(line);
    }
    if !inserted {
        out.push_str(&format!("format: {FORMAT}\n"));
    }
    out
}

fn validate(raw: RawManifest, cx: &Ctx<'_>) -> Result<Manifest, ManifestError> {
    let format = match raw.format {
        None => 0,
        Some(f) if f.value <= FORMAT => f.value,
        Some(f) => {
            return Err(cx.err(
                f.referenced.line(),
                "format",
                format!(
                    "format {} is newer than this tool understands (up to {FORMAT})",
                    f.value
                ),
            ));
        }
    };
    let name = CapsuleName::parse(&raw.name.value)
        .map_err(|e| cx.err(raw.name.referenced.line(), "name", e))?;
    let version = semver::Version::parse(raw.version.value.trim()).map_err(|e| {
        cx.err(
            raw.version.referenced.line(),
            "version",
            format!(
                "{:?} is not a semantic version (like 2.4.1): {e}",
                raw.version.value
            ),
        )
    })?;
    let entrypoint = match raw.entrypoint {
        None => DEFAULT_ENTRYPOINT.to_owned(),
        Some(e) => {
            check_relative_path(&e.value)
                .map_err(|m| cx.err(e.referenced.line(), "entrypoint", m))?;
            // It becomes ExecStart=, where `$` and `%` are expanded and
            // spaces split words: keep it to characters that mean nothing there.
            if !e
                .value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+@/-".contains(&b))
            {
                return Err(cx.err(
                    e.referenced.line(),
                    "entrypoint",
                    format!(
                        "{:?} may contain only letters, digits and . _ + @ / - (it becomes ExecStart=)",
                        e.value
                    ),
                ));
            }
            e.value
        }
    };
    for (k, v) in &raw.dependencies {
        if k.chars().any(char::is_control) || v.chars().any(char::is_control) {
            return Err(cx.err(
                0,
                format!("dependencies.{k}"),
                "control characters are not allowed",
            ));
        }
    }

    let raw_services = match raw.services {
        Some(s) if s.value.is_empty() => {
            return Err(cx.err(
                s.referenced.line(),
                "services",
                "must list at least one service",
            ));
        }
        Some(s) => s.value,
        None => Vec::new(),
    };
    let mut services = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, rs) in raw_services.into_iter().enumerate() {
        let svc = validate_service(rs, i, cx)?;
        if !seen.insert(svc.name.clone()) {
            return Err(cx.err(
                0,
                format!("services[{i}].name"),
                format!("service {} is listed twice", svc.name),
            ));
        }
        services.push(svc);
    }
    if services.is_empty() {
        // An old manifest without `services` runs one service named after the
        // capsule, as the old tool's default manifest did.
        services.push(Service {
            name: ServiceName::parse(name.as_str()).expect("capsule names are service names"),
            slice: None,
            listen: Listen::Unix,
            kind: ServiceType::Simple,
            resource_limits: ResourceLimits::default(),
            gpu: None,
            health_check_url: None,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            environment: BTreeMap::new(),
        });
    }

    Ok(Manifest {
        format,
        name,
        version,
        entrypoint,
        dependencies: raw.dependencies,
        services,
        build_info: raw.build_info,
        legacy_signature: raw.signature,
        public_key: raw.public_key,
    })
}

fn validate_service(rs: RawService, i: usize, cx: &Ctx<'_>) -> Result<Service, ManifestError> {
    let f = |name: &str| format!("services[{i}].{name}");
    let name = ServiceName::parse(&rs.name.value)
        .map_err(|e| cx.err(rs.name.referenced.line(), f("name"), e))?;
    let slice = rs
        .slice
        .map(|s| SliceName::parse(&s.value).map_err(|e| cx.err(s.referenced.line(), f("slice"), e)))
        .transpose()?;
    let listen = rs.listen.map_or(Listen::Unix, |l| l.value);
    let kind = rs.kind.map_or(ServiceType::Simple, |k| k.value);

    let resource_limits = match rs.resource_limits {
        None => ResourceLimits::default(),
        Some(rl) => validate_limits(rl, i, cx)?,
    };
    let gpu = match rs.gpu_config {
        Some(g) if g.enabled => Some(validate_gpu(g, i, cx)?),
        _ => None,
    };

    let health_check_url = match rs.health_check_url {
        None => None,
        Some(h) => {
            let v = &h.value;
            if !v.starts_with('/')
                || v.len() > 1024
                || v.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(cx.err(
                    h.referenced.line(),
                    f("health_check_url"),
                    format!(
                        "{v:?} must be a path starting with '/' (asked of the new instance itself), \
                         without spaces, at most 1024 bytes"
                    ),
                ));
            }
            Some(h.value)
        }
    };
    let startup_timeout = match rs.startup_timeout {
        None => DEFAULT_STARTUP_TIMEOUT,
        Some(t) => {
            let d = parse_duration(&t.value)
                .map_err(|e| cx.err(t.referenced.line(), f("startup_timeout"), e))?;
            if d < Duration::from_secs(1) || d > MAX_STARTUP_TIMEOUT {
                return Err(cx.err(
                    t.referenced.line(),
                    f("startup_timeout"),
                    "must be between 1s and 1h",
                ));
            }
            d
        }
    };
    if kind == ServiceType::Simple && health_check_url.is_none() && listen == Listen::Tcp {
        // Nothing to check a TCP service by except its port answering: fine,
        // deploy then checks that the port accepts connections.
    }

    let mut environment = BTreeMap::new();
    let mut raw_env: Vec<_> = rs.environment.into_iter().collect();
    raw_env.sort_by(|a, b| a.0.value.cmp(&b.0.value));
    for (k, v) in raw_env {
        let line = k.referenced.line();
        let key = k.value;
        let field = f(&format!("environment.{key}"));
        let valid_name = key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            return Err(cx.err(line, field, "is not a valid environment variable name"));
        }
        if key.starts_with("DICKBOX_")
            || matches!(
                key.as_str(),
                "PORT"
                    | "CUDA_VISIBLE_DEVICES"
                    | "CUDA_MPS_PIPE_DIRECTORY"
                    | "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"
            )
        {
            return Err(cx.err(
                line,
                field,
                "is set by dickbox-deploy and cannot be overridden",
            ));
        }
        if v.chars().any(|c| c.is_control()) || v.len() > 4096 {
            return Err(cx.err(
                line,
                field,
                "value must be at most 4096 bytes without control characters",
            ));
        }
        environment.insert(key, v);
    }

    Ok(Service {
        name,
        slice,
        listen,
        kind,
        resource_limits,
        gpu,
        health_check_url,
        startup_timeout,
        environment,
    })
}

fn validate_limits(rl: RawLimits, i: usize, cx: &Ctx<'_>) -> Result<ResourceLimits, ManifestError> {
    let f = |name: &str| format!("services[{i}].resource_limits.{name}");
    let ranged = |v: Option<Spanned<u32>>, name: &str, lo: u32, hi: u32| {
        v.map(|v| {
            if v.value < lo || v.value > hi {
                Err(cx.err(
                    v.referenced.line(),
                    f(name),
                    format!("{} is out of range {lo}..={hi}", v.value),
                ))
            } else {
                Ok(v.value)
            }
        })
        .transpose()
    };
    let size = |v: Option<Spanned<String>>, name: &str| {
        v.map(|v| {
            let n = parse_size(&v.value).map_err(|e| cx.err(v.referenced.line(), f(name), e))?;
            if n < (1 << 20) {
                return Err(cx.err(v.referenced.line(), f(name), "must be at least 1M"));
            }
            Ok((n, v.referenced.line()))
        })
        .transpose()
    };
    // cpu_quota is percent of one core; 100 cores' worth is a generous cap.
    let cpu_quota = ranged(rl.cpu_quota, "cpu_quota", 1, 10_000)?;
    let cpu_weight = ranged(rl.cpu_weight, "cpu_weight", 1, 10_000)?;
    let io_weight = ranged(rl.io_weight, "io_weight", 1, 10_000)?;
    let memory_max = size(rl.memory_max, "memory_max")?;
    let memory_high = size(rl.memory_high, "memory_high")?;
    if let (Some((max, _)), Some((high, line))) = (memory_max, memory_high)
        && high > max
    {
        return Err(cx.err(line, f("memory_high"), "must not be above memory_max"));
    }
    let tasks_max = match rl.tasks_max {
        Some(t) if t.value == 0 => {
            return Err(cx.err(t.referenced.line(), f("tasks_max"), "must be at least 1"));
        }
        t => t.map(|t| t.value),
    };
    Ok(ResourceLimits {
        cpu_quota,
        cpu_weight,
        memory_max: memory_max.map(|m| m.0),
        memory_high: memory_high.map(|m| m.0),
        tasks_max,
        io_weight,
    })
}

fn validate_gpu(g: RawGpu, i: usize, cx: &Ctx<'_>) -> Result<GpuConfig, ManifestError> {
    let f = |name: &str| format!("services[{i}].gpu_config.{name}");
    let Some(vd) = g.visible_devices else {
        return Err(cx.err(
            0,
            f("visible_devices"),
            "is required when the GPU is enabled",
        ));
    };
    let line = vd.referenced.line();
    let names: Vec<String> = match vd.value {
        OneOrMany::One(s) => s.split(',').map(|p| p.trim().to_owned()).collect(),
        OneOrMany::Many(v) => v,
    };
    let mut devices = Vec::new();
    for n in names {
        let id = GpuId::parse(&n).map_err(|e| cx.err(line, f("visible_devices"), e))?;
        if devices.contains(&id) {
            return Err(cx.err(line, f("visible_devices"), format!("{id} is listed twice")));
        }
        devices.push(id);
    }
    if devices.is_empty() {
        return Err(cx.err(line, f("visible_devices"), "lists no GPU"));
    }
    let mode = g.mode.map_or(GpuMode::Default, |m| m.value);
    if mode == GpuMode::Mps && devices.len() != 1 {
        return Err(cx.err(
            line,
            f("visible_devices"),
            format!(
                "mode mps gives a service exactly one GPU, found {}",
                devices.len()
            ),
        ));
    }
    let mps_percentage = match g.mps_percentage {
        None => None,
        Some(p) if mode != GpuMode::Mps => {
            return Err(cx.err(
                p.referenced.line(),
                f("mps_percentage"),
                "is only meaningful with mode: mps",
            ));
        }
        Some(p) if p.value == 0 || p.value > 100 => {
            return Err(cx.err(
                p.referenced.line(),
                f("mps_percentage"),
                format!("{} is out of range 1..=100", p.value),
            ));
        }
        Some(p) => Some(p.value),
    };
    Ok(GpuConfig {
        devices,
        mode,
        mps_percentage,
    })
}

/// Checks a path inside a capsule: relative, no `..`, no empty or `.` parts
/// in the middle, no control characters.
pub fn check_relative_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("must not be empty".into());
    }
    if p.starts_with('/') {
        return Err(format!("{p:?} must be relative to the release folder"));
    }
    if p.chars().any(char::is_control) {
        return Err(format!("{p:?} contains control characters"));
    }
    if p.split('/').any(|c| c == ".." || c.is_empty() || c == ".") {
        return Err(format!("{p:?} must not contain '..', '.' or empty parts"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "\
format: 1
name: web-api
version: 2.4.1
entrypoint: bin/start.sh
dependencies: {python: \"3.11\", cuda: \"12.4\"}
services:
  - name: web-api
    slice: tori-server.slice
    listen: unix
    type: simple
    resource_limits: {cpu_quota: 200, cpu_weight: 100, memory_max: 4G, memory_high: 3G,
                      tasks_max: 512, io_weight: 100}
    gpu_config: {enabled: true, visible_devices: GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11,
                 mps_percentage: 50, mode: mps}
    health_check_url: /healthz
    startup_timeout: 30s
    environment: {LOG_LEVEL: info}
build_info: {timestamp: 2026-12-04T10:00:00Z, builder: ci, git_sha: 3f9c0d1}
signature: capsule.sig
public_key: RWQ
";

    #[test]
    fn parses_the_design_example() {
        let m = Manifest::parse(FULL, "capsule.yml").unwrap();
        assert_eq!(m.name.as_str(), "web-api");
        assert_eq!(m.version.to_string(), "2.4.1");
        let s = &m.services[0];
        assert_eq!(s.resource_limits.memory_max, Some(4 << 30));
        assert_eq!(s.resource_limits.cpu_quota, Some(200));
        let gpu = s.gpu.as_ref().unwrap();
        assert_eq!(gpu.mode, GpuMode::Mps);
        assert_eq!(gpu.mps_percentage, Some(50));
        assert_eq!(s.startup_timeout, Duration::from_secs(30));
        assert_eq!(s.environment["LOG_LEVEL"], "info");
        assert_eq!(m.build_info["git_sha"], "3f9c0d1");
    }

    #[test]
    fn old_manifest_without_format_or_services() {
        let m = Manifest::parse("name: old\nversion: 1.0.0\n", "capsule.yml").unwrap();
        assert_eq!(m.format, 0);
        assert_eq!(m.services.len(), 1);
        assert_eq!(m.services[0].name.as_str(), "old");
        assert_eq!(m.entrypoint, DEFAULT_ENTRYPOINT);
        let text = with_format_line("# c\nname: old\nversion: 1.0.0\n", &m);
        assert_eq!(text, "# c\nformat: 1\nname: old\nversion: 1.0.0\n");
        assert_eq!(Manifest::parse(&text, "x").unwrap().format, 1);
    }

    /// Each row: a change to the example, the field and line the error must
    /// name (line 0: only the text is checked), and a piece of the message.
    #[test]
    fn bad_field_values_name_field_and_line() {
        let cases: &[(&str, &str, &str, u64, &str)] = &[
            ("name: web-api", "name: Web_API", "name", 2, "lowercase"),
            (
                "version: 2.4.1",
                "version: 2.4",
                "version",
                3,
                "semantic version",
            ),
            (
                "entrypoint: bin/start.sh",
                "entrypoint: ../x",
                "entrypoint",
                4,
                "..",
            ),
            (
                "entrypoint: bin/start.sh",
                "entrypoint: /bin/sh",
                "entrypoint",
                4,
                "relative",
            ),
            (
                "entrypoint: bin/start.sh",
                "entrypoint: \"bin/st art$x.sh\"",
                "entrypoint",
                4,
                "ExecStart",
            ),
            (
                "slice: tori-server.slice",
                "slice: system.slice",
                "services[0].slice",
                8,
                "reserved",
            ),
            (
                "memory_max: 4G",
                "memory_max: 4X",
                "services[0].resource_limits.memory_max",
                11,
                "unit",
            ),
            (
                "memory_high: 3G",
                "memory_high: 5G",
                "services[0].resource_limits.memory_high",
                11,
                "memory_max",
            ),
            (
                "cpu_quota: 200",
                "cpu_quota: 0",
                "services[0].resource_limits.cpu_quota",
                11,
                "range",
            ),
            (
                "tasks_max: 512",
                "tasks_max: 0",
                "services[0].resource_limits.tasks_max",
                12,
                "at least 1",
            ),
            (
                "mps_percentage: 50",
                "mps_percentage: 150",
                "services[0].gpu_config.mps_percentage",
                14,
                "range",
            ),
            (
                "GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11,",
                "GPU-nope,",
                "services[0].gpu_config.visible_devices",
                13,
                "GPU UUID",
            ),
            (
                "GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11,",
                "[GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11, GPU-9ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11],",
                "services[0].gpu_config.visible_devices",
                13,
                "exactly one GPU",
            ),
            (
                "health_check_url: /healthz",
                "health_check_url: healthz",
                "services[0].health_check_url",
                15,
                "starting with '/'",
            ),
            (
                "startup_timeout: 30s",
                "startup_timeout: 30y",
                "services[0].startup_timeout",
                16,
                "unit",
            ),
            (
                "startup_timeout: 30s",
                "startup_timeout: 2h",
                "services[0].startup_timeout",
                16,
                "between",
            ),
            (
                "LOG_LEVEL: info",
                "DICKBOX_LISTEN: x",
                "services[0].environment.DICKBOX_LISTEN",
                17,
                "set by dickbox-deploy",
            ),
            (
                "LOG_LEVEL: info",
                "LOG-LEVEL: x",
                "services[0].environment.LOG-LEVEL",
                17,
                "environment variable name",
            ),
            ("format: 1", "format: 7", "format", 1, "newer"),
        ];
        for (from, to, field, line, msg) in cases {
            assert!(FULL.contains(from), "fixture lacks {from:?}");
            let text = FULL.replacen(from, to, 1);
            let err = Manifest::parse(&text, "capsule.yml").expect_err(to);
            assert_eq!(err.field.as_deref(), Some(*field), "case {to:?}: {err}");
            if *line > 0 {
                assert_eq!(err.line, Some(*line), "case {to:?}: {err}");
            }
            assert!(err.to_string().contains(msg), "case {to:?}: {err}");
            assert!(
                err.to_string().starts_with("capsule.yml:"),
                "case {to:?}: {err}"
            );
        }
    }

    #[test]
    fn yaml_errors_name_line_and_column() {
        let cases: &[(&str, &str)] = &[
            (
                "name: a\nversion: 1.0.0\nbogus: 1\n",
                "unknown field `bogus`",
            ),
            (
                "name: a\nname: b\nversion: 1.0.0\n",
                "duplicate mapping key: name",
            ),
            ("name: [\n", "line 1"),
            (
                "name: a\nversion: 1.0.0\nservices:\n  - name: a\n    listen: udp\n",
                "udp",
            ),
            ("", "manifest is empty"),
            ("  \n", "manifest is empty"),
        ];
        for (text, want) in cases {
            let err = Manifest::parse(text, "capsule.yml").expect_err(text);
            assert!(err.to_string().contains(want), "case {text:?}: {err}");
            assert!(
                !err.to_string().contains("Options"),
                "library advice leaked: {err}"
            );
        }
    }

    #[test]
    fn duplicate_services_and_mps_rules() {
        let text = "name: a\nversion: 1.0.0\nservices:\n  - name: a\n  - name: a\n";
        assert!(
            Manifest::parse(text, "m")
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let text = "name: a\nversion: 1.0.0\nservices:\n  - name: a\n    gpu_config: \
                    {visible_devices: [GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11], mode: exclusive, \
                    mps_percentage: 20}\n";
        assert!(
            Manifest::parse(text, "m")
                .unwrap_err()
                .to_string()
                .contains("mode: mps")
        );
    }
}
