//! Certificates: parsing, chain to a pinned CA, validity, embedded SCTs and
//! the Fulcio identity (SAN and OIDC issuer extensions).

use der::{Decode as _, Encode as _};
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, SubjectAltName};

use super::der_tlv;
use super::keys::{Hash, PubKey};
use super::trust::{Authority, Log};

const OID_SCT_LIST: &str = "1.3.6.1.4.1.11129.2.4.2";
const OID_SAN: &str = "2.5.29.17";
const OID_BASIC_CONSTRAINTS: &str = "2.5.29.19";
const OID_EKU: &str = "2.5.29.37";
const OID_EKU_CODE_SIGNING: &str = "1.3.6.1.5.5.7.3.3";
const OID_EKU_TIME_STAMPING: &str = "1.3.6.1.5.5.7.3.8";
/// Fulcio's OIDC issuer, v2 (a DER UTF8String) and v1 (raw bytes).
const OID_FULCIO_ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";
const OID_FULCIO_ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";

/// A parsed certificate and its DER.
#[derive(Debug, Clone)]
pub(crate) struct Cert {
    pub der: Vec<u8>,
    pub cert: Certificate,
}

impl Cert {
    pub(crate) fn parse(der: &[u8]) -> Result<Cert, String> {
        let cert = Certificate::from_der(der).map_err(|e| format!("bad certificate: {e}"))?;
        Ok(Cert {
            der: der.to_vec(),
            cert,
        })
    }

    pub(crate) fn spki_der(&self) -> Result<Vec<u8>, String> {
        self.cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| e.to_string())
    }

    pub(crate) fn public_key(&self) -> Result<PubKey, String> {
        PubKey::from_spki_der(&self.spki_der()?)
    }

    /// notBefore and notAfter in unix seconds.
    pub(crate) fn validity(&self) -> (i64, i64) {
        let v = self.cert.tbs_certificate().validity();
        (
            v.not_before.to_unix_duration().as_secs() as i64,
            v.not_after.to_unix_duration().as_secs() as i64,
        )
    }

    pub(crate) fn is_valid_at(&self, t: i64) -> bool {
        let (nb, na) = self.validity();
        nb <= t && t <= na
    }

    /// The raw TBS bytes, as signed by the issuer.
    fn tbs_raw(&self) -> Result<&[u8], String> {
        let (outer, _) = der_tlv::read(&self.der)?;
        let (tbs, _) = der_tlv::read(outer.body)?;
        Ok(tbs.raw)
    }

    /// Checks that `issuer` signed this certificate.
    pub(crate) fn verify_issued_by(&self, issuer: &Cert) -> Result<(), String> {
        let oid = self.cert.signature_algorithm().oid.to_string();
        let hash = Hash::for_sig_oid(&oid)
            .ok_or_else(|| format!("signature algorithm {oid} is not supported"))?;
        let sig = self
            .cert
            .signature()
            .as_bytes()
            .ok_or("signature bit string has unused bits")?;
        issuer.public_key()?.verify(hash, self.tbs_raw()?, sig)
    }

    pub(crate) fn extension(&self, oid: &str) -> Option<&[u8]> {
        self.cert
            .tbs_certificate()
            .extensions()?
            .iter()
            .find(|e| e.extn_id.to_string() == oid)
            .map(|e| e.extn_value.as_bytes())
    }

    pub(crate) fn is_ca(&self) -> bool {
        self.extension(OID_BASIC_CONSTRAINTS)
            .and_then(|v| BasicConstraints::from_der(v).ok())
            .is_some_and(|bc| bc.ca)
    }

    pub(crate) fn has_eku(&self, oid: &str) -> bool {
        self.extension(OID_EKU)
            .and_then(|v| ExtendedKeyUsage::from_der(v).ok())
            .is_some_and(|eku| eku.0.iter().any(|o| o.to_string() == oid))
    }

    pub(crate) fn is_code_signing(&self) -> bool {
        self.has_eku(OID_EKU_CODE_SIGNING)
    }

    pub(crate) fn is_time_stamping(&self) -> bool {
        self.has_eku(OID_EKU_TIME_STAMPING)
    }

    /// The SAN values (email, URI, other names as text where they are).
    pub(crate) fn san(&self) -> Vec<String> {
        let Some(v) = self.extension(OID_SAN) else {
            return Vec::new();
        };
        let Ok(san) = SubjectAltName::from_der(v) else {
            return Vec::new();
        };
        san.0
            .iter()
            .filter_map(|n| match n {
                GeneralName::Rfc822Name(s) => Some(s.to_string()),
                GeneralName::UniformResourceIdentifier(s) => Some(s.to_string()),
                GeneralName::DnsName(s) => Some(s.to_string()),
                GeneralName::OtherName(o) => {
                    // Fulcio's username SAN is an otherName holding a UTF8String.
                    der::asn1::Utf8StringRef::try_from(&o.value)
                        .ok()
                        .map(|s| s.as_str().to_owned())
                }
                _ => None,
            })
            .collect()
    }

    /// The OIDC issuer Fulcio recorded.
    pub(crate) fn oidc_issuer(&self) -> Option<String> {
        if let Some(v) = self.extension(OID_FULCIO_ISSUER_V2) {
            return der::asn1::Utf8StringRef::from_der(v)
                .ok()
                .map(|s| s.as_str().to_owned());
        }
        self.extension(OID_FULCIO_ISSUER_V1)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    }

    /// The TBS with the SCT list extension removed: what the CT log signed
    /// for the precertificate.
    fn precert_tbs(&self) -> Result<Vec<u8>, String> {
        let tbs = der_tlv::read(self.tbs_raw()?)?.0;
        let mut out = Vec::new();
        for child in der_tlv::children(tbs.body)? {
            if child.tag != 0xa3 {
                out.extend_from_slice(child.raw);
                continue;
            }
            let (exts, _) = der_tlv::read(child.body)?;
            let mut kept = Vec::new();
            for ext in der_tlv::children(exts.body)? {
                let (oid, _) = der_tlv::read(ext.body)?;
                let oid: der::asn1::ObjectIdentifier =
                    der::asn1::ObjectIdentifier::from_der(oid.raw).map_err(|e| e.to_string())?;
                if oid.to_string() != OID_SCT_LIST {
                    kept.extend_from_slice(ext.raw);
                }
            }
            out.extend(der_tlv::encode(0xa3, &der_tlv::encode(0x30, &kept)));
        }
        Ok(der_tlv::encode(0x30, &out))
    }
}

