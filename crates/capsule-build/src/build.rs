//! `capsule-build build`: manifest, reproducible archive, signature, records.

use std::io::{BufWriter, Read as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use capsule::digest::HashingWriter;
use capsule::manifest::{MANIFEST_NAME, Manifest, with_format_line};
use capsule::minisig::SigningKey;
use capsule::names::{CapsuleName, ReleaseId};
use capsule::pack::{self, PackOptions, ZSTD_LEVEL, ZSTD_WORKERS};
use capsule::trusted::TrustedComment;

use crate::output::{Outputs, set_mode};
use crate::records::{BuildInfo, BuildRecord, CapsuleInfo, Compressor, SCHEMA, SignatureInfo};
use crate::{InputError, ProgressSink};

/// Everything a build needs, resolved from flags, environment and config.
#[derive(Debug)]
pub struct BuildRequest {
    pub src: PathBuf,
    pub name: Option<String>,
    pub version: Option<String>,
    pub manifest: Option<PathBuf>,
    /// `None` only with `skip_sign`.
    pub key: Option<PathBuf>,
    pub password: Option<String>,
    /// ECDSA P-256 PEM secret key for a cosign-style signature.
    pub cosign_key: Option<PathBuf>,
    /// A Sigstore bundle made elsewhere, to copy beside the archive.
    pub attach_bundle: Option<PathBuf>,
    pub out: PathBuf,
    pub skip_sign: bool,
    pub builder: String,
}

/// What a build produced.
#[derive(Debug)]
pub struct Built {
    pub record: BuildRecord,
    pub paths: Vec<PathBuf>,
}

pub fn build(req: &BuildRequest, progress: &mut dyn ProgressSink) -> Result<Built> {
    let started = Instant::now();

    // 1. The manifest: the given file, else SRC/capsule.yml, else a default.
    let (manifest_text, manifest_origin) = read_manifest(req)?;
    let manifest = match &manifest_text {
        Some(text) => Manifest::parse(text, &manifest_origin).map_err(InputError::from)?,
        None => {
            let (Some(n), Some(v)) = (&req.name, &req.version) else {
                return Err(InputError::msg(format!(
                    "{}: no capsule.yml in the source and no --manifest; give --name and \
                     --version (or NAME VERSION SRC) to build with a default manifest",
                    req.src.display()
                ))
                .into());
            };
            let name =
                CapsuleName::parse(n).map_err(|e| InputError::msg(format!("--name: {e}")))?;
            let version = semver::Version::parse(v).map_err(|e| {
                InputError::msg(format!("--version {v:?}: not a semantic version: {e}"))
            })?;
            tracing::info!(name = %name, version = %version, "no capsule.yml: writing the default manifest");
            Manifest::parse(&Manifest::default_text(&name, &version), "default manifest")
                .map_err(InputError::from)?
        }
    };
    if let Some(n) = &req.name
        && n != manifest.name.as_str()
    {
        return Err(InputError::msg(format!(
            "{manifest_origin}: manifest says name {} but the command line says {n}",
            manifest.name
        ))
        .into());
    }
    if let Some(v) = &req.version
        && semver::Version::parse(v).ok().as_ref() != Some(&manifest.version)
    {
        return Err(InputError::msg(format!(
            "{manifest_origin}: manifest says version {} but the command line says {v}",
            manifest.version
        ))
        .into());
    }
    let final_manifest = match &manifest_text {
        Some(text) => with_format_line(text.strip_prefix('\u{feff}').unwrap_or(text), &manifest),
        None => Manifest::default_text(&manifest.name, &manifest.version),
    };
    // What goes into the archive is what every host will parse: check those
    // exact bytes with the same parser, so a manifest the format line would
    // break (flow style, an indented mapping) is refused here, not on hosts.
    let mut expected = manifest.clone();
    expected.format = capsule::manifest::FORMAT;
    match Manifest::parse(&final_manifest, MANIFEST_NAME) {
        Ok(m) if m == expected => {}
        _ => {
            return Err(InputError::msg(format!(
                "{manifest_origin}: cannot add `format: {}` to this manifest (flow style or an \
                 indented mapping?): add `format: {}` as its first line yourself",
                capsule::manifest::FORMAT,
                capsule::manifest::FORMAT
            ))
            .into());
        }
    }

    // 2. The keys and the bundle, before any work, so a wrong password or a
    //    bad file fails fast.
    let cosign_key = match &req.cosign_key {
        Some(p) if !req.skip_sign => {
            let text = read_small_text(p, 16 * 1024, "cosign key")?;
            Some(capsule::sigstore::CosignSigningKey::from_pem(
                &text,
                &p.display().to_string(),
            )?)
        }
        _ => None,
    };
    let bundle = match &req.attach_bundle {
        Some(p) if !req.skip_sign => {
            let text = read_small_text(p, capsule::sigstore::MAX_BUNDLE_FILE, "bundle")?;
            let digests = capsule::sigstore::bundle_subject_digests(text.as_bytes())
                .map_err(|e| InputError::msg(format!("--attach-bundle {}: {e}", p.display())))?;
            let media = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| {
                    v.get("mediaType")
                        .and_then(|m| m.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            Some((p.clone(), text, digests, media))
        }
        _ => None,
    };
    let key = match (&req.key, req.skip_sign) {
        (_, true) => {
            tracing::warn!(
                "--skip-sign: this capsule is UNSIGNED and every host will refuse to deploy it"
            );
            None
        }
        (Some(k), false) => Some(SigningKey::load(k, req.password.clone())?),
        (None, false) if cosign_key.is_some() || bundle.is_some() => None,
        (None, false) => {
            bail!(
                "no signing key: give --key SECRET, --cosign-key KEY.pem or --attach-bundle \
                 FILE (or --skip-sign for a local test build)"
            )
        }
    };

    // 3. The tree, checked completely before anything is written.
    std::fs::create_dir_all(&req.out)
        .with_context(|| format!("create output folder {}", req.out.display()))?;
    if req.out.canonicalize().ok() == req.src.canonicalize().ok() {
        return Err(InputError::msg(format!(
            "--out {} is the source folder: earlier builds would be packed into the next one",
            req.out.display()
        ))
        .into());
    }
    let entries = pack::scan_tree_excluding(&req.src, Some(&req.out)).map_err(InputError::from)?;
    match entries
        .iter()
        .find(|e| e.rel == manifest.entrypoint)
        .map(|e| &e.kind)
    {
        Some(
            pack::SourceKind::File {
                executable: true, ..
            }
            | pack::SourceKind::Symlink { .. },
        ) => {}
        Some(pack::SourceKind::File { .. }) => {
            return Err(InputError::msg(format!(
                "{manifest_origin}: entrypoint {} is not executable (chmod +x it); systemd \
                 could not start it",
                manifest.entrypoint
            ))
            .into());
        }
        Some(pack::SourceKind::Dir) => {
            return Err(InputError::msg(format!(
                "{manifest_origin}: entrypoint {} is a folder, not a program",
                manifest.entrypoint
            ))
            .into());
        }
        None => {
            return Err(InputError::msg(format!(
                "{manifest_origin}: entrypoint {} is not in {}",
                manifest.entrypoint,
                req.src.display()
            ))
            .into());
        }
    }
    let total: u64 = entries
        .iter()
        .map(|e| match e.kind {
            pack::SourceKind::File { size, .. } => size,
            _ => 0,
        })
        .sum();
    let (mtime, mtime_source) = source_date_epoch(&req.src)?;
    let (git_sha, git_branch) = git_info(&req.src);

    // 4. The archive, into a temporary file, hashed as it is written.
    let stem = capsule::stem(&manifest.name, &manifest.version);
    let archive_name = format!("{stem}{}", capsule::ARCHIVE_SUFFIX);
    let mut outputs = Outputs::new(&req.out)?;
    let tmp = outputs.temp(&archive_name)?;
    let file = tmp.reopen().context("open the temporary archive")?;
    progress.start(total);
    let (hw, files) = pack::pack(
        HashingWriter::new(BufWriter::with_capacity(1 << 20, file)),
        &final_manifest,
        &entries,
        PackOptions { mtime },
        &mut |n| progress.set(n),
    )
    .map_err(|e| match e {
        pack::PackError::Write(io) => {
            anyhow::Error::new(io).context(format!("write {}", tmp.path().display()))
        }
        other => InputError::from(other).into(),
    })?;
    progress.finish();
    let (bw, sha256, size) = hw.finish();
    bw.into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("write {}", tmp.path().display()))?;
    set_mode(tmp.as_file(), 0o644)?;
    let release_id = ReleaseId::from_sha256_hex(&sha256).expect("sha256 hex is long enough");
    // Flushing the archive to disk is mostly waiting; start it now on its
    // own thread so it overlaps the signature's read-back and the records.
    // Outputs::add syncs again before the rename (cheap by then), so a
    // failure here is only logged.
    let early_sync = {
        let f = tmp.reopen().context("reopen the temporary archive")?;
        std::thread::spawn(move || f.sync_data())
    };

    // 5. The signature, over the bytes just written (read back from the same
    //    file), with the trusted comment binding name, version and digest.
    let mut signatures = Vec::new();
    let mut sig_text = None;
    if let Some(key) = &key {
        let signed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let tc = TrustedComment {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            sha256: sha256.clone(),
            signed,
        }
        .to_string();
        let reader = tmp.reopen().context("reopen the temporary archive")?;
        let text = key.sign(
            std::io::BufReader::with_capacity(1 << 20, reader).take(size),
            &tc,
        )?;
        signatures.push(SignatureInfo {
            kind: "minisign",
            algorithm: "ED".into(),
            key_id: key.key_id.to_string(),
            trusted_comment: tc,
            file: format!("{archive_name}{}", capsule::MINISIG_SUFFIX),
        });
        sig_text = Some(text);
    }
    let sha_bytes: [u8; 32] = hex_to_32(&sha256)?;
    let mut cosign_text = None;
    if let Some(ck) = &cosign_key {
        // The digest hashed while writing is of the bytes in the file we are
        // about to rename into place.
        let text = ck.sign_digest(&sha_bytes)?;
        signatures.push(SignatureInfo {
            kind: "cosign",
            algorithm: "ECDSA-P256-SHA256".into(),
            key_id: ck.fingerprint()?,
            trusted_comment: String::new(),
            file: format!("{archive_name}{}", capsule::COSIGN_SUFFIX),
        });
        cosign_text = Some(text);
    }
    if let Some((path, _, digests, media)) = &bundle {
        if !digests.contains(&sha256) {
            return Err(InputError::msg(format!(
                "--attach-bundle {}: the bundle signs {} but this archive is sha256:{sha256} \
                 (was it made for another build?)",
                path.display(),
                if digests.is_empty() {
                    "no SHA-256 digest".to_owned()
                } else {
                    format!("sha256:{}", digests.join(", sha256:"))
                }
            ))
            .into());
        }
        signatures.push(SignatureInfo {
            kind: "sigstore-bundle",
            algorithm: media.clone(),
            key_id: String::new(),
            trusted_comment: String::new(),
            file: format!("{archive_name}{}", capsule::SIGSTORE_SUFFIX),
        });
    }

    // 6. The records.
    let record = BuildRecord {
        schema: SCHEMA,
        capsule: CapsuleInfo {
            file: archive_name.clone(),
            name: manifest.name.to_string(),
            version: manifest.version.to_string(),
            sha256,
            size,
            release_id: release_id.to_string(),
        },
        unsigned: key.is_none() && cosign_key.is_none() && bundle.is_none(),
        signatures,
        build: BuildInfo {
            builder: req.builder.clone(),
            git_sha,
            git_branch,
            source_date_epoch: mtime,
            mtime_source,
            tool: format!("capsule-build {}", env!("CARGO_PKG_VERSION")),
            compressor: Compressor {
                name: "zstd",
                library_version: zstd::zstd_safe::version_string(),
                level: ZSTD_LEVEL,
                workers: ZSTD_WORKERS,
            },
            tar_format: "gnu",
            built_at: now_rfc3339(),
            duration_ms: started.elapsed().as_millis() as u64,
            source: req.src.display().to_string(),
        },
        manifest,
        files,
    };

    // 7. Rename into place: records and signature first, the archive last,
    //    so an archive on disk always has this build's companions beside it.
    if let Some(text) = sig_text {
        outputs.add_bytes(
            &format!("{archive_name}{}", capsule::MINISIG_SUFFIX),
            text.as_bytes(),
        )?;
    }
    if let Some(text) = cosign_text {
        outputs.add_bytes(
            &format!("{archive_name}{}", capsule::COSIGN_SUFFIX),
            text.as_bytes(),
        )?;
    }
    if let Some((_, text, _, _)) = &bundle {
        outputs.add_bytes(
            &format!("{archive_name}{}", capsule::SIGSTORE_SUFFIX),
            text.as_bytes(),
        )?;
    }
    outputs.add_bytes(
        &format!("{stem}.results.txt"),
        record.results_text().as_bytes(),
    )?;
    let mut json = serde_json::to_vec_pretty(&record).context("encode build.json")?;
    json.push(b'\n');
    outputs.add_bytes(&format!("{stem}.build.json"), &json)?;
    match early_sync.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "early sync of the archive failed; syncing again")
        }
        Err(_) => tracing::debug!("early sync thread panicked; syncing again"),
    }
    outputs.add(tmp, &archive_name)?;
    let paths = outputs.commit()?;
    Ok(Built { record, paths })
}

