//! The signed trusted comment that binds a signature to one capsule:
//!
//! `dickbox-capsule:1 name=<name> version=<version> sha256=<hex> signed=<unix seconds>`
//!
//! It is parsed strictly (exact order, no extra fields) because it is the
//! thing deploy compares against the archive it is about to extract.

use std::fmt;

use crate::names::CapsuleName;

const PREFIX: &str = "dickbox-capsule:1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedComment {
    pub name: CapsuleName,
    pub version: semver::Version,
    /// 64 lowercase hex digits.
    pub sha256: String,
    pub signed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trusted comment {comment:?} is not a dickbox capsule comment: {problem}")]
pub struct TrustedCommentError {
    pub comment: String,
    pub problem: String,
}

impl fmt::Display for TrustedComment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX} name={} version={} sha256={} signed={}",
            self.name, self.version, self.sha256, self.signed
        )
    }
}

impl TrustedComment {
    pub fn parse(s: &str) -> Result<TrustedComment, TrustedCommentError> {
        let bad = |problem: &str| TrustedCommentError {
            comment: s.chars().take(200).collect(),
            problem: problem.to_owned(),
        };
        let mut parts = s.split(' ');
        if parts.next() != Some(PREFIX) {
            return Err(bad("must start with dickbox-capsule:1"));
        }
        let mut field = |key: &str| {
            parts
                .next()
                .and_then(|p| p.strip_prefix(key))
                .and_then(|p| p.strip_prefix('='))
                .map(str::to_owned)
        };
        let name = field("name").ok_or_else(|| bad("missing name="))?;
        let version = field("version").ok_or_else(|| bad("missing version="))?;
        let sha256 = field("sha256").ok_or_else(|| bad("missing sha256="))?;
        let signed = field("signed").ok_or_else(|| bad("missing signed="))?;
        if parts.next().is_some() {
            return Err(bad("unexpected text after signed="));
        }
        let name = CapsuleName::parse(&name).map_err(|e| bad(&e.to_string()))?;
        let version = semver::Version::parse(&version).map_err(|e| bad(&e.to_string()))?;
        if sha256.len() != 64
            || !sha256
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(bad("sha256 must be 64 lowercase hex digits"));
        }
        let signed = signed
            .parse()
            .map_err(|_| bad("signed must be unix seconds"))?;
        Ok(TrustedComment {
            name,
            version,
            sha256,
            signed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let tc = TrustedComment {
            name: CapsuleName::parse("web-api").unwrap(),
            version: semver::Version::parse("2.4.1").unwrap(),
            sha256: "ab".repeat(32),
            signed: 1_780_000_000,
        };
        let s = tc.to_string();
        assert_eq!(
            s,
            format!(
                "dickbox-capsule:1 name=web-api version=2.4.1 sha256={} signed=1780000000",
                "ab".repeat(32)
            )
        );
        assert_eq!(TrustedComment::parse(&s).unwrap(), tc);
        for bad in [
            "timestamp:123".to_owned(),
            s.replace("name=web-api", "name=../x"),
            s.replace("sha256=ab", "sha256=AB"),
            format!("{s} extra=1"),
            s.replace(" signed=1780000000", ""),
            s.replace("version=2.4.1", "version=2.4"),
        ] {
            assert!(TrustedComment::parse(&bad).is_err(), "case {bad:?}");
        }
    }
}