/// Finds the pinned CA whose chain issued `leaf` and checks every
/// certificate's validity and the CA's window at each verified time in
/// `times`. The error says which rule failed: chain (false) or validity
/// (true).
pub(crate) fn verify_chain<'a>(
    leaf: &Cert,
    cas: &'a [Authority],
    times: &[i64],
) -> Result<(&'a Authority, Cert), (bool, String)> {
    let mut chained_but_invalid = None;
    for ca in cas {
        let Ok(chain) = ca
            .chain
            .iter()
            .map(|d| Cert::parse(d))
            .collect::<Result<Vec<_>, _>>()
        else {
            continue;
        };
        // The pinned chain's own signatures were checked when the trust root
        // was loaded; here only the leaf's issuer signature is new.
        if !chain[0].is_ca() || leaf.verify_issued_by(&chain[0]).is_err() {
            continue;
        }
        let bad_time = times.iter().copied().find(|&t| {
            !(ca.window.contains(t)
                && leaf.is_valid_at(t)
                && chain.iter().all(|c| c.is_valid_at(t)))
        });
        let Some(t) = bad_time else {
            if times.is_empty() {
                return Err((true, "no verified time to check the certificate at".into()));
            }
            return Ok((ca, chain[0].clone()));
        };
        let (nb, na) = leaf.validity();
        chained_but_invalid = Some(format!(
            "certificate (valid {nb}..={na}) or its CA {} is not valid at the verified time {t}",
            ca.uri
        ));
    }
    match chained_but_invalid {
        Some(why) => Err((true, why)),
        None => Err((
            false,
            "certificate is not issued by any pinned Fulcio CA chain".into(),
        )),
    }
}

