//! Validated names that end up in unit names and paths.
//!
//! Every name that deploy pastes into a systemd unit name or a file path goes
//! through one of these types, and only their parsers can build them. So an
//! unchecked string from a capsule can never reach `/etc/systemd/system` or
//! `/var/lib/dickbox`. The rules are those of DESIGN.md: letters, digits and
//! `-` only, so the names are valid unit-name parts without escaping.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {value:?} is not valid: {rule}")]
pub struct NameError {
    pub kind: &'static str,
    pub value: String,
    pub rule: &'static str,
}

/// Longest capsule or service name. Unit names may be 255 bytes; a service
/// name appears in `dickbox-<svc>@<16 hex>.service`, so 64 leaves ample room.
pub const MAX_NAME_LEN: usize = 64;

fn check_name(kind: &'static str, s: &str) -> Result<(), NameError> {
    let err = |rule| {
        Err(NameError {
            kind,
            value: s.to_owned(),
            rule,
        })
    };
    if s.is_empty() {
        return err("must not be empty");
    }
    if s.len() > MAX_NAME_LEN {
        return err("must be at most 64 characters");
    }
    let first = s.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return err("must start with a lowercase letter or digit ([a-z0-9][a-z0-9-]*)");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return err("may contain only lowercase letters, digits and '-' ([a-z0-9][a-z0-9-]*)");
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl $ty {
            pub fn parse(s: &str) -> Result<Self, NameError> {
                check_name($kind, s)?;
                Ok(Self(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A capsule name: `[a-z0-9][a-z0-9-]*`, at most 64 characters.
    CapsuleName,
    "capsule name"
);
name_type!(
    /// A service name, same rule as capsule names; used verbatim in
    /// `dickbox-<service>@.service`.
    ServiceName,
    "service name"
);

/// A release id: the first 16 lowercase hex digits of the archive's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ReleaseId(String);

impl ReleaseId {
    pub const LEN: usize = 16;

    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.len() != Self::LEN || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(NameError {
                kind: "release id",
                value: s.to_owned(),
                rule: "must be 16 lowercase hex digits",
            });
        }
        Ok(Self(s.to_owned()))
    }

    /// The release id of an archive whose SHA-256 is `sha256_hex`.
    pub fn from_sha256_hex(sha256_hex: &str) -> Result<Self, NameError> {
        Self::parse(sha256_hex.get(..Self::LEN).unwrap_or(sha256_hex))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ReleaseId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A systemd slice a capsule's service runs in, e.g. `tori-server.slice`.
///
/// Host policy lives in slices, so a capsule may not put itself into the
/// root slice or the ones systemd reserves for itself, users and machines.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SliceName(String);

impl SliceName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let err = |rule| {
            Err(NameError {
                kind: "slice",
                value: s.to_owned(),
                rule,
            })
        };
        let Some(stem) = s.strip_suffix(".slice") else {
            return err("must end in .slice");
        };
        if stem == "-" || stem.is_empty() {
            return err("the root slice -.slice is reserved");
        }
        if stem.len() > 200 {
            return err("is too long");
        }
        if !stem
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return err("may contain only lowercase letters, digits, '-' and '_' before .slice");
        }
        if stem.starts_with('-') || stem.ends_with('-') || stem.contains("--") {
            return err("'-' separates slice levels: no leading, trailing or doubled '-'");
        }
        let top = stem.split('-').next().unwrap_or(stem);
        if matches!(top, "system" | "user" | "machine") {
            return err("system.slice, user.slice, machine.slice and their children are reserved");
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The slices from the top down to this one, e.g. `a.slice`, `a-b.slice`
    /// for `a-b.slice`: the order in which missing slices are created.
    pub fn ancestry(&self) -> Vec<SliceName> {
        let stem = self.0.trim_end_matches(".slice");
        let parts: Vec<&str> = stem.split('-').collect();
        (1..=parts.len())
            .map(|n| SliceName(format!("{}.slice", parts[..n].join("-"))))
            .collect()
    }
}

impl fmt::Display for SliceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SliceName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A GPU as named in a manifest: a GPU UUID, a modern MIG UUID, or the old
/// `MIG-GPU-<uuid>/<gi>/<ci>` form, which is accepted only as input and must
/// be mapped to a modern MIG UUID (through NVML, on the host) before it can
/// appear in a unit name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum GpuId {
    Gpu(String),
    Mig(String),
    LegacyMig { gpu: String, gi: u32, ci: u32 },
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl GpuId {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let err = |rule| {
            Err(NameError {
                kind: "GPU id",
                value: s.to_owned(),
                rule,
            })
        };
        if let Some(rest) = s.strip_prefix("MIG-GPU-") {
            let mut parts = rest.split('/');
            let (Some(uuid), Some(gi), Some(ci), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return err("old MIG form must be MIG-GPU-<uuid>/<gi>/<ci>");
            };
            if !is_uuid(uuid) {
                return err("old MIG form must be MIG-GPU-<uuid>/<gi>/<ci> with a GPU UUID");
            }
            let (Ok(gi), Ok(ci)) = (gi.parse(), ci.parse()) else {
                return err("MIG GPU and compute instance ids must be numbers");
            };
            return Ok(GpuId::LegacyMig {
                gpu: format!("GPU-{uuid}"),
                gi,
                ci,
            });
        }
        if let Some(uuid) = s.strip_prefix("GPU-") {
            if is_uuid(uuid) {
                return Ok(GpuId::Gpu(s.to_owned()));
            }
        } else if let Some(uuid) = s.strip_prefix("MIG-")
            && is_uuid(uuid)
        {
            return Ok(GpuId::Mig(s.to_owned()));
        }
        err("must be a GPU UUID (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx) or MIG UUID (MIG-…)")
    }

    /// The id as usable in a unit instance name, or `None` for the old MIG
    /// form, which contains `/` and must be mapped first.
    pub fn instance_name(&self) -> Option<&str> {
        match self {
            GpuId::Gpu(s) | GpuId::Mig(s) => Some(s),
            GpuId::LegacyMig { .. } => None,
        }
    }
}

impl fmt::Display for GpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuId::Gpu(s) | GpuId::Mig(s) => f.write_str(s),
            GpuId::LegacyMig { gpu, gi, ci } => write!(f, "MIG-{gpu}/{gi}/{ci}"),
        }
    }
}