fn read_small_text(path: &Path, max: u64, what: &str) -> Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("read {what} {}", path.display()))?;
    if meta.len() > max {
        return Err(InputError::msg(format!(
            "{what} {}: larger than {max} bytes",
            path.display()
        ))
        .into());
    }
    let bytes = std::fs::read(path).with_context(|| format!("read {what} {}", path.display()))?;
    String::from_utf8(bytes)
        .map_err(|_| InputError::msg(format!("{what} {}: not UTF-8 text", path.display())).into())
}

fn hex_to_32(h: &str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    if h.len() != 64 {
        bail!("internal: sha256 {h:?} is not 64 hex digits");
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&h[2 * i..2 * i + 2], 16)
            .with_context(|| format!("internal: sha256 {h:?} is not hex"))?;
    }
    Ok(out)
}

fn read_manifest(req: &BuildRequest) -> Result<(Option<String>, String)> {
    let path = match &req.manifest {
        Some(p) => p.clone(),
        None => {
            let p = req.src.join(MANIFEST_NAME);
            if !p.exists() {
                return Ok((None, String::new()));
            }
            p
        }
    };
    let meta =
        std::fs::metadata(&path).with_context(|| format!("read manifest {}", path.display()))?;
    if meta.len() > capsule::manifest::MAX_MANIFEST_BYTES {
        return Err(
            InputError::msg(format!("{}: manifest is larger than 1 MiB", path.display())).into(),
        );
    }
    let bytes =
        std::fs::read(&path).with_context(|| format!("read manifest {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| InputError::msg(format!("{}: manifest is not UTF-8 text", path.display())))?;
    Ok((Some(text), path.display().to_string()))
}

/// The mtime for every entry: `SOURCE_DATE_EPOCH`, else the git commit time
/// of the source tree, else 0.
fn source_date_epoch(src: &Path) -> Result<(u64, &'static str)> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        let n: u64 = v.trim().parse().map_err(|_| {
            InputError::msg(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a number of seconds"
            ))
        })?;
        return Ok((n, "SOURCE_DATE_EPOCH"));
    }
    match git_result(src, &["log", "-1", "--format=%ct"]) {
        Ok(t) => {
            if let Ok(t) = t.parse() {
                return Ok((t, "git"));
            }
        }
        Err(why) if in_git_tree(src) => {
            // The tree is a git checkout but git cannot read it (a checkout
            // owned by another user, say): the mtime silently becoming 0
            // would make this build differ from the same tree built elsewhere.
            tracing::warn!(
                src = %src.display(), error = %why,
                "the source is a git checkout but git failed; every mtime falls back to 0: \
                 set SOURCE_DATE_EPOCH for reproducible builds"
            );
        }
        Err(_) => {}
    }
    Ok((0, "zero"))
}

/// Whether `src` or a folder above it holds a `.git`.
fn in_git_tree(src: &Path) -> bool {
    let Ok(mut p) = src.canonicalize() else {
        return false;
    };
    loop {
        if p.join(".git").exists() {
            return true;
        }
        if !p.pop() {
            return false;
        }
    }
}

fn git_info(src: &Path) -> (Option<String>, Option<String>) {
    (
        git(src, &["rev-parse", "HEAD"]),
        git(src, &["rev-parse", "--abbrev-ref", "HEAD"]),
    )
}

fn git(src: &Path, args: &[&str]) -> Option<String> {
    git_result(src, args).ok()
}

/// Runs git in `src`: its trimmed output, or why it failed.
fn git_result(src: &Path, args: &[&str]) -> std::result::Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(src)
        .args(args)
        .output()
        .map_err(|e| format!("run git: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().next().unwrap_or("git failed").to_owned());
    }
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if s.is_empty() {
        return Err("git printed nothing".into());
    }
    Ok(s)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
