use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use capsule::names::{ReleaseId, ServiceName};
use clap::Parser;
use dickbox_deploy::cli::{Cli, Command};
use dickbox_deploy::ops::{self, Ctx, DeployOptions};
use dickbox_deploy::systemd::Systemd;
use dickbox_deploy::{config, exit, exit_code, fetch, verify::Refused};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            let code = exit_code(&e);
            eprintln!("dickbox-deploy: error: {}", render(&e));
            ExitCode::from(code)
        }
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::prelude::*;
    let level = if verbose > 0 { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DICKBOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let tty = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(tty)
        .with_target(false);
    // Under systemd (or with a journal socket) also log to the journal with
    // structured fields; without one, plain stderr only.
    let journald = if std::env::var_os("JOURNAL_STREAM").is_some() {
        tracing_journald::layer()
            .ok()
            .map(|l| l.with_field_prefix(None))
    } else {
        None
    };
    let reg = tracing_subscriber::registry().with(filter).with(journald);
    if tty {
        reg.with(fmt).init();
    } else {
        reg.with(fmt.without_time()).init();
    }
}

fn service(s: &str) -> Result<ServiceName> {
    ServiceName::parse(s).map_err(|e| Refused::Other(e.to_string()).into())
}

/// An `http(s)://` SOURCE is downloaded first (with its signatures) and then
/// handled like a local file; the download folder goes when this is dropped.
fn fetch_if_url(ctx: &Ctx, source: &std::path::Path) -> Result<Option<fetch::Downloaded>> {
    match source.to_str() {
        Some(s) if fetch::is_url(s) => fetch::fetch(&ctx.s, s).map(Some),
        _ => Ok(None),
    }
}

/// Errors about a downloaded file name the URL, not the private copy.
fn name_url(e: anyhow::Error, d: Option<&fetch::Downloaded>) -> anyhow::Error {
    match d {
        Some(d) => e.context(format!("capsule from {}", d.url())),
        None => e,
    }
}

fn run(cli: Cli) -> Result<()> {
    let loaded = config::load(cli.config.as_deref())?;
    tracing::debug!(file = ?loaded.file, overrides = ?loaded.overrides, "config read");
    let s = loaded.settings;
    let ctx = Ctx {
        sd: Systemd {
            systemctl: s.raw.systemctl.clone(),
            timeout: s.systemctl_timeout,
        },
        s,
    };
    match cli.command {
        Command::Deploy {
            source,
            allow_downgrade,
            bake,
        } => {
            let bake = bake
                .map(|b| capsule::quantity::parse_duration(&b))
                .transpose()
                .map_err(|e| Refused::Other(format!("--bake: {e}")))?;
            let local = fetch_if_url(&ctx, &source)?;
            let rel = ops::deploy(
                &ctx,
                local.as_ref().map_or(source.as_path(), |d| d.archive()),
                &DeployOptions {
                    allow_downgrade,
                    bake,
                },
            )
            .map_err(|e| name_url(e, local.as_ref()))?;
            println!(
                "deployed {} {} as release {}",
                rel.manifest.name, rel.manifest.version, rel.id
            );
        }
        Command::Verify { source } => {
            let local = fetch_if_url(&ctx, &source)?;
            let rel = ops::verify_only(
                &ctx,
                local.as_ref().map_or(source.as_path(), |d| d.archive()),
            )
            .map_err(|e| name_url(e, local.as_ref()))?;
            println!(
                "verified and staged {} {} as release {} ({})",
                rel.manifest.name,
                rel.manifest.version,
                rel.id,
                rel.path.display()
            );
        }
        Command::VerifyBlob {
            bundle,
            certificate_identity,
            certificate_identity_regexp,
            certificate_oidc_issuer,
            key,
            trusted_root,
            target,
        } => {
            let line = dickbox_deploy::verify::verify_blob(
                &ctx.s,
                &dickbox_deploy::verify::BlobRequest {
                    bundle,
                    identity: certificate_identity,
                    identity_regexp: certificate_identity_regexp,
                    issuer: certificate_oidc_issuer,
                    key,
                    trusted_root,
                    target,
                },
            )?;
            println!("{line}");
        }
        Command::Rollback { service: svc, to } => {
            let svc = service(&svc)?;
            let to = to
                .map(|t| ReleaseId::parse(&t))
                .transpose()
                .map_err(|e| Refused::Other(e.to_string()))?;
            let rel = ops::rollback(&ctx, &svc, to.as_ref())?;
            println!(
                "rolled {svc} back to {} {} (release {})",
                rel.manifest.name, rel.manifest.version, rel.id
            );
        }
        Command::Remove { service: svc } => {
            let svc = service(&svc)?;
            ops::remove(&ctx, &svc)?;
            println!("removed {svc}");
        }
        Command::Status { service: svc } => {
            let svc = svc.map(|s| service(&s)).transpose()?;
            let v = ops::status(&ctx, svc.as_ref())?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for s in v["services"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<10} current {} ({}) previous {} [{}]",
                        s["service"].as_str().unwrap_or(""),
                        s["capsule"].as_str().unwrap_or("-"),
                        s["current"].as_str().unwrap_or("-"),
                        s["version"].as_str().unwrap_or("-"),
                        s["previous"].as_str().unwrap_or("-"),
                        s["active_state"].as_str().unwrap_or("-"),
                    );
                }
                for p in v["unfinished_operations"].as_array().into_iter().flatten() {
                    println!(
                        "unfinished operation: {} (run `dickbox-deploy recover`)",
                        p.as_str().unwrap_or("")
                    );
                }
            }
        }
        Command::List => {
            let v = ops::list(&ctx)?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for r in v["releases"].as_array().into_iter().flatten() {
                    let used: Vec<&str> = r["used_as"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|x| x.as_str())
                        .collect();
                    println!(
                        "{}  {:<20} {:<12} {}",
                        r["release"].as_str().unwrap_or(""),
                        r["capsule"].as_str().unwrap_or("?"),
                        r["version"].as_str().unwrap_or("?"),
                        used.join(", ")
                    );
                }
            }
        }
        Command::Gc { keep } => {
            let keep = keep.unwrap_or(ctx.s.raw.keep);
            let removed = ops::gc(&ctx, keep)?;
            println!("gc removed {} release(s)", removed.len());
            for r in removed {
                println!("  {r}");
            }
        }
        Command::Recover { boot } => {
            let report = ops::recover(&ctx, boot)?;
            if report.is_empty() {
                println!("nothing to recover");
            }
            for l in report {
                println!("{l}");
            }
        }
        Command::CheckConfig => {
            match &loaded.file {
                Some(f) => println!("config file: {}", f.display()),
                None => println!("config file: none (defaults)"),
            }
            for o in &loaded.overrides {
                println!("override: {o}");
            }
            println!("{}", serde_json::to_string_pretty(&ctx.s.raw)?);
        }
    }
    Ok(())
}

/// The error and its causes on one line, leaving out a cause whose text the
/// line already holds (many errors print their source in their own message).
fn render(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
