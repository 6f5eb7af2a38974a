//! The shared corpus of bundle cases: recorded bundles and one-field
//! variants, each with the verdict our verifier must give.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use capsule::sigstore::{Identity, IdentityPolicy, Rule, TrustedRoot};
use sha2::Digest as _;

pub fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sigstore")
}

pub fn digest_of(p: &Path) -> [u8; 32] {
    sha2::Sha256::digest(std::fs::read(p).unwrap()).into()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Ok,
    Refused(Rule),
    Malformed,
    MediaType,
}

pub struct Case {
    pub name: String,
    pub bundle: Vec<u8>,
    pub digest: [u8; 32],
    pub root: TrustedRoot,
    /// The trust root JSON the case uses (for the Python verifier).
    pub root_json: serde_json::Value,
    pub issuer: String,
    pub identity: String,
    pub expect: Expect,
}

impl Case {
    pub fn policy(&self) -> IdentityPolicy {
        IdentityPolicy::new(&self.issuer, Identity::Exact(self.identity.clone())).unwrap()
    }
}

struct Base {
    name: &'static str,
    file: &'static str,
    digest: [u8; 32],
    issuer: &'static str,
    identity: &'static str,
}

fn hexd(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// Flips one bit of the base64 field at `ptr` (byte `at`, from the end when
/// negative).
fn flip_b64(v: &mut serde_json::Value, ptr: &str, at: isize) {
    let f = v.pointer_mut(ptr).unwrap_or_else(|| panic!("no {ptr}"));
    let mut raw = B64.decode(f.as_str().unwrap()).unwrap();
    let i = if at < 0 {
        raw.len() - (-at) as usize
    } else {
        at as usize
    };
    raw[i] ^= 0x01;
    *f = serde_json::Value::String(B64.encode(raw));
}

fn edit_str(v: &mut serde_json::Value, ptr: &str, f: impl Fn(&str) -> String) {
    let x = v.pointer_mut(ptr).unwrap_or_else(|| panic!("no {ptr}"));
    *x = serde_json::Value::String(f(x.as_str().unwrap()));
}

pub fn cases() -> Vec<Case> {
    let prod_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(corpus().join("trusted_root.prod.json")).unwrap())
            .unwrap();
    let new_bundle = digest_of(&corpus().join("corpus/new_bundle.txt"));
    let bases = [
        Base {
            name: "new_bundle",
            file: "new_bundle.txt.sigstore.json",
            digest: new_bundle,
            issuer: "https://github.com/login/oauth",
            identity: "aryadeeptade@gmail.com",
        },
        Base {
            name: "kubewarden-dsse",
            file: "kubewarden.dsse.sigstore.json",
            digest: hexd("c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172"),
            issuer: "https://token.actions.githubusercontent.com",
            identity: "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0",
        },
        Base {
            name: "rfc8785-v0.2",
            file: "rfc8785-github.v02.sigstore.json",
            // rfc8785-0.1.2-py3-none-any.whl, as the bundle's message digest says.
            digest: hexd("c4e92e9ecc828bef2aa7dba1de8ac983511f7532a0df11c770d39099a25cf201"),
            issuer: "https://token.actions.githubusercontent.com",
            identity: "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2",
        },
        Base {
            name: "npm-slsa-dsse",
            file: "npm-slsa.dsse.sigstore.json",
            // The statement names its subject by SHA-512 only: no SHA-256
            // can match, so a digest refusal is the right verdict.
            digest: [0x42; 32],
            issuer: "https://token.actions.githubusercontent.com",
            identity: "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main",
        },
    ];
    type Mutation = (&'static str, Box<dyn Fn(&mut serde_json::Value)>, Expect);
    let tl = "/verificationMaterial/tlogEntries/0";
    let mut out = Vec::new();
    for base in &bases {
        let original: serde_json::Value = serde_json::from_slice(
            &std::fs::read(corpus().join("corpus").join(base.file)).unwrap(),
        )
        .unwrap();
        let is_dsse = original.get("dsseEnvelope").is_some();
        let has_ts = original
            .pointer("/verificationMaterial/timestampVerificationData/rfc3161Timestamps/0")
            .is_some();
        let cert_ptr = if original
            .pointer("/verificationMaterial/certificate")
            .is_some()
        {
            "/verificationMaterial/certificate/rawBytes"
        } else {
            "/verificationMaterial/x509CertificateChain/certificates/0/rawBytes"
        };
        let sig_ptr = if is_dsse {
            "/dsseEnvelope/signatures/0/sig"
        } else {
            "/messageSignature/signature"
        };
        let base_expect = if base.name == "npm-slsa-dsse" {
            Expect::Refused(Rule::Digest)
        } else {
            Expect::Ok
        };
        let mut muts: Vec<Mutation> = vec![("as recorded", Box::new(|_| {}), base_expect.clone())];
        if base.name != "npm-slsa-dsse" {
            muts.extend::<Vec<Mutation>>(vec![
                (
                    "inclusion proof hash flipped",
                    Box::new(move |v| flip_b64(v, &format!("{tl}/inclusionProof/hashes/0"), 3)),
                    Expect::Refused(Rule::TlogInclusionProof),
                ),
                (
                    "inclusion proof root flipped",
                    Box::new(move |v| flip_b64(v, &format!("{tl}/inclusionProof/rootHash"), 0)),
                    Expect::Refused(Rule::TlogInclusionProof),
                ),
                (
                    "checkpoint signature flipped",
                    Box::new(move |v| {
                        edit_str(
                            v,
                            &format!("{tl}/inclusionProof/checkpoint/envelope"),
                            |s| {
                                let i = s.len() - 10;
                                let c = if &s[i..i + 1] == "A" { "B" } else { "A" };
                                format!("{}{c}{}", &s[..i], &s[i + 1..])
                            },
                        )
                    }),
                    Expect::Refused(Rule::TlogCheckpoint),
                ),
                (
                    "checkpoint size changed",
                    Box::new(move |v| {
                        edit_str(
                            v,
                            &format!("{tl}/inclusionProof/checkpoint/envelope"),
                            |s| {
                                let mut lines: Vec<String> =
                                    s.split('\n').map(str::to_owned).collect();
                                lines[1] = format!("{}", lines[1].parse::<u64>().unwrap() + 1);
                                lines.join("\n")
                            },
                        )
                    }),
                    Expect::Refused(Rule::TlogCheckpoint),
                ),
                (
                    "checkpoint with an extra unknown cosigner",
                    Box::new(move |v| {
                        edit_str(
                            v,
                            &format!("{tl}/inclusionProof/checkpoint/envelope"),
                            |s| format!("{s}\u{2014} witness.example AAAAAUVYVFJBU0lH\n"),
                        )
                    }),
                    base_expect.clone(),
                ),
                (
                    "signed entry timestamp flipped",
                    Box::new(move |v| {
                        flip_b64(
                            v,
                            &format!("{tl}/inclusionPromise/signedEntryTimestamp"),
                            -3,
                        )
                    }),
                    Expect::Refused(Rule::TlogSet),
                ),
                (
                    "integrated time changed",
                    Box::new(move |v| {
                        edit_str(v, &format!("{tl}/integratedTime"), |s| {
                            format!("{}", s.parse::<u64>().unwrap() + 1)
                        })
                    }),
                    Expect::Refused(Rule::TlogSet),
                ),
                // The RFC 3161 imprint covers the signature and is checked first.
                (
                    "signature flipped",
                    Box::new(move |v| flip_b64(v, sig_ptr, -3)),
                    if has_ts {
                        Expect::Refused(Rule::Timestamp)
                    } else {
                        Expect::Refused(Rule::Signature)
                    },
                ),
                (
                    "certificate flipped",
                    Box::new(move |v| flip_b64(v, cert_ptr, -20)),
                    Expect::Refused(Rule::CertificateChain),
                ),
                (
                    "no tlog entry",
                    Box::new(|v| {
                        v["verificationMaterial"]["tlogEntries"] = serde_json::json!([]);
                    }),
                    Expect::Refused(Rule::TlogEntry),
                ),
                (
                    "media type v0.1",
                    Box::new(|v| {
                        v["mediaType"] =
                            "application/vnd.dev.sigstore.bundle+json;version=0.1".into();
                    }),
                    Expect::MediaType,
                ),
                (
                    "media type of the other version",
                    Box::new(|v| {
                        let m = if v["mediaType"].as_str().unwrap().ends_with("0.2") {
                            "application/vnd.dev.sigstore.bundle.v0.3+json"
                        } else {
                            "application/vnd.dev.sigstore.bundle+json;version=0.2"
                        };
                        v["mediaType"] = m.into();
                    }),
                    Expect::Malformed,
                ),
                (
                    "unknown field",
                    Box::new(|v| {
                        v["verificationMaterial"]["extra"] = 1.into();
                    }),
                    Expect::Malformed,
                ),
            ]);
            if has_ts {
                let ts = "/verificationMaterial/timestampVerificationData/rfc3161Timestamps/0/signedTimestamp";
                muts.push((
                    "timestamp signature flipped",
                    Box::new(move |v| flip_b64(v, ts, -5)),
                    Expect::Refused(Rule::Timestamp),
                ));
                muts.push((
                    "timestamp genTime changed",
                    Box::new(move |v| {
                        let f = v.pointer_mut(ts).unwrap();
                        let mut raw = B64.decode(f.as_str().unwrap()).unwrap();
                        // The first GeneralizedTime (tag 0x18, length 15): bump its seconds.
                        let i = raw.windows(2).position(|w| w == [0x18, 0x0f]).unwrap();
                        raw[i + 2 + 13] ^= 0x01;
                        *f = serde_json::Value::String(B64.encode(raw));
                    }),
                    Expect::Refused(Rule::Timestamp),
                ));
                muts.push((
                    "timestamp imprint flipped",
                    Box::new(move |v| {
                        let f = v.pointer_mut(ts).unwrap();
                        let mut raw = B64.decode(f.as_str().unwrap()).unwrap();
                        // messageImprint's hash: the OCTET STRING of 32 after the sha256 AlgorithmIdentifier.
                        let i = raw.windows(2).position(|w| w == [0x04, 0x20]).unwrap();
                        raw[i + 5] ^= 0x01;
                        *f = serde_json::Value::String(B64.encode(raw));
                    }),
                    Expect::Refused(Rule::Timestamp),
                ));
            }
            if !is_dsse {
                muts.push((
                    "message digest changed",
                    Box::new(|v| flip_b64(v, "/messageSignature/messageDigest/digest", 0)),
                    Expect::Refused(Rule::Digest),
                ));
                muts.push((
                    "log body changed",
                    Box::new(move |v| {
                        edit_str(v, &format!("{tl}/canonicalizedBody"), |s| {
                            let body = B64.decode(s).unwrap();
                            let body = String::from_utf8(body)
                                .unwrap()
                                .replace("\"sha256\"", "\"sha512\"");
                            B64.encode(body)
                        })
                    }),
                    Expect::Refused(Rule::TlogSet),
                ));
            } else {
                muts.push((
                    "DSSE payload changed",
                    Box::new(|v| {
                        edit_str(v, "/dsseEnvelope/payload", |s| {
                            let p = B64.decode(s).unwrap();
                            let p = String::from_utf8(p).unwrap().replacen(
                                "\"_type\"",
                                " \"_type\"",
                                1,
                            );
                            B64.encode(p)
                        })
                    }),
                    Expect::Refused(Rule::Signature),
                ));
            }
        }
        for (what, m, expect) in muts {
            let mut v = original.clone();
            m(&mut v);
            out.push(case_from(
                base,
                what,
                &v,
                base.digest,
                &prod_json,
                expect,
                base.identity,
            ));
        }
        if base.name != "npm-slsa-dsse" {
            let mut tampered = base.digest;
            tampered[31] ^= 1;
            out.push(case_from(
                base,
                "other file",
                &original,
                tampered,
                &prod_json,
                Expect::Refused(Rule::Digest),
                base.identity,
            ));
            out.push(case_from(
                base,
                "other identity",
                &original,
                base.digest,
                &prod_json,
                Expect::Refused(Rule::Identity),
                "someone@example.com",
            ));
            let mut other_issuer = case_from(
                base,
                "other issuer",
                &original,
                base.digest,
                &prod_json,
                Expect::Refused(Rule::Identity),
                base.identity,
            );
            other_issuer.issuer = "https://accounts.google.com".into();
            out.push(other_issuer);
            // A trust root whose Fulcio CAs all ended before the signing.
            let mut old = prod_json.clone();
            for ca in old["certificateAuthorities"].as_array_mut().unwrap() {
                ca["validFor"]["end"] = "2023-01-01T00:00:00Z".into();
            }
            out.push(case_from(
                base,
                "CA window ended",
                &original,
                base.digest,
                &old,
                Expect::Refused(Rule::CertificateValidity),
                base.identity,
            ));
            let mut no_ct = prod_json.clone();
            no_ct["ctlogs"] = serde_json::json!([]);
            out.push(case_from(
                base,
                "no pinned CT log",
                &original,
                base.digest,
                &no_ct,
                Expect::Refused(Rule::Sct),
                base.identity,
            ));
        }
    }
    out
}

fn case_from(
    base: &Base,
    what: &str,
    v: &serde_json::Value,
    digest: [u8; 32],
    root_json: &serde_json::Value,
    expect: Expect,
    identity: &str,
) -> Case {
    let root = TrustedRoot::parse(&serde_json::to_vec(root_json).unwrap(), "root").unwrap();
    Case {
        name: format!("{} / {what}", base.name),
        bundle: serde_json::to_vec(v).unwrap(),
        digest,
        root,
        root_json: root_json.clone(),
        issuer: base.issuer.into(),
        identity: identity.into(),
        expect,
    }
}
