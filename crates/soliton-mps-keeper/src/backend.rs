//! The one interface between the keeper and the GPU: NVML lookups and metrics,
//! and a CUDA context that launches and polls one tiny kernel at a time.
//!
//! [`real`](crate::real) implements it with NVML and the CUDA driver API. A
//! simulated implementation exists only in builds with the `simulated-gpu`
//! cargo feature, which only the test suite enables; [`select`] is the single
//! place that chooses, so a production build cannot reach the simulation.

use std::path::PathBuf;

use crate::device_id::{DeviceArg, GpuUuid};

/// A kernel the keeper can launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Writes `value + 1` to device memory; checked on completion.
    Keepalive,
    /// Stores to address 0 on purpose (fault injection for gpu-check).
    Fault,
}

/// MIG placement of a MIG device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigPlacement {
    /// The parent GPU's UUID.
    pub parent: GpuUuid,
    /// GPU instance id.
    pub gpu_instance: u32,
    /// Compute instance id.
    pub compute_instance: u32,
}

/// A device found through NVML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedGpu {
    /// Its modern UUID, usable as an instance name.
    pub uuid: GpuUuid,
    /// NVML index of the GPU (of the parent GPU for a MIG device).
    pub index: u32,
    /// Product name as NVML reports it.
    pub name: String,
    /// Set for MIG devices.
    pub mig: Option<MigPlacement>,
}

/// One metrics sample; a field is `None` where the device does not report it
/// (MIG devices report few of these).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuSample {
    /// GPU utilisation, 0.0 to 1.0.
    pub utilization: Option<f64>,
    /// Memory in use, bytes.
    pub memory_used: Option<u64>,
    /// Memory size, bytes.
    pub memory_total: Option<u64>,
    /// Core temperature, °C.
    pub temperature_celsius: Option<u32>,
    /// Board power draw, watts.
    pub power_watts: Option<f64>,
}

/// What went wrong, grouped by what the operator (and the exit code) needs to know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// Parts of the driver are absent; each entry names one and why.
    #[error("NVIDIA driver not usable here: {}", .missing.join("; "))]
    DriverMissing { missing: Vec<String> },
    /// A driver library cannot be loaded.
    #[error("cannot load {library} (NVIDIA driver not installed?): {cause}")]
    LibraryMissing {
        library: &'static str,
        cause: String,
    },
    /// An NVML call failed.
    #[error("NVML {call} failed: {cause}")]
    Nvml { call: &'static str, cause: String },
    /// No device has this UUID.
    #[error("no GPU or MIG device {uuid} on this host (present: {})", present_list(.present))]
    NotFound { uuid: String, present: Vec<String> },
    /// No MIG device matches the old-form name.
    #[error(
        "no MIG device {given} on this host: GPU instance {gpu_instance} compute instance \
         {compute_instance} not found (present: {})", present_list(.present)
    )]
    LegacyMigNotFound {
        given: String,
        gpu_instance: u32,
        compute_instance: u32,
        present: Vec<String>,
    },
    /// CUDA sees a different device than the one asked for.
    #[error("CUDA device 0 is {found}, not {expected} (check CUDA_VISIBLE_DEVICES)")]
    WrongDevice { expected: String, found: String },
    /// The MPS server refused this client or dropped it.
    #[error("MPS refused the client on {gpu}: {call} returned {code}")]
    MpsRefused {
        gpu: String,
        call: &'static str,
        code: String,
    },
    /// A sticky error: the context is unusable until the process exits.
    #[error("sticky CUDA error on {gpu}: {call} returned {code}")]
    Sticky {
        gpu: String,
        call: &'static str,
        code: String,
    },
    /// Any other CUDA error.
    #[error("CUDA error on {gpu}: {call} returned {code}")]
    Cuda {
        gpu: String,
        call: &'static str,
        code: String,
    },
    /// The kernel completed but did not write what it should have.
    #[error("kernel on {gpu} wrote {got}, expected {expected}")]
    WrongResult {
        gpu: String,
        expected: u32,
        got: u32,
    },
    /// The simulation was asked for (test builds only) and is misconfigured.
    #[error("simulated GPU: {0}")]
    Simulation(String),
}

fn present_list(present: &[String]) -> String {
    if present.is_empty() {
        "none".into()
    } else {
        present.join(", ")
    }
}

/// Sorts a CUDA driver error code (its `CUDA_ERROR_…` name) into the error the
/// keeper acts on.
pub fn classify_cuda_error(gpu: &str, call: &'static str, code: &str) -> GpuError {
    let gpu = gpu.to_owned();
    let code_s = code.to_owned();
    if code.starts_with("CUDA_ERROR_MPS_") {
        return GpuError::MpsRefused {
            gpu,
            call,
            code: code_s,
        };
    }
    // Errors after which the CUDA context cannot be used again (the CUDA
    // programming guide calls them sticky); only a new process recovers.
    const STICKY: [&str; 12] = [
        "CUDA_ERROR_ILLEGAL_ADDRESS",
        "CUDA_ERROR_ILLEGAL_INSTRUCTION",
        "CUDA_ERROR_MISALIGNED_ADDRESS",
        "CUDA_ERROR_INVALID_ADDRESS_SPACE",
        "CUDA_ERROR_INVALID_PC",
        "CUDA_ERROR_LAUNCH_FAILED",
        "CUDA_ERROR_HARDWARE_STACK_ERROR",
        "CUDA_ERROR_ECC_UNCORRECTABLE",
        "CUDA_ERROR_ASSERT",
        "CUDA_ERROR_LAUNCH_TIMEOUT",
        "CUDA_ERROR_CONTEXT_IS_DESTROYED",
        "CUDA_ERROR_UNKNOWN",
    ];
    if STICKY.contains(&code) {
        GpuError::Sticky {
            gpu,
            call,
            code: code_s,
        }
    } else {
        GpuError::Cuda {
            gpu,
            call,
            code: code_s,
        }
    }
}