impl From<GpuId> for String {
    fn from(g: GpuId) -> String {
        g.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capsule_names_follow_the_unit_name_rule() {
        let cases: &[(&str, bool)] = &[
            ("web-api", true),
            ("a", true),
            ("0svc", true),
            ("", false),
            ("-web", false),
            ("Web", false),
            ("web_api", false),
            ("web/api", false),
            ("web.api", false),
            ("web api", false),
            ("../x", false),
            (&"a".repeat(65), false),
        ];
        for (s, ok) in cases {
            assert_eq!(CapsuleName::parse(s).is_ok(), *ok, "case {s:?}");
        }
    }

    #[test]
    fn reserved_slices_are_refused() {
        let cases: &[(&str, bool)] = &[
            ("tori-server.slice", true),
            ("gpu.slice", true),
            ("-.slice", false),
            ("system.slice", false),
            ("system-foo.slice", false),
            ("user-1000.slice", false),
            ("machine.slice", false),
            ("tori", false),
            ("a--b.slice", false),
            ("a/b.slice", false),
        ];
        for (s, ok) in cases {
            assert_eq!(SliceName::parse(s).is_ok(), *ok, "case {s:?}");
        }
        let a = SliceName::parse("tori-server-gpu.slice").unwrap();
        let names: Vec<_> = a.ancestry().iter().map(|s| s.to_string()).collect();
        assert_eq!(
            names,
            ["tori.slice", "tori-server.slice", "tori-server-gpu.slice"]
        );
    }

    #[test]
    fn gpu_ids_in_all_three_forms() {
        let g = GpuId::parse("GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11").unwrap();
        assert_eq!(
            g.instance_name(),
            Some("GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11")
        );
        let m = GpuId::parse("MIG-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11").unwrap();
        assert!(matches!(m, GpuId::Mig(_)));
        let old = GpuId::parse("MIG-GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11/1/0").unwrap();
        assert_eq!(old.instance_name(), None);
        assert_eq!(
            old.to_string(),
            "MIG-GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11/1/0"
        );
        for bad in [
            "GPU-xyz",
            "0",
            "GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a1",
            "MIG-GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11/1",
            "MIG-GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11/a/0",
        ] {
            assert!(GpuId::parse(bad).is_err(), "case {bad:?}");
        }
    }

    #[test]
    fn release_id_is_16_lowercase_hex() {
        assert!(ReleaseId::parse("3f9c0d1e5a7b2c44").is_ok());
        assert!(ReleaseId::parse("3F9C0D1E5A7B2C44").is_err());
        assert!(ReleaseId::parse("3f9c0d1e5a7b2c4").is_err());
        assert!(ReleaseId::parse("../../etc/passw").is_err());
        let full = "3f9c0d1e5a7b2c44".repeat(4);
        assert_eq!(
            ReleaseId::from_sha256_hex(&full).unwrap().as_str(),
            "3f9c0d1e5a7b2c44"
        );
    }
}
