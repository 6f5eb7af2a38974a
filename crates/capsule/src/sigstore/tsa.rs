//! RFC 3161 timestamps: a CMS SignedData holding a TSTInfo, signed by a TSA
//! whose certificate chain is pinned in the trust root.
//!
//! Checked: the content type, the message imprint (the hash of the bundle's
//! signature bytes), the signed attributes' content type and message digest
//! over the TSTInfo, the signature over the signed attributes with the pinned
//! TSA leaf key, the chain, the time-stamping EKU, and the time inside every
//! validity window. Certificates embedded in the token are not trusted: the
//! pinned chain is used whether or not the token carries one.

use der::Decode as _;

use super::der_tlv::{self, Tlv};
use super::keys::Hash;
use super::trust::Authority;
use super::x509::Cert;

const OID_SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
const OID_TST_INFO: &str = "1.2.840.113549.1.9.16.1.4";
const OID_CONTENT_TYPE: &str = "1.2.840.113549.1.9.3";
const OID_MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";

fn oid(t: &Tlv<'_>) -> Result<String, String> {
    if t.tag != 0x06 {
        return Err("expected an OBJECT IDENTIFIER".into());
    }
    let o: Result<der::asn1::ObjectIdentifier, _> = der::asn1::ObjectIdentifier::from_der(t.raw);
    o.map(|o| o.to_string()).map_err(|e| e.to_string())
}

fn hash_for_digest_oid(o: &str) -> Option<Hash> {
    match o {
        "2.16.840.1.101.3.4.2.1" => Some(Hash::Sha256),
        "2.16.840.1.101.3.4.2.2" => Some(Hash::Sha384),
        "2.16.840.1.101.3.4.2.3" => Some(Hash::Sha512),
        _ => None,
    }
}

fn seq<'a>(t: &Tlv<'a>, what: &str) -> Result<Vec<Tlv<'a>>, String> {
    if t.tag != 0x30 && t.tag != 0x31 && t.tag & 0xe0 != 0xa0 {
        return Err(format!("{what}: expected a constructed value"));
    }
    der_tlv::children(t.body)
}

fn at<'a, 'b>(v: &'b [Tlv<'a>], i: usize, what: &str) -> Result<&'b Tlv<'a>, String> {
    v.get(i).ok_or_else(|| format!("{what}: missing field {i}"))
}

/// Unix seconds of a DER GeneralizedTime `YYYYMMDDHHMMSS[.f]Z`.
fn generalized_time(t: &Tlv<'_>) -> Result<i64, String> {
    if t.tag != 0x18 {
        return Err("genTime is not a GeneralizedTime".into());
    }
    let s = std::str::from_utf8(t.body).map_err(|_| "genTime is not ASCII")?;
    if s.len() < 15 || !s.ends_with('Z') {
        return Err(format!("genTime {s:?} is not UTC"));
    }
    let frac = &s[14..s.len() - 1];
    let rfc = format!(
        "{}-{}-{}T{}:{}:{}{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[8..10],
        &s[10..12],
        &s[12..14],
        frac
    );
    super::trust::parse_rfc3339(&rfc).ok_or_else(|| format!("genTime {s:?} does not parse"))
}

