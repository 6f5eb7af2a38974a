//! The pinned `trusted_root.json`: Fulcio CAs, Rekor and CT log keys, TSAs,
//! each with its validity window (end inclusive).
//!
//! The file is parsed strictly enough to fail closed: an unknown media type,
//! a key or certificate that does not parse, or a bad time is an error. A log
//! key of a kind we do not verify (Rekor v2's Ed25519) is kept as unusable,
//! so an entry from that log is refused by name rather than the whole root.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use super::SigstoreError;
use super::cosign::read_small;
use super::keys::PubKey;

/// Largest trusted root read.
const MAX_TRUSTED_ROOT: u64 = 1024 * 1024;

/// A validity window in unix seconds; `end` inclusive, open when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub start: i64,
    pub end: Option<i64>,
}

impl Window {
    pub(crate) fn contains(&self, t: i64) -> bool {
        t >= self.start && self.end.is_none_or(|e| t <= e)
    }
}

/// A transparency or CT log: key id (SHA-256 of its DER key) and key.
#[derive(Debug, Clone)]
pub(crate) struct Log {
    pub key_id: Vec<u8>,
    /// `None` when the key is of a kind we do not verify; the reason is kept.
    pub key: Result<PubKey, String>,
    pub window: Window,
    pub base_url: String,
}

/// A certificate authority (Fulcio) or timestamp authority: DER chain,
/// leaf (or intermediate) first, root last.
#[derive(Debug, Clone)]
pub(crate) struct Authority {
    pub chain: Vec<Vec<u8>>,
    pub window: Window,
    pub uri: String,
}

/// The parsed trust root.
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    pub(crate) tlogs: Vec<Log>,
    pub(crate) ctlogs: Vec<Log>,
    pub(crate) cas: Vec<Authority>,
    pub(crate) tsas: Vec<Authority>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRoot {
    media_type: String,
    #[serde(default)]
    tlogs: Vec<RawLog>,
    #[serde(default)]
    ctlogs: Vec<RawLog>,
    #[serde(default)]
    certificate_authorities: Vec<RawAuthority>,
    #[serde(default)]
    timestamp_authorities: Vec<RawAuthority>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLog {
    #[serde(default)]
    base_url: String,
    public_key: RawKey,
    log_id: RawLogId,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawKey {
    raw_bytes: String,
    #[serde(default)]
    key_details: String,
    valid_for: RawWindow,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLogId {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawWindow {
    start: String,
    end: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAuthority {
    #[serde(default)]
    uri: String,
    cert_chain: RawChain,
    valid_for: RawWindow,
}

#[derive(Deserialize)]
struct RawChain {
    certificates: Vec<RawCert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCert {
    raw_bytes: String,
}

/// Unix seconds of an RFC 3339 time (`2022-12-31T23:59:59.999Z`); a
/// fraction is dropped, which keeps an inclusive end inclusive.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let oh = num(s.len() - 5..s.len() - 3)?;
            let om = num(s.len() - 2..s.len())?;
            let v = oh * 3600 + om * 60;
            if rest.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// well-known algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl TrustedRoot {
    pub fn from_file(path: &Path) -> Result<TrustedRoot, SigstoreError> {
        let bytes = read_small(path, MAX_TRUSTED_ROOT, "trusted root")?;
        TrustedRoot::parse(&bytes, &path.display().to_string())
    }

    /// Parses `trusted_root.json` bytes; `origin` names it in errors.
    pub fn parse(json: &[u8], origin: &str) -> Result<TrustedRoot, SigstoreError> {
        let bad = |problem: String| SigstoreError::Malformed {
            what: "trusted root",
            origin: origin.to_owned(),
            problem,
        };
        let raw: RawRoot = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
        if !raw
            .media_type
            .starts_with("application/vnd.dev.sigstore.trustedroot")
        {
            return Err(bad(format!("unknown media type {:?}", raw.media_type)));
        }
        let window = |w: &RawWindow, what: &str| -> Result<Window, SigstoreError> {
            let start = parse_rfc3339(&w.start)
                .ok_or_else(|| bad(format!("{what}: bad start time {:?}", w.start)))?;
            let end = match &w.end {
                Some(e) => Some(
                    parse_rfc3339(e).ok_or_else(|| bad(format!("{what}: bad end time {e:?}")))?,
                ),
                None => None,
            };
            Ok(Window { start, end })
        };
        let logs = |raw: &[RawLog], what: &str| -> Result<Vec<Log>, SigstoreError> {
            raw.iter()
                .enumerate()
                .map(|(i, l)| {
                    let name = format!("{what}[{i}]");
                    let der = B64
                        .decode(&l.public_key.raw_bytes)
                        .map_err(|_| bad(format!("{name}: key is not base64")))?;
                    let key_id = B64
                        .decode(&l.log_id.key_id)
                        .map_err(|_| bad(format!("{name}: log id is not base64")))?;
                    let key = PubKey::from_spki_der(&der).map_err(|e| {
                        format!(
                            "{name} key ({}) cannot be used: {e}",
                            l.public_key.key_details
                        )
                    });
                    Ok(Log {
                        key_id,
                        key,
                        window: window(&l.public_key.valid_for, &name)?,
                        base_url: l.base_url.clone(),
                    })
                })
                .collect()
        };
        let auths = |raw: &[RawAuthority], what: &str| -> Result<Vec<Authority>, SigstoreError> {
            raw.iter()
                .enumerate()
                .map(|(i, a)| {
                    let name = format!("{what}[{i}]");
                    let chain = a
                        .cert_chain
                        .certificates
                        .iter()
                        .map(|c| {
                            B64.decode(&c.raw_bytes)
                                .map_err(|_| bad(format!("{name}: certificate is not base64")))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if chain.is_empty() {
                        return Err(bad(format!("{name}: empty certificate chain")));
                    }
                    // Each pinned certificate must parse and be signed by the next
                    // one, so verification only has to check the signer's
                    // link to the first.
                    let parsed = chain
                        .iter()
                        .map(|c| {
                            super::x509::Cert::parse(c).map_err(|e| bad(format!("{name}: {e}")))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    for pair in parsed.windows(2) {
                        pair[0].verify_issued_by(&pair[1]).map_err(|e| {
                            bad(format!("{name}: pinned chain does not link up: {e}"))
                        })?;
                    }
                    Ok(Authority {
                        chain,
                        window: window(&a.valid_for, &name)?,
                        uri: a.uri.clone(),
                    })
                })
                .collect()
        };
        Ok(TrustedRoot {
            tlogs: logs(&raw.tlogs, "tlogs")?,
            ctlogs: logs(&raw.ctlogs, "ctlogs")?,
            cas: auths(&raw.certificate_authorities, "certificateAuthorities")?,
            tsas: auths(&raw.timestamp_authorities, "timestampAuthorities")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse_with_fractions_and_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2022-12-31T23:59:59.999Z"),
            Some(1_672_531_199)
        );
        assert_eq!(parse_rfc3339("2022-04-13T20:06:15Z"), Some(1_649_880_375));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        for bad in [
            "2022-13-01T00:00:00Z",
            "2022-01-01 00:00:00Z",
            "2022-01-01T00:00:00",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
