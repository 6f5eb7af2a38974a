//! Turning two consecutive samples into energy per host and per service.
//!
//! This is pure arithmetic on a [`Sample`] and the [`Baseline`] of the previous
//! one; it touches no files, so tests feed it any trace they like.
//!
//! Rules, also written in `docs/energy-budget.md`:
//! - Counters give energy as differences; elapsed time is the real time between
//!   the two samples (CLOCK_BOOTTIME), never the configured interval. Time is
//!   only used where there is no counter: GPU power × time (trapezoid) and
//!   power profiles.
//! - CPU energy is shared among services by their share of the host's busy CPU
//!   time (`/proc/stat`); the rest stays with the host (kernel, other daemons,
//!   idle). A slice named in the config gets only the usage of its units that
//!   are not accounted themselves. If the services' usage adds up to more than the host's (the two
//!   are read a few µs apart), the services' usage is the denominator.
//! - A GPU's energy is split equally among the services whose unit lists it in
//!   `CUDA_VISIBLE_DEVICES` and that are running; it is an estimate, since NVML
//!   has no per-process energy.
//! - A power profile (watts) is used for a service only while CPU energy has
//!   not been readable since the baseline, so a profile never adds to measured
//!   joules. A zone that fails to read for a while keeps its last reading, and
//!   the next good reading counts the whole gap.

use std::collections::BTreeMap;

use crate::cgroup::{UnitUsage, usage_delta};
use crate::nvml::GpuReading;
use crate::rapl::{Delta, RaplReading, delta_uj};
use crate::state::{Baseline, GpuBaseline, ServiceTotals};

/// Everything read at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    pub boot_id: String,
    /// CLOCK_BOOTTIME in seconds.
    pub boottime_s: f64,
    pub unix_s: f64,
    pub rapl: RaplReading,
    /// GPU readings, or why there are none.
    pub gpus: Result<Vec<GpuReading>, String>,
    pub units: Vec<UnitUsage>,
    /// Host busy CPU µs, or why it could not be read.
    pub host_busy_usec: Result<u64, String>,
}

/// What to attribute beyond the sample itself.
#[derive(Debug, Clone, Default)]
pub struct Attribution {
    /// Unit name → GPU UUIDs from its `CUDA_VISIBLE_DEVICES`.
    pub unit_gpus: BTreeMap<String, Vec<String>>,
    /// Service → watts, used while CPU energy is unavailable.
    pub power_profiles: BTreeMap<String, f64>,
}

/// Energy between two samples, joules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// `None` when CPU energy could not be measured.
    pub cpu_j: Option<f64>,
    pub gpu_j: f64,
    pub gpu_estimated_j: f64,
    pub profile_j: f64,
    pub services: BTreeMap<String, ServiceTotals>,
    /// Real seconds between the two samples.
    pub elapsed_s: f64,
    /// Things worth a log line, e.g. a GPU counter epoch change.
    pub notes: Vec<String>,
    /// Things worth a warning, e.g. a RAPL counter reset.
    pub warnings: Vec<String>,
}

/// Why no energy was computed for a sample.
#[derive(Debug, Clone, PartialEq)]
pub enum NoStep {
    /// No previous sample: this one becomes the baseline.
    FirstSample,
    /// A different boot: counters restarted, the baseline is replaced.
    NewBoot { previous: String },
    /// Time did not move forward (clock source misuse); baseline replaced.
    NoElapsedTime,
}

/// The baseline a sample leaves behind.
pub fn baseline_of(s: &Sample, previous: Option<&Baseline>) -> Baseline {
    // On a failed GPU query keep the last readings, as for RAPL: NVML's counter
    // is cumulative, so the next good reading counts the gap (a driver reload
    // meanwhile shows as a new epoch).
    let mut gpus = match (&s.gpus, previous) {
        (Err(_), Some(p)) => p.gpus.clone(),
        _ => BTreeMap::new(),
    };
    if let Ok(readings) = &s.gpus {
        for r in readings {
            let old = previous.and_then(|b| b.gpus.get(&r.uuid));
            let mut epoch = old.map(|g| g.epoch).unwrap_or(0);
            if let (Some(o), Some(c)) = (old.and_then(|g| g.energy_mj), r.total_energy_mj)
                && c < o
            {
                epoch += 1;
            }
            gpus.insert(
                r.uuid.clone(),
                GpuBaseline {
                    energy_mj: r.total_energy_mj,
                    power_mw: r.power_mw,
                    epoch,
                },
            );
        }
    }
    Baseline {
        boot_id: s.boot_id.clone(),
        boottime_s: s.boottime_s,
        unix_s: s.unix_s,
        rapl: match &s.rapl {
            RaplReading::Ok(z) => z.iter().map(|z| (z.zone.clone(), z.energy_uj)).collect(),
            // Keep the last readings: the counters are cumulative, so when the
            // zones are readable again the difference covers the gap instead
            // of losing it.
            RaplReading::Unavailable(_) => previous.map(|b| b.rapl.clone()).unwrap_or_default(),
        },
        gpus,
        cgroups: s
            .units
            .iter()
            .map(|u| (u.cgroup.clone(), u.usage_usec))
            .collect(),
        host_busy_usec: s.host_busy_usec.as_ref().ok().copied(),
    }
}

