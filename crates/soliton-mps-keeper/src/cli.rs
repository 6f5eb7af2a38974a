//! Command line: parsing, and the glue from subcommands to the library. `main`
//! only calls [`main_with`] and exits with the code it returns.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};

use crate::backend::{self, GpuBackend, Kernel, SIMULATED_GPU_ENV};
use crate::config::{self, Layer, Source};
use crate::device_id::DeviceArg;
use crate::exit::{EXIT_CODES_HELP, Exit};
use crate::keeper::{self, KEEPER_FAILED_MESSAGE_ID, KeeperError, RunOptions};

/// Keeps one GPU's CUDA MPS server and context warm, and tells systemd the
/// truth about it: READY=1 after the first kernel, WATCHDOG=1 only after a
/// kernel completed in time, a distinct exit code when it did not.
#[derive(Debug, Parser)]
#[command(name = "soliton-mps-keeper", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Config file [default: /etc/dickbox/dickbox.yml, if present]
    #[arg(long, global = true, env = "DICKBOX_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Keep one GPU warm (what soliton-mps@<uuid>.service runs).
    Run {
        /// GPU-<uuid> or MIG-<uuid>; the old MIG-GPU-<uuid>/<gi>/<ci> is
        /// mapped and refused with the name to use.
        device: String,
        #[command(flatten)]
        flags: ConfigFlags,
        /// Launch a faulting kernel after N good ones (fault injection for
        /// scripts/gpu-check; faults only this process's own context).
        #[arg(long, value_name = "N")]
        inject_fault_after: Option<u64>,
        /// Exit 0 after N kernels (for checks; the unit never sets it).
        #[arg(long, value_name = "N")]
        max_kernels: Option<u64>,
    },
    /// Print the effective configuration and where each value came from.
    CheckConfig {
        #[command(flatten)]
        flags: ConfigFlags,
    },
    /// List the GPUs and MIG devices NVML sees, with instance names.
    List,
    /// Print the instance name for a device (maps the old MIG form).
    Resolve {
        /// GPU-<uuid>, MIG-<uuid> or MIG-GPU-<uuid>/<gi>/<ci>.
        device: String,
    },
    /// Time the first CUDA calls of this fresh process on device 0 (the one
    /// CUDA_VISIBLE_DEVICES names): context creation and first kernel.
    Probe {
        /// The device CUDA_VISIBLE_DEVICES names.
        device: String,
    },
    /// Bind a notify socket and print each message after its arrival time in
    /// Unix milliseconds (for scripts/gpu-check, which has no systemd to ask).
    ListenNotify {
        /// Socket path to bind.
        socket: PathBuf,
        /// How long to listen, e.g. 30s.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration_arg)]
        duration: Duration,
    },
}

/// Flags that override the config file and environment.
#[derive(Debug, Default, Args)]
pub struct ConfigFlags {
    /// Time between kernels, e.g. 10s
    #[arg(long)]
    interval: Option<String>,
    /// Longest a kernel may take, e.g. 2s
    #[arg(long)]
    kernel_deadline: Option<String>,
    /// Parent of the per-GPU MPS pipe/log folders
    #[arg(long)]
    pipe_root: Option<String>,
    /// node_exporter textfile folder
    #[arg(long)]
    metrics_dir: Option<String>,
    /// MPS default active-thread percentage (1-100, or none)
    #[arg(long)]
    default_active_thread_percentage: Option<String>,
    /// The nvidia-cuda-mps-control program
    #[arg(long)]
    mps_control: Option<String>,
    /// How long to wait for the MPS control socket at start
    #[arg(long)]
    pipe_wait: Option<String>,
}

impl ConfigFlags {
    fn layer(&self) -> Layer {
        let mut layer = Layer::default();
        for (key, value) in [
            ("interval", &self.interval),
            ("kernel_deadline", &self.kernel_deadline),
            ("pipe_root", &self.pipe_root),
            ("metrics_dir", &self.metrics_dir),
            (
                "default_active_thread_percentage",
                &self.default_active_thread_percentage,
            ),
            ("mps_control", &self.mps_control),
            ("pipe_wait", &self.pipe_wait),
        ] {
            if let Some(v) = value {
                layer.set(key, v.clone(), Source::Flag(key.replace('_', "-")));
            }
        }
        layer
    }
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
}

