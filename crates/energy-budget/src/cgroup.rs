//! Finding services by their cgroups and reading their CPU usage.
//!
//! A service is every `dickbox-<svc>@<release>.service` cgroup (found in any
//! slice) plus the units and slices named in the config. CPU usage comes from
//! `cpu.stat` `usage_usec` on cgroup v2 and from `cpuacct.usage` (ns) on v1;
//! the host's busy CPU time comes from `/proc/stat`. The GPUs of a service are
//! the UUIDs in `CUDA_VISIBLE_DEVICES` of its unit file (deploy writes it there
//! as an `Environment=` line).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which cgroup layout the counters come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Unified hierarchy: `<root>/…/cpu.stat`.
    V2(PathBuf),
    /// Legacy `cpuacct` hierarchy: `<root>/cpu,cpuacct/…/cpuacct.usage`.
    V1(PathBuf),
}

/// CPU usage of one unit's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitUsage {
    /// Unit name, e.g. `dickbox-web-api@3f9c0d1e5a7b2c44.service`.
    pub unit: String,
    /// The service it is accounted to: `web-api`, or the unit name for units
    /// named in the config.
    pub service: String,
    /// cgroup path relative to the hierarchy root; the key for counter baselines.
    pub cgroup: String,
    pub usage_usec: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup CPU accounting under {0} (neither cgroup.controllers nor cpuacct)")]
    NoHierarchy(PathBuf),
    #[error("read {path}: {source}")]
    ReadCounter {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse {path}: {what}")]
    ParseCounter { path: PathBuf, what: String },
}

/// Decide between v2 and v1 from what exists under `root`.
///
/// On a hybrid host (v1 controllers plus `cgroup2` at `unified/`) the unified
/// tree is used: systemd creates every unit's cgroup there, and its `cpu.stat`
/// has `usage_usec` without the cpu controller, whereas the v1 `cpuacct`
/// hierarchy only gets unit cgroups when it is mounted jointly with `cpu` and
/// the unit asked for CPU accounting.
pub fn detect(root: &Path) -> Result<Layout, CgroupError> {
    if root.join("cgroup.controllers").exists() {
        return Ok(Layout::V2(root.to_path_buf()));
    }
    let unified = root.join("unified");
    if unified.join("cgroup.controllers").exists() {
        return Ok(Layout::V2(unified));
    }
    for name in ["cpu,cpuacct", "cpuacct", "cpuacct,cpu"] {
        let p = root.join(name);
        if p.join("cpuacct.usage").exists() {
            return Ok(Layout::V1(p));
        }
    }
    Err(CgroupError::NoHierarchy(root.to_path_buf()))
}

/// The service a unit name belongs to, if it is a Dickbox instance unit.
pub fn dickbox_service_of(unit: &str) -> Option<&str> {
    let rest = unit.strip_prefix("dickbox-")?.strip_suffix(".service")?;
    let (svc, release) = rest.split_once('@')?;
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    (valid(svc) && valid(release)).then_some(svc)
}

/// A unit whose counter exists but could not be read or parsed.
#[derive(Debug)]
pub struct SkippedUnit {
    /// cgroup path relative to the hierarchy root, as in [`UnitUsage::cgroup`].
    pub cgroup: String,
    pub error: CgroupError,
}

/// The units read in one walk, and those skipped because their counter file
/// was unreadable or unparsable.
#[derive(Debug, Default)]
pub struct UnitScan {
    pub units: Vec<UnitUsage>,
    pub skipped: Vec<SkippedUnit>,
}

