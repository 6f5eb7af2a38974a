//! The shipped `energy-budget.service` in real systemd (the project's sandbox):
//! it becomes active only after READY=1, keeps its watchdog fed while it can
//! sync, counts a real cgroup's CPU share of fixture RAPL counters, logs the
//! budget warning with its message id, and is killed by the watchdog once it
//! can no longer write its state. Needs root; skips with a reason otherwise.

#[path = "../../../tests/sandbox/rust/sandbox_guard.rs"]
mod sandbox_guard;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use sandbox_guard::{INSIDE_BIN, Sandbox};

const UNIT: &str = "energy-budget.service";
const WORKLOAD: &str = "dickbox-demo@0123456789abcdef.service";

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(sb: &Sandbox, args: &[&str]) -> String {
    let o = sb.exec(args);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write_zone(results: &Path, uj: u64) {
    let d = results.join("powercap/intel-rapl:0");
    if !d.exists() {
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("name"), "package-0\n").unwrap();
        std::fs::write(d.join("max_energy_range_uj"), "262143328850\n").unwrap();
    }
    // Write then rename, so the daemon never reads a half-written counter.
    let tmp = d.join(".energy_uj");
    std::fs::write(&tmp, format!("{uj}\n")).unwrap();
    std::fs::rename(tmp, d.join("energy_uj")).unwrap();
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn unit_runs_with_watchdog_in_real_systemd() {
    if !sandbox_guard::can_run() {
        return;
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_energy-budget"));
    // Removed on drop, also when an assert fails; declared before the sandbox
    // so the sandbox is torn down first.
    let results_dir = tempfile::Builder::new()
        .prefix("energy-results-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let results = results_dir.path();
    write_zone(results, 1_000_000);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::copy(
        repo.join("systemd/energy-budget.service"),
        results.join(UNIT),
    )
    .unwrap();
    // The shipped unit as is, plus a test drop-in: the binary from the build,
    // the fixture RAPL folder, short intervals, and a budget of 60 J.
    std::fs::write(
        results.join("test.conf"),
        format!(
            "[Service]\nExecStart=\nExecStart={INSIDE_BIN}/energy-budget run\n\
             Environment=DICKBOX_ENERGY_RAPL_ROOT=/results/powercap\n\
             Environment=DICKBOX_ENERGY_SAMPLE_INTERVAL=200ms\n\
             Environment=DICKBOX_ENERGY_SYNC_INTERVAL=1s\n\
             Environment=DICKBOX_ENERGY_BUDGET_KWH=0.000016666666666666667\n\
             WatchdogSec=3s\nRestartSec=1s\n"
        ),
    )
    .unwrap();
    std::fs::write(
        results.join("enforce.conf"),
        "[Service]\nEnvironment=DICKBOX_ENERGY_ENFORCE=true\n",
    )
    .unwrap();

    let bind = format!("{}:/results:ro", results.display());
    let Some(sb) = Sandbox::up_with("energy", bin.parent().unwrap(), &[bind]) else {
        return;
    };
    ok(
        &sb,
        &[
            "sh",
            "-ec",
            "cp /results/energy-budget.service /etc/systemd/system/ && \
             mkdir -p /etc/systemd/system/energy-budget.service.d && \
             cp /results/test.conf /etc/systemd/system/energy-budget.service.d/ && \
             systemctl daemon-reload",
        ],
    );
    ok(
        &sb,
        &[
            "systemd-run",
            &format!("--unit={WORKLOAD}"),
            "--slice=tori.slice",
            "-p",
            "CPUQuota=30%",
            "/bin/sh",
            "-c",
            "while :; do :; done",
        ],
    );
    // `start` returns once READY=1 arrived (Type=notify) or the start failed.
    ok(&sb, &["systemctl", "start", UNIT]);

    // 40 J of package energy in 1 J steps over about 4 s: longer than
    // WatchdogSec, so only pings keep the unit alive.
    for i in 1..=40u64 {
        write_zone(results, 1_000_000 + i * 1_000_000);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(600));
    let show = ok(
        &sb,
        &["systemctl", "show", "-p", "NRestarts,ActiveState", UNIT],
    );
    assert!(
        show.contains("NRestarts=0") && show.contains("ActiveState=active"),
        "{show}"
    );

    // Stop: the final sample and sync make the count exact.
    ok(&sb, &["systemctl", "stop", UNIT]);
    let status = ok(
        &sb,
        &[&format!("{INSIDE_BIN}/energy-budget"), "status", "--json"],
    );
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let cpu_j = v["host"]["cpu_kwh"].as_f64().unwrap() * 3.6e6;
    assert!(
        (cpu_j - 40.0).abs() < 1e-6,
        "40 J counted once, got {cpu_j}\n{status}"
    );
    let demo = v["services"]["demo"]["cpu_kwh"].as_f64().unwrap_or(0.0) * 3.6e6;
    assert!(
        demo > 0.0 && demo <= 40.0,
        "the busy unit got a share: {demo} J\n{status}"
    );
    assert!(
        v["sources"]["gpu"]
            .as_str()
            .unwrap()
            .starts_with("unavailable"),
        "{status}"
    );

    // The 50 % warning went to the journal once, with its message id.
    let j = ok(
        &sb,
        &[
            "journalctl",
            "-u",
            UNIT,
            "-o",
            "cat",
            "MESSAGE_ID=6b1f0c6de0e54a4b9e3a7c2f5d8e1a01",
        ],
    );
    assert_eq!(j.matches("energy budget 50% used").count(), 1, "{j}");

    let sec = ok(&sb, &["systemd-analyze", "security", "--no-pager", UNIT]);
    let overall = sec.lines().last().unwrap_or("").to_string();
    eprintln!("systemd-analyze security {UNIT}: {overall}");

    // Enforcement from the hardened unit (no capabilities): a service over its
    // allocation gets its CPUQuota lowered through systemd.
    let bin_inside = format!("{INSIDE_BIN}/energy-budget");
    ok(
        &sb,
        &[
            "env",
            "DICKBOX_ENERGY_BUDGET_KWH=0.000016666666666666667",
            &bin_inside,
            "allocate",
            "demo",
            "0.000000001",
        ],
    );
    ok(
        &sb,
        &[
            "sh",
            "-ec",
            "cp /results/enforce.conf /etc/systemd/system/energy-budget.service.d/ && \
             systemctl daemon-reload",
        ],
    );
    ok(&sb, &["systemctl", "start", UNIT]);
    let mut uj = 41_000_000;
    wait_until("CPUQuota lowered", Duration::from_secs(20), || {
        uj += 1_000_000;
        write_zone(results, uj);
        let o = sb.exec(&["systemctl", "show", "-p", "CPUQuotaPerSecUSec", WORKLOAD]);
        String::from_utf8_lossy(&o.stdout).contains("CPUQuotaPerSecUSec=500ms")
    });
    let j = ok(&sb, &["journalctl", "-u", UNIT, "-o", "cat", "--no-pager"]);
    assert!(j.contains("CPUQuota lowered"), "{j}");
    ok(&sb, &["systemctl", "stop", UNIT]);

    // A daemon that cannot write its state stops pinging and is killed by the
    // watchdog. It runs as uid 0 without CAP_DAC_OVERRIDE, so a folder mode of
    // 0555 is enough to make its writes fail.
    ok(&sb, &["systemctl", "start", UNIT]);
    ok(&sb, &["chmod", "0555", "/var/lib/dickbox"]);
    wait_until("watchdog timeout", Duration::from_secs(20), || {
        let o = sb.exec(&["journalctl", "-u", UNIT, "-o", "cat", "--no-pager"]);
        String::from_utf8_lossy(&o.stdout).contains("Watchdog timeout")
    });
    ok(&sb, &["chmod", "0755", "/var/lib/dickbox"]);
    let _ = sb.exec(&["systemctl", "reset-failed", UNIT]);
    ok(&sb, &["systemctl", "restart", UNIT]);
    let show = ok(&sb, &["systemctl", "is-active", UNIT]);
    assert_eq!(show.trim(), "active");
    ok(&sb, &["systemctl", "stop", UNIT]);
    drop(sb);
}