fn load_config(
    path: Option<&PathBuf>,
    flags: &ConfigFlags,
) -> Result<config::Loaded, config::ConfigError> {
    config::load(path.map(PathBuf::as_path), std::env::vars(), flags.layer())
}

fn backend() -> Result<Box<dyn GpuBackend>, Exit> {
    let simulated = std::env::var_os(SIMULATED_GPU_ENV).map(PathBuf::from);
    backend::select(simulated).map_err(|e| {
        tracing::error!(error = %e, "cannot select GPU backend");
        Exit::Internal
    })
}

/// Runs a parsed command line and returns the exit code.
pub fn main_with(cli: Cli) -> Exit {
    match cli.command {
        Command::Run {
            device,
            flags,
            inject_fault_after,
            max_kernels,
        } => {
            let loaded = match load_config(cli.config.as_ref(), &flags) {
                Ok(l) => l,
                Err(e) => {
                    // A keeper that cannot start is a keeper failure: same
                    // message id as every other.
                    tracing::error!(
                        message_id = KEEPER_FAILED_MESSAGE_ID,
                        gpu = device,
                        exit_code = Exit::Config.code(),
                        "keeper for {device} failed: {e}"
                    );
                    return Exit::Config;
                }
            };
            log_config_source(&loaded);
            let device = match DeviceArg::parse(&device) {
                Ok(d) => d,
                Err(e) => return report_failure(&device, &KeeperError::from(e)),
            };
            let mut backend = match backend() {
                Ok(b) => b,
                Err(code) => return code,
            };
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
                    // Without the handler the signal still ends the process,
                    // only without the clean metrics update.
                    tracing::warn!(signal, error = %e, "cannot install signal handler");
                }
            }
            let opts = RunOptions {
                device: device.clone(),
                config: loaded.config,
                cuda_visible_devices: std::env::var("CUDA_VISIBLE_DEVICES").ok(),
                mps_pipe_directory: std::env::var("CUDA_MPS_PIPE_DIRECTORY").ok(),
                watchdog: sd_notify::watchdog_enabled(),
                inject_fault_after,
                max_kernels,
                stop,
            };
            match keeper::run(backend.as_mut(), &opts) {
                Ok(()) => Exit::Ok,
                Err(e) => report_failure(&device.to_string(), &e),
            }
        }
        Command::CheckConfig { flags } => {
            let loaded = match load_config(cli.config.as_ref(), &flags) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(exit_code = Exit::Config.code(), "{e}");
                    return Exit::Config;
                }
            };
            let c = &loaded.config;
            match &loaded.file {
                Some(f) => println!("# config file: {}", f.display()),
                None => println!("# config file: none (defaults)"),
            }
            for o in &loaded.overrides {
                println!("# override: {o}");
            }
            println!("keeper:");
            println!("  interval: {}ms", c.interval.as_millis());
            println!("  kernel_deadline: {}ms", c.kernel_deadline.as_millis());
            println!("  pipe_root: {}", c.pipe_root.display());
            println!("  metrics_dir: {}", c.metrics_dir.display());
            match c.default_active_thread_percentage {
                Some(p) => println!("  default_active_thread_percentage: {p}"),
                None => println!("  default_active_thread_percentage: none"),
            }
            println!("  mps_control: {}", c.mps_control.display());
            println!("  pipe_wait: {}ms", c.pipe_wait.as_millis());
            Exit::Ok
        }
        Command::List => {
            let mut backend = match backend() {
                Ok(b) => b,
                Err(code) => return code,
            };
            match backend.list() {
                Ok(all) => {
                    println!("index\tinstance\tname\tmig");
                    for g in all {
                        let mig = g.mig.map_or_else(
                            || "-".to_owned(),
                            |m| {
                                format!(
                                    "MIG-{}/{}/{}",
                                    m.parent, m.gpu_instance, m.compute_instance
                                )
                            },
                        );
                        println!("{}\t{}\t{}\t{}", g.index, g.uuid, g.name, mig);
                    }
                    Exit::Ok
                }
                Err(e) => report_command_failure("list", &KeeperError::from(e)),
            }
        }
        Command::Resolve { device } => {
            let arg = match DeviceArg::parse(&device) {
                Ok(d) => d,
                Err(e) => return report_command_failure(&device, &KeeperError::from(e)),
            };
            let mut backend = match backend() {
                Ok(b) => b,
                Err(code) => return code,
            };
            match backend.resolve(&arg) {
                Ok(g) => {
                    println!("instance={}", g.uuid);
                    println!("unit=soliton-mps@{}.service", g.uuid);
                    println!("index={}", g.index);
                    println!("name={}", g.name);
                    Exit::Ok
                }
                Err(e) => report_command_failure(&device, &KeeperError::from(e)),
            }
        }
        Command::Probe { device } => probe(&device),
        Command::ListenNotify { socket, duration } => listen_notify(&socket, duration),
    }
}

