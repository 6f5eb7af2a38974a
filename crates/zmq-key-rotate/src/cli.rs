//! Command line: subcommands, global overrides and exit codes.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, FileChoice};
use crate::rotate::{self, RotateError};
use crate::store::Identity;

const EXIT_CODES: &str = "Exit codes:
  0  success
  1  the operation failed (store, socket or signing error)
  2  bad usage or configuration
  3  the linked libzmq has no CURVE support";

/// Rotates the CURVE keys of the Dickbox ZeroMQ bus, announces rotations and
/// runs the encrypted publish/subscribe bus that follows them.
#[derive(Debug, Parser)]
#[command(name = "zmq-key-rotate", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Config file [default: $DICKBOX_CONFIG, else /etc/dickbox/dickbox.yml].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Key store root (zmq.keys_dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub keys_dir: Option<String>,
    /// Runtime folder for bus sockets (zmq.runtime_dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub runtime_dir: Option<String>,
    /// Rotation event socket path (zmq.events_socket).
    #[arg(long, global = true, value_name = "PATH")]
    pub events_socket: Option<String>,
    /// node-exporter textfile folder (zmq.metrics_dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub metrics_dir: Option<String>,
    /// How long the previous key stays accepted (zmq.grace), e.g. 24h.
    #[arg(long, global = true, value_name = "DURATION")]
    pub grace: Option<String>,
    /// Age after which old generations are pruned (zmq.retention), e.g. 30d.
    #[arg(long, global = true, value_name = "DURATION")]
    pub retention: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a new key pair per identity, install it as current, announce it,
    /// prune old generations.
    Rotate {
        /// Rotate only this identity (repeatable) [default: zmq.identities].
        #[arg(long = "identity", value_name = "NAME")]
        identities: Vec<String>,
        /// Only make a key for identities that have none yet (first boot).
        #[arg(long)]
        if_missing: bool,
        /// Print the events as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show current and previous generation, ages, grace and what will be
    /// pruned next, per identity.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List every generation kept in the store.
    List {
        #[arg(long = "identity", value_name = "NAME")]
        identities: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run the CURVE publish/subscribe bus (zmq-bus.service, Type=notify).
    Bus,
    /// Validate the configuration and print the resolved settings.
    CheckConfig,
}

/// How the program ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    NoCurve = 3,
}

fn load_config(cli: &Cli) -> Result<Config, config::ConfigError> {
    let file = FileChoice::pick(cli.config.clone(), std::env::var("DICKBOX_CONFIG").ok());
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut flags = Vec::new();
    for (key, value) in [
        ("keys_dir", &cli.keys_dir),
        ("runtime_dir", &cli.runtime_dir),
        ("events_socket", &cli.events_socket),
        ("metrics_dir", &cli.metrics_dir),
        ("grace", &cli.grace),
        ("retention", &cli.retention),
    ] {
        if let Some(v) = value {
            flags.push((key, v.clone()));
        }
    }
    let config = config::load(&file, &env, &flags)?;
    match &config.file {
        Some(p) => {
            tracing::info!(path = %p.display(), overrides = ?config.overrides, "configuration read")
        }
        None => {
            tracing::info!(overrides = ?config.overrides, "no configuration file; using defaults")
        }
    }
    Ok(config)
}

fn identities(names: &[String], config: &Config) -> Result<Vec<Identity>, String> {
    if names.is_empty() {
        return Ok(config.identities.clone());
    }
    names
        .iter()
        .map(|n| Identity::parse(n).map_err(|e| format!("--identity: {e}")))
        .collect()
}

