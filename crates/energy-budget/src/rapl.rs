//! CPU package and DRAM energy from the powercap RAPL files.
//!
//! Zones are the `intel-rapl:N` packages and their `intel-rapl:N:M` sub-zones
//! named `dram` (AMD exposes the same names). Package energy already contains
//! the `core` and `uncore` sub-zones, and `psys` contains the packages, so
//! those are skipped to avoid counting the same joules twice; the
//! `intel-rapl-mmio` tree mirrors the packages and is skipped too.
//!
//! Reading never turns a failure into 0 W: a zone that cannot be read is
//! reported with the reason (since Linux 5.10 `energy_uj` is readable by root
//! only), and the sample says CPU energy is unavailable.

use std::path::{Path, PathBuf};

/// One reading of one zone's counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneReading {
    /// The zone folder name, e.g. `intel-rapl:0` or `intel-rapl:0:2`.
    pub zone: String,
    /// `name` of the zone: `package-0`, `dram`, …
    pub name: String,
    pub energy_uj: u64,
    pub max_energy_range_uj: u64,
}

/// What reading all zones gave.
#[derive(Debug, Clone, PartialEq)]
pub enum RaplReading {
    /// Every relevant zone was read.
    Ok(Vec<ZoneReading>),
    /// CPU energy cannot be measured; the text says why, naming the file.
    Unavailable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum RaplError {
    #[error("read {path}: {source}{hint}")]
    ReadZoneFile {
        path: PathBuf,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("parse {path}: {text:?} is not a whole number")]
    ParseZoneFile { path: PathBuf, text: String },
}

/// Read all package and DRAM zones below `root` (normally `/sys/class/powercap`).
pub fn read_zones(root: &Path) -> RaplReading {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) => {
            return RaplReading::Unavailable(format!(
                "no RAPL powercap folder {}: {e}",
                root.display()
            ));
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_rapl_zone(n))
        .collect();
    names.sort();

    let mut zones = Vec::new();
    for zone in names {
        let dir = root.join(&zone);
        let name = match read_text(&dir.join("name")) {
            Ok(n) => n,
            Err(e) => return RaplReading::Unavailable(e.to_string()),
        };
        let is_package = zone.matches(':').count() == 1;
        if !(is_package && name.starts_with("package")) && name != "dram" {
            continue;
        }
        let energy = read_u64(&dir.join("energy_uj"));
        let max = read_u64(&dir.join("max_energy_range_uj"));
        match (energy, max) {
            (Ok(energy_uj), Ok(max_energy_range_uj))
                if max_energy_range_uj > 0 && energy_uj > max_energy_range_uj =>
            {
                return RaplReading::Unavailable(format!(
                    "{}: {energy_uj} is above max_energy_range_uj {max_energy_range_uj}; \
                     reading refused",
                    dir.join("energy_uj").display()
                ));
            }
            (Ok(energy_uj), Ok(max_energy_range_uj)) => zones.push(ZoneReading {
                zone,
                name,
                energy_uj,
                max_energy_range_uj,
            }),
            (Err(e), _) | (_, Err(e)) => return RaplReading::Unavailable(e.to_string()),
        }
    }
    if zones.is_empty() {
        return RaplReading::Unavailable(format!("no RAPL package zone under {}", root.display()));
    }
    RaplReading::Ok(zones)
}

/// `intel-rapl:N` or `intel-rapl:N:M`; not `intel-rapl` itself nor the mmio tree.
fn is_rapl_zone(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("intel-rapl:") else {
        return false;
    };
    !rest.is_empty()
        && rest.split(':').count() <= 2
        && rest
            .split(':')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn read_text(path: &Path) -> Result<String, RaplError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| {
            let hint = if source.kind() == std::io::ErrorKind::PermissionDenied {
                " (energy_uj is readable by root only since Linux 5.10; see the unit file)"
            } else {
                ""
            };
            RaplError::ReadZoneFile {
                path: path.to_path_buf(),
                source,
                hint,
            }
        })
}

fn read_u64(path: &Path) -> Result<u64, RaplError> {
    let text = read_text(path)?;
    text.parse().map_err(|_| RaplError::ParseZoneFile {
        path: path.to_path_buf(),
        text,
    })
}

