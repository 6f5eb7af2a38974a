//! The keep-alive loop of one GPU.
//!
//! Start-up, in order: resolve the device through NVML (the old MIG form is
//! refused with its modern name), check that the unit's environment points
//! CUDA at this device and its MPS pipe folder, wait for the MPS control
//! socket, apply the active-thread percentage, create the context. Then, every
//! `interval`: launch one kernel, poll it until done or `kernel_deadline`, and
//! only after it completed send `WATCHDOG=1` (and `READY=1` the first time) and
//! write the metrics. Any failure destroys the context and returns; the
//! process exits with the error's code and systemd restarts it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sd_notify::NotifyState;

use crate::backend::{GpuBackend, GpuError, Kernel, ResolvedGpu};
use crate::config::KeeperConfig;
use crate::device_id::{DeviceArg, DeviceIdError};
use crate::exit::Exit;
use crate::metrics::{self, KeeperState};
use crate::mps::{self, ActiveThreadError, PipeError};

/// The fixed journal `MESSAGE_ID` of "keeper failed" entries; operators alert on
/// it (see docs/soliton-mps-keeper.md).
pub const KEEPER_FAILED_MESSAGE_ID: &str = "63a5624c37a14fab9221e4d031a077be";

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The device as given.
    pub device: DeviceArg,
    /// Settled configuration.
    pub config: KeeperConfig,
    /// `CUDA_VISIBLE_DEVICES` as the process has it.
    pub cuda_visible_devices: Option<String>,
    /// `CUDA_MPS_PIPE_DIRECTORY` as the process has it.
    pub mps_pipe_directory: Option<String>,
    /// The systemd watchdog period, if enabled.
    pub watchdog: Option<Duration>,
    /// Launch the faulting kernel after this many good ones (gpu-check).
    pub inject_fault_after: Option<u64>,
    /// Stop cleanly after this many kernels (gpu-check, tests).
    pub max_kernels: Option<u64>,
    /// Set by SIGTERM/SIGINT: finish the current kernel, destroy the context,
    /// mark the metrics down and return `Ok`.
    pub stop: Arc<AtomicBool>,
}

