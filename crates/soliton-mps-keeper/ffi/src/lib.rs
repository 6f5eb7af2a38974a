//! The only unsafe code of `soliton-mps-keeper`: three calls that cudarc 0.19 and
//! nvml-wrapper 0.13 expose only as `unsafe`. Each is wrapped in a safe function
//! whose argument types make the unsafe contract hold by construction.
//!
//! Everything else the keeper does with CUDA and NVML goes through the safe APIs
//! of those crates, in the keeper crate itself.

use std::sync::Arc;

use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DriverError, LaunchConfig, PushKernelArg,
};
use nvml_wrapper::Device;
use nvml_wrapper::error::{NvmlError, nvml_try};

/// Whether `libcuda.so` (the driver API library) can be loaded.
///
/// cudarc panics on its first driver call when the library is missing; callers
/// check this first so that a host without a driver gets an error message
/// instead of a panic.
#[expect(unsafe_code, reason = "cudarc marks the library probe unsafe")]
pub fn is_cuda_driver_present() -> bool {
    // SAFETY: `is_culib_present` only tries `dlopen` on the candidate names and
    // drops the handle again. Loading libcuda runs its initialisers, which is
    // what any CUDA program does; there is no Rust-side invariant to uphold.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// One thread that writes `value + 1` into `out[0]`; the keeper checks the
/// value afterwards, so a completed kernel proves the GPU really ran it.
pub fn launch_keepalive(
    stream: &Arc<CudaStream>,
    kernel: &CudaFunction,
    out: &mut CudaSlice<u32>,
    value: u32,
) -> Result<(), DriverError> {
    let mut args = stream.launch_builder(kernel);
    args.arg(out);
    args.arg(&value);
    launch_single_thread(args)
}

/// One thread that stores to device address 0: a deliberate illegal-address
/// fault, used only when the operator asks for fault injection (gpu-check).
/// It faults the calling process's own context and nothing else.
pub fn launch_fault(stream: &Arc<CudaStream>, kernel: &CudaFunction) -> Result<(), DriverError> {
    let args = stream.launch_builder(kernel);
    launch_single_thread(args)
}

#[expect(unsafe_code, reason = "kernel launches are unsafe in cudarc")]
fn launch_single_thread(mut args: cudarc::driver::LaunchArgs<'_>) -> Result<(), DriverError> {
    let config = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (1, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the two kernels launched through here are the hand-written PTX of
    // the keeper crate. `soliton_keepalive` takes exactly (u32 *out, u32 value)
    // and writes one u32 into `out`, a live device allocation of at least one
    // element that `launch_keepalive` borrows mutably for the launch (cudarc
    // records the stream use on it). `soliton_fault` takes no parameters and
    // faults on purpose; the fault is a CUDA error in this context, not
    // undefined behaviour on the host. The argument list built by the callers
    // matches these signatures; a mismatch would be a bug in this file.
    unsafe { args.launch(config) }.map(|_| ())
}

/// The MIG GPU instance and compute instance ids of a MIG device handle, the
/// `<gi>/<ci>` of the old `MIG-GPU-<uuid>/<gi>/<ci>` names.
#[expect(
    unsafe_code,
    reason = "nvml-wrapper 0.13 has no wrapper for these two calls"
)]
pub fn mig_instance_ids(device: &Device<'_>) -> Result<(u32, u32), NvmlError> {
    let lib = device.nvml().lib();
    let gpu_instance = lib
        .nvmlDeviceGetGpuInstanceId
        .as_ref()
        .map_err(|e| NvmlError::FailedToLoadSymbol(e.to_string()))?;
    let compute_instance = lib
        .nvmlDeviceGetComputeInstanceId
        .as_ref()
        .map_err(|e| NvmlError::FailedToLoadSymbol(e.to_string()))?;

    let mut gi: std::os::raw::c_uint = 0;
    let mut ci: std::os::raw::c_uint = 0;
    // SAFETY: `device.handle()` is valid while `device` (which borrows the
    // initialised `Nvml`) lives, which covers both calls. The out-pointers point
    // at local integers of the C type the functions write.
    unsafe {
        nvml_try(gpu_instance(device.handle(), &mut gi))?;
        nvml_try(compute_instance(device.handle(), &mut ci))?;
    }
    Ok((gi, ci))
}
