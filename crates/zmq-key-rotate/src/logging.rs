//! Logging: to journald when its socket is there (structured fields, fixed
//! message ids), else plain text on stderr without colour when not a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Sets up logging once; `RUST_LOG` adjusts the level (default `info`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Under systemd, JOURNAL_STREAM says stderr already goes to the journal;
    // then log natively so fields and MESSAGE_ID survive.
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    if under_journal && let Ok(layer) = tracing_journald::layer() {
        let layer = layer.with_field_prefix(None);
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
