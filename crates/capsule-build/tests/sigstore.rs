//! capsule-build's Sigstore options end to end: `keygen --cosign`,
//! `build --cosign-key` (checked by openssl and by the library verifier) and
//! `build --attach-bundle`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use capsule::sigstore::{CosignKeys, verify_cosign};
use sha2::Digest as _;

const BIN: &str = env!("CARGO_BIN_EXE_capsule-build");

fn cb(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("DICKBOX_CONFIG", "/dev/null")
        .env_remove("CI")
        .output()
        .expect("spawn")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("bin/start.sh"), "#!/bin/sh\nexec sleep 1000\n").unwrap();
    fs::set_permissions(root.join("bin/start.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        root.join("capsule.yml"),
        "name: demo\nversion: 1.2.3\nentrypoint: bin/start.sh\nservices:\n  - name: demo\n",
    )
    .unwrap();
}

const ARCHIVE: &str = "demo-1.2.3.capsule.tar.zst";

fn sha256_of(p: &Path) -> [u8; 32] {
    sha2::Sha256::digest(fs::read(p).unwrap()).into()
}

#[test]
fn keygen_cosign_writes_a_private_0600_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let o = cb(&["keygen", "--cosign", "--out", d]);
    assert!(o.status.success(), "{}", stderr(&o));
    let key = fs::metadata(dir.path().join("cosign.key")).unwrap();
    let public = fs::metadata(dir.path().join("cosign.pem")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    assert_eq!(public.permissions().mode() & 0o777, 0o644);
    let o = cb(&["keygen", "--cosign", "--out", d]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("refusing to overwrite"),
        "{}",
        stderr(&o)
    );
    let o = cb(&[
        "keygen",
        "--cosign",
        "--out",
        d,
        "--name",
        "x",
        "--password-env",
        "HOME",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("password is not supported"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn build_with_cosign_key_writes_a_signature_openssl_and_the_verifier_accept() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let keys = dir.path().join("keys");
    let out = dir.path().join("out");
    let o = cb(&["keygen", "--cosign", "--out", keys.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cb(&["keygen", "--out", keys.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cb(&[
        "build",
        src.to_str().unwrap(),
        "--key",
        keys.join("minisign.key").to_str().unwrap(),
        "--cosign-key",
        keys.join("cosign.key").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let archive = out.join(ARCHIVE);
    let sig = fs::read_to_string(out.join(format!("{ARCHIVE}.cosign.sig"))).unwrap();
    assert!(out.join(format!("{ARCHIVE}.minisig")).exists());

    let trusted = CosignKeys::load(&keys).unwrap();
    let by = verify_cosign(&sha256_of(&archive), &sig, "sig", &trusted).unwrap();
    assert!(by.path.ends_with("cosign.pem"));

    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(sig.trim())
        .unwrap();
    fs::write(dir.path().join("sig.der"), der).unwrap();
    let v = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(keys.join("cosign.pem"))
        .arg("-signature")
        .arg(dir.path().join("sig.der"))
        .arg(&archive)
        .output()
        .expect("openssl is installed by scripts/setup");
    assert!(
        v.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&v.stdout)
    );

    let results = fs::read_to_string(out.join("demo-1.2.3.results.txt")).unwrap();
    assert!(
        results.contains("signature:         cosign ECDSA-P256-SHA256 key_id="),
        "{results}"
    );
    assert!(
        results.contains("signature:         minisign ED key_id="),
        "{results}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("demo-1.2.3.build.json")).unwrap()).unwrap();
    let kinds: Vec<&str> = json["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["minisign", "cosign"]);
    assert_eq!(
        json["signatures"][1]["key_id"].as_str().unwrap(),
        by.fingerprint
    );
}

#[test]
fn build_signs_with_an_openssl_made_key_alone() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sigstore/cosign");
    let out = dir.path().join("out");
    let o = cb(&[
        "build",
        src.to_str().unwrap(),
        "--cosign-key",
        corpus.join("test-only-p256.key").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.join(format!("{ARCHIVE}.minisig")).exists());
    let sig = fs::read_to_string(out.join(format!("{ARCHIVE}.cosign.sig"))).unwrap();
    let mut keys = CosignKeys::default();
    let pem = fs::read_to_string(corpus.join("test-only-p256.pem")).unwrap();
    keys.add_pem(&pem, "test-only-p256.pem".into()).unwrap();
    verify_cosign(&sha256_of(&out.join(ARCHIVE)), &sig, "sig", &keys).unwrap();
    // inspect lists the cosign signature beside the archive.
    let o = cb(&["inspect", out.join(ARCHIVE).to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(".cosign.sig (not checked here"), "{text}");

    // A P-384 key is refused before anything is written.
    let out2 = dir.path().join("out2");
    let o = cb(&[
        "build",
        src.to_str().unwrap(),
        "--cosign-key",
        corpus.join("test-only-p384.key").to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("P-256"), "{}", stderr(&o));
    assert!(!out2.join(ARCHIVE).exists());
}

#[test]
fn attach_bundle_copies_a_matching_bundle_and_refuses_another_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    // The build is reproducible: an unsigned build gives the digest a CI
    // signer would have signed.
    let first = dir.path().join("first");
    let o = cb(&[
        "build",
        src.to_str().unwrap(),
        "--skip-sign",
        "--out",
        first.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let digest = sha256_of(&first.join(ARCHIVE));
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let bundle = |d: &[u8]| {
        serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {},
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": b64.encode(d)},
                "signature": "AA=="
            }
        })
        .to_string()
    };
    let good = dir.path().join("good.sigstore.json");
    fs::write(&good, bundle(&digest)).unwrap();
    let other = dir.path().join("other.sigstore.json");
    fs::write(&other, bundle(&[0u8; 32])).unwrap();

    let out = dir.path().join("out");
    let o = cb(&[
        "build",
        src.to_str().unwrap(),
        "--attach-bundle",
        other.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("made for another build"),
        "{}",
        stderr(&o)
    );
    assert!(!out.join(ARCHIVE).exists());

    let o = cb(&[
        "build",
        src.to_str().unwrap(),
        "--attach-bundle",
        good.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read(out.join(format!("{ARCHIVE}.sigstore.json"))).unwrap(),
        fs::read(&good).unwrap()
    );
    let results = fs::read_to_string(out.join("demo-1.2.3.results.txt")).unwrap();
    assert!(
        results.contains(
            "signature:         sigstore-bundle application/vnd.dev.sigstore.bundle.v0.3+json file="
        ),
        "{results}"
    );
}
