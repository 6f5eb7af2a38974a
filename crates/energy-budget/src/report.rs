//! `status`, `report` and `allocate`: read the state the daemon wrote (never
//! write it) and the allocations file (which only `allocate` writes).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::budget::{self, J_PER_KWH};
use crate::config::Config;
use crate::state::{self, State, Totals};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Allocation(#[from] budget::AllocationError),
    #[error("no energy state at {0} yet: is energy-budget.service running?")]
    NoState(std::path::PathBuf),
    #[error("no service {0:?} in this period's accounting")]
    UnknownService(String),
    #[error(
        "--hours {asked} is more than the {kept} hours of history kept (history_hours); \
         use a smaller value or the period report"
    )]
    TooManyHours { asked: u32, kept: u32 },
    #[error("--hours 0: ask for at least the current hour (1)")]
    ZeroHours,
}

impl ReportError {
    /// Whether the error is the caller's bad usage (exit 2) rather than a
    /// failure (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ReportError::TooManyHours { .. }
                | ReportError::ZeroHours
                | ReportError::Allocation(
                    budget::AllocationError::BadService(_) | budget::AllocationError::BadAmount(_)
                )
        )
    }
}

/// The state for reading, with a note when it came from the backup.
fn read_state(cfg: &Config) -> Result<(State, Option<String>), ReportError> {
    match state::peek(&cfg.budget_path)? {
        state::Loaded::Fresh => Err(ReportError::NoState(cfg.budget_path.clone())),
        state::Loaded::Current(s) => Ok((s, None)),
        state::Loaded::FromBackup { state, reason, .. } => Ok((
            state,
            Some(format!(
                "{} is unusable ({reason}); showing its last good copy",
                cfg.budget_path.display()
            )),
        )),
    }
}

fn kwh(j: f64) -> f64 {
    j / J_PER_KWH
}

/// kWh for people: three decimals from 1 kWh up, six below (a small host or a
/// test budget would otherwise show only zeros).
fn show(kwh: f64) -> String {
    if kwh.abs() >= 1.0 {
        format!("{kwh:.3}")
    } else {
        format!("{kwh:.6}")
    }
}

fn totals_json(t: &Totals) -> Value {
    json!({
        "cpu_kwh": kwh(t.cpu_j),
        "gpu_kwh": kwh(t.gpu_j),
        "gpu_estimated_kwh": kwh(t.gpu_estimated_j),
        "profile_kwh": kwh(t.profile_j),
        "used_kwh": kwh(t.used_j()),
        "used_j": t.used_j(),
    })
}

/// `status` as a JSON value.
pub fn status_json(cfg: &Config, now_unix: f64) -> Result<Value, ReportError> {
    let (st, note) = read_state(cfg)?;
    let explicit = budget::load_allocations(&budget::allocations_path(&cfg.budget_path))?;
    let allocs = budget::effective_allocations(
        cfg.budget_kwh,
        &explicit,
        &cfg.weights,
        st.totals.services.keys().cloned(),
    );
    let used = kwh(st.totals.used_j());
    let mut services = serde_json::Map::new();
    for (svc, t) in &st.totals.services {
        let alloc = allocs.get(svc).copied();
        services.insert(
            svc.clone(),
            json!({
                "cpu_kwh": kwh(t.cpu_j),
                "gpu_kwh": kwh(t.gpu_j),
                "profile_kwh": kwh(t.profile_j),
                "total_kwh": kwh(t.total_j()),
                "total_j": t.total_j(),
                "estimated": t.gpu_j > 0.0 || t.profile_j > 0.0,
                "allocation_kwh": alloc,
                "allocation_explicit": explicit.services.contains_key(svc),
                "used_percent": alloc.filter(|a| *a > 0.0).map(|a| 100.0 * kwh(t.total_j()) / a),
            }),
        );
    }
    Ok(json!({
        "state_path": cfg.budget_path,
        "note": note,
        "period": {
            "kind": st.period.kind,
            "start": st.period.start,
            "end": st.period.end,
            "start_date": budget::date_of(st.period.start),
            "end_date": budget::date_of(st.period.end),
        },
        "budget_kwh": cfg.budget_kwh,
        "used_kwh": used,
        "used_percent": if cfg.budget_kwh > 0.0 { Some(100.0 * used / cfg.budget_kwh) } else { None },
        "projection_kwh": budget::projection_kwh(&st, now_unix),
        "host": totals_json(&st.totals),
        "services": services,
        "warnings_fired": st.warnings_fired,
        "enforced_units": st.enforced,
        "sources": st.sources,
        "last_sync_unix": st.last_sync_unix,
    }))
}