/// Why the keeper stopped.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    /// The device id is malformed.
    #[error(transparent)]
    DeviceId(#[from] DeviceIdError),
    /// A GPU call failed.
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// The old MIG name was given.
    #[error(
        "{given} is the old MIG name of {modern}; it cannot be an instance name: \
         use soliton-mps@{modern}.service (and {modern} on the command line)"
    )]
    LegacyMigName { given: String, modern: String },
    /// The process environment does not match the device.
    #[error(
        "{var} is {found} but the keeper for {gpu} needs {var}={expected} \
         (the soliton-mps@.service unit sets it)"
    )]
    Environment {
        var: &'static str,
        found: String,
        expected: String,
        gpu: String,
    },
    /// `WatchdogSec=` leaves no room for one interval plus one deadline.
    #[error(
        "WatchdogSec= ({watchdog:?}) must be longer than interval + kernel_deadline \
         ({interval:?} + {deadline:?})"
    )]
    WatchdogTooShort {
        watchdog: Duration,
        interval: Duration,
        deadline: Duration,
    },
    /// The MPS pipe folder is not usable.
    #[error(transparent)]
    Pipe(#[from] PipeError),
    /// The active-thread percentage was not applied.
    #[error(transparent)]
    ActiveThreads(#[from] ActiveThreadError),
    /// A kernel ran past its deadline.
    #[error("keep-alive kernel on {gpu} missed its deadline of {deadline:?}")]
    DeadlineMissed { gpu: String, deadline: Duration },
}

impl KeeperError {
    /// The exit code for this error.
    pub fn exit(&self) -> Exit {
        match self {
            Self::DeviceId(_) => Exit::GpuNotFound,
            Self::Gpu(e) => match e {
                GpuError::DriverMissing { .. } | GpuError::LibraryMissing { .. } => {
                    Exit::DriverMissing
                }
                GpuError::NotFound { .. }
                | GpuError::LegacyMigNotFound { .. }
                | GpuError::WrongDevice { .. } => Exit::GpuNotFound,
                GpuError::MpsRefused { .. } => Exit::MpsRefused,
                GpuError::Sticky { .. } => Exit::StickyError,
                GpuError::Nvml { .. } | GpuError::Cuda { .. } | GpuError::WrongResult { .. } => {
                    Exit::CudaError
                }
                GpuError::Simulation(_) => Exit::Internal,
            },
            Self::LegacyMigName { .. } => Exit::LegacyMigName,
            Self::Environment { .. } | Self::WatchdogTooShort { .. } => Exit::Config,
            Self::Pipe(_) => Exit::PipeFolder,
            Self::ActiveThreads(_) => Exit::ActiveThreads,
            Self::DeadlineMissed { .. } => Exit::DeadlineMissed,
        }
    }
}

/// Resolves a device to a usable instance, refusing the old MIG form with the
/// modern name.
pub fn resolve_instance(
    backend: &mut dyn GpuBackend,
    device: &DeviceArg,
) -> Result<ResolvedGpu, KeeperError> {
    let gpu = backend.resolve(device)?;
    if let DeviceArg::LegacyMig { .. } = device {
        return Err(KeeperError::LegacyMigName {
            given: device.to_string(),
            modern: gpu.uuid.to_string(),
        });
    }
    Ok(gpu)
}

/// Runs the keeper until it fails (or `max_kernels` completed). On failure
/// the context has been destroyed and the metrics file says so.
pub fn run(backend: &mut dyn GpuBackend, opts: &RunOptions) -> Result<(), KeeperError> {
    let cfg = &opts.config;
    if let Some(watchdog) = opts.watchdog
        && watchdog <= cfg.interval + cfg.kernel_deadline
    {
        return Err(KeeperError::WatchdogTooShort {
            watchdog,
            interval: cfg.interval,
            deadline: cfg.kernel_deadline,
        });
    }

    backend.preflight()?;
    let gpu = resolve_instance(backend, &opts.device)?;
    tracing::info!(
        gpu = %gpu.uuid,
        index = gpu.index,
        name = %gpu.name,
        mig = gpu.mig.is_some(),
        "resolved GPU {} to NVML index {} ({})", gpu.uuid, gpu.index, gpu.name
    );

    let pipe = cfg.pipe_root.join(gpu.uuid.as_str()).join("pipe");
    check_env(
        "CUDA_VISIBLE_DEVICES",
        opts.cuda_visible_devices.as_deref(),
        gpu.uuid.as_str(),
        &gpu,
    )?;
    check_env(
        "CUDA_MPS_PIPE_DIRECTORY",
        opts.mps_pipe_directory.as_deref(),
        &pipe.to_string_lossy(),
        &gpu,
    )?;
    mps::wait_for_control_socket(&pipe, gpu.uuid.as_str(), cfg.pipe_wait)?;
    if let Some(pct) = cfg.default_active_thread_percentage {
        mps::apply_active_thread_percentage(&cfg.mps_control, &pipe, pct)?;
        tracing::info!(gpu = %gpu.uuid, percentage = pct, "MPS default active thread percentage set");
    }

    let metrics_path = metrics::metrics_path(&cfg.metrics_dir, gpu.uuid.as_str());
    let mut state = KeeperState::default();
    let result = open_and_loop(backend, opts, &gpu, &metrics_path, &mut state);
    backend.destroy_context();
    match &result {
        Err(e) => {
            state.up = false;
            state.exit_code = Some(e.exit().code());
            write_metrics(backend, &gpu, &state, &metrics_path, &mut false);
        }
        Ok(()) if opts.stop.load(Ordering::Relaxed) => {
            // Stopped by the operator: not a failure, but nothing is warm
            // any more, so the metrics must not keep saying up.
            state.up = false;
            write_metrics(backend, &gpu, &state, &metrics_path, &mut false);
            tracing::info!(gpu = %gpu.uuid, "stopped on signal; context destroyed");
        }
        Ok(()) => {}
    }
    result
}

fn check_env(
    var: &'static str,
    found: Option<&str>,
    expected: &str,
    gpu: &ResolvedGpu,
) -> Result<(), KeeperError> {
    if found == Some(expected) {
        return Ok(());
    }
    Err(KeeperError::Environment {
        var,
        found: found.map_or_else(|| "unset".to_owned(), |f| format!("{f:?}")),
        expected: expected.to_owned(),
        gpu: gpu.uuid.to_string(),
    })
}

fn open_and_loop(
    backend: &mut dyn GpuBackend,
    opts: &RunOptions,
    gpu: &ResolvedGpu,
    metrics_path: &Path,
    state: &mut KeeperState,
) -> Result<(), KeeperError> {
    let cfg = &opts.config;
    let started = Instant::now();
    backend.open_context(gpu)?;
    tracing::info!(gpu = %gpu.uuid, elapsed_ms = started.elapsed().as_millis() as u64, "CUDA context created");

    let mut metrics_failing = false;
    let mut next = Instant::now();
    loop {
        let kernel = match opts.inject_fault_after {
            Some(n) if state.kernels_total >= n => Kernel::Fault,
            _ => Kernel::Keepalive,
        };
        if kernel == Kernel::Fault {
            tracing::warn!(gpu = %gpu.uuid, "launching the faulting kernel as asked (--inject-fault-after)");
        }
        let latency = run_kernel(backend, kernel, cfg.kernel_deadline, gpu)?;

        state.up = true;
        state.kernels_total += 1;
        state.last_latency_seconds = Some(latency.as_secs_f64());
        state.last_success_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs_f64());
        let status = format!(
            "kernel {:.3} ms on {} (index {}, {}); {} kernels",
            latency.as_secs_f64() * 1000.0,
            gpu.uuid,
            gpu.index,
            gpu.name,
            state.kernels_total
        );
        let mut msg = vec![NotifyState::Status(&status), NotifyState::Watchdog];
        if state.kernels_total == 1 {
            msg.insert(0, NotifyState::Ready);
            tracing::info!(gpu = %gpu.uuid, latency_us = latency.as_micros() as u64, "first kernel completed; ready");
        } else {
            tracing::debug!(gpu = %gpu.uuid, latency_us = latency.as_micros() as u64, "kernel completed");
        }
        notify(&msg);
        write_metrics(backend, gpu, state, metrics_path, &mut metrics_failing);

        if opts
            .max_kernels
            .is_some_and(|max| state.kernels_total >= max)
        {
            tracing::info!(gpu = %gpu.uuid, kernels = state.kernels_total, "stopping after --max-kernels");
            notify(&[NotifyState::Stopping]);
            return Ok(());
        }
        next += cfg.interval;
        let now = Instant::now();
        if next <= now {
            // The kernel and bookkeeping took longer than an interval; start
            // the next one now rather than bursting to catch up.
            next = now;
        }
        // Sleep in short steps so a stop request is honoured promptly.
        while Instant::now() < next && !opts.stop.load(Ordering::Relaxed) {
            let left = next.saturating_duration_since(Instant::now());
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        if opts.stop.load(Ordering::Relaxed) {
            notify(&[NotifyState::Stopping]);
            return Ok(());
        }
    }
}

/// Launches one kernel and polls it until it completes or `deadline` passes.
fn run_kernel(
    backend: &mut dyn GpuBackend,
    kernel: Kernel,
    deadline: Duration,
    gpu: &ResolvedGpu,
) -> Result<Duration, KeeperError> {
    let start = Instant::now();
    backend.launch(kernel)?;
    // Short sleeps first (a healthy kernel takes tens of microseconds), then
    // at most 1 ms, so the latency figure stays accurate without spinning.
    let mut pause = Duration::from_micros(20);
    loop {
        if backend.poll()? {
            return Ok(start.elapsed());
        }
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            return Err(KeeperError::DeadlineMissed {
                gpu: gpu.uuid.to_string(),
                deadline,
            });
        }
        std::thread::sleep(pause.min(deadline - elapsed));
        pause = (pause * 2).min(Duration::from_millis(1));
    }
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot send to NOTIFY_SOCKET");
    }
}

fn write_metrics(
    backend: &mut dyn GpuBackend,
    gpu: &ResolvedGpu,
    state: &KeeperState,
    path: &Path,
    failing: &mut bool,
) {
    let sample = backend.sample(gpu);
    let text = metrics::render(gpu, state, &sample);
    match metrics::write_atomically(path, &text) {
        Ok(()) => *failing = false,
        // Metrics are not the keeper's job: warn once per failure streak and
        // keep the GPU warm.
        Err(e) if !*failing => {
            *failing = true;
            tracing::warn!(path = %path.display(), error = %e, "cannot write metrics file");
        }
        Err(_) => {}
    }
}
