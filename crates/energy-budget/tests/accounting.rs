//! The accounting engine against folders of real-looking counter files.

mod common;

use common::{DRAM_MAX, Fixture, PKG_MAX, SimulatedGpu, T0, gpu};
use energy_budget::budget::J_PER_KWH;
use energy_budget::config::{Config, PeriodKind};
use energy_budget::daemon::Engine;
use energy_budget::nvml::{GpuError, GpuSource};

fn engine(cfg: Config, g: Option<&SimulatedGpu>) -> Engine {
    let src: Result<Box<dyn GpuSource>, String> = match g {
        Some(g) => Ok(Box::new(g.clone())),
        None => Err("off in this test".into()),
    };
    Engine::start(cfg, src, T0).unwrap()
}

/// Sample at `t` seconds after T0 (boottime and wall clock move together).
fn sample(e: &mut Engine, t: f64) {
    let s = e.read_sample(1000.0 + t, T0 + t).unwrap();
    e.apply(s);
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-6, "{what}: got {a}, want {b}");
}

#[test]
fn rapl_wrap_is_counted_as_distance_to_top_plus_new_value() {
    let f = Fixture::new();
    f.set_uj("intel-rapl:0", PKG_MAX - 3_000_000);
    let mut e = engine(f.config(), None);
    sample(&mut e, 0.0);
    f.set_uj("intel-rapl:0", 2_000_000);
    sample(&mut e, 1.0);
    close(
        e.state().totals.cpu_j,
        5.0,
        "3 J to the top plus 2 J after the wrap",
    );
}

#[test]
fn core_psys_and_mmio_zones_are_not_counted_twice() {
    let f = Fixture::new();
    let mut e = engine(f.config(), None);
    sample(&mut e, 0.0);
    f.set_uj("intel-rapl:0", 10_000_000);
    f.set_uj("intel-rapl:0:0", 8_000_000);
    f.set_uj("intel-rapl:0:1", 1_000_000);
    f.set_uj("intel-rapl:1", 50_000_000);
    f.set_uj("intel-rapl-mmio:0", 10_000_000);
    sample(&mut e, 1.0);
    close(e.state().totals.cpu_j, 11.0, "package + dram only");
}

