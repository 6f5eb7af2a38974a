//! energy-budget: measures the energy of the host and of each Dickbox service
//! from real counters (RAPL, NVML, cgroup CPU time), keeps a crash-safe
//! per-period budget with allocations, warns before it runs out, and writes
//! Prometheus textfile metrics.
//!
//! Modules by job: [`config`] (the `energy` section and overrides), [`rapl`]
//! and [`nvml`] (energy counters), [`cgroup`] (services and their CPU time),
//! [`integrate`] (samples to joules), [`state`] (the crash-safe state file),
//! [`budget`] (periods, allocations, warnings), [`metrics`], [`report`] (the
//! read-only commands) and [`daemon`] (the `run` loop).
//!
//! Known limits (see docs/energy-budget.md):
//! - MIG instances are mapped to their parent GPU through NVML
//!   (`nvmlDeviceGetDeviceHandleFromMigDeviceHandle`); that call has only run
//!   against the simulated source here, not against a MIG-enabled GPU.
//! - Energy since the last sync is lost when the whole host crashes (counters
//!   restart with the boot); a clean shutdown's final sync counts it.

pub mod budget;
pub mod cgroup;
pub mod config;
pub mod daemon;
pub mod integrate;
pub mod metrics;
pub mod nvml;
pub mod rapl;
pub mod report;
pub mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing::{info, warn};

/// Exit codes, also listed in `--help`.
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "energy-budget",
    version,
    about = "Measure energy per Dickbox service and keep the energy budget",
    after_help = "Configuration: the `energy` section of /etc/dickbox/dickbox.yml \
(--config or DICKBOX_CONFIG to change), then DICKBOX_ENERGY_<KEY>, then --set KEY=VALUE.\n\n\
Exit codes: 0 success; 1 failure (state unusable, write failed, ...); \
2 bad usage or configuration."
)]
pub struct Cli {
    /// Configuration file (default /etc/dickbox/dickbox.yml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Override one energy setting, e.g. --set sync_interval=30s (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the accounting daemon (for energy-budget.service, Type=notify).
    Run,
    /// Show the budget, usage, projection and sources.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Set a service's allocation in kWh per period, or `auto` to share the
    /// unallocated budget by weight.
    Allocate {
        service: String,
        #[arg(value_name = "KWH|auto")]
        kwh: String,
    },
    /// Energy per service over the period or the last hours.
    Report {
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        hours: Option<u32>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Load and check the configuration, print the effective settings.
    CheckConfig,
}

/// An error that should exit with [`EXIT_USAGE`].
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A command argument the command refuses (bad amount, name or hours).
    #[error(transparent)]
    Argument(report::ReportError),
}

/// A command's error, as a usage error when it is one.
fn classify(e: report::ReportError) -> anyhow::Error {
    if e.is_usage() {
        UsageError::Argument(e).into()
    } else {
        e.into()
    }
}

/// Load the configuration for `cli` from the real environment.
pub fn load_config(cli: &Cli) -> Result<config::Loaded, UsageError> {
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("DICKBOX_"))
        .collect();
    let (path, explicit) = config::config_path(cli.config.as_deref(), &env);
    Ok(config::load(&path, explicit, &env, &cli.sets)?)
}

/// Run one command. `Ok(())` is exit 0; see `main` for the rest.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let loaded = load_config(&cli)?;
    let cfg = loaded.config.clone();
    match cli.command {
        Command::Run => {
            info!(
                file = loaded.file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(
                    || "none (defaults)".to_string()
                ),
                overrides = ?loaded.overrides,
                "configuration loaded"
            );
            for w in &loaded.warnings {
                warn!("{w}");
            }
            let gpu = daemon::open_gpu(&cfg);
            daemon::run(cfg, gpu)
        }
        Command::Status { json } => {
            let now = daemon::unix_now();
            if json {
                let v = report::status_json(&cfg, now)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", report::status_text(&cfg, now)?);
            }
            Ok(())
        }
        Command::Allocate { service, kwh } => {
            println!(
                "{}",
                report::allocate(&cfg, &service, &kwh).map_err(classify)?
            );
            Ok(())
        }
        Command::Report {
            service,
            hours,
            json,
        } => {
            let (v, text) = report::report(&cfg, service.as_deref(), hours, daemon::unix_now())
                .map_err(classify)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{text}");
            }
            Ok(())
        }
        Command::CheckConfig => {
            println!(
                "config file: {}",
                loaded
                    .file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "none found, defaults used".into())
            );
            for o in &loaded.overrides {
                println!("override: {o}");
            }
            for w in &loaded.warnings {
                println!("warning: {w}");
            }
            println!("{cfg:#?}");
            Ok(())
        }
    }
}
