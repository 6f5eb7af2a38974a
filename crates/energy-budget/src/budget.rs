//! Budget periods, allocations, warnings and enforcement decisions.
//!
//! Computing what should happen (a period rolled over, a warning is due, a
//! unit's CPUQuota should be lowered) is kept apart from doing it, so the rules
//! are tested without a daemon. Each warning fires once per period: its key is
//! kept in the state and the state is synced before anything else happens.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::PeriodKind;
use crate::integrate::Step;
use crate::state::{HourBucket, Period, PeriodSummary, State, Totals};

/// Joules in one kWh.
pub const J_PER_KWH: f64 = 3.6e6;

/// Thresholds of the budget (and of each allocation) that warn once per period.
pub const THRESHOLDS: [u32; 4] = [50, 75, 90, 95];

/// Fixed journal message ids of the events operators alert on (documented in
/// docs/energy-budget.md).
pub mod message_id {
    pub const BUDGET_THRESHOLD: &str = "6b1f0c6de0e54a4b9e3a7c2f5d8e1a01";
    pub const PROJECTION_OVER: &str = "6b1f0c6de0e54a4b9e3a7c2f5d8e1a02";
    pub const ALLOCATION_THRESHOLD: &str = "6b1f0c6de0e54a4b9e3a7c2f5d8e1a03";
    pub const ALLOCATION_ENFORCED: &str = "6b1f0c6de0e54a4b9e3a7c2f5d8e1a04";
    pub const CPU_ENERGY_UNAVAILABLE: &str = "6b1f0c6de0e54a4b9e3a7c2f5d8e1a05";
    pub const PERIOD_CLOSED: &str = "6b1f0c6de0e54a4b9e3a7c2f5d8e1a06";
}

