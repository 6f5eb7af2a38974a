//! Log set-up: straight to the journal (with structured fields, among them the
//! fixed `MESSAGE_ID` of keeper failures) when stderr is the journal, plain
//! text on stderr otherwise (no colour or time stamps unless on a terminal).

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Whether stderr is the journal stream systemd set up: `JOURNAL_STREAM` holds
/// the `device:inode` of that stream, and is checked against stderr itself
/// because children (a shell started from a unit, say) inherit the variable
/// with other stderr.
pub fn is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(meta) => meta.dev() == dev && meta.ino() == ino,
        Err(_) => false,
    }
}

/// Installs the global subscriber. `RUST_LOG` sets the filter (default `info`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if is_journal()
        && let Ok(journald) = tracing_journald::layer()
    {
        // No field prefix: `message_id` becomes the journal's MESSAGE_ID and
        // `gpu` becomes GPU, which `journalctl GPU=…` can match.
        let journald = journald
            .with_field_prefix(None)
            .with_syslog_identifier("soliton-mps-keeper".into());
        tracing_subscriber::registry()
            .with(filter)
            .with(journald)
            .init();
        return;
    }
    let tty = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(tty)
        .with_target(false);
    if tty {
        tracing_subscriber::registry().with(filter).with(fmt).init();
    } else {
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt.without_time())
            .init();
    }
}
