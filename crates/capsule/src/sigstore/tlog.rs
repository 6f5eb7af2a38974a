//! Rekor v1 transparency-log entries, checked offline: the signed entry
//! timestamp (inclusion promise), the RFC 6962 Merkle inclusion proof and the
//! signed checkpoint (a signed note; any number of signers, at least one of
//! them the pinned log key).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Rule;
use super::keys::{Hash, PubKey};
use super::trust::Log;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawEntry {
    pub log_index: String,
    pub log_id: RawLogId,
    pub kind_version: RawKindVersion,
    pub integrated_time: String,
    pub inclusion_promise: Option<RawPromise>,
    pub inclusion_proof: Option<RawProof>,
    pub canonicalized_body: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawLogId {
    pub key_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKindVersion {
    pub kind: String,
    pub version: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawPromise {
    pub signed_entry_timestamp: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawProof {
    pub log_index: String,
    pub root_hash: String,
    pub tree_size: String,
    pub hashes: Vec<String>,
    pub checkpoint: RawCheckpoint,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheckpoint {
    pub envelope: String,
}

/// A log entry whose promise, proof and checkpoint verified.
#[derive(Debug, Clone)]
pub(crate) struct CheckedEntry {
    pub body: Vec<u8>,
    pub integrated_time: i64,
    pub log_index: u64,
}

type Refusal = (Rule, String);

fn num(s: &str, what: &str) -> Result<u64, Refusal> {
    s.parse()
        .map_err(|_| (Rule::TlogEntry, format!("{what} {s:?} is not a number")))
}

fn b64(s: &str, rule: Rule, what: &str) -> Result<Vec<u8>, Refusal> {
    B64.decode(s)
        .map_err(|_| (rule, format!("{what} is not base64")))
}

/// Checks one entry against the pinned logs.
pub(crate) fn verify_entry(e: &RawEntry, tlogs: &[Log]) -> Result<CheckedEntry, Refusal> {
    if e.kind_version.version != "0.0.1" {
        return Err((
            Rule::TlogEntry,
            format!(
                "entry {} {} is not verified here (Rekor v1 entries, version 0.0.1, only)",
                e.kind_version.kind, e.kind_version.version
            ),
        ));
    }
    let key_id = b64(&e.log_id.key_id, Rule::TlogEntry, "log id")?;
    let log = tlogs.iter().find(|l| l.key_id == key_id).ok_or((
        Rule::TlogEntry,
        "entry is from a log that is not pinned".to_owned(),
    ))?;
    let key = log
        .key
        .as_ref()
        .map_err(|why| (Rule::TlogEntry, why.clone()))?;
    let integrated_time = num(&e.integrated_time, "integratedTime")? as i64;
    let log_index = num(&e.log_index, "logIndex")?;
    if !log.window.contains(integrated_time) {
        return Err((
            Rule::TlogEntry,
            format!(
                "integrated time {integrated_time} is outside log {}'s validity",
                log.base_url
            ),
        ));
    }
    let body = b64(&e.canonicalized_body, Rule::TlogBody, "canonicalizedBody")?;

    // The signed entry timestamp: Rekor's signature over canonical JSON of
    // the entry (keys sorted, no spaces).
    let promise = e.inclusion_promise.as_ref().ok_or((
        Rule::TlogSet,
        "entry has no signed entry timestamp (inclusion promise)".to_owned(),
    ))?;
    let set = b64(
        &promise.signed_entry_timestamp,
        Rule::TlogSet,
        "signed entry timestamp",
    )?;
    let canonical = format!(
        "{{\"body\":\"{}\",\"integratedTime\":{},\"logID\":\"{}\",\"logIndex\":{}}}",
        e.canonicalized_body,
        integrated_time,
        hex::encode(&key_id),
        log_index
    );
    key.verify(Hash::Sha256, canonical.as_bytes(), &set)
        .map_err(|why| (Rule::TlogSet, format!("signed entry timestamp: {why}")))?;

    let proof = e.inclusion_proof.as_ref().ok_or((
        Rule::TlogInclusionProof,
        "entry has no inclusion proof".to_owned(),
    ))?;
    let index = num(&proof.log_index, "inclusion proof logIndex")?;
    let size = num(&proof.tree_size, "inclusion proof treeSize")?;
    let root = b64(&proof.root_hash, Rule::TlogInclusionProof, "rootHash")?;
    let hashes = proof
        .hashes
        .iter()
        .map(|h| b64(h, Rule::TlogInclusionProof, "proof hash"))
        .collect::<Result<Vec<_>, _>>()?;
    let leaf = leaf_hash(&body);
    let computed = root_from_proof(index, size, &leaf, &hashes)
        .map_err(|why| (Rule::TlogInclusionProof, why))?;
    if computed[..] != root[..] {
        return Err((
            Rule::TlogInclusionProof,
            "inclusion proof does not lead to the stated root hash".into(),
        ));
    }
    verify_checkpoint(&proof.checkpoint.envelope, size, &root, key, &key_id)
        .map_err(|why| (Rule::TlogCheckpoint, why))?;
    Ok(CheckedEntry {
        body,
        integrated_time,
        log_index,
    })
}

pub(crate) fn leaf_hash(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

fn node_hash(l: &[u8], r: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// The root an RFC 9162 (2.1.3.2) inclusion proof leads to.
pub(crate) fn root_from_proof(
    index: u64,
    size: u64,
    leaf: &[u8; 32],
    proof: &[Vec<u8>],
) -> Result<[u8; 32], String> {
    if index >= size {
        return Err(format!("leaf index {index} is not below tree size {size}"));
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if p.len() != 32 {
            return Err("proof hash is not 32 bytes".into());
        }
        if s == 0 {
            return Err("inclusion proof is longer than the tree is deep".into());
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err("inclusion proof is shorter than the tree is deep".into());
    }
    Ok(r)
}

/// Checks a signed-note checkpoint: its size and root must be the proof's,
/// and one of its signatures must verify with the log's key (others, e.g.
/// witnesses, may be present and are not required).
fn verify_checkpoint(
    note: &str,
    size: u64,
    root: &[u8],
    key: &PubKey,
    key_id: &[u8],
) -> Result<(), String> {
    let split = note
        .find("\n\n")
        .ok_or("checkpoint has no blank line before its signatures")?;
    let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() < 3 {
        return Err("checkpoint needs origin, size and root lines".into());
    }
    if lines[1].parse::<u64>().ok() != Some(size) {
        return Err(format!(
            "checkpoint size {:?} is not the proof's tree size {size}",
            lines[1]
        ));
    }
    if B64.decode(lines[2]).ok().as_deref() != Some(root) {
        return Err("checkpoint root hash is not the proof's root hash".into());
    }
    let mut seen = 0;
    for line in sigs.lines().filter(|l| !l.is_empty()) {
        let rest = line
            .strip_prefix("\u{2014} ")
            .ok_or("checkpoint signature line does not start with an em dash")?;
        let (_name, sig) = rest
            .rsplit_once(' ')
            .ok_or("checkpoint signature line has no signature")?;
        let sig = B64
            .decode(sig)
            .map_err(|_| "checkpoint signature is not base64")?;
        if sig.len() < 5 {
            return Err("checkpoint signature is too short".into());
        }
        seen += 1;
        if sig[..4] != key_id[..4] {
            continue;
        }
        if key.verify(Hash::Sha256, text.as_bytes(), &sig[4..]).is_ok() {
            return Ok(());
        }
    }
    Err(format!(
        "none of the checkpoint's {seen} signatures verifies with the pinned log key"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree of `n` leaves `[i]`, built the RFC 6962 way.
    fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
        if leaves.len() == 1 {
            return leaves[0];
        }
        let k = leaves.len().next_power_of_two() / 2;
        let k = if k == leaves.len() { k / 2 } else { k };
        node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
    }

    fn path(i: usize, leaves: &[[u8; 32]]) -> Vec<Vec<u8>> {
        if leaves.len() == 1 {
            return Vec::new();
        }
        let k = leaves.len().next_power_of_two() / 2;
        let k = if k == leaves.len() { k / 2 } else { k };
        if i < k {
            let mut p = path(i, &leaves[..k]);
            p.push(mth(&leaves[k..]).to_vec());
            p
        } else {
            let mut p = path(i - k, &leaves[k..]);
            p.push(mth(&leaves[..k]).to_vec());
            p
        }
    }

    #[test]
    fn inclusion_proofs_verify_for_every_leaf_of_small_trees() {
        for n in 1..=17usize {
            let leaves: Vec<[u8; 32]> = (0..n).map(|i| leaf_hash(&[i as u8])).collect();
            let root = mth(&leaves);
            for i in 0..n {
                let p = path(i, &leaves);
                let got = root_from_proof(i as u64, n as u64, &leaves[i], &p).unwrap();
                assert_eq!(got, root, "leaf {i} of {n}");
                if !p.is_empty() {
                    let mut bad = p.clone();
                    bad[0][0] ^= 1;
                    let got = root_from_proof(i as u64, n as u64, &leaves[i], &bad).unwrap();
                    assert_ne!(got, root, "flipped proof, leaf {i} of {n}");
                }
            }
        }
    }
}