/// The period containing `unix` (UTC).
pub fn period_at(kind: PeriodKind, unix: i64) -> Period {
    let day = unix.div_euclid(86400);
    let (start_day, end_day) = match kind {
        PeriodKind::Daily => (day, day + 1),
        // 1970-01-01 was a Thursday; weeks start on Monday.
        PeriodKind::Weekly => {
            let monday = day - (day + 3).rem_euclid(7);
            (monday, monday + 7)
        }
        PeriodKind::Monthly => {
            let (y, m, _) = civil_from_days(day);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (days_from_civil(y, m, 1), days_from_civil(ny, nm, 1))
        }
    };
    Period {
        kind,
        start: start_day * 86400,
        end: end_day * 86400,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (era-based arithmetic:
/// 400-year eras of 146097 days, years starting in March).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `YYYY-MM-DD` of a unix time, for reports.
pub fn date_of(unix: i64) -> String {
    let (y, m, d) = civil_from_days(unix.div_euclid(86400));
    format!("{y:04}-{m:02}-{d:02}")
}

fn add_totals(t: &mut Totals, s: &Step, f: f64) {
    t.cpu_j += s.cpu_j.unwrap_or(0.0) * f;
    t.gpu_j += s.gpu_j * f;
    t.gpu_estimated_j += s.gpu_estimated_j * f;
    t.profile_j += s.profile_j * f;
    t.measured_s += s.elapsed_s * f;
    for (svc, e) in &s.services {
        t.services.entry(svc.clone()).or_default().add(e, f);
    }
}

/// Add one step's energy to the state, ending at `now_unix` after `prev_unix`.
/// A step that crosses the period's end is split by time; the closed period
/// moves to `past_periods` and the next one has the configured `kind`, so a
/// changed `period` takes effect at the current period's end. Returns the
/// periods closed.
pub fn record(
    state: &mut State,
    kind: PeriodKind,
    step: &Step,
    prev_unix: f64,
    now_unix: f64,
    budget_kwh: f64,
    history_hours: u32,
) -> Vec<PeriodSummary> {
    let mut closed = Vec::new();
    let mut rest = 1.0;
    let span = now_unix - prev_unix;
    while now_unix >= state.period.end as f64 {
        let end = state.period.end as f64;
        let share = if span > 0.0 {
            ((end - prev_unix) / span).clamp(0.0, rest)
        } else {
            0.0
        };
        add_totals(&mut state.totals, step, share);
        rest -= share;
        let summary = PeriodSummary {
            period: state.period,
            budget_kwh,
            totals: std::mem::take(&mut state.totals),
        };
        state.past_periods.push(summary.clone());
        if state.past_periods.len() > 24 {
            state.past_periods.remove(0);
        }
        closed.push(summary);
        state.warnings_fired.clear();
        // Normally the period of `kind` that starts here; after a change of
        // kind the first one is shortened so periods never overlap.
        let next = period_at(kind, state.period.end);
        state.period = Period {
            kind,
            start: state.period.end,
            end: next.end,
        };
    }
    add_totals(&mut state.totals, step, rest);

    // Hour buckets take the whole step at its end time.
    let hour = (now_unix as i64).div_euclid(3600) * 3600;
    let h = &mut state.history;
    if h.buckets.last().map(|b| b.start) != Some(hour) {
        h.buckets.push(HourBucket {
            start: hour,
            ..HourBucket::default()
        });
        // Once an hour: drop what fell out of the window.
        h.prune(hour - i64::from(history_hours) * 3600);
    }
    let mut columns = Vec::with_capacity(step.services.len());
    for svc in step.services.keys() {
        let i = match h.services.iter().position(|s| s == svc) {
            Some(i) => i,
            None => {
                h.services.push(svc.clone());
                h.services.len() - 1
            }
        };
        columns.push(i);
    }
    if let Some(b) = h.buckets.last_mut() {
        b.cpu_j += step.cpu_j.unwrap_or(0.0);
        b.gpu_j += step.gpu_j;
        b.gpu_estimated_j += step.gpu_estimated_j;
        b.profile_j += step.profile_j;
        for (i, e) in columns.into_iter().zip(step.services.values()) {
            if b.services.len() <= i {
                b.services.resize(i + 1, [0.0; 3]);
            }
            b.services[i][0] += e.cpu_j;
            b.services[i][1] += e.gpu_j;
            b.services[i][2] += e.profile_j;
        }
    }
    closed
}

/// Explicit per-service allocations, kWh, set with `allocate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocations {
    pub services: BTreeMap<String, f64>,
}

/// `energy.json` → `energy.allocations.json`, beside the state. It has its own
/// file because `allocate` runs while the daemon owns the state file.
pub fn allocations_path(budget_path: &Path) -> PathBuf {
    let stem = budget_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "energy".into());
    budget_path.with_file_name(format!("{stem}.allocations.json"))
}

#[derive(Debug, thiserror::Error)]
pub enum AllocationError {
    #[error("read allocations {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error(
        "allocations would total {total:.3} kWh, over the budget of {budget:.3} kWh; \
         lower another allocation first"
    )]
    OverBudget { total: f64, budget: f64 },
    #[error("{0:?} is not a service name ([a-z0-9][a-z0-9-]*) nor a unit named in the config")]
    BadService(String),
    #[error("{0:?} is not a kWh amount (a non-negative number, or `auto`)")]
    BadAmount(String),
    #[error("write allocations: {0}")]
    Write(#[from] crate::state::StateError),
}

pub fn load_allocations(path: &Path) -> Result<Allocations, AllocationError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| AllocationError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Allocations::default()),
        Err(e) => Err(AllocationError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// Set (`Some`) or clear (`None`, back to weights) one service's allocation.
pub fn set_allocation(
    allocs: &mut Allocations,
    service: &str,
    kwh: Option<f64>,
    budget_kwh: f64,
) -> Result<(), AllocationError> {
    let mut next = allocs.clone();
    match kwh {
        Some(k) => {
            next.services.insert(service.to_string(), k);
        }
        None => {
            next.services.remove(service);
        }
    }
    let total: f64 = next.services.values().sum();
    if total > budget_kwh + 1e-9 {
        return Err(AllocationError::OverBudget {
            total,
            budget: budget_kwh,
        });
    }
    *allocs = next;
    Ok(())
}

/// Allocation per service in kWh: explicit ones as set; the remainder of the
/// budget is redistributed among the other known services by weight (1 when
/// not configured).
pub fn effective_allocations(
    budget_kwh: f64,
    explicit: &Allocations,
    weights: &BTreeMap<String, f64>,
    known: impl IntoIterator<Item = String>,
) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = explicit.services.clone();
    let remainder = (budget_kwh - explicit.services.values().sum::<f64>()).max(0.0);
    let mut others: Vec<String> = known
        .into_iter()
        .chain(weights.keys().cloned())
        .filter(|s| !explicit.services.contains_key(s))
        .collect();
    others.sort();
    others.dedup();
    let weight = |s: &str| weights.get(s).copied().unwrap_or(1.0);
    let sum: f64 = others.iter().map(|s| weight(s)).sum();
    for s in others {
        let share = if sum > 0.0 { weight(&s) / sum } else { 0.0 };
        out.insert(s.clone(), remainder * share);
    }
    out
}