/// Walk the hierarchy and read the usage of every unit we account for.
///
/// Only slices are descended into (and the root), since services live in
/// slices; this keeps the walk small on hosts with many cgroups. A unit whose
/// counter vanished between listing and reading (it stopped) is left out; one
/// whose counter cannot be read or parsed is listed in
/// [`UnitScan::skipped`], so one bad file never stops the accounting of the
/// others or of the host.
pub fn read_units(layout: &Layout, extra_units: &[String]) -> UnitScan {
    let root = match layout {
        Layout::V2(p) | Layout::V1(p) => p,
    };
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let mut stack = vec![(root.clone(), String::new(), 0u32)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let service = if let Some(svc) = dickbox_service_of(&name) {
                Some(svc.to_string())
            } else if extra_units.iter().any(|u| u == &name) {
                Some(name.clone())
            } else {
                None
            };
            let path = entry.path();
            if let Some(service) = service {
                match read_usage(layout, &path) {
                    Ok(usage_usec) => out.push(UnitUsage {
                        unit: name.clone(),
                        service,
                        cgroup: child_rel.clone(),
                        usage_usec,
                    }),
                    Err(CgroupError::ReadCounter { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => skipped.push(SkippedUnit {
                        cgroup: child_rel.clone(),
                        error,
                    }),
                }
            }
            if name.ends_with(".slice") && depth < 8 {
                stack.push((path, child_rel, depth + 1));
            }
        }
    }
    out.sort_by(|a, b| a.cgroup.cmp(&b.cgroup));
    UnitScan {
        units: out,
        skipped,
    }
}

fn read_usage(layout: &Layout, dir: &Path) -> Result<u64, CgroupError> {
    match layout {
        Layout::V2(_) => {
            let path = dir.join("cpu.stat");
            let text = read(&path)?;
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .ok_or_else(|| CgroupError::ParseCounter {
                    path: path.clone(),
                    what: "no usage_usec line".into(),
                })?;
            parse(&path, line)
        }
        Layout::V1(_) => {
            let path = dir.join("cpuacct.usage");
            let ns = parse(&path, &read(&path)?)?;
            Ok(ns / 1000)
        }
    }
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::ReadCounter {
        path: path.to_path_buf(),
        source,
    })
}

fn parse(path: &Path, text: &str) -> Result<u64, CgroupError> {
    text.trim().parse().map_err(|_| CgroupError::ParseCounter {
        path: path.to_path_buf(),
        what: format!("{:?} is not a whole number", text.trim()),
    })
}

/// Busy CPU time of the whole host in µs from `<proc_root>/stat`: user, nice,
/// system, irq, softirq and steal of the `cpu` line (guest time is already in
/// user). Ticks are USER_HZ, which is 100 on every Linux architecture we ship.
pub fn host_busy_usec(proc_root: &Path) -> Result<u64, CgroupError> {
    let path = proc_root.join("stat");
    let text = read(&path)?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| CgroupError::ParseCounter {
            path: path.clone(),
            what: "no `cpu` line".into(),
        })?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| CgroupError::ParseCounter {
            path: path.clone(),
            what: "non-numeric field in `cpu` line".into(),
        })?;
    if fields.len() < 8 {
        return Err(CgroupError::ParseCounter {
            path,
            what: "`cpu` line has fewer than 8 fields".into(),
        });
    }
    // user nice system idle iowait irq softirq steal
    let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7];
    Ok(busy * 10_000)
}

/// Delta of a cgroup usage counter. A value below the last one means the
/// cgroup was recreated (the service restarted), so the usage since then is
/// the whole new value.
pub fn usage_delta(prev: u64, cur: u64) -> u64 {
    if cur >= prev { cur - prev } else { cur }
}

/// GPU UUIDs in `CUDA_VISIBLE_DEVICES` of a unit, looked up in its template
/// (`name@.service`) and the template's drop-ins, then the instance's file and
/// drop-ins (`name@release.service.d/*.conf`, where deploy writes them).
pub fn gpus_of_unit(unit_dirs: &[PathBuf], unit: &str) -> Vec<String> {
    let template = unit.split_once('@').map(|(head, tail)| {
        let suffix = tail.rsplit_once('.').map(|(_, s)| s).unwrap_or("service");
        format!("{head}@.{suffix}")
    });
    // Template first, instance second: later files override earlier ones, as
    // an instance's drop-ins (where deploy writes per-release settings)
    // override its template.
    let mut names: Vec<String> = template.into_iter().collect();
    names.push(unit.to_string());
    let mut found = None;
    for dir in unit_dirs {
        for name in &names {
            let mut files = vec![dir.join(name)];
            if let Ok(rd) = std::fs::read_dir(dir.join(format!("{name}.d"))) {
                let mut drop_ins: Vec<PathBuf> = rd
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                    .collect();
                drop_ins.sort();
                files.extend(drop_ins);
            }
            for f in files {
                if let Ok(text) = std::fs::read_to_string(&f)
                    && let Some(v) = cuda_devices_in(&text)
                {
                    // Later files override earlier ones, as systemd does.
                    found = Some(v);
                }
            }
        }
        if found.is_some() {
            break;
        }
    }
    found
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| s.starts_with("GPU-") || s.starts_with("MIG-"))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The value of `CUDA_VISIBLE_DEVICES` in `Environment=` lines of a unit file.
fn cuda_devices_in(text: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("Environment=") else {
            continue;
        };
        for word in split_env_words(rest) {
            if let Some(v) = word.strip_prefix("CUDA_VISIBLE_DEVICES=") {
                found = Some(v.to_string());
            }
        }
    }
    found
}

