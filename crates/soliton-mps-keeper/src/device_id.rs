//! GPU identifiers as the keeper accepts them.
//!
//! An instance name (what follows `@` in `soliton-mps@….service`) is a GPU
//! UUID `GPU-<uuid>` or a modern MIG UUID `MIG-<uuid>`: letters, digits and `-`
//! only, so it is safe verbatim in unit names and paths. The old MIG form
//! `MIG-GPU-<uuid>/<gi>/<ci>` contains `/`; it is accepted on the command line
//! only, as [`DeviceArg::LegacyMig`], and never becomes a [`GpuUuid`] without
//! going through NVML.

use std::fmt;

/// A validated GPU or modern MIG device UUID; only [`GpuUuid::parse`] builds one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GpuUuid(String);

/// What an identifier names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UuidKind {
    /// A whole GPU, `GPU-<uuid>`.
    Gpu,
    /// A MIG device, `MIG-<uuid>`.
    Mig,
}

/// A device as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceArg {
    /// A usable instance name.
    Uuid(GpuUuid),
    /// The old `MIG-GPU-<uuid>/<gi>/<ci>` form, to be mapped through NVML.
    LegacyMig {
        /// The parent GPU.
        parent: GpuUuid,
        /// GPU instance id.
        gpu_instance: u32,
        /// Compute instance id.
        compute_instance: u32,
    },
}

/// Why a device identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    /// Not `GPU-…`, `MIG-…` or the old MIG form.
    #[error(
        "{given:?} is not a GPU id: expected GPU-<uuid>, MIG-<uuid> or MIG-GPU-<uuid>/<gi>/<ci> \
         ({reason})"
    )]
    Malformed {
        /// The text given.
        given: String,
        /// Which rule refused it.
        reason: &'static str,
    },
}

impl GpuUuid {
    /// Parses `GPU-<uuid>` or `MIG-<uuid>`, where `<uuid>` is the 8-4-4-4-12 hex
    /// form NVIDIA prints (`nvidia-smi -L`). Hex digits may be of either case
    /// but are kept as given, since NVML and CUDA compare them as text.
    pub fn parse(text: &str) -> Result<Self, DeviceIdError> {
        let malformed = |reason| DeviceIdError::Malformed {
            given: text.to_owned(),
            reason,
        };
        let rest = text
            .strip_prefix("GPU-")
            .or_else(|| text.strip_prefix("MIG-"))
            .ok_or_else(|| malformed("must start with GPU- or MIG-"))?;
        if rest.starts_with("GPU-") {
            return Err(malformed("old MIG form needs /<gi>/<ci>"));
        }
        if !is_uuid_body(rest) {
            return Err(malformed(
                "the part after the prefix must be 8-4-4-4-12 hex digits",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The UUID as text, e.g. `GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whole GPU or MIG device.
    pub fn kind(&self) -> UuidKind {
        if self.0.starts_with("MIG-") {
            UuidKind::Mig
        } else {
            UuidKind::Gpu
        }
    }
}

impl fmt::Display for GpuUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl DeviceArg {
    /// Parses a command-line device argument.
    pub fn parse(text: &str) -> Result<Self, DeviceIdError> {
        let Some(legacy) = text.strip_prefix("MIG-GPU-") else {
            return GpuUuid::parse(text).map(Self::Uuid);
        };
        let malformed = |reason| DeviceIdError::Malformed {
            given: text.to_owned(),
            reason,
        };
        let mut parts = legacy.split('/');
        let (Some(body), Some(gi), Some(ci), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("old MIG form is MIG-GPU-<uuid>/<gi>/<ci>"));
        };
        let parent = GpuUuid::parse(&format!("GPU-{body}"))
            .map_err(|_| malformed("old MIG form has a malformed GPU uuid"))?;
        let number = |s: &str| {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed("<gi> and <ci> must be decimal numbers"));
            }
            s.parse::<u32>()
                .map_err(|_| malformed("<gi> or <ci> is out of range"))
        };
        Ok(Self::LegacyMig {
            parent,
            gpu_instance: number(gi)?,
            compute_instance: number(ci)?,
        })
    }
}

impl fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uuid(uuid) => uuid.fmt(f),
            Self::LegacyMig {
                parent,
                gpu_instance,
                compute_instance,
            } => write!(
                f,
                "MIG-{}/{gpu_instance}/{compute_instance}",
                parent.as_str()
            ),
        }
    }
}

fn is_uuid_body(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lengths = [8, 4, 4, 4, 12];
    groups.len() == lengths.len()
        && groups
            .iter()
            .zip(lengths)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Formats the 16 raw bytes CUDA reports (`cuDeviceGetUuid`) as NVIDIA's text
/// form without prefix.
pub fn uuid_body_from_bytes(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPU: &str = "GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11";

    #[test]
    fn accepts_gpu_and_modern_mig_uuids_verbatim() {
        for (text, kind) in [
            (GPU, UuidKind::Gpu),
            ("MIG-0f1e2d3c-4b5a-6978-8a9b-acbdcedf0011", UuidKind::Mig),
            ("GPU-8CA2C6C4-3B2E-0B9A-1A6B-7E2C5D9F0A11", UuidKind::Gpu),
        ] {
            let uuid = GpuUuid::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(uuid.as_str(), text);
            assert_eq!(uuid.kind(), kind, "{text}");
        }
    }

    #[test]
    fn refuses_malformed_ids_naming_the_rule() {
        for (text, rule) in [
            ("", "must start with GPU- or MIG-"),
            ("gpu-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11", "must start"),
            ("GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a1", "8-4-4-4-12"),
            ("GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11/1", "8-4-4-4-12"),
            ("GPU-../../etc/passwd-0b9a-1a6b-7e2c5d9f0a11", "8-4-4-4-12"),
            ("GPU-8ca2c6c4/3b2e/0b9a/1a6b/7e2c5d9f0a11", "8-4-4-4-12"),
            (
                "MIG-GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11",
                "old MIG form",
            ),
            ("GPU-zca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11", "8-4-4-4-12"),
        ] {
            let err = GpuUuid::parse(text).expect_err(text).to_string();
            assert!(err.contains(rule), "{text:?}: {err}");
        }
    }

    #[test]
    fn parses_the_old_mig_form_only_as_a_device_argument() {
        let text = format!("MIG-{GPU}/1/0");
        let arg = DeviceArg::parse(&text).unwrap();
        assert_eq!(
            arg,
            DeviceArg::LegacyMig {
                parent: GpuUuid::parse(GPU).unwrap(),
                gpu_instance: 1,
                compute_instance: 0,
            }
        );
        assert_eq!(arg.to_string(), text);
        assert!(GpuUuid::parse(&text).is_err());
        for bad in [
            format!("MIG-{GPU}/1"),
            format!("MIG-{GPU}/1/0/2"),
            format!("MIG-{GPU}/x/0"),
            format!("MIG-{GPU}/-1/0"),
            format!("MIG-{GPU}//0"),
            "MIG-GPU-123/1/0".to_owned(),
        ] {
            assert!(DeviceArg::parse(&bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn formats_cuda_uuid_bytes_like_nvidia_smi() {
        let bytes = [
            0x8c, 0xa2, 0xc6, 0xc4, 0x3b, 0x2e, 0x0b, 0x9a, 0x1a, 0x6b, 0x7e, 0x2c, 0x5d, 0x9f,
            0x0a, 0x11,
        ];
        assert_eq!(format!("GPU-{}", uuid_body_from_bytes(&bytes)), GPU);
    }
}
