//! The Python `sigstore` verifier (4.5.1, `--offline`) on the same corpus as
//! `sigstore.rs`: every case must get the same verdict (accepted or
//! refused) from both, except the disagreements listed and explained in
//! `KNOWN_DISAGREEMENTS`. Also runs both verifiers inside a network
//! namespace with no interfaces.

mod sigstore_cases;

use std::path::{Path, PathBuf};
use std::process::Command;

use capsule::sigstore::verify_bundle;
use sigstore_cases::{Case, Expect, cases, corpus};

/// Cases where the Python verifier's verdict differs from ours, and why.
const KNOWN_DISAGREEMENTS: &[(&str, &str)] = &[
    (
        "kubewarden-dsse / as recorded",
        "sigstore-python 4.5.1 refuses in-toto statements whose subject has no `name` \
         (its model requires it); in-toto v1 makes `name` optional when a digest is \
         given, and the statement's subject digest is what we bind to the capsule",
    ),
    (
        "kubewarden-dsse / checkpoint with an extra unknown cosigner",
        "same statement as above: Python refuses on the missing subject name",
    ),
    (
        "new_bundle / timestamp signature flipped",
        "Python skips an RFC 3161 timestamp that does not verify and goes on with the \
         others and Rekor's integrated time; we refuse a bundle carrying any timestamp \
         that does not verify (fail closed: a damaged field is a refusal)",
    ),
    (
        "new_bundle / timestamp genTime changed",
        "as for the flipped timestamp signature",
    ),
    (
        "new_bundle / timestamp imprint flipped",
        "as for the flipped timestamp signature",
    ),
    (
        "rfc8785-v0.2 / media type v0.1",
        "Python verifies a v0.1 bundle when it happens to carry an inclusion proof and \
         checkpoint; we refuse v0.1 by media type, so that acceptance never rests on \
         fields that version makes optional",
    ),
    (
        "rfc8785-v0.2 / CA window ended",
        "as for new_bundle / CA window ended",
    ),
    (
        "new_bundle / CA window ended",
        "Python accepts Fulcio CAs outside their trust-root validity window when \
         verifying (it allows expired CA windows); we count the window, end \
         inclusive, at the verified time, as the issue asks",
    ),
];

fn python() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    p.exists().then_some(p)
}

fn write_inputs(dir: &Path, case: &Case) -> (PathBuf, PathBuf) {
    let signing: serde_json::Value =
        serde_json::from_slice(&std::fs::read(corpus().join("signing_config.prod.json")).unwrap())
            .unwrap();
    let config = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
        "trustedRoot": case.root_json,
        "signingConfig": signing,
    });
    let cfg = dir.join("trust_config.json");
    std::fs::write(&cfg, serde_json::to_vec(&config).unwrap()).unwrap();
    let bundle = dir.join("bundle.sigstore.json");
    std::fs::write(&bundle, &case.bundle).unwrap();
    (cfg, bundle)
}

fn python_accepts(py: &Path, case: &Case, wrap: Option<&str>) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, bundle) = write_inputs(dir.path(), case);
    let mut cmd = match wrap {
        Some(w) => {
            let mut c = Command::new(w);
            c.arg("-n").arg(py);
            c
        }
        None => Command::new(py),
    };
    let out = cmd
        .args(["-m", "sigstore", "--trust-config"])
        .arg(&cfg)
        .args(["verify", "identity", "--offline", "--bundle"])
        .arg(&bundle)
        .args(["--cert-identity", &case.identity])
        .args(["--cert-oidc-issuer", &case.issuer])
        .arg(format!("sha256:{}", hex::encode(case.digest)))
        // No TUF cache or config from the user running the tests.
        .env("HOME", dir.path())
        .env("XDG_CACHE_HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).replace('\n', " ");
    (out.status.success(), text)
}

#[test]
fn python_sigstore_agrees_on_every_corpus_case() {
    let Some(py) = python() else {
        eprintln!("skipped: no .venv/bin/python (run scripts/setup)");
        return;
    };
    let mut failures = Vec::new();
    for case in cases() {
        let ours = case.expect == Expect::Ok;
        let (theirs, why) = python_accepts(&py, &case, None);
        let known = KNOWN_DISAGREEMENTS.iter().find(|(n, _)| *n == case.name);
        eprintln!("{}: ours {ours}, python {theirs}", case.name);
        match (ours == theirs, known) {
            (true, None) => {}
            (false, Some(_)) => {}
            (true, Some(_)) => failures.push(format!(
                "{}: listed as a disagreement but both say {ours}",
                case.name
            )),
            (false, None) => failures.push(format!(
                "{}: ours {ours}, python {theirs}: {why}",
                case.name
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const CHILD_ENV: &str = "DICKBOX_SIGSTORE_NETNS_CHILD";

/// Runs inside `unshare -n` (see below); outside it does nothing.
#[test]
fn netns_child_verifies_the_corpus() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // /proc/self/net/dev lists this network namespace's interfaces
    // (/sys/class/net would show the namespace sysfs was mounted in).
    let dev = std::fs::read_to_string("/proc/self/net/dev").unwrap();
    let ifaces: Vec<String> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|n| n.trim().to_owned()))
        .collect();
    assert!(
        ifaces.iter().all(|i| i == "lo"),
        "not an empty namespace: {ifaces:?}"
    );
    for case in cases() {
        let got = verify_bundle(
            &case.digest,
            &case.bundle,
            &case.name,
            &case.root,
            &case.policy(),
            None,
        );
        assert_eq!(
            got.is_ok(),
            case.expect == Expect::Ok,
            "{}: {got:?}",
            case.name
        );
    }
}

#[test]
fn both_verifiers_work_in_a_network_namespace_without_interfaces() {
    let is_root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if !is_root || Command::new("unshare").arg("--help").output().is_err() {
        eprintln!("skipped: needs root and unshare(1) to create a network namespace");
        return;
    }
    let me = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .arg("-n")
        .arg(&me)
        .args(["--exact", "netns_child_verifies_the_corpus", "--nocapture"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("1 passed"), "{text}");

    let Some(py) = python() else {
        eprintln!("skipped the Python half: no .venv/bin/python");
        return;
    };
    let all = cases();
    let good = all
        .iter()
        .find(|c| c.name == "new_bundle / as recorded")
        .unwrap();
    let bad = all
        .iter()
        .find(|c| c.name == "new_bundle / inclusion proof hash flipped")
        .unwrap();
    let (ok, why) = python_accepts(&py, good, Some("unshare"));
    assert!(ok, "python refused the good bundle offline: {why}");
    let (ok, _) = python_accepts(&py, bad, Some("unshare"));
    assert!(!ok, "python accepted a flipped inclusion proof offline");
}