#[test]
fn unreadable_energy_uj_says_why_and_counts_nothing() {
    let f = Fixture::new();
    let mut e = engine(f.config(), None);
    sample(&mut e, 0.0);
    f.set_uj("intel-rapl:0", 10_000_000);
    let file = f.root().join("powercap/intel-rapl:0/energy_uj");
    if rustix::process::geteuid().is_root() {
        // Root reads any mode, so make the read fail another way.
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    sample(&mut e, 1.0);
    let src = &e.state().sources.cpu;
    assert!(src.starts_with("unavailable"), "{src}");
    assert!(
        src.contains("intel-rapl:0/energy_uj"),
        "names the file: {src}"
    );
    close(e.state().totals.cpu_j, 0.0, "no energy invented");
    e.sync(T0 + 1.0).unwrap();
    let prom = std::fs::read_to_string(&e.config().metrics_path).unwrap();
    assert!(prom.contains("dickbox_energy_cpu_measured 0"), "{prom}");

    // Readable again: the counter is cumulative, so the gap is counted now.
    if file.is_dir() {
        std::fs::remove_dir(&file).unwrap();
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    f.set_uj("intel-rapl:0", 12_000_000);
    sample(&mut e, 2.0);
    assert!(
        e.state().sources.cpu.starts_with("rapl"),
        "{}",
        e.state().sources.cpu
    );
    close(
        e.state().totals.cpu_j,
        12.0,
        "energy over the gap recovered",
    );
}

#[test]
fn nvml_counter_reset_after_driver_reload_is_a_new_epoch() {
    let f = Fixture::new();
    let g = SimulatedGpu::default();
    let mut e = engine(f.config(), Some(&g));
    let uuid = "GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11";
    for (t, mj) in [(0.0, 1_000), (1.0, 5_000), (2.0, 300), (3.0, 800)] {
        g.set(vec![gpu(uuid, Some(mj), Some(1))]);
        sample(&mut e, t);
    }
    // 4 J, then 0.3 J since the reload (not -4.7 J), then 0.5 J.
    close(e.state().totals.gpu_j, 4.8, "gpu energy");
    close(
        e.state().totals.gpu_estimated_j,
        0.0,
        "all from the counter",
    );
    let b = e.state().baseline.as_ref().unwrap();
    assert_eq!(b.gpus[uuid].epoch, 1);
}

#[test]
fn gpu_without_counter_uses_power_times_real_time() {
    let f = Fixture::new();
    let g = SimulatedGpu::default();
    let mut e = engine(f.config(), Some(&g));
    let uuid = "GPU-0d4f1b8e-2a33-4c55-8e77-99aabbccdd01";
    // Irregular intervals: 2 s, 0.5 s, 7 s.
    for (t, mw) in [
        (0.0, 100_000),
        (2.0, 200_000),
        (2.5, 200_000),
        (9.5, 100_000),
    ] {
        g.set(vec![gpu(uuid, None, Some(mw))]);
        sample(&mut e, t);
    }
    // Trapezoids: 150 W × 2 s + 200 W × 0.5 s + 150 W × 7 s = 300 + 100 + 1050.
    close(e.state().totals.gpu_j, 1450.0, "gpu energy");
    close(
        e.state().totals.gpu_estimated_j,
        1450.0,
        "marked as estimate",
    );
    let src = &e.state().sources.gpu;
    assert!(
        src.contains("power x time") && src.contains(uuid),
        "says so: {src}"
    );
}

#[test]
fn failed_gpu_query_keeps_the_counter_baseline() {
    #[derive(Clone)]
    struct Flaky(SimulatedGpu, std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl GpuSource for Flaky {
        fn sample(&mut self) -> Result<Vec<energy_budget::nvml::GpuReading>, GpuError> {
            if self.1.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(GpuError::Query {
                    what: "device count".into(),
                    error: "GPU is lost".into(),
                });
            }
            self.0.sample()
        }
        fn describe(&self) -> String {
            "flaky simulated (tests only)".into()
        }
        fn parent_gpu(&mut self, m: &str) -> Result<String, GpuError> {
            self.0.parent_gpu(m)
        }
    }
    let f = Fixture::new();
    let g = SimulatedGpu::default();
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let src: Box<dyn GpuSource> = Box::new(Flaky(g.clone(), fail.clone()));
    let mut e = Engine::start(f.config(), Ok(src), T0).unwrap();
    let uuid = "GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11";
    g.set(vec![gpu(uuid, Some(1_000), None)]);
    sample(&mut e, 0.0);
    fail.store(true, std::sync::atomic::Ordering::Relaxed);
    sample(&mut e, 1.0);
    assert!(
        e.state().sources.gpu.contains("GPU is lost"),
        "{}",
        e.state().sources.gpu
    );
    fail.store(false, std::sync::atomic::Ordering::Relaxed);
    g.set(vec![gpu(uuid, Some(9_000), None)]);
    sample(&mut e, 2.0);
    close(
        e.state().totals.gpu_j,
        8.0,
        "the gap is counted from the kept reading",
    );
}

#[test]
fn cgroup_counter_going_backwards_counts_the_new_usage() {
    let f = Fixture::new();
    let mut e = engine(f.config(), None);
    let unit = "dickbox-web@3f9c0d1e5a7b2c44.service";
    f.set_unit_usec("tori.slice", unit, 0);
    sample(&mut e, 0.0);
    f.set_uj("intel-rapl:0", 10_000_000);
    f.set_busy_usec(1_000_000);
    f.set_unit_usec("tori.slice", unit, 500_000);
    sample(&mut e, 1.0);
    // The service restarted: its cgroup's counter starts again from zero.
    f.set_uj("intel-rapl:0", 20_000_000);
    f.set_busy_usec(2_000_000);
    f.set_unit_usec("tori.slice", unit, 100_000);
    sample(&mut e, 2.0);
    close(e.state().totals.services["web"].cpu_j, 5.0 + 1.0, "web cpu");
}

#[test]
fn cgroup_v1_layout_is_read_in_nanoseconds() {
    let f = Fixture::with_layout(true);
    let mut e = engine(f.config(), None);
    let unit = "dickbox-api@0123456789abcdef.service";
    f.set_unit_usec("system.slice", unit, 0);
    sample(&mut e, 0.0);
    f.set_uj("intel-rapl:0", 8_000_000);
    f.set_busy_usec(2_000_000);
    f.set_unit_usec("system.slice", unit, 500_000);
    sample(&mut e, 1.0);
    close(
        e.state().totals.services["api"].cpu_j,
        2.0,
        "quarter of 8 J",
    );
}

#[test]
fn power_profiles_integrate_irregular_intervals_while_rapl_is_missing() {
    let f = Fixture::new();
    std::fs::remove_dir_all(f.root().join("powercap")).unwrap();
    let mut cfg = f.config();
    cfg.power_profiles.insert("legacy".into(), 50.0);
    let mut e = engine(cfg, None);
    for t in [0.0, 1.0, 8.0, 8.3] {
        sample(&mut e, t);
    }
    close(e.state().totals.profile_j, 50.0 * 8.3, "50 W over 8.3 s");
    close(
        e.state().totals.services["legacy"].profile_j,
        415.0,
        "service",
    );
    close(e.state().totals.cpu_j, 0.0, "no measured CPU energy");
}

/// The independent check of the issue: a fixed synthetic trace, computed by
/// hand below, reported by the real binary's `status --json` to the joule.
#[test]
fn synthetic_trace_matches_hand_computation_to_the_joule() {
    let f = Fixture::new();
    let cfg_file = f.config_file("  units: [nginx.service]\n  budget_kwh: 1\n");
    let g = SimulatedGpu::default();
    let mut cfg = f.config();
    cfg.units = vec!["nginx.service".into()];
    cfg.budget_kwh = 1.0;
    let gid = "GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11";
    f.unit_file(
        "dickbox-web@.service",
        &format!("[Service]\nEnvironment=\"CUDA_VISIBLE_DEVICES={gid}\" LOG=1\n"),
    );
    f.unit_file(
        "dickbox-batch@.service",
        &format!("[Service]\nEnvironment=CUDA_VISIBLE_DEVICES={gid}\n"),
    );
    let web = "dickbox-web@aaaaaaaaaaaaaaaa.service";
    let batch = "dickbox-batch@bbbbbbbbbbbbbbbb.service";

    // t = 0: baseline. Package 20 J below its wrap point.
    f.set_uj("intel-rapl:0", PKG_MAX - 20_000_000);
    f.set_uj("intel-rapl:0:1", 1_000_000);
    f.set_unit_usec("tori.slice", web, 0);
    f.set_unit_usec("system.slice", batch, 0);
    f.set_unit_usec("system.slice", "nginx.service", 0);
    g.set(vec![gpu(gid, Some(0), Some(250_000))]);
    let mut e = engine(cfg, Some(&g));
    sample(&mut e, 0.0);

    // t = 1.0: package +15 J, dram +2 J = 17 J. Busy 1 s: web 0.4 s → 6.8 J,
    // batch 0.1 s → 1.7 J, nginx 0.1 s → 1.7 J. GPU +100 J, split 50/50.
    f.set_uj("intel-rapl:0", PKG_MAX - 5_000_000);
    f.set_uj("intel-rapl:0:1", 3_000_000);
    f.set_busy_usec(1_000_000);
    f.set_unit_usec("tori.slice", web, 400_000);
    f.set_unit_usec("system.slice", batch, 100_000);
    f.set_unit_usec("system.slice", "nginx.service", 100_000);
    g.set(vec![gpu(gid, Some(100_000), Some(250_000))]);
    sample(&mut e, 1.0);

    // t = 3.5 (2.5 s later): package wraps: 5 J to the top + 25 J = 30 J;
    // dram +5 J: 35 J. Busy 2 s: web +1 s → 17.5 J; batch restarted, counter
    // at 0.05 s → 0.875 J; nginx +0. GPU +50 J → 25 J each.
    f.set_uj("intel-rapl:0", 25_000_000);
    f.set_uj("intel-rapl:0:1", 8_000_000);
    f.set_busy_usec(3_000_000);
    f.set_unit_usec("tori.slice", web, 1_400_000);
    f.set_unit_usec("system.slice", batch, 50_000);
    g.set(vec![gpu(gid, Some(150_000), Some(250_000))]);
    sample(&mut e, 3.5);
    e.sync(T0 + 3.5).unwrap();

    // t = 4.0: package +10 J, web took all 0.5 s of busy time → 10 J. The
    // driver was reloaded: counter at 20 J → new epoch, 20 J → 10 J each.
    f.set_uj("intel-rapl:0", 35_000_000);
    f.set_busy_usec(3_500_000);
    f.set_unit_usec("tori.slice", web, 1_900_000);
    g.set(vec![gpu(gid, Some(20_000), Some(250_000))]);
    sample(&mut e, 4.0);
    e.sync(T0 + 4.0).unwrap();

    // CPU 17 + 35 + 10 = 62 J; GPU 100 + 50 + 20 = 170 J; total 232 J.
    // web: 6.8 + 17.5 + 10 + 85 = 119.3 J; batch: 1.7 + 0.875 + 85 = 87.575 J;
    // nginx: 1.7 J.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_energy-budget"))
        .args(["--config", cfg_file.to_str().unwrap(), "status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    close(v["host"]["used_j"].as_f64().unwrap(), 232.0, "host joules");
    close(
        v["used_kwh"].as_f64().unwrap() * J_PER_KWH,
        232.0,
        "used kWh in J",
    );
    close(
        v["host"]["cpu_kwh"].as_f64().unwrap() * J_PER_KWH,
        62.0,
        "cpu",
    );
    close(
        v["host"]["gpu_kwh"].as_f64().unwrap() * J_PER_KWH,
        170.0,
        "gpu",
    );
    close(
        v["services"]["web"]["total_j"].as_f64().unwrap(),
        119.3,
        "web",
    );
    close(
        v["services"]["batch"]["total_j"].as_f64().unwrap(),
        87.575,
        "batch",
    );
    close(
        v["services"]["nginx.service"]["total_j"].as_f64().unwrap(),
        1.7,
        "nginx",
    );
    assert_eq!(
        v["services"]["web"]["estimated"], true,
        "gpu share is an estimate"
    );
    let _ = DRAM_MAX;
}

#[test]
fn each_warning_fires_once_also_across_restarts() {
    let f = Fixture::new();
    let mut cfg = f.config();
    cfg.period = PeriodKind::Daily;
    cfg.budget_kwh = 100.0 / J_PER_KWH; // 100 J
    let mut e = engine(cfg.clone(), None);
    let mut fired = Vec::new();
    sample(&mut e, 0.0);
    let mut uj = 0;
    for (t, add_j) in [
        (10.0, 30),
        (20.0, 30),
        (30.0, 20),
        (40.0, 12),
        (50.0, 4),
        (60.0, 10),
    ] {
        uj += add_j * 1_000_000;
        f.set_uj("intel-rapl:0", uj);
        sample(&mut e, t);
        fired.extend(e.sync(T0 + t).unwrap().into_iter().map(|w| w.key));
        // A second sync with nothing new fires nothing.
        assert!(e.sync(T0 + t).unwrap().is_empty());
    }
    assert_eq!(fired, ["total:50", "total:75", "total:90", "total:95"]);

    // Projection: after 2 h of a day at 106 J, 24 h would be far above 100 J.
    f.set_uj("intel-rapl:0", uj);
    sample(&mut e, 7200.0);
    let w = e.sync(T0 + 7200.0).unwrap();
    assert_eq!(
        w.iter().map(|w| w.key.as_str()).collect::<Vec<_>>(),
        ["projection:total"]
    );
    drop(e);

    // Restart from the state on disk: nothing fires again.
    let mut e = engine(cfg, None);
    sample(&mut e, 7300.0);
    assert!(e.sync(T0 + 7300.0).unwrap().is_empty());
}

#[test]
fn period_rollover_splits_the_step_and_starts_fresh_warnings() {
    let f = Fixture::new();
    let mut cfg = f.config();
    cfg.period = PeriodKind::Daily;
    cfg.budget_kwh = 20.0 / J_PER_KWH;
    let mut e = engine(cfg, None);
    sample(&mut e, 86_000.0);
    f.set_uj("intel-rapl:0", 12_000_000);
    sample(&mut e, 86_390.0);
    let w = e.sync(T0 + 86_390.0).unwrap();
    assert_eq!(w.len(), 1, "50% of the old period: {w:?}");

    // 40 s across midnight with 40 J: 10 J before, 30 J after.
    f.set_uj("intel-rapl:0", 52_000_000);
    sample(&mut e, 86_430.0);
    let st = e.state();
    assert_eq!(st.past_periods.len(), 1);
    close(st.past_periods[0].totals.cpu_j, 22.0, "old period");
    close(st.totals.cpu_j, 30.0, "new period");
    assert_eq!(st.period.start as f64, T0 + 86_400.0);
    assert!(st.warnings_fired.is_empty());
    let keys: Vec<String> = e
        .sync(T0 + 86_430.0)
        .unwrap()
        .into_iter()
        .map(|w| w.key)
        .collect();
    assert!(
        keys.contains(&"total:50".to_string()),
        "fires again in the new period: {keys:?}"
    );
}

#[test]
fn allocation_warnings_and_redistribution() {
    let f = Fixture::new();
    let mut cfg = f.config();
    cfg.budget_kwh = 1000.0 / J_PER_KWH;
    cfg.weights.insert("b".into(), 3.0);
    let msg = energy_budget::report::allocate(&cfg, "a", &(100.0 / J_PER_KWH).to_string()).unwrap();
    assert!(msg.contains("a:"), "{msg}");
    let mut e = engine(cfg.clone(), None);
    f.set_unit_usec("system.slice", "dickbox-a@1111111111111111.service", 0);
    sample(&mut e, 0.0);
    f.set_uj("intel-rapl:0", 60_000_000);
    f.set_busy_usec(1_000_000);
    f.set_unit_usec(
        "system.slice",
        "dickbox-a@1111111111111111.service",
        1_000_000,
    );
    sample(&mut e, 1.0);
    let keys: Vec<String> = e
        .sync(T0 + 1.0)
        .unwrap()
        .into_iter()
        .map(|w| w.key)
        .collect();
    assert!(keys.contains(&"service:a:50".to_string()), "{keys:?}");
    assert!(!keys.contains(&"service:a:75".to_string()), "{keys:?}");
    let alloc = e.allocations();
    close(alloc["a"] * J_PER_KWH, 100.0, "explicit");
    close(
        alloc["b"] * J_PER_KWH,
        900.0,
        "the rest goes to b, the only other known service",
    );
    // Over-allocating is refused and changes nothing.
    let err = energy_budget::report::allocate(&cfg, "c", "1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("over the budget"), "{err}");
}

#[test]
fn corrupt_state_falls_back_to_last_good_copy_or_refuses() {
    for (what, bytes) in [
        ("empty", Vec::new()),
        ("NUL-filled", vec![0u8; 4096]),
        (
            "truncated",
            b"{\"format\":1,\"period\":{\"kind\":\"monthly\",\"st".to_vec(),
        ),
    ] {
        let f = Fixture::new();
        // A good state with 7 J, then its .bak after a second sync.
        let mut e = engine(f.config(), None);
        sample(&mut e, 0.0);
        f.set_uj("intel-rapl:0", 7_000_000);
        sample(&mut e, 1.0);
        e.sync(T0 + 1.0).unwrap();
        e.sync(T0 + 1.0).unwrap();
        drop(e);
        let p = f.state_path();
        std::fs::write(&p, &bytes).unwrap();

        let mut e = engine(f.config(), None);
        close(e.state().totals.cpu_j, 7.0, what);
        // The energy since the backup's baseline is still counted once.
        f.set_uj("intel-rapl:0", 9_000_000);
        sample(&mut e, 2.0);
        close(e.state().totals.cpu_j, 9.0, what);
        drop(e);

        // No backup: refuse, naming the file, and leave it alone.
        std::fs::write(&p, &bytes).unwrap();
        std::fs::remove_file(energy_budget::state::backup_path(&p)).unwrap();
        let err = Engine::start(f.config(), Err("off".into()), T0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&p.display().to_string()) && err.contains("refusing"),
            "{what}: {err}"
        );
        assert_eq!(
            std::fs::read(&p).unwrap(),
            bytes,
            "{what}: bad file untouched"
        );
    }
}

#[test]
fn metrics_textfile_names_services_and_budget() {
    let f = Fixture::new();
    let mut cfg = f.config();
    cfg.budget_kwh = 2.0;
    let mut e = engine(cfg, None);
    f.set_unit_usec("tori.slice", "dickbox-web@aaaaaaaaaaaaaaaa.service", 0);
    sample(&mut e, 0.0);
    f.set_uj("intel-rapl:0", 3_600_000_000);
    f.set_busy_usec(1_000_000);
    f.set_unit_usec(
        "tori.slice",
        "dickbox-web@aaaaaaaaaaaaaaaa.service",
        1_000_000,
    );
    sample(&mut e, 60.0);
    e.sync(T0 + 60.0).unwrap();
    let prom = std::fs::read_to_string(&e.config().metrics_path).unwrap();
    for want in [
        "dickbox_energy_service_joules{service=\"web\",source=\"cpu\"} 3600",
        "dickbox_energy_budget_kwh 2",
        "dickbox_energy_budget_used_kwh 0.001",
        "dickbox_energy_cpu_measured 1",
        "# TYPE dickbox_energy_host_joules gauge",
    ] {
        assert!(prom.contains(want), "missing {want:?} in\n{prom}");
    }
    assert!(!f.root().join("state/energy-budget.prom.tmp").exists());
}

/// Two services on two MIG instances of one GPU share that GPU's energy.
#[test]
fn mig_instances_share_their_parent_gpus_energy() {
    let f = Fixture::new();
    let g = SimulatedGpu::default();
    let parent = "GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11";
    let (mig_a, mig_b) = (
        "MIG-1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718",
        "MIG-2f2e3d4c-5b6a-7980-a1b2-c3d4e5f60719",
    );
    g.mig_parents.lock().unwrap().extend([
        (mig_a.to_string(), parent.to_string()),
        (mig_b.to_string(), parent.to_string()),
    ]);
    f.unit_file(
        "dickbox-web@.service",
        &format!("[Service]\nEnvironment=CUDA_VISIBLE_DEVICES={mig_a}\n"),
    );
    f.unit_file(
        "dickbox-api@.service",
        &format!("[Service]\nEnvironment=CUDA_VISIBLE_DEVICES={mig_b}\n"),
    );
    f.set_unit_usec("tori.slice", "dickbox-web@aaaaaaaaaaaaaaaa.service", 0);
    f.set_unit_usec("tori.slice", "dickbox-api@bbbbbbbbbbbbbbbb.service", 0);
    let mut e = engine(f.config(), Some(&g));
    g.set(vec![gpu(parent, Some(0), None)]);
    sample(&mut e, 0.0);
    g.set(vec![gpu(parent, Some(10_000), None)]);
    sample(&mut e, 1.0);
    close(e.state().totals.services["web"].gpu_j, 5.0, "web");
    close(e.state().totals.services["api"].gpu_j, 5.0, "api");
}

/// Issue #7: one unparsable `cpu.stat` skips that unit only; the host and the
/// other services keep being counted, and the unit's gap is not counted twice
/// when its file is readable again.
#[test]
fn unparsable_cpu_stat_skips_only_that_unit() {
    let f = Fixture::new();
    let mut e = engine(f.config(), None);
    let good = "dickbox-web@3f9c0d1e5a7b2c44.service";
    let bad = "dickbox-api@0123456789abcdef.service";
    f.set_unit_usec("tori.slice", good, 0);
    f.set_unit_usec("tori.slice", bad, 0);
    sample(&mut e, 0.0);
    let bad_stat = f
        .root()
        .join("cgroup/tori.slice")
        .join(bad)
        .join("cpu.stat");
    common::write(&bad_stat, "");
    f.set_uj("intel-rapl:0", 10_000_000);
    f.set_busy_usec(1_000_000);
    f.set_unit_usec("tori.slice", good, 500_000);
    sample(&mut e, 1.0);
    common::write(&bad_stat, "usage_usec garbage\n");
    f.set_uj("intel-rapl:0", 20_000_000);
    f.set_busy_usec(2_000_000);
    sample(&mut e, 2.0);
    close(e.state().totals.cpu_j, 20.0, "host energy still counted");
    close(
        e.state().totals.services["web"].cpu_j,
        5.0,
        "web's half of 10 J",
    );
    assert!(!e.state().totals.services.contains_key("api"));
    // Readable again with a large counter: it becomes the baseline.
    f.set_unit_usec("tori.slice", bad, 1_500_000);
    f.set_uj("intel-rapl:0", 30_000_000);
    f.set_busy_usec(3_000_000);
    sample(&mut e, 3.0);
    f.set_unit_usec("tori.slice", bad, 2_000_000);
    f.set_uj("intel-rapl:0", 40_000_000);
    f.set_busy_usec(4_000_000);
    sample(&mut e, 4.0);
    close(e.state().totals.cpu_j, 40.0, "host energy");
    close(
        e.state().totals.services["api"].cpu_j,
        5.0,
        "only the interval after recovery",
    );
}

/// Issue #7: an unparsable `/proc/stat` must not block RAPL: host energy is
/// counted, only the shares are skipped (not split as if services were all).
#[test]
fn unparsable_proc_stat_keeps_counting_host_energy() {
    let f = Fixture::new();
    let mut e = engine(f.config(), None);
    let unit = "dickbox-web@3f9c0d1e5a7b2c44.service";
    f.set_unit_usec("tori.slice", unit, 0);
    sample(&mut e, 0.0);
    common::write(&f.root().join("proc/stat"), "");
    f.set_uj("intel-rapl:0", 10_000_000);
    f.set_unit_usec("tori.slice", unit, 100_000);
    sample(&mut e, 1.0);
    close(e.state().totals.cpu_j, 10.0, "host energy");
    let web = e
        .state()
        .totals
        .services
        .get("web")
        .map_or(0.0, |s| s.cpu_j);
    close(web, 0.0, "no share without host busy time");
    // Missing cgroup hierarchy: still no failure.
    std::fs::remove_file(f.root().join("cgroup/cgroup.controllers")).unwrap();
    f.set_uj("intel-rapl:0", 20_000_000);
    sample(&mut e, 2.0);
    close(e.state().totals.cpu_j, 20.0, "host energy");
}

/// Issue #7: a RAPL counter going back within 100 ms cannot be a wrap (262 kJ
/// in 0.1 s is 2.6 MW): it is a reset and the new value counts from 0.
#[test]
fn rapl_counter_going_back_too_fast_is_a_reset_not_a_wrap() {
    let f = Fixture::new();
    f.set_uj("intel-rapl:0", 5_000_000);
    let mut e = engine(f.config(), None);
    sample(&mut e, 0.0);
    f.set_uj("intel-rapl:0", 1_000_000);
    sample(&mut e, 0.1);
    close(e.state().totals.cpu_j, 1.0, "reset: the new 1 J only");
    f.set_uj("intel-rapl:0", 3_000_000);
    sample(&mut e, 1.1);
    close(
        e.state().totals.cpu_j,
        3.0,
        "counting goes on from the reset",
    );
}

/// Issue #7: `energy_uj` above `max_energy_range_uj` is refused, not counted.
#[test]
fn rapl_reading_above_its_range_is_refused() {
    let f = Fixture::new();
    let mut e = engine(f.config(), None);
    sample(&mut e, 0.0);
    f.set_uj("intel-rapl:0", PKG_MAX + 1);
    let s = e.read_sample(1001.0, T0 + 1.0).unwrap();
    match &s.rapl {
        energy_budget::rapl::RaplReading::Unavailable(why) => {
            assert!(why.contains("above max_energy_range_uj"), "{why}")
        }
        other => panic!("reading accepted: {other:?}"),
    }
    e.apply(s);
    close(e.state().totals.cpu_j, 0.0, "nothing counted");
    // Valid again: the baseline kept from before counts the real change.
    f.set_uj("intel-rapl:0", 4_000_000);
    sample(&mut e, 2.0);
    close(
        e.state().totals.cpu_j,
        4.0,
        "counted from the kept baseline",
    );
}

/// Issue #7: a NUL-filled boot id was accepted as a boot id.
#[test]
fn malformed_boot_id_is_refused_naming_the_file() {
    let f = Fixture::new();
    for bad in ["\0\0\0\0", "", "not a uuid"] {
        common::write(&f.root().join("proc/sys/kernel/random/boot_id"), bad);
        let err = Engine::start(f.config(), Err("off".into()), T0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("boot_id") && err.contains("not a UUID"),
            "{err}"
        );
    }
}