/// Verifies one timestamp token over `signature` and returns its time.
pub(crate) fn verify_timestamp(
    token: &[u8],
    signature: &[u8],
    tsas: &[Authority],
) -> Result<i64, String> {
    let (ci, rest) = der_tlv::read(token)?;
    if !rest.is_empty() {
        return Err("trailing bytes after the timestamp token".into());
    }
    let ci = seq(&ci, "ContentInfo")?;
    // sigstore-python and others wrap the token in a TimeStampResp
    // (status, token); accept both forms.
    let ci = if at(&ci, 0, "token")?.tag == 0x30 {
        // PKIStatusInfo: granted (0) or grantedWithMods (1) only.
        let status = seq(at(&ci, 0, "TimeStampResp")?, "PKIStatusInfo")?;
        let code = at(&status, 0, "PKIStatusInfo")?;
        if code.tag != 0x02 || !(code.body == [0] || code.body == [1]) {
            return Err("timestamp response status is not granted".into());
        }
        seq(at(&ci, 1, "TimeStampResp")?, "timeStampToken")?
    } else {
        ci
    };
    if oid(at(&ci, 0, "ContentInfo")?)? != OID_SIGNED_DATA {
        return Err("timestamp is not CMS SignedData".into());
    }
    let explicit = seq(at(&ci, 1, "ContentInfo")?, "content")?;
    let sd = seq(at(&explicit, 0, "SignedData")?, "SignedData")?;
    let encap = seq(at(&sd, 2, "SignedData")?, "encapContentInfo")?;
    if oid(at(&encap, 0, "encapContentInfo")?)? != OID_TST_INFO {
        return Err("timestamp content is not a TSTInfo".into());
    }
    let econtent = seq(at(&encap, 1, "encapContentInfo")?, "eContent")?;
    let tst_octets = at(&econtent, 0, "eContent")?;
    if tst_octets.tag != 0x04 {
        return Err("eContent is not an OCTET STRING".into());
    }
    let tst_der = tst_octets.body;
    let signer_infos = sd.last().ok_or("SignedData has no signerInfos")?;
    if signer_infos.tag != 0x31 {
        return Err("SignedData has no signerInfos SET".into());
    }
    let infos = der_tlv::children(signer_infos.body)?;
    let [info] = infos.as_slice() else {
        return Err(format!(
            "timestamp has {} signers, want exactly one",
            infos.len()
        ));
    };
    let si = seq(info, "SignerInfo")?;
    let digest_alg = seq(at(&si, 2, "SignerInfo")?, "digestAlgorithm")?;
    let digest_hash = hash_for_digest_oid(&oid(at(&digest_alg, 0, "digestAlgorithm")?)?)
        .ok_or("unsupported signer digest algorithm")?;
    let attrs = at(&si, 3, "SignerInfo")?;
    if attrs.tag != 0xa0 {
        return Err("SignerInfo has no signed attributes".into());
    }
    let sig_alg = seq(at(&si, 4, "SignerInfo")?, "signatureAlgorithm")?;
    let sig_alg = oid(at(&sig_alg, 0, "signatureAlgorithm")?)?;
    let sig_hash = if sig_alg == OID_EC_PUBLIC_KEY {
        digest_hash
    } else {
        Hash::for_sig_oid(&sig_alg).ok_or(format!("unsupported signature algorithm {sig_alg}"))?
    };
    let sig = at(&si, 5, "SignerInfo")?;
    if sig.tag != 0x04 {
        return Err("SignerInfo signature is not an OCTET STRING".into());
    }

    // The signed attributes: content type TSTInfo and the TSTInfo's digest.
    let mut content_type_ok = false;
    let mut digest_ok = false;
    for attr in der_tlv::children(attrs.body)? {
        let a = seq(&attr, "Attribute")?;
        let values = seq(at(&a, 1, "Attribute")?, "values")?;
        let [v] = values.as_slice() else {
            return Err("signed attribute must have exactly one value".into());
        };
        match oid(at(&a, 0, "Attribute")?)?.as_str() {
            OID_CONTENT_TYPE => content_type_ok = oid(v)? == OID_TST_INFO,
            OID_MESSAGE_DIGEST => {
                digest_ok = v.tag == 0x04 && v.body == digest_hash.digest(tst_der).as_slice()
            }
            _ => {}
        }
    }
    if !content_type_ok {
        return Err("signed content-type attribute is missing or not TSTInfo".into());
    }
    if !digest_ok {
        return Err("signed message-digest attribute does not match the TSTInfo".into());
    }

    // The TSTInfo: message imprint over our signature, and the time.
    let (tst, _) = der_tlv::read(tst_der)?;
    let tst = seq(&tst, "TSTInfo")?;
    let imprint = seq(at(&tst, 2, "TSTInfo")?, "messageImprint")?;
    let imprint_alg = seq(at(&imprint, 0, "messageImprint")?, "hashAlgorithm")?;
    let imprint_hash = hash_for_digest_oid(&oid(at(&imprint_alg, 0, "hashAlgorithm")?)?)
        .ok_or("unsupported message imprint hash")?;
    let hashed = at(&imprint, 1, "messageImprint")?;
    if hashed.tag != 0x04 || hashed.body != imprint_hash.digest(signature).as_slice() {
        return Err("message imprint is not the hash of the bundle's signature".into());
    }
    let gen_time = generalized_time(at(&tst, 4, "TSTInfo")?)?;

    // The signature over the signed attributes, re-tagged as a SET.
    let mut signed = attrs.raw.to_vec();
    signed[0] = 0x31;
    let mut reasons = Vec::new();
    for tsa in tsas {
        match check_with(tsa, &signed, sig_hash, sig.body, gen_time) {
            Ok(()) => return Ok(gen_time),
            Err(e) => reasons.push(format!("{}: {e}", tsa.uri)),
        }
    }
    if reasons.is_empty() {
        return Err("the trust root pins no timestamp authority".into());
    }
    Err(format!(
        "no pinned TSA verifies it ({})",
        reasons.join("; ")
    ))
}

fn check_with(
    tsa: &Authority,
    signed: &[u8],
    hash: Hash,
    sig: &[u8],
    t: i64,
) -> Result<(), String> {
    let chain = tsa
        .chain
        .iter()
        .map(|d| Cert::parse(d))
        .collect::<Result<Vec<_>, _>>()?;
    let leaf = &chain[0];
    leaf.public_key()?.verify(hash, signed, sig)?;
    if !leaf.is_time_stamping() {
        return Err("TSA certificate lacks the time-stamping usage".into());
    }
    // The chain's own signatures were checked when the trust root was loaded.
    if !tsa.window.contains(t) || !chain.iter().all(|c| c.is_valid_at(t)) {
        return Err(format!("time {t} is outside the TSA's validity"));
    }
    Ok(())
}
