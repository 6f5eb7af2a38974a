//! The real binary against fixture folders: the daemon killed with SIGKILL
//! between syncs, corrupt state at start, and the commands' exit codes.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Fixture;

const BIN: &str = env!("CARGO_BIN_EXE_energy-budget");

fn cmd(cfg: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap()
}

fn start_daemon(cfg: &Path) -> Child {
    Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .arg("run")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .env_remove("WATCHDOG_USEC")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn status(cfg: &Path) -> serde_json::Value {
    let out = cmd(cfg, &["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn cpu_j(cfg: &Path) -> f64 {
    status(cfg)["host"]["cpu_kwh"].as_f64().unwrap() * 3.6e6
}

/// Wait until the daemon has synced at least once after `after` (unix seconds).
fn wait_for_sync(cfg: &Path, after: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = cmd(cfg, &["status", "--json"]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["last_sync_unix"].as_f64().unwrap_or(0.0) > after {
                return;
            }
        }
        assert!(Instant::now() < deadline, "daemon did not sync in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn now() -> f64 {
    energy_budget::daemon::unix_now()
}

fn terminate(mut child: Child) -> Output {
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "daemon ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn kill_9_between_syncs_then_restart_counts_every_joule_once() {
    let f = Fixture::new();
    let cfg = f.config_file("  sample_interval: 100ms\n  sync_interval: 400ms\n");
    let mut uj = 0u64;
    for round in 0..3 {
        let mut child = start_daemon(&cfg);
        wait_for_sync(&cfg, now());
        // Energy while running: counted by samples; part of it synced, part not.
        uj += 5_000_000;
        f.set_uj("intel-rapl:0", uj);
        std::thread::sleep(Duration::from_millis(250));
        uj += 1_000_000;
        f.set_uj("intel-rapl:0", uj);
        std::thread::sleep(Duration::from_millis(150));
        child.kill().unwrap(); // SIGKILL: no final sync
        child.wait().unwrap();
        // Energy while the daemon is down: must be found by the next start.
        uj += 2_000_000;
        f.set_uj("intel-rapl:0", uj);
        let _ = round;
    }
    let child = start_daemon(&cfg);
    wait_for_sync(&cfg, now());
    let out = terminate(child);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = cpu_j(&cfg);
    assert!(
        (got - 24.0).abs() < 1e-6,
        "3 rounds × 8 J = 24 J, got {got} J"
    );
}

#[test]
fn sigterm_syncs_the_last_samples() {
    let f = Fixture::new();
    // A sync interval far longer than the test: only the stop can write this.
    let cfg = f.config_file("  sample_interval: 100ms\n  sync_interval: 1h\n");
    let child = start_daemon(&cfg);
    wait_for_sync(&cfg, now() - 60.0);
    f.set_uj("intel-rapl:0", 9_000_000);
    std::thread::sleep(Duration::from_millis(300));
    let out = terminate(child);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!((cpu_j(&cfg) - 9.0).abs() < 1e-6);
}

#[test]
fn daemon_refuses_corrupt_state_without_backup_and_names_it() {
    let f = Fixture::new();
    let cfg = f.config_file("");
    std::fs::write(f.state_path(), [0u8; 512]).unwrap();
    let child = start_daemon(&cfg);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&f.state_path().display().to_string()), "{err}");
    assert!(err.contains("NUL"), "{err}");
    assert_eq!(std::fs::read(f.state_path()).unwrap(), [0u8; 512]);

    // `status` refuses the same way, without touching anything.
    let out = cmd(&cfg, &["status"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn daemon_without_gpu_or_rapl_reports_and_carries_on() {
    let f = Fixture::new();
    std::fs::remove_dir_all(f.root().join("powercap")).unwrap();
    let text = std::fs::read_to_string(
        f.config_file("  sample_interval: 100ms\n  sync_interval: 200ms\n"),
    )
    .unwrap()
    .replace("gpu: off", "gpu: nvml");
    let cfg = f.root().join("nvml.yml");
    std::fs::write(&cfg, text).unwrap();
    let child = start_daemon(&cfg);
    wait_for_sync(&cfg, now());
    let v = status(&cfg);
    let out = terminate(child);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let gpu = v["sources"]["gpu"].as_str().unwrap();
    let cpu = v["sources"]["cpu"].as_str().unwrap();
    if !Path::new("/dev/nvidiactl").exists() {
        assert!(gpu.starts_with("unavailable: NVML unavailable"), "{gpu}");
        assert!(log.contains("GPU energy not measured"), "{log}");
    }
    assert!(cpu.contains("no RAPL powercap folder"), "{cpu}");
    assert!(
        log.contains("6b1f0c6de0e54a4b9e3a7c2f5d8e1a05"),
        "message id logged: {log}"
    );
}

#[test]
fn check_config_exit_codes() {
    let f = Fixture::new();
    let good = f.config_file("  budget_kwh: 50\n");
    let out = cmd(&good, &["check-config"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&good.display().to_string()));

    let bad = f.root().join("bad.yml");
    std::fs::write(
        &bad,
        "zmq:\n  keys_dir: /x\nenergy:\n  budget_kwh: 1\n  sink: 3\n",
    )
    .unwrap();
    let out = cmd(&bad, &["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("sink") && err.contains("line 5"), "{err}");

    let out = Command::new(BIN)
        .args(["--config", good.to_str().unwrap(), "check-config"])
        .env("DICKBOX_ENERGY_SYNC_INTERVAL", "soon")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("DICKBOX_ENERGY_SYNC_INTERVAL"), "{err}");

    let out = Command::new(BIN)
        .args(["check-config"])
        .env("DICKBOX_CONFIG", &good)
        .env("DICKBOX_ENERGY_BUDGET_PATH", f.root().join("x.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("override: DICKBOX_ENERGY_BUDGET_PATH"),
        "{text}"
    );
}

#[test]
fn allocate_report_and_status_commands() {
    let f = Fixture::new();
    let cfg = f.config_file("  budget_kwh: 10\n  sample_interval: 100ms\n  sync_interval: 200ms\n");
    let out = cmd(&cfg, &["allocate", "web", "4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cmd(&cfg, &["allocate", "batch", "7"]);
    assert_eq!(out.status.code(), Some(1), "over budget is refused");
    let out = cmd(&cfg, &["allocate", "Bad/Name", "1"]);
    assert_eq!(out.status.code(), Some(2), "a bad name is bad usage");
    let out = cmd(&cfg, &["status"]);
    assert_eq!(out.status.code(), Some(1), "no state yet");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no energy state"));

    let unit = "dickbox-web@aaaaaaaaaaaaaaaa.service";
    f.set_unit_usec("tori.slice", unit, 0);
    let child = start_daemon(&cfg);
    wait_for_sync(&cfg, now());
    f.set_uj("intel-rapl:0", 36_000_000);
    f.set_busy_usec(1_000_000);
    f.set_unit_usec("tori.slice", unit, 1_000_000);
    std::thread::sleep(Duration::from_millis(300));
    let out = terminate(child);
    assert!(out.status.success());

    let v = status(&cfg);
    assert_eq!(v["services"]["web"]["allocation_kwh"].as_f64(), Some(4.0));
    assert_eq!(v["services"]["web"]["allocation_explicit"], true);
    let text = String::from_utf8_lossy(&cmd(&cfg, &["status"]).stdout).to_string();
    assert!(
        text.contains("web") && text.contains("of 10.000 kWh"),
        "{text}"
    );

    let out = cmd(
        &cfg,
        &["report", "--service", "web", "--hours", "1", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!((r["services"]["web"]["total_j"].as_f64().unwrap() - 36.0).abs() < 1e-6);
    let out = cmd(&cfg, &["report", "--service", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let out = cmd(&cfg, &["report", "--hours", "100000"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "more hours than kept is bad usage"
    );
    let out = cmd(&cfg, &["report"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("energy report, period"));
}

/// The example configuration in docs/energy-budget.md passes `check-config`,
/// so the documentation cannot drift from what the program accepts.
#[test]
fn documented_example_config_passes_check_config() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/energy-budget.md"
    ))
    .unwrap();
    let start = doc.find("```yaml\n").expect("a yaml block in the docs") + 8;
    let end = start + doc[start..].find("```").unwrap();
    let f = Fixture::new();
    let p = f.root().join("example.yml");
    std::fs::write(&p, &doc[start..end]).unwrap();
    let out = cmd(&p, &["check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue #7: a huge duration panicked in `Duration::from_secs_f64`; it must be
/// a usage error naming the key and the value, from the environment or YAML.
#[test]
fn huge_durations_are_usage_errors_naming_key_and_value() {
    let f = Fixture::new();
    let good = f.config_file("  budget_kwh: 50\n");
    let out = Command::new(BIN)
        .args(["--config", good.to_str().unwrap(), "check-config"])
        .env("DICKBOX_ENERGY_SYNC_INTERVAL", "99999999999999999d")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("DICKBOX_ENERGY_SYNC_INTERVAL") && err.contains("99999999999999999d"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let bad = f.config_file("  sync_interval: 18446744073709551616\n");
    let out = cmd(&bad, &["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("sync_interval") && err.contains("18446744073709551616"),
        "{err}"
    );
}

/// Issue #7: an empty `cpu.stat` at start used to make `run` fail (a restart
/// loop under systemd). Now the daemon starts, counts host energy and warns
/// once, naming the file.
#[test]
fn daemon_runs_with_an_unparsable_cpu_stat_and_warns_once() {
    let f = Fixture::new();
    let cfg = f.config_file("  sample_interval: 100ms\n  sync_interval: 300ms\n");
    let unit = "dickbox-web@aaaaaaaaaaaaaaaa.service";
    f.set_unit_usec("tori.slice", unit, 0);
    let stat = f
        .root()
        .join("cgroup/tori.slice")
        .join(unit)
        .join("cpu.stat");
    common::write(&stat, "");
    let child = start_daemon(&cfg);
    wait_for_sync(&cfg, now());
    f.set_uj("intel-rapl:0", 7_000_000);
    std::thread::sleep(Duration::from_millis(500));
    let out = terminate(child);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!((cpu_j(&cfg) - 7.0).abs() < 1e-6, "{log}");
    assert_eq!(
        log.matches("CPU time counter unreadable").count(),
        1,
        "{log}"
    );
    assert!(log.contains(&stat.display().to_string()), "{log}");
}

/// Issue #7: `budget_kwh: .nan` in YAML passed `check-config`.
#[test]
fn check_config_refuses_nan_budget_in_yaml() {
    let f = Fixture::new();
    for v in [".nan", ".inf", "-3"] {
        let p = f.config_file(&format!("  budget_kwh: {v}\n"));
        let out = cmd(&p, &["check-config"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{v}: {err}");
        assert!(err.contains("budget_kwh"), "{v}: {err}");
    }
}

/// Issue #7: an unwritable `metrics_path` (missing node-exporter folder) made
/// `run` exit 1. Now it warns once and accounting goes on.
#[test]
fn unwritable_metrics_path_warns_once_and_accounting_goes_on() {
    let f = Fixture::new();
    let metrics = f.root().join("no-such-folder/energy-budget.prom");
    let cfg = f.config_file("  sample_interval: 100ms\n  sync_interval: 300ms\n");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("--set")
        .arg(format!("metrics_path={}", metrics.display()))
        .arg("run")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .env_remove("WATCHDOG_USEC")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_sync(&cfg, now());
    f.set_uj("intel-rapl:0", 3_000_000);
    std::thread::sleep(Duration::from_millis(800));
    let out = terminate(child);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!((cpu_j(&cfg) - 3.0).abs() < 1e-6, "{log}");
    assert_eq!(log.matches("write metrics failed").count(), 1, "{log}");
    assert!(!log.contains("write state"), "{log}");
}

/// Issue #7: a path-like unit name in the config, and `allocate` of one.
#[test]
fn path_like_unit_names_are_refused() {
    let f = Fixture::new();
    let p = f.config_file("  units: [\"../../x\"]\n");
    let out = cmd(&p, &["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("../../x"), "{err}");
    let p = f.config_file("  budget_kwh: 10\n");
    let out = cmd(&p, &["allocate", "../../x", "1"]);
    assert!(!out.status.success());
    let alloc = energy_budget::budget::allocations_path(&f.state_path());
    let stored = std::fs::read_to_string(alloc).unwrap_or_default();
    assert!(!stored.contains("../../x"), "{stored}");
}

/// Issue #7: bad amounts and hours are usage errors (exit 2), checked before
/// any state is needed.
#[test]
fn bad_amounts_and_hours_exit_2() {
    let f = Fixture::new();
    let cfg = f.config_file("  budget_kwh: 10\n");
    for amount in ["-5", "NaN", "inf", "lots"] {
        let out = cmd(&cfg, &["allocate", "web", amount]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{amount}: {err}");
        assert!(err.contains(amount), "{err}");
    }
    for hours in ["99999999", "0"] {
        let out = cmd(&cfg, &["report", "--hours", hours]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{hours}: {err}");
        assert!(err.contains("--hours"), "{err}");
    }
}