/// Finds `device` among the devices NVML listed. UUIDs compare without regard
/// to case; the old MIG form matches the parent GPU and the instance ids.
pub fn resolve_in(all: &[ResolvedGpu], device: &DeviceArg) -> Result<ResolvedGpu, GpuError> {
    let present = || all.iter().map(|g| g.uuid.to_string()).collect::<Vec<_>>();
    match device {
        DeviceArg::Uuid(uuid) => all
            .iter()
            .find(|g| g.uuid.as_str().eq_ignore_ascii_case(uuid.as_str()))
            .cloned()
            .ok_or_else(|| GpuError::NotFound {
                uuid: uuid.to_string(),
                present: present(),
            }),
        DeviceArg::LegacyMig {
            parent,
            gpu_instance,
            compute_instance,
        } => all
            .iter()
            .find(|g| {
                g.mig.as_ref().is_some_and(|m| {
                    m.parent.as_str().eq_ignore_ascii_case(parent.as_str())
                        && m.gpu_instance == *gpu_instance
                        && m.compute_instance == *compute_instance
                })
            })
            .cloned()
            .ok_or_else(|| GpuError::LegacyMigNotFound {
                given: device.to_string(),
                gpu_instance: *gpu_instance,
                compute_instance: *compute_instance,
                present: present(),
            }),
    }
}

/// NVML and CUDA as the keeper uses them. One implementation talks to the
/// driver; the other is a simulation compiled only into test builds.
pub trait GpuBackend {
    /// Checks that device nodes and driver libraries are present.
    fn preflight(&mut self) -> Result<(), GpuError>;
    /// All GPUs and MIG devices NVML knows.
    fn list(&mut self) -> Result<Vec<ResolvedGpu>, GpuError>;
    /// Looks a device up; the old MIG form is mapped to its modern UUID.
    fn resolve(&mut self, device: &DeviceArg) -> Result<ResolvedGpu, GpuError>;
    /// Reads metrics; fields the device does not report stay `None`.
    fn sample(&mut self, gpu: &ResolvedGpu) -> GpuSample;
    /// Creates the CUDA context on CUDA device 0 (the unit's
    /// `CUDA_VISIBLE_DEVICES` makes that the keeper's device) and loads the
    /// kernels.
    fn open_context(&mut self, gpu: &ResolvedGpu) -> Result<(), GpuError>;
    /// Enqueues one kernel; returns once it is queued, not when it is done.
    fn launch(&mut self, kernel: Kernel) -> Result<(), GpuError>;
    /// Whether the last kernel completed (and wrote the right value).
    fn poll(&mut self) -> Result<bool, GpuError>;
    /// Destroys the context; safe to call when none is open.
    fn destroy_context(&mut self);
}

/// Environment variable that selects the simulated backend in test builds.
pub const SIMULATED_GPU_ENV: &str = "SOLITON_MPS_KEEPER_SIMULATED_GPU";

/// Whether this build contains the simulated backend: only debug builds with
/// the `simulated-gpu` feature, which only the crate's own tests turn on.
/// Cargo unifies features, so a debug binary built in the same run as the
/// tests carries the feature too; `debug_assertions` keeps every release
/// build (what is packaged and installed) free of it, whatever the features.
pub const HAS_SIMULATION: bool = cfg!(all(feature = "simulated-gpu", debug_assertions));

/// Picks the backend: the real one, or in a test build the simulation named by
/// [`SIMULATED_GPU_ENV`]. A production build refuses the variable rather than
/// ignore it, so a test set-up cannot silently reach a real GPU.
pub fn select(simulated_dir: Option<PathBuf>) -> Result<Box<dyn GpuBackend>, GpuError> {
    match simulated_dir {
        None => Ok(Box::new(crate::real::RealGpu::new())),
        #[cfg(all(feature = "simulated-gpu", debug_assertions))]
        Some(dir) => {
            tracing::warn!(dir = %dir.display(), "using the SIMULATED GPU backend (test build)");
            Ok(Box::new(crate::simulated::SimulatedGpu::new(dir)))
        }
        #[cfg(not(all(feature = "simulated-gpu", debug_assertions)))]
        Some(_) => Err(GpuError::Simulation(format!(
            "{SIMULATED_GPU_ENV} is set but this build has no simulated backend (unset it)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_cuda_errors_by_what_recovers_them() {
        for (code, want) in [
            ("CUDA_ERROR_ILLEGAL_ADDRESS", "sticky"),
            ("CUDA_ERROR_LAUNCH_FAILED", "sticky"),
            ("CUDA_ERROR_MPS_CONNECTION_FAILED", "mps"),
            ("CUDA_ERROR_MPS_SERVER_NOT_READY", "mps"),
            ("CUDA_ERROR_OUT_OF_MEMORY", "other"),
            ("CUDA_ERROR_INVALID_VALUE", "other"),
        ] {
            let got = match classify_cuda_error("GPU-x", "cuLaunchKernel", code) {
                GpuError::Sticky { .. } => "sticky",
                GpuError::MpsRefused { .. } => "mps",
                GpuError::Cuda { .. } => "other",
                e => panic!("{code}: {e}"),
            };
            assert_eq!(got, want, "{code}");
        }
    }
}