/// The highest average power one zone is believed to draw, in watts. A
/// counter change implying more than this between two samples is not energy:
/// a counter that went backwards that far is a reset (not a wrap), and a
/// forward jump that far is a bogus reading.
pub const MAX_ZONE_WATTS: f64 = 10_000.0;

/// How one zone's counter moved between two samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    /// Normal progress, or one wrap past `max_energy_range_uj`.
    Counted(u64),
    /// The counter went backwards further than a wrap can explain: it was
    /// reset, and the new value is counted from 0.
    Reset(u64),
    /// The counter moved forward faster than [`MAX_ZONE_WATTS`]: nothing is
    /// counted for this interval.
    Implausible,
}

/// Energy in µJ between two readings of one counter that wraps after
/// `max_energy_range_uj`, `elapsed_s` seconds apart.
///
/// The kernel's counter runs from 0 up to `max_energy_range_uj` and starts over;
/// a value lower than the last one means it wrapped once, unless the energy
/// that wrap implies is above [`MAX_ZONE_WATTS`] × `elapsed_s`: then the
/// counter was reset and only the new value counts. Two wraps between samples
/// cannot be told apart from one; at the largest package ranges (~262 kJ) and
/// 250 W that needs over 17 minutes between samples, far above any sample
/// interval the config allows to be useful.
pub fn delta_uj(prev: u64, cur: u64, max_energy_range_uj: u64, elapsed_s: f64) -> Delta {
    let ceiling_uj = MAX_ZONE_WATTS * elapsed_s.max(0.0) * 1e6;
    let plausible = |uj: u64| (uj as f64) <= ceiling_uj;
    if cur >= prev {
        let d = cur - prev;
        if plausible(d) {
            Delta::Counted(d)
        } else {
            Delta::Implausible
        }
    } else {
        let wrapped = max_energy_range_uj.saturating_sub(prev).saturating_add(cur);
        if plausible(wrapped) {
            Delta::Counted(wrapped)
        } else if plausible(cur) {
            Delta::Reset(cur)
        } else {
            Delta::Reset(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_counts_the_distance_to_the_top_plus_the_new_value() {
        assert_eq!(delta_uj(100, 250, 1000, 1.0), Delta::Counted(150));
        assert_eq!(delta_uj(900, 50, 1000, 1.0), Delta::Counted(150));
        assert_eq!(delta_uj(5, 5, 1000, 1.0), Delta::Counted(0));
    }

    #[test]
    fn impossible_wrap_is_a_reset_and_impossible_jump_counts_nothing() {
        // Issue #7: 5,000,000 -> 1,000,000 µJ in 100 ms with a 262 kJ range
        // would be a 2.6 MW wrap: it is a reset, the new 1 J counts.
        assert_eq!(
            delta_uj(5_000_000, 1_000_000, 262_143_328_850, 0.1),
            Delta::Reset(1_000_000)
        );
        // A real wrap near the top stays a wrap.
        assert_eq!(
            delta_uj(262_143_328_850 - 3_000_000, 2_000_000, 262_143_328_850, 1.0),
            Delta::Counted(5_000_000)
        );
        // The ceiling itself is allowed: 10 kW for 1 s.
        assert_eq!(
            delta_uj(0, 10_000_000_000, u64::MAX, 1.0),
            Delta::Counted(10_000_000_000)
        );
        assert_eq!(
            delta_uj(0, 10_000_000_001, u64::MAX, 1.0),
            Delta::Implausible
        );
        // A reset whose new value is itself impossible counts nothing.
        assert_eq!(
            delta_uj(900_000_000_000, 800_000_000_000, 1_000_000_000_000, 1.0),
            Delta::Reset(0)
        );
    }

    #[test]
    fn zone_names() {
        let table = [
            ("intel-rapl:0", true),
            ("intel-rapl:1:0", true),
            ("intel-rapl", false),
            ("intel-rapl-mmio:0", false),
            ("intel-rapl:0:0:1", false),
            ("intel-rapl:x", false),
        ];
        for (n, want) in table {
            assert_eq!(is_rapl_zone(n), want, "{n}");
        }
    }
}
