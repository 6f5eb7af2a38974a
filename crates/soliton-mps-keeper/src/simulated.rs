//! A simulated GPU for the test suite. Compiled only with the `simulated-gpu`
//! feature, which only `cargo test` enables (see the crate's dev-dependencies);
//! release builds and packages do not contain this module.
//!
//! The simulation lives in a folder named by `SOLITON_MPS_KEEPER_SIMULATED_GPU`:
//!
//! - `gpus`: one device per line, `gpu <uuid> <index> <name…>` or
//!   `mig <uuid> <parent-uuid> <gi> <ci> <name…>`;
//! - `fault` (optional): a one-shot fault, taken (deleted) by the launch or
//!   context creation it applies to, so a restarted keeper runs clean:
//!   `slow <ms>` (the next kernel takes that long), `hang` (the next launch
//!   never returns, like a keeper stuck in a driver call), `sticky` (the next
//!   kernel fails with CUDA_ERROR_ILLEGAL_ADDRESS), `refuse` (the next context
//!   creation gets CUDA_ERROR_MPS_CONNECTION_FAILED);
//! - `events.log`: appended by the simulation (`open`, `kernel`, `destroy`, each
//!   with the pid), so tests can see that a context was destroyed before exit.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::backend::{
    GpuBackend, GpuError, GpuSample, Kernel, MigPlacement, ResolvedGpu, classify_cuda_error,
    resolve_in,
};
use crate::device_id::{DeviceArg, GpuUuid};

/// The simulated backend.
#[derive(Debug)]
pub struct SimulatedGpu {
    dir: PathBuf,
    open: Option<String>,
    pending: Option<(Instant, Duration, Kernel, bool)>,
}

impl SimulatedGpu {
    /// A simulation driven by the files in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            open: None,
            pending: None,
        }
    }

    fn log(&self, what: &str) {
        let line = format!("{what} pid={}\n", std::process::id());
        // The event log is test evidence only; a failed append shows up as a
        // missing line in the test that reads it.
        if let Ok(mut f) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("events.log"))
        {
            let _ = f.write_all(line.as_bytes());
        }
    }

    fn take_fault(&self, applies: &[&str]) -> Option<String> {
        let path = self.dir.join("fault");
        let text = fs::read_to_string(&path).ok()?;
        let text = text.trim().to_owned();
        let word = text.split_whitespace().next().unwrap_or("");
        if !applies.contains(&word) {
            return None;
        }
        // Taken once: a restarted keeper must not hit the same fault again.
        fs::remove_file(&path).ok()?;
        self.log(&format!("fault {text}"));
        Some(text)
    }
}

fn sim_err(msg: String) -> GpuError {
    GpuError::Simulation(msg)
}

impl GpuBackend for SimulatedGpu {
    fn preflight(&mut self) -> Result<(), GpuError> {
        if !self.dir.join("gpus").is_file() {
            return Err(sim_err(format!("{} has no gpus file", self.dir.display())));
        }
        Ok(())
    }

    fn list(&mut self) -> Result<Vec<ResolvedGpu>, GpuError> {
        let path = self.dir.join("gpus");
        let text = fs::read_to_string(&path)
            .map_err(|e| sim_err(format!("read {}: {e}", path.display())))?;
        let mut all = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let bad = || sim_err(format!("{} line {}: malformed", path.display(), n + 1));
            let words: Vec<&str> = line.split_whitespace().collect();
            let uuid = |s: &str| GpuUuid::parse(s).map_err(|_| bad());
            let num = |s: &str| s.parse::<u32>().map_err(|_| bad());
            match words.as_slice() {
                [] => {}
                ["gpu", id, index, name @ ..] => all.push(ResolvedGpu {
                    uuid: uuid(id)?,
                    index: num(index)?,
                    name: name.join(" "),
                    mig: None,
                }),
                ["mig", id, parent, gi, ci, name @ ..] => {
                    let parent = uuid(parent)?;
                    let index = all
                        .iter()
                        .find(|g: &&ResolvedGpu| g.uuid == parent)
                        .map(|g| g.index)
                        .ok_or_else(bad)?;
                    all.push(ResolvedGpu {
                        uuid: uuid(id)?,
                        index,
                        name: name.join(" "),
                        mig: Some(MigPlacement {
                            parent,
                            gpu_instance: num(gi)?,
                            compute_instance: num(ci)?,
                        }),
                    });
                }
                _ => return Err(bad()),
            }
        }
        Ok(all)
    }

    fn resolve(&mut self, device: &DeviceArg) -> Result<ResolvedGpu, GpuError> {
        let all = self.list()?;
        resolve_in(&all, device)
    }

    fn sample(&mut self, gpu: &ResolvedGpu) -> GpuSample {
        if gpu.mig.is_some() {
            // Like real MIG devices: memory only.
            return GpuSample {
                memory_used: Some(1 << 20),
                memory_total: Some(10 << 30),
                ..GpuSample::default()
            };
        }
        GpuSample {
            utilization: Some(0.07),
            memory_used: Some(512 << 20),
            memory_total: Some(80 << 30),
            temperature_celsius: Some(41),
            power_watts: Some(71.5),
        }
    }

    fn open_context(&mut self, gpu: &ResolvedGpu) -> Result<(), GpuError> {
        if self.take_fault(&["refuse"]).is_some() {
            return Err(classify_cuda_error(
                gpu.uuid.as_str(),
                "cuCtxCreate",
                "CUDA_ERROR_MPS_CONNECTION_FAILED",
            ));
        }
        self.open = Some(gpu.uuid.to_string());
        self.log(&format!("open {}", gpu.uuid));
        Ok(())
    }

    fn launch(&mut self, kernel: Kernel) -> Result<(), GpuError> {
        let Some(gpu) = self.open.clone() else {
            return Err(sim_err("launch without a context".into()));
        };
        let mut duration = Duration::from_millis(1);
        let mut sticky = kernel == Kernel::Fault;
        if let Some(fault) = self.take_fault(&["slow", "hang", "sticky"]) {
            let mut words = fault.split_whitespace();
            match (words.next(), words.next()) {
                (Some("slow"), Some(ms)) => {
                    let ms: u64 = ms
                        .parse()
                        .map_err(|_| sim_err(format!("bad fault {fault:?}")))?;
                    duration = Duration::from_millis(ms);
                }
                (Some("hang"), None) => loop {
                    // Stuck "inside a driver call": only the watchdog (or a
                    // signal) ends this process.
                    std::thread::sleep(Duration::from_secs(3600));
                },
                (Some("sticky"), None) => sticky = true,
                _ => return Err(sim_err(format!("bad fault {fault:?}"))),
            }
        }
        self.log(&format!("kernel {gpu}"));
        self.pending = Some((Instant::now(), duration, kernel, sticky));
        Ok(())
    }

    fn poll(&mut self) -> Result<bool, GpuError> {
        let Some((start, duration, _, sticky)) = self.pending else {
            return Ok(false);
        };
        if start.elapsed() < duration {
            return Ok(false);
        }
        self.pending = None;
        if sticky {
            let gpu = self.open.clone().unwrap_or_default();
            return Err(classify_cuda_error(
                &gpu,
                "cuEventQuery",
                "CUDA_ERROR_ILLEGAL_ADDRESS",
            ));
        }
        Ok(true)
    }

    fn destroy_context(&mut self) {
        if let Some(gpu) = self.open.take() {
            self.log(&format!("destroy {gpu}"));
        }
        self.pending = None;
    }
}