/// Verifies at least one embedded SCT against a pinned CT log.
pub(crate) fn verify_sct(leaf: &Cert, issuer: &Cert, ctlogs: &[Log]) -> Result<(), String> {
    let ext = leaf
        .extension(OID_SCT_LIST)
        .ok_or("certificate carries no embedded SCT")?;
    let (list, _) = der_tlv::read(ext)?;
    if list.tag != 0x04 {
        return Err("SCT extension is not an OCTET STRING".into());
    }
    let list = list.body;
    let u16_at = |b: &[u8], i: usize| -> Result<usize, String> {
        b.get(i..i + 2)
            .map(|s| u16::from_be_bytes([s[0], s[1]]) as usize)
            .ok_or_else(|| "truncated SCT list".to_owned())
    };
    let total = u16_at(list, 0)?;
    if total + 2 != list.len() {
        return Err("SCT list length does not match".into());
    }
    let tbs = leaf.precert_tbs()?;
    let issuer_key_hash = Hash::Sha256.digest(&issuer.spki_der()?);
    let mut pos = 2;
    let mut reasons = Vec::new();
    while pos < list.len() {
        let len = u16_at(list, pos)?;
        let sct = list.get(pos + 2..pos + 2 + len).ok_or("truncated SCT")?;
        pos += 2 + len;
        match verify_one_sct(sct, &tbs, &issuer_key_hash, ctlogs) {
            Ok(()) => return Ok(()),
            Err(e) => reasons.push(e),
        }
    }
    Err(format!("no SCT verifies: {}", reasons.join("; ")))
}

fn verify_one_sct(
    sct: &[u8],
    tbs: &[u8],
    issuer_key_hash: &[u8],
    ctlogs: &[Log],
) -> Result<(), String> {
    // version(1) log_id(32) timestamp(8) ext_len(2) ext hash(1) sig(1) len(2) sig
    if sct.len() < 47 || sct[0] != 0 {
        return Err("SCT is truncated or not version 1".into());
    }
    let log_id = &sct[1..33];
    let ts = u64::from_be_bytes(sct[33..41].try_into().map_err(|_| "SCT time")?);
    let ext_len = u16::from_be_bytes([sct[41], sct[42]]) as usize;
    let ext = sct
        .get(43..43 + ext_len)
        .ok_or("truncated SCT extensions")?;
    let rest = &sct[43 + ext_len..];
    if rest.len() < 4 {
        return Err("truncated SCT signature".into());
    }
    let (hash_alg, sig_alg) = (rest[0], rest[1]);
    let sig_len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
    let sig = rest.get(4..4 + sig_len).ok_or("truncated SCT signature")?;
    if rest.len() != 4 + sig_len {
        return Err("trailing bytes after SCT signature".into());
    }
    if (hash_alg, sig_alg) != (4, 3) {
        return Err(format!(
            "SCT algorithm ({hash_alg},{sig_alg}) is not ECDSA with SHA-256"
        ));
    }
    let log = ctlogs
        .iter()
        .find(|l| l.key_id == log_id)
        .ok_or("SCT is from a CT log that is not pinned")?;
    let key = log.key.as_ref().map_err(|e| e.clone())?;
    if !log.window.contains((ts / 1000) as i64) {
        return Err(format!(
            "SCT time is outside CT log {}'s validity",
            log.base_url
        ));
    }
    // The digitally-signed struct of RFC 6962 3.2 for a precertificate entry.
    let mut signed = vec![0u8, 0u8];
    signed.extend_from_slice(&ts.to_be_bytes());
    signed.extend_from_slice(&[0, 1]);
    signed.extend_from_slice(issuer_key_hash);
    let n = tbs.len();
    if n >= 1 << 24 {
        return Err("TBS certificate too large".into());
    }
    signed.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
    signed.extend_from_slice(tbs);
    signed.extend_from_slice(&(ext_len as u16).to_be_bytes());
    signed.extend_from_slice(ext);
    key.verify(Hash::Sha256, &signed, sig)
        .map_err(|e| format!("SCT from {}: {e}", log.base_url))
}