fn log_config_source(loaded: &config::Loaded) {
    match &loaded.file {
        Some(f) => tracing::info!(path = %f.display(), "config file read"),
        None => tracing::info!(
            path = config::DEFAULT_CONFIG_PATH,
            "no config file; using defaults"
        ),
    }
    for o in &loaded.overrides {
        tracing::info!(r#override = %o, "config override applied: {o}");
    }
}

/// Logs a keeper failure once, with the fixed message id operators alert on,
/// and returns its code.
fn report_failure(device: &str, e: &KeeperError) -> Exit {
    let exit = e.exit();
    tracing::error!(
        message_id = KEEPER_FAILED_MESSAGE_ID,
        gpu = device,
        exit_code = exit.code(),
        "keeper for {device} failed: {e}"
    );
    exit
}

/// Logs the failure of a one-shot command (list, resolve, probe): an operator
/// is watching, nothing to alert on.
fn report_command_failure(what: &str, e: &KeeperError) -> Exit {
    let exit = e.exit();
    tracing::error!(exit_code = exit.code(), "{what}: {e}");
    exit
}

fn probe(device: &str) -> Exit {
    let arg = match DeviceArg::parse(device) {
        Ok(d) => d,
        Err(e) => return report_command_failure(device, &KeeperError::from(e)),
    };
    let mut backend = match backend() {
        Ok(b) => b,
        Err(code) => return code,
    };
    let start = Instant::now();
    let result = (|| -> Result<(Duration, Duration), KeeperError> {
        backend.preflight()?;
        let gpu = keeper::resolve_instance(backend.as_mut(), &arg)?;
        let t0 = Instant::now();
        backend.open_context(&gpu)?;
        let context = t0.elapsed();
        backend.launch(Kernel::Keepalive)?;
        while !backend.poll()? {
            if t0.elapsed() > Duration::from_secs(60) {
                return Err(KeeperError::DeadlineMissed {
                    gpu: gpu.uuid.to_string(),
                    deadline: Duration::from_secs(60),
                });
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        Ok((context, t0.elapsed()))
    })();
    backend.destroy_context();
    match result {
        Ok((context, first_kernel)) => {
            println!(
                "context_ms={:.3} first_kernel_ms={:.3} total_ms={:.3}",
                context.as_secs_f64() * 1e3,
                first_kernel.as_secs_f64() * 1e3,
                start.elapsed().as_secs_f64() * 1e3
            );
            Exit::Ok
        }
        Err(e) => report_command_failure(device, &e),
    }
}

fn listen_notify(socket: &PathBuf, duration: Duration) -> Exit {
    let sock = match UnixDatagram::bind(socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: bind notify socket {}: {e}", socket.display());
            return Exit::Internal;
        }
    };
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    let mut code = Exit::Ok;
    while start.elapsed() < duration {
        let left = duration - start.elapsed();
        if sock
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .is_err()
        {
            code = Exit::Internal;
            break;
        }
        match sock.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).replace('\n', " ");
                // Wall-clock time, so a script can compare it with `date +%s%N`.
                let unix_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64() * 1e3);
                println!("{unix_ms:.1} {}", text.trim());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                eprintln!("error: receive on {}: {e}", socket.display());
                code = Exit::Internal;
                break;
            }
        }
    }
    // Leave no socket file behind; a failure here only leaves a stale file
    // in the caller's own folder.
    let _ = std::fs::remove_file(socket);
    code
}
