//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the build or command failed (I/O, key, signing): see the message
  2  wrong command-line usage
  3  the input was refused: bad manifest, a file that may not go into a
     capsule, a damaged or unsafe archive
  4  a signature does not verify (inspect --pubkey)";

/// Build reproducible, signed Dickbox capsules.
#[derive(Debug, Parser)]
#[command(name = "capsule-build", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Config file (default /etc/dickbox/dickbox.yml; its `build` section).
    #[arg(long, global = true, env = "DICKBOX_CONFIG")]
    pub config: Option<PathBuf>,

    /// More log output (-v: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a minisign key pair (NAME.pub, NAME.key) for signing in CI, or
    /// with --cosign a P-256 pair (NAME.pem, NAME.key) for cosign-style
    /// signatures.
    Keygen(KeygenArgs),
    /// Build and sign a capsule from a service tree.
    ///
    /// Forms: `build SRC --name N --version V ...` or the older
    /// `build NAME VERSION SRC ...`. With a capsule.yml in SRC (or
    /// --manifest) name and version come from it.
    Build(BuildArgs),
    /// Show a capsule's manifest, files and signature without extracting it.
    Inspect(InspectArgs),
    /// Check the `build` section of the config file and print the result.
    CheckConfig,
}

#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// Read the secret key's password from the first line of this file.
    #[arg(long, value_name = "FILE", conflicts_with = "password_env")]
    pub password_file: Option<PathBuf>,
    /// Read the secret key's password from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Folder for the key files.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Base name of the key files (default: minisign, or cosign with --cosign).
    #[arg(long)]
    pub name: Option<String>,
    /// Make an ECDSA P-256 key pair in PEM (NAME.pem public, NAME.key secret,
    /// unencrypted, mode 0600) for `build --cosign-key`.
    #[arg(long)]
    pub cosign: bool,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub password: PasswordArgs,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// SRC, or NAME VERSION SRC.
    #[arg(value_name = "SRC", num_args = 1..=3, required = true)]
    pub positional: Vec<String>,
    /// Capsule name (must match the manifest's, if there is one).
    #[arg(long)]
    pub name: Option<String>,
    /// Capsule version, semver (must match the manifest's, if there is one).
    #[arg(long)]
    pub version: Option<String>,
    /// Manifest file to use instead of SRC/capsule.yml.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// minisign secret key (made by `capsule-build keygen` or `minisign -G`).
    #[arg(long, value_name = "SECRET")]
    pub key: Option<PathBuf>,
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Also sign with this ECDSA P-256 PEM secret key, cosign-style
    /// (writes ….capsule.tar.zst.cosign.sig).
    #[arg(long, value_name = "KEY.pem")]
    pub cosign_key: Option<PathBuf>,
    /// Attach a Sigstore bundle made elsewhere for this archive (copied
    /// beside it as ….capsule.tar.zst.sigstore.json; it must sign the
    /// archive's SHA-256).
    #[arg(long, value_name = "FILE")]
    pub attach_bundle: Option<PathBuf>,
    /// Output folder (default: the current folder).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Build without signing. The capsule cannot be deployed; for local tests.
    #[arg(long)]
    pub skip_sign: bool,
    /// Who built it, for the records (default: $CAPSULE_BUILDER, else "ci"
    /// when $CI is set, else user@host).
    #[arg(long)]
    pub builder: Option<String>,
    /// Print the build record as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The capsule archive (.capsule.tar.zst or .capsule.tar.gz).
    pub capsule: PathBuf,
    /// Verify the signature beside the archive with this public key.
    #[arg(long, value_name = "PUB")]
    pub pubkey: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}
