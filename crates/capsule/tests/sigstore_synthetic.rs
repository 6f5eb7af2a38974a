//! Bundles signed by a public key, built here with a test-only Rekor key:
//! no public log will sign an entry for us, so this is the only way to test
//! the accepting path of public-key bundles and a checkpoint carrying a
//! second, real signature next to the log's.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use capsule::sigstore::{
    CosignKeys, Identity, IdentityPolicy, Rule, Signer, SigstoreError, TrustedRoot, verify_bundle,
};
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::EncodePublicKey as _;
use sha2::Digest as _;

fn corpus() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sigstore/cosign")
}

fn sign(key: &p256::ecdsa::SigningKey, msg: &[u8]) -> Vec<u8> {
    let sig: p256::ecdsa::Signature = key.sign(msg);
    sig.to_der().as_bytes().to_vec()
}

fn node(l: &[u8], r: &[u8]) -> Vec<u8> {
    let mut h = sha2::Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().to_vec()
}

struct Made {
    bundle: serde_json::Value,
    root: TrustedRoot,
    digest: [u8; 32],
}

/// A hashedrekord bundle over payload.bin signed by test-only-p256.key, in
/// a two-leaf log whose checkpoint is signed by `signers` (true: the log
/// key; false: an unrelated witness key), in that order.
fn make(signers: &[bool]) -> Made {
    let rekor = p256::ecdsa::SigningKey::from_slice(&[0x11; 32]).unwrap();
    let witness = p256::ecdsa::SigningKey::from_slice(&[0x22; 32]).unwrap();
    let rekor_der = rekor.verifying_key().to_public_key_der().unwrap();
    let log_id: [u8; 32] = sha2::Sha256::digest(rekor_der.as_bytes()).into();
    let root_json = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [{
            "baseUrl": "https://rekor.test-only.invalid",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": B64.encode(rekor_der.as_bytes()),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": "2020-01-01T00:00:00Z"}
            },
            "logId": {"keyId": B64.encode(log_id)}
        }],
        "certificateAuthorities": [], "ctlogs": [], "timestampAuthorities": []
    });
    let root = TrustedRoot::parse(&serde_json::to_vec(&root_json).unwrap(), "synthetic").unwrap();

    let payload = std::fs::read(corpus().join("payload.bin")).unwrap();
    let digest: [u8; 32] = sha2::Sha256::digest(&payload).into();
    let key_pem = std::fs::read_to_string(corpus().join("test-only-p256.key")).unwrap();
    let (sig_b64, pub_pem) = capsule::sigstore::sign_cosign(&digest, &key_pem, "k").unwrap();
    let body = serde_json::json!({
        "apiVersion": "0.0.1", "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hex::encode(digest)}},
            "signature": {"content": sig_b64, "publicKey": {"content": B64.encode(&pub_pem)}}
        }
    })
    .to_string();
    let body_b64 = B64.encode(&body);
    let (integrated, index) = (1_700_000_000u64, 7u64);
    let set = sign(
        &rekor,
        format!(
            "{{\"body\":\"{body_b64}\",\"integratedTime\":{integrated},\"logID\":\"{}\",\"logIndex\":{index}}}",
            hex::encode(log_id)
        )
        .as_bytes(),
    );
    let mut leaf = vec![0u8];
    leaf.extend_from_slice(body.as_bytes());
    let leaf = sha2::Sha256::digest(&leaf).to_vec();
    let sibling = vec![0x5a; 32];
    let tree_root = node(&sibling, &leaf);
    let note = format!("rekor.test-only - 1\n2\n{}\n", B64.encode(&tree_root));
    let mut sigs = String::new();
    for &by_log in signers {
        let (name, key, hint) = if by_log {
            ("rekor.test-only", &rekor, log_id[..4].to_vec())
        } else {
            ("witness.test-only", &witness, vec![9, 9, 9, 9])
        };
        let mut s = hint;
        s.extend(sign(key, note.as_bytes()));
        sigs.push_str(&format!("\u{2014} {name} {}\n", B64.encode(s)));
    }
    let bundle = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {
            "publicKey": {"hint": "test-only"},
            "tlogEntries": [{
                "logIndex": index.to_string(),
                "logId": {"keyId": B64.encode(log_id)},
                "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
                "integratedTime": integrated.to_string(),
                "inclusionPromise": {"signedEntryTimestamp": B64.encode(set)},
                "inclusionProof": {
                    "logIndex": "1", "rootHash": B64.encode(&tree_root), "treeSize": "2",
                    "hashes": [B64.encode(&sibling)],
                    "checkpoint": {"envelope": format!("{note}\n{sigs}")}
                },
                "canonicalizedBody": body_b64
            }]
        },
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": B64.encode(digest)},
            "signature": sig_b64
        }
    });
    Made {
        bundle,
        root,
        digest,
    }
}

fn keys(names: &[&str]) -> CosignKeys {
    let mut k = CosignKeys::default();
    for n in names {
        let text = std::fs::read_to_string(corpus().join(n)).unwrap();
        k.add_pem(&text, (*n).into()).unwrap();
    }
    k
}

fn policy() -> IdentityPolicy {
    IdentityPolicy::new("https://unused.invalid", Identity::Exact("unused".into())).unwrap()
}

fn run(m: &Made, k: &CosignKeys) -> Result<capsule::sigstore::BundleVerified, SigstoreError> {
    let bytes = serde_json::to_vec(&m.bundle).unwrap();
    verify_bundle(&m.digest, &bytes, "synthetic", &m.root, &policy(), Some(k))
}

#[test]
fn public_key_bundle_verifies_with_a_trusted_key_and_a_cosigned_checkpoint() {
    let m = make(&[false, true]);
    let ok = run(
        &m,
        &keys(&["test-only-other-p256.pem", "test-only-p256.pem"]),
    )
    .unwrap();
    let Signer::Key(by) = &ok.signer else {
        panic!("want a key signer: {ok:?}");
    };
    assert!(by.path.ends_with("test-only-p256.pem"));
    assert_eq!((ok.integrated_time, ok.log_index), (1_700_000_000, 7));
}

#[test]
fn public_key_bundle_refusals_name_the_rule() {
    let rule = |r: Result<_, SigstoreError>| match r {
        Err(SigstoreError::Rule { rule, .. }) => Some(rule),
        other => panic!("want a rule refusal, got {other:?}"),
    };
    let good = keys(&["test-only-p256.pem"]);
    // Signed by an untrusted key.
    let m = make(&[true]);
    assert_eq!(
        rule(run(&m, &keys(&["test-only-other-p256.pem"]))),
        Some(Rule::PublicKey)
    );
    // Checkpoint signed only by the witness.
    let m = make(&[false]);
    assert_eq!(rule(run(&m, &good)), Some(Rule::TlogCheckpoint));
    // One flipped byte in each log field.
    let tl = "/verificationMaterial/tlogEntries/0";
    for (ptr, want) in [
        (
            format!("{tl}/inclusionProof/hashes/0"),
            Rule::TlogInclusionProof,
        ),
        (
            format!("{tl}/inclusionPromise/signedEntryTimestamp"),
            Rule::TlogSet,
        ),
        ("/messageSignature/signature".to_owned(), Rule::PublicKey),
    ] {
        let mut m = make(&[true]);
        let f = m.bundle.pointer_mut(&ptr).unwrap();
        let mut raw = B64.decode(f.as_str().unwrap()).unwrap();
        let n = raw.len();
        raw[n - 3] ^= 1;
        *f = B64.encode(raw).into();
        assert_eq!(rule(run(&m, &good)), Some(want), "{ptr}");
    }
}
