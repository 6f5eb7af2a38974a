//! The safe archive reader: listing for `inspect` and extraction for deploy.
//!
//! The reader takes any `Read` (deploy hands it the very descriptor whose bytes
//! it verified) and never trusts the archive: the first member must be
//! `capsule.yml`; only regular files, directories and symlinks in normal form
//! that stay inside are accepted; absolute paths, `..`, hard links, devices,
//! FIFOs, setuid/setgid/sticky bits and duplicate members are refused; a
//! member is only ever written below directories this extraction created
//! itself, so a symlink member can never be written through; and limits on
//! total size, member count and compression ratio stop decompression bombs.
//! On any refusal, `extract` removes everything it wrote.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::manifest::{MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, check_relative_path};
use crate::pack::{FileRecord, link_target_is_contained};

/// Limits against decompression bombs; all configurable by deploy.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes of file content.
    pub max_total_bytes: u64,
    pub max_members: u64,
    /// Largest allowed ratio of unpacked content to compressed input.
    pub max_ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_total_bytes: 16 << 30,
            max_members: 200_000,
            max_ratio: 200,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("read archive: {0}")]
    Read(io::Error),
    #[error("archive is neither zstd nor gzip (first bytes {0:02x?})")]
    UnknownCompression(Vec<u8>),
    #[error("archive member {member:?}: {problem}")]
    Member { member: String, problem: String },
    #[error("archive: {0}")]
    Archive(String),
    #[error("{0}")]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error("write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("archive is a decompression bomb: {0}")]
    Bomb(String),
}

/// Counts compressed bytes read, to compute the compression ratio.
struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Most tar metadata (headers, padding, long names, PAX records) allowed
/// besides 1 KiB per member: the tar reader buffers long names and PAX
/// records whole, so this also caps the memory a hostile header can take.
const META_BASE: u64 = 16 << 20;

/// Decompressed bytes after which the compression ratio is judged; small
/// archives compress well for innocent reasons.
const RATIO_AFTER: u64 = 64 << 20;

/// What the walker and the guard reader share.
#[derive(Debug, Default)]
struct Budget {
    /// Decompressed bytes handed to the tar reader so far.
    decompressed: AtomicU64,
    /// Of those, bytes of regular-file content the walker consumed.
    content: AtomicU64,
    members: AtomicU64,
    /// Why the guard stopped the stream, if it did.
    tripped: std::sync::Mutex<Option<String>>,
}

/// Sits between the decoder and the tar reader and counts every
/// decompressed byte, whatever the tar headers claim: content beyond the
/// limit, metadata beyond its allowance (a huge long name or PAX record, data
/// hidden in a directory member) and a compression ratio above the limit all
/// stop the stream with an error before the bytes are used.
struct GuardReader<R> {
    inner: R,
    compressed: Arc<AtomicU64>,
    budget: Arc<Budget>,
    limits: Limits,
}

impl<R: Read> Read for GuardReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let b = &self.budget;
        let pos = b.decompressed.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        let content = b.content.load(Ordering::Relaxed);
        let meta = pos.saturating_sub(content);
        let meta_cap = META_BASE + 1024 * b.members.load(Ordering::Relaxed);
        let compressed = self.compressed.load(Ordering::Relaxed).max(1);
        let why = if meta > meta_cap + (1 << 20) {
            Some(format!(
                "{meta} bytes of tar metadata or data outside regular files (allowed {meta_cap})"
            ))
        } else if content > self.limits.max_total_bytes {
            Some(format!(
                "content exceeds {} bytes",
                self.limits.max_total_bytes
            ))
        } else if pos > RATIO_AFTER && pos / compressed > self.limits.max_ratio {
            Some(format!(
                "{pos} bytes unpacked from {compressed} compressed (ratio above {})",
                self.limits.max_ratio
            ))
        } else {
            None
        };
        if let Some(why) = why {
            if let Ok(mut t) = b.tripped.lock() {
                t.get_or_insert(why);
            }
            return Err(io::Error::other("decompression limit reached"));
        }
        Ok(n)
    }
}

