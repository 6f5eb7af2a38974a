//! The capsule contract shared by `capsule-build` and `dickbox-deploy`.
//!
//! A capsule is `NAME-VERSION.capsule.tar.zst` plus detached signatures and
//! build records beside it. This crate owns everything both sides must agree
//! on: the manifest (`manifest`), validated names (`names`), the deterministic
//! archive writer (`pack`) and the safe reader (`unpack`), digests, the signed
//! trusted comment (`trusted`) and minisign keys and signatures (`minisig`).

mod capped;
pub mod digest;
pub mod manifest;
pub mod minisig;
pub mod names;
pub mod pack;
pub mod quantity;
pub mod sigstore;
pub mod trusted;
pub mod unpack;

use names::CapsuleName;

/// Suffix of the archive.
pub const ARCHIVE_SUFFIX: &str = ".capsule.tar.zst";
/// Suffix of an older gzip archive, accepted on input.
pub const ARCHIVE_SUFFIX_GZ: &str = ".capsule.tar.gz";
/// Appended to the archive's name for its minisign signature.
pub const MINISIG_SUFFIX: &str = ".minisig";
/// Appended to the archive's name for a cosign-style signature.
pub const COSIGN_SUFFIX: &str = ".cosign.sig";
/// Appended to the archive's name for a Sigstore bundle.
pub const SIGSTORE_SUFFIX: &str = ".sigstore.json";

/// `NAME-VERSION`, the stem of every file of one build.
pub fn stem(name: &CapsuleName, version: &semver::Version) -> String {
    format!("{name}-{version}")
}

/// The archive's file name for a capsule.
pub fn archive_file_name(name: &CapsuleName, version: &semver::Version) -> String {
    format!("{}{ARCHIVE_SUFFIX}", stem(name, version))
}
