//! Bundle verification: parse strictly, then check every rule in turn.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use super::cosign::{CosignKeys, VerifiedBy};
use super::keys::{Hash, pem_block};
use super::tlog::{self, RawEntry};
use super::trust::TrustedRoot;
use super::x509::{self, Cert};
use super::{Rule, SigstoreError, tsa};

const MEDIA_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const MEDIA_V03_ALT: &str = "application/vnd.dev.sigstore.bundle+json;version=0.3";
const MEDIA_V02: &str = "application/vnd.dev.sigstore.bundle+json;version=0.2";
const INTOTO: &str = "application/vnd.in-toto+json";

/// The certificate identity a policy accepts.
#[derive(Debug, Clone)]
pub enum Identity {
    /// The SAN must equal this string.
    Exact(String),
    /// The SAN must match this regular expression in full.
    Pattern(regex::Regex),
}

impl Identity {
    /// A pattern, anchored so it matches whole SAN values only.
    pub fn pattern(re: &str) -> Result<Identity, SigstoreError> {
        regex::Regex::new(&format!("^(?:{re})$"))
            .map(Identity::Pattern)
            .map_err(|e| SigstoreError::Policy(format!("identity pattern {re:?}: {e}")))
    }

    fn matches(&self, san: &str) -> bool {
        match self {
            Identity::Exact(s) => s == san,
            Identity::Pattern(re) => re.is_match(san),
        }
    }
}

/// Who may sign: the OIDC issuer and the certificate identity.
#[derive(Debug, Clone)]
pub struct IdentityPolicy {
    pub issuer: String,
    pub identity: Identity,
}

impl IdentityPolicy {
    pub fn new(issuer: &str, identity: Identity) -> Result<IdentityPolicy, SigstoreError> {
        if issuer.is_empty() {
            return Err(SigstoreError::Policy(
                "the OIDC issuer must not be empty".into(),
            ));
        }
        Ok(IdentityPolicy {
            issuer: issuer.to_owned(),
            identity,
        })
    }
}

/// Who signed a verified bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// A Fulcio certificate: the SAN that matched and the OIDC issuer.
    Certificate { identity: String, issuer: String },
    /// A trusted cosign key.
    Key(VerifiedBy),
}

