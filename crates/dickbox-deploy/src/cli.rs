//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0  success (for deploy: the new release serves, or was already current)
  1  failed: I/O, systemd, configuration; see the message
  2  wrong command-line usage
  3  refused before anything changed: unsigned, untrusted, revoked, tampered
     or unsafe capsule, downgrade, policy, unknown service or release
  4  the new release did not start or was not healthy: it was stopped and the
     previous release keeps serving (also: failed during --bake, rolled back)
  5  another dickbox-deploy held the lock for longer than deploy.lock_timeout";

/// Verify, stage and blue-green deploy Dickbox capsules under systemd.
#[derive(Debug, Parser)]
#[command(name = "dickbox-deploy", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Config file (default /etc/dickbox/dickbox.yml; its `deploy` section).
    #[arg(long, global = true, env = "DICKBOX_CONFIG")]
    pub config: Option<PathBuf>,

    /// More log output (-v: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Print JSON (status, list).
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Verify, stage, start beside the running version, health-check, switch.
    Deploy {
        /// The capsule archive (NAME-VERSION.capsule.tar.zst); its signature
        /// is read from the same path plus .minisig.
        source: PathBuf,
        /// Allow a version below the highest deployed so far (logged).
        #[arg(long)]
        allow_downgrade: bool,
        /// Watch the new release this long after the switch and roll back by
        /// itself if it fails (e.g. 5m).
        #[arg(long, value_name = "DURATION")]
        bake: Option<String>,
    },
    /// Verify and stage a capsule without starting anything.
    Verify { source: PathBuf },
    /// Check any file (or sha256:<hex> digest) against a Sigstore bundle,
    /// offline, with the same code as deploy. Exit 0, or 3 naming the rule.
    VerifyBlob {
        /// The Sigstore bundle (.sigstore.json).
        #[arg(long)]
        bundle: PathBuf,
        /// The certificate identity (SAN) that must have signed, exactly.
        #[arg(long, conflicts_with = "key")]
        certificate_identity: Option<String>,
        /// Or a regular expression the whole SAN must match.
        #[arg(long, conflicts_with_all = ["key", "certificate_identity"])]
        certificate_identity_regexp: Option<String>,
        /// The OIDC issuer the certificate must name.
        #[arg(long)]
        certificate_oidc_issuer: Option<String>,
        /// A P-256 public key (PEM) for bundles signed with a key.
        #[arg(long, value_name = "PEM")]
        key: Option<PathBuf>,
        /// The pinned trust root (default: <trust_dir>/sigstore/trusted_root.json).
        #[arg(long, value_name = "FILE")]
        trusted_root: Option<PathBuf>,
        /// The file, or its digest as sha256:<64 hex>.
        target: String,
    },
    /// Switch a service back to its previous release, or to a kept one.
    Rollback {
        service: String,
        #[arg(long, value_name = "RELEASE")]
        to: Option<String>,
    },
    /// Stop and remove a service's units and links (its releases stay until gc).
    Remove { service: String },
    /// Show services, their current and previous releases, and their state.
    Status { service: Option<String> },
    /// List the releases kept on this host.
    List,
    /// Remove releases that are neither current nor previous, keeping N per capsule.
    Gc {
        #[arg(long)]
        keep: Option<usize>,
    },
    /// Finish or undo what a crash interrupted; recreate current.sock links.
    Recover {
        /// Queue the starts of current instances instead of waiting for them
        /// (what dickbox-recover.service runs at boot).
        #[arg(long)]
        boot: bool,
    },
    /// Check the deploy section of the config and print the settings in use.
    CheckConfig,
}
