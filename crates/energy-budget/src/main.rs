//! `energy-budget`: parse arguments, set up logging, run, map the result to an
//! exit code. Everything else is in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use energy_budget::{Cli, Command, EXIT_FAILURE, EXIT_USAGE, UsageError};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Run);
    setup_logging(daemon);
    match energy_budget::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = if e.downcast_ref::<UsageError>().is_some() {
                EXIT_USAGE
            } else {
                EXIT_FAILURE
            };
            // Logged once: by the daemon into its log, by a command on stderr.
            if daemon {
                tracing::error!(error = e.to_string(), "energy-budget failed");
            } else {
                eprintln!("energy-budget: {e}");
            }
            ExitCode::from(code)
        }
    }
}

/// The daemon logs to the journal directly when it runs under systemd (with
/// `MESSAGE_ID` and other fields unprefixed), and falls back to plain stderr
/// when the journal socket is absent. Commands log warnings to stderr only.
fn setup_logging(daemon: bool) {
    let default = if daemon { "info" } else { "warn" };
    let filter =
        EnvFilter::try_from_env("ENERGY_BUDGET_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    if daemon
        && std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(layer) = tracing_journald::layer()
    {
        let layer = layer.with_field_prefix(None);
        tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .init();
        return;
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = if std::io::stderr().is_terminal() {
        fmt.boxed()
    } else {
        fmt.without_time().boxed()
    };
    tracing_subscriber::registry().with(filter).with(fmt).init();
}
