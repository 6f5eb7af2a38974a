//! Exit codes: part of the interface (the unit's `RestartPreventExitStatus=`,
//! scripts/gpu-check and alerting read them), listed in `--help`.

/// The keeper's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success (`check-config`, `list`, `resolve`, or `run --max-kernels`).
    Ok = 0,
    /// An internal error (a bug, or the simulated backend misconfigured).
    Internal = 1,
    /// Bad command line (clap's own code).
    Usage = 2,
    /// Bad configuration or environment (config file, DICKBOX_KEEPER_*,
    /// CUDA_VISIBLE_DEVICES / CUDA_MPS_PIPE_DIRECTORY, watchdog too short).
    Config = 3,
    /// No NVIDIA device node or driver library.
    DriverMissing = 4,
    /// The device id is malformed or names no device on this host.
    GpuNotFound = 5,
    /// The old `MIG-GPU-…/<gi>/<ci>` name was given; the message names the
    /// modern instance name to use.
    LegacyMigName = 6,
    /// The MPS pipe folder is missing or unusable.
    PipeFolder = 7,
    /// The MPS server refused or dropped the client.
    MpsRefused = 8,
    /// A kernel did not complete within `kernel_deadline`.
    DeadlineMissed = 9,
    /// A sticky CUDA error: the context is lost.
    StickyError = 10,
    /// Any other CUDA or NVML error.
    CudaError = 11,
    /// Setting or reading back the MPS default active-thread percentage failed.
    ActiveThreads = 12,
}

impl Exit {
    /// The numeric code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The table for `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
   0  success (check-config, list, resolve, run --max-kernels)
   1  internal error
   2  bad command line
   3  bad configuration or environment (config file, DICKBOX_KEEPER_*,
      CUDA_VISIBLE_DEVICES / CUDA_MPS_PIPE_DIRECTORY, WatchdogSec= too short)
   4  no NVIDIA device node or driver library (message names which)
   5  device id malformed or not present on this host
   6  old MIG-GPU-<uuid>/<gi>/<ci> name given: use the MIG-<uuid> it names
   7  MPS pipe folder missing or unusable
   8  MPS server refused or dropped the client
   9  keep-alive kernel missed its deadline
  10  sticky CUDA error (context lost)
  11  other CUDA or NVML error
  12  MPS default active-thread percentage not applied";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_code() {
        for exit in [
            Exit::Ok,
            Exit::Internal,
            Exit::Usage,
            Exit::Config,
            Exit::DriverMissing,
            Exit::GpuNotFound,
            Exit::LegacyMigName,
            Exit::PipeFolder,
            Exit::MpsRefused,
            Exit::DeadlineMissed,
            Exit::StickyError,
            Exit::CudaError,
            Exit::ActiveThreads,
        ] {
            let line = format!("\n  {:2}  ", exit.code());
            assert!(
                EXIT_CODES_HELP.contains(&line),
                "{exit:?} missing from help"
            );
        }
    }
}