/// What a verified bundle established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleVerified {
    pub signer: Signer,
    /// Rekor's integrated time (unix seconds), from the verified entry.
    pub integrated_time: i64,
    pub log_index: u64,
    /// Times of the verified RFC 3161 timestamps.
    pub timestamps: Vec<i64>,
    /// `message-signature` or `dsse`.
    pub content: &'static str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawBundle {
    media_type: String,
    verification_material: RawMaterial,
    message_signature: Option<RawMessageSignature>,
    dsse_envelope: Option<RawEnvelope>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawMaterial {
    certificate: Option<RawBytes>,
    x509_certificate_chain: Option<RawChain>,
    public_key: Option<serde_json::Value>,
    #[serde(default)]
    tlog_entries: Vec<RawEntry>,
    timestamp_verification_data: Option<RawTsData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawBytes {
    raw_bytes: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChain {
    certificates: Vec<RawBytes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawTsData {
    #[serde(default)]
    rfc3161_timestamps: Vec<RawTimestamp>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawTimestamp {
    signed_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawMessageSignature {
    message_digest: Option<RawDigest>,
    signature: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDigest {
    algorithm: String,
    digest: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawEnvelope {
    payload: String,
    payload_type: String,
    signatures: Vec<RawDsseSig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDsseSig {
    sig: String,
    #[serde(default)]
    keyid: String,
}

/// The signed content of a bundle, reduced to what the checks need.
enum Content {
    Message {
        signature: Vec<u8>,
    },
    Dsse {
        pae: Vec<u8>,
        payload: Vec<u8>,
        signature: Vec<u8>,
    },
}

impl Content {
    fn signature(&self) -> &[u8] {
        match self {
            Content::Message { signature } | Content::Dsse { signature, .. } => signature,
        }
    }
}

/// DSSE's pre-authentication encoding.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Verifies a bundle (`bundle_json`, named `origin` in errors) over a file
/// whose SHA-256 is `sha256`. A bundle whose verification material is a
/// public key is checked against `keys` (`None`: refused).
pub fn verify_bundle(
    sha256: &[u8; 32],
    bundle_json: &[u8],
    origin: &str,
    root: &TrustedRoot,
    policy: &IdentityPolicy,
    keys: Option<&CosignKeys>,
) -> Result<BundleVerified, SigstoreError> {
    let refuse = |rule: Rule, detail: String| SigstoreError::Rule {
        origin: origin.to_owned(),
        rule,
        detail,
    };
    let bad = |problem: String| SigstoreError::Malformed {
        what: "bundle",
        origin: origin.to_owned(),
        problem,
    };
    if bundle_json.len() as u64 > super::MAX_BUNDLE_FILE {
        return Err(bad("too large".into()));
    }

    // Media type first, so an old bundle is refused by name even if its
    // fields differ.
    let head: serde_json::Value =
        serde_json::from_slice(bundle_json).map_err(|e| bad(format!("not JSON: {e}")))?;
    let media = head
        .get("mediaType")
        .and_then(|m| m.as_str())
        .ok_or_else(|| bad("no mediaType".into()))?
        .to_owned();
    match media.as_str() {
        MEDIA_V03 | MEDIA_V03_ALT | MEDIA_V02 => {}
        m if m.starts_with("application/vnd.dev.sigstore.bundle") => {
            return Err(SigstoreError::MediaType {
                origin: origin.to_owned(),
                media_type: media,
                why: "only v0.3 and v0.2 bundles are verified (v0.1 may lack the inclusion \
                      proof and checkpoint, so it cannot be verified fully): re-sign with a \
                      current Sigstore client",
            });
        }
        _ => {
            return Err(SigstoreError::MediaType {
                origin: origin.to_owned(),
                media_type: media,
                why: "not a Sigstore bundle",
            });
        }
    }
    let b: RawBundle =
        serde_json::from_value(head).map_err(|e| bad(format!("bad {media} bundle: {e}")))?;
    debug_assert_eq!(b.media_type, media);
    let vm = &b.verification_material;
    // v0.3 carries the leaf as `certificate`; v0.2 as the first entry of
    // `x509CertificateChain`. Any further certificates in a v0.2 chain are
    // the signer's claim and are ignored: the chain is taken from the
    // pinned trust root only.
    let leaf_b64 = match (&vm.certificate, &vm.x509_certificate_chain, media.as_str()) {
        (Some(c), None, MEDIA_V03 | MEDIA_V03_ALT) => Some(&c.raw_bytes),
        (None, Some(chain), MEDIA_V02) => Some(
            &chain
                .certificates
                .first()
                .ok_or_else(|| bad("x509CertificateChain is empty".into()))?
                .raw_bytes,
        ),
        (None, None, _) => None,
        _ => {
            return Err(bad(
                "v0.3 bundles carry `certificate`, v0.2 bundles `x509CertificateChain`".into(),
            ));
        }
    };

    // The signed content.
    let content = match (&b.message_signature, &b.dsse_envelope) {
        (Some(ms), None) => {
            if let Some(d) = &ms.message_digest {
                if d.algorithm != "SHA2_256" {
                    return Err(refuse(
                        Rule::Digest,
                        format!("message digest algorithm {} is not SHA2_256", d.algorithm),
                    ));
                }
                let got = B64
                    .decode(&d.digest)
                    .map_err(|_| bad("digest is not base64".into()))?;
                if got != sha256 {
                    return Err(refuse(
                        Rule::Digest,
                        format!(
                            "bundle signs sha256:{} but the file is sha256:{}",
                            hex::encode(&got),
                            hex::encode(sha256)
                        ),
                    ));
                }
            }
            let signature = B64
                .decode(&ms.signature)
                .map_err(|_| bad("signature is not base64".into()))?;
            Content::Message { signature }
        }
        (None, Some(env)) => {
            if env.payload_type != INTOTO {
                return Err(refuse(
                    Rule::Dsse,
                    format!(
                        "payload type {:?} is not an in-toto statement",
                        env.payload_type
                    ),
                ));
            }
            let [sig] = env.signatures.as_slice() else {
                return Err(refuse(
                    Rule::Dsse,
                    format!(
                        "envelope has {} signatures, want exactly one",
                        env.signatures.len()
                    ),
                ));
            };
            let _ = &sig.keyid;
            let payload = B64
                .decode(&env.payload)
                .map_err(|_| bad("DSSE payload is not base64".into()))?;
            let signature = B64
                .decode(&sig.sig)
                .map_err(|_| bad("DSSE signature is not base64".into()))?;
            check_statement(&payload, sha256).map_err(|(rule, d)| refuse(rule, d))?;
            Content::Dsse {
                pae: pae(&env.payload_type, &payload),
                payload,
                signature,
            }
        }
        _ => {
            return Err(bad(
                "a bundle holds exactly one of messageSignature and dsseEnvelope".into(),
            ));
        }
    };

    // The transparency-log entry: exactly one, fully checked.
    let [entry] = vm.tlog_entries.as_slice() else {
        return Err(refuse(
            Rule::TlogEntry,
            format!(
                "bundle has {} transparency-log entries, want exactly one",
                vm.tlog_entries.len()
            ),
        ));
    };
    let checked = tlog::verify_entry(entry, &root.tlogs).map_err(|(r, d)| refuse(r, d))?;

    // RFC 3161 timestamps: every one present must verify.
    let mut times = vec![checked.integrated_time];
    let mut timestamps = Vec::new();
    if let Some(tvd) = &vm.timestamp_verification_data {
        for (i, ts) in tvd.rfc3161_timestamps.iter().enumerate() {
            let token = B64
                .decode(&ts.signed_timestamp)
                .map_err(|_| refuse(Rule::Timestamp, format!("timestamp {i} is not base64")))?;
            let t = tsa::verify_timestamp(&token, content.signature(), &root.tsas)
                .map_err(|e| refuse(Rule::Timestamp, format!("timestamp {i}: {e}")))?;
            timestamps.push(t);
            times.push(t);
        }
    }

    // Who signed, and the signature itself.
    let (signer, key_der_for_body) = match (leaf_b64, &vm.public_key) {
        (Some(c), None) => {
            let der = B64
                .decode(c)
                .map_err(|_| bad("certificate is not base64".into()))?;
            let leaf = Cert::parse(&der).map_err(|e| refuse(Rule::CertificateChain, e))?;
            let (_, issuer) =
                x509::verify_chain(&leaf, &root.cas, &times).map_err(|(valid, d)| {
                    refuse(
                        if valid {
                            Rule::CertificateValidity
                        } else {
                            Rule::CertificateChain
                        },
                        d,
                    )
                })?;
            if leaf.is_ca() {
                return Err(refuse(
                    Rule::CertificateChain,
                    "the signing certificate is a CA certificate".into(),
                ));
            }
            if !leaf.is_code_signing() {
                return Err(refuse(
                    Rule::CertificateChain,
                    "certificate is not for code signing (extended key usage)".into(),
                ));
            }
            x509::verify_sct(&leaf, &issuer, &root.ctlogs).map_err(|e| refuse(Rule::Sct, e))?;
            let got_issuer = leaf.oidc_issuer().unwrap_or_default();
            if got_issuer != policy.issuer {
                return Err(refuse(
                    Rule::Identity,
                    format!("OIDC issuer {got_issuer:?} is not {:?}", policy.issuer),
                ));
            }
            let sans = leaf.san();
            let Some(matched) = sans.iter().find(|s| policy.identity.matches(s)) else {
                return Err(refuse(
                    Rule::Identity,
                    format!("certificate identity {sans:?} does not match the policy"),
                ));
            };
            let key = leaf.public_key().map_err(|e| refuse(Rule::Signature, e))?;
            check_signature(&content, sha256, |pre, sig| key.verify_prehash(pre, sig))
                .map_err(|e| refuse(Rule::Signature, e))?;
            (
                Signer::Certificate {
                    identity: matched.clone(),
                    issuer: got_issuer,
                },
                der,
            )
        }
        (None, Some(_hint)) => {
            let Some(keys) = keys.filter(|k| !k.is_empty()) else {
                return Err(refuse(
                    Rule::PublicKey,
                    "bundle is signed by a public key and no trusted cosign keys are configured"
                        .into(),
                ));
            };
            let prehash = match &content {
                Content::Message { .. } => sha256.to_vec(),
                Content::Dsse { pae, .. } => Hash::Sha256.digest(pae),
            };
            let by = keys.find(&prehash, content.signature()).ok_or_else(|| {
                refuse(
                    Rule::PublicKey,
                    format!(
                        "signature does not verify with any of the {} trusted keys",
                        keys.len()
                    ),
                )
            })?;
            // The key as loaded, never re-read from disk.
            let der = keys.der_of(&by.path).unwrap_or_default().to_vec();
            (Signer::Key(by), der)
        }
        _ => {
            return Err(bad(
                "verification material must be exactly one certificate or public key".into(),
            ));
        }
    };

    check_body(&checked.body, &content, sha256, &key_der_for_body)
        .map_err(|e| refuse(Rule::TlogBody, e))?;

    Ok(BundleVerified {
        signer,
        integrated_time: checked.integrated_time,
        log_index: checked.log_index,
        timestamps,
        content: match content {
            Content::Message { .. } => "message-signature",
            Content::Dsse { .. } => "dsse",
        },
    })
}

fn check_signature(
    content: &Content,
    sha256: &[u8; 32],
    verify: impl Fn(&[u8], &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    match content {
        Content::Message { signature } => verify(sha256, signature),
        Content::Dsse { pae, signature, .. } => verify(&Hash::Sha256.digest(pae), signature),
    }
}

/// The in-toto statement must name the file's SHA-256 among its subjects.
fn check_statement(payload: &[u8], sha256: &[u8; 32]) -> Result<(), (Rule, String)> {
    let st: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| (Rule::Dsse, format!("in-toto statement is not JSON: {e}")))?;
    let ty = st.get("_type").and_then(|t| t.as_str()).unwrap_or_default();
    if ty != "https://in-toto.io/Statement/v1" && ty != "https://in-toto.io/Statement/v0.1" {
        return Err((
            Rule::Dsse,
            format!("statement type {ty:?} is not in-toto v0.1 or v1"),
        ));
    }
    let want = hex::encode(sha256);
    let subjects = st
        .get("subject")
        .and_then(|s| s.as_array())
        .ok_or((Rule::Dsse, "statement has no subject list".to_owned()))?;
    let found = subjects.iter().any(|s| {
        s.get("digest")
            .and_then(|d| d.get("sha256"))
            .and_then(|h| h.as_str())
            .is_some_and(|h| h.eq_ignore_ascii_case(&want))
    });
    if !found {
        return Err((
            Rule::Digest,
            format!("no subject of the in-toto statement has sha256:{want}"),
        ));
    }
    Ok(())
}

/// The log entry must describe this bundle: same digest or payload, same
/// signature, same certificate or key.
fn check_body(
    body: &[u8],
    content: &Content,
    sha256: &[u8; 32],
    key_der: &[u8],
) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("entry body is not JSON: {e}"))?;
    let s = |p: &str| {
        v.pointer(p)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let verifier_der = |pem_b64: &str| -> Result<Vec<u8>, String> {
        let pem = B64
            .decode(pem_b64)
            .map_err(|_| "entry key is not base64".to_owned())?;
        let pem = String::from_utf8_lossy(&pem);
        pem_block(&pem, "CERTIFICATE").or_else(|_| pem_block(&pem, "PUBLIC KEY"))
    };
    match (content, s("/kind").as_str(), s("/apiVersion").as_str()) {
        (Content::Message { signature }, "hashedrekord", "0.0.1") => {
            if s("/spec/data/hash/algorithm") != "sha256"
                || s("/spec/data/hash/value") != hex::encode(sha256)
            {
                return Err("entry's hash is not the file's SHA-256".into());
            }
            if B64.decode(s("/spec/signature/content")).ok().as_deref()
                != Some(signature.as_slice())
            {
                return Err("entry's signature is not the bundle's".into());
            }
            if verifier_der(&s("/spec/signature/publicKey/content"))? != key_der {
                return Err("entry's certificate or key is not the bundle's".into());
            }
        }
        (
            Content::Dsse {
                payload, signature, ..
            },
            "dsse",
            "0.0.1",
        ) => {
            if s("/spec/payloadHash/algorithm") != "sha256"
                || s("/spec/payloadHash/value") != hex::encode(Hash::Sha256.digest(payload))
            {
                return Err("entry's payload hash is not the envelope's payload".into());
            }
            let sigs = v
                .pointer("/spec/signatures")
                .and_then(|x| x.as_array())
                .ok_or("entry has no signatures")?;
            let [one] = sigs.as_slice() else {
                return Err("entry must have exactly one signature".into());
            };
            let sig = one
                .get("signature")
                .and_then(|x| x.as_str())
                .unwrap_or_default();
            if B64.decode(sig).ok().as_deref() != Some(signature.as_slice()) {
                return Err("entry's signature is not the envelope's".into());
            }
            let ver = one
                .get("verifier")
                .and_then(|x| x.as_str())
                .unwrap_or_default();
            if verifier_der(ver)? != key_der {
                return Err("entry's certificate or key is not the bundle's".into());
            }
        }
        (_, kind, api) => {
            return Err(format!(
                "entry kind {kind} {api} does not match the bundle's content"
            ));
        }
    }
    Ok(())
}