/// `status` and `list` fail (exit 1) when they found damaged or open files,
/// after printing everything.
fn flag_problems(exit: Exit, broken: bool) -> Exit {
    if broken && matches!(exit, Exit::Ok) {
        eprintln!(
            "zmq-key-rotate: problems found in the key store (see PROBLEM lines / \"problems\")"
        );
        Exit::Failed
    } else {
        exit
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Exit {
    match serde_json::to_string_pretty(value) {
        Ok(s) => {
            println!("{s}");
            Exit::Ok
        }
        Err(e) => {
            eprintln!("zmq-key-rotate: encode JSON: {e}");
            Exit::Failed
        }
    }
}

/// Runs one command; errors are printed here, once.
pub fn run(cli: Cli) -> Exit {
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("zmq-key-rotate: {e}");
            return Exit::Usage;
        }
    };
    let now = SystemTime::now();
    match cli.command {
        Command::CheckConfig => {
            // The group must exist where the keys are made; other commands
            // only need it when they run as root (see Store::prepare).
            if let Some(group) = &config.key_group
                && let Err(message) = crate::store::lookup_group(group)
            {
                eprintln!("zmq-key-rotate: zmq.key_group: {group:?}: {message}");
                return Exit::Usage;
            }
            match &config.file {
                Some(p) => println!("# file: {}", p.display()),
                None => println!("# file: none (defaults)"),
            }
            for o in &config.overrides {
                println!("# override: {o}");
            }
            for (k, v) in config.describe() {
                println!("{k} = {v}");
            }
            Exit::Ok
        }
        Command::Rotate {
            identities: names,
            if_missing,
            json,
        } => {
            let ids = match identities(&names, &config) {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("zmq-key-rotate: {e}");
                    return Exit::Usage;
                }
            };
            match rotate::rotate(&config, &ids, now, if_missing) {
                Ok(outcomes) if json => print_json(&outcomes),
                Ok(outcomes) => {
                    for o in outcomes {
                        match o.event {
                            Some(e) => println!(
                                "{}: generation {} public key {} (previous key accepted until {}){}",
                                o.identity,
                                e.generation,
                                e.public_key,
                                e.grace_until,
                                if o.pruned.is_empty() {
                                    String::new()
                                } else {
                                    format!("; pruned {:?}", o.pruned)
                                }
                            ),
                            None => {
                                println!("{}: has a key; left alone (--if-missing)", o.identity)
                            }
                        }
                    }
                    Exit::Ok
                }
                Err(RotateError::NoCurve) => {
                    eprintln!("zmq-key-rotate: {}", RotateError::NoCurve);
                    Exit::NoCurve
                }
                Err(e) => {
                    eprintln!("zmq-key-rotate: rotate: {e}");
                    Exit::Failed
                }
            }
        }
        Command::List {
            identities: names,
            json,
        } => {
            let ids = match identities(&names, &config) {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("zmq-key-rotate: {e}");
                    return Exit::Usage;
                }
            };
            match rotate::list(&config, &ids, now) {
                Ok(rows) if json => flag_problems(
                    print_json(&rows),
                    rows.iter().any(|r| !r.problems.is_empty()),
                ),
                Ok(rows) => {
                    let broken = rows.iter().any(|r| !r.problems.is_empty());
                    println!(
                        "{:<12} {:>4} {:<8} {:<20} {:>10} {:<20} PRUNE",
                        "IDENTITY", "GEN", "ROLE", "CREATED", "AGE", "GRACE UNTIL"
                    );
                    for r in rows {
                        println!(
                            "{:<12} {:>4} {:<8} {:<20} {:>10} {:<20} {}",
                            r.identity,
                            r.generation,
                            r.role,
                            r.created,
                            humantime::format_duration(std::time::Duration::from_secs(
                                r.age_seconds
                            ))
                            .to_string()
                            .split(' ')
                            .next()
                            .unwrap_or(""),
                            r.grace_until.as_deref().unwrap_or("-"),
                            if r.pruned_next {
                                "next rotation".to_string()
                            } else {
                                format!("after {}", r.prune_after)
                            }
                        );
                        for p in &r.problems {
                            println!("  PROBLEM: {p}");
                        }
                    }
                    flag_problems(Exit::Ok, broken)
                }
                Err(e) => {
                    eprintln!("zmq-key-rotate: list: {e}");
                    Exit::Failed
                }
            }
        }
        Command::Status { json } => match rotate::status(&config, &config.identities, now) {
            Ok(rows) if json => flag_problems(
                print_json(&rows),
                rows.iter().any(|s| !s.problems.is_empty()),
            ),
            Ok(rows) => {
                let broken = rows.iter().any(|s| !s.problems.is_empty());
                for s in rows {
                    match s.current {
                        None => {
                            println!("{}: no key yet (run `zmq-key-rotate rotate`)", s.identity)
                        }
                        Some(c) => println!(
                            "{}: current generation {c}, age {}; previous {}; {} kept; pruned next: {:?}",
                            s.identity,
                            humantime::format_duration(std::time::Duration::from_secs(
                                s.current_age_seconds.unwrap_or(0)
                            )),
                            match (s.previous, &s.previous_grace_until) {
                                (Some(p), Some(g)) if s.previous_in_grace =>
                                    format!("{p} accepted until {g}"),
                                (Some(p), _) => format!("{p} (grace over)"),
                                (None, _) => "none".into(),
                            },
                            s.generations,
                            s.pruned_next
                        ),
                    }
                    for p in &s.problems {
                        println!("  PROBLEM: {p}");
                    }
                }
                flag_problems(Exit::Ok, broken)
            }
            Err(e) => {
                eprintln!("zmq-key-rotate: status: {e}");
                Exit::Failed
            }
        },
        Command::Bus => {
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
                    eprintln!("zmq-key-rotate: install signal handler: {e}");
                    return Exit::Failed;
                }
            }
            let result = crate::bus::Bus::start(config).and_then(|mut b| b.run(stop));
            match result {
                Ok(()) => Exit::Ok,
                Err(crate::bus::BusError::Curve(RotateError::NoCurve)) => {
                    eprintln!("zmq-key-rotate: {}", RotateError::NoCurve);
                    Exit::NoCurve
                }
                Err(e) => {
                    tracing::error!(error = %e, "bus failed");
                    eprintln!("zmq-key-rotate: bus: {e}");
                    Exit::Failed
                }
            }
        }
    }
}
