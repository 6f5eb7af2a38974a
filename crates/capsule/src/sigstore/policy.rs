//! `deploy.require`: which kinds of signature a host demands on a capsule.

use super::SigstoreError;

/// The host's signature policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Require {
    /// A verified minisign signature.
    Minisign,
    /// A verified Sigstore signature (cosign key or bundle).
    Sigstore,
    /// Both kinds, each verified.
    Both,
    /// At least one verified signature of either kind.
    Any,
}

/// Which kinds of signature verified on one capsule. Only signatures that
/// verified count: a present but bad signature is a refusal by itself and
/// never reaches this check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Present {
    pub minisign: bool,
    pub sigstore: bool,
}

impl Require {
    pub fn parse(s: &str) -> Result<Require, SigstoreError> {
        match s {
            "minisign" => Ok(Require::Minisign),
            "sigstore" => Ok(Require::Sigstore),
            "both" => Ok(Require::Both),
            "any" => Ok(Require::Any),
            other => Err(SigstoreError::Policy(format!(
                "deploy.require is {other:?}: want minisign, sigstore, both or any"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Require::Minisign => "minisign",
            Require::Sigstore => "sigstore",
            Require::Both => "both",
            Require::Any => "any",
        }
    }

    /// Refuses unless the verified signatures satisfy the policy.
    pub fn check(self, got: Present) -> Result<(), SigstoreError> {
        let missing = match self {
            Require::Minisign if !got.minisign => Some("a minisign signature"),
            Require::Sigstore if !got.sigstore => Some("a Sigstore signature"),
            Require::Both if !got.minisign && !got.sigstore => {
                Some("a minisign and a Sigstore signature")
            }
            Require::Both if !got.minisign => {
                Some("a minisign signature (Sigstore alone is not enough)")
            }
            Require::Both if !got.sigstore => {
                Some("a Sigstore signature (minisign alone is not enough)")
            }
            Require::Any if !got.minisign && !got.sigstore => {
                Some("a minisign or Sigstore signature")
            }
            _ => None,
        };
        match missing {
            Some(what) => Err(SigstoreError::Policy(format!(
                "deploy.require = {} needs {what} that verifies",
                self.as_str()
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_policy_accepts_and_refuses_the_right_sets() {
        let none = Present::default();
        let m = Present {
            minisign: true,
            sigstore: false,
        };
        let s = Present {
            minisign: false,
            sigstore: true,
        };
        let both = Present {
            minisign: true,
            sigstore: true,
        };
        let table = [
            ("minisign", [false, true, false, true]),
            ("sigstore", [false, false, true, true]),
            ("both", [false, false, false, true]),
            ("any", [false, true, true, true]),
        ];
        for (name, want) in table {
            let r = Require::parse(name).unwrap();
            for (got, ok) in [none, m, s, both].into_iter().zip(want) {
                assert_eq!(r.check(got).is_ok(), ok, "policy {name} with {got:?}");
            }
        }
        let err = Require::parse("both").unwrap().check(m).unwrap_err();
        assert!(err.to_string().contains("Sigstore signature"), "{err}");
        assert!(Require::parse("all").is_err());
    }
}