/// `status` as text.
pub fn status_text(cfg: &Config, now_unix: f64) -> Result<String, ReportError> {
    let v = status_json(cfg, now_unix)?;
    let mut o = String::new();
    if let Some(n) = v["note"].as_str() {
        let _ = writeln!(o, "note: {n}");
    }
    let _ = writeln!(
        o,
        "period      {} .. {} ({})",
        v["period"]["start_date"].as_str().unwrap_or("?"),
        v["period"]["end_date"].as_str().unwrap_or("?"),
        v["period"]["kind"].as_str().unwrap_or("?")
    );
    let pct = v["used_percent"]
        .as_f64()
        .map(|p| format!(" ({p:.1}%)"))
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "used        {} kWh of {} kWh{pct}",
        show(v["used_kwh"].as_f64().unwrap_or(0.0)),
        show(cfg.budget_kwh)
    );
    match v["projection_kwh"].as_f64() {
        Some(p) => {
            let _ = writeln!(o, "projection  {} kWh at the period's end", show(p));
        }
        None => {
            let _ = writeln!(
                o,
                "projection  not yet (less than 5% of the period measured)"
            );
        }
    }
    let h = &v["host"];
    let _ = writeln!(
        o,
        "host        cpu {} kWh, gpu {} kWh (of which estimated {}), profiles {} kWh",
        show(h["cpu_kwh"].as_f64().unwrap_or(0.0)),
        show(h["gpu_kwh"].as_f64().unwrap_or(0.0)),
        show(h["gpu_estimated_kwh"].as_f64().unwrap_or(0.0)),
        show(h["profile_kwh"].as_f64().unwrap_or(0.0))
    );
    for k in ["cpu", "gpu", "cgroups"] {
        let _ = writeln!(
            o,
            "source {k:<8} {}",
            v["sources"][k].as_str().unwrap_or("")
        );
    }
    let fired: Vec<&str> = v["warnings_fired"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "warnings    {}",
        if fired.is_empty() {
            "none".to_string()
        } else {
            fired.join(", ")
        }
    );
    if let Some(s) = v["services"].as_object() {
        let _ = writeln!(
            o,
            "{:<32} {:>12} {:>12} {:>8}",
            "service", "kWh", "allocation", "used"
        );
        for (svc, x) in s {
            let alloc = x["allocation_kwh"]
                .as_f64()
                .map(show)
                .unwrap_or_else(|| "-".into());
            let used = x["used_percent"]
                .as_f64()
                .map(|p| format!("{p:.1}%"))
                .unwrap_or_else(|| "-".into());
            let mark = if x["estimated"].as_bool() == Some(true) {
                " *"
            } else {
                ""
            };
            let _ = writeln!(
                o,
                "{svc:<32} {:>12} {alloc:>12} {used:>8}{mark}",
                show(x["total_kwh"].as_f64().unwrap_or(0.0))
            );
        }
        let _ = writeln!(o, "* includes an estimate (GPU split or power profile)");
    }
    Ok(o)
}

