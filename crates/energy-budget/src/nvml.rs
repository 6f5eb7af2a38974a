//! GPU energy: the [`GpuSource`] trait and its one production implementation,
//! NVML.
//!
//! NVML's total energy counter is in mJ since the driver was loaded, so a value
//! lower than the last one is a new counter epoch (driver reload), handled by
//! the integration, not here. GPUs without the counter report only power, and
//! the integration falls back to power × time, marked as an estimate.
//!
//! There is deliberately no other implementation in this crate: the simulated
//! GPU used by the tests lives in the test tree, so neither a build nor a
//! config can select it on a host.

use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;

/// One GPU at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuReading {
    /// `GPU-…` UUID as NVML reports it.
    pub uuid: String,
    /// Total energy since the driver loaded, in mJ, when the GPU has the counter.
    pub total_energy_mj: Option<u64>,
    /// Current power draw in mW, when known.
    pub power_mw: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("NVML unavailable ({0}); GPU energy is not measured")]
    Init(String),
    #[error("NVML query {what}: {error}")]
    Query { what: String, error: String },
}

/// A source of GPU energy readings.
pub trait GpuSource: Send {
    /// Read every GPU. An error means no GPU energy for this sample.
    fn sample(&mut self) -> Result<Vec<GpuReading>, GpuError>;
    /// A short name for logs and `status`.
    fn describe(&self) -> String;
    /// The `GPU-…` UUID of the physical GPU a `MIG-…` instance lives on. NVML's
    /// energy counter is per physical GPU, so MIG users share their parent's.
    fn parent_gpu(&mut self, mig_uuid: &str) -> Result<String, GpuError>;
}

/// The real source: NVML through `libnvidia-ml.so.1`, loaded at run time.
#[derive(Debug)]
pub struct NvmlSource {
    nvml: Nvml,
}

impl NvmlSource {
    /// Load NVML. On a host without the NVIDIA driver this fails with the
    /// loader's message, and the daemon carries on with CPU energy only.
    pub fn open() -> Result<Self, GpuError> {
        Nvml::init()
            .map(|nvml| NvmlSource { nvml })
            .map_err(|e| GpuError::Init(e.to_string()))
    }
}

fn query(what: impl Into<String>) -> impl FnOnce(NvmlError) -> GpuError {
    let what = what.into();
    move |e| GpuError::Query {
        what,
        error: e.to_string(),
    }
}

impl GpuSource for NvmlSource {
    fn sample(&mut self) -> Result<Vec<GpuReading>, GpuError> {
        let count = self.nvml.device_count().map_err(query("device count"))?;
        let mut out = Vec::with_capacity(count as usize);
        for i in 0..count {
            let dev = self
                .nvml
                .device_by_index(i)
                .map_err(query(format!("device {i}")))?;
            let uuid = dev.uuid().map_err(query(format!("uuid of device {i}")))?;
            // NotSupported is the documented answer of GPUs older than Volta;
            // any other failure is also treated as "no counter" for this GPU so
            // one broken query does not hide the others, and the integration
            // says it used power × time instead.
            let total_energy_mj = dev.total_energy_consumption().ok();
            let power_mw = dev.power_usage().ok();
            out.push(GpuReading {
                uuid,
                total_energy_mj,
                power_mw,
            });
        }
        Ok(out)
    }

    fn describe(&self) -> String {
        "nvml".into()
    }

    fn parent_gpu(&mut self, mig_uuid: &str) -> Result<String, GpuError> {
        let what = format!("parent GPU of {mig_uuid}");
        let mig = self.nvml.device_by_uuid(mig_uuid).map_err(query(&what))?;
        let parent = mig.mig_parent_device().map_err(query(&what))?;
        parent.uuid().map_err(query(what))
    }
}
