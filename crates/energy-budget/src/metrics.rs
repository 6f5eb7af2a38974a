//! Prometheus textfile metrics, written atomically for node-exporter's
//! textfile collector (temp file in the same folder, fsync, rename, fsync of
//! the folder), so a scrape never sees half a file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::budget::J_PER_KWH;
use crate::state::State;

/// Render the metrics for one state.
pub fn render(
    state: &State,
    budget_kwh: f64,
    allocations: &BTreeMap<String, f64>,
    projection_kwh: Option<f64>,
    cpu_available: bool,
) -> String {
    let mut o = String::new();
    let t = &state.totals;
    let mut metric = |name: &str, kind: &str, help: &str, rows: &[(String, f64)]| {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    metric(
        "dickbox_energy_host_joules",
        "gauge",
        "Host energy this budget period by source (gpu_estimated is part of gpu).",
        &[
            ("{source=\"cpu\"}".into(), t.cpu_j),
            ("{source=\"gpu\"}".into(), t.gpu_j),
            ("{source=\"gpu_estimated\"}".into(), t.gpu_estimated_j),
            ("{source=\"profile\"}".into(), t.profile_j),
        ],
    );
    let mut rows = Vec::new();
    for (svc, s) in &t.services {
        let svc = escape(svc);
        rows.push((format!("{{service=\"{svc}\",source=\"cpu\"}}"), s.cpu_j));
        rows.push((format!("{{service=\"{svc}\",source=\"gpu\"}}"), s.gpu_j));
        rows.push((
            format!("{{service=\"{svc}\",source=\"profile\"}}"),
            s.profile_j,
        ));
    }
    metric(
        "dickbox_energy_service_joules",
        "gauge",
        "Energy attributed to a service this period (gpu and profile are estimates).",
        &rows,
    );
    let rows: Vec<(String, f64)> = allocations
        .iter()
        .map(|(s, a)| (format!("{{service=\"{}\"}}", escape(s)), *a))
        .collect();
    metric(
        "dickbox_energy_allocation_kwh",
        "gauge",
        "Effective energy allocation of a service this period.",
        &rows,
    );
    let used = t.used_j() / J_PER_KWH;
    metric(
        "dickbox_energy_budget_kwh",
        "gauge",
        "Energy budget of the period.",
        &[(String::new(), budget_kwh)],
    );
    metric(
        "dickbox_energy_budget_used_kwh",
        "gauge",
        "Energy used this period.",
        &[(String::new(), used)],
    );
    let ratio = if budget_kwh > 0.0 {
        used / budget_kwh
    } else {
        0.0
    };
    metric(
        "dickbox_energy_budget_used_ratio",
        "gauge",
        "Share of the budget used (0 when no budget is set).",
        &[(String::new(), ratio)],
    );
    if let Some(p) = projection_kwh {
        metric(
            "dickbox_energy_projected_kwh",
            "gauge",
            "Energy projected for the period's end at the average rate so far.",
            &[(String::new(), p)],
        );
    }
    metric(
        "dickbox_energy_cpu_measured",
        "gauge",
        "1 when RAPL CPU energy could be read at the last sample.",
        &[(String::new(), if cpu_available { 1.0 } else { 0.0 })],
    );
    metric(
        "dickbox_energy_period_end_timestamp_seconds",
        "gauge",
        "End of the current budget period.",
        &[(String::new(), state.period.end as f64)],
    );
    metric(
        "dickbox_energy_last_sync_timestamp_seconds",
        "gauge",
        "Wall time of the last state sync.",
        &[(String::new(), state.last_sync_unix)],
    );
    o
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Write the textfile atomically.
pub fn write(path: &Path, text: &str) -> Result<(), crate::state::StateError> {
    crate::state::write_rotating(path, text.as_bytes(), false)
}
