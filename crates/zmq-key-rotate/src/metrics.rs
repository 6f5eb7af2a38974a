//! Prometheus text-format metrics for node-exporter's textfile collector.
//!
//! `rotate` writes `zmq-key-rotate.prom`, the bus writes
//! `zmq-key-rotate-bus.prom`; each file belongs to one writer and is replaced
//! atomically. A failure to write metrics is logged and never fails a
//! rotation: the keys matter more than the dashboard.

use std::fmt::Write as _;

use crate::config::Config;
use crate::store::{Link, Store};

/// Writes the rotation metrics for every configured identity.
pub fn write_rotation(config: &Config, store: &Store, now: u64) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP dickbox_zmq_key_generation Generation number of the current CURVE key.\n\
         # TYPE dickbox_zmq_key_generation gauge"
    );
    let mut rows = Vec::new();
    for id in &config.identities {
        let Ok(index) = store.index(id) else { continue };
        let Ok(Some(current)) = store.linked(id, Link::Current, &index) else {
            continue;
        };
        let created = index
            .generations
            .iter()
            .find(|g| g.generation == current)
            .map(|g| g.created)
            .unwrap_or(0);
        rows.push((id.to_string(), current, created, index.generations.len()));
    }
    for (id, current, _, _) in &rows {
        let _ = writeln!(
            out,
            "dickbox_zmq_key_generation{{identity=\"{id}\"}} {current}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP dickbox_zmq_key_created_seconds Creation time of the current CURVE key.\n\
         # TYPE dickbox_zmq_key_created_seconds gauge"
    );
    for (id, _, created, _) in &rows {
        let _ = writeln!(
            out,
            "dickbox_zmq_key_created_seconds{{identity=\"{id}\"}} {created}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP dickbox_zmq_key_generations_kept Generations kept in the store.\n\
         # TYPE dickbox_zmq_key_generations_kept gauge"
    );
    for (id, _, _, kept) in &rows {
        let _ = writeln!(
            out,
            "dickbox_zmq_key_generations_kept{{identity=\"{id}\"}} {kept}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP dickbox_zmq_key_rotate_last_run_seconds Time of the last successful rotate run.\n\
         # TYPE dickbox_zmq_key_rotate_last_run_seconds gauge\n\
         dickbox_zmq_key_rotate_last_run_seconds {now}"
    );
    write(config, "zmq-key-rotate.prom", &out);
}

/// Counters of the bus.
#[derive(Debug, Default, Clone)]
pub struct BusCounters {
    pub forwarded: u64,
    pub zap_accepted: u64,
    pub zap_refused: u64,
    pub generations_listening: usize,
    pub current_generation: u64,
}

pub fn write_bus(config: &Config, c: &BusCounters) {
    let text = format!(
        "# HELP dickbox_zmq_bus_messages_forwarded_total Messages forwarded publisher to subscribers.\n\
         # TYPE dickbox_zmq_bus_messages_forwarded_total counter\n\
         dickbox_zmq_bus_messages_forwarded_total {}\n\
         # HELP dickbox_zmq_bus_handshakes_total CURVE handshakes decided by the ZAP handler.\n\
         # TYPE dickbox_zmq_bus_handshakes_total counter\n\
         dickbox_zmq_bus_handshakes_total{{result=\"accepted\"}} {}\n\
         dickbox_zmq_bus_handshakes_total{{result=\"refused\"}} {}\n\
         # HELP dickbox_zmq_bus_generations_listening Key generations the bus accepts now.\n\
         # TYPE dickbox_zmq_bus_generations_listening gauge\n\
         dickbox_zmq_bus_generations_listening {}\n\
         # HELP dickbox_zmq_bus_current_generation Newest key generation of the bus.\n\
         # TYPE dickbox_zmq_bus_current_generation gauge\n\
         dickbox_zmq_bus_current_generation {}\n",
        c.forwarded, c.zap_accepted, c.zap_refused, c.generations_listening, c.current_generation
    );
    write(config, "zmq-key-rotate-bus.prom", &text);
}

fn write(config: &Config, name: &str, text: &str) {
    let path = config.metrics_dir.join(name);
    if !config.metrics_dir.is_dir() {
        tracing::debug!(path = %config.metrics_dir.display(), "metrics folder missing; not writing metrics");
        return;
    }
    if let Err(e) = crate::atomic::write_file(&path, text.as_bytes(), 0o644) {
        tracing::warn!(path = %path.display(), error = %e, "could not write metrics");
    }
}