/// Wraps a compressed stream in the right decoder, telling zstd from gzip by
/// their magic bytes. Returns the decoder and a counter of compressed bytes.
pub fn decoder<'a, R: Read + 'a>(
    r: R,
) -> Result<(Box<dyn Read + 'a>, Arc<AtomicU64>), UnpackError> {
    let count = Arc::new(AtomicU64::new(0));
    let mut br = BufReader::with_capacity(
        256 * 1024,
        CountingReader {
            inner: r,
            count: count.clone(),
        },
    );
    let head = br.fill_buf().map_err(UnpackError::Read)?;
    let dec: Box<dyn Read + 'a> = if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(br).map_err(UnpackError::Read)?)
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(br))
    } else {
        return Err(UnpackError::UnknownCompression(
            head.iter().take(4).copied().collect(),
        ));
    };
    Ok((dec, count))
}

/// What an archive holds: its manifest and every member.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub manifest_text: String,
    pub manifest: Manifest,
    pub files: Vec<FileRecord>,
    pub total_bytes: u64,
}

/// Where members go: nowhere (listing) or below a staging folder.
enum Sink<'a> {
    List,
    Extract { root: &'a Path, fsync: bool },
}

/// Lists an archive without writing anything, with the same checks as
/// extraction.
pub fn list(r: impl Read, limits: Limits) -> Result<Inventory, UnpackError> {
    walk_archive(r, limits, Sink::List)
}

/// Extracts into `dest`, which must not exist yet; it is created with mode
/// 0700 and, on any error, removed again with everything in it. With `fsync`,
/// every file is synced before return (the caller renames `dest` into place
/// and syncs the parent).
pub fn extract(
    r: impl Read,
    dest: &Path,
    limits: Limits,
    fsync: bool,
) -> Result<Inventory, UnpackError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dest)
        .map_err(|source| UnpackError::Write {
            path: dest.to_owned(),
            source,
        })?;
    let res = walk_archive(r, limits, Sink::Extract { root: dest, fsync });
    if res.is_err() {
        // Leave nothing behind. Symlinks are removed, not followed.
        let _ = fs::remove_dir_all(dest);
    }
    res
}

fn member_err(member: &str, problem: impl Into<String>) -> UnpackError {
    UnpackError::Member {
        member: member.to_owned(),
        problem: problem.into(),
    }
}

