//! The deterministic archive writer.
//!
//! Same tree in, same bytes out: `capsule.yml` first, then every entry sorted
//! by path (byte order), owner 0:0 with no user or group names, modes
//! normalised to 0644/0755, one fixed mtime, GNU tar headers, and zstd with
//! fixed settings (level and worker count are constants, so the output does
//! not depend on the machine's core count). Only regular files, directories
//! and symlinks that stay inside the tree go in; everything else is refused
//! while scanning, before a byte is written.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::manifest::MANIFEST_NAME;

/// zstd level: the same as `zstd -3`, fast to build and to unpack.
pub const ZSTD_LEVEL: i32 = 3;
/// zstd worker threads. Fixed, because multi-threaded zstd frames differ from
/// single-threaded ones: a constant keeps builds byte-identical everywhere.
pub const ZSTD_WORKERS: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {problem}")]
    Refused { path: PathBuf, problem: String },
    #[error("write archive: {0}")]
    Write(io::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    File { size: u64, executable: bool },
    Dir,
    Symlink { target: String },
}

/// One entry of the source tree, with its path inside the capsule.
#[derive(Debug, Clone)]
pub struct SourceEntry {
    pub rel: String,
    pub abs: PathBuf,
    pub kind: SourceKind,
}

/// What went into the archive, entry by entry, for the results file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileRecord {
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: &'static str,
    pub mode: u32,
    pub size: u64,
    /// SHA-256 of the content (files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Walks `root` and returns its entries sorted by path, refusing anything a
/// capsule may not hold. The tree's own `capsule.yml` is left out: the
/// manifest is always written first, separately.
pub fn scan_tree(root: &Path) -> Result<Vec<SourceEntry>, PackError> {
    scan_tree_excluding(root, None)
}

/// Like [`scan_tree`], leaving out the folder `exclude` (with everything in it)
/// when it lies inside the tree: an output folder inside the source must not
/// pack earlier builds into the next one.
pub fn scan_tree_excluding(
    root: &Path,
    exclude: Option<&Path>,
) -> Result<Vec<SourceEntry>, PackError> {
    let root_real = root.canonicalize().map_err(|source| PackError::Read {
        path: root.to_owned(),
        source,
    })?;
    let meta = std::fs::metadata(&root_real).map_err(|source| PackError::Read {
        path: root.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(PackError::Refused {
            path: root.to_owned(),
            problem: "the source must be a directory".into(),
        });
    }
    let mut out = Vec::new();
    let exclude = exclude.and_then(|e| e.canonicalize().ok());
    walk(&root_real, &root_real, "", exclude.as_deref(), &mut out)?;
    out.sort_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
    Ok(out)
}

fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    exclude: Option<&Path>,
    out: &mut Vec<SourceEntry>,
) -> Result<(), PackError> {
    let rd = std::fs::read_dir(dir).map_err(|source| PackError::Read {
        path: dir.to_owned(),
        source,
    })?;
    for ent in rd {
        let ent = ent.map_err(|source| PackError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let abs = ent.path();
        let refuse = |problem: String| PackError::Refused {
            path: abs.clone(),
            problem,
        };
        let name = ent
            .file_name()
            .into_string()
            .map_err(|_| refuse("file name is not UTF-8".into()))?;
        if name.chars().any(char::is_control) || name.contains('\\') {
            return Err(refuse(
                "file name contains control characters or '\\'".into(),
            ));
        }
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if rel == MANIFEST_NAME {
            continue;
        }
        let meta = std::fs::symlink_metadata(&abs).map_err(|source| PackError::Read {
            path: abs.clone(),
            source,
        })?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(&abs).map_err(|source| PackError::Read {
                path: abs.clone(),
                source,
            })?;
            let target = target
                .to_str()
                .ok_or_else(|| refuse("symlink target is not UTF-8".into()))?
                .to_owned();
            check_link_stays_inside(root, &abs, &rel, &target).map_err(refuse)?;
            out.push(SourceEntry {
                rel,
                abs,
                kind: SourceKind::Symlink { target },
            });
        } else if ft.is_dir() {
            if exclude.is_some_and(|e| e == abs) {
                tracing::warn!(path = %abs.display(), "leaving the output folder out of the capsule");
                continue;
            }
            out.push(SourceEntry {
                rel: rel.clone(),
                abs: abs.clone(),
                kind: SourceKind::Dir,
            });
            walk(root, &abs, &rel, exclude, out)?;
        } else if ft.is_file() {
            // Open it now so an unreadable file is refused before anything
            // is written, not halfway through the archive.
            File::open(&abs).map_err(|source| PackError::Read {
                path: abs.clone(),
                source,
            })?;
            use std::os::unix::fs::PermissionsExt;
            out.push(SourceEntry {
                rel,
                abs,
                kind: SourceKind::File {
                    size: meta.len(),
                    executable: meta.permissions().mode() & 0o111 != 0,
                },
            });
        } else {
            use std::os::unix::fs::FileTypeExt;
            let what = if ft.is_socket() {
                "a socket"
            } else if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_block_device() || ft.is_char_device() {
                "a device node"
            } else {
                "not a regular file"
            };
            return Err(refuse(format!(
                "is {what}; a capsule holds only regular files, directories and symlinks"
            )));
        }
    }
    Ok(())
}