/// Split an `Environment=` value into assignments, honouring double and
/// single quotes as systemd does.
fn split_env_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    for c in s.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            (_, c) => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Group unit usages per service, for reports and tests.
pub fn by_service(units: &[UnitUsage]) -> BTreeMap<&str, Vec<&UnitUsage>> {
    let mut m: BTreeMap<&str, Vec<&UnitUsage>> = BTreeMap::new();
    for u in units {
        m.entry(u.service.as_str()).or_default().push(u);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dickbox_unit_names() {
        let table = [
            ("dickbox-web-api@3f9c0d1e5a7b2c44.service", Some("web-api")),
            ("dickbox-web@.service", None),
            ("dickbox-Web@abc.service", None),
            ("dickbox-web@abc.slice", None),
            ("nginx.service", None),
        ];
        for (unit, want) in table {
            assert_eq!(dickbox_service_of(unit), want, "{unit}");
        }
    }

    #[test]
    fn layout_detection_prefers_unified_tree() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        assert!(detect(r).is_err());
        std::fs::create_dir_all(r.join("cpuacct")).unwrap();
        std::fs::write(r.join("cpuacct/cpuacct.usage"), "0\n").unwrap();
        assert_eq!(detect(r).unwrap(), Layout::V1(r.join("cpuacct")));
        std::fs::create_dir_all(r.join("unified")).unwrap();
        std::fs::write(r.join("unified/cgroup.controllers"), "\n").unwrap();
        assert_eq!(detect(r).unwrap(), Layout::V2(r.join("unified")));
        std::fs::write(r.join("cgroup.controllers"), "cpu\n").unwrap();
        assert_eq!(detect(r).unwrap(), Layout::V2(r.to_path_buf()));
    }

    #[test]
    fn restarted_cgroup_counts_its_new_usage() {
        assert_eq!(usage_delta(100, 150), 50);
        assert_eq!(usage_delta(1_000, 30), 30);
    }

    #[test]
    fn instance_drop_in_overrides_template() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        std::fs::write(
            dir.join("dickbox-web@.service"),
            "[Service]\nEnvironment=CUDA_VISIBLE_DEVICES=GPU-old\n",
        )
        .unwrap();
        let unit = "dickbox-web@3f9c0d1e5a7b2c44.service";
        assert_eq!(gpus_of_unit(&[dir.to_path_buf()], unit), ["GPU-old"]);
        std::fs::create_dir(dir.join(format!("{unit}.d"))).unwrap();
        std::fs::write(
            dir.join(format!("{unit}.d/release.conf")),
            "[Service]\nEnvironment=CUDA_VISIBLE_DEVICES=GPU-a,MIG-b\n",
        )
        .unwrap();
        assert_eq!(gpus_of_unit(&[dir.to_path_buf()], unit), ["GPU-a", "MIG-b"]);
        assert!(gpus_of_unit(&[dir.to_path_buf()], "dickbox-api@1.service").is_empty());
    }

    #[test]
    fn cuda_devices_from_environment_lines() {
        let text = "[Service]\nEnvironment=A=1 \"CUDA_VISIBLE_DEVICES=GPU-a,GPU-b\"\n";
        assert_eq!(cuda_devices_in(text).as_deref(), Some("GPU-a,GPU-b"));
        assert_eq!(cuda_devices_in("Environment=X=1\n"), None);
    }
}