fn walk_archive(r: impl Read, limits: Limits, sink: Sink<'_>) -> Result<Inventory, UnpackError> {
    let (dec, compressed) = decoder(r)?;
    let budget = Arc::new(Budget::default());
    let guard = GuardReader {
        inner: dec,
        compressed: compressed.clone(),
        budget: budget.clone(),
        limits,
    };
    let mut ar = tar::Archive::new(guard);
    let bomb = |b: &Budget, other: UnpackError| -> UnpackError {
        match b.tripped.lock().ok().and_then(|t| t.clone()) {
            Some(why) => UnpackError::Bomb(why),
            None => other,
        }
    };
    let entries = ar.entries().map_err(UnpackError::Read)?;

    let mut files = Vec::new();
    // Kinds of the members seen so far, by normalised path: duplicates and
    // writes below non-directories are refused from this map.
    let mut seen: HashMap<String, char> = HashMap::new();
    let mut dirs_made: HashSet<String> = HashSet::new();
    dirs_made.insert(String::new());
    let mut manifest: Option<(String, Manifest)> = None;
    let mut total: u64 = 0;
    let mut members: u64 = 0;
    let mut buf = vec![0u8; 256 * 1024];

    for entry in entries {
        let mut entry = entry.map_err(|e| {
            bomb(
                &budget,
                UnpackError::Archive(format!("damaged tar stream: {e}")),
            )
        })?;
        members += 1;
        budget.members.store(members, Ordering::Relaxed);
        if members > limits.max_members {
            return Err(UnpackError::Bomb(format!(
                "more than {} members",
                limits.max_members
            )));
        }
        let raw_path = entry.path_bytes();
        let path_str = std::str::from_utf8(&raw_path)
            .map_err(|_| member_err(&String::from_utf8_lossy(&raw_path), "path is not UTF-8"))?
            .to_owned();
        let header = entry.header();
        let etype = header.entry_type();
        let mode = header
            .mode()
            .map_err(|e| member_err(&path_str, format!("bad mode: {e}")))?;
        // The size the reader will really yield (a PAX record may override
        // the header's), so every limit sees the true figure.
        let size = entry.size();

        // Normalise: a trailing slash marks directories; nothing else is
        // rewritten, so `a/./b` or `a//b` are refused rather than guessed at.
        let rel = path_str.strip_suffix('/').unwrap_or(&path_str).to_owned();
        check_relative_path(&rel).map_err(|p| member_err(&path_str, p))?;
        if mode & 0o7000 != 0 {
            return Err(member_err(
                &path_str,
                format!("mode {mode:o} has setuid, setgid or sticky bits"),
            ));
        }

        if manifest.is_none() {
            if rel != MANIFEST_NAME || !etype.is_file() {
                return Err(member_err(
                    &path_str,
                    "the first member must be the regular file capsule.yml",
                ));
            }
            if size > MAX_MANIFEST_BYTES {
                return Err(member_err(&path_str, "manifest is too large"));
            }
        }

        let kind = if etype.is_file() {
            'f'
        } else if etype.is_dir() {
            'd'
        } else if etype.is_symlink() {
            's'
        } else if etype.is_hard_link() {
            return Err(member_err(&path_str, "hard links are not allowed"));
        } else if etype.is_character_special() || etype.is_block_special() {
            return Err(member_err(&path_str, "device nodes are not allowed"));
        } else if etype.is_fifo() {
            return Err(member_err(&path_str, "FIFOs are not allowed"));
        } else {
            return Err(member_err(
                &path_str,
                format!("entry type {:?} is not allowed", etype.as_byte() as char),
            ));
        };

        if seen.contains_key(&rel) {
            return Err(member_err(&path_str, "duplicate member"));
        }
        let parent = rel.rsplit_once('/').map_or("", |(p, _)| p);
        if !dirs_made.contains(parent) {
            let why = match seen.get(parent) {
                Some('s') => {
                    "its parent is a symlink in the archive: nothing is written through links"
                }
                Some(_) => "its parent is not a directory",
                None => "its parent directory is not in the archive before it",
            };
            return Err(member_err(&path_str, why));
        }
        seen.insert(rel.clone(), kind);

        match kind {
            'd' => {
                if let Sink::Extract { root, .. } = &sink {
                    let p = root.join(&rel);
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&p)
                        .map_err(|source| UnpackError::Write { path: p, source })?;
                }
                dirs_made.insert(rel.clone());
                files.push(FileRecord {
                    path: rel,
                    kind: "dir",
                    mode: 0o755,
                    size: 0,
                    sha256: None,
                    target: None,
                });
            }
            's' => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| member_err(&path_str, "symlink without target"))?;
                let target = std::str::from_utf8(&target)
                    .map_err(|_| member_err(&path_str, "symlink target is not UTF-8"))?
                    .to_owned();
                link_target_is_contained(&rel, &target).map_err(|p| member_err(&path_str, p))?;
                if let Sink::Extract { root, .. } = &sink {
                    let p = root.join(&rel);
                    std::os::unix::fs::symlink(&target, &p)
                        .map_err(|source| UnpackError::Write { path: p, source })?;
                }
                files.push(FileRecord {
                    path: rel,
                    kind: "symlink",
                    mode: 0o777,
                    size: 0,
                    sha256: None,
                    target: Some(target),
                });
            }
            _ => {
                total = total.saturating_add(size);
                if total > limits.max_total_bytes {
                    return Err(UnpackError::Bomb(format!(
                        "content exceeds {} bytes (at member {path_str:?})",
                        limits.max_total_bytes
                    )));
                }
                let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                let mut out = match &sink {
                    Sink::Extract { root, .. } => {
                        let p = root.join(&rel);
                        let f = OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(mode)
                            .open(&p)
                            .map_err(|source| UnpackError::Write { path: p, source })?;
                        Some(io::BufWriter::with_capacity(256 * 1024, f))
                    }
                    Sink::List => None,
                };
                let mut hasher = Sha256::new();
                let mut keep = Vec::new();
                let mut got = 0u64;
                loop {
                    let n = entry.read(&mut buf).map_err(|e| {
                        bomb(
                            &budget,
                            UnpackError::Archive(format!("read member {path_str:?}: {e}")),
                        )
                    })?;
                    if n == 0 {
                        break;
                    }
                    got += n as u64;
                    budget.content.fetch_add(n as u64, Ordering::Relaxed);
                    hasher.update(&buf[..n]);
                    if manifest.is_none() {
                        keep.extend_from_slice(&buf[..n]);
                    }
                    if let Some(w) = out.as_mut() {
                        w.write_all(&buf[..n])
                            .map_err(|source| UnpackError::Write {
                                path: PathBuf::from(&rel),
                                source,
                            })?;
                    }
                }
                if got != size {
                    return Err(member_err(&path_str, "member is truncated"));
                }
                if let Some(w) = out {
                    let f = w.into_inner().map_err(|e| UnpackError::Write {
                        path: PathBuf::from(&rel),
                        source: e.into_error(),
                    })?;
                    // Undo the umask so modes are exactly 0644/0755.
                    f.set_permissions(fs::Permissions::from_mode(mode))
                        .map_err(|source| UnpackError::Write {
                            path: PathBuf::from(&rel),
                            source,
                        })?;
                    if let Sink::Extract { fsync: true, .. } = sink {
                        f.sync_all().map_err(|source| UnpackError::Write {
                            path: PathBuf::from(&rel),
                            source,
                        })?;
                    }
                }
                if manifest.is_none() {
                    let m = Manifest::parse_bytes(&keep, MANIFEST_NAME)?;
                    let text = String::from_utf8(keep).expect("checked by parse_bytes");
                    manifest = Some((text, m));
                }
                files.push(FileRecord {
                    path: rel,
                    kind: "file",
                    mode,
                    size,
                    sha256: Some(hex::encode(hasher.finalize())),
                    target: None,
                });
            }
        }
    }
    let Some((manifest_text, manifest)) = manifest else {
        return Err(UnpackError::Archive(
            "archive is empty: no capsule.yml".into(),
        ));
    };
    // Nothing may follow the end of the tar archive but its zero padding:
    // members after the end marker, a second compressed frame or trailing
    // garbage would be data that was signed but never checked here, and that
    // another tool (`tar -i`) might still extract.
    let mut rest = ar.into_inner();
    let mut padding = 0u64;
    loop {
        let n = rest.read(&mut buf).map_err(|e| {
            bomb(
                &budget,
                UnpackError::Archive(format!("data after the end of the tar archive: {e}")),
            )
        })?;
        if n == 0 {
            break;
        }
        padding += n as u64;
        if buf[..n].iter().any(|&b| b != 0) || padding > (1 << 20) {
            return Err(UnpackError::Archive(
                "data after the end of the tar archive (a second archive, frame or garbage)".into(),
            ));
        }
    }
    if let Sink::Extract { root, fsync: true } = sink {
        for d in &dirs_made {
            let p = root.join(d);
            File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|source| UnpackError::Write { path: p, source })?;
        }
    }
    Ok(Inventory {
        manifest_text,
        manifest,
        files,
        total_bytes: total,
    })
}