/// A symlink may go into a capsule only if it stays inside the tree: its
/// target is relative and in normal form (leading `..` parts only, no more of
/// them than the link is deep), and on this file system it resolves inside the
/// tree. Deploy applies the same lexical rule when it extracts.
fn check_link_stays_inside(root: &Path, abs: &Path, rel: &str, target: &str) -> Result<(), String> {
    link_target_is_contained(rel, target)?;
    match abs.canonicalize() {
        Ok(real) if real.starts_with(root) => Ok(()),
        Ok(real) => Err(format!(
            "symlink to {target:?} resolves to {}, outside the tree",
            real.display()
        )),
        // A dangling link that stays inside lexically is harmless.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("symlink to {target:?} cannot be resolved: {e}")),
    }
}

/// The lexical rule for a symlink at `rel` (a path inside the capsule)
/// pointing at `target`.
pub fn link_target_is_contained(rel: &str, target: &str) -> Result<(), String> {
    if target.is_empty() {
        return Err("symlink has an empty target".into());
    }
    if target.starts_with('/') {
        return Err(format!(
            "symlink to absolute path {target:?} leaves the tree"
        ));
    }
    if target.chars().any(char::is_control) {
        return Err("symlink target contains control characters".into());
    }
    let depth = rel.split('/').count() - 1;
    let mut ups = 0;
    let mut seen_name = false;
    for c in Path::new(target).components() {
        match c {
            Component::ParentDir if seen_name => {
                return Err(format!(
                    "symlink target {target:?} has '..' after a name; write it in normal form"
                ));
            }
            Component::ParentDir => ups += 1,
            Component::Normal(_) => seen_name = true,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "symlink to absolute path {target:?} leaves the tree"
                ));
            }
        }
    }
    if ups > depth {
        return Err(format!("symlink to {target:?} leaves the tree"));
    }
    Ok(())
}

/// Settings that must be identical for two builds to give the same bytes.
#[derive(Debug, Clone, Copy)]
pub struct PackOptions {
    /// Every entry's mtime (SOURCE_DATE_EPOCH, git commit time, or 0).
    pub mtime: u64,
}