/// A warning that just became due.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    pub key: String,
    pub message_id: &'static str,
    pub service: Option<String>,
    pub percent: Option<u32>,
    pub used_kwh: f64,
    pub limit_kwh: f64,
    pub text: String,
}

/// Projected kWh at the period's end: what was used, plus the average rate
/// over the time actually measured times the time left. `None` until a
/// twentieth of the period was measured, to avoid wild early projections.
pub fn projection_kwh(state: &State, now_unix: f64) -> Option<f64> {
    let len = (state.period.end - state.period.start) as f64;
    let measured = state.totals.measured_s;
    if measured < len / 20.0 || measured <= 0.0 {
        return None;
    }
    let used = state.totals.used_j();
    let left = (state.period.end as f64 - now_unix).max(0.0);
    Some((used + used / measured * left) / J_PER_KWH)
}

/// Warnings now due that have not fired this period; marks them fired.
pub fn due_warnings(
    state: &mut State,
    budget_kwh: f64,
    allocations: &BTreeMap<String, f64>,
    now_unix: f64,
) -> Vec<Warning> {
    let mut out = Vec::new();
    let used = state.totals.used_j() / J_PER_KWH;
    let mut fire = |state: &mut State, w: Warning| {
        if state.warnings_fired.insert(w.key.clone()) {
            out.push(w);
        }
    };
    if budget_kwh > 0.0 {
        for t in THRESHOLDS {
            if used >= budget_kwh * f64::from(t) / 100.0 {
                fire(
                    state,
                    Warning {
                        key: format!("total:{t}"),
                        message_id: message_id::BUDGET_THRESHOLD,
                        service: None,
                        percent: Some(t),
                        used_kwh: used,
                        limit_kwh: budget_kwh,
                        text: format!("energy budget {t}% used"),
                    },
                );
            }
        }
        if let Some(p) = projection_kwh(state, now_unix)
            && p > budget_kwh
        {
            fire(
                state,
                Warning {
                    key: "projection:total".into(),
                    message_id: message_id::PROJECTION_OVER,
                    service: None,
                    percent: None,
                    used_kwh: p,
                    limit_kwh: budget_kwh,
                    text: "energy projected for the period's end exceeds the budget".into(),
                },
            );
        }
    }
    let services: Vec<(String, f64)> = state
        .totals
        .services
        .iter()
        .map(|(s, t)| (s.clone(), t.total_j() / J_PER_KWH))
        .collect();
    for (svc, used) in services {
        let Some(&limit) = allocations.get(&svc) else {
            continue;
        };
        if limit <= 0.0 {
            continue;
        }
        for t in THRESHOLDS.into_iter().chain([100]) {
            if used >= limit * f64::from(t) / 100.0 {
                fire(
                    state,
                    Warning {
                        key: format!("service:{svc}:{t}"),
                        message_id: message_id::ALLOCATION_THRESHOLD,
                        service: Some(svc.clone()),
                        percent: Some(t),
                        used_kwh: used,
                        limit_kwh: limit,
                        text: format!("service {svc} used {t}% of its energy allocation"),
                    },
                );
            }
        }
    }
    out
}

