use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use capsule_build::build::{BuildRequest, build};
use capsule_build::cli::{Cli, Command};
use capsule_build::{
    NoProgress, ProgressSink, TerminalProgress, config, exit, exit_code, read_password,
};
use clap::Parser;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE as u8 } else { 0 });
        }
    };
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::from(exit::OK as u8),
        Err(e) => {
            eprintln!("capsule-build: error: {}", render(&e));
            ExitCode::from(exit_code(&e) as u8)
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAPSULE_BUILD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let tty = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(tty)
        .with_target(false);
    if tty {
        builder.init();
    } else {
        builder.without_time().init();
    }
}

fn run(cli: Cli) -> Result<()> {
    let loaded = config::load(cli.config.as_deref())?;
    if let Some(f) = &loaded.file {
        tracing::debug!(path = %f.display(), overrides = ?loaded.overrides, "config read");
    }
    let cfg = loaded.config.clone();
    match cli.command {
        Command::Keygen(a) if a.cosign => {
            if a.password.password_file.is_some() || a.password.password_env.is_some() {
                return Err(capsule_build::InputError::msg(
                    "keygen --cosign writes an unencrypted PKCS#8 key (0600); a password is not \
                     supported: keep the key in your CI's secret store",
                )
                .into());
            }
            let name = a.name.as_deref().unwrap_or("cosign");
            let (pub_path, key_path, fp) =
                capsule_build::keygen::keygen_cosign(&a.out, name, a.force)?;
            tracing::info!(fingerprint = %fp, public = %pub_path.display(), secret = %key_path.display(), "cosign key pair written");
            println!("{}", pub_path.display());
            Ok(())
        }
        Command::Keygen(a) => {
            let pw = read_password(
                a.password.password_file.as_deref(),
                a.password.password_env.as_deref(),
            )?;
            let encrypted = pw.is_some();
            let (pub_path, key_path, id) = capsule_build::keygen::keygen(
                &a.out,
                a.name.as_deref().unwrap_or("minisign"),
                pw,
                a.force,
            )?;
            tracing::info!(key_id = %id, public = %pub_path.display(), secret = %key_path.display(), encrypted, "key pair written");
            println!("{}", pub_path.display());
            Ok(())
        }
        Command::Build(a) => {
            let (name, version, src) = match a.positional.as_slice() {
                [src] => (a.name.clone(), a.version.clone(), PathBuf::from(src)),
                [n, v, src] => {
                    if a.name.as_ref().is_some_and(|x| x != n)
                        || a.version.as_ref().is_some_and(|x| x != v)
                    {
                        bail!(
                            "NAME VERSION given both as positionals and as --name/--version, differently"
                        );
                    }
                    (Some(n.clone()), Some(v.clone()), PathBuf::from(src))
                }
                _ => {
                    return Err(capsule_build::InputError::msg(
                        "build takes SRC or NAME VERSION SRC (two positionals are ambiguous)",
                    )
                    .into());
                }
            };
            let password_file = a
                .password
                .password_file
                .clone()
                .or(cfg.password_file.clone());
            let password =
                read_password(password_file.as_deref(), a.password.password_env.as_deref())?;
            let req = BuildRequest {
                src,
                name,
                version,
                manifest: a.manifest.clone(),
                key: a.key.clone().or(cfg.key.clone()),
                password,
                cosign_key: a.cosign_key.clone(),
                attach_bundle: a.attach_bundle.clone(),
                out: a
                    .out
                    .clone()
                    .or(cfg.out_dir.clone())
                    .unwrap_or_else(|| PathBuf::from(".")),
                skip_sign: a.skip_sign,
                builder: a
                    .builder
                    .clone()
                    .or(cfg.builder.clone())
                    .unwrap_or_else(default_builder),
            };
            let mut progress: Box<dyn ProgressSink> = if std::io::stderr().is_terminal() {
                Box::new(TerminalProgress::default())
            } else {
                Box::new(NoProgress)
            };
            let built = build(&req, progress.as_mut())?;
            let c = &built.record.capsule;
            tracing::info!(
                name = %c.name, version = %c.version, sha256 = %c.sha256, size = c.size,
                release = %c.release_id, signed = !built.record.unsigned,
                "capsule built"
            );
            if a.json {
                println!("{}", serde_json::to_string_pretty(&built.record)?);
            } else {
                for p in &built.paths {
                    println!("{}", p.display());
                }
            }
            Ok(())
        }
        Command::Inspect(a) => {
            let i = capsule_build::inspect::inspect(&a.capsule, a.pubkey.as_deref())?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                print!("{}", i.text());
            }
            Ok(())
        }
        Command::CheckConfig => {
            match &loaded.file {
                Some(f) => println!("config file: {}", f.display()),
                None => println!("config file: none (defaults)"),
            }
            for o in &loaded.overrides {
                println!("override: {o}");
            }
            println!("{}", serde_json::to_string_pretty(&cfg)?);
            Ok(())
        }
    }
}

fn default_builder() -> String {
    if let Ok(b) = std::env::var("CAPSULE_BUILDER") {
        return b;
    }
    if std::env::var_os("CI").is_some() {
        return "ci".into();
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
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
