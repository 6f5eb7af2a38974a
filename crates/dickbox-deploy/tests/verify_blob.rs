//! `dickbox-deploy verify-blob` on a real public Sigstore bundle and trust
//! root (tests/sigstore/, origins in its README), fully offline.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_dickbox-deploy");

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sigstore")
}

const ISSUER: &str = "https://github.com/login/oauth";
const IDENTITY: &str = "aryadeeptade@gmail.com";

fn blob(extra: &[&str], target: &str) -> Output {
    let c = corpus();
    let bundle = c.join("corpus/new_bundle.txt.sigstore.json");
    let root = c.join("trusted_root.prod.json");
    let mut args = vec![
        "verify-blob".to_owned(),
        "--bundle".to_owned(),
        bundle.display().to_string(),
        "--trusted-root".to_owned(),
        root.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(target.to_owned());
    Command::new(BIN)
        .args(&args)
        .env("DICKBOX_CONFIG", "/dev/null")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn file() -> String {
    corpus().join("corpus/new_bundle.txt").display().to_string()
}

#[test]
fn a_real_bundle_verifies_by_file_and_by_digest() {
    let who = [
        "--certificate-identity",
        IDENTITY,
        "--certificate-oidc-issuer",
        ISSUER,
    ];
    let o = blob(&who, &file());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("verified"));

    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(std::fs::read(file()).unwrap()));
    let o = blob(&who, &format!("sha256:{digest}"));
    assert!(o.status.success(), "{}", stderr(&o));

    let o = blob(
        &[
            "--certificate-identity-regexp",
            r".*@gmail\.com",
            "--certificate-oidc-issuer",
            ISSUER,
        ],
        &file(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Each row: flags, target, and the piece of the refusal (exit 3).
#[test]
fn refusals_name_the_rule() {
    let tampered = tempfile::NamedTempFile::new().unwrap();
    let mut bytes = std::fs::read(file()).unwrap();
    bytes[0] ^= 1;
    std::fs::write(tampered.path(), bytes).unwrap();
    let tampered = tampered.path().display().to_string();
    let cases: Vec<(Vec<&str>, String, &str)> = vec![
        (
            vec![
                "--certificate-identity",
                "someone-else@example.com",
                "--certificate-oidc-issuer",
                ISSUER,
            ],
            file(),
            "rule identity",
        ),
        (
            vec![
                "--certificate-identity",
                IDENTITY,
                "--certificate-oidc-issuer",
                "https://accounts.example.com",
            ],
            file(),
            "identity",
        ),
        (
            vec![
                "--certificate-identity",
                IDENTITY,
                "--certificate-oidc-issuer",
                ISSUER,
            ],
            tampered,
            "bundle",
        ),
        (
            vec!["--certificate-identity", IDENTITY],
            file(),
            "needs --certificate-oidc-issuer",
        ),
        (vec![], file(), "give --certificate-identity"),
        (
            vec![
                "--certificate-identity",
                IDENTITY,
                "--certificate-oidc-issuer",
                ISSUER,
            ],
            "sha256:1234".to_owned(),
            "64 hex digits",
        ),
    ];
    for (flags, target, want) in cases {
        let o = blob(&flags, &target);
        assert_eq!(
            o.status.code(),
            Some(3),
            "{flags:?} {target}: {}",
            stderr(&o)
        );
        assert!(
            stderr(&o).contains(want),
            "{flags:?}: want {want:?} in {}",
            stderr(&o)
        );
    }
}

/// No network, ever: inside a network namespace without interfaces the
/// verdict is the same.
#[test]
fn verifies_without_any_network() {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        eprintln!("skipped: unshare -n needs root");
        return;
    }
    let c = corpus();
    let o = Command::new("unshare")
        .args(["-n", BIN, "verify-blob", "--bundle"])
        .arg(c.join("corpus/new_bundle.txt.sigstore.json"))
        .arg("--trusted-root")
        .arg(c.join("trusted_root.prod.json"))
        .args([
            "--certificate-identity",
            IDENTITY,
            "--certificate-oidc-issuer",
            ISSUER,
        ])
        .arg(file())
        .env("DICKBOX_CONFIG", "/dev/null")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}
