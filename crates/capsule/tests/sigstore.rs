//! Sigstore verification against recorded public bundles and trust roots
//! (tests/sigstore/, origin in its README) and variants with one field
//! altered. Each case names the rule that must refuse it; the Python
//! `sigstore` verifier runs on the same cases in `sigstore_python.rs`.

mod sigstore_cases;

use capsule::sigstore::{
    CosignKeys, Identity, IdentityPolicy, Rule, SigstoreError, TrustedRoot, verify_bundle,
    verify_cosign,
};
use sigstore_cases::{Expect, cases, corpus, digest_of};

fn cosign_dir() -> std::path::PathBuf {
    corpus().join("cosign")
}

#[test]
fn corpus_cases_get_the_expected_verdict() {
    let mut failures = Vec::new();
    for case in cases() {
        let got = verify_bundle(
            &case.digest,
            &case.bundle,
            &case.name,
            &case.root,
            &case.policy(),
            None,
        );
        let ok = match (&case.expect, &got) {
            (Expect::Ok, Ok(_)) => true,
            (Expect::Refused(rule), Err(SigstoreError::Rule { rule: r, .. })) => r == rule,
            (Expect::Malformed, Err(SigstoreError::Malformed { .. })) => true,
            (Expect::MediaType, Err(SigstoreError::MediaType { .. })) => true,
            _ => false,
        };
        let shown = match &got {
            Ok(v) => format!("ok {v:?}"),
            Err(e) => format!("refused: {e}"),
        };
        eprintln!("{}: {shown}", case.name);
        if !ok {
            failures.push(format!(
                "{}: want {:?}, got {shown}",
                case.name, case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn refusals_name_the_rule_and_the_bundle() {
    let root = TrustedRoot::from_file(&corpus().join("trusted_root.prod.json")).unwrap();
    let bundle = std::fs::read(corpus().join("corpus/new_bundle.txt.sigstore.json")).unwrap();
    let digest = digest_of(&corpus().join("corpus/new_bundle.txt"));
    let policy = IdentityPolicy::new(
        "https://github.com/login/oauth",
        Identity::Exact("someone-else@example.com".into()),
    )
    .unwrap();
    let err = verify_bundle(&digest, &bundle, "x.sigstore.json", &root, &policy, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("x.sigstore.json") && err.contains("rule identity"),
        "{err}"
    );
    let policy = IdentityPolicy::new(
        "https://github.com/login/oauth",
        Identity::pattern(r"[a-z]+@gmail\.com").unwrap(),
    )
    .unwrap();
    let ok = verify_bundle(&digest, &bundle, "x", &root, &policy, None).unwrap();
    assert_eq!(ok.timestamps.len(), 1);
    assert_eq!(ok.integrated_time, 1_787_504_520);
    // A pattern matches whole identities only.
    let policy = IdentityPolicy::new(
        "https://github.com/login/oauth",
        Identity::pattern(r"aryadeeptade").unwrap(),
    )
    .unwrap();
    assert!(verify_bundle(&digest, &bundle, "x", &root, &policy, None).is_err());
}

#[test]
fn openssl_cosign_signature_verifies_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for k in ["test-only-other-p256.pem", "test-only-p256.pem"] {
        std::fs::copy(cosign_dir().join(k), dir.path().join(k)).unwrap();
    }
    let keys = CosignKeys::load(dir.path()).unwrap();
    let digest = digest_of(&cosign_dir().join("payload.bin"));
    let sig = std::fs::read_to_string(cosign_dir().join("payload.bin.cosign.sig")).unwrap();
    let by = verify_cosign(&digest, &sig, "payload.bin.cosign.sig", &keys).unwrap();
    assert!(by.path.ends_with("test-only-p256.pem"), "{by:?}");
}

#[test]
fn cosign_refusals_are_named() {
    let one = |name: &str| {
        let mut k = CosignKeys::default();
        let text = std::fs::read_to_string(cosign_dir().join(name)).unwrap();
        k.add_pem(&text, name.into()).map(|()| k)
    };
    let good = one("test-only-p256.pem").unwrap();
    let other = one("test-only-other-p256.pem").unwrap();
    let digest = digest_of(&cosign_dir().join("payload.bin"));
    let sig = std::fs::read_to_string(cosign_dir().join("payload.bin.cosign.sig")).unwrap();
    let p384_sig =
        std::fs::read_to_string(cosign_dir().join("payload.bin.p384.cosign.sig")).unwrap();
    let mut tampered = digest;
    tampered[0] ^= 1;
    let cases: Vec<(&str, Result<(), SigstoreError>, &str)> = vec![
        (
            "tampered file",
            verify_cosign(&tampered, &sig, "s", &good).map(drop),
            "does not verify",
        ),
        (
            "wrong key",
            verify_cosign(&digest, &sig, "s", &other).map(drop),
            "does not verify",
        ),
        (
            "DER garbage",
            verify_cosign(&digest, "AAECAwQF", "s", &good).map(drop),
            "not a DER",
        ),
        (
            "not base64",
            verify_cosign(&digest, "%%%", "s", &good).map(drop),
            "not base64",
        ),
        (
            "P-384 signature",
            verify_cosign(&digest, &p384_sig, "s", &good).map(drop),
            "P-256",
        ),
        (
            "P-384 key",
            one("test-only-p384.pem").map(drop),
            "P-384 key where ECDSA P-256",
        ),
        (
            "no keys",
            verify_cosign(&digest, &sig, "s", &CosignKeys::default()).map(drop),
            "tried 0",
        ),
    ];
    for (name, got, want) in cases {
        let err = got.expect_err(name).to_string();
        assert!(err.contains(want), "{name}: want {want:?} in {err}");
    }
}

#[test]
fn capsule_build_key_signs_what_openssl_verifies() {
    let (public, private) = capsule::sigstore::generate_cosign_keypair().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(&data, b"capsule bytes").unwrap();
    let digest = digest_of(&data);
    let (sig, pub2) = capsule::sigstore::sign_cosign(&digest, &private, "k").unwrap();
    assert_eq!(public, pub2);
    let mut keys = CosignKeys::default();
    keys.add_pem(&public, "k.pem".into()).unwrap();
    verify_cosign(&digest, &sig, "s", &keys).unwrap();
    let Ok(out) = std::process::Command::new("openssl")
        .arg("version")
        .output()
    else {
        eprintln!("skipped the openssl half: no openssl on PATH");
        return;
    };
    assert!(out.status.success());
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(&sig)
        .unwrap();
    std::fs::write(dir.path().join("sig.der"), der).unwrap();
    std::fs::write(dir.path().join("k.pem"), &public).unwrap();
    let st = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(dir.path().join("k.pem"))
        .arg("-signature")
        .arg(dir.path().join("sig.der"))
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stdout)
    );
}

#[test]
fn public_key_bundles_need_trusted_keys() {
    let root = TrustedRoot::from_file(&corpus().join("trusted_root.prod.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(corpus().join("corpus/new_bundle.txt.sigstore.json")).unwrap(),
    )
    .unwrap();
    let vm = v["verificationMaterial"].as_object_mut().unwrap();
    vm.remove("certificate");
    vm.insert("publicKey".into(), serde_json::json!({"hint": "test"}));
    let bundle = serde_json::to_vec(&v).unwrap();
    let digest = digest_of(&corpus().join("corpus/new_bundle.txt"));
    let policy = IdentityPolicy::new("https://x", Identity::Exact("y".into())).unwrap();
    let err = verify_bundle(&digest, &bundle, "pk", &root, &policy, None).unwrap_err();
    assert!(
        matches!(
            err,
            SigstoreError::Rule {
                rule: Rule::PublicKey,
                ..
            }
        ),
        "{err}"
    );
    let mut keys = CosignKeys::default();
    let text = std::fs::read_to_string(cosign_dir().join("test-only-p256.pem")).unwrap();
    keys.add_pem(&text, "k".into()).unwrap();
    let err = verify_bundle(&digest, &bundle, "pk", &root, &policy, Some(&keys)).unwrap_err();
    assert!(
        matches!(
            err,
            SigstoreError::Rule {
                rule: Rule::PublicKey,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn trust_roots_that_do_not_parse_or_link_up_are_refused() {
    let text = std::fs::read(corpus().join("trusted_root.prod.json")).unwrap();
    let good: serde_json::Value = serde_json::from_slice(&text).unwrap();
    let mut swapped = good.clone();
    let chain = swapped["certificateAuthorities"][1]["certChain"]["certificates"]
        .as_array_mut()
        .unwrap();
    chain.reverse();
    let mut media = good.clone();
    media["mediaType"] = "application/json".into();
    let mut time = good.clone();
    time["tlogs"][0]["publicKey"]["validFor"]["start"] = "yesterday".into();
    for (name, v, want) in [
        ("swapped chain", swapped, "does not link up"),
        ("media type", media, "unknown media type"),
        ("bad time", time, "bad start time"),
    ] {
        let err = TrustedRoot::parse(&serde_json::to_vec(&v).unwrap(), "root.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(want) && err.contains("root.json"),
            "{name}: {err}"
        );
    }
}