/// Writes the archive to `out` (compressed) and returns what went in.
/// `progress` is called with the number of content bytes added so far.
pub fn pack<W: Write>(
    out: W,
    manifest_text: &str,
    entries: &[SourceEntry],
    opts: PackOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<(W, Vec<FileRecord>), PackError> {
    let mut enc = zstd::stream::Encoder::new(out, ZSTD_LEVEL).map_err(PackError::Write)?;
    enc.multithread(ZSTD_WORKERS).map_err(PackError::Write)?;
    enc.include_checksum(true).map_err(PackError::Write)?;
    let mut tar = tar::Builder::new(enc);
    tar.follow_symlinks(false);
    let mut records = Vec::with_capacity(entries.len() + 1);
    let mut done = 0u64;

    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(opts.mtime);
        h
    };

    let mbytes = manifest_text.as_bytes();
    let mut h = header(tar::EntryType::Regular, 0o644, mbytes.len() as u64);
    tar.append_data(&mut h, MANIFEST_NAME, mbytes)
        .map_err(PackError::Write)?;
    records.push(FileRecord {
        path: MANIFEST_NAME.into(),
        kind: "file",
        mode: 0o644,
        size: mbytes.len() as u64,
        sha256: Some(crate::digest::sha256_hex(mbytes)),
        target: None,
    });

    for e in entries {
        match &e.kind {
            SourceKind::Dir => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                tar.append_data(&mut h, format!("{}/", e.rel), io::empty())
                    .map_err(PackError::Write)?;
                records.push(FileRecord {
                    path: e.rel.clone(),
                    kind: "dir",
                    mode: 0o755,
                    size: 0,
                    sha256: None,
                    target: None,
                });
            }
            SourceKind::Symlink { target } => {
                let mut h = header(tar::EntryType::Symlink, 0o755, 0);
                tar.append_link(&mut h, &e.rel, target)
                    .map_err(PackError::Write)?;
                records.push(FileRecord {
                    path: e.rel.clone(),
                    kind: "symlink",
                    mode: 0o755,
                    size: 0,
                    sha256: None,
                    target: Some(target.clone()),
                });
            }
            SourceKind::File { size, executable } => {
                let mode = if *executable { 0o755 } else { 0o644 };
                let f = File::open(&e.abs).map_err(|source| PackError::Read {
                    path: e.abs.clone(),
                    source,
                })?;
                let mut h = header(tar::EntryType::Regular, mode, *size);
                // A buffer sized to the file: most files are small, and a
                // 256 KiB buffer per file is an mmap and munmap each time.
                let cap = (*size as usize).clamp(8 * 1024, 128 * 1024);
                let mut reader = HashingReader::new(BufReader::with_capacity(cap, f));
                tar.append_data(&mut h, &e.rel, (&mut reader).take(*size))
                    .map_err(|err| PackError::Read {
                        path: e.abs.clone(),
                        source: err,
                    })?;
                // A file that grew while being packed would be cut silently at
                // its scanned size: refuse it like one that shrank.
                let mut probe = [0u8; 1];
                let grew = reader
                    .inner
                    .read(&mut probe)
                    .map(|n| n > 0)
                    .unwrap_or(false);
                if reader.count != *size || grew {
                    return Err(PackError::Refused {
                        path: e.abs.clone(),
                        problem: format!(
                            "changed size while being packed ({} bytes, expected {size})",
                            reader.count
                        ),
                    });
                }
                records.push(FileRecord {
                    path: e.rel.clone(),
                    kind: "file",
                    mode,
                    size: *size,
                    sha256: Some(hex::encode(reader.hasher.finalize())),
                    target: None,
                });
                done += size;
                progress(done);
            }
        }
    }
    let enc = tar.into_inner().map_err(PackError::Write)?;
    let out = enc.finish().map_err(PackError::Write)?;
    Ok((out, records))
}

/// Hashes what is read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_containment_rule() {
        let cases: &[(&str, &str, bool)] = &[
            ("a", "b", true),
            ("bin/a", "../lib/x", true),
            ("bin/a", "../../x", false),
            ("a", "../x", false),
            ("a", "/etc/passwd", false),
            ("d/a", "b/../x", false),
            ("d/a", "./b", true),
            ("a", "", false),
        ];
        for (rel, target, ok) in cases {
            assert_eq!(
                link_target_is_contained(rel, target).is_ok(),
                *ok,
                "case {rel} -> {target}"
            );
        }
    }
}