/// Energy from `prev` to `s`. The caller stores [`baseline_of`] afterwards.
pub fn step(prev: Option<&Baseline>, s: &Sample, attr: &Attribution) -> Result<Step, NoStep> {
    let Some(prev) = prev else {
        return Err(NoStep::FirstSample);
    };
    if prev.boot_id != s.boot_id {
        return Err(NoStep::NewBoot {
            previous: prev.boot_id.clone(),
        });
    }
    let elapsed_s = s.boottime_s - prev.boottime_s;
    if elapsed_s <= 0.0 || !elapsed_s.is_finite() {
        return Err(NoStep::NoElapsedTime);
    }
    let mut out = Step {
        elapsed_s,
        ..Step::default()
    };

    // CPU: sum of zone deltas. A zone new since the last sample only sets its
    // baseline; a zone that vanished contributes nothing.
    if let RaplReading::Ok(zones) = &s.rapl {
        let mut uj: u64 = 0;
        for z in zones {
            if let Some(&p) = prev.rapl.get(&z.zone) {
                match delta_uj(p, z.energy_uj, z.max_energy_range_uj, elapsed_s) {
                    Delta::Counted(d) => uj += d,
                    Delta::Reset(d) => {
                        uj += d;
                        out.warnings.push(format!(
                            "RAPL zone {} went back from {p} to {} µJ in {elapsed_s:.3} s, \
                             more than a wrap at {} W could explain: counted as a counter \
                             reset ({d} µJ from 0)",
                            z.zone,
                            z.energy_uj,
                            crate::rapl::MAX_ZONE_WATTS
                        ));
                    }
                    Delta::Implausible => out.warnings.push(format!(
                        "RAPL zone {} jumped from {p} to {} µJ in {elapsed_s:.3} s, above {} W: \
                         interval not counted",
                        z.zone,
                        z.energy_uj,
                        crate::rapl::MAX_ZONE_WATTS
                    )),
                }
            }
        }
        out.cpu_j = Some(uj as f64 / 1e6);
    }

    // CPU attribution by busy time.
    let deltas: Vec<(&UnitUsage, u64)> = s
        .units
        .iter()
        .map(|u| {
            let d = match prev.cgroups.get(&u.cgroup) {
                Some(&p) => usage_delta(p, u.usage_usec),
                // A cgroup that appeared since the last sample was created in
                // this interval: all its usage belongs here.
                None => u.usage_usec,
            };
            (u, d)
        })
        .collect();
    // A slice named in the config contains the units below it, which may be
    // accounted themselves: the slice keeps only the rest, so no CPU time is
    // shared out twice.
    let nested: Vec<u64> = deltas
        .iter()
        .map(|(u, _)| {
            if !u.unit.ends_with(".slice") {
                return 0;
            }
            let prefix = format!("{}/", u.cgroup);
            deltas
                .iter()
                .filter(|(v, _)| v.cgroup.starts_with(&prefix))
                .map(|(_, d)| d)
                .sum()
        })
        .collect();
    let deltas: Vec<(&UnitUsage, u64)> = deltas
        .into_iter()
        .zip(nested)
        .map(|((u, d), inner)| (u, d.saturating_sub(inner)))
        .collect();
    if let Some(cpu_j) = out.cpu_j {
        // Without the host's busy time at both ends the shares are unknown:
        // the energy stays with the host rather than being split among the
        // services as if they were all that ran.
        let host = match (&s.host_busy_usec, prev.host_busy_usec) {
            (Ok(c), Some(p)) => Some(c.saturating_sub(p)),
            _ => None,
        };
        let sum: u64 = deltas.iter().map(|(_, d)| d).sum();
        let denom = host.map_or(0, |h| h.max(sum));
        if denom > 0 {
            for (u, d) in &deltas {
                let e = out.services.entry(u.service.clone()).or_default();
                e.cpu_j += cpu_j * (*d as f64) / (denom as f64);
            }
        }
    } else if prev.rapl.is_empty() {
        // No RAPL reading at all since the baseline (no RAPL on this host, or
        // never readable): the profiles stand in. After a transient failure
        // the kept baseline recovers the measured energy instead, so the
        // profiles must not count the same time again.
        for (svc, watts) in &attr.power_profiles {
            let j = watts * elapsed_s;
            out.services.entry(svc.clone()).or_default().profile_j += j;
            out.profile_j += j;
        }
    }

    // GPU energy per GPU, then split equally among its running services.
    if let Ok(readings) = &s.gpus {
        for r in readings {
            let Some(old) = prev.gpus.get(&r.uuid) else {
                continue;
            };
            let (j, estimated) = match (old.energy_mj, r.total_energy_mj) {
                (Some(p), Some(c)) if c >= p => ((c - p) as f64 / 1e3, false),
                (Some(_), Some(c)) => {
                    out.notes.push(format!(
                        "GPU {}: energy counter went down, new counter epoch (driver reload)",
                        r.uuid
                    ));
                    (c as f64 / 1e3, false)
                }
                _ => match (old.power_mw, r.power_mw) {
                    (Some(p), Some(c)) => ((p as f64 + c as f64) / 2e3 * elapsed_s, true),
                    (None, Some(c)) => (c as f64 / 1e3 * elapsed_s, true),
                    _ => (0.0, true),
                },
            };
            out.gpu_j += j;
            if estimated {
                out.gpu_estimated_j += j;
            }
            let mut users: Vec<&str> = s
                .units
                .iter()
                .filter(|u| {
                    attr.unit_gpus
                        .get(&u.unit)
                        .is_some_and(|g| g.contains(&r.uuid))
                })
                .map(|u| u.service.as_str())
                .collect();
            users.sort();
            users.dedup();
            for svc in &users {
                out.services.entry(svc.to_string()).or_default().gpu_j += j / users.len() as f64;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rapl::ZoneReading;

    fn sample(t: f64, uj: u64, busy: u64, web: u64) -> Sample {
        Sample {
            boot_id: "b".into(),
            boottime_s: t,
            unix_s: 1_000_000.0 + t,
            rapl: RaplReading::Ok(vec![ZoneReading {
                zone: "intel-rapl:0".into(),
                name: "package-0".into(),
                energy_uj: uj,
                max_energy_range_uj: 1_000_000_000,
            }]),
            gpus: Err("off".into()),
            units: vec![UnitUsage {
                unit: "dickbox-web@a.service".into(),
                service: "web".into(),
                cgroup: "s.slice/dickbox-web@a.service".into(),
                usage_usec: web,
            }],
            host_busy_usec: Ok(busy),
        }
    }

    #[test]
    fn cpu_share_by_busy_time() {
        let a = sample(10.0, 0, 0, 0);
        let b = sample(12.0, 30_000_000, 1_000_000, 250_000);
        let st = step(Some(&baseline_of(&a, None)), &b, &Attribution::default()).unwrap();
        assert_eq!(st.cpu_j, Some(30.0));
        assert_eq!(st.services["web"].cpu_j, 7.5);
        assert_eq!(st.elapsed_s, 2.0);
    }

    #[test]
    fn configured_slice_keeps_only_what_its_accounted_units_did_not_use() {
        let unit = |unit: &str, cgroup: &str, usage| UnitUsage {
            unit: unit.into(),
            service: unit.into(),
            cgroup: cgroup.into(),
            usage_usec: usage,
        };
        let mut a = sample(0.0, 0, 0, 0);
        a.units = vec![
            unit("tori.slice", "tori.slice", 0),
            unit("web", "tori.slice/dickbox-web@a.service", 0),
        ];
        let mut b = sample(1.0, 10_000_000, 1_000_000, 0);
        b.units = vec![
            unit("tori.slice", "tori.slice", 800_000),
            unit("web", "tori.slice/dickbox-web@a.service", 500_000),
        ];
        let st = step(Some(&baseline_of(&a, None)), &b, &Attribution::default()).unwrap();
        assert_eq!(st.services["web"].cpu_j, 5.0);
        assert!((st.services["tori.slice"].cpu_j - 3.0).abs() < 1e-9);
    }

    #[test]
    fn new_boot_resets_without_energy() {
        let a = sample(10.0, 0, 0, 0);
        let mut b = sample(1.0, 5, 5, 5);
        b.boot_id = "other".into();
        assert!(matches!(
            step(Some(&baseline_of(&a, None)), &b, &Attribution::default()),
            Err(NoStep::NewBoot { .. })
        ));
    }
}
