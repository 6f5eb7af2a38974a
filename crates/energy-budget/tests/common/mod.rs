//! Test-only helpers: a folder of real-looking sysfs, cgroup and proc counter
//! files, a config pointing at it, and the simulated GPU source.
//!
//! `SimulatedGpu` exists only in this test tree: the crate itself has no
//! simulated source, so no build or config of the daemon can select it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use energy_budget::config::{Config, GpuSourceKind};
use energy_budget::nvml::{GpuError, GpuReading, GpuSource};

/// A fixture root with `powercap/`, `cgroup/` (v2 or v1), `proc/` and `units/`.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub v1: bool,
}

pub const PKG_MAX: u64 = 262_143_328_850;
pub const DRAM_MAX: u64 = 65_712_999_613;

impl Fixture {
    pub fn new() -> Self {
        Self::with_layout(false)
    }

    pub fn with_layout(v1: bool) -> Self {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
            v1,
        };
        let r = f.root();
        // Package 0 with its core and dram sub-zones, as on a real Intel host,
        // plus the mmio mirror and psys that must not be counted again.
        f.zone("intel-rapl:0", "package-0", 0, PKG_MAX);
        f.zone("intel-rapl:0:0", "core", 0, PKG_MAX);
        f.zone("intel-rapl:0:1", "dram", 0, DRAM_MAX);
        f.zone("intel-rapl-mmio:0", "package-0", 0, PKG_MAX);
        f.zone("intel-rapl:1", "psys", 0, PKG_MAX);
        std::fs::create_dir_all(r.join("powercap/intel-rapl")).unwrap();
        if v1 {
            std::fs::create_dir_all(r.join("cgroup/cpu,cpuacct/system.slice")).unwrap();
            write(&r.join("cgroup/cpu,cpuacct/cpuacct.usage"), "0\n");
        } else {
            std::fs::create_dir_all(r.join("cgroup/system.slice")).unwrap();
            write(
                &r.join("cgroup/cgroup.controllers"),
                "cpuset cpu io memory pids\n",
            );
        }
        write(
            &r.join("proc/sys/kernel/random/boot_id"),
            "3d2c9c1e-6f7a-4b8e-9a55-0f6c2f1a7e11\n",
        );
        std::fs::create_dir_all(r.join("units")).unwrap();
        std::fs::create_dir_all(r.join("state")).unwrap();
        f.set_busy_usec(0);
        f
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn zone(&self, zone: &str, name: &str, uj: u64, max: u64) {
        let d = self.root().join("powercap").join(zone);
        std::fs::create_dir_all(&d).unwrap();
        write(&d.join("name"), &format!("{name}\n"));
        write(&d.join("energy_uj"), &format!("{uj}\n"));
        write(&d.join("max_energy_range_uj"), &format!("{max}\n"));
    }

    pub fn set_uj(&self, zone: &str, uj: u64) {
        write(
            &self.root().join("powercap").join(zone).join("energy_uj"),
            &format!("{uj}\n"),
        );
    }

    /// Host busy time; written as USER_HZ ticks in a /proc/stat `cpu` line.
    pub fn set_busy_usec(&self, usec: u64) {
        assert_eq!(usec % 10_000, 0, "busy time must be whole ticks");
        let ticks = usec / 10_000;
        write(
            &self.root().join("proc/stat"),
            &format!(
                "cpu  {ticks} 0 0 123456 789 0 0 0 0 0\ncpu0 {ticks} 0 0 123456 789 0 0 0 0 0\n\
                 intr 0\nctxt 0\nbtime 1796000000\n"
            ),
        );
    }

    /// Set the usage of a unit cgroup under `slice` (created when missing).
    pub fn set_unit_usec(&self, slice: &str, unit: &str, usec: u64) {
        let r = self.root();
        if self.v1 {
            let d = r.join("cgroup/cpu,cpuacct").join(slice).join(unit);
            std::fs::create_dir_all(&d).unwrap();
            write(&d.join("cpuacct.usage"), &format!("{}\n", usec * 1000));
        } else {
            let d = r.join("cgroup").join(slice).join(unit);
            std::fs::create_dir_all(&d).unwrap();
            write(
                &d.join("cpu.stat"),
                &format!("usage_usec {usec}\nuser_usec {usec}\nsystem_usec 0\n"),
            );
        }
    }

    pub fn remove_unit(&self, slice: &str, unit: &str) {
        let base = if self.v1 {
            "cgroup/cpu,cpuacct"
        } else {
            "cgroup"
        };
        std::fs::remove_dir_all(self.root().join(base).join(slice).join(unit)).unwrap();
    }

    pub fn unit_file(&self, name: &str, text: &str) {
        write(&self.root().join("units").join(name), text);
    }

    pub fn state_path(&self) -> PathBuf {
        self.root().join("state/energy.json")
    }

    pub fn config(&self) -> Config {
        let r = self.root();
        Config {
            budget_path: self.state_path(),
            metrics_path: r.join("state/energy-budget.prom"),
            rapl_root: r.join("powercap"),
            cgroup_root: r.join("cgroup"),
            proc_root: r.join("proc"),
            unit_dirs: vec![r.join("units")],
            gpu: GpuSourceKind::Off,
            ..Config::default()
        }
    }

    /// A config file for the binary, with the roots pointing here.
    pub fn config_file(&self, extra: &str) -> PathBuf {
        let r = self.root();
        let text = format!(
            "energy:\n  budget_path: {}\n  metrics_path: {}\n  rapl_root: {}\n  \
             cgroup_root: {}\n  proc_root: {}\n  unit_dirs: [{}]\n  gpu: off\n{extra}",
            self.state_path().display(),
            r.join("state/energy-budget.prom").display(),
            r.join("powercap").display(),
            r.join("cgroup").display(),
            r.join("proc").display(),
            r.join("units").display(),
        );
        let p = r.join("dickbox.yml");
        write(&p, &text);
        p
    }
}

/// Write a counter file the way the kernel presents it: a reader sees the old
/// or the new value, never an empty or half-written file.
pub fn write(path: &Path, text: &str) {
    let dir = path.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Simulated GPU for tests: readings are set by the test through the handle.
#[derive(Clone, Default)]
pub struct SimulatedGpu {
    pub readings: Arc<Mutex<Vec<GpuReading>>>,
    /// MIG UUID → parent GPU UUID.
    pub mig_parents: Arc<Mutex<std::collections::BTreeMap<String, String>>>,
}

impl SimulatedGpu {
    pub fn set(&self, r: Vec<GpuReading>) {
        *self.readings.lock().unwrap() = r;
    }
}

impl GpuSource for SimulatedGpu {
    fn sample(&mut self) -> Result<Vec<GpuReading>, GpuError> {
        Ok(self.readings.lock().unwrap().clone())
    }
    fn describe(&self) -> String {
        "simulated (tests only)".into()
    }
    fn parent_gpu(&mut self, mig_uuid: &str) -> Result<String, GpuError> {
        self.mig_parents
            .lock()
            .unwrap()
            .get(mig_uuid)
            .cloned()
            .ok_or_else(|| GpuError::Query {
                what: format!("parent GPU of {mig_uuid}"),
                error: "not found".into(),
            })
    }
}

pub fn gpu(uuid: &str, mj: Option<u64>, mw: Option<u32>) -> GpuReading {
    GpuReading {
        uuid: uuid.into(),
        total_energy_mj: mj,
        power_mw: mw,
    }
}

/// Base wall time for traces: 2026-12-04T00:00:00Z.
pub const T0: f64 = 1_796_342_400.0;