/// Units whose CPUQuota should be lowered now: running units of services over
/// their allocation that were not yet lowered this period.
pub fn units_to_enforce<'a>(
    state: &State,
    allocations: &BTreeMap<String, f64>,
    running: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<String> {
    let over = |svc: &str| {
        let used = state
            .totals
            .services
            .get(svc)
            .map(|t| t.total_j() / J_PER_KWH)
            .unwrap_or(0.0);
        allocations.get(svc).is_some_and(|&a| a > 0.0 && used >= a)
    };
    let mut out: Vec<String> = running
        .into_iter()
        .filter(|(unit, svc)| over(svc) && !state.enforced.contains(*unit))
        .map(|(unit, _)| unit.to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_in_utc() {
        // 2026-12-04T16:00:00Z
        let t = 1_796_400_000;
        let m = period_at(PeriodKind::Monthly, t);
        assert_eq!(date_of(m.start), "2026-12-01");
        assert_eq!(date_of(m.end), "2027-01-01");
        let w = period_at(PeriodKind::Weekly, t);
        assert_eq!(date_of(w.start), "2026-11-30"); // a Monday
        let feb = period_at(PeriodKind::Monthly, days_from_civil(2028, 2, 15) * 86400);
        assert_eq!((feb.end - feb.start) / 86400, 29);
    }

    #[test]
    fn changed_period_kind_starts_at_the_roll_over() {
        let t = 1_796_342_400; // 2026-12-04
        let mut st = State::new(period_at(PeriodKind::Monthly, t));
        let end = st.period.end as f64;
        let step = Step {
            cpu_j: Some(10.0),
            ..Step::default()
        };
        record(
            &mut st,
            PeriodKind::Weekly,
            &step,
            t as f64,
            t as f64 + 1.0,
            1.0,
            24,
        );
        assert_eq!(st.period.kind, PeriodKind::Monthly, "not before the end");
        record(
            &mut st,
            PeriodKind::Weekly,
            &step,
            end - 5.0,
            end + 5.0,
            1.0,
            24,
        );
        assert_eq!(st.period.kind, PeriodKind::Weekly);
        assert_eq!(date_of(st.period.start), "2027-01-01");
        assert_eq!(date_of(st.period.end), "2027-01-04"); // the next Monday
        assert_eq!(st.totals.cpu_j, 5.0);
        assert_eq!(st.past_periods[0].totals.cpu_j, 15.0);
    }

    #[test]
    fn projection_uses_measured_time_only() {
        // A daily period; the daemon started at noon and measured 2 h (over
        // the 5% needed) at 10 W: 72 kJ used, 10 h left at the same rate.
        let start = 1_796_342_400;
        let mut st = State::new(period_at(PeriodKind::Daily, start));
        let step = Step {
            cpu_j: Some(72_000.0),
            elapsed_s: 7200.0,
            ..Step::default()
        };
        let now = (start + 14 * 3600) as f64;
        record(
            &mut st,
            PeriodKind::Daily,
            &step,
            now - 7200.0,
            now,
            1.0,
            24,
        );
        let p = projection_kwh(&st, now).unwrap();
        assert!((p * J_PER_KWH - 72_000.0 * 6.0).abs() < 1e-6, "{p}");
        st.totals.measured_s = 3000.0;
        assert_eq!(
            projection_kwh(&st, now),
            None,
            "under 5% of the day measured"
        );
    }

    #[test]
    fn remainder_is_redistributed_by_weight() {
        let explicit = Allocations {
            services: BTreeMap::from([("a".to_string(), 40.0)]),
        };
        let weights = BTreeMap::from([("b".to_string(), 3.0)]);
        let eff = effective_allocations(100.0, &explicit, &weights, ["c".to_string()]);
        assert_eq!(eff["a"], 40.0);
        assert_eq!(eff["b"], 45.0);
        assert_eq!(eff["c"], 15.0);
    }

    #[test]
    fn allocations_cannot_exceed_budget() {
        let mut a = Allocations::default();
        set_allocation(&mut a, "x", Some(60.0), 100.0).unwrap();
        assert!(set_allocation(&mut a, "y", Some(50.0), 100.0).is_err());
        assert_eq!(a.services.len(), 1);
        set_allocation(&mut a, "x", None, 100.0).unwrap();
        assert!(a.services.is_empty());
    }
}