/// `report`: energy per service over the period, or the last `hours` hours.
pub fn report(
    cfg: &Config,
    service: Option<&str>,
    hours: Option<u32>,
    now_unix: f64,
) -> Result<(Value, String), ReportError> {
    match hours {
        Some(0) => return Err(ReportError::ZeroHours),
        Some(h) if h > cfg.history_hours => {
            return Err(ReportError::TooManyHours {
                asked: h,
                kept: cfg.history_hours,
            });
        }
        _ => {}
    }
    let (st, note) = read_state(cfg)?;
    let (totals, span) = match hours {
        None => (
            st.totals.clone(),
            format!(
                "period {} .. {}",
                budget::date_of(st.period.start),
                budget::date_of(st.period.end)
            ),
        ),
        Some(h) => {
            let this_hour = (now_unix as i64).div_euclid(3600) * 3600;
            let from = this_hour - i64::from(h.saturating_sub(1)) * 3600;
            let t = st.history.totals_since(from);
            (
                t,
                format!("last {h} hours (whole clock hours, this one included)"),
            )
        }
    };
    let services: BTreeMap<&String, _> = match service {
        Some(s) => {
            let (k, v) = totals
                .services
                .get_key_value(s)
                .ok_or_else(|| ReportError::UnknownService(s.to_string()))?;
            BTreeMap::from([(k, v)])
        }
        None => totals.services.iter().collect(),
    };
    let mut o = String::new();
    if let Some(n) = &note {
        let _ = writeln!(o, "note: {n}");
    }
    let _ = writeln!(o, "energy report, {span}");
    let _ = writeln!(
        o,
        "host: {} kWh (cpu {}, gpu {}, profiles {})",
        show(kwh(totals.used_j())),
        show(kwh(totals.cpu_j)),
        show(kwh(totals.gpu_j)),
        show(kwh(totals.profile_j))
    );
    let _ = writeln!(
        o,
        "{:<32} {:>12} {:>12} {:>12} {:>12}",
        "service", "cpu kWh", "gpu kWh*", "profile kWh*", "total kWh"
    );
    let mut js = serde_json::Map::new();
    for (svc, t) in &services {
        let _ = writeln!(
            o,
            "{svc:<32} {:>12} {:>12} {:>12} {:>12}",
            show(kwh(t.cpu_j)),
            show(kwh(t.gpu_j)),
            show(kwh(t.profile_j)),
            show(kwh(t.total_j()))
        );
        js.insert(
            (*svc).clone(),
            json!({"cpu_kwh": kwh(t.cpu_j), "gpu_kwh": kwh(t.gpu_j),
                   "profile_kwh": kwh(t.profile_j), "total_kwh": kwh(t.total_j()),
                   "total_j": t.total_j()}),
        );
    }
    let _ = writeln!(
        o,
        "* estimates: GPU energy split equally among a GPU's services; power profiles"
    );
    let _ = writeln!(
        o,
        "warnings fired this period: {}",
        if st.warnings_fired.is_empty() {
            "none".to_string()
        } else {
            st.warnings_fired
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let v = json!({"span": span, "host": totals_json(&totals), "services": js,
                   "warnings_fired": st.warnings_fired, "note": note});
    Ok((v, o))
}

/// `allocate SERVICE KWH|auto`.
pub fn allocate(cfg: &Config, service: &str, amount: &str) -> Result<String, ReportError> {
    let valid_name = service
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && service
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_name && !cfg.units.iter().any(|u| u == service) {
        return Err(budget::AllocationError::BadService(service.to_string()).into());
    }
    let kwh = if amount == "auto" {
        None
    } else {
        match amount.parse::<f64>() {
            Ok(k) if k.is_finite() && k >= 0.0 => Some(k),
            _ => return Err(budget::AllocationError::BadAmount(amount.to_string()).into()),
        }
    };
    let path = budget::allocations_path(&cfg.budget_path);
    // Two `allocate` runs at once would each write their own view and lose the
    // other's change: hold an exclusive lock across read-modify-write.
    let lock_path = path.with_extension("lock");
    let lock = std::fs::File::create(&lock_path)
        .and_then(|f| {
            rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)?;
            Ok(f)
        })
        .map_err(|e| budget::AllocationError::Read {
            path: lock_path.clone(),
            reason: format!("lock: {e}"),
        })?;
    let mut a = budget::load_allocations(&path)?;
    budget::set_allocation(&mut a, service, kwh, cfg.budget_kwh)?;
    let bytes = serde_json::to_vec_pretty(&a).map_err(|e| budget::AllocationError::Read {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    state::write_rotating(&path, &bytes, false).map_err(budget::AllocationError::Write)?;
    drop(lock);
    Ok(match kwh {
        Some(k) => format!(
            "{service}: {k} kWh per period (written to {})",
            path.display()
        ),
        None => format!(
            "{service}: share of the unallocated budget by weight (written to {})",
            path.display()
        ),
    })
}
