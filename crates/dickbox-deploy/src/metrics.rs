//! Prometheus textfile metrics, rewritten atomically after each operation.
//! Counters are kept in `<state>/metrics.json` so they survive restarts of
//! this one-shot program.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::fsops::{ensure_dir, write_atomic};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Counters {
    /// `service|result` → count.
    pub deployments: BTreeMap<String, u64>,
    /// `service|reason` → count.
    pub rollbacks: BTreeMap<String, u64>,
    /// service → (sum of seconds, count) of deployments.
    pub duration: BTreeMap<String, (f64, u64)>,
}

fn load(s: &Settings) -> Counters {
    std::fs::read(s.raw.state_dir.join("metrics.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Updates the counters with `f` and rewrites the textfile. Failures are
/// logged: metrics must never fail a deploy.
pub fn update(s: &Settings, f: impl FnOnce(&mut Counters)) {
    let mut c = load(s);
    f(&mut c);
    if let Err(e) = write(s, &c) {
        tracing::warn!(error = %e, "could not write metrics");
    }
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn write(s: &Settings, c: &Counters) -> anyhow::Result<()> {
    ensure_dir(&s.raw.state_dir, 0o755)?;
    write_atomic(
        &s.raw.state_dir.join("metrics.json"),
        &serde_json::to_vec(c)?,
        0o644,
    )?;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# HELP dickbox_deployments_total Deployments by service and result."
    );
    let _ = writeln!(t, "# TYPE dickbox_deployments_total counter");
    for (k, v) in &c.deployments {
        let (svc, res) = k.split_once('|').unwrap_or((k, ""));
        let _ = writeln!(
            t,
            "dickbox_deployments_total{{service=\"{}\",result=\"{}\"}} {v}",
            esc(svc),
            esc(res)
        );
    }
    let _ = writeln!(
        t,
        "# HELP dickbox_rollbacks_total Rollbacks by service and reason."
    );
    let _ = writeln!(t, "# TYPE dickbox_rollbacks_total counter");
    for (k, v) in &c.rollbacks {
        let (svc, why) = k.split_once('|').unwrap_or((k, ""));
        let _ = writeln!(
            t,
            "dickbox_rollbacks_total{{service=\"{}\",reason=\"{}\"}} {v}",
            esc(svc),
            esc(why)
        );
    }
    let _ = writeln!(
        t,
        "# HELP dickbox_deployment_duration_seconds Time from start to switched."
    );
    let _ = writeln!(t, "# TYPE dickbox_deployment_duration_seconds summary");
    for (svc, (sum, n)) in &c.duration {
        let _ = writeln!(
            t,
            "dickbox_deployment_duration_seconds_sum{{service=\"{}\"}} {sum:.3}",
            esc(svc)
        );
        let _ = writeln!(
            t,
            "dickbox_deployment_duration_seconds_count{{service=\"{}\"}} {n}",
            esc(svc)
        );
    }
    let _ = writeln!(
        t,
        "# HELP dickbox_current_release Current release per service (value 1)."
    );
    let _ = writeln!(t, "# TYPE dickbox_current_release gauge");
    for svc in crate::state::services(s) {
        if let Some(id) = crate::state::current(s, &svc) {
            let _ = writeln!(
                t,
                "dickbox_current_release{{service=\"{svc}\",release=\"{id}\"}} 1"
            );
        }
    }
    ensure_dir(&s.raw.metrics_dir, 0o755)?;
    write_atomic(
        &s.raw.metrics_dir.join("dickbox-deploy.prom"),
        t.as_bytes(),
        0o644,
    )
}
